//! What a submission must prove and keep before it is proposed.
//!
//! A request's body is whatever its sender wrote; only its credential is
//! proof, and the credential proves a uid and a gid. So before a job enters
//! the log its identity is rewritten from the user database (the name it is
//! listed, accounted and labelled under; the groups it may run in), the
//! fields only operators may set are refused to others, and every size and
//! number is held to [`SpecLimits`] — the very check `apply` repeats, so a
//! spec the API lets through can never be one `apply` chokes on.

use drover_auth::Account;
use drover_core::limits::SpecLimits;
use drover_core::state::Requester;
use drover_core::{JobSpec, State};

/// A site's bounds on submissions (`drover controller --max-...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmitPolicy {
    pub limits: SpecLimits,
    /// Jobs in one request from a user who is not an operator.
    pub max_jobs_per_request: usize,
    /// Jobs (array tasks each count) a user may have queued or running at
    /// once, as Slurm's `MaxSubmitJobs`; `None`: no limit.
    pub max_submit_jobs: Option<u64>,
}

impl Default for SubmitPolicy {
    fn default() -> SubmitPolicy {
        SubmitPolicy { limits: SpecLimits::DEFAULT, max_jobs_per_request: 10_000, max_submit_jobs: None }
    }
}

/// Why a submission was turned away, and so which HTTP status it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The requester may not do this (403).
    Forbidden(String),
    /// The request itself is malformed or too large (400).
    Invalid(String),
    /// A per-user limit is reached (429, as Slurm refuses the submission).
    Limit(String),
}

/// The requester: what the credential proves.
#[derive(Debug, Clone, Copy)]
pub struct Proven {
    pub who: Requester,
    pub gid: u32,
}

/// Checks every spec of a submission and rewrites what the credential and
/// the user database decide. `account_of` is the user database (a test
/// passes its own).
pub fn admit(
    policy: &SubmitPolicy,
    by: Proven,
    specs: &mut [JobSpec],
    account_of: impl Fn(u32) -> Option<Account>,
) -> Result<(), Refusal> {
    if specs.is_empty() {
        return Err(Refusal::Invalid("no jobs in the request".into()));
    }
    if !by.who.operator && specs.len() > policy.max_jobs_per_request {
        return Err(Refusal::Limit(format!(
            "{} jobs in one request; at most {} are allowed (submit an array, or several requests)",
            specs.len(),
            policy.max_jobs_per_request
        )));
    }
    let limits = policy.limits.capped();
    let mut accounts: Vec<(u32, Option<Account>)> = Vec::new();
    let several = specs.len() > 1;
    for (index, spec) in specs.iter_mut().enumerate() {
        // In a batch, say which job; a single one is the request.
        let at = |e: String| if several { format!("job {index} of the request: {e}") } else { e };
        if !by.who.operator && spec.uid != by.who.uid {
            return Err(Refusal::Forbidden(format!("uid {} may not submit jobs as uid {}", by.who.uid, spec.uid)));
        }
        let account = match accounts.iter().find(|(uid, _)| *uid == spec.uid) {
            Some((_, a)) => a.clone(),
            None => {
                let a = account_of(spec.uid);
                accounts.push((spec.uid, a.clone()));
                a
            }
        };
        // The group: root's choice; else the one the kernel proved (`sg`
        // ran the client), or one the account belongs to.
        let root = by.who.uid == 0;
        let member = account.as_ref().is_some_and(|a| a.may_use_group(spec.gid));
        let proven = spec.uid == by.who.uid && spec.gid == by.gid;
        if !(root || proven || member) {
            return Err(Refusal::Forbidden(at(format!(
                "uid {} is not a member of group {} ({}); run the job in one of your groups",
                spec.uid,
                spec.gid,
                drover_auth::group_name(spec.gid)
            ))));
        }
        spec.user = account.map_or_else(|| spec.uid.to_string(), |a| a.name);
        if !by.who.operator {
            if spec.priority.is_some() {
                return Err(Refusal::Forbidden(at("only an operator may set a job's priority".into())));
            }
            if spec.nice < 0 {
                return Err(Refusal::Forbidden(at(format!(
                    "only an operator may set a negative nice value ({})",
                    spec.nice
                ))));
            }
        }
        limits.check(spec).map_err(|e| Refusal::Invalid(at(e)))?;
    }
    Ok(())
}

