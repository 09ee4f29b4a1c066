//! Wire types shared by the controller, agents and clients. JSON over HTTP:
//! the REST API under `/api/v1`, and the agent protocol under
//! `/api/v1/agent` (orders streamed as newline-delimited JSON).

use drover_core::job::{CpuTime, JobId};
use drover_core::launch::LaunchOrder;
use drover_core::state::{CancelFilter, StepOutcome};
use drover_core::step::StepId;
use drover_core::{JobSpec, Resources};
use serde::{Deserialize, Serialize};

mod metrics_text;
mod table;

pub use metrics_text::classic_metrics_text;
pub use table::{push_table_elapsed, queue_table_header, JobRow, JOB_ROW_HEADER};

/// `POST /api/v1/jobs`: one or many jobs, accepted all or none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitJobs {
    pub jobs: Vec<JobSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submitted {
    pub job_ids: Vec<JobId>,
}

/// The answer to `POST /api/v1/jobs/test` (`sbatch --test-only`): where
/// and when each job would start; nothing was submitted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WouldStart {
    pub estimates: Vec<StartEstimate>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartEstimate {
    /// The id the job would get if it were submitted now (none is used).
    pub job_id: JobId,
    /// Epoch milliseconds; `None` when no start can be foreseen (the
    /// resources are held by jobs without a time limit, or the partition
    /// is down).
    pub start_ms: Option<u64>,
    /// A Slurm host list (`node[1-2]`); empty without a start.
    pub nodes: String,
    /// CPUs it would hold in all.
    pub cpus: u32,
    pub partition: String,
}

/// Every error response: a sentence for a person.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// Set when the answering controller is not the leader: the leader's
    /// address, where the client should send the request instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// The header that names a client's request so that a retry of it is
/// applied at most once (see `Command::Once`).
pub const REQUEST_HEADER: &str = "x-drover-request";

/// Read from any controller, not only the leader (`?stale=true`): faster,
/// and it works without a leader, but may lag behind.
pub const STALE_PARAM: &str = "stale";

/// `GET /api/v1/controllers`: the Raft group as the answering controller
/// sees it (the leader also knows how far each member has replicated).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Controllers {
    /// Which controller answered.
    pub this: u64,
    pub leader: Option<u64>,
    pub term: u64,
    /// Leader, Follower, Candidate or Learner.
    pub role: String,
    pub last_log_index: Option<u64>,
    /// The last index a majority holds: computed on the leader; elsewhere
    /// the applied index (a follower applies what it learns is committed).
    #[serde(default)]
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// Log entries up to here were compacted into the snapshot.
    pub purged_index: Option<u64>,
    pub members: Vec<Member>,
}

/// `POST /api/v1/tokens`: a session token for the caller.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenRequest {
    /// Seconds; default 8 hours, at most 7 days.
    #[serde(default)]
    pub lifetime_s: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenGrant {
    /// Send as `Authorization: Bearer <token>` (or `?token=` to the event stream).
    pub token: String,
    pub uid: u32,
    pub expires_ms: u64,
}

/// `POST /api/v1/jobs/{id}/signal`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignalJob {
    pub signal: i32,
}

/// `GET /api/v1/partitions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionList {
    pub partitions: Vec<PartitionView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionView {
    pub name: String,
    pub is_default: bool,
    pub up: bool,
    /// Seconds; `None`: no maximum.
    pub max_time: Option<u64>,
    pub default_time: Option<u64>,
    /// The nodes registered in it, in registration order.
    pub nodes: Vec<String>,
}

/// `GET /api/v1/whoami`: the identity a request proves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    pub uid: u32,
    pub user: String,
    /// Root or a configured operator: may act on every job and node.
    pub operator: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub addr: String,
    /// false for a learner (replicated to, but not voting).
    pub voter: bool,
    /// Known on the leader only: the last log index the member holds.
    pub matched_index: Option<u64>,
    /// Known on the leader only: entries the member is behind the leader.
    pub lag: Option<u64>,
}

/// `POST /api/v1/controllers`: add a controller (as a learner until it has
/// caught up, then as a voter).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinController {
    pub id: u64,
    pub addr: String,
}

