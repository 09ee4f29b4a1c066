//! The healer as a leader duty: every poll, the leader asks its provider
//! what it knows of the machines, decides with `drover_healer::decide`,
//! records each repair's intent in the log, calls the provider, and
//! records the answer. Only the leader acts; what it recorded survives it,
//! so the next leader neither forgets a repair in flight (it waits for it,
//! or calls the provider again with the same token) nor starts a second.

use crate::raft::Controller;
use drover_core::node::RepairKind;
use drover_core::state::RepairOutcome;
use drover_core::{Command, State, Time};
use drover_healer::{decide, Decision, Observed, Policy, Provider, Target};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// A provider and the policy it is driven by.
#[derive(Clone)]
pub struct Healer {
    pub provider: Arc<dyn Provider>,
    pub policy: Policy,
}

impl std::fmt::Debug for Healer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Healer").field("provider", &self.provider.name()).field("policy", &self.policy).finish()
    }
}

/// The leader's healing loop, for the controller's life.
pub async fn run(ctl: Arc<Controller>, healer: Healer) {
    let Healer { provider, policy } = healer;
    let mut tick = tokio::time::interval(Duration::from_millis(policy.poll_ms.max(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: HashMap<String, Observed> = HashMap::new();
    // Tokens this leader has called the provider with, in this term.
    let mut called: HashSet<String> = HashSet::new();
    let mut term = 0;
    let mut calls = tokio::task::JoinSet::new();
    loop {
        tick.tick().await;
        while let Some(done) = calls.try_join_next() {
            if let Err(e) = done {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
        if !ctl.is_leader() {
            seen.clear();
            called.clear();
            continue;
        }
        if ctl.term() != term {
            term = ctl.term();
            called.clear();
        }
        for did in provider.tend().await {
            tracing::warn!(provider = provider.name(), "{did}");
        }
        let nodes: Vec<String> = ctl.shared.read(|s| s.nodes().iter().map(|n| n.name.clone()).collect());
        let now = crate::loops::now_ms();
        match provider.describe(&nodes).await {
            Ok(machines) => {
                let mut next = HashMap::new();
                for m in machines {
                    let since = seen.get(&m.node).filter(|o| o.state == m.state).map_or(now, |o| o.since);
                    next.insert(m.node, Observed { state: m.state, since });
                }
                seen = next;
            }
            Err(e) => tracing::warn!(provider = provider.name(), error = %e, "cannot list the machines"),
        }
        let (decisions, orphans) = ctl.shared.read(|s| {
            let decisions = decide(s, &seen, &policy, provider.loss_kills_jobs(), now);
            // Repairs a previous leader recorded and may not have called:
            // called again with the same token, which providers honour once.
            let orphans: Vec<(RepairKind, Target)> = s
                .nodes()
                .iter()
                .filter_map(|n| n.repair.as_ref().map(|r| (n, r)))
                .filter(|(_, r)| r.acted.is_none() && r.provider == provider.name() && !called.contains(&r.token))
                .filter(|(_, r)| now <= r.deadline)
                .map(|(n, r)| (r.kind, Target { node: n.name.clone(), token: r.token.clone() }))
                .collect();
            (decisions, orphans)
        });
        let mut batches: HashMap<RepairKind, Vec<Target>> = HashMap::new();
        for (kind, t) in orphans {
            tracing::info!(node = %t.node, kind = kind.name(), "calling the provider again for a repair in flight");
            called.insert(t.token.clone());
            batches.entry(kind).or_default().push(t);
        }
        for d in decisions {
            match d {
                Decision::Expire { node, token, kind, error } => {
                    let failures = ctl.shared.read(|s| s.node(&node).map_or(0, |n| n.repair_failures)) + 1;
                    let retry_after_ms = match kind {
                        RepairKind::Suspend => Some(policy.suspend_timeout_ms),
                        _ => policy.retry_after(failures),
                    };
                    let outcome = RepairOutcome::Failed { error, retry_after_ms };
                    let gave_up = matches!(outcome, RepairOutcome::Failed { retry_after_ms: None, .. });
                    record(&ctl, node.clone(), token, kind, outcome).await;
                    if gave_up && kind == RepairKind::Replace {
                        stand_down(provider.as_ref(), &node).await;
                    }
                }
                Decision::Start { node, kind, why, down_first } => {
                    if let Some(reason) = down_first {
                        let cmd = Command::NodeDown { node: node.clone(), reason, now };
                        if let Err(e) = ctl.propose(cmd).await {
                            tracing::warn!(node, error = %e, "cannot mark the node down");
                            continue;
                        }
                    }
                    let token = token_for(kind, &node, ctl.id, now);
                    let cmd = Command::RepairStart {
                        node: node.clone(),
                        kind,
                        provider: provider.name().to_string(),
                        token: token.clone(),
                        deadline: policy.deadline(kind, now),
                        now,
                    };
                    match ctl.propose(cmd).await {
                        Ok(_) => {
                            tracing::info!(node, kind = kind.name(), provider = provider.name(), why, "repairing");
                            called.insert(token.clone());
                            batches.entry(kind).or_default().push(Target { node, token });
                        }
                        Err(e) => tracing::debug!(node, kind = kind.name(), error = %e, "repair not started"),
                    }
                }
            }
        }
        for (kind, targets) in batches {
            let waiting = ctl.shared.read(|s| resume_file(s, &targets));
            let (ctl, provider, policy) = (ctl.clone(), provider.clone(), policy.clone());
            calls.spawn(async move {
                let answers = provider.act(kind, &targets, &waiting).await;
                for (t, answer) in targets.into_iter().zip(answers) {
                    let outcome = match answer {
                        Ok(detail) => RepairOutcome::Acted { detail },
                        Err(error) => {
                            tracing::warn!(node = %t.node, kind = kind.name(), error, "repair failed");
                            let failures = ctl.shared.read(|s| s.node(&t.node).map_or(0, |n| n.repair_failures)) + 1;
                            let retry_after_ms = match kind {
                                // Not stopped: tried again after a while, never given up.
                                RepairKind::Suspend => Some(policy.suspend_timeout_ms),
                                _ => policy.retry_after(failures),
                            };
                            RepairOutcome::Failed { error, retry_after_ms }
                        }
                    };
                    let gave_up = matches!(outcome, RepairOutcome::Failed { retry_after_ms: None, .. });
                    record(&ctl, t.node.clone(), t.token, kind, outcome).await;
                    if gave_up && kind == RepairKind::Replace {
                        stand_down(provider.as_ref(), &t.node).await;
                    }
                }
            });
        }
    }
}

/// The healer gave up on `node`: its machine (which never came up right)
/// is stopped through the provider, so that it costs nothing while it
/// waits for an operator.
async fn stand_down(provider: &dyn Provider, node: &str) {
    let target = Target { node: node.to_string(), token: format!("give-up-{}", crate::loops::now_ms()) };
    let answer = provider.act(RepairKind::Suspend, std::slice::from_ref(&target), &serde_json::Value::Null).await;
    match answer.into_iter().next() {
        Some(Ok(did)) => {
            tracing::error!(node, provider = provider.name(), did, "gave up repairing {node}; its machine is stopped")
        }
        Some(Err(e)) => {
            tracing::error!(node, provider = provider.name(), error = %e, "gave up repairing {node}; its machine could not be stopped")
        }
        None => {}
    }
}

async fn record(ctl: &Controller, node: String, token: String, kind: RepairKind, outcome: RepairOutcome) {
    let now = crate::loops::now_ms();
    if let Err(e) = ctl.propose(Command::RepairResult { node: node.clone(), token, outcome, now }).await {
        tracing::warn!(node, kind = kind.name(), error = %e, "cannot record the repair's result");
    }
}

/// An idempotency token (EC2 allows 64 ASCII characters): the kind, the
/// controller, the time and the node's hash.
fn token_for(kind: RepairKind, node: &str, controller: u64, now: Time) -> String {
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("drover-{}-{controller}-{now}-{hash:016x}", kind.name())
}

/// The jobs waiting for the nodes being resumed, in the shape of Slurm's
/// `SLURM_RESUME_FILE`.
fn resume_file(s: &State, targets: &[Target]) -> serde_json::Value {
    let names: Vec<&str> = targets.iter().map(|t| t.node.as_str()).collect();
    let jobs: Vec<serde_json::Value> = s
        .pending_ids()
        .iter()
        .filter_map(|id| s.job(*id))
        .take(1000)
        .filter_map(|j| {
            let partition = s.partition_for(&j.spec).ok()?;
            let mine: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| s.node_index(n).is_some_and(|i| partition.members.contains(&i)))
                .filter(|n| j.spec.nodelist.is_empty() || j.spec.nodelist.iter().any(|w| w == n))
                .collect();
            (!mine.is_empty()).then(|| {
                serde_json::json!({
                    "job_id": j.id,
                    "partition": partition.spec.name,
                    "nodes_alloc": drover_core::hostlist::compress(&mine),
                    "nodes_resume": drover_core::hostlist::compress(&mine),
                    "features": j.spec.constraint.clone().unwrap_or_default(),
                    "oversubscribe": if j.spec.exclusive { "NO" } else { "OK" },
                    "reservation": "",
                    "extra": "",
                })
            })
        })
        .collect();
    serde_json::json!({ "all_nodes_resume": drover_core::hostlist::compress(&names), "jobs": jobs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_fit_ec2_and_differ_by_node() {
        let long = "n".repeat(128);
        let a = token_for(RepairKind::Replace, &long, 7, 1_733_390_000_000);
        assert!(a.len() <= 64 && a.is_ascii(), "{a}");
        assert_ne!(a, token_for(RepairKind::Replace, "node1", 7, 1_733_390_000_000));
    }
}
