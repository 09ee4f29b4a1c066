//! The scheduler: a pure function from the cluster state and the time to a
//! [`Plan`] of allocations.
//!
//! One pass considers pending jobs in priority order and places each on the
//! nodes of its partition. When the first job of a partition cannot start,
//! it gets a *reservation* — the earliest time its resources free up, from
//! the time limits of running jobs — and later jobs may only start ahead of
//! it if they do not delay that reservation (EASY backfill).
//!
//! The plan is proposed as one `Command::Allocate`; the state machine
//! re-checks every allocation, so a plan computed on a slightly stale state
//! can never over-commit a node.

mod estimate;
mod priority;

pub use crate::place::Select;
pub use crate::plan::{JobKey, Plan, PlannedAllocation};
pub use estimate::{estimate_start, Estimate};

use crate::place;
pub use priority::{FairShare, Multifactor, PriorityInput, PriorityPolicy, Usage};

use crate::job::{JobId, JobSpec, MemRequest, NodeShare, PendingReason};
use crate::node::NodeStatus;
use crate::partition::Partition;
use crate::resources::Resources;
use crate::state::{DepStatus, State};
use crate::{secs, Time};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedConfig {
    pub priority: Multifactor,
    pub select: Select,
    pub backfill: bool,
    /// Jobs one user may have running at once (Slurm's MaxJobs): the rest
    /// wait with reason `AssocMaxJobsLimit`. Operators' jobs count too.
    #[serde(default)]
    pub max_running_per_user: Option<u32>,
}

impl Default for SchedConfig {
    fn default() -> SchedConfig {
        SchedConfig {
            priority: Multifactor::default(),
            select: Select::FirstFit,
            backfill: true,
            max_running_per_user: None,
        }
    }
}

/// One scheduling pass with the configured multifactor priority.
pub fn schedule(state: &State, now: Time, cfg: &SchedConfig) -> Plan {
    schedule_with(state, now, cfg, &cfg.priority)
}

/// One scheduling pass with any priority policy (fair-share, tests).
pub fn schedule_with(state: &State, now: Time, cfg: &SchedConfig, policy: &dyn PriorityPolicy) -> Plan {
    Pass::new(state, now, cfg).run(policy).0
}

/// What a pass saw beyond its plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outlook {
    /// Some job waits on the clock (a begin time, a requeue back-off, an
    /// `after` dependency on another job's start): only then must passes
    /// go on while no event says anything changed.
    pub waits_on_time: bool,
}

/// [`schedule_with`], and what the pass saw.
pub fn schedule_with_outlook(
    state: &State,
    now: Time,
    cfg: &SchedConfig,
    policy: &dyn PriorityPolicy,
) -> (Plan, Outlook) {
    Pass::new(state, now, cfg).run(policy)
}

/// A job that may start, in the order the pass considers it.
struct Candidate<'a> {
    priority: u64,
    /// The job id, or the array id: the tie-breaker.
    order_id: JobId,
    key: JobKey,
    spec: &'a JobSpec,
    part: usize,
    reason: PendingReason,
}

/// What the first blocked job of a partition holds back for itself.
enum Reservation<'a> {
    /// Backfill is off: nothing behind the blocked job may start on its
    /// partition's nodes.
    Strict { part: usize },
    /// EASY backfill: the earliest time the blocked job fits, and the free
    /// resources projected for then.
    At { part: usize, spec: &'a JobSpec, start: Time, free_at_start: Vec<Resources> },
}

struct Pass<'a> {
    state: &'a State,
    now: Time,
    cfg: &'a SchedConfig,
    free: Vec<Resources>,
    usable: Vec<bool>,
    /// Resources that free up when running jobs reach their time limits:
    /// (time, node, resources); sorted by time when `releases_sorted`.
    releases: Vec<(Time, u32, Resources)>,
    releases_sorted: bool,
    /// Per partition: shapes that did not fit this pass; anything at least as
    /// large will not fit either (free resources only shrink in a pass).
    failed: Vec<Vec<ShapeKey>>,
    /// Per partition: a higher-priority job is already waiting for resources.
    blocked: Vec<bool>,
    /// Per partition: members before this position have no free CPU left,
    /// so first fit starts here (free resources only shrink in a pass).
    first_open: Vec<usize>,
    plan: Plan,
    outlook: Outlook,
    /// Running jobs per uid, counted only under a MaxJobs limit.
    running_by_uid: std::collections::HashMap<u32, u32>,
}