/// The controllers a client may talk to and the one it talks to now. Pure
/// bookkeeping; the HTTP clients of the CLI and the agent drive it.
#[derive(Debug)]
pub struct Endpoints {
    inner: std::sync::Mutex<(Vec<String>, usize)>,
    /// `https` when the cluster speaks TLS: bare addresses (and the leader
    /// a controller names) get it.
    scheme: &'static str,
}

/// `addr` as a base URL: a full `http(s)://` URL as it is, a bare
/// `host:port` with `scheme`.
pub fn base_url(scheme: &str, addr: &str) -> String {
    let addr = addr.trim_end_matches('/');
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("{scheme}://{addr}")
    }
}

impl Endpoints {
    /// `ADDR[,ADDR…]`, each `host:port` or a full `http://` URL.
    pub fn parse(list: &str) -> Result<Endpoints, String> {
        Endpoints::parse_with(list, false)
    }

    /// As [`Endpoints::parse`]; `tls`: bare addresses are `https://`.
    pub fn parse_with(list: &str, tls: bool) -> Result<Endpoints, String> {
        let scheme = if tls { "https" } else { "http" };
        let addrs: Vec<String> =
            list.split(',').map(str::trim).filter(|a| !a.is_empty()).map(|a| base_url(scheme, a)).collect();
        if addrs.is_empty() {
            return Err(format!("no controller address in '{list}'"));
        }
        Ok(Endpoints { inner: std::sync::Mutex::new((addrs, 0)), scheme })
    }

    fn base_url(&self, addr: &str) -> String {
        base_url(self.scheme, addr)
    }

    /// The base URL to use now.
    pub fn current(&self) -> String {
        let g = self.inner.lock().expect("endpoints lock");
        g.0[g.1].clone()
    }

    /// Every address, in order.
    pub fn all(&self) -> Vec<String> {
        self.inner.lock().expect("endpoints lock").0.clone()
    }

    /// `failed` did not answer: move on to the next address (unless someone
    /// already moved on).
    pub fn failed(&self, failed: &str) {
        let mut g = self.inner.lock().expect("endpoints lock");
        if g.0[g.1] == failed {
            g.1 = (g.1 + 1) % g.0.len();
        }
    }

    /// `base` answered that it is not the leader (421): go to the leader it
    /// named, or, if it knew none, on to the next address.
    pub fn misdirected(&self, base: &str, answer: Option<ErrorBody>) {
        match answer.and_then(|b| b.leader) {
            Some(leader) => self.redirect(&leader),
            None => self.failed(base),
        }
    }

    /// A controller named the leader: talk to it from now on (it is added
    /// if it was not in the list: membership may have changed).
    pub fn redirect(&self, leader: &str) {
        let url = self.base_url(leader);
        let mut g = self.inner.lock().expect("endpoints lock");
        match g.0.iter().position(|a| *a == url) {
            Some(i) => g.1 = i,
            None => {
                g.0.push(url);
                g.1 = g.0.len() - 1;
            }
        }
    }
}

/// `POST /api/v1/jobs/cancel`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CancelJobs {
    pub filter: CancelFilter,
}

/// What a cancel did, item by item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cancelled {
    pub cancelled: Vec<String>,
    pub refused: Vec<(String, String)>,
}

