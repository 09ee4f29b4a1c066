//! Jobs: submit, test, list, show, output, cancel, requeue, signal, hold,
//! release, update; steps and their holds; allocations given back.

use super::*;

pub(super) async fn submit(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    FastJson(req): FastJson<SubmitJobs>,
) -> ApiResult<Submitted> {
    let by = app.authenticate_proven(&headers)?;
    let mut req = req;
    admission::admit(&app.policy, by, &mut req.jobs, Account::of_uid).map_err(refused)?;
    app.ctl.shared.read(|s| admission::check_user_limit(&app.policy, by, s, &req.jobs)).map_err(refused)?;
    let now = now_ms();
    let cmd = if req.jobs.len() == 1 {
        Command::Submit { spec: Arc::new(req.jobs.into_iter().next().expect("one")), now }
    } else {
        Command::SubmitBatch { specs: req.jobs.into_iter().map(Arc::new).collect(), now }
    };
    let events = app.propose_request(&headers, cmd).await?;
    let job_ids = events
        .iter()
        .filter_map(|e| match e {
            Event::JobSubmitted { job, .. } => Some(*job),
            _ => None,
        })
        .collect();
    Ok(Json(Submitted { job_ids }))
}

/// `sbatch --test-only`: the same checks as a submission, then an
/// estimate of each job's start from this controller's state. Nothing is
/// proposed, so no id is used and the log does not grow.
pub(super) async fn test_only(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    FastJson(req): FastJson<SubmitJobs>,
) -> ApiResult<WouldStart> {
    let by = app.authenticate_proven(&headers)?;
    let mut req = req;
    admission::admit(&app.policy, by, &mut req.jobs, Account::of_uid).map_err(refused)?;
    let now = now_ms();
    let estimates = app.ctl.shared.read(|s| {
        admission::check_user_limit(&app.policy, by, s, &req.jobs).map_err(refused)?;
        let cfg = &app.sched;
        let mut out = Vec::with_capacity(req.jobs.len());
        for (i, spec) in req.jobs.iter().enumerate() {
            let e = drover_core::sched::estimate_start(s, now, cfg, &cfg.priority, spec)
                .map_err(|e| ApiError::from(ProposeError::Refused(e)))?;
            let names: Vec<&str> = e.shares.iter().map(|sh| s.nodes()[sh.node as usize].name.as_str()).collect();
            out.push(StartEstimate {
                job_id: s.next_job_id() + i as u64,
                start_ms: e.start,
                nodes: drover_core::hostlist::compress(&names),
                cpus: e.shares.iter().map(|sh| sh.res.cpus).sum(),
                partition: e.partition,
            });
        }
        Ok::<_, ApiError>(out)
    })?;
    Ok(Json(WouldStart { estimates }))
}

pub(super) async fn list_jobs(
    AxState(app): AxState<App>,
    _caller: Caller,
    Query(q): Query<JobQuery>,
    Query(fresh): Query<Freshness>,
) -> Response {
    if let Err(e) = app.read_barrier(&fresh).await {
        return e.into_response();
    }
    let filter = match listing::Filter::new(&q) {
        Ok(f) => f,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e).into_response(),
    };
    match q.format.as_deref() {
        None | Some("json") => {
            Json(JobList { jobs: app.ctl.shared.read(|s| listing::views(s, &filter)) }).into_response()
        }
        Some("tsv") => {
            let text = app.ctl.shared.read(|s| listing::tsv(s, &filter));
            ([("content-type", "text/tab-separated-values; charset=utf-8")], text).into_response()
        }
        Some("table") => {
            let now = crate::loops::now_ms();
            let text = app.ctl.shared.read_with_table(|s, index| listing::table_indexed(s, index, &filter, now));
            ([("content-type", "text/plain; charset=utf-8")], text).into_response()
        }
        Some(other) => {
            ApiError::new(StatusCode::BAD_REQUEST, format!("unknown format '{other}'; use json, tsv or table"))
                .into_response()
        }
    }
}

pub(super) async fn show_job(
    AxState(app): AxState<App>,
    _caller: Caller,
    Path(id): Path<String>,
    Query(fresh): Query<Freshness>,
) -> ApiResult<JobView> {
    app.read_barrier(&fresh).await?;
    job_view(&app, &id)
}

