//! What the healer does now, decided from the state, what the provider
//! says of the machines, and the policy. Pure: no I/O, no clock.

use crate::policy::Policy;
use crate::provider::MachineState;
use drover_core::job::PendingReason;
use drover_core::node::{Node, Power, RepairKind};
use drover_core::{JobSpec, NodeStatus, State, Time};
use std::collections::{BTreeSet, HashMap};

/// A machine's state and since when the healer has seen it so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub state: MachineState,
    pub since: Time,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start a repair. `down_first`: mark the node DOWN first, with this
    /// reason (its machine is gone, and its jobs with it: requeue them now
    /// rather than at the node timeout).
    Start { node: String, kind: RepairKind, why: String, down_first: Option<String> },
    /// A repair past its deadline: record it as failed.
    Expire { node: String, token: String, kind: RepairKind, error: String },
}

/// The decisions for one poll, at most one per node.
pub fn decide(
    state: &State,
    machines: &HashMap<String, Observed>,
    policy: &Policy,
    loss_kills_jobs: bool,
    now: Time,
) -> Vec<Decision> {
    let mut out = Vec::new();
    for n in state.nodes() {
        if let Some(r) = n.repair.as_ref().filter(|r| now > r.deadline) {
            let secs = r.deadline.saturating_sub(r.started) / 1000;
            let error = match (r.kind, &r.acted) {
                (RepairKind::Suspend, _) => format!("not stopped within {secs}s"),
                (_, Some(_)) => format!("not registered within {secs}s"),
                (_, None) => format!("the provider did not answer within {secs}s"),
            };
            out.push(Decision::Expire { node: n.name.clone(), token: r.token.clone(), kind: r.kind, error });
        }
    }
    for n in state.nodes() {
        if let Some(d) = replacement(n, machines.get(&n.name), policy, loss_kills_jobs, now) {
            out.push(d);
        }
    }
    let resumed = resumes(state, policy, now);
    let resuming: BTreeSet<&str> = resumed.iter().map(String::as_str).collect();
    out.extend(resumed.iter().map(|node| Decision::Start {
        node: node.clone(),
        kind: RepairKind::Resume,
        why: "jobs wait for it".into(),
        down_first: None,
    }));
    if let Some(idle_for) = policy.suspend_time_ms {
        let excluded = |name: &str| policy.suspend_exclude.iter().any(|e| e == name);
        let mut powered = Powered::new(state, policy);
        let limit = policy.per_poll(policy.suspend_rate);
        for (i, n) in state.nodes().iter().enumerate() {
            let idle = n.repair.is_none() && n.power == Power::On && n.status == NodeStatus::Up && n.jobs == 0;
            let free = !n.drain && !n.fail && !n.admin_down && !excluded(&n.name) && now >= n.repair_not_before;
            let long = now.saturating_sub(n.idle_since) >= idle_for && !resuming.contains(n.name.as_str());
            if idle && free && long && out.iter().filter(|d| is_suspend(d)).count() < limit && powered.may_stop(i) {
                powered.stop(i);
                out.push(Decision::Start {
                    node: n.name.clone(),
                    kind: RepairKind::Suspend,
                    why: format!("idle for {}s", now.saturating_sub(n.idle_since) / 1000),
                    down_first: None,
                });
            }
        }
    }
    out
}

fn is_suspend(d: &Decision) -> bool {
    matches!(d, Decision::Start { kind: RepairKind::Suspend, .. })
}

/// How many of each bounded partition's nodes are on (or on their way
/// up), for the per-partition bounds of power saving.
#[derive(Clone)]
struct Powered<'a> {
    state: &'a State,
    policy: &'a Policy,
    on: Vec<(String, u32)>,
}

