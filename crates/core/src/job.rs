//! Jobs: how they are identified, what a user asked for, and where they stand.

use crate::array::ArraySpec;
use crate::dependency::Dependency;
use crate::resources::Resources;
use crate::Time;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

pub type JobId = u64;

/// A job as a user names it: `1234` or the array task `1234_7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobRef {
    pub id: JobId,
    pub task: Option<u32>,
}

impl JobRef {
    pub fn job(id: JobId) -> JobRef {
        JobRef { id, task: None }
    }

    pub fn parse(text: &str) -> Result<JobRef, String> {
        let t = text.trim();
        let num = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
        };
        let bad = || format!("'{t}' is not a job id; expected e.g. 1234 or 1234_7");
        match t.split_once('_') {
            None => Ok(JobRef::job(num(t).ok_or_else(bad)?)),
            Some((id, task)) => {
                let task = num(task).filter(|&n| n <= u64::from(u32::MAX)).ok_or_else(bad)?;
                Ok(JobRef { id: num(id).ok_or_else(bad)?, task: Some(task as u32) })
            }
        }
    }
}

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.task {
            Some(t) => write!(f, "{}_{}", self.id, t),
            None => write!(f, "{}", self.id),
        }
    }
}

/// Slurm's job states, with the names and short codes its tools print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JobState {
    Pending,
    Running,
    Suspended,
    Completing,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    NodeFail,
    OutOfMemory,
    Preempted,
    Requeued,
}

impl JobState {
    pub const ALL: [JobState; 12] = [
        JobState::Pending,
        JobState::Running,
        JobState::Suspended,
        JobState::Completing,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Timeout,
        JobState::NodeFail,
        JobState::OutOfMemory,
        JobState::Preempted,
        JobState::Requeued,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Suspended => "SUSPENDED",
            JobState::Completing => "COMPLETING",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
            JobState::Timeout => "TIMEOUT",
            JobState::NodeFail => "NODE_FAIL",
            JobState::OutOfMemory => "OUT_OF_MEMORY",
            JobState::Preempted => "PREEMPTED",
            JobState::Requeued => "REQUEUED",
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            JobState::Pending => "PD",
            JobState::Running => "R",
            JobState::Suspended => "S",
            JobState::Completing => "CG",
            JobState::Completed => "CD",
            JobState::Failed => "F",
            JobState::Cancelled => "CA",
            JobState::Timeout => "TO",
            JobState::NodeFail => "NF",
            JobState::OutOfMemory => "OOM",
            JobState::Preempted => "PR",
            JobState::Requeued => "RQ",
        }
    }

    /// Reads a state as squeue's and sacct's `-t/--state` take it: the name
    /// or the short code, any case.
    pub fn parse(text: &str) -> Result<JobState, String> {
        let up = text.trim().to_ascii_uppercase();
        JobState::ALL
            .into_iter()
            .find(|s| s.name() == up || s.code() == up || (up == "OOM" && *s == JobState::OutOfMemory))
            .ok_or_else(|| {
                format!("unknown job state '{text}'; use one of PENDING(PD) RUNNING(R) COMPLETING(CG) COMPLETED(CD) FAILED(F) CANCELLED(CA) TIMEOUT(TO) NODE_FAIL(NF) OUT_OF_MEMORY(OOM) PREEMPTED(PR) REQUEUED(RQ) SUSPENDED(S)")
            })
    }

    /// A terminal job never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed
                | JobState::Failed
                | JobState::Cancelled
                | JobState::Timeout
                | JobState::NodeFail
                | JobState::OutOfMemory
                | JobState::Preempted
        )
    }

    /// Holds resources on nodes.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Running | JobState::Suspended | JobState::Completing)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a pending job is not running, in Slurm's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PendingReason {
    None,
    Priority,
    Resources,
    Dependency,
    DependencyNeverSatisfied,
    JobHeldUser,
    JobHeldAdmin,
    BeginTime,
    PartitionDown,
    PartitionTimeLimit,
    ReqNodeNotAvail,
    JobArrayTaskLimit,
    NodeDown,
    /// The user runs as many jobs as MaxJobs allows.
    AssocMaxJobsLimit,
}

