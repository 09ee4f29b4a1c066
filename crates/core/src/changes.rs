//! Which jobs and arrays commands touched, for views kept beside the state
//! that redo only what changed (the controller's queue listing) instead of
//! rereading every job.
//!
//! The state's job and array maps are [`Tracked`]: reading them is reading a
//! `BTreeMap`, but the only ways to change them record the id, so no
//! mutation can forget to tell. Recording is off until
//! [`crate::State::track_changes`]: the scheduler's benches and the
//! simulator pay nothing for it.

use crate::JobId;
use std::collections::BTreeMap;
use std::ops::Deref;

/// A map by job id that can list the ids changed since it was last asked.
#[derive(Debug, Clone)]
pub struct Tracked<V> {
    map: BTreeMap<JobId, V>,
    touched: Option<Vec<JobId>>,
}

impl<V> Default for Tracked<V> {
    fn default() -> Self {
        Tracked { map: BTreeMap::new(), touched: None }
    }
}

impl<V> Deref for Tracked<V> {
    type Target = BTreeMap<JobId, V>;
    fn deref(&self) -> &BTreeMap<JobId, V> {
        &self.map
    }
}

impl<V> FromIterator<(JobId, V)> for Tracked<V> {
    fn from_iter<I: IntoIterator<Item = (JobId, V)>>(iter: I) -> Self {
        Tracked { map: iter.into_iter().collect(), touched: None }
    }
}

impl<V> Tracked<V> {
    fn touch(&mut self, id: JobId) {
        if let Some(t) = &mut self.touched {
            t.push(id);
        }
    }

    pub(crate) fn get_mut(&mut self, id: &JobId) -> Option<&mut V> {
        self.touch(*id);
        self.map.get_mut(id)
    }

    pub(crate) fn insert(&mut self, id: JobId, v: V) -> Option<V> {
        self.touch(id);
        self.map.insert(id, v)
    }

    pub(crate) fn remove(&mut self, id: &JobId) -> Option<V> {
        self.touch(*id);
        self.map.remove(id)
    }

    pub(crate) fn track(&mut self) {
        self.touched.get_or_insert_with(Vec::new);
    }

    /// The ids touched since the last call, sorted, each once.
    pub(crate) fn take_touched(&mut self) -> Vec<JobId> {
        let mut ids = self.touched.as_mut().map(std::mem::take).unwrap_or_default();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// What changed since the last [`crate::State::take_changes`]. An id may be
/// listed without a visible change (a command that touched and then failed);
/// nothing that changed is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Jobs added, changed or removed, sorted.
    pub jobs: Vec<JobId>,
    /// Arrays (their not-yet-split records) added, changed or removed, sorted.
    pub arrays: Vec<JobId>,
    /// Something every job's view may depend on changed (the partitions:
    /// a job without one shows the default's name): redo everything.
    pub all: bool,
}