/// The parts of a request that decide whether it fits, for jobs without
/// node lists, exclusions, features or exclusivity.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ShapeKey {
    nodes_min: u32,
    nodes_max: Option<u32>,
    tpn: Option<u32>,
    mem_kind: u8,
    ntasks: u32,
    cpus_per_task: u32,
    mem: u64,
    gpus: u32,
}

impl ShapeKey {
    fn of(spec: &JobSpec) -> Option<ShapeKey> {
        if !spec.nodelist.is_empty() || !spec.exclude.is_empty() || spec.constraint.is_some() || spec.exclusive {
            return None;
        }
        let (mem_kind, mem) = match spec.mem {
            MemRequest::Default => (0, 0),
            MemRequest::PerNode(0) => return None,
            MemRequest::PerNode(m) => (1, m),
            MemRequest::PerCpu(m) => (2, m),
        };
        Some(ShapeKey {
            nodes_min: spec.nodes_min,
            nodes_max: spec.nodes_given.then_some(spec.nodes_max),
            tpn: spec.ntasks_per_node,
            mem_kind,
            ntasks: spec.ntasks,
            cpus_per_task: spec.cpus_per_task,
            mem,
            gpus: spec.gpus_per_node,
        })
    }

    /// `self` needs at least what `smaller` needs, in every dimension.
    fn dominates(&self, smaller: &ShapeKey) -> bool {
        self.nodes_min == smaller.nodes_min
            && self.nodes_max == smaller.nodes_max
            && self.tpn == smaller.tpn
            && self.mem_kind == smaller.mem_kind
            && self.ntasks >= smaller.ntasks
            && self.cpus_per_task >= smaller.cpus_per_task
            && self.mem >= smaller.mem
            && self.gpus >= smaller.gpus
    }
}

