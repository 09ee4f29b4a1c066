//! Repairs: the healer's intents and its providers' answers, recorded in
//! the log so that a new leader neither forgets a repair in flight nor
//! repeats it, and power saving's states.
//!
//! The healer decides (`drover-healer`); the state only checks that a
//! repair makes sense for the node now and keeps the node's record: what is
//! in flight, how many repairs failed in a row, and the back-off.

use super::*;

impl State {
    pub(super) fn repair_start(&mut self, node: &str, repair: Repair, ev: &mut Vec<Event>) -> Result<(), CommandError> {
        let i = self.node_index(node).ok_or_else(|| CommandError::UnknownNode(node.to_string()))?;
        let n = &self.nodes[i as usize];
        if let Some(r) = &n.repair {
            if r.token == repair.token {
                // The same intent proposed again (a retry across a leader
                // change): already recorded.
                return Ok(());
            }
            return Err(CommandError::InvalidState(format!(
                "a {} of node {node} is in flight since {}",
                r.kind,
                crate::time::format_timestamp(r.started / 1000)
            )));
        }
        if repair.provider.is_empty() || repair.token.is_empty() || repair.token.len() > 64 {
            return Err(CommandError::Invalid("a repair needs a provider and a token of 1-64 characters".into()));
        }
        if repair.deadline <= repair.started {
            return Err(CommandError::Invalid(format!("the repair of {node} has a deadline before its start")));
        }
        if repair.kind != RepairKind::Suspend && n.repair_given_up {
            return Err(CommandError::InvalidState(format!(
                "repairs of node {node} stopped after {} failures; resume the node to try again",
                n.repair_failures
            )));
        }
        {
            if repair.started < n.repair_not_before {
                return Err(CommandError::InvalidState(format!(
                    "node {node} backs off until {}",
                    crate::time::format_timestamp(n.repair_not_before / 1000)
                )));
            }
        }
        let operator_hold = n.drain || n.fail || n.admin_down;
        match repair.kind {
            RepairKind::Replace if operator_hold => {
                return Err(CommandError::InvalidState(format!(
                    "node {node} is {} by an operator: not repaired",
                    if n.admin_down { "down" } else { "drained" }
                )))
            }
            RepairKind::Replace if n.power != Power::On => {
                return Err(CommandError::InvalidState(format!("node {node} is {}", n.power.name())))
            }
            RepairKind::Resume if n.power != Power::Off => {
                return Err(CommandError::InvalidState(format!("node {node} is {}, not powered down", n.power.name())))
            }
            RepairKind::Suspend
                if n.power != Power::On || n.jobs > 0 || operator_hold || n.status != NodeStatus::Up =>
            {
                return Err(CommandError::InvalidState(format!("node {node} is not idle and up: not suspended")))
            }
            _ => {}
        }
        let n = &mut self.nodes[i as usize];
        let before = n.state();
        match repair.kind {
            RepairKind::Suspend => n.power = Power::PoweringDown,
            RepairKind::Resume => n.power = Power::PoweringUp,
            RepairKind::Replace => {}
        }
        ev.push(Event::RepairStarted { node: node.to_string(), kind: repair.kind, provider: repair.provider.clone() });
        n.repair = Some(repair);
        let after = n.state();
        if before != after {
            ev.push(Event::NodeStateChanged { node: node.to_string(), from: before, to: after, reason: None });
        }
        Ok(())
    }

