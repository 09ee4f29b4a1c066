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
use crate::node::{Node, NodeAction, NodeState, NodeStatus, Power, Repair, RepairKind};
use crate::partition::{Partition, PartitionSpec};
use crate::place;
use crate::plan::{JobKey, Plan};
use crate::resources::Resources;
use crate::step::{JobStep, JobUpdate, StepId, StepRequest};
use crate::Time;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

mod cancel;
mod command;
mod dependencies;
mod event;
mod nodes;
mod repairs;
mod runs;
mod steps;
mod submit;
mod time;

pub use command::{Command, CommandError, RepairOutcome};
pub use event::Event;

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
            Command::DefineNodes { names, total, features, by, .. } => {
                self.define_nodes(names, total, features, by, &mut ev)?
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
            Command::RepairStart { node, kind, provider, token, deadline, now } => self.repair_start(
                &node,
                Repair { kind, provider, token, started: now, deadline, acted: None },
                &mut ev,
            )?,
            Command::RepairResult { node, token, outcome, now } => {
                self.repair_result(&node, &token, outcome, now, &mut ev)?
            }
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
}

pub(super) fn whole_array(id: JobId) -> CommandError {
    CommandError::Invalid(format!("{id} is a job array; name one task ({id}_N)"))
}

pub(super) struct Outcome {
    pub(super) started_at: Option<Time>,
    pub(super) ended: bool,
    pub(super) ok: bool,
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
