//! `drover controller`: the REST API, the agent protocol, and the leader's
//! loops around one [`Controller`].

use crate::admission::{self, Proven, Refusal, SubmitPolicy};
use crate::dispatch::Dispatcher;
use crate::events::EventLog;
use crate::listing::{self, JobQuery};
use crate::loops::{self, now_ms, Liveness};
use crate::metrics::Metrics;
use crate::raft::{Controller, Membership, ProposeError, Timing};
use axum::body::Body;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use drover_auth::{Account, AuthError, Credential, ReplayGuard};
use drover_core::job::ExitStatus;
use drover_core::job::JobRef;
use drover_core::node::NodeAction;
use drover_core::sched::SchedConfig;
use drover_core::state::{CancelFilter, Requester};
use drover_core::step::{JobUpdate, StepRequest};
use drover_core::{Command, CommandError, Event};
use drover_proto::*;
use drover_supervise::Supervisor;
use futures_util::StreamExt;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How to run a controller.
#[derive(Debug, Clone)]
pub struct Options {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub id: u64,
    pub node_timeout: Duration,
    pub sched: SchedConfig,
    /// Wait after a change before scheduling, to batch bursts.
    pub coalesce: Duration,
    /// The cluster key: every request must carry a credential signed with it.
    pub key: Vec<u8>,
    /// Serve credentials to local users on this Unix socket.
    pub auth_socket: Option<PathBuf>,
    /// Uids besides root that may act on every job and node.
    pub operators: Vec<u32>,
    /// The Raft group on first start: alone (the default), static members,
    /// or joining a running group.
    pub membership: Option<Membership>,
    pub timing: Timing,
    /// Run through `sh -c` on gaining and losing leadership.
    pub leader_hook: Option<String>,
    /// With [`Membership::Join`]: the running group's controllers, which
    /// this one asks to add it.
    pub join: Option<String>,
    /// The accounting database (`sqlite://…`, `postgres://…`); `None`
    /// keeps no history.
    pub accounting: Option<String>,
    /// Accounting forgets jobs that ended longer ago than this.
    pub purge_after: Option<Duration>,
    /// How fast past use stops counting against fair-share priority.
    pub fairshare_half_life: Duration,
    /// Finished jobs leave the live state this long after they end, once
    /// accounting has them (0: never).
    pub min_job_age: Duration,
    /// Bounds on submissions: sizes, jobs per request, per-user limits.
    pub policy: SubmitPolicy,
    /// Open connections at most (default: what the descriptor limit allows).
    pub max_connections: Option<usize>,
    /// Serve TLS with this certificate and key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The cluster's CA: the other controllers are reached over TLS,
    /// trusting it alone.
    pub tls_ca: Option<PathBuf>,
}

impl Options {
    pub fn new(state_dir: PathBuf, listen: SocketAddr, key: Vec<u8>) -> Options {
        Options {
            state_dir,
            listen,
            id: 1,
            node_timeout: Duration::from_secs(10),
            sched: SchedConfig::default(),
            coalesce: Duration::from_millis(2),
            key,
            auth_socket: None,
            operators: Vec::new(),
            membership: None,
            timing: Timing::default(),
            leader_hook: None,
            join: None,
            accounting: None,
            purge_after: None,
            fairshare_half_life: Duration::from_secs(7 * 86400),
            min_job_age: Duration::from_secs(300),
            policy: SubmitPolicy::default(),
            max_connections: None,
            tls: None,
            tls_ca: None,
        }
    }
}

#[derive(Clone)]
struct App {
    ctl: Arc<Controller>,
    dispatch: Arc<Dispatcher>,
    liveness: Arc<Liveness>,
    key: Arc<Vec<u8>>,
    replay: Arc<std::sync::Mutex<ReplayGuard>>,
    operators: Arc<Vec<u32>>,
    events: Arc<EventLog>,
    metrics: Arc<Metrics>,
    accounting: Option<Arc<crate::accounting::Sink>>,
    policy: Arc<SubmitPolicy>,
    /// The scheduler's settings, for `--test-only` estimates.
    sched: Arc<SchedConfig>,
    /// Allocations whose srun/salloc is attached (leader only).
    holds: Arc<crate::holds::Holds>,
}

impl App {
    /// Who is asking, proven by a credential signed with the cluster key
    /// (`Authorization: Drover <credential>`, each good once) or by a
    /// session token (`Authorization: Bearer <token>`, good until it
    /// expires: the dashboard's and scripts').
    fn authenticate(&self, headers: &HeaderMap) -> Result<Requester, ApiError> {
        self.authenticate_proven(headers).map(|p| p.who)
    }

    /// Who is asking and the gid the kernel saw them run with (a token
    /// keeps the gid of the credential it was issued for).
    fn authenticate_proven(&self, headers: &HeaderMap) -> Result<Proven, ApiError> {
        let value = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let (who, gid) = match value.strip_prefix("Bearer ") {
            Some(token) => self.authenticate_token(token)?,
            None => self.authenticate_credential(headers)?,
        };
        Ok(Proven { who, gid })
    }

    /// A one-time credential only, and the gid it proves.
    fn authenticate_credential(&self, headers: &HeaderMap) -> Result<(Requester, u32), ApiError> {
        let text = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Drover "))
            .ok_or_else(|| unauthorized(AuthError::Missing))?;
        let now = now_ms();
        let cred = Credential::verify(&self.key, text, now).map_err(unauthorized)?;
        self.replay.lock().expect("replay lock").check(&cred, now).map_err(unauthorized)?;
        Ok((self.requester(cred.uid), cred.gid))
    }

    fn authenticate_token(&self, token: &str) -> Result<(Requester, u32), ApiError> {
        let t = drover_auth::Token::verify(&self.key, token, now_ms()).map_err(unauthorized)?;
        Ok((self.requester(t.uid), t.gid))
    }

