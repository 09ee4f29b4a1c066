//! Partitions and submissions: what a job or array must be to be accepted,
//! and the references users make to jobs (ids, tasks, arrays).

use super::*;
use crate::job::Queued;

impl State {
    pub(super) fn set_partition(&mut self, spec: PartitionSpec) -> Result<(), CommandError> {
        let mut p = Partition::new(spec).map_err(CommandError::Invalid)?;
        self.partitions_changed = true;
        p.members = (0..self.nodes.len() as u32).filter(|&i| p.includes(&self.nodes[i as usize].name)).collect();
        if p.spec.is_default {
            for other in &mut self.partitions {
                other.spec.is_default = false;
            }
        }
        match self.partitions.iter_mut().find(|x| x.name() == p.name()) {
            Some(existing) => *existing = p,
            None => {
                self.partitions.push(p);
                self.partitions.sort_by(|a, b| a.name().cmp(b.name()));
            }
        }
        Ok(())
    }

    /// Whether `spec` would be accepted by a `Submit` now, without
    /// submitting it (`sbatch --test-only`).
    pub fn check_submit(&self, spec: &JobSpec) -> Result<(), CommandError> {
        self.validate_submit(spec)
    }

    pub(super) fn validate_submit(&self, spec: &JobSpec) -> Result<(), CommandError> {
        // First: nothing below may meet a value outside these bounds.
        crate::limits::SpecLimits::CEILING.check(spec).map_err(CommandError::Invalid)?;
        let part = self.partition_for(spec)?;
        if let (Some(limit), Some(max)) = (spec.time_limit, part.spec.max_time) {
            if limit > max {
                return Err(CommandError::TimeLimitExceeded {
                    limit: crate::time::format_duration(limit),
                    max: crate::time::format_duration(max),
                    partition: part.name().to_string(),
                });
            }
        }
        for n in spec.nodelist.iter().chain(&spec.exclude) {
            if self.node_index(n).is_none() {
                return Err(CommandError::UnknownNode(n.clone()));
            }
        }
        if spec.ntasks == 0 || spec.cpus_per_task == 0 || spec.nodes_min == 0 || spec.nodes_min > spec.nodes_max {
            return Err(CommandError::Invalid("tasks, CPUs per task and nodes must be at least 1".into()));
        }
        // A request no node could ever hold is refused now, not left pending
        // forever. Nodes count even while down: they may come back.
        let registered = part.members.iter().any(|&i| self.nodes[i as usize].status != NodeStatus::Unknown);
        if registered && place::place_on_empty(self.nodes(), spec, part).is_none() {
            return Err(CommandError::NoSuchNodeConfig(place::describe_misfit(self.nodes(), spec, part)));
        }
        if let Some(dep) = &spec.dependency {
            self.validate_dependency(dep)?;
        }
        Ok(())
    }

    pub(super) fn validate_dependency(&self, dep: &Dependency) -> Result<(), CommandError> {
        for c in &dep.conditions {
            let Some(r) = &c.job else { continue };
            let known = match r.task {
                None => self.jobs.contains_key(&r.id) || self.arrays.contains_key(&r.id),
                Some(t) => {
                    self.arrays.get(&r.id).is_some_and(|a| a.spec.array.as_ref().is_some_and(|s| s.tasks.contains(t)))
                }
            };
            if !known {
                return Err(CommandError::Dependency(format!("job {r} does not exist")));
            }
            if c.kind == DepKind::AfterCorr && (r.task.is_some() || !self.arrays.contains_key(&r.id)) {
                return Err(CommandError::Dependency(format!("aftercorr needs a whole array, {r} is not one")));
            }
        }
        Ok(())
    }