impl PendingReason {
    pub fn name(self) -> &'static str {
        match self {
            PendingReason::None => "None",
            PendingReason::Priority => "Priority",
            PendingReason::Resources => "Resources",
            PendingReason::Dependency => "Dependency",
            PendingReason::DependencyNeverSatisfied => "DependencyNeverSatisfied",
            PendingReason::JobHeldUser => "JobHeldUser",
            PendingReason::JobHeldAdmin => "JobHeldAdmin",
            PendingReason::BeginTime => "BeginTime",
            PendingReason::PartitionDown => "PartitionDown",
            PendingReason::PartitionTimeLimit => "PartitionTimeLimit",
            PendingReason::ReqNodeNotAvail => "ReqNodeNotAvail",
            PendingReason::JobArrayTaskLimit => "JobArrayTaskLimit",
            PendingReason::NodeDown => "NodeDown",
            PendingReason::AssocMaxJobsLimit => "AssocMaxJobsLimit",
        }
    }
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How memory was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemRequest {
    /// Nothing asked: each allocated CPU brings its share of the node's memory.
    Default,
    /// `--mem=M`: per node. `--mem=0` means the whole node's memory.
    PerNode(u64),
    /// `--mem-per-cpu=M`.
    PerCpu(u64),
}

/// `--export`: which of the submitting shell's variables the job sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportPolicy {
    /// `ALL` (the default), plus any `VAR=value` given with it.
    All,
    /// `NONE`: only the Slurm variables, plus any `VAR=value` given.
    None,
    /// A list of names to pass through.
    Names(Vec<String>),
}

/// `--signal=[B:]SIG[@SECS]`: warn the job before its time limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalSpec {
    pub signal: i32,
    pub secs_before: u32,
    /// `B:` sends the signal to the batch shell only, not all its children.
    pub batch_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpenMode {
    Truncate,
    Append,
}

/// Everything a user asked for when submitting. It never changes after
/// submission except through explicit updates (`scontrol update`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub account: Option<String>,
    /// `None` means the cluster's default partition.
    pub partition: Option<String>,
    pub qos: Option<String>,
    pub nodes_min: u32,
    pub nodes_max: u32,
    /// Whether -N was given; without it the job may spread over as many
    /// nodes as it needs for its tasks.
    pub nodes_given: bool,
    pub ntasks: u32,
    pub ntasks_per_node: Option<u32>,
    pub cpus_per_task: u32,
    pub mem: MemRequest,
    /// GPUs per node.
    pub gpus_per_node: u32,
    pub gpu_type: Option<String>,
    /// Seconds; `None` takes the partition's default (or no limit).
    pub time_limit: Option<u64>,
    pub time_min: Option<u64>,
    pub exclusive: bool,
    pub nodelist: Vec<String>,
    pub exclude: Vec<String>,
    pub constraint: Option<String>,
    pub work_dir: String,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub stdin: Option<String>,
    pub open_mode: OpenMode,
    pub export: ExportPolicy,
    /// The variables the job starts with (already filtered by `export`).
    pub environment: Arc<[(String, String)]>,
    pub array: Option<ArraySpec>,
    pub dependency: Option<Dependency>,
    pub kill_on_invalid_dep: bool,
    pub requeue: bool,
    pub signal: Option<SignalSpec>,
    pub hold: bool,
    /// Epoch seconds.
    pub begin: Option<u64>,
    pub nice: i32,
    /// An absolute priority set by an operator (`scontrol update Priority=`);
    /// replaces the computed one.
    pub priority: Option<u64>,
    pub comment: Option<String>,
    pub mail_type: Option<String>,
    pub mail_user: Option<String>,
    pub submit_host: String,
    /// The batch script (`--wrap` becomes a two-line script). Shared, since
    /// thousands of jobs often carry the very same script.
    pub script: Arc<str>,
    /// The submitter's umask (Slurm's `SLURM_UMASK`): the job's files are
    /// created with it. `None`: the agent's default, 022.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
    /// An allocation made by `srun` or `salloc`, which hold it open to the
    /// leader while they live: when the client is gone (exited, killed,
    /// crashed) the leader cancels the job, as Slurm ends an allocation
    /// whose srun died.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_held: bool,
}

