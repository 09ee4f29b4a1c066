//! Cancelling, holding and releasing jobs and array tasks.

use super::*;

impl State {
    pub(super) fn cancel(
        &mut self,
        f: &CancelFilter,
        by: Requester,
        now: Time,
        ev: &mut Vec<Event>,
    ) -> Result<(), CommandError> {
        let spec_matches = |spec: &JobSpec, state: JobState| {
            f.user.as_ref().is_none_or(|u| &spec.user == u)
                && f.name.as_ref().is_none_or(|n| &spec.name == n)
                && f.partition.as_ref().is_none_or(|p| spec.partition.as_ref() == Some(p))
                && (f.states.is_empty() || f.states.contains(&state))
        };
        let mut jobs: Vec<JobId> = Vec::new();
        let mut whole_arrays: Vec<JobId> = Vec::new();
        let mut tasks: Vec<(JobId, u32)> = Vec::new();
        if f.jobs.is_empty() {
            for id in self.idx.pending.iter().chain(&self.idx.active) {
                let j = &self.jobs[id];
                if by.may_touch(j.spec.uid) && spec_matches(&j.spec, j.state) {
                    jobs.push(*id);
                }
            }
            for id in &self.idx.arrays_pending {
                let a = &self.arrays[id];
                if by.may_touch(a.spec.uid) && spec_matches(&a.spec, JobState::Pending) {
                    whole_arrays.push(*id);
                }
            }
            jobs.sort_unstable();
        } else {
            for r in &f.jobs {
                let (uid, owner) = match (r.task, self.jobs.get(&r.id), self.arrays.get(&r.id)) {
                    (None, Some(j), _) => (j.spec.uid, j.spec.user.clone()),
                    (_, _, Some(a)) => (a.spec.uid, a.spec.user.clone()),
                    _ => {
                        ev.push(Event::Refused { target: r.to_string(), reason: "Invalid job id specified".into() });
                        continue;
                    }
                };
                if !by.may_touch(uid) {
                    ev.push(Event::Refused {
                        target: r.to_string(),
                        reason: format!("Access/permission denied (job belongs to {owner})"),
                    });
                    continue;
                }
                match r.task {
                    None if self.jobs.contains_key(&r.id) => {
                        let j = &self.jobs[&r.id];
                        if j.state.is_terminal() {
                            ev.push(Event::Refused {
                                target: r.to_string(),
                                reason: format!("Job/step already completing or completed ({})", j.state),
                            });
                        } else if spec_matches(&j.spec, j.state) {
                            jobs.push(r.id);
                        }
                    }
                    None => {
                        let a = &self.arrays[&r.id];
                        let mut any = false;
                        for id in &a.split_ids {
                            let j = &self.jobs[id];
                            if !j.state.is_terminal() && spec_matches(&j.spec, j.state) {
                                jobs.push(*id);
                                any = true;
                            }
                        }
                        if !a.pending.is_empty() && spec_matches(&a.spec, JobState::Pending) {
                            whole_arrays.push(r.id);
                            any = true;
                        }
                        if !any {
                            ev.push(Event::Refused {
                                target: r.to_string(),
                                reason: "Job/step already completing or completed".into(),
                            });
                        }
                    }
                    Some(t) => match self.task_job_id(r.id, t) {
                        Some(id) if self.jobs[&id].state.is_terminal() => ev.push(Event::Refused {
                            target: r.to_string(),
                            reason: format!("Job/step already completing or completed ({})", self.jobs[&id].state),
                        }),
                        Some(id) => jobs.push(id),
                        None if self.arrays[&r.id].pending.contains(t) => tasks.push((r.id, t)),
                        None => {
                            ev.push(Event::Refused { target: r.to_string(), reason: "Invalid job id specified".into() })
                        }
                    },
                }
            }
        }
        for id in jobs {
            self.cancel_job(id, now, ev);
        }
        for array_id in whole_arrays {
            let a = self.arrays.get_mut(&array_id).expect("listed above");
            let tasks = std::mem::take(&mut a.pending);
            a.ended += tasks.len();
            self.idx.arrays_pending.remove(&array_id);
            ev.push(Event::ArrayTasksCancelled { array: array_id, tasks: tasks.to_string() });
        }
        for (array_id, t) in tasks {
            let a = self.arrays.get_mut(&array_id).expect("listed above");
            if a.pending.remove(t) {
                a.ended += 1;
                if a.pending.is_empty() {
                    self.idx.arrays_pending.remove(&array_id);
                }
                ev.push(Event::ArrayTasksCancelled { array: array_id, tasks: t.to_string() });
            }
        }
        Ok(())
    }

    pub(super) fn cancel_job(&mut self, id: JobId, now: Time, ev: &mut Vec<Event>) {
        match self.jobs[&id].state {
            JobState::Pending => self.finish(id, JobState::Cancelled, None, now, ev),
            JobState::Running | JobState::Suspended => self.begin_kill(id, EndIntent::Cancel, ev),
            JobState::Completing => {
                // Already being killed; a cancel wins over a requeue or timeout.
                self.jobs.get_mut(&id).expect("exists").end_intent = Some(EndIntent::Cancel);
            }
            _ => {}
        }
    }

