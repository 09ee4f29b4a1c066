//! The cluster state machine.
//!
//! Every change to the cluster is a [`Command`]; [`State::apply`] turns one
//! into a new state and the [`Event`]s that happened. It is deterministic —
//! no clock, no randomness, no I/O, no iteration over hash maps — so
//! replaying a command log always yields the same state. That is the whole
//! basis of Drover's durability and replication: the Raft log *is* the list
//! of commands.
//!
//! A command either applies completely or returns a [`CommandError`] and
//! changes nothing. Commands that act on many things at once (a cancel of
//! many jobs, a scheduling plan) report the parts they could not do as
//! events instead, so one bad item does not block the rest.

use crate::array::TaskSet;
use crate::changes::{Changes, Tracked};
use crate::dependency::{DepKind, Dependency};
use crate::hostlist::{self, NodeSet};
use crate::job::{
    Allocation, ArrayTask, CpuTime, EndIntent, ExitStatus, Job, JobId, JobRef, JobSpec, JobState, NodeShare,
    PastAttempt, PendingReason,
};
use crate::node::{Node, NodeAction, NodeState, NodeStatus};
use crate::partition::{Partition, PartitionSpec};
use crate::resources::Resources;
use crate::sched::{self, JobKey, Plan};
use crate::step::{JobStep, JobUpdate, StepId, StepRequest};
use crate::Time;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

/// Cluster-wide settings that change behaviour of the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub cluster_name: String,
    /// A node whose last heartbeat is older than this goes DOWN on the next
    /// `Tick`. `None` leaves liveness to whoever sends `NodeDown`.
    pub node_timeout_ms: Option<u64>,
    /// How many times a job is requeued after node failures before it ends
    /// NODE_FAIL.
    pub max_requeue: u32,
    /// The base wait before a job requeued after a node failure may start
    /// again: none the first time, then 1, 3, 7 … times this.
    pub requeue_backoff_ms: u64,
    /// How long a job may overrun its limit before `Tick` ends it. Agents
    /// enforce limits themselves; this catches agents that cannot.
    pub over_time_grace_ms: u64,
    /// Finished jobs stay in the state this long after they end, once the
    /// accounting writer has them (Slurm's MinJobAge); 0 keeps them forever.
    #[serde(default = "default_min_job_age_ms")]
    pub min_job_age_ms: u64,
}

fn default_min_job_age_ms() -> u64 {
    300_000
}

impl Default for Config {
    fn default() -> Config {
        Config {
            cluster_name: "drover".into(),
            node_timeout_ms: Some(10_000),
            max_requeue: 3,
            requeue_backoff_ms: 1_000,
            over_time_grace_ms: 30_000,
            min_job_age_ms: default_min_job_age_ms(),
        }
    }
}

/// Who asks: decides which jobs and nodes a command may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    pub uid: u32,
    /// Root or a configured operator: may act on every job and node.
    pub operator: bool,
}

impl Requester {
    pub const ROOT: Requester = Requester { uid: 0, operator: true };

    pub fn user(uid: u32) -> Requester {
        Requester { uid, operator: uid == 0 }
    }

    pub fn may_touch(&self, owner_uid: u32) -> bool {
        self.operator || self.uid == owner_uid
    }
}

/// Which jobs a cancel acts on. Empty fields match everything (and may be
/// left out of JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CancelFilter {
    pub jobs: Vec<JobRef>,
    pub user: Option<String>,
    pub states: Vec<JobState>,
    pub name: Option<String>,
    pub partition: Option<String>,
}

/// How a job's batch step ended, as its agent saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepOutcome {
    Exited(i32),
    Signaled(i32),
    OutOfMemory,
    TimedOut,
    /// Killed by its node's fence (the agent went silent): the node, not
    /// the job, failed, so the job is requeued like one on a DOWN node.
    Lost,
}

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
            | Allocate { now, .. }
            | StepStarted { now, .. }
            | StepFinished { now, .. }
            | Tick { now }
            | CreateStep { now, .. }
            | EndStep { now, .. }
            | Complete { now, .. }
            | Update { now, .. }
            | LeaderElected { now, .. } => Some(*now),
        }
    }
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

/// What happened. Events are the state machine's only output: the controller
/// turns them into launch and kill orders for agents, into the event stream,
/// metrics and accounting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    JobSubmitted {
        job: JobId,
        array_tasks: Option<u64>,
    },
    /// Also the launch order: the agents of `nodes` start attempt `attempt`.
    JobStarted {
        job: JobId,
        display: String,
        attempt: u32,
        nodes: NodeSet,
    },
    /// Kill order: the agents of `nodes` signal, wait, then kill the job.
    JobKill {
        job: JobId,
        attempt: u32,
        nodes: NodeSet,
    },
    JobSignal {
        job: JobId,
        attempt: u32,
        nodes: NodeSet,
        signal: i32,
    },
    JobFinished {
        job: JobId,
        display: String,
        state: JobState,
        exit: Option<ExitStatus>,
        /// Why it could not start, when it could not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    JobRequeued {
        job: JobId,
        display: String,
        restart_count: u32,
        reason: String,
    },
    JobHeld {
        job: String,
    },
    JobReleased {
        job: String,
    },
    ArrayTasksCancelled {
        array: JobId,
        tasks: String,
    },
    NodeRegistered {
        node: String,
    },
    NodeStateChanged {
        node: String,
        from: NodeState,
        to: NodeState,
        reason: Option<String>,
    },
    AllocationRejected {
        job: String,
        reason: String,
    },
    LeaderElected {
        controller: u64,
        term: u64,
    },
    StepCreated {
        job: JobId,
        attempt: u32,
        step: StepId,
        nodes: NodeSet,
        tasks: u32,
    },
    StepEnded {
        job: JobId,
        step: StepId,
        state: JobState,
        exit: Option<ExitStatus>,
    },
    JobUpdated {
        job: String,
        change: String,
    },
    /// Finished jobs past `min_job_age`, already in accounting, left the
    /// state (whole arrays at once).
    JobsPruned {
        count: usize,
    },
    /// A running job's new time limit (seconds, `None` unlimited), for the
    /// agents that enforce it.
    JobTimeLimit {
        job: JobId,
        attempt: u32,
        nodes: NodeSet,
        limit: Option<u64>,
    },
    /// A report or a running step from an older attempt: the agent must kill
    /// it (fencing by allocation epoch).
    StaleStep {
        job: JobId,
        attempt: u32,
        node: NodeSet,
    },
    /// One item of a many-item command was not done.
    Refused {
        target: String,
        reason: String,
    },
    /// A retried [`Command::Once`]: nothing happened now; `answer` is what
    /// the first attempt did. Followers of the event stream ignore it.
    Repeated {
        request: String,
        answer: Vec<Event>,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Event::*;
        match self {
            JobSubmitted { job, array_tasks: None } => write!(f, "submitted {job}"),
            JobSubmitted { job, array_tasks: Some(n) } => write!(f, "submitted {job} array of {n}"),
            JobStarted { display, attempt, nodes, .. } => write!(f, "started {display} on {nodes} attempt={attempt}"),
            JobKill { job, attempt, nodes } => write!(f, "kill {job} on {nodes} attempt={attempt}"),
            JobSignal { job, nodes, signal, .. } => write!(f, "signal {job} on {nodes} sig={signal}"),
            JobFinished { display, state, exit, reason, .. } => {
                write!(f, "finished {display} {state}")?;
                if let Some(e) = exit {
                    write!(f, " exit={e}")?;
                }
                match reason {
                    Some(r) => write!(f, " ({r})"),
                    None => Ok(()),
                }
            }
            JobRequeued { display, restart_count, reason, .. } => {
                write!(f, "requeued {display} restarts={restart_count} ({reason})")
            }
            JobHeld { job } => write!(f, "held {job}"),
            JobReleased { job } => write!(f, "released {job}"),
            ArrayTasksCancelled { array, tasks } if tasks.bytes().all(|b| b.is_ascii_digit()) => {
                write!(f, "cancelled {array}_{tasks}")
            }
            ArrayTasksCancelled { array, tasks } => write!(f, "cancelled {array}_[{tasks}]"),
            NodeRegistered { node } => write!(f, "registered {node}"),
            NodeStateChanged { node, from, to, reason } => {
                write!(f, "node {node} {from} -> {to}")?;
                match reason {
                    Some(r) => write!(f, " ({r})"),
                    None => Ok(()),
                }
            }
            AllocationRejected { job, reason } => write!(f, "rejected allocation of {job}: {reason}"),
            LeaderElected { controller, term } => write!(f, "controller {controller} leads in term {term}"),
            StepCreated { job, step, nodes, tasks, .. } => write!(f, "step {job}.{step} of {tasks} tasks on {nodes}"),
            StepEnded { job, step, state, exit } => match exit {
                Some(e) => write!(f, "step {job}.{step} {state} exit={e}"),
                None => write!(f, "step {job}.{step} {state}"),
            },
            JobUpdated { job, change } => write!(f, "updated {job}: {change}"),
            JobsPruned { count } => write!(f, "pruned {count} finished jobs"),
            JobTimeLimit { job, limit, .. } => match limit {
                Some(l) => write!(f, "time limit of {job} now {}", crate::time::format_duration(*l)),
                None => write!(f, "time limit of {job} now UNLIMITED"),
            },
            StaleStep { job, attempt, node } if node.is_empty() => write!(f, "stale step {job} attempt={attempt}"),
            StaleStep { job, attempt, node } => write!(f, "stale step {job} attempt={attempt} on {node}"),
            Refused { target, reason } => write!(f, "refused {target}: {reason}"),
            Repeated { request, answer } => {
                write!(f, "repeated {request}:")?;
                answer.iter().try_for_each(|e| write!(f, " [{e}]"))
            }
        }
    }
}