impl<'a> Powered<'a> {
    fn new(state: &'a State, policy: &'a Policy) -> Powered<'a> {
        let names = policy.min_powered.iter().chain(&policy.max_powered).map(|(p, _)| p.clone());
        let on = names
            .map(|p| {
                let count = state.partition(&p).map_or(0, |part| {
                    part.members
                        .iter()
                        .filter(|&&i| matches!(state.nodes()[i as usize].power, Power::On | Power::PoweringUp))
                        .count() as u32
                });
                (p, count)
            })
            .collect();
        Powered { state, policy, on }
    }

    /// The bounded partitions node `i` is in, with how many are on.
    fn of(&self, i: usize) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.on
            .iter()
            .filter(move |(p, _)| self.state.partition(p).is_some_and(|part| part.members.contains(&(i as u32))))
            .map(|(p, n)| (p.as_str(), *n))
    }

    fn may_stop(&self, i: usize) -> bool {
        self.of(i).all(|(p, on)| self.policy.min_powered.iter().all(|(q, min)| q != p || on > *min))
    }

    fn may_start(&self, i: usize) -> bool {
        self.of(i).all(|(p, on)| self.policy.max_powered.iter().all(|(q, max)| q != p || on < *max))
    }

    fn change(&mut self, i: usize, up: bool) {
        let parts: Vec<String> = self.of(i).map(|(p, _)| p.to_string()).collect();
        for (p, n) in &mut self.on {
            if parts.contains(p) {
                *n = if up { *n + 1 } else { n.saturating_sub(1) };
            }
        }
    }

    fn stop(&mut self, i: usize) {
        self.change(i, false)
    }

    fn start(&mut self, i: usize) {
        self.change(i, true)
    }
}

/// Whether the healer may start a repair of `n` now at all.
fn repairable(n: &Node, now: Time) -> bool {
    n.repair.is_none() && !n.repair_given_up && now >= n.repair_not_before && !n.drain && !n.fail && !n.admin_down
}

/// Whether `n` needs replacing, going by its machine (if the provider knows
/// it) and then by its state.
fn replacement(
    n: &Node,
    machine: Option<&Observed>,
    policy: &Policy,
    loss_kills_jobs: bool,
    now: Time,
) -> Option<Decision> {
    if !repairable(n, now) || n.power != Power::On || n.status == NodeStatus::Unknown {
        return None;
    }
    let up = n.status == NodeStatus::Up;
    let start = |why: String, kills: bool| {
        let down_first = (up && kills).then(|| why.clone());
        Some(Decision::Start { node: n.name.clone(), kind: RepairKind::Replace, why, down_first })
    };
    match machine {
        Some(m) => match m.state {
            MachineState::Stopped | MachineState::Terminated => {
                start(format!("its machine is {}", m.state.name()), loss_kills_jobs)
            }
            // Seen missing over a whole poll, i.e. in two listings.
            MachineState::Missing if now.saturating_sub(m.since) >= policy.poll_ms => {
                start("its machine is missing".into(), loss_kills_jobs)
            }
            MachineState::Impaired | MachineState::Retiring
                if now.saturating_sub(m.since) >= policy.impaired_grace_ms =>
            {
                // Its machine is to be replaced: what runs there goes with it.
                start(format!("its machine is {}", m.state.name()), true)
            }
            MachineState::Booting | MachineState::Missing | MachineState::Impaired | MachineState::Retiring => None,
            MachineState::Running => down_too_long(n, policy, now).and_then(|why| start(why, false)),
        },
        None => down_too_long(n, policy, now).and_then(|why| start(why, false)),
    }
}

/// A node DOWN (not by an operator) longer than the grace: a reboot would
/// have registered again by now. After a failed repair (a machine that
/// never booted) there is nothing to wait for: the back-off alone paces it.
fn down_too_long(n: &Node, policy: &Policy, now: Time) -> Option<String> {
    let since = n.reason_time.unwrap_or(n.last_heartbeat);
    let grace = if n.repair_failures > 0 { 0 } else { policy.down_grace_ms };
    (n.status == NodeStatus::Down && now.saturating_sub(since) >= grace).then(|| match n.repair_failures {
        0 => format!("down for {}s", now.saturating_sub(since) / 1000),
        f => format!("down after {f} failed repairs"),
    })
}