    fn requester(&self, uid: u32) -> Requester {
        Requester { uid, operator: uid == 0 || self.operators.contains(&uid) }
    }

    /// Waits until this controller's state is at least as new as any write
    /// acknowledged before the call (a read index confirmed by a majority),
    /// unless the caller asked for a `stale` read. Only the leader can.
    async fn read_barrier(&self, f: &Freshness) -> Result<(), ApiError> {
        use openraft::error::{CheckIsLeaderError, RaftError};
        if f.stale {
            return Ok(());
        }
        match self.ctl.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => Err(self.not_leader()),
            Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("cannot confirm leadership: {e}"))),
        }
    }

    /// Proposes a client's command; a request the client named (a retry may
    /// follow) is applied at most once, and a retry gets the first answer.
    async fn propose_request(&self, headers: &HeaderMap, cmd: Command) -> Result<Vec<Event>, ApiError> {
        // A one-time credential's nonce goes into the log with the change:
        // a replay to any controller, at any time, is refused there.
        let credential = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Drover "))
            .and_then(|text| Credential::verify(&self.key, text, now_ms()).ok());
        let cmd = match credential {
            Some(c) => Command::Credentialed { uid: c.uid, nonce: c.nonce, expires: c.expires_ms, cmd: Box::new(cmd) },
            None => cmd,
        };
        let request = headers.get(REQUEST_HEADER).and_then(|v| v.to_str().ok()).filter(|r| !r.is_empty());
        let cmd = match request {
            Some(r) if r.len() > 128 => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("{REQUEST_HEADER} is over 128 bytes")))
            }
            Some(r) => Command::Once { request: r.to_string(), cmd: Box::new(cmd) },
            None => cmd,
        };
        let mut events = self.ctl.propose(cmd).await?;
        if let [Event::Repeated { answer, .. }] = events.as_mut_slice() {
            return Ok(std::mem::take(answer));
        }
        Ok(events)
    }

    /// Sends the client to the leader (or says there is none).
    fn not_leader(&self) -> ApiError {
        ApiError::not_leader(self.ctl.other_leader_addr())
    }

    /// Membership changes are for operators (root, --operators, agents).
    fn authenticate_operator(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.authenticate(headers)?.operator {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "only operators may change the controllers"))
        }
    }

    /// Requests that only the leader may serve (agents' heartbeats and order
    /// streams) are sent on to it.
    fn leader_only(&self) -> Result<(), ApiError> {
        if self.ctl.is_leader() && self.dispatch.is_active() {
            Ok(())
        } else {
            Err(self.not_leader())
        }
    }

    /// Agents sign their requests with the key itself (as uid 0).
    fn authenticate_agent(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.authenticate(headers)? {
            Requester { uid: 0, .. } => Ok(()),
            _ => Err(ApiError::new(StatusCode::FORBIDDEN, "only agents holding the cluster key may do this")),
        }
    }
}

fn unauthorized(e: AuthError) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
}

/// An error response with a sentence a person can act on.
struct ApiError {
    code: StatusCode,
    error: String,
    leader: Option<String>,
}

impl ApiError {
    fn new(code: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError { code, error: error.into(), leader: None }
    }

