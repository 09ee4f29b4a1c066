//! A job's runs: a scheduling plan applied (re-checked against the state),
//! and the agents' reports of how the batch step ended.

use super::*;

impl State {
    pub(super) fn allocate(&mut self, plan: Plan, now: Time, ev: &mut Vec<Event>) {
        for (key, reason) in plan.reasons {
            match key {
                JobKey::Job(id) => {
                    if let Some(j) = self.jobs.get_mut(&id) {
                        if j.state == JobState::Pending && j.held_by_admin.is_none() {
                            j.reason = reason;
                        }
                    }
                }
                JobKey::Task { array, .. } => {
                    if let Some(a) = self.arrays.get_mut(&array) {
                        if a.held_by_admin.is_none() {
                            a.reason = reason;
                        }
                    }
                }
            }
        }
        for id in plan.cancel {
            let doomed = self.jobs.get(&id).is_some_and(|j| {
                j.state == JobState::Pending
                    && j.spec.kill_on_invalid_dep
                    && self.dependency_status(j, now) == DepStatus::Never
            });
            if doomed {
                self.finish(id, JobState::Cancelled, None, now, ev);
            }
        }
        for a in plan.allocations {
            if let Err(reason) = self.check_allocation(&a.key, &a.shares, &a.partition, now) {
                ev.push(Event::AllocationRejected { job: a.key.to_string(), reason });
                continue;
            }
            let id = match a.key {
                JobKey::Job(id) => id,
                JobKey::Task { array, task } => self.split_task(array, task),
            };
            for s in &a.shares {
                let n = &mut self.nodes[s.node as usize];
                n.alloc = n.alloc.add(&s.res);
                n.jobs += 1;
            }
            let nodes = node_set(&self.nodes, &a.shares);
            let j = self.jobs.get_mut(&id).expect("exists");
            j.state = JobState::Running;
            j.reason = PendingReason::None;
            j.start_time = Some(now);
            j.end_time = None;
            j.exit = None;
            j.end_intent = None;
            // In hostlist order, as SLURM_JOB_NODELIST lists them: the batch
            // step runs on the first, and rank 0 of a step lives there —
            // where tools that take the first host as the rendezvous expect.
            let mut shares = a.shares;
            shares
                .sort_by(|x, y| hostlist::order(&self.nodes[x.node as usize].name, &self.nodes[y.node as usize].name));
            j.alloc = Some(Allocation { shares, time_limit: a.time_limit, partition: a.partition });
            self.idx.pending.remove(&id);
            self.idx.active.insert(id);
            if let Some(t) = j.array {
                let arr = self.arrays.get_mut(&t.array_id).expect("tasks have arrays");
                arr.active += 1;
                arr.started = true;
            }
            ev.push(Event::JobStarted { job: id, display: j.display_id(), attempt: j.restart_count, nodes });
        }
    }

    /// Re-checks a decision against the state it is applied to: the
    /// scheduler may have planned on a state that has moved on.
    pub(super) fn check_allocation(
        &self,
        key: &JobKey,
        shares: &[NodeShare],
        part: &str,
        now: Time,
    ) -> Result<(), String> {
        let (held, eligible) = match key {
            JobKey::Job(id) => match self.jobs.get(id) {
                Some(j) if j.state == JobState::Pending => (j.held_by_admin.is_some(), j.eligible_time),
                Some(j) => return Err(format!("job is {}", j.state)),
                None => return Err("no such job".into()),
            },
            JobKey::Task { array, task } => match self.arrays.get(array) {
                Some(a) if a.pending.contains(*task) => {
                    if let Some(max) = a.spec.array.as_ref().and_then(|s| s.max_running) {
                        if a.active >= max {
                            return Err(format!("array throttle of {max} reached"));
                        }
                    }
                    (a.held_by_admin.is_some(), a.eligible_time)
                }
                _ => return Err("task is not pending".into()),
            },
        };
        if held {
            return Err("job is held".into());
        }
        if eligible > now {
            return Err("job is not eligible yet".into());
        }
        if shares.is_empty() {
            return Err("no nodes".into());
        }
        let partition = self.partition(part).ok_or("no such partition")?;
        let mut seen = BTreeSet::new();
        for s in shares {
            let n = self.nodes.get(s.node as usize).ok_or("no such node")?;
            if !seen.insert(s.node) {
                return Err(format!("node {} listed twice", n.name));
            }
            if !n.schedulable() {
                return Err(format!("node {} is {}", n.name, n.state()));
            }
            if !partition.members.contains(&s.node) {
                return Err(format!("node {} is not in partition {part}", n.name));
            }
            if !n.free().covers(&s.res) {
                return Err(format!("node {} has {} free, needs {}", n.name, n.free(), s.res));
            }
        }
        Ok(())
    }