/// Powered-down nodes to resume for the jobs waiting: each waiting job, in
/// order, takes what is free (or on its way up) in its partition, and what
/// it still lacks is powered up, up to the resume rate. An estimate (the
/// scheduler decides where jobs start): it never resumes a node no waiting
/// job could use.
fn resumes(state: &State, policy: &Policy, now: Time) -> Vec<String> {
    let nodes = state.nodes();
    if !nodes.iter().any(|n| n.power == Power::Off) {
        return Vec::new();
    }
    let limit = policy.per_poll(policy.resume_rate);
    // CPUs each node can still give: free on running nodes, all on nodes
    // powering up; nothing on the rest until resumed.
    let mut budget: Vec<u32> = nodes
        .iter()
        .map(|n| match n.power {
            Power::On if n.schedulable() => n.free().cpus,
            Power::PoweringUp => n.total.cpus,
            _ => 0,
        })
        .collect();
    let mut chosen: Vec<usize> = Vec::new();
    let mut powered = Powered::new(state, policy);
    for spec in waiting(state) {
        if chosen.len() >= limit {
            break;
        }
        let Ok(partition) = state.partition_for(spec) else { continue };
        let usable = |i: usize| {
            let n = &nodes[i];
            (spec.nodelist.is_empty() || spec.nodelist.contains(&n.name))
                && !spec.exclude.contains(&n.name)
                && spec.constraint.as_deref().is_none_or(|c| n.satisfies(c))
        };
        let members: Vec<usize> = partition.members.iter().map(|&i| i as usize).filter(|&i| usable(i)).collect();
        let mut need = (spec.ntasks.max(1) * spec.cpus_per_task.max(1)).max(spec.nodes_min);
        let mut count = 0u32;
        let mut taken: Vec<(usize, u32)> = Vec::new();
        for &i in &members {
            if need == 0 && count >= spec.nodes_min.max(1) {
                break;
            }
            if budget[i] > 0 {
                let take = budget[i].min(need.max(1));
                taken.push((i, take));
                need = need.saturating_sub(take);
                count += 1;
            }
        }
        let mut wanted: Vec<(usize, u32)> = Vec::new();
        let mut trial = powered.clone();
        for &i in &members {
            if need == 0 && count >= spec.nodes_min.max(1) {
                break;
            }
            let n = &nodes[i];
            if n.power == Power::Off
                && repairable(n, now)
                && !chosen.contains(&i)
                && chosen.len() + wanted.len() < limit
                && trial.may_start(i)
            {
                trial.start(i);
                let take = n.total.cpus.min(need.max(1));
                wanted.push((i, take));
                need = need.saturating_sub(take);
                count += 1;
            }
        }
        if need > 0 || count < spec.nodes_min.max(1) {
            // It cannot start even with these: resume nothing for it now.
            continue;
        }
        for (i, take) in taken {
            budget[i] -= take;
        }
        for (i, take) in wanted {
            budget[i] = nodes[i].total.cpus - take;
            chosen.push(i);
        }
        powered = trial;
    }
    chosen.into_iter().map(|i| nodes[i].name.clone()).collect()
}