#[derive(Deserialize)]
pub(super) struct OutputQuery {
    #[serde(default)]
    offset: u64,
    /// At most this many bytes (default and cap 1 MiB).
    limit: Option<u64>,
}

/// A job's standard output from `offset`, for the dashboard's log tail:
/// read on the controller's host, so it needs the job's directory there
/// (a shared file system, or `drover up`). Only the job's owner or an
/// operator may read it. The path is the user's to choose and to change
/// (`-o /etc/shadow`, a link, a FIFO), so the file is opened off the async
/// runtime, with the user's file-system rights, never following a final
/// link and never blocking on a FIFO, and only a regular file the job's
/// user owns is served.
pub(super) async fn job_output(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Query(q): Query<OutputQuery>,
) -> Result<Response, ApiError> {
    use crate::output::OutputError;
    app.read_barrier(&Freshness::default()).await?;
    let Json(job) = job_view(&app, &id)?;
    if !who.operator && who.uid != job.uid {
        return Err(ApiError::new(StatusCode::FORBIDDEN, format!("job {id} belongs to {}", job.user)));
    }
    if job.stdout.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("job {id} has not started: no output yet")));
    }
    let limit = q.limit.unwrap_or(1 << 20).min(1 << 20);
    let (path, uid, gid, offset) = (job.stdout.clone(), job.uid, job.gid, q.offset);
    let read = tokio::task::spawn_blocking(move || crate::output::read_as(&path, uid, gid, offset, limit));
    let read = match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(OutputError::Unreadable(e.to_string())),
        Err(_) => Err(OutputError::Unreadable("timed out".into())),
    };
    let (bytes, next) = read.map_err(|e| match e {
        OutputError::NotOwned => {
            ApiError::new(StatusCode::FORBIDDEN, format!("{} is not owned by {}", job.stdout, job.user))
        }
        OutputError::NotRegular => ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{} is not a regular file; only regular files are served", job.stdout),
        ),
        OutputError::Unreadable(e) => {
            ApiError::new(StatusCode::NOT_FOUND, format!("cannot read {} on the controller's host: {e}", job.stdout))
        }
    })?;
    Ok(Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-drover-next-offset", next.to_string())
        .header("x-drover-job-terminal", job.terminal.to_string())
        .body(Body::from(bytes))
        .unwrap_or_default())
}

/// A submission turned away before it reached the log.
pub(super) fn refused(r: Refusal) -> ApiError {
    match r {
        Refusal::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
        Refusal::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
        Refusal::Limit(m) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, m),
    }
}

/// A job id from a path (`1234`, `1234_7`); a malformed one is a 400.
pub(super) fn job_ref(id: &str) -> Result<JobRef, ApiError> {
    JobRef::parse(id).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))
}

pub(super) fn job_view(app: &App, id: &str) -> ApiResult<JobView> {
    let r = job_ref(id)?;
    app.ctl
        .shared
        .read(|s| {
            let raw = match r.task {
                Some(t) => s.task_job_id(r.id, t),
                None => Some(r.id),
            };
            if let Some(j) = raw.and_then(|id| s.job(id)) {
                return Some(crate::views::job_view(s, j));
            }
            s.array(r.id).map(|a| crate::views::array_view_full(s, a))
        })
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Invalid job id specified: {id}")))
}

pub(super) async fn cancel_filter(
    app: &App,
    headers: &HeaderMap,
    who: Requester,
    filter: CancelFilter,
) -> ApiResult<Cancelled> {
    let events = app.propose_request(headers, Command::Cancel { filter, by: who, now: now_ms() }).await?;
    let mut out = Cancelled { cancelled: Vec::new(), refused: Vec::new() };
    for e in events {
        match e {
            Event::JobFinished { display, .. } => out.cancelled.push(display),
            Event::JobKill { job, .. } => out.cancelled.push(job.to_string()),
            Event::ArrayTasksCancelled { array, tasks } => out.cancelled.push(format!("{array}_[{tasks}]")),
            Event::Refused { target, reason } => out.refused.push((target, reason)),
            _ => {}
        }
    }
    Ok(Json(out))
}

pub(super) async fn cancel(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    headers: HeaderMap,
    Json(req): Json<CancelJobs>,
) -> ApiResult<Cancelled> {
    cancel_filter(&app, &headers, who, req.filter).await
}