    pub(super) fn step_finished(&mut self, id: JobId, outcome: StepOutcome, now: Time, ev: &mut Vec<Event>) {
        if outcome == StepOutcome::Lost {
            let node = self.jobs[&id].alloc.as_ref().and_then(|a| a.shares.first()).map(|s| s.node);
            let name = node.map_or("?".to_string(), |n| self.nodes[n as usize].name.clone());
            return self.lose_job(id, &format!("step fenced on node {name}"), now, ev);
        }
        let j = &self.jobs[&id];
        let exit = Some(match outcome {
            StepOutcome::Exited(code) => ExitStatus { code, signal: 0 },
            StepOutcome::Signaled(sig) => ExitStatus { code: 0, signal: sig },
            StepOutcome::OutOfMemory => ExitStatus { code: 0, signal: 9 },
            StepOutcome::TimedOut => ExitStatus { code: 0, signal: 15 },
            StepOutcome::Lost => ExitStatus { code: 0, signal: 9 },
        });
        let state = match (j.end_intent, outcome) {
            (Some(EndIntent::Requeue { hold }), _) => {
                let ended = (JobState::Requeued, exit, "requeued by request");
                return self.requeue(id, hold, 0, ended, now, ev);
            }
            (Some(EndIntent::Cancel), _) => JobState::Cancelled,
            (Some(EndIntent::Complete { exit }), _) => {
                let state = if exit == ExitStatus::default() { JobState::Completed } else { JobState::Failed };
                return self.finish(id, state, Some(exit), now, ev);
            }
            (Some(EndIntent::Timeout), _) | (None, StepOutcome::TimedOut) => JobState::Timeout,
            (None, StepOutcome::OutOfMemory) => JobState::OutOfMemory,
            (None, StepOutcome::Exited(0)) => JobState::Completed,
            (None, _) => JobState::Failed,
        };
        self.finish(id, state, exit, now, ev);
    }

    /// Frees what an active job holds on its nodes.
    pub(super) fn release_resources(&mut self, id: JobId) {
        let j = &self.jobs[&id];
        if !j.state.is_active() {
            return;
        }
        let completing = j.state == JobState::Completing;
        if let Some(a) = &j.alloc {
            for s in &a.shares {
                let n = &mut self.nodes[s.node as usize];
                debug_assert!(n.alloc.covers(&s.res), "releasing more than booked on {}", n.name);
                n.alloc = n.alloc.saturating_sub(&s.res);
                n.jobs -= 1;
                if n.jobs == 0 {
                    n.idle_since = self.now;
                }
                if completing {
                    n.completing -= 1;
                }
            }
        }
        self.idx.active.remove(&id);
        if let Some(t) = j.array {
            self.arrays.get_mut(&t.array_id).expect("tasks have arrays").active -= 1;
        }
    }

    pub(super) fn finish(
        &mut self,
        id: JobId,
        state: JobState,
        exit: Option<ExitStatus>,
        now: Time,
        ev: &mut Vec<Event>,
    ) {
        debug_assert!(state.is_terminal());
        // A batch script that ends on its own leaves its steps' tasks
        // behind on the other nodes: they go with it.
        let j = &self.jobs[&id];
        if j.state == JobState::Running && j.steps.iter().any(|s| s.end.is_none()) {
            if let Some(a) = &j.alloc {
                ev.push(Event::JobKill { job: id, attempt: j.restart_count, nodes: node_set(&self.nodes, &a.shares) });
            }
        }
        self.end_steps(id, now, ev);
        self.release_resources(id);
        self.idx.pending.remove(&id);
        self.idx.unaccounted.insert(id);
        let j = self.jobs.get_mut(&id).expect("caller checked");
        j.state = state;
        j.end_time = Some(now);
        j.accounted = false;
        j.revision += 1;
        j.exit = exit;
        j.end_intent = None;
        if let Some(t) = j.array {
            let a = self.arrays.get_mut(&t.array_id).expect("tasks have arrays");
            a.ended += 1;
            if state == JobState::Completed {
                a.ended_ok += 1;
            }
        }
        ev.push(Event::JobFinished { job: id, display: j.display_id(), state, exit, reason: j.failure.clone() });
    }

    /// Sends a running job back to PENDING. `ended`: how the run ended
    /// (NODE_FAIL or REQUEUED), its exit if known, and why.
    pub(super) fn requeue(
        &mut self,
        id: JobId,
        hold: bool,
        backoff_ms: u64,
        (ended, exit, why): (JobState, Option<ExitStatus>, &str),
        now: Time,
        ev: &mut Vec<Event>,
    ) {
        self.end_steps(id, now, ev);
        self.release_resources(id);
        let j = self.jobs.get_mut(&id).expect("caller checked");
        if let (Some(start_time), Some(alloc)) = (j.start_time, j.alloc.take()) {
            j.attempts.push(PastAttempt {
                attempt: j.restart_count,
                eligible_time: j.eligible_time,
                start_time,
                end_time: now,
                state: ended,
                exit,
                alloc,
                max_rss_kb: j.max_rss_kb.take(),
                cpu_time: j.cpu_time.take(),
                reason: j.failure.take().unwrap_or_else(|| why.to_string()),
            });
            j.accounted = false;
            j.revision += 1;
            self.idx.unaccounted.insert(id);
        }
        let j = self.jobs.get_mut(&id).expect("caller checked");
        j.state = JobState::Pending;
        j.restart_count += 1;
        j.end_intent = None;
        j.start_time = None;
        j.eligible_time = now.saturating_add(backoff_ms);
        j.alloc = None;
        if hold {
            j.held_by_admin = Some(false);
            j.reason = PendingReason::JobHeldUser;
        } else {
            j.reason = if backoff_ms > 0 { PendingReason::BeginTime } else { PendingReason::None };
        }
        self.idx.pending.insert(id);
        ev.push(Event::JobRequeued {
            job: id,
            display: j.display_id(),
            restart_count: j.restart_count,
            reason: why.to_string(),
        });
    }

    /// Steps still running when their job ends were cut short.
    pub(super) fn end_steps(&mut self, id: JobId, now: Time, ev: &mut Vec<Event>) {
        let j = self.jobs.get_mut(&id).expect("caller checked");
        for s in j.steps.iter_mut().filter(|s| s.end.is_none()) {
            s.end = Some(now);
            s.state = JobState::Cancelled;
            ev.push(Event::StepEnded { job: id, step: s.id, state: s.state, exit: None });
        }
    }
}