    /// 421 naming the leader, where the client retries; 503 while there is
    /// none (an election is under way, or this controller is cut off).
    fn not_leader(leader: Option<String>) -> ApiError {
        match leader {
            Some(addr) => ApiError {
                code: StatusCode::MISDIRECTED_REQUEST,
                error: format!("this controller is not the leader; the leader is {addr}"),
                leader: Some(addr),
            },
            None => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no controller is leader at the moment (an election is under way, or this controller is cut off \
                 from the majority); retry shortly",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, Json(ErrorBody { error: self.error, leader: self.leader })).into_response()
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> ApiError {
        match e {
            ProposeError::Refused(e @ CommandError::PermissionDenied(_)) => {
                ApiError::new(StatusCode::FORBIDDEN, e.to_string())
            }
            ProposeError::Refused(e) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            ProposeError::NotLeader { leader } => ApiError::not_leader(leader),
            ProposeError::Raft(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e),
        }
    }
}

/// `?stale=true`: the caller accepts this controller's possibly lagging
/// view instead of the leader's.
#[derive(Deserialize, Default)]
struct Freshness {
    #[serde(default)]
    stale: bool,
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Binds the API port, waiting a few seconds if it is still taken (a
/// previous instance killed a moment ago may not have let go of it yet).
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
        }
    }
}

/// Runs a controller until `shutdown` resolves.
pub async fn run(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let listener = bind(opts.listen).await?;
    let local = listener.local_addr().map_err(|e| e.to_string())?.to_string();
    // The address the other controllers and clients reach this one at.
    let addr = match &opts.membership {
        Some(Membership::Static(members)) => members.get(&opts.id).cloned().unwrap_or(local),
        _ => local,
    };
    let membership = opts.membership.clone().unwrap_or_else(|| Membership::Static([(opts.id, addr.clone())].into()));
    let key = Arc::new(opts.key.clone());
    let ctl = Arc::new(
        Controller::open(
            &opts.state_dir,
            opts.id,
            &addr,
            membership,
            &opts.timing,
            key.clone(),
            opts.tls_ca.as_deref(),
        )
        .await?,
    );

    let app = App {
        ctl: ctl.clone(),
        dispatch: Arc::new(Dispatcher::default()),
        liveness: Arc::new(Liveness::default()),
        key,
        replay: Arc::default(),
        operators: Arc::new(opts.operators.clone()),
        events: Arc::new(EventLog::default()),
        metrics: Arc::new(Metrics::new()),
        accounting: opts.accounting.clone().map(|url| crate::accounting::Sink::new(url, opts.purge_after)),
        policy: Arc::new(opts.policy),
        sched: Arc::new(opts.sched.clone()),
        holds: Arc::default(),
    };
    // Every task the controller runs beside its listener; should one die,
    // the controller exits (see drover-supervise).
    let mut tasks = Supervisor::new();
    if let Some(sock) = opts.auth_socket.clone() {
        let key = opts.key.clone();
        // Clients may still come with tokens: a socket that cannot be
        // served is logged, not fatal.
        tasks.spawn_task("credential socket", async move {
            if let Err(e) = drover_auth::serve_credentials(&sock, key).await {
                tracing::error!(error = %e, "credential socket failed");
            }
        });
    }
    tasks.spawn_loop("dispatcher", app.dispatch.clone().run(ctl.shared.clone()));
    tasks.spawn_loop("allocation holds", loops::release_abandoned(ctl.clone(), app.holds.clone()));
    tasks.spawn_loop("event log", app.events.clone().run(ctl.shared.clone()));
    tasks.spawn_loop("metrics", app.metrics.clone().run(ctl.shared.clone()));
    tasks.spawn_loop(
        "leadership",
        crate::leadership::follow(
            ctl.clone(),
            app.dispatch.clone(),
            app.liveness.clone(),
            opts.leader_hook.clone(),
            opts.min_job_age.as_millis() as u64,
        ),
    );
    let usage = Arc::new(std::sync::RwLock::new(drover_core::sched::Usage::default()));
    match app.accounting.clone() {
        Some(sink) => {
            tasks.spawn_loop("accounting", sink.clone().run(ctl.clone(), app.events.clone()));
            if opts.sched.priority.weight_fairshare > 0 {
                let usage = usage.clone();
                tasks.spawn_loop("fair-share", sink.follow_usage(ctl.clone(), usage, opts.fairshare_half_life));
            }
        }
        // Nothing keeps history: finished jobs are let go at once, so that
        // retention still prunes them (as Slurm without slurmdbd does).
        None => tasks.spawn_loop("accounting", crate::accounting::let_go(ctl.clone())),
    }
    tasks.spawn_loop(
        "scheduler",
        loops::schedule(ctl.clone(), opts.sched.clone(), opts.coalesce, app.metrics.clone(), usage),
    );
    tasks.spawn_loop("node liveness", loops::watch(ctl.clone(), app.liveness.clone(), opts.node_timeout));
    if let Some(existing) = opts.join.clone() {
        let join = crate::leadership::ask_to_join(ctl.clone(), existing, app.key.clone(), opts.tls_ca.clone());
        tasks.spawn_task("join", join);
    }

    let router = router(app);
    let limits = crate::connections::Limits::for_fd_limit(crate::connections::raise_fd_limit(), opts.max_connections);
    tracing::info!(max = limits.max, "connection limit");
    let acceptor = match &opts.tls {
        Some((cert, key)) => Some(drover_tls::TlsAcceptor::from(drover_tls::server_config(cert, key)?)),
        None => None,
    };
    let listener = crate::connections::GuardedListener::new(listener, limits, acceptor);
    let served = axum::serve(listener, router).with_graceful_shutdown(shutdown);
    let outcome = tokio::select! {
        r = served => r.map_err(|e| e.to_string()),
        died = tasks.death() => Err(drover_supervise::fatal("controller", &died)),
    };
    tasks.abort_all();
    ctl.shutdown().await;
    outcome
}

/// Records each request's latency under its route pattern (`/api/v1/jobs/{id}`,
/// not the id: the label set stays small).
async fn time_request(
    AxState(app): AxState<App>,
    route: Option<axum::extract::MatchedPath>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let resp = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", |r| r.as_str());
    app.metrics.http_request(route, method.as_str(), resp.status().as_u16(), started.elapsed());
    resp
}

fn router(app: App) -> Router {
    Router::new()
        .route("/api/v1/jobs", post(submit).get(list_jobs))
        .route("/api/v1/jobs/test", post(test_only))
        .route("/api/v1/jobs/cancel", post(cancel))
        .route("/api/v1/jobs/{id}", get(show_job).delete(cancel_one).patch(update_job))
        .route("/api/v1/jobs/{id}/steps", post(create_step))
        .route("/api/v1/jobs/{id}/steps/{step}/end", post(end_step))
        .route("/api/v1/jobs/{id}/steps/{step}/attach", get(attach_step))
        .route("/api/v1/jobs/{id}/complete", post(complete))
        .route("/api/v1/jobs/{id}/env", get(job_env))
        .route("/api/v1/jobs/{id}/attach", get(attach))
        .route("/api/v1/jobs/{id}/requeue", post(requeue))
        .route("/api/v1/jobs/{id}/output", get(job_output))
        .route("/api/v1/jobs/{id}/hold", post(hold))
        .route("/api/v1/jobs/{id}/signal", post(signal))
        .route("/api/v1/jobs/{id}/release", post(release))
        .route("/api/v1/events", get(list_events))
        .route("/api/v1/tokens", post(issue_token))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/partitions", get(list_partitions))
        .route("/api/v1/config", get(show_config))
        .route("/api/v1/history", get(history))
        .route("/api/v1/usage", get(usage))
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{name}", get(show_node))
        .route("/api/v1/nodes/{name}/drain", post(drain))
        .route("/api/v1/nodes/{name}/resume", post(resume))
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(|| async { Json(crate::openapi::document()) }))
        .route("/api/v1/agent/register", post(register))
        .route("/api/v1/agent/heartbeat/{node}", post(heartbeat))
        .route("/api/v1/agent/orders/{node}", get(orders))
        .route("/api/v1/agent/reports", post(reports))
        .route("/api/v1/agent/health/{node}", post(node_health))
        .route("/api/v1/controllers", get(controllers).post(join_controller))
        .route("/metrics", get(metrics))
        .route("/api/v1/sd/prometheus", get(prometheus_targets))
        .route("/api/v1/controllers/{id}", axum::routing::delete(remove_controller))
        .route("/api/v1/raft/append", post(raft_append))
        .route("/api/v1/raft/vote", post(raft_vote))
        .route("/api/v1/raft/snapshot", post(raft_snapshot))
        // A batch of 10 000 jobs is ~10-30 MB of JSON; axum's default cap is
        // 2 MB. A body is read before its sender is known: no more than this.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
        .layer(axum::middleware::map_response(json_errors))
        .merge(crate::web::routes())
        .layer(axum::middleware::from_fn_with_state(app.clone(), time_request))
        .with_state(app)
}