pub(super) async fn cancel_one(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Cancelled> {
    let r = job_ref(&id)?;
    cancel_filter(&app, &headers, who, CancelFilter { jobs: vec![r], ..Default::default() }).await
}

pub(super) async fn requeue(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(r): Json<Requeue>,
) -> ApiResult<JobView> {
    act_on_job(&app, &headers, &id, |job, now| Command::Requeue { job, hold: r.hold, by: who, now }).await
}

/// `scancel --signal`: a signal to a running job's processes.
pub(super) async fn signal(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(s): Json<SignalJob>,
) -> ApiResult<JobView> {
    job_ref(&id)?; // a bad id is named before a bad signal
    if !(1..=64).contains(&s.signal) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("signal {} is out of range 1-64", s.signal)));
    }
    act_on_job(&app, &headers, &id, |job, now| Command::Signal { job, signal: s.signal, by: who, now }).await
}

/// The command `make` builds for job `id` (its reference, and now),
/// proposed with the request's id; the job as it is afterwards.
async fn act_on_job(
    app: &App,
    headers: &HeaderMap,
    id: &str,
    make: impl FnOnce(JobRef, u64) -> Command,
) -> ApiResult<JobView> {
    let job = job_ref(id)?;
    app.propose_request(headers, make(job, now_ms())).await?;
    job_view(app, id)
}

/// `scontrol hold` / `release`: a pending job (or array task) held or
/// let go; an array id acts on its pending tasks.
pub(super) async fn hold(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<JobView> {
    act_on_job(&app, &headers, &id, |job, now| Command::Hold { job, by: who, now }).await
}

pub(super) async fn release(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<JobView> {
    act_on_job(&app, &headers, &id, |job, now| Command::Release { job, by: who, now }).await
}

/// `scontrol update JobId=…`: time limit, partition, name, nice, comment.
pub(super) async fn update_job(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(u): Json<UpdateJob>,
) -> ApiResult<JobView> {
    let job = job_ref(&id)?;
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
    let time_limit = u
        .time_limit
        .as_deref()
        .map(|t| drover_core::time::parse_time_limit(t).map_err(|e| bad(format!("TimeLimit={t}: {e}"))))
        .transpose()?;
    let update = JobUpdate { time_limit, partition: u.partition, name: u.name, nice: u.nice, comment: u.comment };
    app.propose_request(&headers, Command::Update { job, update, by: who, now: now_ms() }).await?;
    job_view(&app, &id)
}

/// `srun` inside an allocation: records the step, then answers with one
/// sealed grant per node for `srun` to take to the nodes' agents.
pub(super) async fn create_step(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(request): Json<StepRequest>,
) -> ApiResult<StepCreated> {
    let job = job_ref(&id)?;
    let now = now_ms();
    let events = app.propose_request(&headers, Command::CreateStep { job, request, by: who, now }).await?;
    let Some((job_id, step)) = events.iter().find_map(|e| match e {
        Event::StepCreated { job, step, .. } => Some((*job, *step)),
        _ => None,
    }) else {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("job {id} has no new step")));
    };
    let nodes = app.ctl.shared.read(|s| {
        let grants = drover_core::launch::StepGrant::for_step(s, job_id, step, now).unwrap_or_default();
        grants
            .into_iter()
            .map(|g| {
                let addr = s.node_index(&g.node_name).map(|i| s.nodes()[i as usize].addr.clone()).unwrap_or_default();
                let grant = serde_json::to_string(&g).unwrap_or_default();
                StepNode {
                    name: g.node_name.clone(),
                    addr,
                    first_rank: g.first_rank,
                    tasks: g.tasks,
                    seal: drover_auth::seal(&app.key, &grant),
                    grant,
                }
            })
            .collect::<Vec<_>>()
    });
    if nodes.is_empty() {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("job {id} ended while its step was created")));
    }
    Ok(Json(StepCreated { job_id, step, nodes }))
}

/// The job record a user's id names (`1234`, or an array task `1000_7`).
pub(super) fn raw_job_id(app: &App, id: &str) -> Result<u64, ApiError> {
    let r = job_ref(id)?;
    app.ctl
        .shared
        .read(|s| match r.task {
            Some(t) => s.task_job_id(r.id, t),
            None => s.job(r.id).map(|j| j.id),
        })
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Invalid job id specified: {id}")))
}

