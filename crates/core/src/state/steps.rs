//! srun's steps inside a run, and changes to jobs (`scontrol update`).

use super::*;

impl State {
    pub(super) fn create_step(
        &mut self,
        r: &JobRef,
        request: StepRequest,
        by: Requester,
        now: Time,
        ev: &mut Vec<Event>,
    ) -> Result<(), CommandError> {
        let id = self.own_running(r, by, |s| s == JobState::Running)?;
        let j = &self.jobs[&id];
        let alloc = j.alloc.as_ref().expect("running jobs have allocations");
        let (positions, tasks) =
            crate::step::layout(alloc, j.spec.cpus_per_task, &request).map_err(CommandError::NoSuchNodeConfig)?;
        let nodes: Vec<u32> = positions.iter().map(|&k| alloc.shares[k].node).collect();
        let names: Vec<&str> = nodes.iter().map(|&n| self.nodes[n as usize].name.as_str()).collect();
        let step = JobStep {
            id: j.steps.len() as StepId,
            name: if request.name.is_empty() { "step".into() } else { request.name.clone() },
            cpus_per_task: request.cpus_per_task.unwrap_or(j.spec.cpus_per_task),
            start: now,
            end: None,
            state: JobState::Running,
            exit: None,
            attempt: j.restart_count,
            used: Vec::new(),
            client_held: request.client_held,
            nodes,
            tasks,
        };
        ev.push(Event::StepCreated {
            job: id,
            attempt: j.restart_count,
            step: step.id,
            nodes: NodeSet::new(names.iter().map(|n| n.to_string()).collect()),
            tasks: step.ntasks(),
        });
        self.jobs.get_mut(&id).expect("resolved").steps.push(step);
        Ok(())
    }

    pub(super) fn end_step(
        &mut self,
        id: JobId,
        step: StepId,
        (exit, cancelled): (ExitStatus, bool),
        by: Requester,
        now: Time,
        ev: &mut Vec<Event>,
    ) -> Result<(), CommandError> {
        let j = self.jobs.get_mut(&id).ok_or_else(|| CommandError::UnknownJob(id.to_string()))?;
        // A step whose srun was interrupted, or whose job is being
        // cancelled, was cancelled, whatever its ranks' exits say.
        let cancelled = cancelled || j.end_intent == Some(EndIntent::Cancel);
        if !by.may_touch(j.spec.uid) {
            return Err(CommandError::PermissionDenied(format!("job {id} belongs to {}", j.spec.user)));
        }
        let s = j
            .steps
            .iter_mut()
            .find(|s| s.id == step)
            .ok_or_else(|| CommandError::UnknownJob(format!("{id}.{step}")))?;
        // A step already ended (with its job, say) keeps its first ending.
        if s.end.is_some() {
            return Ok(());
        }
        s.end = Some(now);
        s.exit = Some(exit);
        s.state = match (cancelled, exit == ExitStatus::default()) {
            (true, _) => JobState::Cancelled,
            (false, true) => JobState::Completed,
            (false, false) => JobState::Failed,
        };
        ev.push(Event::StepEnded { job: id, step, state: s.state, exit: Some(exit) });
        Ok(())
    }

    pub(super) fn update(
        &mut self,
        r: &JobRef,
        u: JobUpdate,
        by: Requester,
        ev: &mut Vec<Event>,
    ) -> Result<(), CommandError> {
        if u.is_empty() {
            return Err(CommandError::Invalid("nothing to update".into()));
        }
        // A whole array's waiting tasks share one record.
        let array_only = r.task.is_none() && self.arrays.contains_key(&r.id) && !self.jobs.contains_key(&r.id);
        let (spec, state, alloc) = if array_only {
            let a = &self.arrays[&r.id];
            if a.pending.is_empty() {
                return Err(CommandError::InvalidState(format!("array {r} has no pending tasks left to update")));
            }
            (a.spec.clone(), JobState::Pending, None)
        } else {
            let (spec, state) = self.spec_of(r)?;
            let alloc = match r.task {
                None => self.jobs.get(&r.id),
                Some(t) => self.task_job_id(r.id, t).and_then(|id| self.jobs.get(&id)),
            }
            .and_then(|j| j.alloc.as_ref());
            (spec, state, alloc)
        };
        if !by.may_touch(spec.uid) {
            return Err(CommandError::PermissionDenied(format!("job {r} belongs to {}", spec.user)));
        }
        if state.is_terminal() || state == JobState::Completing {
            return Err(CommandError::InvalidState(format!("job {r} is {}: it can no longer be changed", state)));
        }
        let mut new = (*spec).clone();
        let mut changes = Vec::new();
        let mut new_limit = None;
        if let Some(limit) = u.time_limit {
            let current = alloc.map_or(spec.time_limit, |a| a.time_limit);
            let longer = match (limit, current) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(l), Some(c)) => l > c,
            };
            if longer && !by.operator {
                return Err(CommandError::PermissionDenied(
                    "only an operator may lengthen a time limit; users may shorten it".into(),
                ));
            }
            new.time_limit = limit;
            new_limit = Some(limit);
            changes.push(format!("TimeLimit={}", limit.map_or("UNLIMITED".into(), crate::time::format_duration)));
        }
        if let Some(p) = &u.partition {
            if state != JobState::Pending {
                return Err(CommandError::InvalidState(format!(
                    "job {r} is {state}; the partition of a started job cannot change"
                )));
            }
            new.partition = Some(p.clone());
            changes.push(format!("Partition={p}"));
        }
        if let Some(name) = &u.name {
            if name.is_empty() || name.contains(['\n', '\t']) {
                return Err(CommandError::Invalid("a job name must be one line, not empty".into()));
            }
            new.name = name.clone();
            changes.push(format!("JobName={name}"));
        }
        if let Some(nice) = u.nice {
            if !(-2_147_483_645..=2_147_483_645).contains(&nice) {
                return Err(CommandError::Invalid(format!("Nice={nice} is out of range")));
            }
            if nice < 0 && !by.operator {
                return Err(CommandError::PermissionDenied("only an operator may set a negative nice value".into()));
            }
            new.nice = nice;
            changes.push(format!("Nice={nice}"));
        }
        if let Some(c) = &u.comment {
            new.comment = (!c.is_empty()).then(|| c.clone());
            changes.push(format!("Comment={c}"));
        }
        crate::limits::SpecLimits::CEILING.check(&new).map_err(CommandError::Invalid)?;
        if state == JobState::Pending && (u.partition.is_some() || u.time_limit.is_some()) {
            self.validate_submit(&new)?;
        }
        let new = Arc::new(new);
        if array_only {
            self.arrays.get_mut(&r.id).expect("checked").spec = new;
        } else {
            let id = self.resolve_one(r)?;
            let j = self.jobs.get_mut(&id).expect("resolved");
            j.spec = new;
            if let (Some(limit), Some(a)) = (new_limit, j.alloc.as_mut()) {
                if j.state == JobState::Running {
                    a.time_limit = limit;
                    ev.push(Event::JobTimeLimit {
                        job: id,
                        attempt: j.restart_count,
                        nodes: node_set(&self.nodes, &a.shares),
                        limit,
                    });
                }
            }
        }
        ev.push(Event::JobUpdated { job: r.to_string(), change: changes.join(" ") });
        Ok(())
    }
}
