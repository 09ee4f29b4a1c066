//! What can happen to the cluster: every change is a [`Command`], applied
//! by [`State::apply`](super::State::apply) or refused with a
//! [`CommandError`].

use super::*;

/// Everything that can change the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Configure(Config),
    SetPartition(PartitionSpec),
    /// A spec is shared, not owned: the job keeps this very `Arc`, and the
    /// log's copy of a just-appended entry costs no deep clone to apply.
    Submit {
        spec: Arc<JobSpec>,
        now: Time,
    },
    /// Many jobs at once: all are accepted or none.
    SubmitBatch {
        specs: Vec<Arc<JobSpec>>,
        now: Time,
    },
    Cancel {
        filter: CancelFilter,
        by: Requester,
        now: Time,
    },
    Signal {
        job: JobRef,
        signal: i32,
        by: Requester,
        now: Time,
    },
    Hold {
        job: JobRef,
        by: Requester,
        now: Time,
    },
    Release {
        job: JobRef,
        by: Requester,
        now: Time,
    },
    Requeue {
        job: JobRef,
        hold: bool,
        by: Requester,
        now: Time,
    },
    RegisterNode {
        name: String,
        addr: String,
        total: Resources,
        features: Vec<String>,
        /// Steps the agent still knows about (running, or finished and not yet
        /// reported), as (job, attempt).
        known_steps: Vec<(JobId, u32)>,
        now: Time,
    },
    Heartbeat {
        node: String,
        now: Time,
    },
    NodeDown {
        node: String,
        reason: String,
        now: Time,
    },
    SetNodeState {
        node: String,
        action: NodeAction,
        reason: Option<String>,
        by: Requester,
        now: Time,
    },
    /// The scheduler's decisions for one pass.
    Allocate {
        plan: Plan,
        now: Time,
        /// The Raft term of the leader that planned it: the controller
        /// refuses a plan committed in any other term (a fencing token, so a
        /// deposed leader's stale plan never allocates). 0 outside Raft.
        #[serde(default)]
        term: u64,
    },
    StepStarted {
        job: JobId,
        attempt: u32,
        now: Time,
    },
    StepFinished {
        job: JobId,
        attempt: u32,
        outcome: StepOutcome,
        /// The batch step's peak memory, if the agent measured it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_rss_kb: Option<u64>,
        /// The batch step's CPU time, if the agent measured it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cpu: Option<CpuTime>,
        /// Why the step ended before its script ran (its output file could
        /// not be opened, its working directory entered, its user taken
        /// on), as the agent saw it: the job's user cannot read the node's
        /// log, so the reason travels with the job.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<String>,
        /// The node whose agent reported it: a stale report names the node
        /// it came from, not where the job runs now.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        node: String,
        now: Time,
    },
    Tick {
        now: Time,
    },
    /// `srun` inside an allocation: a new step of a running job.
    CreateStep {
        job: JobRef,
        request: StepRequest,
        by: Requester,
        now: Time,
    },
    /// `srun` reports how its step ended (`cancelled`: srun was interrupted).
    EndStep {
        job: JobId,
        step: StepId,
        exit: ExitStatus,
        #[serde(default)]
        cancelled: bool,
        by: Requester,
        now: Time,
    },
    /// `srun`/`salloc` give back an allocation they made: the job ends
    /// COMPLETED (FAILED for a non-zero exit) once its nodes are clean.
    Complete {
        job: JobRef,
        exit: ExitStatus,
        by: Requester,
        now: Time,
    },
    /// `scontrol update JobId=…`.
    Update {
        job: JobRef,
        update: JobUpdate,
        by: Requester,
        now: Time,
    },
    /// These finished jobs are in the accounting database now: the writer
    /// need not write them again (and retention may prune them).
    Accounted {
        jobs: Vec<JobId>,
        /// Each job's revision as written (empty: whatever it is now). A
        /// job changed since is written again.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        revisions: Vec<u32>,
    },
    /// What one node's tasks of a step used, from its agent once they are
    /// gone. The same node reporting again replaces its own figures.
    StepUsage {
        job: JobId,
        step: StepId,
        node: String,
        max_rss_kb: u64,
        cpu: CpuTime,
    },
    /// A controller became leader (its first entry once a majority confirmed
    /// it): recorded so that every controller's history shows failovers.
    LeaderElected {
        controller: u64,
        term: u64,
        now: Time,
    },
    /// A node that exists before its machine does (Slurm's `State=CLOUD`):
    /// powered down, with the resources it will have, so that power saving
    /// can start it when jobs need it. Operators only; a node that has
    /// registered keeps what it registered. All the names or none.
    DefineNodes {
        names: Vec<String>,
        total: Resources,
        features: Vec<String>,
        by: Requester,
        now: Time,
    },
    /// The healer's intent, recorded before it calls its provider: a new
    /// leader sees it and does not act twice. Refused while another repair
    /// of the node is in flight, before the node's back-off ends, or when
    /// the node is not in a state the kind applies to.
    RepairStart {
        node: String,
        kind: RepairKind,
        provider: String,
        token: String,
        /// By when the node must be back (or, suspending, stopped).
        deadline: Time,
        now: Time,
    },
    /// What the provider answered for the repair `token` of `node`.
    RepairResult {
        node: String,
        token: String,
        outcome: RepairOutcome,
        now: Time,
    },
    /// Independent commands in one log entry (e.g. an agent's finish
    /// reports): each applies atomically on its own, in order; one that is
    /// refused becomes a `Refused` event and the rest still apply.
    Batch(Vec<Command>),
    /// A client's request, applied at most once. A client that retries after
    /// a timeout or a leader change cannot know whether its first attempt
    /// was committed; the retry names the same `request` and gets the first
    /// answer back (as [`Event::Repeated`]) instead of acting twice.
    Once {
        request: String,
        cmd: Box<Command>,
    },
    /// A change asked for with a one-time credential: refused if that
    /// credential was used before, on any controller, before or after any
    /// restart ([`crate::credentials`]).
    Credentialed {
        uid: u32,
        nonce: u64,
        expires: Time,
        cmd: Box<Command>,
    },
}