    pub(super) fn repair_result(
        &mut self,
        node: &str,
        token: &str,
        outcome: RepairOutcome,
        now: Time,
        ev: &mut Vec<Event>,
    ) -> Result<(), CommandError> {
        let i = self.node_index(node).ok_or_else(|| CommandError::UnknownNode(node.to_string()))?;
        let n = &mut self.nodes[i as usize];
        let Some(repair) = n.repair.as_ref().filter(|r| r.token == token) else {
            return Err(CommandError::InvalidState(format!("no repair {token} of node {node} is in flight")));
        };
        let kind = repair.kind;
        let provider = repair.provider.clone();
        let took_ms = now.saturating_sub(repair.started);
        match outcome {
            RepairOutcome::Acted { detail } => {
                let detail = bounded_text(&detail, MAX_FAILURE_LEN);
                if repair.acted.is_some() {
                    return Ok(());
                }
                ev.push(Event::RepairActed {
                    node: node.to_string(),
                    kind,
                    provider: provider.clone(),
                    detail: detail.clone(),
                });
                match kind {
                    // Stopped (or asked to stop, which providers confirm):
                    // the node is powered down from now.
                    RepairKind::Suspend => {
                        n.power = Power::Off;
                        n.repair = None;
                        ev.push(Event::RepairDone {
                            node: node.to_string(),
                            kind,
                            provider: provider.clone(),
                            took_ms,
                        });
                    }
                    // Its agent never stopped (the machine was up): back now.
                    RepairKind::Resume if n.status == NodeStatus::Up => {
                        n.power = Power::On;
                        n.repair = None;
                        n.repair_failures = 0;
                        ev.push(Event::RepairDone {
                            node: node.to_string(),
                            kind,
                            provider: provider.clone(),
                            took_ms,
                        });
                    }
                    _ => n.repair.as_mut().expect("checked").acted = Some(detail),
                }
            }
            RepairOutcome::Failed { error, retry_after_ms } => {
                let error = bounded_text(&error, MAX_FAILURE_LEN);
                n.repair = None;
                // A machine that would not stop is no failed boot: it
                // waits, but counts toward nothing.
                if kind != RepairKind::Suspend {
                    n.repair_failures = n.repair_failures.saturating_add(1);
                }
                match retry_after_ms {
                    Some(after) => n.repair_not_before = now.saturating_add(after),
                    None if kind == RepairKind::Suspend => {}
                    None => n.repair_given_up = true,
                }
                let (failures, gave_up) = (n.repair_failures, n.repair_given_up);
                ev.push(Event::RepairFailed {
                    node: node.to_string(),
                    kind,
                    provider: provider.clone(),
                    error: error.clone(),
                    failures,
                    gave_up,
                });
                match kind {
                    // Still running: still on.
                    RepairKind::Suspend => n.power = Power::On,
                    // Did not come up: down (its next resume waits out the
                    // back-off), and counted as a failed resume.
                    RepairKind::Resume => {
                        n.power = Power::Off;
                        let reason = format!("resume failed: {error}");
                        if n.status == NodeStatus::Up {
                            self.node_down(i, reason, now, ev);
                        } else {
                            let before = n.state();
                            n.status = NodeStatus::Down;
                            n.reason = Some(reason.clone());
                            n.reason_time = Some(now);
                            if before != n.state() {
                                ev.push(Event::NodeStateChanged {
                                    node: node.to_string(),
                                    from: before,
                                    to: n.state(),
                                    reason: Some(reason),
                                });
                            }
                        }
                    }
                    RepairKind::Replace => {
                        if gave_up {
                            let reason = format!("healing stopped after {failures} failed repairs: {error}");
                            n.reason = Some(reason);
                            n.reason_time = Some(now);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A node registered: a replacement or resume in flight is done, and
    /// the node is on (unless it was powered down: a machine that was
    /// stopping may still say hello).
    pub(super) fn repair_registered(&mut self, i: u32, now: Time, ev: &mut Vec<Event>) {
        let n = &mut self.nodes[i as usize];
        if let Some(r) = n.repair.as_ref().filter(|r| r.kind != RepairKind::Suspend) {
            ev.push(Event::RepairDone {
                node: n.name.clone(),
                kind: r.kind,
                provider: r.provider.clone(),
                took_ms: now.saturating_sub(r.started),
            });
            n.repair = None;
            n.repair_failures = 0;
            n.repair_not_before = 0;
        }
        // Powering up, or booted late after a failed resume: on. A node
        // suspended on purpose stays off while its machine winds down.
        if n.power == Power::PoweringUp || (n.power == Power::Off && n.repair_failures > 0) {
            n.power = Power::On;
            n.repair_failures = 0;
        }
    }
}