    /// Moves an active job to COMPLETING and orders its agents to kill it.
    pub(super) fn begin_kill(&mut self, id: JobId, intent: EndIntent, ev: &mut Vec<Event>) {
        let j = self.jobs.get_mut(&id).expect("caller checked");
        if j.state == JobState::Completing {
            return;
        }
        j.state = JobState::Completing;
        j.end_intent = Some(intent);
        let alloc = j.alloc.as_ref().expect("active jobs have allocations");
        for s in &alloc.shares {
            self.nodes[s.node as usize].completing += 1;
        }
        ev.push(Event::JobKill { job: id, attempt: j.restart_count, nodes: node_set(&self.nodes, &alloc.shares) });
    }

    pub(super) fn hold(&mut self, r: &JobRef, by: Requester, ev: &mut Vec<Event>) -> Result<(), CommandError> {
        let reason = if by.operator { PendingReason::JobHeldAdmin } else { PendingReason::JobHeldUser };
        if r.task.is_none() && self.arrays.contains_key(&r.id) && !self.jobs.contains_key(&r.id) {
            let a = self.arrays.get_mut(&r.id).expect("checked");
            if !by.may_touch(a.spec.uid) {
                return Err(CommandError::PermissionDenied(format!("job {r} belongs to {}", a.spec.user)));
            }
            if a.pending.is_empty() {
                return Err(CommandError::InvalidState(format!("array {r} has no pending tasks to hold")));
            }
            a.held_by_admin = Some(by.operator);
            a.reason = reason;
            ev.push(Event::JobHeld { job: r.to_string() });
            return Ok(());
        }
        self.check_pending_owner(r, by)?;
        let id = self.resolve_one(r)?;
        let j = self.jobs.get_mut(&id).expect("resolved");
        j.held_by_admin = Some(by.operator);
        j.reason = reason;
        ev.push(Event::JobHeld { job: r.to_string() });
        Ok(())
    }

    pub(super) fn release(&mut self, r: &JobRef, by: Requester, ev: &mut Vec<Event>) -> Result<(), CommandError> {
        let check = |held: Option<bool>, uid: u32, user: &str| -> Result<(), CommandError> {
            if !by.may_touch(uid) {
                return Err(CommandError::PermissionDenied(format!("job {r} belongs to {user}")));
            }
            match held {
                None => Err(CommandError::InvalidState(format!("job {r} is not held"))),
                Some(true) if !by.operator => {
                    Err(CommandError::PermissionDenied(format!("job {r} was held by an administrator")))
                }
                _ => Ok(()),
            }
        };
        if r.task.is_none() && self.arrays.contains_key(&r.id) && !self.jobs.contains_key(&r.id) {
            let a = self.arrays.get_mut(&r.id).expect("checked");
            check(a.held_by_admin, a.spec.uid, &a.spec.user)?;
            a.held_by_admin = None;
            a.reason = PendingReason::None;
            ev.push(Event::JobReleased { job: r.to_string() });
            return Ok(());
        }
        let id = match r.task {
            Some(t) if self.task_job_id(r.id, t).is_none() => {
                // Unsplit tasks share the array's hold: release the array.
                return Err(CommandError::InvalidState(format!("job {r} is not held on its own; release {}", r.id)));
            }
            _ => self.resolve_started(r)?,
        };
        let j = self.jobs.get_mut(&id).expect("resolved");
        if j.state != JobState::Pending {
            return Err(CommandError::InvalidState(format!("job {r} is {}, not held", j.state)));
        }
        check(j.held_by_admin, j.spec.uid, &j.spec.user)?;
        j.held_by_admin = None;
        j.reason = PendingReason::None;
        ev.push(Event::JobReleased { job: r.to_string() });
        Ok(())
    }

    /// Checks that `r` names a pending job the requester owns, before any
    /// array task is split off for it.
    pub(super) fn check_pending_owner(&self, r: &JobRef, by: Requester) -> Result<(), CommandError> {
        let (spec, state) = self.spec_of(r)?;
        if !by.may_touch(spec.uid) {
            return Err(CommandError::PermissionDenied(format!("job {r} belongs to {}", spec.user)));
        }
        if state != JobState::Pending {
            return Err(CommandError::InvalidState(format!("job {r} is {state}; only pending jobs can be held")));
        }
        Ok(())
    }

    /// The spec and state of the one job `r` names, without splitting a
    /// pending array task off.
    pub(super) fn spec_of(&self, r: &JobRef) -> Result<(Arc<JobSpec>, JobState), CommandError> {
        Ok(match (r.task.and_then(|t| self.task_job_id(r.id, t)), r.task) {
            (Some(id), _) => {
                let j = &self.jobs[&id];
                (j.spec.clone(), j.state)
            }
            (None, Some(t)) => match self.arrays.get(&r.id) {
                Some(a) if a.pending.contains(t) => (a.spec.clone(), JobState::Pending),
                _ => return Err(CommandError::UnknownJob(r.to_string())),
            },
            (None, None) => match self.jobs.get(&r.id) {
                Some(j) => (j.spec.clone(), j.state),
                None => return Err(CommandError::UnknownJob(r.to_string())),
            },
        })
    }
}
