//! What changes when this controller gains or loses leadership: the
//! order dispatcher opens or closes, node liveness starts afresh, a new
//! cluster is configured, and the site's leadership hook runs (to move a
//! floating IP, say).

use crate::dispatch::Dispatcher;
use crate::loops::Liveness;
use crate::raft::Controller;
use drover_core::partition::PartitionSpec;
use drover_core::state::Config;
use drover_core::Command;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long a hook may run before it is killed: moving an address or
/// calling a cloud API takes seconds, not minutes.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Something built in that follows the leadership, as the hook does: the
/// floating IP moved through a cloud's API (`drover-ec2`). Acquired when
/// this controller wins (before the site's hook), released when it loses.
pub trait OnLeadership: Send + Sync {
    /// For the log: what it moves.
    fn name(&self) -> String;
    fn acquire(&self) -> futures_util::future::BoxFuture<'_, Result<String, String>>;
    fn release(&self) -> futures_util::future::BoxFuture<'_, Result<String, String>>;
}

impl std::fmt::Debug for dyn OnLeadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Runs one of [`OnLeadership`]'s halves, bounded like the hook; logs what
/// it did and how long it took.
async fn follow_action(action: &dyn OnLeadership, acquire: bool, term: u64) {
    let started = std::time::Instant::now();
    let event = if acquire { "acquire" } else { "release" };
    let done = if acquire { action.acquire() } else { action.release() };
    match tokio::time::timeout(HOOK_TIMEOUT, done).await {
        Ok(Ok(what)) => {
            let ms = started.elapsed().as_millis() as u64;
            tracing::info!(term, event, ms, "{} ({event}): {what} in {ms} ms", action.name())
        }
        Ok(Err(e)) => tracing::error!(term, event, error = %e, "{} ({event}) failed", action.name()),
        Err(_) => tracing::error!(term, event, "{} ({event}) did not finish in {HOOK_TIMEOUT:?}", action.name()),
    }
}