/// Errors are JSON (`{"error": …}`) as the API document says, including the
/// ones axum's extractors write as plain text (a path segment that is not a
/// number, a query that does not parse, a malformed body).
async fn json_errors(response: Response) -> Response {
    let plain = response.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(response.status().is_client_error() || response.status().is_server_error()) || !plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let error = String::from_utf8_lossy(&text).into_owned();
    (parts.status, Json(ErrorBody { error, leader: None })).into_response()
}

/// A JSON body parsed by serde_json alone. axum's `Json` tracks the path
/// of every value it reads, to name the field in an error, and those frames
/// stood out in the profile of a 10 000-job batch. Here only a body that
/// fails is parsed again by `Json`, for that same error.
struct FastJson<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for FastJson<T> {
    type Rejection = axum::extract::rejection::JsonRejection;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let plain_json = req.headers().get("content-type").is_some_and(|v| v.as_bytes() == b"application/json");
        if !plain_json {
            // Anything else (a charset, a +json type, none) as axum decides.
            return Json::<T>::from_request(req, state).await.map(|Json(v)| FastJson(v));
        }
        let body = axum::body::Bytes::from_request(req, state).await?;
        match serde_json::from_slice(&body) {
            Ok(v) => Ok(FastJson(v)),
            Err(_) => Json::<T>::from_bytes(&body).map(|Json(v)| FastJson(v)),
        }
    }
}

