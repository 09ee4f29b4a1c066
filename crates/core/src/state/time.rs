//! What the passing of time does: begin times, back-offs, time limits,
//! pruning of finished jobs.

use super::*;

impl State {
    /// Drops finished jobs that accounting holds and that have been
    /// finished for `min_job_age`: a single job on its own, an array only
    /// when all its tasks qualify (a dependency on a job no longer known
    /// counts as met, as in Slurm). Jobs a waiting or running job's
    /// dependency names stay.
    pub(super) fn prune(&mut self, now: Time, ev: &mut Vec<Event>) {
        let (singles, arrays) = self.prunable(now);
        let mut count = 0;
        for id in singles {
            self.jobs.remove(&id);
            count += 1;
        }
        for id in arrays {
            let a = self.arrays.remove(&id).expect("listed");
            for task_id in &a.split_ids {
                if let Some(j) = self.jobs.remove(task_id) {
                    if let Some(t) = j.array {
                        self.idx.task_ids.remove(&(t.array_id, t.task));
                    }
                    count += 1;
                }
            }
        }
        if count > 0 {
            ev.push(Event::JobsPruned { count });
        }
    }

    /// Whether a `Tick` now would prune jobs (the leader ticks for it).
    pub fn prune_due(&self, now: Time) -> bool {
        let (singles, arrays) = self.prunable(now);
        !singles.is_empty() || !arrays.is_empty()
    }

    /// The single jobs and the arrays [`State::prune`] would drop now.
    pub(super) fn prunable(&self, now: Time) -> (Vec<JobId>, Vec<JobId>) {
        let age = self.config.min_job_age_ms;
        if age == 0 {
            return (Vec::new(), Vec::new());
        }
        let old =
            |j: &Job| j.state.is_terminal() && j.accounted && j.end_time.is_some_and(|e| e.saturating_add(age) <= now);
        let mut singles: Vec<JobId> =
            self.jobs.values().filter(|j| j.array.is_none() && old(j)).map(|j| j.id).collect();
        let mut arrays: Vec<JobId> = self
            .arrays
            .values()
            .filter(|a| a.pending.is_empty() && a.active == 0)
            .filter(|a| a.split_ids.iter().all(|id| self.jobs.get(id).is_none_or(old)))
            .map(|a| a.id)
            .collect();
        // The leader asks every second: most of the time there is nothing
        // to prune, and the dependencies need not be read.
        if singles.is_empty() && arrays.is_empty() {
            return (singles, arrays);
        }
        let mut named = std::collections::HashSet::new();
        let live = self.idx.pending.iter().chain(&self.idx.active).map(|id| &self.jobs[id].spec);
        for spec in live.chain(self.idx.arrays_pending.iter().map(|id| &self.arrays[id].spec)) {
            if let Some(d) = &spec.dependency {
                named.extend(d.conditions.iter().filter_map(|c| c.job.map(|r| r.id)));
            }
        }
        singles.retain(|id| !named.contains(id));
        arrays.retain(|id| !named.contains(id));
        (singles, arrays)
    }

    pub(super) fn tick(&mut self, now: Time, ev: &mut Vec<Event>) {
        self.prune(now, ev);
        if let Some(timeout) = self.config.node_timeout_ms {
            let silent: Vec<u32> = (0..self.nodes.len() as u32)
                .filter(|&i| {
                    let n = &self.nodes[i as usize];
                    n.status == NodeStatus::Up && now.saturating_sub(n.last_heartbeat) > timeout
                })
                .collect();
            for i in silent {
                self.node_down(i, "Not responding".into(), now, ev);
            }
        }
        let grace = self.config.over_time_grace_ms;
        let overdue: Vec<JobId> = self
            .idx
            .active
            .iter()
            .copied()
            .filter(|id| {
                let j = &self.jobs[id];
                let limit = j.alloc.as_ref().and_then(|a| a.time_limit);
                j.state == JobState::Running
                    && matches!((j.start_time, limit), (Some(s), Some(l)) if now > s.saturating_add(crate::secs(l)).saturating_add(grace))
            })
            .collect();
        for id in overdue {
            self.begin_kill(id, EndIntent::Timeout, ev);
        }
    }
}
