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

/// Whether a node's machine is on, as the healer drives it (Slurm's power
/// saving). Only an `On` node is scheduled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Power {
    #[default]
    On,
    /// Asked to stop; nothing new starts here.
    PoweringDown,
    /// Stopped to save power; started again when jobs need it.
    Off,
    /// Asked to start; counts as capacity on the way.
    PoweringUp,
}

impl Power {
    /// The mark sinfo appends to the state (`idle~`, `idle#`, `idle%`).
    pub fn mark(self) -> &'static str {
        match self {
            Power::On => "",
            Power::PoweringDown => "%",
            Power::Off => "~",
            Power::PoweringUp => "#",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Power::On => "ON",
            Power::PoweringDown => "POWERING_DOWN",
            Power::Off => "POWERED_DOWN",
            Power::PoweringUp => "POWERING_UP",
        }
    }
}

/// What the healer does to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RepairKind {
    /// Bring a lost node back under its name: restart its agent, start a
    /// standby machine, or launch a replacement.
    Replace,
    /// Power a suspended node up for waiting jobs.
    Resume,
    /// Power an idle node down.
    Suspend,
}

impl RepairKind {
    pub fn name(self) -> &'static str {
        match self {
            RepairKind::Replace => "replace",
            RepairKind::Resume => "resume",
            RepairKind::Suspend => "suspend",
        }
    }
}

impl fmt::Display for RepairKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A repair the healer recorded before calling its provider: a new leader
/// finds it in the state and waits for it instead of acting again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    pub kind: RepairKind,
    pub provider: String,
    /// The provider call's idempotency token (EC2's `ClientToken`): the
    /// same repair retried by another leader is the same call.
    pub token: String,
    pub started: Time,
    /// By when the node must have registered (or, for a suspend, stopped);
    /// past it the repair has failed.
    pub deadline: Time,
    /// The provider answered that it acted (with what it said, e.g. an
    /// instance id); the node has still to come back.
    pub acted: Option<String>,
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
    #[serde(default)]
    pub power: Power,
    /// When it last had no jobs (power saving suspends nodes idle long).
    #[serde(default)]
    pub idle_since: Time,
    /// The healer's repair in flight, if any.
    #[serde(default)]
    pub repair: Option<Repair>,
    /// Repairs that failed in a row; reset when the node comes back.
    #[serde(default)]
    pub repair_failures: u32,
    /// No repair before this time (the healer's back-off).
    #[serde(default)]
    pub repair_not_before: Time,
    /// The healer stopped trying after repeated failures, until an
    /// operator resumes the node.
    #[serde(default)]
    pub repair_given_up: bool,
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
            power: Power::On,
            idle_since: 0,
            repair: None,
            repair_failures: 0,
            repair_not_before: 0,
            repair_given_up: false,
        }
    }

    pub fn state(&self) -> NodeState {
        // A machine stopped on purpose is idle (sinfo: `idle~`), not down;
        // one whose resume failed is down (`down~`).
        let resting = matches!(self.power, Power::Off | Power::PoweringUp) && self.repair_failures == 0;
        if resting && self.jobs == 0 && !self.fail && !self.drain {
            return NodeState::Idle;
        }
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
        self.status == NodeStatus::Up && !self.drain && !self.fail && self.power == Power::On
    }

    /// Whether its resources are known: it registered, or was defined (a
    /// cloud node, before its machine exists). Submissions are checked
    /// against these.
    pub fn described(&self) -> bool {
        self.status != NodeStatus::Unknown || self.total.cpus > 0
    }

    /// The state with its power mark, as sinfo prints it (`IDLE~`).
    pub fn state_with_power(&self) -> String {
        format!("{}{}", self.state().name(), self.power.mark())
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