impl<'a> Pass<'a> {
    fn new(state: &'a State, now: Time, cfg: &'a SchedConfig) -> Pass<'a> {
        let nodes = state.nodes();
        let usable: Vec<bool> = nodes.iter().map(|n| n.schedulable()).collect();
        let free = nodes.iter().map(|n| n.free()).collect();
        let mut releases = Vec::new();
        for id in state.active_ids() {
            let job = &state.jobs()[id];
            let Some(alloc) = &job.alloc else { continue };
            let (Some(start), Some(limit)) = (job.start_time, alloc.time_limit) else { continue };
            for s in &alloc.shares {
                if usable[s.node as usize] {
                    releases.push((start.saturating_add(secs(limit)), s.node, s.res));
                }
            }
        }
        let mut running_by_uid = std::collections::HashMap::new();
        if cfg.max_running_per_user.is_some() {
            for id in state.active_ids() {
                *running_by_uid.entry(state.jobs()[id].spec.uid).or_insert(0u32) += 1;
            }
        }
        Pass {
            running_by_uid,
            state,
            now,
            cfg,
            free,
            usable,
            releases,
            releases_sorted: false,
            failed: vec![Vec::new(); state.partitions().len()],
            blocked: vec![false; state.partitions().len()],
            first_open: vec![0; state.partitions().len()],
            plan: Plan::default(),
            outlook: Outlook::default(),
        }
    }

    fn part_index(&self, spec: &JobSpec) -> Option<usize> {
        let p = self.state.partition_for(spec).ok()?;
        self.state.partitions().iter().position(|x| x.name() == p.name())
    }

    fn run(mut self, policy: &dyn PriorityPolicy) -> (Plan, Outlook) {
        self.run_in_place(policy);
        (self.plan, self.outlook)
    }

    /// The pass itself: afterwards `free` and `releases` include what it
    /// started.
    fn run_in_place(&mut self, policy: &dyn PriorityPolicy) {
        let candidates = self.candidates(policy);
        let mut reservations: Vec<Reservation<'a>> = Vec::new();
        for c in &candidates {
            if self.at_user_limit(c.spec.uid) {
                self.set_reason(c, PendingReason::AssocMaxJobsLimit);
                continue;
            }
            match c.key {
                JobKey::Job(_) => {
                    if self.consider(c, c.key, &mut reservations) {
                        self.count_start(c.spec.uid);
                    }
                }
                JobKey::Task { array, .. } => {
                    let a = &self.state.arrays()[&array];
                    let throttle = a.spec.array.as_ref().and_then(|s| s.max_running);
                    let mut started_any = false;
                    for (running, task) in (a.active..).zip(a.pending.iter()) {
                        if throttle.is_some_and(|max| running >= max) {
                            if !started_any {
                                self.set_reason(c, PendingReason::JobArrayTaskLimit);
                            }
                            break;
                        }
                        if self.at_user_limit(c.spec.uid) {
                            // The tasks left wait for the user's others.
                            self.set_reason(c, PendingReason::AssocMaxJobsLimit);
                            break;
                        }
                        let key = JobKey::Task { array, task };
                        if !self.consider(c, key, &mut reservations) {
                            break;
                        }
                        self.count_start(c.spec.uid);
                        started_any = true;
                    }
                }
            }
        }
    }

    /// Tries to start one job (or array task); returns whether it started.
    fn consider(&mut self, c: &Candidate<'a>, key: JobKey, reservations: &mut Vec<Reservation<'a>>) -> bool {
        let part = &self.state.partitions()[c.part];
        let shape = ShapeKey::of(c.spec);
        let known_misfit = shape.is_some_and(|s| self.failed[c.part].iter().any(|f| s.dominates(f)));
        let shares = if known_misfit { None } else { self.place_now(c.spec, c.part) };
        let Some(shares) = shares else {
            if let Some(s) = shape {
                if !known_misfit && self.failed[c.part].len() < 32 {
                    self.failed[c.part].push(s);
                }
            }
            if !self.blocked[c.part] {
                self.blocked[c.part] = true;
                if !self.cfg.backfill {
                    reservations.push(Reservation::Strict { part: c.part });
                } else if let Some(r) = self.reserve(c, part) {
                    reservations.push(r);
                }
                self.set_reason(c, PendingReason::Resources);
            } else {
                self.set_reason(c, PendingReason::Priority);
            }
            return false;
        };
        let limit = part.effective_limit(c.spec.time_limit);
        let end = limit.map_or(Time::MAX, |l| self.now.saturating_add(secs(l)));
        // Backfill check: starting now must not delay any reservation.
        for r in reservations.iter_mut() {
            match r {
                Reservation::Strict { part: rp } => {
                    if *rp == c.part || overlaps(&self.state.partitions()[*rp], &shares) {
                        self.set_reason(c, PendingReason::Priority);
                        return false;
                    }
                }
                Reservation::At { part: rp, spec, start, free_at_start } => {
                    if end <= *start {
                        continue;
                    }
                    let mut after = free_at_start.clone();
                    for s in &shares {
                        let f = &mut after[s.node as usize];
                        *f = f.saturating_sub(&s.res);
                    }
                    let rpart = &self.state.partitions()[*rp];
                    let still_fits = place::place(
                        spec,
                        self.state.nodes(),
                        &rpart.members,
                        &|i| Some(after[i as usize]),
                        self.cfg.select,
                    )
                    .is_some();
                    if !still_fits {
                        self.set_reason(c, PendingReason::Priority);
                        return false;
                    }
                    *free_at_start = after;
                }
            }
        }
        for s in &shares {
            let f = &mut self.free[s.node as usize];
            *f = f.saturating_sub(&s.res);
            if end != Time::MAX {
                self.releases.push((end, s.node, s.res));
                self.releases_sorted = false;
            }
        }
        self.plan.allocations.push(PlannedAllocation {
            key,
            shares,
            time_limit: limit,
            partition: part.name().to_string(),
        });
        true
    }

    fn place_now(&mut self, spec: &JobSpec, part_idx: usize) -> Option<Vec<NodeShare>> {
        let members = &self.state.partitions()[part_idx].members;
        let (free, usable) = (&self.free, &self.usable);
        let open = |i: u32| usable[i as usize] && free[i as usize].cpus > 0;
        let mut start = self.first_open[part_idx];
        while start < members.len() && !open(members[start]) {
            start += 1;
        }
        self.first_open[part_idx] = start;
        // Required nodes may sit before the cursor: only skip without them.
        let members =
            if spec.nodelist.is_empty() && self.cfg.select == Select::FirstFit { &members[start..] } else { members };
        place::place(
            spec,
            self.state.nodes(),
            members,
            &|i| usable[i as usize].then(|| free[i as usize]),
            self.cfg.select,
        )
    }

    /// The earliest time `c` fits, from the time limits of running jobs.
    fn reserve(&mut self, c: &Candidate<'a>, part: &Partition) -> Option<Reservation<'a>> {
        if !self.releases_sorted {
            self.releases.sort_unstable_by_key(|r| (r.0, r.1));
            self.releases_sorted = true;
        }
        let nodes = self.state.nodes();
        let free_after = |k: usize| -> Vec<Resources> {
            let mut f: Vec<Resources> =
                self.free.iter().zip(&self.usable).map(|(r, &u)| if u { *r } else { Resources::ZERO }).collect();
            for &(_, node, res) in &self.releases[..k] {
                let x = &mut f[node as usize];
                *x = x.add(&res).min_with(&nodes[node as usize].total);
            }
            f
        };
        let fits = |f: &Vec<Resources>| {
            place::place(c.spec, nodes, &part.members, &|i| Some(f[i as usize]), self.cfg.select).is_some()
        };
        let n = self.releases.len();
        if n == 0 || !fits(&free_after(n)) {
            return None;
        }
        // Fit only improves as more resources free up: binary search for the
        // first release after which the job fits.
        let (mut lo, mut hi) = (1, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if fits(&free_after(mid)) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        // Include every release that happens at that same instant.
        let start = self.releases[lo - 1].0;
        let k = self.releases.partition_point(|r| r.0 <= start);
        Some(Reservation::At { part: c.part, spec: c.spec, start, free_at_start: free_after(k) })
    }

    /// Whether `uid` runs as many jobs as MaxJobs allows.
    fn at_user_limit(&self, uid: u32) -> bool {
        self.cfg.max_running_per_user.is_some_and(|max| self.running_by_uid.get(&uid).copied().unwrap_or(0) >= max)
    }

    fn count_start(&mut self, uid: u32) {
        if self.cfg.max_running_per_user.is_some() {
            *self.running_by_uid.entry(uid).or_insert(0) += 1;
        }
    }

    fn set_reason(&mut self, c: &Candidate<'a>, reason: PendingReason) {
        // Each candidate ends its turn with at most one reason: no need to
        // look for an earlier one.
        if c.reason != reason {
            self.plan.reasons.push((c.key, reason));
        }
    }

    /// Every job that may start now, highest priority first; the others get
    /// their reason recorded.
    fn candidates(&mut self, policy: &dyn PriorityPolicy) -> Vec<Candidate<'a>> {
        let state = self.state;
        let part_cpus: Vec<u64> = state
            .partitions()
            .iter()
            .map(|p| p.members.iter().map(|&i| u64::from(state.nodes()[i as usize].total.cpus)).sum())
            .collect();
        let mut out = Vec::with_capacity(state.pending_ids().len() + state.arrays_pending().len());
        let mut blocked: Vec<(JobKey, PendingReason, PendingReason)> = Vec::new();
        let mut cancel = Vec::new();
        let mut waits_on_time = false;
        let now = self.now;
        let mut consider = |key: JobKey,
                            order_id: JobId,
                            spec: &'a JobSpec,
                            eligible: Time,
                            submit: Time,
                            reason: PendingReason,
                            dep: &dyn Fn() -> DepStatus,
                            part: Option<usize>| {
            let Some(part) = part else {
                blocked.push((key, reason, PendingReason::PartitionDown));
                return;
            };
            let p = &state.partitions()[part];
            let why = if !p.spec.up {
                Some(PendingReason::PartitionDown)
            } else if eligible > now {
                waits_on_time = true;
                Some(PendingReason::BeginTime)
            } else {
                match dep() {
                    DepStatus::Satisfied => None,
                    DepStatus::Waiting => {
                        // `after` waits for a start (no event wakes the
                        // scheduler for one) or for minutes after it.
                        let after = |d: &crate::dependency::Dependency| {
                            d.conditions.iter().any(|c| c.kind == crate::dependency::DepKind::After)
                        };
                        waits_on_time |= spec.dependency.as_ref().is_some_and(after);
                        Some(PendingReason::Dependency)
                    }
                    DepStatus::Never => {
                        if let (true, JobKey::Job(id)) = (spec.kill_on_invalid_dep, key) {
                            cancel.push(id);
                        }
                        Some(PendingReason::DependencyNeverSatisfied)
                    }
                }
            };
            let why = why.or_else(|| {
                let unavailable = spec
                    .nodelist
                    .iter()
                    .any(|n| state.node(n).is_none_or(|node| !node.schedulable() || node.status != NodeStatus::Up));
                unavailable.then_some(PendingReason::ReqNodeNotAvail)
            });
            match why {
                Some(w) => blocked.push((key, reason, w)),
                None => {
                    let input = PriorityInput { spec, submit_time: submit, partition_cpus: part_cpus[part] };
                    out.push(Candidate { priority: policy.priority(&input, now), order_id, key, spec, part, reason });
                }
            }
        };
        // Held jobs are skipped before anything is looked up for them: a
        // queue of thousands of held jobs is common and each pass meets them.
        for id in state.pending_ids() {
            let j = &state.jobs()[id];
            if j.held_by_admin.is_some() {
                continue;
            }
            let part = self.part_index(&j.spec);
            let order_id = j.array.map_or(j.id, |t| t.array_id);
            consider(
                JobKey::Job(j.id),
                order_id,
                &j.spec,
                j.eligible_time,
                j.submit_time,
                j.reason,
                &|| state.dependency_status(j, now),
                part,
            );
        }
        for id in state.arrays_pending() {
            let a = &state.arrays()[id];
            let Some(first) = a.pending.first() else { continue };
            if a.held_by_admin.is_some() {
                continue;
            }
            let part = self.part_index(&a.spec);
            let me = crate::job::ArrayTask { array_id: a.id, task: first };
            consider(
                JobKey::Task { array: a.id, task: first },
                a.id,
                &a.spec,
                a.eligible_time,
                a.submit_time,
                a.reason,
                &|| state.spec_dependency_status(&a.spec, a.id, Some(me), now),
                part,
            );
        }
        for (key, old, new) in blocked {
            if old != new {
                self.plan.reasons.push((key, new));
            }
        }
        self.plan.cancel = cancel;
        self.outlook.waits_on_time = waits_on_time;
        out.sort_by(|a, b| {
            b.priority.cmp(&a.priority).then(a.order_id.cmp(&b.order_id)).then(a.key.order().cmp(&b.key.order()))
        });
        out
    }
}

