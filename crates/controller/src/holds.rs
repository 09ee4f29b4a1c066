//! Allocations and steps held by their clients: `srun` and `salloc` keep a
//! request open to the leader (`GET /api/v1/jobs/{id}/attach`, and
//! `…/steps/{step}/attach` for a step) for as long as they live, and an
//! allocation they made (`JobSpec::client_held`) or a step srun runs
//! (`JobStep::client_held`) whose client has been gone for [`GRACE`] is
//! ended — whether it exited, crashed, was killed with -9 or lost its host,
//! and even if it died before any task started (which no agent would
//! notice). A stopped client (^Z) keeps its connection, so it keeps its
//! allocation, as in Slurm.
//!
//! Kept in the leader's memory, not in the log: a new leader starts every
//! allocation's grace afresh, and clients reconnect to it within it.

use drover_core::job::JobId;
use drover_core::step::StepId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a client holds: a job's allocation (`None`) or one of its steps.
pub type Held = (JobId, Option<StepId>);

/// How long an allocation may be without its client: long enough for a
/// client to find a new leader after an election.
pub const GRACE: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Holds {
    inner: Mutex<HashMap<Held, Hold>>,
}

struct Hold {
    /// Connections open now.
    open: u32,
    /// When the last one closed, or when the job was first seen without one.
    since: Instant,
}

/// One open attachment; dropped when its connection closes.
pub struct Attached {
    holds: Arc<Holds>,
    held: Held,
}

impl Holds {
    pub fn attach(self: &Arc<Self>, held: Held) -> Attached {
        let mut inner = self.inner.lock().expect("holds lock");
        inner.entry(held).or_insert(Hold { open: 0, since: Instant::now() }).open += 1;
        Attached { holds: self.clone(), held }
    }

    /// Of `held` (the client-held jobs and steps not yet ended), those whose
    /// client has been gone longer than `grace`. Those seen for the first
    /// time start their grace now; those no longer held are forgotten.
    pub fn abandoned(&self, held: &[Held], grace: Duration) -> Vec<Held> {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("holds lock");
        inner.retain(|job, h| h.open > 0 || held.contains(job));
        held.iter()
            .filter(|job| {
                let h = inner.entry(**job).or_insert(Hold { open: 0, since: now });
                h.open == 0 && now.duration_since(h.since) > grace
            })
            .copied()
            .collect()
    }

    /// Leadership changed: every grace starts again.
    pub fn reset(&self) {
        self.inner.lock().expect("holds lock").retain(|_, h| h.open > 0);
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let mut inner = self.holds.inner.lock().expect("holds lock");
        if let Some(h) = inner.get_mut(&self.held) {
            h.open = h.open.saturating_sub(1);
            if h.open == 0 {
                h.since = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_abandoned_only_after_its_grace_without_a_client() {
        let holds = Arc::new(Holds::default());
        let grace = Duration::from_millis(50);
        let (one, two, step) = ((1, None), (2, None), (1, Some(0)));
        assert!(holds.abandoned(&[one, two, step], grace).is_empty(), "first seen: the grace starts");
        let attached = holds.attach(one);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(holds.abandoned(&[one, two, step], grace), [two, step], "job 2 and the step never had a client");
        drop(attached);
        assert!(holds.abandoned(&[one], grace).is_empty(), "job 1's client just left");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(holds.abandoned(&[one], grace), [one]);
        // Reconnecting in time keeps it.
        let _again = holds.attach(one);
        assert!(holds.abandoned(&[one], grace).is_empty());
    }
}
