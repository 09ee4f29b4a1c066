//! The ground floor of the core: what a scheduling pass decides — a
//! [`Plan`] of allocations and pending reasons for [`JobKey`]s. The
//! scheduler (`sched`) makes plans from the state; the state (`state`)
//! applies them, re-checking each against itself. Both stand on this
//! module, neither on the other's internals.

use crate::job::{JobId, NodeShare, PendingReason};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What the scheduler decides about: a job, or the next task of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobKey {
    Job(JobId),
    Task { array: JobId, task: u32 },
}

impl JobKey {
    pub(crate) fn order(&self) -> (JobId, u32) {
        match *self {
            JobKey::Job(id) => (id, 0),
            JobKey::Task { array, task } => (array, task),
        }
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobKey::Job(id) => write!(f, "{id}"),
            JobKey::Task { array, task } => write!(f, "{array}_{task}"),
        }
    }
}

/// Start `key` now on these nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedAllocation {
    pub key: JobKey,
    pub shares: Vec<NodeShare>,
    /// The limit the job runs under, seconds.
    pub time_limit: Option<u64>,
    pub partition: String,
}

/// The outcome of one scheduling pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub allocations: Vec<PlannedAllocation>,
    /// New pending reasons, only where they changed.
    pub reasons: Vec<(JobKey, PendingReason)>,
    /// Jobs whose dependency can never be met and that asked to be cancelled
    /// then (`--kill-on-invalid-dep=yes`).
    pub cancel: Vec<JobId>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.allocations.is_empty() && self.reasons.is_empty() && self.cancel.is_empty()
    }
}
