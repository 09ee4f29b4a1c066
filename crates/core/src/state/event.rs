//! What happened: the [`Event`]s a command produced, and their text.

use super::*;

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
    /// The healer recorded a repair and calls its provider now.
    RepairStarted {
        node: String,
        kind: RepairKind,
        provider: String,
    },
    /// The provider acted; the node has still to come back.
    RepairActed {
        node: String,
        kind: RepairKind,
        provider: String,
        detail: String,
    },
    /// The node is back (registered, or for a suspend: stopped).
    RepairDone {
        node: String,
        kind: RepairKind,
        provider: String,
        took_ms: u64,
    },
    /// The repair failed; `gave_up`: no more tries until an operator
    /// resumes the node.
    RepairFailed {
        node: String,
        kind: RepairKind,
        provider: String,
        error: String,
        failures: u32,
        gave_up: bool,
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
            RepairStarted { node, kind, provider } => write!(f, "repair {kind} of {node} through {provider}"),
            RepairActed { node, kind, detail, .. } => write!(f, "repair {kind} of {node} acted: {detail}"),
            RepairDone { node, kind, took_ms, .. } => {
                write!(f, "repair {kind} of {node} done in {}.{:03}s", took_ms / 1000, took_ms % 1000)
            }
            RepairFailed { node, kind, error, failures, gave_up, .. } => {
                write!(f, "repair {kind} of {node} failed ({error}) failures={failures}")?;
                if *gave_up {
                    f.write_str(" gave up")?;
                }
                Ok(())
            }
            Refused { target, reason } => write!(f, "refused {target}: {reason}"),
            Repeated { request, answer } => {
                write!(f, "repeated {request}:")?;
                answer.iter().try_for_each(|e| write!(f, " [{e}]"))
            }
        }
    }
}