fn overlaps(part: &Partition, shares: &[NodeShare]) -> bool {
    shares.iter().any(|s| part.members.contains(&s.node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dependency::Dependency;
    use crate::partition::PartitionSpec;
    use crate::state::Command;
    use std::sync::Arc;

    /// One 4-CPU node, one running job filling it, and `waiting` submitted.
    fn outlook_with(waiting: JobSpec) -> Outlook {
        let mut s = State::default();
        s.apply(Command::SetPartition(PartitionSpec { is_default: true, ..PartitionSpec::new("p", "n1") })).unwrap();
        let total = Resources::new(4, 4096, 0);
        let register = Command::RegisterNode {
            name: "n1".into(),
            addr: String::new(),
            total,
            features: vec![],
            known_steps: vec![],
            now: 0,
        };
        s.apply(register).unwrap();
        let mut filler = JobSpec::simple("u", "true");
        filler.cpus_per_task = 4;
        s.apply(Command::Submit { spec: Arc::new(filler), now: 1 }).unwrap();
        let plan = schedule(&s, 2, &SchedConfig::default());
        s.apply(Command::Allocate { plan, now: 2, term: 0 }).unwrap();
        s.apply(Command::Submit { spec: Arc::new(waiting), now: 3 }).unwrap();
        schedule_with_outlook(&s, 4, &SchedConfig::default(), &SchedConfig::default().priority).1
    }

    #[test]
    fn a_pass_tells_whether_some_job_waits_on_the_clock() {
        let job = || JobSpec::simple("u", "true");
        let waits = |spec: JobSpec| outlook_with(spec).waits_on_time;
        assert!(!waits(job()), "waiting for resources: the end of a job wakes the scheduler");
        assert!(!waits(JobSpec { hold: true, ..job() }), "held: a release wakes it");
        assert!(waits(JobSpec { begin: Some(3_600), ..job() }), "a begin time is the clock's");
        let after = |text: &str| JobSpec { dependency: Some(Dependency::parse(text).unwrap()), ..job() };
        assert!(!waits(after("afterok:1")), "an end wakes the scheduler");
        assert!(waits(after("after:1+5")), "minutes after a start are the clock's");
    }
}