impl Command {
    /// A batch step's end as an agent reports it, with nothing measured
    /// and no failure: what tests and benchmarks mostly need.
    pub fn step_finished(job: JobId, attempt: u32, outcome: StepOutcome, now: Time) -> Command {
        Command::StepFinished {
            job,
            attempt,
            outcome,
            max_rss_kb: None,
            cpu: None,
            failure: None,
            node: String::new(),
            now,
        }
    }

    pub fn now(&self) -> Option<Time> {
        use Command::*;
        match self {
            Configure(_) | SetPartition(_) | Accounted { .. } | StepUsage { .. } => None,
            Batch(cmds) => cmds.iter().filter_map(Command::now).max(),
            Once { cmd, .. } | Credentialed { cmd, .. } => cmd.now(),
            Submit { now, .. }
            | SubmitBatch { now, .. }
            | Cancel { now, .. }
            | Signal { now, .. }
            | Hold { now, .. }
            | Release { now, .. }
            | Requeue { now, .. }
            | RegisterNode { now, .. }
            | Heartbeat { now, .. }
            | NodeDown { now, .. }
            | SetNodeState { now, .. }
            | DefineNodes { now, .. }
            | Allocate { now, .. }
            | StepStarted { now, .. }
            | StepFinished { now, .. }
            | Tick { now }
            | CreateStep { now, .. }
            | EndStep { now, .. }
            | Complete { now, .. }
            | Update { now, .. }
            | LeaderElected { now, .. }
            | RepairStart { now, .. }
            | RepairResult { now, .. } => Some(*now),
        }
    }
}

/// A provider's answer to a repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RepairOutcome {
    /// It acted (what it said, e.g. the instance started): the node has
    /// still to register, by the repair's deadline.
    Acted { detail: String },
    /// It could not. `retry_after_ms` is the healer's back-off before the
    /// next try of this node; `None`: it gives up until an operator resumes
    /// the node.
    Failed { error: String, retry_after_ms: Option<u64> },
}

/// Why a command was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    #[error("invalid partition name specified: '{name}' (partitions: {known})")]
    UnknownPartition { name: String, known: String },
    #[error("no partition given and the cluster has no default partition")]
    NoDefaultPartition,
    #[error("requested time limit {limit} exceeds the maximum {max} of partition {partition}")]
    TimeLimitExceeded { limit: String, max: String, partition: String },
    #[error("Requested node configuration is not available: {0}")]
    NoSuchNodeConfig(String),
    #[error("Job dependency problem: {0}")]
    Dependency(String),
    #[error("Invalid job id specified: {0}")]
    UnknownJob(String),
    #[error("Invalid node name specified: {0}")]
    UnknownNode(String),
    #[error("Access/permission denied: {0}")]
    PermissionDenied(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("node {0} is not registered or is down; register it first")]
    NodeNotRegistered(String),
    #[error("{0}")]
    Invalid(String),
    #[error("job {index} of the batch: {error}")]
    InBatch { index: usize, error: Box<CommandError> },
}