/// A job (or the pending rest of an array) as clients see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// `1234`, `1000_7`, or `1000_[8-99]` for an array's pending tasks.
    pub id: String,
    pub job_id: JobId,
    pub array_job_id: Option<JobId>,
    pub array_task: Option<String>,
    pub name: String,
    pub user: String,
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    pub account: Option<String>,
    pub partition: String,
    pub state: String,
    pub state_code: String,
    pub reason: String,
    pub nodes: String,
    pub num_nodes: u32,
    pub num_cpus: u64,
    /// Seconds; `None` is unlimited.
    pub time_limit: Option<u64>,
    /// Epoch milliseconds.
    pub submit_time: u64,
    pub start_time: Option<u64>,
    pub end_time: Option<u64>,
    pub exit_code: Option<String>,
    pub restart_count: u32,
    pub work_dir: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    /// Memory in megabytes, all nodes together: what the job holds once
    /// started, what it asked for before (`None`: its CPUs' share, known
    /// once placed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_mb: Option<u64>,
    /// The batch step's peak memory (sacct's MaxRSS of `N.batch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rss_kb: Option<u64>,
    /// The batch step's CPU time, once measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuTime>,
    /// The worst exit of the run's steps, `CODE:SIGNAL` (sacct's
    /// DerivedExitCode); `None` without steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived_exit_code: Option<String>,
    /// Steps launched inside the job's run (`srun`), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepView>,
    /// What the job asked for (`-n`, `-c`, `--nice`).
    #[serde(default)]
    pub ntasks: u32,
    #[serde(default)]
    pub cpus_per_task: u32,
    #[serde(default)]
    pub nice: i32,
    /// `--mem` (per node) or `--mem-per-cpu`, in megabytes, as asked;
    /// neither when it takes its CPUs' share of a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_per_node_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_per_cpu_mb: Option<u64>,
    /// What its dependency still waits for, as `scontrol show job` prints
    /// it (`afterok:12(unfulfilled)`); `None` when nothing is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency: Option<String>,
    /// `--nodelist`, `--exclude` and `--constraint`, as asked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub req_nodes: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub exc_nodes: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<String>,
    /// Where its standard input comes from (with [`JobView::of_job`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdin: String,
}

/// A job step as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    /// `1234.0`, `1000_7.2`.
    pub id: String,
    pub step: StepId,
    pub name: String,
    pub state: String,
    pub nodes: String,
    pub num_nodes: u32,
    pub ntasks: u32,
    pub num_cpus: u64,
    /// Epoch milliseconds.
    pub start_time: u64,
    pub end_time: Option<u64>,
    pub exit_code: Option<String>,
    /// The largest task's peak memory, once its agents reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rss_kb: Option<u64>,
    /// All its tasks' CPU time, once its agents reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuTime>,
}

/// `POST /api/v1/jobs/{id}/steps` answers with where to launch the step:
/// each node's agent and the grant that lets it run the node's ranks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepCreated {
    pub job_id: JobId,
    pub step: StepId,
    pub nodes: Vec<StepNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepNode {
    pub name: String,
    /// The agent's `host:port`.
    pub addr: String,
    pub first_rank: u32,
    pub tasks: u32,
    /// A [`drover_core::launch::StepGrant`] as JSON, and its seal.
    pub grant: String,
    pub seal: String,
}

/// `POST /api/v1/jobs/{id}/steps/{step}/end` and `POST /api/v1/jobs/{id}/complete`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ExitReport {
    pub exit_code: i32,
    #[serde(default)]
    pub signal: i32,
    /// The step was interrupted (srun got SIGINT/SIGTERM): CANCELLED.
    #[serde(default)]
    pub cancelled: bool,
}

/// `PATCH /api/v1/jobs/{id}` (`scontrol update`): what to change, in
/// Slurm's words.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpdateJob {
    /// A time in Slurm's forms (`30`, `2:00:00`, `1-00:00:00`, `UNLIMITED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nice: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// `POST /api/v1/steps` on an agent: run this node's ranks of a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchTasks {
    pub grant: String,
    pub seal: String,
    pub argv: Vec<String>,
    /// `srun`'s environment; the grant's variables are laid over it.
    pub env: Vec<(String, String)>,
    pub cwd: String,
}

/// What an agent streams back to `srun` while a step's tasks run: binary
/// frames of `[kind u8][rank u32 LE][length u32 LE][bytes]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskFrame {
    Stdout {
        rank: u32,
        data: Vec<u8>,
    },
    Stderr {
        rank: u32,
        data: Vec<u8>,
    },
    /// The task ended (signal 0: it exited with `code`).
    Exit {
        rank: u32,
        code: i32,
        signal: i32,
    },
    /// The node could not run its tasks.
    Error {
        message: String,
    },
    /// Nothing to say: sent every few seconds so that the agent notices a
    /// client that is gone (killed with -9, its host down) by the write
    /// failing, even while the tasks print nothing.
    Ping,
}