/// The rest of an array that has not started yet: one record, however many
/// tasks, until each task is split off into its own [`Job`] when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayJob {
    pub id: JobId,
    pub spec: Arc<JobSpec>,
    /// Tasks not yet split off.
    pub pending: TaskSet,
    pub reason: PendingReason,
    pub held_by_admin: Option<bool>,
    pub submit_time: Time,
    pub eligible_time: Time,
    pub total: u64,
    /// Job ids of the tasks split off so far, in split order.
    pub split_ids: Vec<JobId>,
    /// Split tasks holding resources now (what the `%N` throttle counts).
    pub active: u32,
    /// Tasks that reached a terminal state (incl. cancelled before starting).
    pub ended: u64,
    pub ended_ok: u64,
    pub started: bool,
}

/// Whether a job's dependency allows it to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepStatus {
    Satisfied,
    Waiting,
    Never,
}

/// Persistent state; see [`State::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub config: Config,
    pub next_job_id: JobId,
    pub now: Time,
    pub jobs: Vec<Job>,
    pub arrays: Vec<ArrayJob>,
    pub nodes: Vec<Node>,
    pub partitions: Vec<Partition>,
    /// Recent answers to [`Command::Once`] requests.
    #[serde(default)]
    pub answered: Vec<Answered>,
    /// Credentials used in commands and not yet expired.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_credentials: Vec<crate::credentials::UsedCredential>,
}

/// The first answer to a [`Command::Once`] request, kept for
/// [`ANSWER_KEEP_MS`] after it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answered {
    pub request: String,
    pub at: Time,
    pub answer: Result<Vec<Event>, CommandError>,
}

/// How long a request's answer is remembered: far longer than any client
/// keeps retrying.
pub const ANSWER_KEEP_MS: Time = 2 * 60 * 1000;

/// The longest start failure a job keeps: an agent's message, bounded so
/// that a path or an error chain cannot grow the state without end.
pub const MAX_FAILURE_LEN: usize = 512;

