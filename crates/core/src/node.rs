//! Compute nodes: what they have, what is allocated, and the state sinfo shows.

use crate::resources::Resources;
use crate::Time;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Whether the node's agent is talking to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    /// Configured (e.g. by a partition) but never registered.
    Unknown,
    Up,
    Down,
}

/// The state sinfo and scontrol print, derived from status, flags and load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeState {
    Idle,
    Mixed,
    Allocated,
    Completing,
    Down,
    Draining,
    Drained,
    Fail,
    Unknown,
}

impl NodeState {
    pub const ALL: [NodeState; 9] = [
        NodeState::Idle,
        NodeState::Mixed,
        NodeState::Allocated,
        NodeState::Completing,
        NodeState::Down,
        NodeState::Draining,
        NodeState::Drained,
        NodeState::Fail,
        NodeState::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            NodeState::Idle => "IDLE",
            NodeState::Mixed => "MIXED",
            NodeState::Allocated => "ALLOCATED",
            NodeState::Completing => "COMPLETING",
            NodeState::Down => "DOWN",
            NodeState::Draining => "DRAINING",
            NodeState::Drained => "DRAINED",
            NodeState::Fail => "FAIL",
            NodeState::Unknown => "UNKNOWN",
        }
    }

    /// sinfo's short lower-case form.
    pub fn short(self) -> &'static str {
        match self {
            NodeState::Idle => "idle",
            NodeState::Mixed => "mix",
            NodeState::Allocated => "alloc",
            NodeState::Completing => "comp",
            NodeState::Down => "down",
            NodeState::Draining => "drng",
            NodeState::Drained => "drain",
            NodeState::Fail => "fail",
            NodeState::Unknown => "unk",
        }
    }

    pub fn parse(text: &str) -> Result<NodeState, String> {
        let t = text.trim();
        NodeState::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(t) || s.short().eq_ignore_ascii_case(t))
            .ok_or_else(|| {
                format!("unknown node state '{text}'; use idle, mixed, allocated, completing, down, draining, drained, fail or unknown")
            })
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an operator can do to a node (`scontrol update NodeName=… State=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeAction {
    /// Let running jobs finish, start nothing new.
    Drain,
    /// Like drain, but marks the node as failing hardware.
    Fail,
    /// Back to service: clears drain/fail and a DOWN set by an operator.
    Resume,
    /// Take the node out now; its jobs are requeued or fail.
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub addr: String,
    pub total: Resources,
    pub alloc: Resources,
    pub features: Vec<String>,
    pub status: NodeStatus,
    pub drain: bool,
    pub fail: bool,
    /// Set DOWN by an operator: stays down, even if its agent re-registers,
    /// until resumed.
    pub admin_down: bool,
    pub reason: Option<String>,
    pub reason_time: Option<Time>,
    pub last_heartbeat: Time,
    pub registered_at: Option<Time>,
    /// Jobs holding resources here (running, suspended or completing).
    pub jobs: u32,
    /// Of those, the ones being killed.
    pub completing: u32,
}

impl Node {
    pub fn new(name: &str) -> Node {
        Node {
            name: name.to_string(),
            addr: String::new(),
            total: Resources::ZERO,
            alloc: Resources::ZERO,
            features: Vec::new(),
            status: NodeStatus::Unknown,
            drain: false,
            fail: false,
            admin_down: false,
            reason: None,
            reason_time: None,
            last_heartbeat: 0,
            registered_at: None,
            jobs: 0,
            completing: 0,
        }
    }

    pub fn state(&self) -> NodeState {
        match self.status {
            NodeStatus::Unknown => return NodeState::Unknown,
            NodeStatus::Down if self.fail => return NodeState::Fail,
            NodeStatus::Down => return NodeState::Down,
            NodeStatus::Up => {}
        }
        if self.fail {
            return NodeState::Fail;
        }
        if self.drain {
            return if self.jobs > 0 { NodeState::Draining } else { NodeState::Drained };
        }
        if self.completing > 0 {
            NodeState::Completing
        } else if self.jobs == 0 {
            NodeState::Idle
        } else if self.alloc.cpus >= self.total.cpus {
            NodeState::Allocated
        } else {
            NodeState::Mixed
        }
    }

    /// Whether the scheduler may start new work here.
    pub fn schedulable(&self) -> bool {
        self.status == NodeStatus::Up && !self.drain && !self.fail
    }

    pub fn free(&self) -> Resources {
        self.total.saturating_sub(&self.alloc)
    }

    /// Whether the node has every feature a `--constraint` asks for:
    /// `a`, `a&b` (all), `a|b` (any).
    pub fn satisfies(&self, constraint: &str) -> bool {
        let has = |f: &str| self.features.iter().any(|x| x == f.trim());
        if constraint.contains('|') {
            constraint.split('|').any(has)
        } else {
            constraint.split(['&', ',']).all(has)
        }
    }
}