async fn submit(
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
async fn test_only(
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

async fn list_jobs(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Query(q): Query<JobQuery>,
    Query(fresh): Query<Freshness>,
) -> Response {
    if let Err(e) = app.authenticate(&headers) {
        return e.into_response();
    }
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

async fn show_job(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(fresh): Query<Freshness>,
) -> ApiResult<JobView> {
    app.authenticate(&headers)?;
    app.read_barrier(&fresh).await?;
    job_view(&app, &id)
}

#[derive(Deserialize)]
struct OutputQuery {
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
async fn job_output(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<OutputQuery>,
) -> Result<Response, ApiError> {
    use crate::output::OutputError;
    let who = app.authenticate(&headers)?;
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
fn refused(r: Refusal) -> ApiError {
    match r {
        Refusal::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
        Refusal::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
        Refusal::Limit(m) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, m),
    }
}

/// A job id from a path (`1234`, `1234_7`); a malformed one is a 400.
fn job_ref(id: &str) -> Result<JobRef, ApiError> {
    JobRef::parse(id).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))
}

fn job_view(app: &App, id: &str) -> ApiResult<JobView> {
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

async fn cancel_filter(app: &App, headers: &HeaderMap, who: Requester, filter: CancelFilter) -> ApiResult<Cancelled> {
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

async fn cancel(AxState(app): AxState<App>, headers: HeaderMap, Json(req): Json<CancelJobs>) -> ApiResult<Cancelled> {
    let who = app.authenticate(&headers)?;
    cancel_filter(&app, &headers, who, req.filter).await
}

async fn cancel_one(AxState(app): AxState<App>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Cancelled> {
    let who = app.authenticate(&headers)?;
    let r = job_ref(&id)?;
    cancel_filter(&app, &headers, who, CancelFilter { jobs: vec![r], ..Default::default() }).await
}

async fn requeue(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(r): Json<Requeue>,
) -> ApiResult<JobView> {
    let who = app.authenticate(&headers)?;
    let job = job_ref(&id)?;
    app.propose_request(&headers, Command::Requeue { job, hold: r.hold, by: who, now: now_ms() }).await?;
    job_view(&app, &id)
}

/// `scancel --signal`: a signal to a running job's processes.
async fn signal(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(s): Json<SignalJob>,
) -> ApiResult<JobView> {
    let who = app.authenticate(&headers)?;
    let job = job_ref(&id)?;
    if !(1..=64).contains(&s.signal) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("signal {} is out of range 1-64", s.signal)));
    }
    app.propose_request(&headers, Command::Signal { job, signal: s.signal, by: who, now: now_ms() }).await?;
    job_view(&app, &id)
}

/// `scontrol hold` / `release`: a pending job (or array task) held or
/// let go; an array id acts on its pending tasks.
async fn hold(AxState(app): AxState<App>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<JobView> {
    let who = app.authenticate(&headers)?;
    let job = job_ref(&id)?;
    app.propose_request(&headers, Command::Hold { job, by: who, now: now_ms() }).await?;
    job_view(&app, &id)
}

async fn release(AxState(app): AxState<App>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<JobView> {
    let who = app.authenticate(&headers)?;
    let job = job_ref(&id)?;
    app.propose_request(&headers, Command::Release { job, by: who, now: now_ms() }).await?;
    job_view(&app, &id)
}

/// `scontrol update JobId=…`: time limit, partition, name, nice, comment.
async fn update_job(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(u): Json<UpdateJob>,
) -> ApiResult<JobView> {
    let who = app.authenticate(&headers)?;
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
async fn create_step(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(request): Json<StepRequest>,
) -> ApiResult<StepCreated> {
    let who = app.authenticate(&headers)?;
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
fn raw_job_id(app: &App, id: &str) -> Result<u64, ApiError> {
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
async fn end_step(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path((id, step)): Path<(String, u32)>,
    Json(e): Json<ExitReport>,
) -> ApiResult<JobView> {
    let who = app.authenticate(&headers)?;
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
async fn attach(AxState(app): AxState<App>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    hold_open(&app, &headers, &id, None)
}

/// `srun` holds the step it runs the same way: should srun go before it
/// says how the step ended, the leader ends it (see `holds.rs`).
async fn attach_step(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path((id, step)): Path<(String, u32)>,
) -> Result<Response, ApiError> {
    hold_open(&app, &headers, &id, Some(step))
}

/// The held request itself: a newline a second while the job (and the
/// step, if one is named) has not ended.
fn hold_open(app: &App, headers: &HeaderMap, id: &str, step: Option<u32>) -> Result<Response, ApiError> {
    let who = app.authenticate(headers)?;
    if !app.ctl.is_leader() {
        return Err(app.not_leader());
    }
    let job = raw_job_id(app, id)?;
    let live = move |s: &drover_core::State| {
        s.job(job).is_some_and(|j| {
            !j.state.is_terminal() && step.is_none_or(|n| j.steps.iter().any(|st| st.id == n && st.end.is_none()))
        })
    };
    let (owner, exists) = app.ctl.shared.read(|s| {
        let j = s.job(job);
        (
            j.map_or(u32::MAX, |j| j.spec.uid),
            step.is_none_or(|n| j.is_some_and(|j| j.steps.iter().any(|st| st.id == n))),
        )
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
async fn complete(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(e): Json<ExitReport>,
) -> ApiResult<JobView> {
    let who = app.authenticate(&headers)?;
    let job = job_ref(&id)?;
    let exit = ExitStatus { code: e.exit_code, signal: e.signal };
    app.propose_request(&headers, Command::Complete { job, exit, by: who, now: now_ms() }).await?;
    job_view(&app, &id)
}

/// The Slurm variables of a running job's batch step (`SLURM_*`,
/// `DROVER_*`), for `salloc`'s shell. Owner or operator only.
async fn job_env(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Vec<(String, String)>> {
    let who = app.authenticate(&headers)?;
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

#[derive(Deserialize)]
struct EventQuery {
    #[serde(default)]
    after: u64,
    /// Wait up to this many seconds for a first new event (long poll).
    #[serde(default)]
    wait: u64,
    /// A session token, for clients that cannot set headers (a browser's
    /// `EventSource`).
    token: Option<String>,
}

/// Recent events as JSON (`after`, long-polled with `wait`), or, when the
/// client accepts `text/event-stream`, as server-sent events that go on
/// until it hangs up, resumed after `Last-Event-ID`.
async fn list_events(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
    Query(fresh): Query<Freshness>,
) -> Result<Response, ApiError> {
    match &q.token {
        Some(token) => app.authenticate_token(token)?.0,
        None => app.authenticate(&headers)?,
    };
    app.read_barrier(&fresh).await?;
    let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if accept.contains("text/event-stream") {
        let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()?.trim().parse().ok());
        return Ok(event_stream(app, resume.unwrap_or(q.after)));
    }
    let added = app.events.added.notified();
    let mut events = app.events.since(q.after, 10_000);
    if events.is_empty() && q.wait > 0 {
        let _ = tokio::time::timeout(Duration::from_secs(q.wait.min(60)), added).await;
        events = app.events.since(q.after, 10_000);
    }
    Ok(Json(EventList { events }).into_response())
}

/// Server-sent events: each event as `id: SEQ`, `event: KIND` and its JSON
/// record; a comment every 15 s keeps proxies from closing a quiet stream.
fn event_stream(app: App, after: u64) -> Response {
    let stream = futures_util::stream::unfold((app, after), |(app, mut after)| async move {
        let mut events = {
            let added = app.events.added.notified();
            let events = app.events.since(after, 1000);
            if events.is_empty() {
                let _ = tokio::time::timeout(Duration::from_secs(15), added).await;
            }
            events
        };
        if events.is_empty() {
            events = app.events.since(after, 1000);
        }
        let mut chunk = String::new();
        for e in &events {
            after = e.seq;
            let data = serde_json::to_string(e).unwrap_or_default();
            chunk.push_str(&format!("id: {}\nevent: {}\ndata: {data}\n\n", e.seq, e.kind));
        }
        if chunk.is_empty() {
            chunk.push_str(": keep-alive\n\n");
        }
        Some((Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(chunk)), (app, after)))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct HistoryParams {
    user: Option<String>,
    account: Option<String>,
    state: Option<String>,
    partition: Option<String>,
    id: Option<String>,
    /// Epoch milliseconds: jobs that ended at or after it.
    since: Option<u64>,
    /// Epoch milliseconds: jobs submitted at or before it.
    until: Option<u64>,
    limit: Option<u32>,
    /// `END_MS:JOB_ID`, the `next` of the previous page.
    after: Option<String>,
    /// `true`: requeued jobs' earlier runs too.
    #[serde(default)]
    attempts: bool,
}

/// Finished jobs from the accounting database, oldest end first, a page at
/// a time.
async fn history(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Query(p): Query<HistoryParams>,
) -> ApiResult<HistoryPage> {
    app.authenticate(&headers)?;
    let Some(sink) = &app.accounting else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "this controller keeps no accounting (--accounting none)"));
    };
    let list = |v: &Option<String>| -> Vec<String> {
        v.as_deref().unwrap_or("").split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
    };
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
    let jobs = list(&p.id)
        .iter()
        .map(|j| j.split('_').next().unwrap_or(j).parse::<u64>().map_err(|_| bad(format!("'{j}' is not a job id"))))
        .collect::<Result<Vec<u64>, ApiError>>()?;
    let after = p
        .after
        .as_deref()
        .map(|a| {
            a.split_once(':')
                .and_then(|(e, i)| Some((e.parse().ok()?, i.parse().ok()?)))
                .ok_or_else(|| bad(format!("after='{a}': expected END_MS:JOB_ID from the previous page's next")))
        })
        .transpose()?;
    let q = drover_accounting::HistoryQuery {
        users: list(&p.user),
        accounts: list(&p.account),
        states: list(&p.state),
        partitions: list(&p.partition),
        jobs,
        since_ms: p.since,
        until_ms: p.until,
        limit: p.limit,
        after,
        all_attempts: p.attempts,
    };
    let (jobs, next) = sink
        .history(&q)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("accounting database: {e}")))?;
    Ok(Json(HistoryPage { jobs, next: next.map(|(e, i)| format!("{e}:{i}")) }))
}

#[derive(Deserialize)]
struct UsageParams {
    /// Epoch milliseconds; default: a week before `until`.
    since: Option<u64>,
    /// Epoch milliseconds; default: now.
    until: Option<u64>,
}

/// Use per user and account over a window, from accounting (`drover usage`).
async fn usage(AxState(app): AxState<App>, headers: HeaderMap, Query(p): Query<UsageParams>) -> ApiResult<UsageReport> {
    app.authenticate(&headers)?;
    let Some(sink) = &app.accounting else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "this controller keeps no accounting (--accounting none)"));
    };
    let until = p.until.unwrap_or_else(now_ms);
    let since = p.since.unwrap_or(until.saturating_sub(7 * 86_400_000));
    if since >= until {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("since ({since}) must come before until ({until})"),
        ));
    }
    let unavailable = |e: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("accounting database: {e}"));
    let db = sink.db().await.map_err(unavailable)?;
    let rows = db.usage(since, until).await.map_err(|e| unavailable(e.to_string()))?;
    let rows = rows
        .into_iter()
        .map(|r| drover_proto::UsageRow {
            user: r.user,
            account: r.account,
            jobs: r.jobs,
            completed: r.completed,
            failed: r.failed,
            cancelled: r.cancelled,
            cpu_seconds: r.cpu_seconds,
            gpu_seconds: r.gpu_seconds,
        })
        .collect();
    Ok(Json(UsageReport { since, until, rows }))
}

/// The cluster's settings (`scontrol show config`).
async fn show_config(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Query(fresh): Query<Freshness>,
) -> ApiResult<drover_core::state::Config> {
    app.authenticate(&headers)?;
    app.read_barrier(&fresh).await?;
    Ok(Json(app.ctl.shared.read(|s| s.config().clone())))
}

async fn list_partitions(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Query(fresh): Query<Freshness>,
) -> ApiResult<PartitionList> {
    app.authenticate(&headers)?;
    app.read_barrier(&fresh).await?;
    Ok(Json(PartitionList {
        partitions: app
            .ctl
            .shared
            .read(|s| s.partitions().iter().map(|p| crate::views::partition_view(s, p)).collect()),
    }))
}

/// Who the request's credential or token says the caller is.
async fn whoami(AxState(app): AxState<App>, headers: HeaderMap) -> ApiResult<WhoAmI> {
    let who = app.authenticate(&headers)?;
    Ok(Json(WhoAmI { uid: who.uid, user: drover_auth::user_name(who.uid), operator: who.operator }))
}

/// Trades a one-time credential for a session token of the same identity:
/// `drover token`, and the dashboard link `drover up` prints.
async fn issue_token(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Json(req): Json<TokenRequest>,
) -> ApiResult<TokenGrant> {
    let (who, gid) = app.authenticate_credential(&headers)?;
    let lifetime_ms = req.lifetime_s.unwrap_or(8 * 3600).saturating_mul(1000);
    if lifetime_ms == 0 || lifetime_ms > drover_auth::TOKEN_MAX_MS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("a token lives 1 s to {} days", drover_auth::TOKEN_MAX_MS / 86_400_000),
        ));
    }
    let now = now_ms();
    let token = drover_auth::Token::mint(&app.key, who.uid, gid, lifetime_ms, now)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot mint a token: {e}")))?;
    Ok(Json(TokenGrant { token, uid: who.uid, expires_ms: now + lifetime_ms }))
}