/// `srun` tells how its step ended (the worst of its tasks).
pub(super) async fn end_step(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path((id, step)): Path<(String, u32)>,
    Json(e): Json<ExitReport>,
) -> ApiResult<JobView> {
    let job = raw_job_id(&app, &id)?;
    let exit = ExitStatus { code: e.exit_code, signal: e.signal };
    let cancelled = e.cancelled;
    app.propose_request(&headers, Command::EndStep { job, step, exit, cancelled, by: who, now: now_ms() }).await?;
    job_view(&app, &id)
}

/// `srun`/`salloc` hold the allocation they made for as long as this
/// request stays open: a newline every second (so a client that is gone
/// is noticed by the write failing), until the job ends. On the leader
/// only; see `holds.rs`.
pub(super) async fn attach(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    hold_open(&app, who, &id, None)
}

/// `srun` holds the step it runs the same way: should srun go before it
/// says how the step ended, the leader ends it (see `holds.rs`).
pub(super) async fn attach_step(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    Path((id, step)): Path<(String, u32)>,
) -> Result<Response, ApiError> {
    hold_open(&app, who, &id, Some(step))
}

/// The held request itself: a newline a second while the job (and the
/// step, if one is named) has not ended.
pub(super) fn hold_open(app: &App, who: Requester, id: &str, step: Option<u32>) -> Result<Response, ApiError> {
    if !app.ctl.is_leader() {
        return Err(app.not_leader());
    }
    let job = raw_job_id(app, id)?;
    // The step held, if one is named; `None` inside when it does not exist.
    fn held_step(j: &drover_core::job::Job, step: Option<u32>) -> Option<Option<&drover_core::step::JobStep>> {
        step.map(|n| j.steps.iter().find(|st| st.id == n))
    }
    let live = move |s: &drover_core::State| {
        s.job(job).is_some_and(|j| {
            !j.state.is_terminal() && held_step(j, step).is_none_or(|st| st.is_some_and(|st| st.end.is_none()))
        })
    };
    let (owner, exists) = app.ctl.shared.read(|s| {
        let j = s.job(job);
        (j.map_or(u32::MAX, |j| j.spec.uid), j.is_some_and(|j| held_step(j, step).is_none_or(|st| st.is_some())))
    });
    if !who.may_touch(owner) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, format!("job {id} is not yours")));
    }
    if !exists {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("job {id} has no step {}", step.unwrap_or_default())));
    }
    let attached = app.holds.attach((job, step));
    let ctl = app.ctl.clone();
    let stream = futures_util::stream::unfold((attached, ctl), move |(attached, ctl)| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let live = ctl.is_leader() && ctl.shared.read(live);
        live.then(|| (Ok::<_, std::convert::Infallible>(axum::body::Bytes::from_static(b"\n")), (attached, ctl)))
    });
    Response::builder()
        .header("content-type", "text/plain")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `srun`/`salloc` give back the allocation they made.
pub(super) async fn complete(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(e): Json<ExitReport>,
) -> ApiResult<JobView> {
    let exit = ExitStatus { code: e.exit_code, signal: e.signal };
    act_on_job(&app, &headers, &id, |job, now| Command::Complete { job, exit, by: who, now }).await
}

/// The Slurm variables of a running job's batch step (`SLURM_*`,
/// `DROVER_*`), for `salloc`'s shell. Owner or operator only.
pub(super) async fn job_env(
    AxState(app): AxState<App>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Vec<(String, String)>> {
    let job = raw_job_id(&app, &id)?;
    let env = app.ctl.shared.read(|s| {
        let j = s.job(job)?;
        if !(who.operator || who.uid == j.spec.uid) {
            return Some(Err(ApiError::new(StatusCode::FORBIDDEN, format!("job {id} belongs to {}", j.spec.user))));
        }
        let first = j.alloc.as_ref()?.shares.first()?.node;
        let order = drover_core::launch::LaunchOrder::for_job(s, job, first)?;
        Some(Ok(order.env.into_iter().filter(|(k, _)| k.starts_with("SLURM_") || k.starts_with("DROVER_")).collect()))
    });
    match env {
        Some(env) => Ok(Json(env?)),
        None => Err(ApiError::new(StatusCode::CONFLICT, format!("job {id} is not running"))),
    }
}
