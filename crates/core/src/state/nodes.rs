//! Nodes: registration, heartbeats, state changes, drains and failures,
//! and what a node's loss does to its jobs.

use super::*;

impl State {
    /// The index of node `name`, added (in every partition that names it)
    /// if the state has not seen it.
    fn node_or_new(&mut self, name: &str) -> u32 {
        if let Some(i) = self.node_index(name) {
            return i;
        }
        let i = self.nodes.len() as u32;
        self.nodes.push(Node::new(name));
        self.idx.node_by_name.insert(name.to_string(), i);
        for p in &mut self.partitions {
            if p.includes(name) {
                p.members.push(i);
            }
        }
        i
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn register_node(
        &mut self,
        name: String,
        addr: String,
        total: Resources,
        features: Vec<String>,
        known: &[(JobId, u32)],
        now: Time,
        ev: &mut Vec<Event>,
    ) -> Result<(), CommandError> {
        if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(CommandError::Invalid(format!(
                "node name '{name}' must be 1-128 letters, digits, '-', '_' or '.'"
            )));
        }
        if total.cpus == 0 {
            return Err(CommandError::Invalid(format!("node {name} registers no CPUs")));
        }
        let i = self.node_or_new(&name);
        let n = &self.nodes[i as usize];
        if !total.covers(&n.alloc) {
            return Err(CommandError::Invalid(format!(
                "node {name} registers {total} but {} is allocated on it",
                n.alloc
            )));
        }
        let before = n.state();
        let n = &mut self.nodes[i as usize];
        n.addr = addr;
        n.total = total;
        n.features = features;
        n.last_heartbeat = now;
        n.registered_at = Some(now);
        if n.status != NodeStatus::Up && !n.admin_down {
            n.status = NodeStatus::Up;
            if !n.drain && !n.fail {
                n.reason = None;
                n.reason_time = None;
            }
        }
        if n.jobs == 0 {
            n.idle_since = now;
        }
        self.repair_registered(i, now, ev);
        let n = &self.nodes[i as usize];
        let after = n.state();
        ev.push(Event::NodeRegistered { node: name.clone() });
        if before != after {
            ev.push(Event::NodeStateChanged { node: name.clone(), from: before, to: after, reason: n.reason.clone() });
        }
        // Steps the agent runs that we no longer expect: fence them off.
        for &(job, attempt) in known {
            let current = self.jobs.get(&job).is_some_and(|j| {
                j.restart_count == attempt
                    && j.state.is_active()
                    && j.alloc.as_ref().is_some_and(|a| a.shares.iter().any(|s| s.node == i))
            });
            if !current {
                ev.push(Event::StaleStep { job, attempt, node: NodeSet::new(vec![name.clone()]) });
            }
        }
        // Jobs we think run here but the agent does not know: lost.
        let lost: Vec<JobId> = self
            .idx
            .active
            .iter()
            .copied()
            .filter(|id| {
                let j = &self.jobs[id];
                j.alloc.as_ref().is_some_and(|a| a.shares.iter().any(|s| s.node == i))
                    && !known.contains(&(*id, j.restart_count))
            })
            .collect();
        for id in lost {
            self.lose_job(id, &format!("lost when node {name} restarted"), now, ev);
        }
        Ok(())
    }