impl TaskFrame {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, rank, data): (u8, u32, std::borrow::Cow<[u8]>) = match self {
            TaskFrame::Stdout { rank, data } => (1, *rank, data.into()),
            TaskFrame::Stderr { rank, data } => (2, *rank, data.into()),
            TaskFrame::Exit { rank, code, signal } => {
                (3, *rank, [code.to_le_bytes(), signal.to_le_bytes()].concat().into())
            }
            TaskFrame::Error { message } => (4, 0, message.as_bytes().into()),
            TaskFrame::Ping => (5, 0, (&[][..]).into()),
        };
        let mut out = Vec::with_capacity(9 + data.len());
        out.push(kind);
        out.extend_from_slice(&rank.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    /// Takes one whole frame off the front of `buf`, if there is one.
    pub fn decode(buf: &mut Vec<u8>) -> Result<Option<TaskFrame>, String> {
        if buf.len() < 9 {
            return Ok(None);
        }
        let rank = u32::from_le_bytes(buf[1..5].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(buf[5..9].try_into().expect("4 bytes")) as usize;
        if len > 16 << 20 {
            return Err(format!("a task frame of {len} bytes is too long"));
        }
        if buf.len() < 9 + len {
            return Ok(None);
        }
        let kind = buf[0];
        let data: Vec<u8> = buf.drain(..9 + len).skip(9).collect();
        Ok(Some(match kind {
            1 => TaskFrame::Stdout { rank, data },
            2 => TaskFrame::Stderr { rank, data },
            3 if data.len() == 8 => TaskFrame::Exit {
                rank,
                code: i32::from_le_bytes(data[..4].try_into().expect("4 bytes")),
                signal: i32::from_le_bytes(data[4..].try_into().expect("4 bytes")),
            },
            4 => TaskFrame::Error { message: String::from_utf8_lossy(&data).into_owned() },
            5 => TaskFrame::Ping,
            k => return Err(format!("unknown task frame kind {k}")),
        }))
    }
}

/// `GET /api/v1/usage`: use per user and account over `[since, until)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub since: u64,
    pub until: u64,
    pub rows: Vec<UsageRow>,
}

/// One user's (and account's) use of the cluster over a window, as the
/// API reports it (the accounting crate reads it from SQL into this type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub user: String,
    /// Empty for jobs without one.
    pub account: String,
    pub jobs: u64,
    pub completed: u64,
    /// FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL.
    pub failed: u64,
    pub cancelled: u64,
    pub cpu_seconds: u64,
    pub gpu_seconds: u64,
}

/// `GET /api/v1/history`: finished jobs from the accounting database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub jobs: Vec<JobView>,
    /// Pass as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

/// A node as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub state: String,
    pub reason: Option<String>,
    pub partitions: Vec<String>,
    pub total: Resources,
    pub alloc: Resources,
    pub features: Vec<String>,
    pub jobs: u32,
    pub last_heartbeat: u64,
    /// What the agent registered: `host:port` of its listener, or the host.
    #[serde(default)]
    pub addr: String,
    /// ON, POWERING_DOWN, POWERED_DOWN or POWERING_UP (power saving).
    #[serde(default = "power_on")]
    pub power: String,
    /// The healer's repair in flight: `KIND by PROVIDER since TIME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<String>,
}

fn power_on() -> String {
    "ON".into()
}

impl NodeView {
    /// The mark sinfo appends to the state: `~` powered down, `#` powering
    /// up, `%` powering down.
    pub fn power_mark(&self) -> &'static str {
        match self.power.as_str() {
            "POWERED_DOWN" => "~",
            "POWERING_UP" => "#",
            "POWERING_DOWN" => "%",
            _ => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeList {
    pub nodes: Vec<NodeView>,
}

/// `POST /api/v1/nodes`: nodes that exist before their machines do (cloud
/// nodes), powered down until power saving starts them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DefineNodes {
    /// A hostlist (`node[3-8]`).
    pub nodes: String,
    pub cpus: u32,
    pub memory_mb: u64,
    #[serde(default)]
    pub gpus: u32,
    #[serde(default)]
    pub features: Vec<String>,
}

/// `POST /api/v1/nodes/{name}/stop-machine`: what the provider did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineStopped {
    pub node: String,
    pub provider: String,
    pub detail: String,
}