async fn list_nodes(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Query(fresh): Query<Freshness>,
) -> ApiResult<NodeList> {
    app.authenticate(&headers)?;
    app.read_barrier(&fresh).await?;
    Ok(Json(NodeList {
        nodes: app.ctl.shared.read(|s| (0..s.nodes().len()).map(|i| crate::views::node_view(s, i)).collect()),
    }))
}

async fn show_node(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(fresh): Query<Freshness>,
) -> ApiResult<NodeView> {
    app.authenticate(&headers)?;
    app.read_barrier(&fresh).await?;
    node_view(&app, &name)
}

fn node_view(app: &App, name: &str) -> ApiResult<NodeView> {
    app.ctl
        .shared
        .read(|s| s.node_index(name).map(|i| crate::views::node_view(s, i as usize)))
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("Invalid node name specified: {name}")))
}

async fn node_action(
    app: &App,
    headers: &HeaderMap,
    who: Requester,
    node: String,
    action: NodeAction,
    reason: Option<String>,
) -> ApiResult<NodeView> {
    let cmd = Command::SetNodeState { node: node.clone(), action, reason, by: who, now: now_ms() };
    app.propose_request(headers, cmd).await?;
    node_view(app, &node)
}

async fn drain(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(d): Json<Drain>,
) -> ApiResult<NodeView> {
    let who = app.authenticate(&headers)?;
    node_action(&app, &headers, who, name, NodeAction::Drain, Some(d.reason)).await
}

async fn resume(AxState(app): AxState<App>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult<NodeView> {
    let who = app.authenticate(&headers)?;
    node_action(&app, &headers, who, name, NodeAction::Resume, None).await
}

async fn health(AxState(app): AxState<App>) -> Response {
    let leader = app.ctl.raft.metrics().borrow().current_leader;
    let nodes: Vec<(String, String)> =
        app.ctl.shared.read(|s| s.nodes().iter().map(|n| (n.name.clone(), n.state().name().to_string())).collect());
    let mut problems: Vec<String> = nodes
        .iter()
        .filter(|(_, st)| matches!(st.as_str(), "DOWN" | "FAIL" | "DRAINED" | "DRAINING" | "UNKNOWN"))
        .map(|(n, st)| format!("node {n} is {st}"))
        .collect();
    if leader.is_none() {
        problems.push("no controller is leader".into());
    }
    let ok = problems.is_empty();
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(Health { ok, leader, nodes, problems })).into_response()
}