/// `text` cut to at most `max` bytes on a character boundary, control
/// characters (a newline from an agent) made spaces.
fn bounded_text(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Lookup structures rebuilt from the persistent state; never serialised.
#[derive(Debug, Clone, Default)]
struct Indexes {
    node_by_name: HashMap<String, u32>,
    pending: BTreeSet<JobId>,
    active: BTreeSet<JobId>,
    arrays_pending: BTreeSet<JobId>,
    task_ids: HashMap<(JobId, u32), JobId>,
    /// Finished jobs not yet in the accounting database.
    unaccounted: BTreeSet<JobId>,
}

/// The whole cluster: jobs, arrays, nodes, partitions.
#[derive(Debug, Clone)]
pub struct State {
    config: Config,
    next_job_id: JobId,
    /// The latest time any command carried.
    now: Time,
    jobs: Tracked<Job>,
    arrays: Tracked<ArrayJob>,
    nodes: Vec<Node>,
    partitions: Vec<Partition>,
    /// The partitions changed since [`State::take_changes`] last asked.
    partitions_changed: bool,
    /// Answers to `Once` requests, by request, oldest first in `answer_order`.
    answered: HashMap<String, Answered>,
    answer_order: std::collections::VecDeque<(Time, String)>,
    used_credentials: crate::credentials::UsedCredentials,
    idx: Indexes,
}

impl Default for State {
    fn default() -> State {
        State::new(Config::default())
    }
}

impl PartialEq for State {
    fn eq(&self, other: &State) -> bool {
        self.snapshot() == other.snapshot()
    }
}

fn node_set(nodes: &[Node], shares: &[NodeShare]) -> NodeSet {
    NodeSet::new(shares.iter().map(|s| nodes[s.node as usize].name.clone()).collect())
}

impl State {
    pub fn new(config: Config) -> State {
        State {
            config,
            next_job_id: 1,
            now: 0,
            jobs: Tracked::default(),
            arrays: Tracked::default(),
            nodes: Vec::new(),
            partitions: Vec::new(),
            partitions_changed: false,
            answered: HashMap::new(),
            answer_order: std::collections::VecDeque::new(),
            used_credentials: Default::default(),
            idx: Indexes::default(),
        }
    }

    // ---- reading ----

    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn now(&self) -> Time {
        self.now
    }
    pub fn next_job_id(&self) -> JobId {
        self.next_job_id
    }
    pub fn jobs(&self) -> &BTreeMap<JobId, Job> {
        &self.jobs
    }
    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(&id)
    }
    pub fn arrays(&self) -> &BTreeMap<JobId, ArrayJob> {
        &self.arrays
    }
    pub fn array(&self, id: JobId) -> Option<&ArrayJob> {
        self.arrays.get(&id)
    }
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.node_index(name).map(|i| &self.nodes[i as usize])
    }
    pub fn node_index(&self, name: &str) -> Option<u32> {
        self.idx.node_by_name.get(name).copied()
    }
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }
    pub fn partition(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name() == name)
    }
    pub fn default_partition(&self) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.spec.is_default)
    }
    /// Pending jobs (not counting unsplit array tasks), by id.
    pub fn pending_ids(&self) -> &BTreeSet<JobId> {
        &self.idx.pending
    }
    /// Jobs holding resources, by id.
    pub fn active_ids(&self) -> &BTreeSet<JobId> {
        &self.idx.active
    }
    /// Finished jobs the accounting writer has still to write, by id.
    pub fn unaccounted_ids(&self) -> &BTreeSet<JobId> {
        &self.idx.unaccounted
    }
    /// Arrays that still have unsplit pending tasks.
    pub fn arrays_pending(&self) -> &BTreeSet<JobId> {
        &self.idx.arrays_pending
    }
    /// The job id of an array task that has been split off.
    pub fn task_job_id(&self, array: JobId, task: u32) -> Option<JobId> {
        self.idx.task_ids.get(&(array, task)).copied()
    }

    /// The partition a spec runs in: its own, else the default.
    pub fn partition_for(&self, spec: &JobSpec) -> Result<&Partition, CommandError> {
        match &spec.partition {
            Some(name) => self.partition(name).ok_or_else(|| CommandError::UnknownPartition {
                name: name.clone(),
                known: self.partitions.iter().map(|p| p.name()).collect::<Vec<_>>().join(","),
            }),
            None => self.default_partition().ok_or(CommandError::NoDefaultPartition),
        }
    }

    // ---- changes ----

    /// Starts recording which jobs and arrays commands change, for
    /// [`State::take_changes`]. Off by default, and not part of snapshots.
    pub fn track_changes(&mut self) {
        self.jobs.track();
        self.arrays.track();
    }

    /// What changed since the last call (or since [`State::track_changes`]).
    pub fn take_changes(&mut self) -> Changes {
        Changes {
            jobs: self.jobs.take_touched(),
            arrays: self.arrays.take_touched(),
            all: std::mem::take(&mut self.partitions_changed),
        }
    }

    // ---- snapshots ----

    /// Everything needed to rebuild this state exactly.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            config: self.config.clone(),
            next_job_id: self.next_job_id,
            now: self.now,
            jobs: self.jobs.values().cloned().collect(),
            arrays: self.arrays.values().cloned().collect(),
            nodes: self.nodes.clone(),
            partitions: self.partitions.clone(),
            answered: self.answer_order.iter().filter_map(|(_, r)| self.answered.get(r).cloned()).collect(),
            used_credentials: self.used_credentials.to_list(),
        }
    }

    pub fn restore(s: Snapshot) -> State {
        let mut st = State {
            config: s.config,
            next_job_id: s.next_job_id,
            now: s.now,
            jobs: s.jobs.into_iter().map(|j| (j.id, j)).collect(),
            arrays: s.arrays.into_iter().map(|a| (a.id, a)).collect(),
            nodes: s.nodes,
            partitions: s.partitions,
            partitions_changed: false,
            answer_order: s.answered.iter().map(|a| (a.at, a.request.clone())).collect(),
            answered: s.answered.into_iter().map(|a| (a.request.clone(), a)).collect(),
            used_credentials: crate::credentials::UsedCredentials::from_list(s.used_credentials),
            idx: Indexes::default(),
        };
        st.rebuild_indexes();
        st
    }

    fn rebuild_indexes(&mut self) {
        let mut idx = Indexes::default();
        for (i, n) in self.nodes.iter().enumerate() {
            idx.node_by_name.insert(n.name.clone(), i as u32);
        }
        for job in self.jobs.values() {
            if job.state == JobState::Pending {
                idx.pending.insert(job.id);
            } else if job.state.is_active() {
                idx.active.insert(job.id);
            }
            if let Some(a) = job.array {
                idx.task_ids.insert((a.array_id, a.task), job.id);
            }
            if job.wants_accounting() {
                idx.unaccounted.insert(job.id);
            }
        }
        for a in self.arrays.values() {
            if !a.pending.is_empty() {
                idx.arrays_pending.insert(a.id);
            }
        }
        self.idx = idx;
    }

    /// Checks every invariant; used by tests after each command.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut alloc = vec![Resources::ZERO; self.nodes.len()];
        let mut jobs_on = vec![0u32; self.nodes.len()];
        let mut completing_on = vec![0u32; self.nodes.len()];
        for job in self.jobs.values() {
            if job.failure.as_ref().is_some_and(|f| f.len() > MAX_FAILURE_LEN || f.contains(char::is_control)) {
                return Err(format!("job {}'s start failure is unbounded or has control characters", job.id));
            }
            let in_pending = self.idx.pending.contains(&job.id);
            let in_active = self.idx.active.contains(&job.id);
            match job.state {
                JobState::Pending if !in_pending || in_active => return Err(format!("job {} index mismatch", job.id)),
                s if s.is_active() && (!in_active || in_pending) => {
                    return Err(format!("job {} index mismatch", job.id))
                }
                s if s.is_terminal() && (in_active || in_pending) => {
                    return Err(format!("job {} index mismatch", job.id))
                }
                _ => {}
            }
            if job.wants_accounting() != self.idx.unaccounted.contains(&job.id) {
                return Err(format!("job {} accounting index mismatch", job.id));
            }
            if job.state.is_active() {
                let a = job.alloc.as_ref().ok_or(format!("active job {} has no allocation", job.id))?;
                for s in &a.shares {
                    let i = s.node as usize;
                    alloc[i] = alloc[i].add(&s.res);
                    jobs_on[i] += 1;
                    if job.state == JobState::Completing {
                        completing_on[i] += 1;
                    }
                }
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.alloc != alloc[i] || n.jobs != jobs_on[i] || n.completing != completing_on[i] {
                return Err(format!(
                    "node {} books {} ({} jobs) but its jobs hold {} ({} jobs)",
                    n.name, n.alloc, n.jobs, alloc[i], jobs_on[i]
                ));
            }
            if !n.total.covers(&n.alloc) {
                return Err(format!("node {} over-committed: {} of {}", n.name, n.alloc, n.total));
            }
        }
        for a in self.arrays.values() {
            let split = a.split_ids.len() as u64;
            if a.pending.len() + split + (a.ended - self.ended_split(a)) != a.total {
                return Err(format!("array {} task counts do not add up", a.id));
            }
            if self.idx.arrays_pending.contains(&a.id) == a.pending.is_empty() {
                return Err(format!("array {} pending index mismatch", a.id));
            }
            let active = a.split_ids.iter().filter(|id| self.jobs[id].state.is_active()).count() as u32;
            if active != a.active {
                return Err(format!("array {} counts {} active tasks, has {}", a.id, a.active, active));
            }
        }
        Ok(())
    }

    fn ended_split(&self, a: &ArrayJob) -> u64 {
        a.split_ids.iter().filter(|id| self.jobs[id].state.is_terminal()).count() as u64
    }

    // ---- applying ----

    /// Applies one command. On error nothing has changed (except that a
    /// [`Command::Once`] request remembers its answer).
    pub fn apply(&mut self, cmd: Command) -> Result<Vec<Event>, CommandError> {
        let now = cmd.now();
        let events = self.apply_inner(cmd)?;
        if let Some(now) = now {
            self.now = self.now.max(now);
        }
        Ok(events)
    }

    fn apply_inner(&mut self, cmd: Command) -> Result<Vec<Event>, CommandError> {
        let mut ev = Vec::new();
        match cmd {
            Command::Configure(config) => {
                if config.max_requeue > 1000 {
                    return Err(CommandError::Invalid("max_requeue above 1000".into()));
                }
                self.config = config;
            }
            Command::SetPartition(spec) => self.set_partition(spec)?,
            Command::Submit { spec, now } => {
                self.validate_submit(&spec)?;
                self.submit(spec, now, &mut ev);
            }
            Command::SubmitBatch { specs, now } => {
                for (index, spec) in specs.iter().enumerate() {
                    self.validate_submit(spec).map_err(|e| CommandError::InBatch { index, error: Box::new(e) })?;
                }
                for spec in specs {
                    self.submit(spec, now, &mut ev);
                }
            }
            Command::Cancel { filter, by, now } => self.cancel(&filter, by, now, &mut ev)?,
            Command::Signal { job, signal, by, .. } => {
                let id = self.own_running(&job, by, |s| s == JobState::Running)?;
                let j = &self.jobs[&id];
                let alloc = j.alloc.as_ref().expect("running jobs have allocations");
                ev.push(Event::JobSignal {
                    job: id,
                    attempt: j.restart_count,
                    nodes: node_set(&self.nodes, &alloc.shares),
                    signal,
                });
            }
            Command::Hold { job, by, .. } => self.hold(&job, by, &mut ev)?,
            Command::Release { job, by, .. } => self.release(&job, by, &mut ev)?,
            Command::Requeue { job, hold, by, .. } => {
                let id = self.resolve_started(&job)?;
                let j = &self.jobs[&id];
                if !by.may_touch(j.spec.uid) {
                    return Err(CommandError::PermissionDenied(format!("job {job} belongs to {}", j.spec.user)));
                }
                if j.state != JobState::Running && j.state != JobState::Suspended {
                    return Err(CommandError::InvalidState(format!(
                        "job {job} is {}; only running jobs can be requeued",
                        j.state
                    )));
                }
                self.begin_kill(id, EndIntent::Requeue { hold }, &mut ev);
            }
            Command::RegisterNode { name, addr, total, features, known_steps, now } => {
                self.register_node(name, addr, total, features, &known_steps, now, &mut ev)?
            }
            Command::Heartbeat { node, now } => {
                let i = self.node_index(&node).ok_or_else(|| CommandError::NodeNotRegistered(node.clone()))?;
                let n = &mut self.nodes[i as usize];
                if n.status != NodeStatus::Up {
                    return Err(CommandError::NodeNotRegistered(node));
                }
                n.last_heartbeat = n.last_heartbeat.max(now);
            }
            Command::NodeDown { node, reason, now } => {
                let i = self.node_index(&node).ok_or(CommandError::UnknownNode(node))?;
                self.node_down(i, reason, now, &mut ev);
            }
            Command::SetNodeState { node, action, reason, by, now } => {
                self.set_node_state(&node, action, reason, by, now, &mut ev)?
            }
            Command::Allocate { plan, now, .. } => self.allocate(plan, now, &mut ev),
            Command::StepStarted { job, attempt, .. } => {
                let j = self.jobs.get(&job).ok_or_else(|| CommandError::UnknownJob(job.to_string()))?;
                if j.restart_count != attempt || !j.state.is_active() {
                    ev.push(self.stale(job, attempt, String::new()));
                }
            }
            Command::StepFinished { job, attempt, outcome, max_rss_kb, cpu, failure, node, now } => {
                let j = self.jobs.get(&job).ok_or_else(|| CommandError::UnknownJob(job.to_string()))?;
                if j.restart_count != attempt || !j.state.is_active() {
                    ev.push(self.stale(job, attempt, node));
                } else {
                    let j = self.jobs.get_mut(&job).expect("checked");
                    j.max_rss_kb = max_rss_kb;
                    j.cpu_time = cpu;
                    j.failure = failure.map(|f| bounded_text(&f, MAX_FAILURE_LEN));
                    self.step_finished(job, outcome, now, &mut ev);
                }
            }
            Command::Tick { now } => self.tick(now, &mut ev),
            Command::CreateStep { job, request, by, now } => self.create_step(&job, request, by, now, &mut ev)?,
            Command::EndStep { job, step, exit, cancelled, by, now } => {
                self.end_step(job, step, (exit, cancelled), by, now, &mut ev)?
            }
            Command::Complete { job, exit, by, .. } => {
                let id = self.own_running(&job, by, JobState::is_active)?;
                self.begin_kill(id, EndIntent::Complete { exit }, &mut ev);
            }
            Command::Update { job, update, by, .. } => self.update(&job, update, by, &mut ev)?,
            Command::Accounted { jobs, revisions } => {
                for (k, id) in jobs.into_iter().enumerate() {
                    let Some(j) = self.jobs.get_mut(&id) else { continue };
                    let current = revisions.get(k).is_none_or(|&r| r == j.revision);
                    if current && j.wants_accounting() {
                        j.accounted = true;
                        self.idx.unaccounted.remove(&id);
                    }
                }
            }
            Command::StepUsage { job, step, node, max_rss_kb, cpu } => {
                let node = self.node_index(&node).ok_or(CommandError::UnknownNode(node))?;
                let j = self.jobs.get_mut(&job).ok_or_else(|| CommandError::UnknownJob(job.to_string()))?;
                let s = j
                    .steps
                    .iter_mut()
                    .find(|s| s.id == step)
                    .ok_or_else(|| CommandError::UnknownJob(format!("{job}.{step}")))?;
                if !s.nodes.contains(&node) {
                    return Err(CommandError::Invalid(format!("step {job}.{step} did not run on that node")));
                }
                s.record_use(crate::step::NodeUse { node, max_rss_kb, cpu });
                // What accounting wrote, or is writing, lacks this.
                j.revision += 1;
                j.accounted = false;
                if j.wants_accounting() {
                    self.idx.unaccounted.insert(job);
                }
            }
            Command::LeaderElected { controller, term, .. } => ev.push(Event::LeaderElected { controller, term }),
            Command::Once { request, cmd } => ev = self.apply_once(request, *cmd)?,
            Command::Credentialed { uid, nonce, expires, cmd } => {
                if matches!(*cmd, Command::Once { .. } | Command::Credentialed { .. } | Command::Batch(_)) {
                    return Err(CommandError::Invalid("a credential wraps one command".into()));
                }
                let at = cmd.now().unwrap_or(self.now).max(self.now);
                if !self.used_credentials.use_once(uid, nonce, expires, at) {
                    return Err(CommandError::PermissionDenied("credential was already used (replayed)".into()));
                }
                ev = self.apply(*cmd)?;
            }
            Command::Batch(cmds) => {
                for (i, cmd) in cmds.into_iter().enumerate() {
                    if matches!(cmd, Command::Batch(_)) {
                        ev.push(Event::Refused {
                            target: format!("command {i}"),
                            reason: "batches do not nest".into(),
                        });
                        continue;
                    }
                    match self.apply(cmd) {
                        Ok(events) => ev.extend(events),
                        Err(e) => ev.push(Event::Refused { target: format!("command {i}"), reason: e.to_string() }),
                    }
                }
            }
        }
        Ok(ev)
    }

    fn apply_once(&mut self, request: String, cmd: Command) -> Result<Vec<Event>, CommandError> {
        if matches!(cmd, Command::Once { .. }) {
            return Err(CommandError::Invalid("requests do not nest".into()));
        }
        if let Some(first) = self.answered.get(&request) {
            return first.answer.clone().map(|answer| vec![Event::Repeated { request, answer }]);
        }
        let at = cmd.now().unwrap_or(self.now).max(self.now);
        let answer = self.apply(cmd);
        while self.answer_order.front().is_some_and(|(t, _)| t.saturating_add(ANSWER_KEEP_MS) < at) {
            if let Some((_, old)) = self.answer_order.pop_front() {
                self.answered.remove(&old);
            }
        }
        self.answer_order.push_back((at, request.clone()));
        self.answered.insert(request.clone(), Answered { request, at, answer: answer.clone() });
        answer
    }

    /// A report for a run that is not the job's current one. `reporter`: the
    /// node it came from, when known; else the nodes of the job's current
    /// run (which may not be where that stale step is).
    fn stale(&self, job: JobId, attempt: u32, reporter: String) -> Event {
        if !reporter.is_empty() {
            return Event::StaleStep { job, attempt, node: NodeSet::new(vec![reporter]) };
        }
        let node = self
            .jobs
            .get(&job)
            .and_then(|j| j.alloc.as_ref())
            .map(|a| node_set(&self.nodes, &a.shares))
            .unwrap_or_default();
        Event::StaleStep { job, attempt, node }
    }

    // ---- partitions ----

    fn set_partition(&mut self, spec: PartitionSpec) -> Result<(), CommandError> {
        let mut p = Partition::new(spec).map_err(CommandError::Invalid)?;
        self.partitions_changed = true;
        p.members = (0..self.nodes.len() as u32).filter(|&i| p.includes(&self.nodes[i as usize].name)).collect();
        if p.spec.is_default {
            for other in &mut self.partitions {
                other.spec.is_default = false;
            }
        }
        match self.partitions.iter_mut().find(|x| x.name() == p.name()) {
            Some(existing) => *existing = p,
            None => {
                self.partitions.push(p);
                self.partitions.sort_by(|a, b| a.name().cmp(b.name()));
            }
        }
        Ok(())
    }

    // ---- submission ----

    /// Whether `spec` would be accepted by a `Submit` now, without
    /// submitting it (`sbatch --test-only`).
    pub fn check_submit(&self, spec: &JobSpec) -> Result<(), CommandError> {
        self.validate_submit(spec)
    }

    fn validate_submit(&self, spec: &JobSpec) -> Result<(), CommandError> {
        // First: nothing below may meet a value outside these bounds.
        crate::limits::SpecLimits::CEILING.check(spec).map_err(CommandError::Invalid)?;
        let part = self.partition_for(spec)?;
        if let (Some(limit), Some(max)) = (spec.time_limit, part.spec.max_time) {
            if limit > max {
                return Err(CommandError::TimeLimitExceeded {
                    limit: crate::time::format_duration(limit),
                    max: crate::time::format_duration(max),
                    partition: part.name().to_string(),
                });
            }
        }
        for n in spec.nodelist.iter().chain(&spec.exclude) {
            if self.node_index(n).is_none() {
                return Err(CommandError::UnknownNode(n.clone()));
            }
        }
        if spec.ntasks == 0 || spec.cpus_per_task == 0 || spec.nodes_min == 0 || spec.nodes_min > spec.nodes_max {
            return Err(CommandError::Invalid("tasks, CPUs per task and nodes must be at least 1".into()));
        }
        // A request no node could ever hold is refused now, not left pending
        // forever. Nodes count even while down: they may come back.
        let registered = part.members.iter().any(|&i| self.nodes[i as usize].status != NodeStatus::Unknown);
        if registered && sched::place_on_empty(self, spec, part).is_none() {
            return Err(CommandError::NoSuchNodeConfig(sched::describe_misfit(self, spec, part)));
        }
        if let Some(dep) = &spec.dependency {
            self.validate_dependency(dep)?;
        }
        Ok(())
    }

    fn validate_dependency(&self, dep: &Dependency) -> Result<(), CommandError> {
        for c in &dep.conditions {
            let Some(r) = &c.job else { continue };
            let known = match r.task {
                None => self.jobs.contains_key(&r.id) || self.arrays.contains_key(&r.id),
                Some(t) => {
                    self.arrays.get(&r.id).is_some_and(|a| a.spec.array.as_ref().is_some_and(|s| s.tasks.contains(t)))
                }
            };
            if !known {
                return Err(CommandError::Dependency(format!("job {r} does not exist")));
            }
            if c.kind == DepKind::AfterCorr && (r.task.is_some() || !self.arrays.contains_key(&r.id)) {
                return Err(CommandError::Dependency(format!("aftercorr needs a whole array, {r} is not one")));
            }
        }
        Ok(())
    }

    fn submit(&mut self, spec: Arc<JobSpec>, now: Time, ev: &mut Vec<Event>) {
        let id = self.next_job_id;
        self.next_job_id += 1;
        let eligible_time = spec.begin.map_or(now, crate::secs);
        let held = spec.hold.then_some(false);
        let reason = if spec.hold { PendingReason::JobHeldUser } else { PendingReason::None };
        if let Some(array) = &spec.array {
            let tasks = array.tasks.clone();
            let total = tasks.len();
            self.arrays.insert(
                id,
                ArrayJob {
                    id,
                    spec,
                    pending: tasks,
                    reason,
                    held_by_admin: held,
                    submit_time: now,
                    eligible_time,
                    total,
                    split_ids: Vec::new(),
                    active: 0,
                    ended: 0,
                    ended_ok: 0,
                    started: false,
                },
            );
            self.idx.arrays_pending.insert(id);
            ev.push(Event::JobSubmitted { job: id, array_tasks: Some(total) });
        } else {
            self.jobs.insert(
                id,
                Job {
                    id,
                    array: None,
                    spec,
                    state: JobState::Pending,
                    reason,
                    held_by_admin: held,
                    submit_time: now,
                    eligible_time,
                    start_time: None,
                    end_time: None,
                    alloc: None,
                    exit: None,
                    restart_count: 0,
                    end_intent: None,
                    max_rss_kb: None,
                    cpu_time: None,
                    failure: None,
                    accounted: false,
                    steps: Vec::new(),
                    attempts: Vec::new(),
                    revision: 0,
                },
            );
            self.idx.pending.insert(id);
            ev.push(Event::JobSubmitted { job: id, array_tasks: None });
        }
    }

    /// Turns one pending array task into its own job record, with a new id.
    fn split_task(&mut self, array_id: JobId, task: u32) -> JobId {
        let id = self.next_job_id;
        self.next_job_id += 1;
        let a = self.arrays.get_mut(&array_id).expect("caller checked the array");
        let removed = a.pending.remove(task);
        debug_assert!(removed);
        a.split_ids.push(id);
        if a.pending.is_empty() {
            self.idx.arrays_pending.remove(&array_id);
        }
        let job = Job {
            id,
            array: Some(ArrayTask { array_id, task }),
            spec: a.spec.clone(),
            state: JobState::Pending,
            reason: a.reason,
            held_by_admin: a.held_by_admin,
            submit_time: a.submit_time,
            eligible_time: a.eligible_time,
            start_time: None,
            end_time: None,
            alloc: None,
            exit: None,
            restart_count: 0,
            end_intent: None,
            max_rss_kb: None,
            cpu_time: None,
            failure: None,
            accounted: false,
            steps: Vec::new(),
            attempts: Vec::new(),
            revision: 0,
        };
        self.jobs.insert(id, job);
        self.idx.pending.insert(id);
        self.idx.task_ids.insert((array_id, task), id);
        id
    }

    // ---- resolving user references ----

    /// A reference that must name one job record (splitting a pending array
    /// task off if needed).
    fn resolve_one(&mut self, r: &JobRef) -> Result<JobId, CommandError> {
        match r.task {
            None if self.jobs.contains_key(&r.id) => Ok(r.id),
            None if self.arrays.contains_key(&r.id) => Err(whole_array(r.id)),
            None => Err(CommandError::UnknownJob(r.to_string())),
            Some(t) => {
                if let Some(id) = self.task_job_id(r.id, t) {
                    return Ok(id);
                }
                match self.arrays.get(&r.id) {
                    Some(a) if a.pending.contains(t) => Ok(self.split_task(r.id, t)),
                    _ => Err(CommandError::UnknownJob(r.to_string())),
                }
            }
        }
    }

    /// A reference to a job that has already got its own record.
    /// A started job that `by` may act on, in a state `running` accepts.
    fn own_running(&self, r: &JobRef, by: Requester, running: fn(JobState) -> bool) -> Result<JobId, CommandError> {
        let id = self.resolve_started(r)?;
        let j = &self.jobs[&id];
        if !by.may_touch(j.spec.uid) {
            return Err(CommandError::PermissionDenied(format!("job {r} belongs to {}", j.spec.user)));
        }
        if !running(j.state) {
            return Err(CommandError::InvalidState(format!("job {r} is {}, not RUNNING", j.state)));
        }
        Ok(id)
    }

    fn resolve_started(&self, r: &JobRef) -> Result<JobId, CommandError> {
        match r.task {
            None if self.jobs.contains_key(&r.id) => Ok(r.id),
            Some(t) => match self.task_job_id(r.id, t) {
                Some(id) => Ok(id),
                None if self.arrays.get(&r.id).is_some_and(|a| a.pending.contains(t)) => {
                    Err(CommandError::InvalidState(format!("job {r} is PENDING")))
                }
                None => Err(CommandError::UnknownJob(r.to_string())),
            },
            None if self.arrays.contains_key(&r.id) => Err(whole_array(r.id)),
            None => Err(CommandError::UnknownJob(r.to_string())),
        }
    }

    // ---- cancel ----

    fn cancel(&mut self, f: &CancelFilter, by: Requester, now: Time, ev: &mut Vec<Event>) -> Result<(), CommandError> {
        let spec_matches = |spec: &JobSpec, state: JobState| {
            f.user.as_ref().is_none_or(|u| &spec.user == u)
                && f.name.as_ref().is_none_or(|n| &spec.name == n)
                && f.partition.as_ref().is_none_or(|p| spec.partition.as_ref() == Some(p))
                && (f.states.is_empty() || f.states.contains(&state))
        };
        let mut jobs: Vec<JobId> = Vec::new();
        let mut whole_arrays: Vec<JobId> = Vec::new();
        let mut tasks: Vec<(JobId, u32)> = Vec::new();
        if f.jobs.is_empty() {
            for id in self.idx.pending.iter().chain(&self.idx.active) {
                let j = &self.jobs[id];
                if by.may_touch(j.spec.uid) && spec_matches(&j.spec, j.state) {
                    jobs.push(*id);
                }
            }
            for id in &self.idx.arrays_pending {
                let a = &self.arrays[id];
                if by.may_touch(a.spec.uid) && spec_matches(&a.spec, JobState::Pending) {
                    whole_arrays.push(*id);
                }
            }
            jobs.sort_unstable();
        } else {
            for r in &f.jobs {
                let (uid, owner) = match (r.task, self.jobs.get(&r.id), self.arrays.get(&r.id)) {
                    (None, Some(j), _) => (j.spec.uid, j.spec.user.clone()),
                    (_, _, Some(a)) => (a.spec.uid, a.spec.user.clone()),
                    _ => {
                        ev.push(Event::Refused { target: r.to_string(), reason: "Invalid job id specified".into() });
                        continue;
                    }
                };
                if !by.may_touch(uid) {
                    ev.push(Event::Refused {
                        target: r.to_string(),
                        reason: format!("Access/permission denied (job belongs to {owner})"),
                    });
                    continue;
                }
                match r.task {
                    None if self.jobs.contains_key(&r.id) => {
                        let j = &self.jobs[&r.id];
                        if j.state.is_terminal() {
                            ev.push(Event::Refused {
                                target: r.to_string(),
                                reason: format!("Job/step already completing or completed ({})", j.state),
                            });
                        } else if spec_matches(&j.spec, j.state) {
                            jobs.push(r.id);
                        }
                    }
                    None => {
                        let a = &self.arrays[&r.id];
                        let mut any = false;
                        for id in &a.split_ids {
                            let j = &self.jobs[id];
                            if !j.state.is_terminal() && spec_matches(&j.spec, j.state) {
                                jobs.push(*id);
                                any = true;
                            }
                        }
                        if !a.pending.is_empty() && spec_matches(&a.spec, JobState::Pending) {
                            whole_arrays.push(r.id);
                            any = true;
                        }
                        if !any {
                            ev.push(Event::Refused {
                                target: r.to_string(),
                                reason: "Job/step already completing or completed".into(),
                            });
                        }
                    }
                    Some(t) => match self.task_job_id(r.id, t) {
                        Some(id) if self.jobs[&id].state.is_terminal() => ev.push(Event::Refused {
                            target: r.to_string(),
                            reason: format!("Job/step already completing or completed ({})", self.jobs[&id].state),
                        }),
                        Some(id) => jobs.push(id),
                        None if self.arrays[&r.id].pending.contains(t) => tasks.push((r.id, t)),
                        None => {
                            ev.push(Event::Refused { target: r.to_string(), reason: "Invalid job id specified".into() })
                        }
                    },
                }
            }
        }
        for id in jobs {
            self.cancel_job(id, now, ev);
        }
        for array_id in whole_arrays {
            let a = self.arrays.get_mut(&array_id).expect("listed above");
            let tasks = std::mem::take(&mut a.pending);
            a.ended += tasks.len();
            self.idx.arrays_pending.remove(&array_id);
            ev.push(Event::ArrayTasksCancelled { array: array_id, tasks: tasks.to_string() });
        }
        for (array_id, t) in tasks {
            let a = self.arrays.get_mut(&array_id).expect("listed above");
            if a.pending.remove(t) {
                a.ended += 1;
                if a.pending.is_empty() {
                    self.idx.arrays_pending.remove(&array_id);
                }
                ev.push(Event::ArrayTasksCancelled { array: array_id, tasks: t.to_string() });
            }
        }
        Ok(())
    }

    fn cancel_job(&mut self, id: JobId, now: Time, ev: &mut Vec<Event>) {
        match self.jobs[&id].state {
            JobState::Pending => self.finish(id, JobState::Cancelled, None, now, ev),
            JobState::Running | JobState::Suspended => self.begin_kill(id, EndIntent::Cancel, ev),
            JobState::Completing => {
                // Already being killed; a cancel wins over a requeue or timeout.
                self.jobs.get_mut(&id).expect("exists").end_intent = Some(EndIntent::Cancel);
            }
            _ => {}
        }
    }

    /// Moves an active job to COMPLETING and orders its agents to kill it.
    fn begin_kill(&mut self, id: JobId, intent: EndIntent, ev: &mut Vec<Event>) {
        let j = self.jobs.get_mut(&id).expect("caller checked");
        if j.state == JobState::Completing {
            return;
        }
        j.state = JobState::Completing;
        j.end_intent = Some(intent);
        let alloc = j.alloc.as_ref().expect("active jobs have allocations");
        for s in &alloc.shares {
            self.nodes[s.node as usize].completing += 1;
        }
        ev.push(Event::JobKill { job: id, attempt: j.restart_count, nodes: node_set(&self.nodes, &alloc.shares) });
    }

    // ---- hold / release ----

    fn hold(&mut self, r: &JobRef, by: Requester, ev: &mut Vec<Event>) -> Result<(), CommandError> {
        let reason = if by.operator { PendingReason::JobHeldAdmin } else { PendingReason::JobHeldUser };
        if r.task.is_none() && self.arrays.contains_key(&r.id) && !self.jobs.contains_key(&r.id) {
            let a = self.arrays.get_mut(&r.id).expect("checked");
            if !by.may_touch(a.spec.uid) {
                return Err(CommandError::PermissionDenied(format!("job {r} belongs to {}", a.spec.user)));
            }
            if a.pending.is_empty() {
                return Err(CommandError::InvalidState(format!("array {r} has no pending tasks to hold")));
            }
            a.held_by_admin = Some(by.operator);
            a.reason = reason;
            ev.push(Event::JobHeld { job: r.to_string() });
            return Ok(());
        }
        self.check_pending_owner(r, by)?;
        let id = self.resolve_one(r)?;
        let j = self.jobs.get_mut(&id).expect("resolved");
        j.held_by_admin = Some(by.operator);
        j.reason = reason;
        ev.push(Event::JobHeld { job: r.to_string() });
        Ok(())
    }

    fn release(&mut self, r: &JobRef, by: Requester, ev: &mut Vec<Event>) -> Result<(), CommandError> {
        let check = |held: Option<bool>, uid: u32, user: &str| -> Result<(), CommandError> {
            if !by.may_touch(uid) {
                return Err(CommandError::PermissionDenied(format!("job {r} belongs to {user}")));
            }
            match held {
                None => Err(CommandError::InvalidState(format!("job {r} is not held"))),
                Some(true) if !by.operator => {
                    Err(CommandError::PermissionDenied(format!("job {r} was held by an administrator")))
                }
                _ => Ok(()),
            }
        };
        if r.task.is_none() && self.arrays.contains_key(&r.id) && !self.jobs.contains_key(&r.id) {
            let a = self.arrays.get_mut(&r.id).expect("checked");
            check(a.held_by_admin, a.spec.uid, &a.spec.user)?;
            a.held_by_admin = None;
            a.reason = PendingReason::None;
            ev.push(Event::JobReleased { job: r.to_string() });
            return Ok(());
        }
        let id = match r.task {
            Some(t) if self.task_job_id(r.id, t).is_none() => {
                // Unsplit tasks share the array's hold: release the array.
                return Err(CommandError::InvalidState(format!("job {r} is not held on its own; release {}", r.id)));
            }
            _ => self.resolve_started(r)?,
        };
        let j = self.jobs.get_mut(&id).expect("resolved");
        if j.state != JobState::Pending {
            return Err(CommandError::InvalidState(format!("job {r} is {}, not held", j.state)));
        }
        check(j.held_by_admin, j.spec.uid, &j.spec.user)?;
        j.held_by_admin = None;
        j.reason = PendingReason::None;
        ev.push(Event::JobReleased { job: r.to_string() });
        Ok(())
    }

    /// Checks that `r` names a pending job the requester owns, before any
    /// array task is split off for it.
    fn check_pending_owner(&self, r: &JobRef, by: Requester) -> Result<(), CommandError> {
        let (spec, state) = self.spec_of(r)?;
        if !by.may_touch(spec.uid) {
            return Err(CommandError::PermissionDenied(format!("job {r} belongs to {}", spec.user)));
        }
        if state != JobState::Pending {
            return Err(CommandError::InvalidState(format!("job {r} is {state}; only pending jobs can be held")));
        }
        Ok(())
    }

    /// The spec and state of the one job `r` names, without splitting a
    /// pending array task off.
    fn spec_of(&self, r: &JobRef) -> Result<(Arc<JobSpec>, JobState), CommandError> {
        Ok(match (r.task.and_then(|t| self.task_job_id(r.id, t)), r.task) {
            (Some(id), _) => {
                let j = &self.jobs[&id];
                (j.spec.clone(), j.state)
            }
            (None, Some(t)) => match self.arrays.get(&r.id) {
                Some(a) if a.pending.contains(t) => (a.spec.clone(), JobState::Pending),
                _ => return Err(CommandError::UnknownJob(r.to_string())),
            },
            (None, None) => match self.jobs.get(&r.id) {
                Some(j) => (j.spec.clone(), j.state),
                None => return Err(CommandError::UnknownJob(r.to_string())),
            },
        })
    }

    // ---- nodes ----

    #[allow(clippy::too_many_arguments)]
    fn register_node(
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
        let i = match self.node_index(&name) {
            Some(i) => i,
            None => {
                let i = self.nodes.len() as u32;
                self.nodes.push(Node::new(&name));
                self.idx.node_by_name.insert(name.clone(), i);
                for p in &mut self.partitions {
                    if p.includes(&name) {
                        p.members.push(i);
                    }
                }
                i
            }
        };
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

    fn node_down(&mut self, i: u32, reason: String, now: Time, ev: &mut Vec<Event>) {
        let n = &mut self.nodes[i as usize];
        if n.status == NodeStatus::Down {
            return;
        }
        let before = n.state();
        n.status = NodeStatus::Down;
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
    fn lose_job(&mut self, id: JobId, why: &str, now: Time, ev: &mut Vec<Event>) {
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

    fn set_node_state(
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

    // ---- scheduling results ----

    fn allocate(&mut self, plan: Plan, now: Time, ev: &mut Vec<Event>) {
        for (key, reason) in plan.reasons {
            match key {
                JobKey::Job(id) => {
                    if let Some(j) = self.jobs.get_mut(&id) {
                        if j.state == JobState::Pending && j.held_by_admin.is_none() {
                            j.reason = reason;
                        }
                    }
                }
                JobKey::Task { array, .. } => {
                    if let Some(a) = self.arrays.get_mut(&array) {
                        if a.held_by_admin.is_none() {
                            a.reason = reason;
                        }
                    }
                }
            }
        }
        for id in plan.cancel {
            let doomed = self.jobs.get(&id).is_some_and(|j| {
                j.state == JobState::Pending
                    && j.spec.kill_on_invalid_dep
                    && self.dependency_status(j, now) == DepStatus::Never
            });
            if doomed {
                self.finish(id, JobState::Cancelled, None, now, ev);
            }
        }
        for a in plan.allocations {
            if let Err(reason) = self.check_allocation(&a.key, &a.shares, &a.partition, now) {
                ev.push(Event::AllocationRejected { job: a.key.to_string(), reason });
                continue;
            }
            let id = match a.key {
                JobKey::Job(id) => id,
                JobKey::Task { array, task } => self.split_task(array, task),
            };
            for s in &a.shares {
                let n = &mut self.nodes[s.node as usize];
                n.alloc = n.alloc.add(&s.res);
                n.jobs += 1;
            }
            let nodes = node_set(&self.nodes, &a.shares);
            let j = self.jobs.get_mut(&id).expect("exists");
            j.state = JobState::Running;
            j.reason = PendingReason::None;
            j.start_time = Some(now);
            j.end_time = None;
            j.exit = None;
            j.end_intent = None;
            // In hostlist order, as SLURM_JOB_NODELIST lists them: the batch
            // step runs on the first, and rank 0 of a step lives there —
            // where tools that take the first host as the rendezvous expect.
            let mut shares = a.shares;
            shares
                .sort_by(|x, y| hostlist::order(&self.nodes[x.node as usize].name, &self.nodes[y.node as usize].name));
            j.alloc = Some(Allocation { shares, time_limit: a.time_limit, partition: a.partition });
            self.idx.pending.remove(&id);
            self.idx.active.insert(id);
            if let Some(t) = j.array {
                let arr = self.arrays.get_mut(&t.array_id).expect("tasks have arrays");
                arr.active += 1;
                arr.started = true;
            }
            ev.push(Event::JobStarted { job: id, display: j.display_id(), attempt: j.restart_count, nodes });
        }
    }

    /// Re-checks a decision against the state it is applied to: the
    /// scheduler may have planned on a state that has moved on.
    fn check_allocation(&self, key: &JobKey, shares: &[NodeShare], part: &str, now: Time) -> Result<(), String> {
        let (held, eligible) = match key {
            JobKey::Job(id) => match self.jobs.get(id) {
                Some(j) if j.state == JobState::Pending => (j.held_by_admin.is_some(), j.eligible_time),
                Some(j) => return Err(format!("job is {}", j.state)),
                None => return Err("no such job".into()),
            },
            JobKey::Task { array, task } => match self.arrays.get(array) {
                Some(a) if a.pending.contains(*task) => {
                    if let Some(max) = a.spec.array.as_ref().and_then(|s| s.max_running) {
                        if a.active >= max {
                            return Err(format!("array throttle of {max} reached"));
                        }
                    }
                    (a.held_by_admin.is_some(), a.eligible_time)
                }
                _ => return Err("task is not pending".into()),
            },
        };
        if held {
            return Err("job is held".into());
        }
        if eligible > now {
            return Err("job is not eligible yet".into());
        }
        if shares.is_empty() {
            return Err("no nodes".into());
        }
        let partition = self.partition(part).ok_or("no such partition")?;
        let mut seen = BTreeSet::new();
        for s in shares {
            let n = self.nodes.get(s.node as usize).ok_or("no such node")?;
            if !seen.insert(s.node) {
                return Err(format!("node {} listed twice", n.name));
            }
            if !n.schedulable() {
                return Err(format!("node {} is {}", n.name, n.state()));
            }
            if !partition.members.contains(&s.node) {
                return Err(format!("node {} is not in partition {part}", n.name));
            }
            if !n.free().covers(&s.res) {
                return Err(format!("node {} has {} free, needs {}", n.name, n.free(), s.res));
            }
        }
        Ok(())
    }

    // ---- step reports ----

    fn step_finished(&mut self, id: JobId, outcome: StepOutcome, now: Time, ev: &mut Vec<Event>) {
        if outcome == StepOutcome::Lost {
            let node = self.jobs[&id].alloc.as_ref().and_then(|a| a.shares.first()).map(|s| s.node);
            let name = node.map_or("?".to_string(), |n| self.nodes[n as usize].name.clone());
            return self.lose_job(id, &format!("step fenced on node {name}"), now, ev);
        }
        let j = &self.jobs[&id];
        let exit = Some(match outcome {
            StepOutcome::Exited(code) => ExitStatus { code, signal: 0 },
            StepOutcome::Signaled(sig) => ExitStatus { code: 0, signal: sig },
            StepOutcome::OutOfMemory => ExitStatus { code: 0, signal: 9 },
            StepOutcome::TimedOut => ExitStatus { code: 0, signal: 15 },
            StepOutcome::Lost => ExitStatus { code: 0, signal: 9 },
        });
        let state = match (j.end_intent, outcome) {
            (Some(EndIntent::Requeue { hold }), _) => {
                let ended = (JobState::Requeued, exit, "requeued by request");
                return self.requeue(id, hold, 0, ended, now, ev);
            }
            (Some(EndIntent::Cancel), _) => JobState::Cancelled,
            (Some(EndIntent::Complete { exit }), _) => {
                let state = if exit == ExitStatus::default() { JobState::Completed } else { JobState::Failed };
                return self.finish(id, state, Some(exit), now, ev);
            }
            (Some(EndIntent::Timeout), _) | (None, StepOutcome::TimedOut) => JobState::Timeout,
            (None, StepOutcome::OutOfMemory) => JobState::OutOfMemory,
            (None, StepOutcome::Exited(0)) => JobState::Completed,
            (None, _) => JobState::Failed,
        };
        self.finish(id, state, exit, now, ev);
    }

    /// Frees what an active job holds on its nodes.
    fn release_resources(&mut self, id: JobId) {
        let j = &self.jobs[&id];
        if !j.state.is_active() {
            return;
        }
        let completing = j.state == JobState::Completing;
        if let Some(a) = &j.alloc {
            for s in &a.shares {
                let n = &mut self.nodes[s.node as usize];
                debug_assert!(n.alloc.covers(&s.res), "releasing more than booked on {}", n.name);
                n.alloc = n.alloc.saturating_sub(&s.res);
                n.jobs -= 1;
                if completing {
                    n.completing -= 1;
                }
            }
        }
        self.idx.active.remove(&id);
        if let Some(t) = j.array {
            self.arrays.get_mut(&t.array_id).expect("tasks have arrays").active -= 1;
        }
    }

    fn finish(&mut self, id: JobId, state: JobState, exit: Option<ExitStatus>, now: Time, ev: &mut Vec<Event>) {
        debug_assert!(state.is_terminal());
        // A batch script that ends on its own leaves its steps' tasks
        // behind on the other nodes: they go with it.
        let j = &self.jobs[&id];
        if j.state == JobState::Running && j.steps.iter().any(|s| s.end.is_none()) {
            if let Some(a) = &j.alloc {
                ev.push(Event::JobKill { job: id, attempt: j.restart_count, nodes: node_set(&self.nodes, &a.shares) });
            }
        }
        self.end_steps(id, now, ev);
        self.release_resources(id);
        self.idx.pending.remove(&id);
        self.idx.unaccounted.insert(id);
        let j = self.jobs.get_mut(&id).expect("caller checked");
        j.state = state;
        j.end_time = Some(now);
        j.accounted = false;
        j.revision += 1;
        j.exit = exit;
        j.end_intent = None;
        if let Some(t) = j.array {
            let a = self.arrays.get_mut(&t.array_id).expect("tasks have arrays");
            a.ended += 1;
            if state == JobState::Completed {
                a.ended_ok += 1;
            }
        }
        ev.push(Event::JobFinished { job: id, display: j.display_id(), state, exit, reason: j.failure.clone() });
    }

    /// Sends a running job back to PENDING. `ended`: how the run ended
    /// (NODE_FAIL or REQUEUED), its exit if known, and why.
    fn requeue(
        &mut self,
        id: JobId,
        hold: bool,
        backoff_ms: u64,
        (ended, exit, why): (JobState, Option<ExitStatus>, &str),
        now: Time,
        ev: &mut Vec<Event>,
    ) {
        self.end_steps(id, now, ev);
        self.release_resources(id);
        let j = self.jobs.get_mut(&id).expect("caller checked");
        if let (Some(start_time), Some(alloc)) = (j.start_time, j.alloc.take()) {
            j.attempts.push(PastAttempt {
                attempt: j.restart_count,
                eligible_time: j.eligible_time,
                start_time,
                end_time: now,
                state: ended,
                exit,
                alloc,
                max_rss_kb: j.max_rss_kb.take(),
                cpu_time: j.cpu_time.take(),
                reason: j.failure.take().unwrap_or_else(|| why.to_string()),
            });
            j.accounted = false;
            j.revision += 1;
            self.idx.unaccounted.insert(id);
        }
        let j = self.jobs.get_mut(&id).expect("caller checked");
        j.state = JobState::Pending;
        j.restart_count += 1;
        j.end_intent = None;
        j.start_time = None;
        j.eligible_time = now.saturating_add(backoff_ms);
        j.alloc = None;
        if hold {
            j.held_by_admin = Some(false);
            j.reason = PendingReason::JobHeldUser;
        } else {
            j.reason = if backoff_ms > 0 { PendingReason::BeginTime } else { PendingReason::None };
        }
        self.idx.pending.insert(id);
        ev.push(Event::JobRequeued {
            job: id,
            display: j.display_id(),
            restart_count: j.restart_count,
            reason: why.to_string(),
        });
    }

    /// Steps still running when their job ends were cut short.
    fn end_steps(&mut self, id: JobId, now: Time, ev: &mut Vec<Event>) {
        let j = self.jobs.get_mut(&id).expect("caller checked");
        for s in j.steps.iter_mut().filter(|s| s.end.is_none()) {
            s.end = Some(now);
            s.state = JobState::Cancelled;
            ev.push(Event::StepEnded { job: id, step: s.id, state: s.state, exit: None });
        }
    }

    // ---- steps (srun) ----

    fn create_step(
        &mut self,
        r: &JobRef,
        request: StepRequest,
        by: Requester,
        now: Time,
        ev: &mut Vec<Event>,
    ) -> Result<(), CommandError> {
        let id = self.own_running(r, by, |s| s == JobState::Running)?;
        let j = &self.jobs[&id];
        let alloc = j.alloc.as_ref().expect("running jobs have allocations");
        let (positions, tasks) =
            crate::step::layout(alloc, j.spec.cpus_per_task, &request).map_err(CommandError::NoSuchNodeConfig)?;
        let nodes: Vec<u32> = positions.iter().map(|&k| alloc.shares[k].node).collect();
        let names: Vec<&str> = nodes.iter().map(|&n| self.nodes[n as usize].name.as_str()).collect();
        let step = JobStep {
            id: j.steps.len() as StepId,
            name: if request.name.is_empty() { "step".into() } else { request.name.clone() },
            cpus_per_task: request.cpus_per_task.unwrap_or(j.spec.cpus_per_task),
            start: now,
            end: None,
            state: JobState::Running,
            exit: None,
            attempt: j.restart_count,
            used: Vec::new(),
            client_held: request.client_held,
            nodes,
            tasks,
        };
        ev.push(Event::StepCreated {
            job: id,
            attempt: j.restart_count,
            step: step.id,
            nodes: NodeSet::new(names.iter().map(|n| n.to_string()).collect()),
            tasks: step.ntasks(),
        });
        self.jobs.get_mut(&id).expect("resolved").steps.push(step);
        Ok(())
    }

    fn end_step(
        &mut self,
        id: JobId,
        step: StepId,
        (exit, cancelled): (ExitStatus, bool),
        by: Requester,
        now: Time,
        ev: &mut Vec<Event>,
    ) -> Result<(), CommandError> {
        let j = self.jobs.get_mut(&id).ok_or_else(|| CommandError::UnknownJob(id.to_string()))?;
        // A step whose srun was interrupted, or whose job is being
        // cancelled, was cancelled, whatever its ranks' exits say.
        let cancelled = cancelled || j.end_intent == Some(EndIntent::Cancel);
        if !by.may_touch(j.spec.uid) {
            return Err(CommandError::PermissionDenied(format!("job {id} belongs to {}", j.spec.user)));
        }
        let s = j
            .steps
            .iter_mut()
            .find(|s| s.id == step)
            .ok_or_else(|| CommandError::UnknownJob(format!("{id}.{step}")))?;
        // A step already ended (with its job, say) keeps its first ending.
        if s.end.is_some() {
            return Ok(());
        }
        s.end = Some(now);
        s.exit = Some(exit);
        s.state = match (cancelled, exit == ExitStatus::default()) {
            (true, _) => JobState::Cancelled,
            (false, true) => JobState::Completed,
            (false, false) => JobState::Failed,
        };
        ev.push(Event::StepEnded { job: id, step, state: s.state, exit: Some(exit) });
        Ok(())
    }

    // ---- updates (scontrol update) ----

    fn update(&mut self, r: &JobRef, u: JobUpdate, by: Requester, ev: &mut Vec<Event>) -> Result<(), CommandError> {
        if u.is_empty() {
            return Err(CommandError::Invalid("nothing to update".into()));
        }
        // A whole array's waiting tasks share one record.
        let array_only = r.task.is_none() && self.arrays.contains_key(&r.id) && !self.jobs.contains_key(&r.id);
        let (spec, state, alloc) = if array_only {
            let a = &self.arrays[&r.id];
            if a.pending.is_empty() {
                return Err(CommandError::InvalidState(format!("array {r} has no pending tasks left to update")));
            }
            (a.spec.clone(), JobState::Pending, None)
        } else {
            let (spec, state) = self.spec_of(r)?;
            let alloc = match r.task {
                None => self.jobs.get(&r.id),
                Some(t) => self.task_job_id(r.id, t).and_then(|id| self.jobs.get(&id)),
            }
            .and_then(|j| j.alloc.as_ref());
            (spec, state, alloc)
        };
        if !by.may_touch(spec.uid) {
            return Err(CommandError::PermissionDenied(format!("job {r} belongs to {}", spec.user)));
        }
        if state.is_terminal() || state == JobState::Completing {
            return Err(CommandError::InvalidState(format!("job {r} is {}: it can no longer be changed", state)));
        }
        let mut new = (*spec).clone();
        let mut changes = Vec::new();
        let mut new_limit = None;
        if let Some(limit) = u.time_limit {
            let current = alloc.map_or(spec.time_limit, |a| a.time_limit);
            let longer = match (limit, current) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(l), Some(c)) => l > c,
            };
            if longer && !by.operator {
                return Err(CommandError::PermissionDenied(
                    "only an operator may lengthen a time limit; users may shorten it".into(),
                ));
            }
            new.time_limit = limit;
            new_limit = Some(limit);
            changes.push(format!("TimeLimit={}", limit.map_or("UNLIMITED".into(), crate::time::format_duration)));
        }
        if let Some(p) = &u.partition {
            if state != JobState::Pending {
                return Err(CommandError::InvalidState(format!(
                    "job {r} is {state}; the partition of a started job cannot change"
                )));
            }
            new.partition = Some(p.clone());
            changes.push(format!("Partition={p}"));
        }
        if let Some(name) = &u.name {
            if name.is_empty() || name.contains(['\n', '\t']) {
                return Err(CommandError::Invalid("a job name must be one line, not empty".into()));
            }
            new.name = name.clone();
            changes.push(format!("JobName={name}"));
        }
        if let Some(nice) = u.nice {
            if !(-2_147_483_645..=2_147_483_645).contains(&nice) {
                return Err(CommandError::Invalid(format!("Nice={nice} is out of range")));
            }
            if nice < 0 && !by.operator {
                return Err(CommandError::PermissionDenied("only an operator may set a negative nice value".into()));
            }
            new.nice = nice;
            changes.push(format!("Nice={nice}"));
        }
        if let Some(c) = &u.comment {
            new.comment = (!c.is_empty()).then(|| c.clone());
            changes.push(format!("Comment={c}"));
        }
        crate::limits::SpecLimits::CEILING.check(&new).map_err(CommandError::Invalid)?;
        if state == JobState::Pending && (u.partition.is_some() || u.time_limit.is_some()) {
            self.validate_submit(&new)?;
        }
        let new = Arc::new(new);
        if array_only {
            self.arrays.get_mut(&r.id).expect("checked").spec = new;
        } else {
            let id = self.resolve_one(r)?;
            let j = self.jobs.get_mut(&id).expect("resolved");
            j.spec = new;
            if let (Some(limit), Some(a)) = (new_limit, j.alloc.as_mut()) {
                if j.state == JobState::Running {
                    a.time_limit = limit;
                    ev.push(Event::JobTimeLimit {
                        job: id,
                        attempt: j.restart_count,
                        nodes: node_set(&self.nodes, &a.shares),
                        limit,
                    });
                }
            }
        }
        ev.push(Event::JobUpdated { job: r.to_string(), change: changes.join(" ") });
        Ok(())
    }

    // ---- time ----

    /// Drops finished jobs that accounting holds and that have been
    /// finished for `min_job_age`: a single job on its own, an array only
    /// when all its tasks qualify (a dependency on a job no longer known
    /// counts as met, as in Slurm). Jobs a waiting or running job's
    /// dependency names stay.
    fn prune(&mut self, now: Time, ev: &mut Vec<Event>) {
        let (singles, arrays) = self.prunable(now);
        let mut count = 0;
        for id in singles {
            self.jobs.remove(&id);
            count += 1;
        }
        for id in arrays {
            let a = self.arrays.remove(&id).expect("listed");
            for task_id in &a.split_ids {
                if let Some(j) = self.jobs.remove(task_id) {
                    if let Some(t) = j.array {
                        self.idx.task_ids.remove(&(t.array_id, t.task));
                    }
                    count += 1;
                }
            }
        }
        if count > 0 {
            ev.push(Event::JobsPruned { count });
        }
    }

    /// Whether a `Tick` now would prune jobs (the leader ticks for it).
    pub fn prune_due(&self, now: Time) -> bool {
        let (singles, arrays) = self.prunable(now);
        !singles.is_empty() || !arrays.is_empty()
    }

    /// The single jobs and the arrays [`State::prune`] would drop now.
    fn prunable(&self, now: Time) -> (Vec<JobId>, Vec<JobId>) {
        let age = self.config.min_job_age_ms;
        if age == 0 {
            return (Vec::new(), Vec::new());
        }
        let old =
            |j: &Job| j.state.is_terminal() && j.accounted && j.end_time.is_some_and(|e| e.saturating_add(age) <= now);
        let mut singles: Vec<JobId> =
            self.jobs.values().filter(|j| j.array.is_none() && old(j)).map(|j| j.id).collect();
        let mut arrays: Vec<JobId> = self
            .arrays
            .values()
            .filter(|a| a.pending.is_empty() && a.active == 0)
            .filter(|a| a.split_ids.iter().all(|id| self.jobs.get(id).is_none_or(old)))
            .map(|a| a.id)
            .collect();
        // The leader asks every second: most of the time there is nothing
        // to prune, and the dependencies need not be read.
        if singles.is_empty() && arrays.is_empty() {
            return (singles, arrays);
        }
        let mut named = std::collections::HashSet::new();
        let live = self.idx.pending.iter().chain(&self.idx.active).map(|id| &self.jobs[id].spec);
        for spec in live.chain(self.idx.arrays_pending.iter().map(|id| &self.arrays[id].spec)) {
            if let Some(d) = &spec.dependency {
                named.extend(d.conditions.iter().filter_map(|c| c.job.map(|r| r.id)));
            }
        }
        singles.retain(|id| !named.contains(id));
        arrays.retain(|id| !named.contains(id));
        (singles, arrays)
    }

    fn tick(&mut self, now: Time, ev: &mut Vec<Event>) {
        self.prune(now, ev);
        if let Some(timeout) = self.config.node_timeout_ms {
            let silent: Vec<u32> = (0..self.nodes.len() as u32)
                .filter(|&i| {
                    let n = &self.nodes[i as usize];
                    n.status == NodeStatus::Up && now.saturating_sub(n.last_heartbeat) > timeout
                })
                .collect();
            for i in silent {
                self.node_down(i, "Not responding".into(), now, ev);
            }
        }
        let grace = self.config.over_time_grace_ms;
        let overdue: Vec<JobId> = self
            .idx
            .active
            .iter()
            .copied()
            .filter(|id| {
                let j = &self.jobs[id];
                let limit = j.alloc.as_ref().and_then(|a| a.time_limit);
                j.state == JobState::Running
                    && matches!((j.start_time, limit), (Some(s), Some(l)) if now > s.saturating_add(crate::secs(l)).saturating_add(grace))
            })
            .collect();
        for id in overdue {
            self.begin_kill(id, EndIntent::Timeout, ev);
        }
    }

    // ---- dependencies ----

    /// Whether `job`'s dependency lets it start now.
    pub fn dependency_status(&self, job: &Job, now: Time) -> DepStatus {
        self.spec_dependency_status(&job.spec, job.id, job.array, now)
    }

    /// Like [`State::dependency_status`], for a job or an array's next task.
    pub fn spec_dependency_status(&self, spec: &JobSpec, my_id: JobId, me: Option<ArrayTask>, now: Time) -> DepStatus {
        let Some(dep) = &spec.dependency else { return DepStatus::Satisfied };
        let statuses: Vec<DepStatus> =
            dep.conditions.iter().map(|c| self.condition_status(c, spec, my_id, me, now)).collect();
        // All-of and any-of are duals: one decisive outcome settles it, the
        // other must hold everywhere.
        let (decisive, everywhere) =
            if dep.any { (DepStatus::Satisfied, DepStatus::Never) } else { (DepStatus::Never, DepStatus::Satisfied) };
        if statuses.contains(&decisive) {
            decisive
        } else if statuses.iter().all(|s| *s == everywhere) {
            everywhere
        } else {
            DepStatus::Waiting
        }
    }

    /// What `spec`'s dependency still waits for, as `scontrol show job`
    /// prints it: each condition not yet met, marked `(unfulfilled)` or,
    /// if it never can be, `(failed)`; `None` once nothing is left.
    pub fn dependency_text(&self, spec: &JobSpec, my_id: JobId, me: Option<ArrayTask>) -> Option<String> {
        let dep = spec.dependency.as_ref()?;
        let sep = if dep.any { "?" } else { "," };
        let mut out = String::new();
        for c in &dep.conditions {
            let mark = match self.condition_status(c, spec, my_id, me, self.now) {
                DepStatus::Satisfied => continue,
                DepStatus::Waiting => "unfulfilled",
                DepStatus::Never => "failed",
            };
            if !out.is_empty() {
                out.push_str(sep);
            }
            let one = Dependency { conditions: vec![c.clone()], any: false };
            out.push_str(&format!("{one}({mark})"));
        }
        (!out.is_empty()).then_some(out)
    }

    fn condition_status(
        &self,
        c: &crate::dependency::DepCondition,
        spec: &JobSpec,
        my_id: JobId,
        me: Option<ArrayTask>,
        now: Time,
    ) -> DepStatus {
        if c.kind == DepKind::Singleton {
            let mine = me.map_or(my_id, |t| t.array_id);
            let blocker = |s: &JobSpec, id: JobId| s.uid == spec.uid && s.name == spec.name && id < mine;
            let busy = self.idx.active.iter().chain(&self.idx.pending).any(|id| {
                let j = &self.jobs[id];
                blocker(&j.spec, j.array.map_or(j.id, |t| t.array_id))
            }) || self.idx.arrays_pending.iter().any(|id| blocker(&self.arrays[id].spec, *id));
            return if busy { DepStatus::Waiting } else { DepStatus::Satisfied };
        }
        let Some(r) = c.job else { return DepStatus::Satisfied };
        let r = if c.kind == DepKind::AfterCorr {
            match me {
                Some(t) => JobRef { id: r.id, task: Some(t.task) },
                None => r,
            }
        } else {
            r
        };
        let o = self.outcome_of(&r);
        let done = |ok: bool| if ok { DepStatus::Satisfied } else { DepStatus::Never };
        match c.kind {
            DepKind::After => match o.started_at {
                Some(t) if now >= t.saturating_add(crate::secs(u64::from(c.delay_minutes) * 60)) => {
                    DepStatus::Satisfied
                }
                _ if o.ended => DepStatus::Satisfied,
                _ => DepStatus::Waiting,
            },
            DepKind::AfterAny => {
                if o.ended {
                    DepStatus::Satisfied
                } else {
                    DepStatus::Waiting
                }
            }
            DepKind::AfterOk | DepKind::AfterCorr => {
                if o.ended {
                    done(o.ok)
                } else {
                    DepStatus::Waiting
                }
            }
            DepKind::AfterNotOk => {
                if o.ended {
                    done(!o.ok)
                } else {
                    DepStatus::Waiting
                }
            }
            DepKind::Singleton => unreachable!("handled above"),
        }
    }

    fn outcome_of(&self, r: &JobRef) -> Outcome {
        let of_job = |j: &Job| Outcome {
            started_at: j.start_time.or(j.end_time.filter(|_| j.state != JobState::Cancelled)),
            ended: j.state.is_terminal(),
            ok: j.state == JobState::Completed,
        };
        match r.task {
            None => {
                if let Some(j) = self.jobs.get(&r.id) {
                    return of_job(j);
                }
                match self.arrays.get(&r.id) {
                    Some(a) => Outcome {
                        started_at: a.started.then_some(a.submit_time),
                        ended: a.ended == a.total,
                        ok: a.ended_ok == a.total,
                    },
                    // Unknown (e.g. purged long ago): nothing to wait for.
                    None => Outcome { started_at: None, ended: true, ok: true },
                }
            }
            Some(t) => match self.task_job_id(r.id, t) {
                Some(id) => of_job(&self.jobs[&id]),
                None => match self.arrays.get(&r.id) {
                    Some(a) if a.pending.contains(t) => Outcome { started_at: None, ended: false, ok: false },
                    // Cancelled before it ever started.
                    Some(_) => Outcome { started_at: None, ended: true, ok: false },
                    None => Outcome { started_at: None, ended: true, ok: true },
                },
            },
        }
    }
}

fn whole_array(id: JobId) -> CommandError {
    CommandError::Invalid(format!("{id} is a job array; name one task ({id}_N)"))
}

struct Outcome {
    started_at: Option<Time>,
    ended: bool,
    ok: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::PartitionSpec;

    #[test]
    fn a_batch_applies_each_command_on_its_own() {
        let mut s = State::default();
        s.apply(Command::SetPartition(PartitionSpec { is_default: true, ..PartitionSpec::new("p", "ALL") })).unwrap();
        let submit = |now| Command::Submit { spec: Arc::new(JobSpec::simple("a", "")), now };
        let mut bad = JobSpec::simple("a", "");
        bad.partition = Some("nosuch".into());
        let ev = s
            .apply(Command::Batch(vec![
                submit(1),
                Command::Submit { spec: Arc::new(bad), now: 2 },
                Command::Batch(vec![]),
                submit(3),
            ]))
            .unwrap();
        assert!(matches!(ev[0], Event::JobSubmitted { job: 1, .. }));
        assert!(matches!(&ev[1], Event::Refused { reason, .. } if reason.contains("invalid partition")));
        assert!(matches!(&ev[2], Event::Refused { reason, .. } if reason.contains("nest")));
        assert!(matches!(ev[3], Event::JobSubmitted { job: 2, .. }));
        assert_eq!(s.now(), 3);
        s.check_invariants().unwrap();
    }
}