impl JobSpec {
    /// A minimal valid spec: one task, one CPU, run as `user`. Used by tests,
    /// benches and the simulator; real submissions come from `options`.
    pub fn simple(user: &str, script: &str) -> JobSpec {
        JobSpec {
            name: "job".into(),
            user: user.into(),
            uid: 1000,
            gid: 1000,
            account: None,
            partition: None,
            qos: None,
            nodes_min: 1,
            nodes_max: 1,
            nodes_given: false,
            ntasks: 1,
            ntasks_per_node: None,
            cpus_per_task: 1,
            mem: MemRequest::Default,
            gpus_per_node: 0,
            gpu_type: None,
            time_limit: None,
            time_min: None,
            exclusive: false,
            nodelist: Vec::new(),
            exclude: Vec::new(),
            constraint: None,
            work_dir: "/tmp".into(),
            stdout: None,
            stderr: None,
            stdin: None,
            open_mode: OpenMode::Truncate,
            export: ExportPolicy::All,
            environment: Arc::from(Vec::new()),
            array: None,
            dependency: None,
            kill_on_invalid_dep: false,
            requeue: true,
            signal: None,
            hold: false,
            begin: None,
            nice: 0,
            priority: None,
            comment: None,
            mail_type: None,
            mail_user: None,
            submit_host: "localhost".into(),
            script: Arc::from(script),
            umask: None,
            client_held: false,
        }
    }

    /// Total CPUs the job asks for.
    pub fn total_cpus(&self) -> u64 {
        u64::from(self.ntasks) * u64::from(self.cpus_per_task)
    }
}

/// How a job's process ended, Slurm's `ExitCode` `code:signal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: i32,
    pub signal: i32,
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.code, self.signal)
    }
}

/// Which array a job is a task of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayTask {
    pub array_id: JobId,
    pub task: u32,
}

/// One node's share of an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeShare {
    /// Index into the state's node table.
    pub node: u32,
    pub res: Resources,
    pub tasks: u32,
}

/// What a running job holds: its nodes and how much of each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub shares: Vec<NodeShare>,
    /// The time limit in force for this run, seconds (`None`: unlimited).
    pub time_limit: Option<u64>,
    pub partition: String,
}

impl Allocation {
    pub fn total(&self) -> Resources {
        self.shares.iter().fold(Resources::ZERO, |acc, s| acc.add(&s.res))
    }
}

/// What a running job becomes once its processes are confirmed gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndIntent {
    Cancel,
    Timeout,
    /// Back to PENDING (manual requeue), optionally held.
    Requeue {
        hold: bool,
    },
    /// The allocation's owner is done with it (`srun`/`salloc` outside a
    /// batch job): it ends COMPLETED, or FAILED with this exit.
    Complete {
        exit: ExitStatus,
    },
}