    pub(super) fn define_nodes(
        &mut self,
        names: Vec<String>,
        total: Resources,
        features: Vec<String>,
        by: Requester,
        ev: &mut Vec<Event>,
    ) -> Result<(), CommandError> {
        if !by.operator {
            return Err(CommandError::PermissionDenied("defining nodes needs an operator".into()));
        }
        if names.is_empty() || names.len() > 10_000 {
            return Err(CommandError::Invalid("define 1 to 10000 nodes at a time".into()));
        }
        let bad_name = |n: &String| {
            n.is_empty() || n.len() > 128 || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if let Some(name) = names.iter().find(|n| bad_name(n)) {
            return Err(CommandError::Invalid(format!(
                "node name '{name}' must be 1-128 letters, digits, '-', '_' or '.'"
            )));
        }
        let name = &names[0];
        if total.cpus == 0 {
            return Err(CommandError::Invalid(format!("node {name} is defined with no CPUs")));
        }
        let feature_ok = |f: &String| {
            !f.is_empty() && f.len() <= 64 && f.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        };
        if features.len() > 64 || !features.iter().all(feature_ok) {
            return Err(CommandError::Invalid(format!(
                "node {name}: at most 64 features of 1-64 letters, digits, '-_.:'"
            )));
        }
        for name in names {
            self.define_node(name, total, features.clone(), ev);
        }
        Ok(())
    }

    fn define_node(&mut self, name: String, total: Resources, features: Vec<String>, ev: &mut Vec<Event>) {
        if let Some(i) = self.node_index(&name) {
            // Registered once: what its agent said stands.
            if self.nodes[i as usize].registered_at.is_some() {
                return;
            }
        }
        let i = self.node_or_new(&name);
        let n = &mut self.nodes[i as usize];
        let before = n.state();
        n.total = total;
        n.features = features;
        n.power = Power::Off;
        let after = n.state();
        if before != after {
            ev.push(Event::NodeStateChanged { node: name, from: before, to: after, reason: None });
        }
    }

    pub(super) fn node_down(&mut self, i: u32, reason: String, now: Time, ev: &mut Vec<Event>) {
        let n = &mut self.nodes[i as usize];
        if n.status == NodeStatus::Down {
            return;
        }
        let before = n.state();
        n.status = NodeStatus::Down;
        if n.power == Power::Off && n.jobs == 0 {
            // A machine powered down on purpose stops answering: expected.
            return;
        }
        n.reason = Some(reason.clone());
        n.reason_time = Some(now);
        ev.push(Event::NodeStateChanged { node: n.name.clone(), from: before, to: n.state(), reason: Some(reason) });
        let name = n.name.clone();
        let on_node: Vec<JobId> = self
            .idx
            .active
            .iter()
            .copied()
            .filter(|id| self.jobs[id].alloc.as_ref().is_some_and(|a| a.shares.iter().any(|s| s.node == i)))
            .collect();
        for id in on_node {
            self.lose_job(id, &format!("node {name} down"), now, ev);
        }
    }

    /// An active job whose node failed: requeue it if allowed, else NODE_FAIL.
    pub(super) fn lose_job(&mut self, id: JobId, why: &str, now: Time, ev: &mut Vec<Event>) {
        let j = &self.jobs[&id];
        let attempt = j.restart_count;
        // Parts of the job on healthy nodes must be killed there.
        let alive: Vec<NodeShare> = j
            .alloc
            .as_ref()
            .map(|a| {
                a.shares.iter().filter(|s| self.nodes[s.node as usize].status == NodeStatus::Up).cloned().collect()
            })
            .unwrap_or_default();
        if !alive.is_empty() && j.state != JobState::Completing {
            ev.push(Event::JobKill { job: id, attempt, nodes: node_set(&self.nodes, &alive) });
        }
        match j.end_intent {
            Some(EndIntent::Cancel) => return self.finish(id, JobState::Cancelled, None, now, ev),
            Some(EndIntent::Timeout) => return self.finish(id, JobState::Timeout, None, now, ev),
            Some(EndIntent::Requeue { hold }) => {
                return self.requeue(id, hold, 0, (JobState::Requeued, None, why), now, ev)
            }
            Some(EndIntent::Complete { .. }) | None => {}
        }
        if j.spec.requeue && j.restart_count < self.config.max_requeue {
            // The first retry is immediate (the node, not the job, failed);
            // repeated failures back off: 0, 1, 3, 7 × the base.
            let backoff = self.config.requeue_backoff_ms.saturating_mul((1u64 << j.restart_count.min(16)) - 1);
            self.requeue(id, false, backoff, (JobState::NodeFail, None, why), now, ev);
        } else {
            self.finish(id, JobState::NodeFail, None, now, ev);
        }
    }

    pub(super) fn set_node_state(
        &mut self,
        node: &str,
        action: NodeAction,
        reason: Option<String>,
        by: Requester,
        now: Time,
        ev: &mut Vec<Event>,
    ) -> Result<(), CommandError> {
        if !by.operator {
            return Err(CommandError::PermissionDenied("changing node state needs an operator".into()));
        }
        let i = self.node_index(node).ok_or_else(|| CommandError::UnknownNode(node.to_string()))?;
        let needs_reason = matches!(action, NodeAction::Drain | NodeAction::Fail | NodeAction::Down);
        let reason = reason.filter(|r| !r.trim().is_empty());
        if needs_reason && reason.is_none() {
            return Err(CommandError::Invalid(
                format!("a reason is required to {action:?} node {node}").to_lowercase(),
            ));
        }
        let n = &mut self.nodes[i as usize];
        let before = n.state();
        match action {
            NodeAction::Drain => n.drain = true,
            NodeAction::Fail => n.fail = true,
            NodeAction::Resume => {
                n.drain = false;
                n.fail = false;
                n.admin_down = false;
                // The operator fixed what the healer could not: it may try again.
                n.repair_given_up = false;
                n.repair_failures = 0;
                n.repair_not_before = 0;
            }
            NodeAction::Down => {
                n.admin_down = true;
                let r = reason.clone().unwrap_or_default();
                self.node_down(i, r, now, ev);
                return Ok(());
            }
        }
        if action == NodeAction::Resume {
            if n.status == NodeStatus::Up {
                n.reason = None;
                n.reason_time = None;
            }
        } else {
            n.reason = reason;
            n.reason_time = Some(now);
        }
        let after = n.state();
        if before != after {
            ev.push(Event::NodeStateChanged {
                node: n.name.clone(),
                from: before,
                to: after,
                reason: n.reason.clone(),
            });
        }
        Ok(())
    }
}
