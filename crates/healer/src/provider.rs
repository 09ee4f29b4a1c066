//! What a provider does: tell what it knows of the nodes' machines, and
//! act on them. One trait, three providers (local processes, a site's
//! programs, AWS EC2).

use drover_core::node::RepairKind;
use futures_util::future::BoxFuture;

/// What a provider knows of one node's machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MachineState {
    /// Running and, as far as the provider can tell, healthy.
    Running,
    /// Starting (EC2 `pending`): not yet a reason to act.
    Booting,
    /// Stopped or stopping: gone until started. A stopped instance reports
    /// no impaired status; this is what the healer watches for.
    Stopped,
    /// Terminated or shutting down: gone for good.
    Terminated,
    /// Running, but its instance or system status check fails.
    Impaired,
    /// Running, with a retirement, stop or reboot scheduled by the cloud.
    Retiring,
    /// Not in the provider's listing (confirmed over two listings before
    /// the healer acts: EC2's listings are eventually consistent).
    Missing,
}

impl MachineState {
    pub fn name(self) -> &'static str {
        match self {
            MachineState::Running => "running",
            MachineState::Booting => "booting",
            MachineState::Stopped => "stopped",
            MachineState::Terminated => "terminated",
            MachineState::Impaired => "impaired",
            MachineState::Retiring => "retiring",
            MachineState::Missing => "missing",
        }
    }
}

/// One node's machine, as `describe` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub node: String,
    pub state: MachineState,
    /// The provider's name for it (an instance id, a pid), for people.
    pub id: String,
}

/// A node to act on, with the repair's idempotency token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node: String,
    pub token: String,
}

/// Restores and powers machines. Calls are idempotent by token: the same
/// call made again (by a new leader) does the work once.
pub trait Provider: Send + Sync {
    /// `local`, `command`, `aws-ec2`: in events and metrics.
    fn name(&self) -> &'static str;

    /// Whether a machine found stopped has lost the jobs that ran on it
    /// (a cloud instance has; a local agent's jobs run on without it and
    /// are taken back when it restarts).
    fn loss_kills_jobs(&self) -> bool {
        true
    }

    /// What it knows of the machines of `nodes`; a node it knows nothing
    /// of is left out (the healer then goes by the node's state alone).
    fn describe<'a>(&'a self, nodes: &'a [String]) -> BoxFuture<'a, Result<Vec<Machine>, String>>;

    /// Duties beyond the nodes, done each poll on the leader (the local
    /// provider starts its cluster's dead controllers again); returns what
    /// it did, for the log.
    fn tend(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async { Vec::new() })
    }

    /// Does `kind` to each target; one answer per target, in order: what
    /// it did, or why it could not. `waiting` is the jobs waiting for the
    /// nodes (resume), in Slurm's `SLURM_RESUME_FILE` shape.
    fn act<'a>(
        &'a self,
        kind: RepairKind,
        targets: &'a [Target],
        waiting: &'a serde_json::Value,
    ) -> BoxFuture<'a, Vec<Result<String, String>>>;
}