/// Refuses a submission that would take a user past `max_submit_jobs`
/// (operators are not limited)
/// (queued and running jobs, each array task counting). Read from the
/// applied state: requests of one user racing each other may pass it
/// together, by at most the requests in flight.
pub fn check_user_limit(policy: &SubmitPolicy, by: Proven, state: &State, specs: &[JobSpec]) -> Result<(), Refusal> {
    let Some(max) = policy.max_submit_jobs.filter(|_| !by.who.operator) else { return Ok(()) };
    let mut asked: Vec<(u32, u64)> = Vec::new();
    for s in specs {
        let n = s.array.as_ref().map_or(1, |a| a.tasks.len());
        match asked.iter_mut().find(|(uid, _)| *uid == s.uid) {
            Some((_, total)) => *total += n,
            None => asked.push((s.uid, n)),
        }
    }
    for (uid, n) in asked {
        // Split-off array tasks are jobs; the tasks not yet split wait in
        // their array's record.
        let jobs = state.jobs().values().filter(|j| j.spec.uid == uid && !j.state.is_terminal()).count();
        let waiting: u64 = state.arrays().values().filter(|a| a.spec.uid == uid).map(|a| a.pending.len()).sum();
        let live = jobs as u64 + waiting;
        if live + n > max {
            return Err(Refusal::Limit(format!(
                "Job violates accounting/QOS policy (job submit limit, user's size and/or time limits): \
                 uid {uid} has {live} jobs queued or running, {n} more would pass MaxSubmitJobs={max}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Option<Account> {
        Some(Account { uid: 1001, name: "alice".into(), gid: 1001, groups: vec![1001, 2000] })
    }

    fn db(uid: u32) -> Option<Account> {
        (uid == 1001).then(alice).flatten()
    }

    fn spec(uid: u32, gid: u32) -> JobSpec {
        let mut s = JobSpec::simple("root", "#!/bin/sh\n");
        s.uid = uid;
        s.gid = gid;
        s
    }

    fn user(uid: u32, gid: u32) -> Proven {
        Proven { who: Requester { uid, operator: false }, gid }
    }

    #[test]
    fn the_user_name_comes_from_the_account_not_the_request() {
        let mut specs = vec![spec(1001, 1001)];
        admit(&SubmitPolicy::default(), user(1001, 1001), &mut specs, db).unwrap();
        assert_eq!(specs[0].user, "alice");
    }

    #[test]
    fn a_user_runs_only_in_groups_she_belongs_to_or_that_the_kernel_proved() {
        let p = SubmitPolicy::default();
        for gid in [1001, 2000] {
            admit(&p, user(1001, 1001), &mut [spec(1001, gid)], db).unwrap();
        }
        // `sg 3000 drover submit`: the kernel says she is in 3000 now.
        admit(&p, user(1001, 3000), &mut [spec(1001, 3000)], db).unwrap();
        for gid in [0, 6, 42] {
            let e = admit(&p, user(1001, 1001), &mut [spec(1001, gid)], db).unwrap_err();
            assert!(matches!(&e, Refusal::Forbidden(m) if m.contains("not a member of group")), "{e:?}");
        }
        // Root may pick any group; another uid is not hers to pick.
        admit(&p, Proven { who: Requester::ROOT, gid: 0 }, &mut [spec(1001, 42)], db).unwrap();
        let e = admit(&p, user(1001, 1001), &mut [spec(0, 0)], db).unwrap_err();
        assert!(matches!(e, Refusal::Forbidden(_)));
    }

    #[test]
    fn priority_and_negative_nice_are_for_operators() {
        let p = SubmitPolicy::default();
        let mut s = spec(1001, 1001);
        s.priority = Some(1 << 30);
        assert!(matches!(admit(&p, user(1001, 1001), &mut [s.clone()], db), Err(Refusal::Forbidden(_))));
        admit(&p, Proven { who: Requester::ROOT, gid: 0 }, &mut [s], db).unwrap();
        let mut s = spec(1001, 1001);
        s.nice = -5;
        assert!(matches!(admit(&p, user(1001, 1001), &mut [s.clone()], db), Err(Refusal::Forbidden(_))));
        s.nice = 5;
        admit(&p, user(1001, 1001), &mut [s], db).unwrap();
    }

    #[test]
    fn sizes_and_counts_are_bounded() {
        let p = SubmitPolicy { max_jobs_per_request: 3, ..SubmitPolicy::default() };
        let mut many = vec![spec(1001, 1001); 4];
        assert!(matches!(admit(&p, user(1001, 1001), &mut many, db), Err(Refusal::Limit(_))));
        let mut s = spec(1001, 1001);
        s.comment = Some("x".repeat(1 << 20));
        assert!(matches!(admit(&p, user(1001, 1001), &mut [s], db), Err(Refusal::Invalid(m)) if m.contains("comment")));
        let mut s = spec(1001, 1001);
        s.time_limit = Some(u64::MAX);
        assert!(
            matches!(admit(&p, user(1001, 1001), &mut [s], db), Err(Refusal::Invalid(m)) if m.contains("time limit"))
        );
    }
}