/// A job as the cluster tracks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub array: Option<ArrayTask>,
    pub spec: Arc<JobSpec>,
    pub state: JobState,
    pub reason: PendingReason,
    /// `Some(true)` when an operator held it, `Some(false)` for a user hold.
    pub held_by_admin: Option<bool>,
    pub submit_time: Time,
    /// Not before this time (begin time, or requeue back-off).
    pub eligible_time: Time,
    pub start_time: Option<Time>,
    pub end_time: Option<Time>,
    /// Present while active; kept after the end for reporting.
    pub alloc: Option<Allocation>,
    pub exit: Option<ExitStatus>,
    /// How many times this job went back to PENDING. Also the allocation
    /// epoch: reports carrying an older number are from a stale run.
    pub restart_count: u32,
    pub end_intent: Option<EndIntent>,
    /// In the accounting database (set once the writer has written it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accounted: bool,
    /// The batch step's peak memory in its last run, as its agent measured
    /// it (sacct's MaxRSS of `N.batch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rss_kb: Option<u64>,
    /// The batch step's CPU time in its last run, as its agent measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time: Option<CpuTime>,
    /// Why its last run ended before its script ran, as its agent said
    /// (`scontrol show job`'s Reason, sacct's Reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Steps launched inside the allocation (`srun`), oldest first; ids
    /// count on across requeues.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<crate::step::JobStep>,
    /// Earlier runs that ended in a requeue, oldest first (accounting keeps
    /// one row for each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<PastAttempt>,
    /// Counts changes accounting must (re)write: a mark of written for an
    /// older revision does not count (`Command::Accounted`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// CPU time that processes used, as the kernel counted it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTime {
    pub user_ms: u64,
    pub system_ms: u64,
}

impl std::ops::Add for CpuTime {
    type Output = CpuTime;
    fn add(self, other: CpuTime) -> CpuTime {
        CpuTime { user_ms: self.user_ms + other.user_ms, system_ms: self.system_ms + other.system_ms }
    }
}

/// An earlier run of a job, ended by a node failure or a requeue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastAttempt {
    pub attempt: u32,
    pub eligible_time: Time,
    pub start_time: Time,
    pub end_time: Time,
    /// NODE_FAIL, or REQUEUED when asked for.
    pub state: JobState,
    pub exit: Option<ExitStatus>,
    pub alloc: Allocation,
    pub max_rss_kb: Option<u64>,
    pub cpu_time: Option<CpuTime>,
    /// Why it ended.
    pub reason: String,
}

/// What a job waits with when it enters the queue: the rest of a new
/// [`Job`] follows from it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub reason: PendingReason,
    pub held_by_admin: Option<bool>,
    pub submit_time: Time,
    pub eligible_time: Time,
}

impl Job {
    /// A job that has never run: PENDING, nothing allocated, nothing measured.
    pub fn pending(id: JobId, array: Option<ArrayTask>, spec: Arc<JobSpec>, q: Queued) -> Job {
        Job {
            id,
            array,
            spec,
            state: JobState::Pending,
            reason: q.reason,
            held_by_admin: q.held_by_admin,
            submit_time: q.submit_time,
            eligible_time: q.eligible_time,
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
        }
    }

    /// Whether accounting has something of this job's to write: its end,
    /// or a run that was requeued.
    pub fn wants_accounting(&self) -> bool {
        !self.accounted && (self.state.is_terminal() || !self.attempts.is_empty())
    }

    /// The worst exit of a run's steps (`srun`s), Slurm's DerivedExitCode:
    /// the highest code, then the highest signal.
    pub fn derived_exit(&self, attempt: u32) -> Option<ExitStatus> {
        self.steps.iter().filter(|s| s.attempt == attempt).filter_map(|s| s.exit).max_by_key(|e| (e.code, e.signal))
    }

    /// The name users see: `1234`, or `1000_7` for an array task.
    pub fn display_id(&self) -> String {
        match self.array {
            Some(a) => format!("{}_{}", a.array_id, a.task),
            None => self.id.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_refs() {
        assert_eq!(JobRef::parse("1234"), Ok(JobRef::job(1234)));
        assert_eq!(JobRef::parse("1234_7"), Ok(JobRef { id: 1234, task: Some(7) }));
        assert_eq!(JobRef::parse("1234_7").unwrap().to_string(), "1234_7");
        for bad in ["", "x", "12_", "_3", "1_2_3", "-4", "99999999999999999999"] {
            assert!(JobRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn states_by_name_and_code() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.name()), Ok(s));
            assert_eq!(JobState::parse(&s.code().to_lowercase()), Ok(s));
        }
        assert!(JobState::parse("DONE").unwrap_err().contains("unknown job state"));
    }
}
