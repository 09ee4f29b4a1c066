//! The leader's duties: scheduling, node liveness, time.

use crate::metrics::Metrics;
use crate::raft::Controller;
use drover_core::node::NodeStatus;
use drover_core::sched::{self, SchedConfig};
use drover_core::{Command, Event};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use drover_auth::now_ms;

/// Whether an event can let a pending job start.
fn may_unblock(e: &Event) -> bool {
    matches!(
        e,
        Event::JobSubmitted { .. }
            | Event::JobFinished { .. }
            | Event::JobRequeued { .. }
            | Event::JobReleased { .. }
            | Event::JobUpdated { .. }
            | Event::NodeRegistered { .. }
            | Event::NodeStateChanged { .. }
            | Event::ArrayTasksCancelled { .. }
            | Event::LeaderElected { .. }
    )
}

/// Runs a scheduling pass whenever something changed that could let a job
/// start, and once a second while some job waits on time (the last pass
/// says whether one does): a queue of held or blocked jobs costs nothing
/// while nothing happens. Passes are at least
/// `coalesce` apart: a lone submission is planned at once, a burst shares
/// passes.
pub async fn schedule(
    ctl: Arc<Controller>,
    cfg: SchedConfig,
    coalesce: Duration,
    metrics: Arc<Metrics>,
    usage: Arc<std::sync::RwLock<sched::Usage>>,
) {
    let mut events = ctl.shared.subscribe();
    let mut dirty = true;
    // Until a pass of this leader says otherwise, assume some job waits on
    // the clock.
    let mut waits_on_time = true;
    let mut last_pass = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some((_, e)) => dirty |= may_unblock(&e),
                None => return,
            },
            // A pass that could not be committed is retried on the tick.
            _ = tick.tick(), if waits_on_time || dirty => {
                // Begin times and requeue back-offs expire with time alone.
                dirty |= ctl.shared.read(|s| !s.pending_ids().is_empty() || !s.arrays_pending().is_empty());
            }
        }
        if !dirty {
            continue;
        }
        tokio::time::sleep_until(last_pass + coalesce).await;
        // Everything that arrived meanwhile is covered by this pass.
        while events.try_recv().is_ok() {}
        dirty = false;
        if !ctl.is_leader() {
            waits_on_time = true;
            continue;
        }
        // The term is read before the state: a plan made from this state is
        // only valid in this term.
        let term = ctl.term();
        let now = now_ms();
        let planning = Instant::now();
        let usage = usage.read().expect("usage lock").clone();
        let (plan, considered, outlook) = ctl.shared.read(|s| {
            let waiting = s.pending_ids().len() + s.arrays_pending().len();
            let fair_share = sched::FairShare { base: &cfg.priority, usage: &usage };
            let policy: &dyn sched::PriorityPolicy = match cfg.priority.weight_fairshare {
                0 => &cfg.priority,
                _ => &fair_share,
            };
            let (plan, outlook) = sched::schedule_with_outlook(s, now, &cfg, policy);
            (plan, waiting, outlook)
        });
        waits_on_time = outlook.waits_on_time;
        metrics.pass(planning.elapsed(), considered, plan.allocations.len());
        last_pass = tokio::time::Instant::now();
        if plan.is_empty() {
            continue;
        }
        if let Err(e) = ctl.propose(Command::Allocate { plan, now, term }).await {
            tracing::warn!(term, error = %e, "scheduling pass not committed");
            dirty = true;
        }
    }
}

/// When each node was last heard from. Kept in the leader's memory, not in
/// the log: a thousand nodes heartbeating every second must not write a
/// thousand log entries a second.
#[derive(Default)]
pub struct Liveness {
    seen: Mutex<Seen>,
}

struct Seen {
    at: HashMap<String, Instant>,
    /// When this controller last became leader: nodes not heard from since
    /// count as heard from then.
    since: Instant,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen { at: HashMap::new(), since: Instant::now() }
    }
}

impl Liveness {
    pub fn saw(&self, node: &str) {
        self.seen.lock().expect("liveness lock").at.insert(node.to_string(), Instant::now());
    }

    /// Forgets every heartbeat: called when this controller becomes leader,
    /// since agents heartbeated to the old one meanwhile.
    pub fn reset(&self) {
        *self.seen.lock().expect("liveness lock") = Seen::default();
    }