/// The specs of jobs that wait for resources, in order; an array counts
/// for up to 64 of its unsplit tasks.
fn waiting(state: &State) -> impl Iterator<Item = &JobSpec> {
    let waits = |r: PendingReason| {
        matches!(
            r,
            PendingReason::None
                | PendingReason::Priority
                | PendingReason::Resources
                | PendingReason::ReqNodeNotAvail
                | PendingReason::NodeDown
        )
    };
    let jobs = state.pending_ids().iter().filter_map(|id| state.job(*id)).filter(move |j| waits(j.reason));
    let arrays = state.arrays_pending().iter().filter_map(|id| state.array(*id)).filter(move |a| waits(a.reason));
    jobs.map(|j| &*j.spec).chain(arrays.flat_map(|a| std::iter::repeat_n(&*a.spec, a.pending.len().min(64) as usize)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_core::partition::PartitionSpec;
    use drover_core::state::RepairOutcome;
    use drover_core::{Command, JobSpec, Resources};
    use std::sync::Arc;

    fn cluster(nodes: u32) -> State {
        let mut s = State::default();
        s.apply(Command::SetPartition(PartitionSpec { is_default: true, ..PartitionSpec::new("debug", "ALL") }))
            .unwrap();
        for i in 1..=nodes {
            s.apply(Command::RegisterNode {
                name: format!("node{i}"),
                addr: String::new(),
                total: Resources::new(4, 8192, 0),
                features: Vec::new(),
                known_steps: Vec::new(),
                now: 0,
            })
            .unwrap();
        }
        s
    }

    fn machines(list: &[(&str, MachineState, Time)]) -> HashMap<String, Observed> {
        list.iter().map(|(n, state, since)| (n.to_string(), Observed { state: *state, since: *since })).collect()
    }

    fn starts(d: &[Decision]) -> Vec<(String, RepairKind, bool)> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Start { node, kind, down_first, .. } => Some((node.clone(), *kind, down_first.is_some())),
                Decision::Expire { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_stopped_machine_is_replaced_at_once_and_its_jobs_requeued_first_where_they_died() {
        let s = cluster(2);
        let p = Policy::default();
        let m = machines(&[("node1", MachineState::Stopped, 1_000), ("node2", MachineState::Running, 0)]);
        // The node is still UP (no heartbeat missed yet): no waiting for the node timeout.
        assert_eq!(starts(&decide(&s, &m, &p, true, 1_000)), vec![("node1".into(), RepairKind::Replace, true)]);
        // A local agent's jobs live on without it: no DOWN first.
        assert_eq!(starts(&decide(&s, &m, &p, false, 1_000)), vec![("node1".into(), RepairKind::Replace, false)]);
    }

    #[test]
    fn a_down_node_waits_out_the_grace_a_reboot_needs() {
        let mut s = cluster(1);
        s.apply(Command::NodeDown { node: "node1".into(), reason: "Not responding".into(), now: 10_000 }).unwrap();
        let p = Policy::default();
        let none = HashMap::new();
        assert!(decide(&s, &none, &p, true, 10_000 + p.down_grace_ms - 1).is_empty());
        let d = decide(&s, &none, &p, true, 10_000 + p.down_grace_ms);
        assert_eq!(starts(&d), vec![("node1".into(), RepairKind::Replace, false)]);
    }

    #[test]
    fn missing_impaired_and_booting_machines_are_given_time() {
        let s = cluster(3);
        let p = Policy::default();
        let m = machines(&[
            ("node1", MachineState::Missing, 5_000),
            ("node2", MachineState::Impaired, 5_000),
            ("node3", MachineState::Booting, 0),
        ]);
        assert!(decide(&s, &m, &p, true, 5_000).is_empty(), "one listing is not enough");
        let d = decide(&s, &m, &p, true, 5_000 + p.poll_ms);
        assert_eq!(starts(&d), vec![("node1".into(), RepairKind::Replace, true)]);
        let d = decide(&s, &m, &p, true, 5_000 + p.impaired_grace_ms);
        assert_eq!(
            starts(&d),
            vec![("node1".into(), RepairKind::Replace, true), ("node2".into(), RepairKind::Replace, true)]
        );
    }

    #[test]
    fn drained_given_up_and_busy_nodes_are_left_alone() {
        let mut s = cluster(2);
        let op = drover_core::state::Requester::ROOT;
        s.apply(Command::SetNodeState {
            node: "node1".into(),
            action: drover_core::node::NodeAction::Drain,
            reason: Some("maintenance".into()),
            by: op,
            now: 0,
        })
        .unwrap();
        let p = Policy::default();
        let start = |s: &mut State, token: &str| {
            s.apply(Command::RepairStart {
                node: "node2".into(),
                kind: RepairKind::Replace,
                provider: "test".into(),
                token: token.into(),
                deadline: 100_000,
                now: 1_000,
            })
        };
        start(&mut s, "a").unwrap();
        let m = machines(&[("node1", MachineState::Stopped, 0), ("node2", MachineState::Stopped, 0)]);
        assert!(starts(&decide(&s, &m, &p, true, 2_000)).is_empty(), "drained, and in flight");
        let outcome = RepairOutcome::Failed { error: "boom".into(), retry_after_ms: None };
        s.apply(Command::RepairResult { node: "node2".into(), token: "a".into(), outcome, now: 2_000 }).unwrap();
        assert!(starts(&decide(&s, &m, &p, true, 3_000)).is_empty(), "given up");
    }

    #[test]
    fn after_a_failed_repair_the_back_off_alone_paces_the_next() {
        let mut s = cluster(1);
        s.apply(Command::NodeDown { node: "node1".into(), reason: "its machine is stopped".into(), now: 1_000 })
            .unwrap();
        s.apply(Command::RepairStart {
            node: "node1".into(),
            kind: RepairKind::Replace,
            provider: "test".into(),
            token: "t".into(),
            deadline: 4_000,
            now: 1_000,
        })
        .unwrap();
        let outcome = RepairOutcome::Failed { error: "not registered within 3s".into(), retry_after_ms: Some(1_000) };
        s.apply(Command::RepairResult { node: "node1".into(), token: "t".into(), outcome, now: 5_000 }).unwrap();
        // Its machine runs (it never booted): no waiting out the DOWN grace.
        let m = machines(&[("node1", MachineState::Running, 0)]);
        let p = Policy::default();
        assert!(decide(&s, &m, &p, true, 5_999).is_empty(), "backing off");
        assert_eq!(starts(&decide(&s, &m, &p, true, 6_000)), vec![("node1".into(), RepairKind::Replace, false)]);
    }

    #[test]
    fn per_partition_bounds_keep_nodes_on_and_cap_those_powered_up() {
        let mut s = cluster(4);
        let on = |s: &State| s.nodes().iter().filter(|n| n.power == Power::On).count();
        // At least two of debug's nodes stay on.
        let p = Policy {
            suspend_time_ms: Some(1_000),
            min_powered: vec![("debug".into(), 2)],
            max_powered: vec![("debug".into(), 3)],
            // Rates high enough that the bounds are what limit.
            suspend_rate: 6_000,
            resume_rate: 6_000,
            ..Policy::default()
        };
        let d = decide(&s, &HashMap::new(), &p, true, 5_000);
        assert_eq!(starts(&d).len(), 2, "two suspended, two kept on: {d:?}");
        for (k, node) in ["node1", "node2", "node3"].iter().enumerate() {
            let token = format!("s{k}");
            s.apply(Command::RepairStart {
                node: node.to_string(),
                kind: RepairKind::Suspend,
                provider: "test".into(),
                token: token.clone(),
                deadline: 100_000,
                now: 5_000,
            })
            .unwrap();
            let outcome = RepairOutcome::Acted { detail: "stopped".into() };
            s.apply(Command::RepairResult { node: node.to_string(), token, outcome, now: 5_000 }).unwrap();
        }
        assert_eq!(on(&s), 1);
        // A job for all four nodes may bring only two up (at most three on).
        let mut job = JobSpec::simple("alice", "#!/bin/sh\ntrue\n");
        (job.ntasks, job.nodes_min, job.nodes_max) = (16, 4, 4);
        s.apply(Command::Submit { spec: Arc::new(job), now: 6_000 }).unwrap();
        assert!(starts(&decide(&s, &HashMap::new(), &p, true, 6_000)).is_empty(), "it cannot fit under the cap");
        let mut job = JobSpec::simple("alice", "#!/bin/sh\ntrue\n");
        (job.ntasks, job.nodes_min, job.nodes_max) = (12, 3, 3);
        s.apply(Command::Submit { spec: Arc::new(job), now: 6_000 }).unwrap();
        let d = starts(&decide(&s, &HashMap::new(), &p, true, 6_000));
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().all(|(_, k, _)| *k == RepairKind::Resume));
    }

    #[test]
    fn a_repair_past_its_deadline_expires() {
        let mut s = cluster(1);
        s.apply(Command::RepairStart {
            node: "node1".into(),
            kind: RepairKind::Replace,
            provider: "test".into(),
            token: "t".into(),
            deadline: 61_000,
            now: 1_000,
        })
        .unwrap();
        let p = Policy::default();
        assert!(decide(&s, &HashMap::new(), &p, true, 61_000).is_empty());
        let d = decide(&s, &HashMap::new(), &p, true, 61_001);
        assert!(
            matches!(&d[..], [Decision::Expire { error, .. }] if error == "the provider did not answer within 60s"),
            "{d:?}"
        );
    }

    #[test]
    fn idle_nodes_power_down_and_come_back_for_jobs_that_need_them() {
        let mut s = cluster(3);
        let p = Policy { suspend_time_ms: Some(60_000), suspend_exclude: vec!["node3".into()], ..Policy::default() };
        assert!(decide(&s, &HashMap::new(), &p, true, 59_999).is_empty());
        let d = decide(&s, &HashMap::new(), &p, true, 60_000);
        assert_eq!(
            starts(&d),
            vec![("node1".into(), RepairKind::Suspend, false), ("node2".into(), RepairKind::Suspend, false)]
        );
        for (node, token) in [("node1", "s1"), ("node2", "s2")] {
            s.apply(Command::RepairStart {
                node: node.into(),
                kind: RepairKind::Suspend,
                provider: "test".into(),
                token: token.into(),
                deadline: 200_000,
                now: 60_000,
            })
            .unwrap();
            let outcome = RepairOutcome::Acted { detail: "stopped".into() };
            s.apply(Command::RepairResult { node: node.into(), token: token.into(), outcome, now: 61_000 }).unwrap();
        }
        // Four CPUs fit on node3, still on: nothing to resume.
        let mut job = JobSpec::simple("alice", "#!/bin/sh\ntrue\n");
        job.ntasks = 4;
        s.apply(Command::Submit { spec: Arc::new(job.clone()), now: 62_000 }).unwrap();
        assert!(starts(&decide(&s, &HashMap::new(), &p, true, 62_000)).is_empty());
        // The first job takes node3; eight CPUs on two nodes need both
        // powered-down nodes.
        job.ntasks = 8;
        job.nodes_min = 2;
        job.nodes_max = 2;
        s.apply(Command::Submit { spec: Arc::new(job.clone()), now: 62_000 }).unwrap();
        assert_eq!(
            starts(&decide(&s, &HashMap::new(), &p, true, 62_000)),
            vec![("node1".into(), RepairKind::Resume, false), ("node2".into(), RepairKind::Resume, false)]
        );
        // A job naming a powered-down node resumes that node only.
        // One that could not start even then resumes nothing.
        let mut s3 = s.clone();
        job.ntasks = 12;
        job.nodes_min = 3;
        job.nodes_max = 3;
        s3.apply(Command::Submit { spec: Arc::new(job.clone()), now: 62_000 }).unwrap();
        assert_eq!(starts(&decide(&s3, &HashMap::new(), &p, true, 62_000)).len(), 2, "only job 2's nodes");
        let mut s2 = s.clone();
        s2.apply(Command::Cancel {
            filter: drover_core::state::CancelFilter {
                jobs: vec![drover_core::job::JobRef { id: 2, task: None }],
                ..Default::default()
            },
            by: drover_core::state::Requester::ROOT,
            now: 62_000,
        })
        .unwrap();
        job.ntasks = 1;
        job.nodes_min = 1;
        job.nodes_max = 1;
        job.nodelist = vec!["node2".into()];
        s2.apply(Command::Submit { spec: Arc::new(job), now: 62_000 }).unwrap();
        assert_eq!(
            starts(&decide(&s2, &HashMap::new(), &p, true, 62_000)),
            vec![("node2".into(), RepairKind::Resume, false)]
        );
    }
}