/// `POST /api/v1/nodes/{name}/drain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Drain {
    pub reason: String,
}

/// `GET /api/v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub ok: bool,
    pub leader: Option<u64>,
    pub nodes: Vec<(String, String)>,
    pub problems: Vec<String>,
}

/// `POST /api/v1/agent/register`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Register {
    pub name: String,
    pub addr: String,
    pub total: Resources,
    pub features: Vec<String>,
    pub known_steps: Vec<(JobId, u32)>,
}

/// What the controller tells an agent to do, streamed one JSON per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Order {
    Launch(Box<LaunchOrder>),
    Kill {
        job: JobId,
        attempt: u32,
    },
    Signal {
        job: JobId,
        attempt: u32,
        signal: i32,
    },
    /// A running job's time limit changed (`scontrol update`): seconds
    /// from its start, `None` for none.
    TimeLimit {
        job: JobId,
        attempt: u32,
        limit: Option<u64>,
    },
    /// Sent periodically so both ends notice a dead connection.
    Ping,
}

/// `POST /api/v1/agent/reports`: what an agent has to tell, batched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reports {
    pub reports: Vec<Report>,
}

/// One step started or ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub node: String,
    pub job: JobId,
    pub attempt: u32,
    /// `None`: started. `Some`: finished this way.
    pub finished: Option<StepOutcome>,
    /// The finished step's peak memory, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rss_kb: Option<u64>,
    /// The finished step's CPU time, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<drover_core::job::CpuTime>,
    /// `Some`: not the batch step but this `srun` step, whose tasks on the
    /// node are gone; the report carries what they used (`finished` unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepId>,
    /// With `step`: its `srun` hung up (exited, was killed, lost its host)
    /// before the tasks ended, and the agent killed them; the controller
    /// records the step's end, which that srun never will.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
    /// With `finished`: the step could not start, for this reason (its
    /// output file, working directory or user), which the job's user is
    /// told in `scontrol show job`, the events and accounting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// One applied event, as `GET /api/v1/events` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Increasing from 1 on this controller; ask for events after it.
    pub seq: u64,
    /// When this controller applied it, milliseconds since the epoch.
    pub time_ms: u64,
    /// The event's kind: JobRequeued, NodeStateChanged, JobFinished, …
    pub kind: String,
    pub job: Option<u64>,
    pub node: Option<String>,
    /// A sentence for people.
    pub text: String,
}

/// `GET /api/v1/events?after=SEQ`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventList {
    pub events: Vec<EventRecord>,
}

/// `POST /api/v1/jobs/{id}/requeue`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Requeue {
    /// Hold the job once it is back in the queue.
    #[serde(default)]
    pub hold: bool,
}

/// `POST /api/v1/agent/health/{node}`: the result of the node's health check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthReport {
    pub ok: bool,
    /// What the check printed (trimmed), the drain reason when it failed.
    pub message: String,
}

#[cfg(test)]
mod task_frame_tests {
    use super::TaskFrame;

    #[test]
    fn frames_survive_any_split_of_the_stream() {
        let frames = vec![
            TaskFrame::Stdout { rank: 3, data: b"hello\n".to_vec() },
            TaskFrame::Stderr { rank: 0, data: vec![0, 255, 10] },
            TaskFrame::Exit { rank: 3, code: -1, signal: 9 },
            TaskFrame::Error { message: "no such file".into() },
            TaskFrame::Stdout { rank: 1, data: Vec::new() },
        ];
        let wire: Vec<u8> = frames.iter().flat_map(TaskFrame::encode).collect();
        for chunk in [1, 2, 7, 9, 64] {
            let (mut buf, mut got) = (Vec::new(), Vec::new());
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(f) = TaskFrame::decode(&mut buf).unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "chunks of {chunk}");
            assert!(buf.is_empty());
        }
        let mut bad = vec![9, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(TaskFrame::decode(&mut bad).unwrap_err().contains("unknown task frame kind 9"));
    }
}