    /// How long ago each node was last heard from (or this controller
    /// became leader, if later).
    pub fn ages(&self) -> Vec<(String, Duration)> {
        let seen = self.seen.lock().expect("liveness lock");
        seen.at.iter().map(|(n, at)| (n.clone(), (*at).max(seen.since).elapsed())).collect()
    }

    /// Which of `up` have been silent for longer than `timeout`.
    fn silent(&self, up: Vec<String>, timeout: Duration) -> Vec<String> {
        let seen = self.seen.lock().expect("liveness lock");
        up.into_iter().filter(|n| seen.at.get(n).copied().unwrap_or(seen.since).elapsed() > timeout).collect()
    }
}

/// Marks nodes DOWN when their agent has been silent for `timeout`, and
/// sends the time-limit `Tick`.
pub async fn watch(ctl: Arc<Controller>, liveness: Arc<Liveness>, timeout: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_time_tick = Instant::now();
    loop {
        tick.tick().await;
        if !ctl.is_leader() {
            continue;
        }
        let up: Vec<String> = ctl
            .shared
            .read(|s| s.nodes().iter().filter(|n| n.status == NodeStatus::Up).map(|n| n.name.clone()).collect());
        // A new leader gives every node a full timeout before judging.
        for node in liveness.silent(up, timeout) {
            let reason = format!("Not responding (no heartbeat for {}s)", timeout.as_secs());
            let _ = ctl.propose(Command::NodeDown { node, reason, now: now_ms() }).await;
        }
        let limited = ctl.shared.read(|s| {
            s.active_ids()
                .iter()
                .any(|id| s.job(*id).and_then(|j| j.alloc.as_ref()).is_some_and(|a| a.time_limit.is_some()))
        });
        // Finished jobs past min_job_age leave the state on a Tick too.
        let prune = ctl.shared.read(|s| s.prune_due(now_ms()));
        if (limited || prune) && last_time_tick.elapsed() >= Duration::from_secs(5) {
            last_time_tick = Instant::now();
            let _ = ctl.propose(Command::Tick { now: now_ms() }).await;
        }
    }
}

/// Cancels allocations made by `srun`/`salloc` whose client has been gone
/// longer than [`crate::holds::GRACE`] (see `holds.rs`).
pub async fn release_abandoned(ctl: Arc<Controller>, holds: Arc<crate::holds::Holds>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if !ctl.is_leader() {
            holds.reset();
            continue;
        }
        let held: Vec<crate::holds::Held> = ctl.shared.read(|s| {
            let jobs = s.pending_ids().iter().chain(s.active_ids()).filter_map(|id| s.job(*id));
            let allocations =
                jobs.clone().filter(|j| j.spec.client_held && j.end_intent.is_none()).map(|j| (j.id, None));
            let steps = jobs.filter(|j| j.state == drover_core::JobState::Running).flat_map(|j| {
                j.steps
                    .iter()
                    .filter(move |st| st.client_held && st.end.is_none() && st.attempt == j.restart_count)
                    .map(move |st| (j.id, Some(st.id)))
            });
            allocations.chain(steps).collect()
        });
        for (job, step) in holds.abandoned(&held, crate::holds::GRACE) {
            if let Some(step) = step {
                tracing::info!(job_id = job, step, "the srun holding this step is gone; ending it");
                let exit = drover_core::job::ExitStatus { code: 0, signal: libc::SIGKILL };
                let by = drover_core::state::Requester::ROOT;
                let cmd = Command::EndStep { job, step, exit, cancelled: true, by, now: now_ms() };
                if let Err(e) = ctl.propose(cmd).await {
                    tracing::warn!(job_id = job, step, error = %e, "cannot end an abandoned step");
                }
                continue;
            }
            tracing::info!(job_id = job, "the srun or salloc holding this allocation is gone; cancelling it");
            let filter = drover_core::state::CancelFilter {
                jobs: vec![drover_core::job::JobRef { id: job, task: None }],
                ..Default::default()
            };
            let cmd = Command::Cancel { filter, by: drover_core::state::Requester::ROOT, now: now_ms() };
            if let Err(e) = ctl.propose(cmd).await {
                tracing::warn!(job_id = job, error = %e, "cannot cancel an abandoned allocation");
            }
        }
    }
}
