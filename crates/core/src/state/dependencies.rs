//! Dependencies: whether a job's conditions on other jobs hold, never can,
//! or still wait.

use super::*;

impl State {
    /// Whether `job`'s dependency lets it start now.
    pub fn dependency_status(&self, job: &Job, now: Time) -> DepStatus {
        self.spec_dependency_status(&job.spec, job.id, job.array, now)
    }

    /// Like [`State::dependency_status`], for a job or an array's next task.
    pub fn spec_dependency_status(&self, spec: &JobSpec, my_id: JobId, me: Option<ArrayTask>, now: Time) -> DepStatus {
        let Some(dep) = &spec.dependency else { return DepStatus::Satisfied };
        let statuses: Vec<DepStatus> =
            dep.conditions.iter().map(|c| self.condition_status(c, spec, my_id, me, now)).collect();
        // All-of and any-of are duals: one decisive outcome settles it, the
        // other must hold everywhere.
        let (decisive, everywhere) =
            if dep.any { (DepStatus::Satisfied, DepStatus::Never) } else { (DepStatus::Never, DepStatus::Satisfied) };
        if statuses.contains(&decisive) {
            decisive
        } else if statuses.iter().all(|s| *s == everywhere) {
            everywhere
        } else {
            DepStatus::Waiting
        }
    }

    /// What `spec`'s dependency still waits for, as `scontrol show job`
    /// prints it: each condition not yet met, marked `(unfulfilled)` or,
    /// if it never can be, `(failed)`; `None` once nothing is left.
    pub fn dependency_text(&self, spec: &JobSpec, my_id: JobId, me: Option<ArrayTask>) -> Option<String> {
        let dep = spec.dependency.as_ref()?;
        let sep = if dep.any { "?" } else { "," };
        let mut out = String::new();
        for c in &dep.conditions {
            let mark = match self.condition_status(c, spec, my_id, me, self.now) {
                DepStatus::Satisfied => continue,
                DepStatus::Waiting => "unfulfilled",
                DepStatus::Never => "failed",
            };
            if !out.is_empty() {
                out.push_str(sep);
            }
            out.push_str(&format!("{c}({mark})"));
        }
        (!out.is_empty()).then_some(out)
    }

    pub(super) fn condition_status(
        &self,
        c: &crate::dependency::DepCondition,
        spec: &JobSpec,
        my_id: JobId,
        me: Option<ArrayTask>,
        now: Time,
    ) -> DepStatus {
        if c.kind == DepKind::Singleton {
            let mine = me.map_or(my_id, |t| t.array_id);
            let blocker = |s: &JobSpec, id: JobId| s.uid == spec.uid && s.name == spec.name && id < mine;
            let busy = self.idx.active.iter().chain(&self.idx.pending).any(|id| {
                let j = &self.jobs[id];
                blocker(&j.spec, j.array.map_or(j.id, |t| t.array_id))
            }) || self.idx.arrays_pending.iter().any(|id| blocker(&self.arrays[id].spec, *id));
            return if busy { DepStatus::Waiting } else { DepStatus::Satisfied };
        }
        let Some(r) = c.job else { return DepStatus::Satisfied };
        let r = if c.kind == DepKind::AfterCorr {
            match me {
                Some(t) => JobRef { id: r.id, task: Some(t.task) },
                None => r,
            }
        } else {
            r
        };
        let o = self.outcome_of(&r);
        let done = |ok: bool| if ok { DepStatus::Satisfied } else { DepStatus::Never };
        match c.kind {
            DepKind::After => match o.started_at {
                Some(t) if now >= t.saturating_add(crate::secs(u64::from(c.delay_minutes) * 60)) => {
                    DepStatus::Satisfied
                }
                _ if o.ended => DepStatus::Satisfied,
                _ => DepStatus::Waiting,
            },
            DepKind::AfterAny => {
                if o.ended {
                    DepStatus::Satisfied
                } else {
                    DepStatus::Waiting
                }
            }
            DepKind::AfterOk | DepKind::AfterCorr => {
                if o.ended {
                    done(o.ok)
                } else {
                    DepStatus::Waiting
                }
            }
            DepKind::AfterNotOk => {
                if o.ended {
                    done(!o.ok)
                } else {
                    DepStatus::Waiting
                }
            }
            DepKind::Singleton => unreachable!("handled above"),
        }
    }

    pub(super) fn outcome_of(&self, r: &JobRef) -> Outcome {
        let of_job = |j: &Job| Outcome {
            started_at: j.start_time.or(j.end_time.filter(|_| j.state != JobState::Cancelled)),
            ended: j.state.is_terminal(),
            ok: j.state == JobState::Completed,
        };
        match r.task {
            None => {
                if let Some(j) = self.jobs.get(&r.id) {
                    return of_job(j);
                }
                match self.arrays.get(&r.id) {
                    Some(a) => Outcome {
                        started_at: a.started.then_some(a.submit_time),
                        ended: a.ended == a.total,
                        ok: a.ended_ok == a.total,
                    },
                    // Unknown (e.g. purged long ago): nothing to wait for.
                    None => Outcome { started_at: None, ended: true, ok: true },
                }
            }
            Some(t) => match self.task_job_id(r.id, t) {
                Some(id) => of_job(&self.jobs[&id]),
                None => match self.arrays.get(&r.id) {
                    Some(a) if a.pending.contains(t) => Outcome { started_at: None, ended: false, ok: false },
                    // Cancelled before it ever started.
                    Some(_) => Outcome { started_at: None, ended: true, ok: false },
                    None => Outcome { started_at: None, ended: true, ok: true },
                },
            },
        }
    }
}
