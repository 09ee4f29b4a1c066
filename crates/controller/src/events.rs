//! The recent history of applied events, for `drover events` and
//! `GET /api/v1/events`: node failures and recoveries, requeues, drains,
//! job starts and ends, each with the time it was applied here, so that a
//! recovery can be timed from the outside.
//!
//! Kept in memory (the last [`CAPACITY`] events), filled by every
//! controller from its own applied log: the history does not survive a
//! restart of this controller; accounting (SQL) is the durable record.

use crate::machine::Shared;
use drover_core::Event;
use drover_proto::EventRecord;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

pub const CAPACITY: usize = 10_000;

#[derive(Default)]
pub struct EventLog {
    recent: Mutex<(VecDeque<EventRecord>, u64)>,
    /// Woken on every new event, for followers (`drover events -f`).
    pub added: Notify,
}

/// The fields a reader filters on, taken from the event's serialised form
/// (`{"Variant": {...}}`), so that a new event kind needs no code here.
fn describe(e: &Event) -> (String, Option<u64>, Option<String>) {
    let value = serde_json::to_value(e).unwrap_or_default();
    let Some((kind, body)) = value.as_object().and_then(|o| o.iter().next()) else {
        return ("Unknown".into(), None, None);
    };
    let job = body.get("job").or_else(|| body.get("array")).and_then(|j| j.as_u64());
    let node = body.get("node").and_then(|n| n.as_str()).map(str::to_string);
    (kind.clone(), job, node)
}

impl EventLog {
    pub fn push(&self, e: &Event, time_ms: u64) {
        let (kind, job, node) = describe(e);
        let mut recent = self.recent.lock().expect("event log lock");
        recent.1 += 1;
        let seq = recent.1;
        recent.0.push_back(EventRecord { seq, time_ms, kind, job, node, text: e.to_string() });
        if recent.0.len() > CAPACITY {
            recent.0.pop_front();
        }
        drop(recent);
        self.added.notify_waiters();
    }

    /// Events after `after` (a sequence number), at most `limit`.
    pub fn since(&self, after: u64, limit: usize) -> Vec<EventRecord> {
        let recent = self.recent.lock().expect("event log lock");
        recent.0.iter().filter(|r| r.seq > after).take(limit).cloned().collect()
    }

    /// Follows applied events for the life of the controller.
    pub async fn run(self: Arc<Self>, shared: Arc<Shared>) {
        let mut events = shared.subscribe();
        while let Some((index, e)) = events.recv().await {
            log_applied(index, &e);
            self.push(&e, crate::loops::now_ms());
        }
    }
}

/// Every controller logs what it applies: what an operator looks for at
/// `info` (nodes, requeues, failed starts), each job's life at `debug`.
fn log_applied(index: u64, e: &Event) {
    use tracing::{debug, info};
    match e {
        Event::NodeStateChanged { node, .. } | Event::NodeRegistered { node } => info!(index, node_name = %node, "{e}"),
        Event::JobRequeued { job, .. } => info!(index, job_id = job, "{e}"),
        Event::AllocationRejected { .. } | Event::Refused { .. } => info!(index, "{e}"),
        Event::LeaderElected { term, .. } => info!(index, term, "{e}"),
        Event::JobStarted { job, .. } | Event::JobFinished { job, .. } | Event::JobKill { job, .. } => {
            debug!(index, job_id = job, "{e}")
        }
        Event::JobSubmitted { job, .. } => debug!(index, job_id = job, "{e}"),
        _ => debug!(index, "{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_core::node::NodeState;

    #[test]
    fn records_kind_job_node_and_text_and_keeps_the_last_ones() {
        let log = EventLog::default();
        log.push(&Event::NodeRegistered { node: "n1".into() }, 5);
        log.push(
            &Event::JobRequeued { job: 7, display: "7".into(), restart_count: 1, reason: "node n1 down".into() },
            6,
        );
        let all = log.since(0, 100);
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].kind.as_str(), all[0].node.as_deref(), all[0].time_ms), ("NodeRegistered", Some("n1"), 5));
        assert_eq!((all[1].kind.as_str(), all[1].job), ("JobRequeued", Some(7)));
        assert!(all[1].text.contains("node n1 down"), "{}", all[1].text);
        assert_eq!(log.since(1, 100).len(), 1);
        for i in 0..CAPACITY as u64 {
            log.push(
                &Event::NodeStateChanged { node: "n".into(), from: NodeState::Idle, to: NodeState::Down, reason: None },
                i,
            );
        }
        let kept = log.since(0, usize::MAX);
        assert_eq!(kept.len(), CAPACITY);
        assert_eq!(kept[0].seq, 3, "the oldest went first");
    }
}
