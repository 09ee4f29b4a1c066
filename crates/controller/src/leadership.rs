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
use std::sync::Arc;
use std::time::Duration;

/// How long a hook may run before it is killed: moving an address or
/// calling a cloud API takes seconds, not minutes.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Follows this controller's Raft role for its whole life.
pub async fn follow(ctl: Arc<Controller>, dispatch: Arc<Dispatcher>, liveness: Arc<Liveness>, hook: Option<String>) {
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
                eprintln!("drover controller {}: leader in term {term}", ctl.id);
                if let Some(h) = &hook {
                    run_hook(h, "acquire", &ctl, term).await;
                }
                if let Err(e) = bootstrap(&ctl).await {
                    eprintln!("drover controller {}: cannot configure the new cluster: {e}", ctl.id);
                }
            }
            (Some(was), false) => {
                leading = None;
                // Agents' order streams end here and they find the new leader.
                dispatch.set_active(false);
                eprintln!("drover controller {}: no longer leader (was in term {was}, now term {term})", ctl.id);
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
/// left to the leader (heartbeats are not logged).
async fn bootstrap(ctl: &Controller) -> Result<(), String> {
    let (configured, has_partition) =
        ctl.shared.read(|s| (s.config().node_timeout_ms.is_none(), !s.partitions().is_empty()));
    if !configured {
        let config = Config { node_timeout_ms: None, ..Config::default() };
        ctl.propose(Command::Configure(config)).await.map_err(|e| e.to_string())?;
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
            eprintln!("drover controller {}: cannot run the leadership hook: {e}", ctl.id);
            return;
        }
    };
    match tokio::time::timeout(HOOK_TIMEOUT, child.wait()).await {
        Ok(Ok(st)) if st.success() => eprintln!("drover controller {}: leadership hook ({event}) done", ctl.id),
        Ok(Ok(st)) => eprintln!("drover controller {}: leadership hook ({event}) failed: {st}", ctl.id),
        Ok(Err(e)) => eprintln!("drover controller {}: leadership hook ({event}): {e}", ctl.id),
        Err(_) => {
            let _ = child.kill().await;
            eprintln!("drover controller {}: leadership hook ({event}) killed after {HOOK_TIMEOUT:?}", ctl.id);
        }
    }
}

/// A controller started with `--join`: asks the running group (any of
/// `existing`, following the leader) to add it, until one agrees. The
/// leader replicates the log or a snapshot to it as a learner, then makes
/// it a voter.
pub async fn ask_to_join(ctl: Arc<Controller>, existing: String, key: Arc<Vec<u8>>) {
    let Ok(endpoints) = drover_proto::Endpoints::parse(&existing) else {
        eprintln!("drover controller {}: no controllers to join in '{existing}'", ctl.id);
        return;
    };
    let http = reqwest::Client::new();
    let body = drover_proto::JoinController { id: ctl.id, addr: ctl.addr.clone() };
    loop {
        if ctl.voters().contains(&ctl.id) {
            eprintln!("drover controller {}: joined the group as a voter", ctl.id);
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
                eprintln!("drover controller {}: {base} did not add this controller: {text}", ctl.id);
                endpoints.failed(&base);
            }
            Err(e) => {
                eprintln!("drover controller {}: cannot ask {base} to add this controller: {e}", ctl.id);
                endpoints.failed(&base);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