/// Follows this controller's Raft role for its whole life.
pub async fn follow(
    ctl: Arc<Controller>,
    dispatch: Arc<Dispatcher>,
    liveness: Arc<Liveness>,
    hook: Option<String>,
    actions: Vec<std::sync::Arc<dyn OnLeadership>>,
    min_job_age_ms: u64,
) {
    let mut metrics = ctl.raft.metrics();
    let mut leading: Option<u64> = None;
    loop {
        let term = ctl.term();
        match (leading, ctl.is_leader()) {
            (None, true) | (Some(_), true) if leading != Some(term) => {
                // A controller restarted after leading believes for a moment
                // that it still leads: only a majority's answer counts, before
                // any order or floating IP moves.
                if !confirmed(&ctl).await {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                leading = Some(term);
                // Heartbeats went to the old leader: every node gets a full
                // timeout from now before it is judged.
                liveness.reset();
                dispatch.set_active(true);
                tracing::info!(term, "leader in term {term}");
                for a in &actions {
                    follow_action(a.as_ref(), true, term).await;
                }
                if let Some(h) = &hook {
                    run_hook(h, "acquire", &ctl, term).await;
                }
                if let Err(e) = bootstrap(&ctl, min_job_age_ms).await {
                    tracing::error!(term, error = %e, "cannot configure the new cluster");
                }
                // Into the log, so every controller's event history shows the
                // failover; on its own task, so that losing the leadership
                // meanwhile is noticed here at once.
                let elected = Command::LeaderElected { controller: ctl.id, term, now: crate::loops::now_ms() };
                let recorder = ctl.clone();
                tokio::spawn(async move {
                    if let Err(e) = recorder.propose(elected).await {
                        tracing::warn!(term, error = %e, "cannot record the leadership in the log");
                    }
                });
            }
            (Some(was), false) => {
                leading = None;
                // Agents' order streams end here and they find the new leader.
                dispatch.set_active(false);
                tracing::info!(term, was, "no longer leader (was in term {was}, now term {term})");
                for a in &actions {
                    follow_action(a.as_ref(), false, was).await;
                }
                if let Some(h) = &hook {
                    run_hook(h, "release", &ctl, was).await;
                }
            }
            _ => {}
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            // Leadership can also be lost without a metrics change being seen
            // in between (lost and regained): look again now and then.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Whether a majority still takes this controller as leader.
async fn confirmed(ctl: &Controller) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(2), ctl.raft.ensure_linearizable()).await, Ok(Ok(_)))
}

/// A new cluster gets a default partition over all nodes, and liveness is
/// left to the leader (heartbeats are not logged). The leader's
/// `--min-job-age` becomes the cluster's.
async fn bootstrap(ctl: &Controller, min_job_age_ms: u64) -> Result<(), String> {
    let (config, has_partition) = ctl.shared.read(|s| (s.config().clone(), !s.partitions().is_empty()));
    let wanted = Config { node_timeout_ms: None, min_job_age_ms, ..config.clone() };
    if config != wanted {
        ctl.propose(Command::Configure(wanted)).await.map_err(|e| e.to_string())?;
    }
    if !has_partition {
        let p = PartitionSpec { is_default: true, ..PartitionSpec::new("debug", "ALL") };
        ctl.propose(Command::SetPartition(p)).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs the hook through `sh -c` with `DROVER_LEADER_EVENT` (acquire or
/// release), `DROVER_CONTROLLER_ID`, `DROVER_CONTROLLER_ADDR` and
/// `DROVER_TERM` set. Its output goes to the controller's log; a failure is
/// logged, not fatal: leadership does not wait on a floating IP.
async fn run_hook(hook: &str, event: &str, ctl: &Controller, term: u64) {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(hook)
        .env("DROVER_LEADER_EVENT", event)
        .env("DROVER_CONTROLLER_ID", ctl.id.to_string())
        .env("DROVER_CONTROLLER_ADDR", &ctl.addr)
        .env("DROVER_TERM", term.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(term, event, error = %e, "cannot run the leadership hook");
            return;
        }
    };
    match tokio::time::timeout(HOOK_TIMEOUT, child.wait()).await {
        Ok(Ok(st)) if st.success() => tracing::info!(term, event, "leadership hook ({event}) done"),
        Ok(Ok(st)) => tracing::warn!(term, event, "leadership hook ({event}) failed: {st}"),
        Ok(Err(e)) => tracing::warn!(term, event, error = %e, "leadership hook ({event}) failed"),
        Err(_) => {
            let _ = child.kill().await;
            tracing::warn!(term, event, "leadership hook ({event}) killed after {HOOK_TIMEOUT:?}");
        }
    }
}

/// A controller started with `--join`: asks the running group (any of
/// `existing`, following the leader) to add it, until one agrees. The
/// leader replicates the log or a snapshot to it as a learner, then makes
/// it a voter.
pub async fn ask_to_join(ctl: Arc<Controller>, existing: String, key: Arc<Vec<u8>>, tls_ca: Option<PathBuf>) {
    let (http, scheme) = match drover_tls::http_client(reqwest::Client::builder(), tls_ca.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot make the client to join with");
            return;
        }
    };
    let Ok(endpoints) = drover_proto::Endpoints::parse_with(&existing, scheme == "https") else {
        tracing::error!("no controllers to join in '{existing}'");
        return;
    };
    let body = drover_proto::JoinController { id: ctl.id, addr: ctl.addr.clone() };
    loop {
        if ctl.voters().contains(&ctl.id) {
            tracing::info!("joined the group as a voter");
            return;
        }
        let base = endpoints.current();
        let sent = http
            .post(format!("{base}/api/v1/controllers"))
            .header("authorization", drover_auth::key_authorization(&key).unwrap_or_default())
            .timeout(Duration::from_secs(60))
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) if r.status() == reqwest::StatusCode::MISDIRECTED_REQUEST => {
                endpoints.misdirected(&base, r.json().await.ok());
                continue;
            }
            Ok(r) => {
                let text = r.text().await.unwrap_or_default();
                tracing::warn!(peer = %base, "{base} did not add this controller: {text}");
                endpoints.failed(&base);
            }
            Err(e) => {
                tracing::warn!(peer = %base, error = %e, "cannot ask {base} to add this controller");
                endpoints.failed(&base);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