// ---- the agent protocol ----

async fn register(AxState(app): AxState<App>, headers: HeaderMap, Json(r): Json<Register>) -> ApiResult<NodeView> {
    app.authenticate_agent(&headers)?;
    let name = r.name.clone();
    app.ctl
        .propose(Command::RegisterNode {
            name: r.name,
            addr: r.addr,
            total: r.total,
            features: r.features,
            known_steps: r.known_steps,
            now: now_ms(),
        })
        .await?;
    app.liveness.saw(&name);
    node_view(&app, &name)
}

async fn heartbeat(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path(node): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.authenticate_agent(&headers)?;
    app.leader_only()?;
    let up = app.ctl.shared.read(|s| s.node(&node).map(|n| n.status == drover_core::NodeStatus::Up));
    match up {
        Some(true) => {
            app.liveness.saw(&node);
            Ok(StatusCode::NO_CONTENT)
        }
        // The agent re-registers on this answer.
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("node {node} is not registered or is down; register again"),
        )),
    }
}

/// The order stream: newline-delimited JSON, with a ping every few seconds.
async fn orders(AxState(app): AxState<App>, headers: HeaderMap, Path(node): Path<String>) -> Response {
    if let Err(e) = app.authenticate_agent(&headers).and_then(|_| app.leader_only()) {
        return e.into_response();
    }
    let dispatch = app.dispatch.clone();
    let stream = futures_util::stream::unfold((dispatch, node, Vec::<Order>::new()), |(d, node, mut buf)| async move {
        loop {
            // A deposed leader ends the stream; the agent finds the new one.
            if !d.is_active() {
                return None;
            }
            if let Some(o) = buf.pop() {
                let mut line = serde_json::to_vec(&o).unwrap_or_default();
                line.push(b'\n');
                return Some((Ok::<_, std::io::Error>(line), (d, node, buf)));
            }
            let (mut orders, ready) = d.take(&node);
            if orders.is_empty() {
                let woke = tokio::time::timeout(Duration::from_secs(5), ready.notified()).await;
                if woke.is_err() {
                    buf.push(Order::Ping);
                }
                continue;
            }
            orders.reverse();
            buf = orders;
        }
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream.map(|r| r.map(axum::body::Bytes::from))))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Health-check drains carry this prefix; only they are lifted when the
/// check passes again (an operator's drain stays).
const HEALTH_DRAIN: &str = "health check failed: ";

/// The result of a node's health check (like Slurm's HealthCheckProgram):
/// a failure drains the node with the check's output as the reason; a pass
/// resumes a node that a failed check drained.
async fn node_health(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path(node): Path<String>,
    Json(h): Json<HealthReport>,
) -> Result<StatusCode, ApiError> {
    app.authenticate_agent(&headers)?;
    let (drained, by_check) = app.ctl.shared.read(|s| {
        s.node(&node).map_or((false, false), |n| {
            (n.drain, n.drain && n.reason.as_deref().is_some_and(|r| r.starts_with(HEALTH_DRAIN)))
        })
    });
    let change = match (h.ok, drained, by_check) {
        (false, false, _) => Some((
            NodeAction::Drain,
            Some(format!("{HEALTH_DRAIN}{}", h.message.chars().take(200).collect::<String>())),
        )),
        (true, _, true) => Some((NodeAction::Resume, None)),
        _ => None,
    };
    if let Some((action, reason)) = change {
        let by = Requester { uid: 0, operator: true };
        app.ctl.propose(Command::SetNodeState { node, action, reason, by, now: now_ms() }).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// An agent's reports: starts are checked against the state (no log write;
/// a stale attempt gets a kill order), and every finish in the request goes
/// into one log entry, so jobs ending together cost one fsync.
async fn reports(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Json(r): Json<Reports>,
) -> Result<StatusCode, ApiError> {
    app.authenticate_agent(&headers)?;
    let now = now_ms();
    let mut finished = Vec::new();
    for r in r.reports {
        app.liveness.saw(&r.node);
        if let (Some(step), true) = (r.step, r.abandoned) {
            // Its srun is gone: the step ends here, killed.
            let exit = drover_core::job::ExitStatus { code: 0, signal: libc::SIGKILL };
            finished.push(Command::EndStep { job: r.job, step, exit, cancelled: true, by: Requester::ROOT, now });
            continue;
        }
        if let Some(step) = r.step {
            finished.push(Command::StepUsage {
                job: r.job,
                step,
                node: r.node,
                max_rss_kb: r.max_rss_kb.unwrap_or(0),
                cpu: r.cpu.unwrap_or_default(),
            });
            continue;
        }
        match r.finished {
            Some(outcome) => finished.push(Command::StepFinished {
                job: r.job,
                attempt: r.attempt,
                outcome,
                max_rss_kb: r.max_rss_kb,
                cpu: r.cpu,
                failure: r.failure,
                node: r.node,
                now,
            }),
            None => {
                let current = app
                    .ctl
                    .shared
                    .read(|s| s.job(r.job).is_some_and(|j| j.restart_count == r.attempt && j.state.is_active()));
                if !current {
                    app.dispatch.push(&r.node, Order::Kill { job: r.job, attempt: r.attempt });
                }
            }
        }
    }
    // Refusals (a report for a job the state no longer has) come back as
    // events inside the batch: the agent must not retry them.
    if !finished.is_empty() {
        app.ctl.propose(Command::Batch(finished)).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---- the controllers: membership and Raft's RPCs ----

async fn controllers(AxState(app): AxState<App>) -> Json<Controllers> {
    Json(controllers_view(&app))
}

/// Prometheus' scrape (no credential, like /health): OpenMetrics when the
/// scraper asks for it, the classic text format otherwise.
async fn metrics(AxState(app): AxState<App>, headers: HeaderMap) -> Response {
    use crate::metrics::{wants_openmetrics, OPENMETRICS_FORMAT, TEXT_FORMAT};
    let openmetrics = wants_openmetrics(headers.get("accept").and_then(|v| v.to_str().ok()));
    let raft = controllers_view(&app);
    let heartbeats = if app.ctl.is_leader() { app.liveness.ages() } else { Vec::new() };
    let text = app.metrics.scrape(|refresh| app.ctl.shared.read(refresh), &raft, &heartbeats, openmetrics);
    ([("content-type", if openmetrics { OPENMETRICS_FORMAT } else { TEXT_FORMAT })], text).into_response()
}

/// Prometheus HTTP service discovery (`http_sd_configs`): the controllers,
/// and every agent that registered a metrics address. No credential, like
/// `/metrics`: it names hosts and ports, nothing more. Labels are `__meta_`
/// ones, for relabelling: a node's state must not become part of its
/// series' identity.
async fn prometheus_targets(AxState(app): AxState<App>) -> Response {
    use serde_json::json;
    let raft = controllers_view(&app);
    let mut groups: Vec<serde_json::Value> = raft
        .members
        .iter()
        .map(|m| json!({"targets": [m.addr], "labels": {"__meta_drover_role": "controller", "__meta_drover_controller": m.id.to_string()}}))
        .collect();
    app.ctl.shared.read(|s| {
        for n in s.nodes().iter().filter(|n| n.addr.contains(':')) {
            groups.push(json!({
                "targets": [n.addr],
                "labels": {"__meta_drover_role": "agent", "__meta_drover_node": n.name, "__meta_drover_node_state": n.state().name()}
            }));
        }
    });
    Json(groups).into_response()
}

fn controllers_view(app: &App) -> Controllers {
    let m = app.ctl.raft.metrics().borrow().clone();
    let leader_last = m.last_log_index;
    let replication = m.replication.clone().unwrap_or_default();
    let membership = m.membership_config.membership();
    let members = membership
        .nodes()
        .map(|(id, node)| {
            let matched = replication.get(id).map(|l| l.map_or(0, |l| l.index));
            Member {
                id: *id,
                addr: node.addr.clone(),
                voter: membership.voter_ids().any(|v| v == *id),
                matched_index: matched,
                lag: matched.map(|i| leader_last.unwrap_or(0).saturating_sub(i)),
            }
        })
        .collect::<Vec<Member>>();
    let leading = m.current_leader == Some(app.ctl.id);
    let committed_index = if leading {
        // The highest index a majority of voters holds.
        let mut held: Vec<u64> = members.iter().filter(|m| m.voter).map(|m| m.matched_index.unwrap_or(0)).collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        held.get(held.len() / 2).copied()
    } else {
        m.last_applied.map(|l| l.index)
    };
    Controllers {
        this: app.ctl.id,
        committed_index,
        leader: m.current_leader,
        term: m.current_term,
        role: format!("{:?}", m.state),
        last_log_index: m.last_log_index,
        applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        members,
    }
}

fn membership_error<E: std::fmt::Display>(app: &App, e: openraft::error::RaftError<u64, E>) -> ApiError {
    if app.ctl.is_leader() {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("membership change failed: {e}"))
    } else {
        app.not_leader()
    }
}

/// Adds a controller: first as a learner, which receives the log (or a
/// snapshot) until it has caught up, then as a voter.
async fn join_controller(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Json(j): Json<JoinController>,
) -> ApiResult<Controllers> {
    app.authenticate_operator(&headers)?;
    if j.addr.parse::<SocketAddr>().is_err() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("invalid controller address '{}'", j.addr)));
    }
    app.leader_only()?;
    let node = openraft::BasicNode { addr: j.addr.clone() };
    app.ctl.raft.add_learner(j.id, node, true).await.map_err(|e| membership_error(&app, e))?;
    let mut voters = app.ctl.voters();
    voters.insert(j.id);
    app.ctl.raft.change_membership(voters, false).await.map_err(|e| membership_error(&app, e))?;
    Ok(controllers(AxState(app)).await)
}

/// Removes a controller from the group (it stops receiving the log).
async fn remove_controller(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> ApiResult<Controllers> {
    app.authenticate_operator(&headers)?;
    app.leader_only()?;
    let mut voters = app.ctl.voters();
    if !voters.remove(&id) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("controller {id} is not a voting member")));
    }
    if voters.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "cannot remove the last controller"));
    }
    app.ctl.raft.change_membership(voters, false).await.map_err(|e| membership_error(&app, e))?;
    Ok(controllers(AxState(app)).await)
}

