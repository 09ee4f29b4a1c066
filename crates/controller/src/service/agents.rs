//! The agent protocol: registration, heartbeats, the order stream, health
//! reports and step reports.

use super::*;

pub(super) async fn register(
    AxState(app): AxState<App>,
    headers: HeaderMap,
    Json(r): Json<Register>,
) -> ApiResult<NodeView> {
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

pub(super) async fn heartbeat(
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
pub(super) async fn orders(AxState(app): AxState<App>, headers: HeaderMap, Path(node): Path<String>) -> Response {
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
pub(super) const HEALTH_DRAIN: &str = "health check failed: ";

/// The result of a node's health check (like Slurm's HealthCheckProgram):
/// a failure drains the node with the check's output as the reason; a pass
/// resumes a node that a failed check drained.
pub(super) async fn node_health(
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
pub(super) async fn reports(
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