    pub(super) fn submit(&mut self, spec: Arc<JobSpec>, now: Time, ev: &mut Vec<Event>) {
        let id = self.next_job_id;
        self.next_job_id += 1;
        let eligible_time = spec.begin.map_or(now, crate::secs);
        let held = spec.hold.then_some(false);
        let reason = if spec.hold { PendingReason::JobHeldUser } else { PendingReason::None };
        if let Some(array) = &spec.array {
            let tasks = array.tasks.clone();
            let total = tasks.len();
            self.arrays.insert(
                id,
                ArrayJob {
                    id,
                    spec,
                    pending: tasks,
                    reason,
                    held_by_admin: held,
                    submit_time: now,
                    eligible_time,
                    total,
                    split_ids: Vec::new(),
                    active: 0,
                    ended: 0,
                    ended_ok: 0,
                    started: false,
                },
            );
            self.idx.arrays_pending.insert(id);
            ev.push(Event::JobSubmitted { job: id, array_tasks: Some(total) });
        } else {
            self.jobs.insert(
                id,
                Job::pending(id, None, spec, Queued { reason, held_by_admin: held, submit_time: now, eligible_time }),
            );
            self.idx.pending.insert(id);
            ev.push(Event::JobSubmitted { job: id, array_tasks: None });
        }
    }

    /// Turns one pending array task into its own job record, with a new id.
    pub(super) fn split_task(&mut self, array_id: JobId, task: u32) -> JobId {
        let id = self.next_job_id;
        self.next_job_id += 1;
        let a = self.arrays.get_mut(&array_id).expect("caller checked the array");
        let removed = a.pending.remove(task);
        debug_assert!(removed);
        a.split_ids.push(id);
        if a.pending.is_empty() {
            self.idx.arrays_pending.remove(&array_id);
        }
        let queued = Queued {
            reason: a.reason,
            held_by_admin: a.held_by_admin,
            submit_time: a.submit_time,
            eligible_time: a.eligible_time,
        };
        let job = Job::pending(id, Some(ArrayTask { array_id, task }), a.spec.clone(), queued);
        self.jobs.insert(id, job);
        self.idx.pending.insert(id);
        self.idx.task_ids.insert((array_id, task), id);
        id
    }

    /// A reference that must name one job record (splitting a pending array
    /// task off if needed).
    pub(super) fn resolve_one(&mut self, r: &JobRef) -> Result<JobId, CommandError> {
        match r.task {
            None if self.jobs.contains_key(&r.id) => Ok(r.id),
            None if self.arrays.contains_key(&r.id) => Err(whole_array(r.id)),
            None => Err(CommandError::UnknownJob(r.to_string())),
            Some(t) => {
                if let Some(id) = self.task_job_id(r.id, t) {
                    return Ok(id);
                }
                match self.arrays.get(&r.id) {
                    Some(a) if a.pending.contains(t) => Ok(self.split_task(r.id, t)),
                    _ => Err(CommandError::UnknownJob(r.to_string())),
                }
            }
        }
    }

    /// A reference to a job that has already got its own record.
    /// A started job that `by` may act on, in a state `running` accepts.
    pub(super) fn own_running(
        &self,
        r: &JobRef,
        by: Requester,
        running: fn(JobState) -> bool,
    ) -> Result<JobId, CommandError> {
        let id = self.resolve_started(r)?;
        let j = &self.jobs[&id];
        if !by.may_touch(j.spec.uid) {
            return Err(CommandError::PermissionDenied(format!("job {r} belongs to {}", j.spec.user)));
        }
        if !running(j.state) {
            return Err(CommandError::InvalidState(format!("job {r} is {}, not RUNNING", j.state)));
        }
        Ok(id)
    }

    pub(super) fn resolve_started(&self, r: &JobRef) -> Result<JobId, CommandError> {
        match r.task {
            None if self.jobs.contains_key(&r.id) => Ok(r.id),
            Some(t) => match self.task_job_id(r.id, t) {
                Some(id) => Ok(id),
                None if self.arrays.get(&r.id).is_some_and(|a| a.pending.contains(t)) => {
                    Err(CommandError::InvalidState(format!("job {r} is PENDING")))
                }
                None => Err(CommandError::UnknownJob(r.to_string())),
            },
            None if self.arrays.contains_key(&r.id) => Err(whole_array(r.id)),
            None => Err(CommandError::UnknownJob(r.to_string())),
        }
    }
}