/// One Raft RPC from another controller (signed with the cluster key); the
/// answer is openraft's `Result`, which the peer unwraps.
async fn raft_rpc<Resp: serde::Serialize, F: std::future::Future<Output = Resp>>(
    app: &App,
    headers: &HeaderMap,
    call: impl FnOnce(Raft) -> F,
) -> Response {
    match app.authenticate_agent(headers) {
        Ok(()) => Json(call(app.ctl.raft.clone()).await).into_response(),
        Err(e) => e.into_response(),
    }
}

type Raft = openraft::Raft<crate::TypeConfig>;

async fn raft_append(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Json(req): Json<openraft::raft::AppendEntriesRequest<crate::TypeConfig>>,
) -> Response {
    raft_rpc(&app, &headers, |raft: Raft| async move { raft.append_entries(req).await }).await
}

async fn raft_vote(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Json(req): Json<openraft::raft::VoteRequest<u64>>,
) -> Response {
    raft_rpc(&app, &headers, |raft: Raft| async move { raft.vote(req).await }).await
}

async fn raft_snapshot(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Json(req): Json<openraft::raft::InstallSnapshotRequest<crate::TypeConfig>>,
) -> Response {
    raft_rpc(&app, &headers, |raft: Raft| async move { raft.install_snapshot(req).await }).await
}
