//! The rows: what a finished job, a step and an event leave behind, made
//! from the cluster state and read back from either database.

use drover_core::job::{Allocation, CpuTime, ExitStatus, Job, JobState, PastAttempt};
use drover_core::{hostlist, State};
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};

/// One run of a job as accounting keeps it: its last, or an earlier one
/// that ended in a requeue (`superseded`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: u64,
    pub attempt: u32,
    /// `1234` or `1000_7`.
    pub display_id: String,
    pub array_job_id: Option<u64>,
    pub array_task: Option<u32>,
    pub name: String,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub account: Option<String>,
    pub partition: String,
    pub submit_ms: u64,
    pub eligible_ms: u64,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub state: String,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    pub nodes: String,
    pub num_nodes: u32,
    pub alloc_cpus: u64,
    pub alloc_mem_mb: Option<u64>,
    pub alloc_gpus: u64,
    pub time_limit_s: Option<u64>,
    pub work_dir: String,
    pub max_rss_kb: Option<u64>,
    pub restart_count: u32,
    /// The worst exit of the run's steps (`srun`s): Slurm's DerivedExitCode.
    #[serde(default)]
    pub derived_exit_code: Option<i32>,
    #[serde(default)]
    pub derived_exit_signal: Option<i32>,
    /// The batch step's CPU time.
    #[serde(default)]
    pub cpu_user_ms: Option<u64>,
    #[serde(default)]
    pub cpu_system_ms: Option<u64>,
    /// Why an earlier run ended (a requeue's cause); `None` for the last.
    #[serde(default)]
    pub reason: Option<String>,
    /// An earlier run: the job was requeued and ran again.
    #[serde(default)]
    pub superseded: bool,
    #[serde(default)]
    pub steps: Vec<StepRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step_id: u32,
    pub name: String,
    pub nodes: String,
    pub num_nodes: u32,
    pub ntasks: u32,
    pub cpus: u64,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    pub state: String,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    /// The largest task's peak memory.
    #[serde(default)]
    pub max_rss_kb: Option<u64>,
    /// All its tasks' CPU time.
    #[serde(default)]
    pub cpu_user_ms: Option<u64>,
    #[serde(default)]
    pub cpu_system_ms: Option<u64>,
}

/// Something that happened to the cluster: a node down or back, a drain, a
/// requeue, a failover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub time_ms: u64,
    pub kind: String,
    pub job_id: Option<u64>,
    pub node: Option<String>,
    pub text: String,
}

/// One run's own facts, the rest being the job's.
struct Run<'a> {
    attempt: u32,
    eligible_ms: u64,
    start_ms: Option<u64>,
    end_ms: Option<u64>,
    state: JobState,
    exit: Option<ExitStatus>,
    alloc: Option<&'a Allocation>,
    max_rss_kb: Option<u64>,
    cpu: Option<CpuTime>,
    reason: String,
    superseded: bool,
}

impl JobRecord {
    /// What accounting has to write of a job: each earlier run, and the
    /// last one once the job has ended.
    pub fn records(state: &State, j: &Job) -> Vec<JobRecord> {
        let mut out: Vec<JobRecord> = j.attempts.iter().map(|a| Self::of_past(state, j, a)).collect();
        if j.state.is_terminal() {
            out.push(Self::of(state, j));
        }
        out
    }

    /// The record of a finished job's last run.
    pub fn of(state: &State, j: &Job) -> JobRecord {
        let run = Run {
            attempt: j.restart_count,
            eligible_ms: j.eligible_time,
            start_ms: j.start_time,
            end_ms: j.end_time,
            state: j.state,
            exit: j.exit,
            alloc: j.alloc.as_ref(),
            max_rss_kb: j.max_rss_kb,
            cpu: j.cpu_time,
            // As Slurm's accounting shows a job that ran to its end; one
            // that could not start says why.
            reason: j.failure.clone().unwrap_or_else(|| "None".to_string()),
            superseded: false,
        };
        Self::of_run(state, j, run)
    }

    fn of_past(state: &State, j: &Job, a: &PastAttempt) -> JobRecord {
        let run = Run {
            attempt: a.attempt,
            eligible_ms: a.eligible_time,
            start_ms: Some(a.start_time),
            end_ms: Some(a.end_time),
            state: a.state,
            exit: a.exit,
            alloc: Some(&a.alloc),
            max_rss_kb: a.max_rss_kb,
            cpu: a.cpu_time,
            reason: a.reason.clone(),
            superseded: true,
        };
        Self::of_run(state, j, run)
    }

    fn of_run(state: &State, j: &Job, run: Run) -> JobRecord {
        let names = |nodes: &mut dyn Iterator<Item = u32>| -> (String, u32) {
            let names: Vec<&str> = nodes.map(|n| state.nodes()[n as usize].name.as_str()).collect();
            (hostlist::compress(&names), names.len() as u32)
        };
        let (nodes, num_nodes) = match run.alloc {
            Some(a) => names(&mut a.shares.iter().map(|s| s.node)),
            None => (String::new(), 0),
        };
        let total = run.alloc.map(|a| a.total());
        let partition = match run.alloc {
            Some(a) => a.partition.clone(),
            None => state
                .partition_for(&j.spec)
                .map(|p| p.name().to_string())
                .unwrap_or_else(|_| j.spec.partition.clone().unwrap_or_default()),
        };
        let derived = j.derived_exit(run.attempt);
        let steps = j
            .steps
            .iter()
            .filter(|s| s.attempt == run.attempt)
            .map(|s| {
                let (nodes, num_nodes) = names(&mut s.nodes.iter().copied());
                let cpu = s.cpu_time();
                StepRecord {
                    step_id: s.id,
                    name: s.name.clone(),
                    nodes,
                    num_nodes,
                    ntasks: s.ntasks(),
                    cpus: u64::from(s.ntasks()) * u64::from(s.cpus_per_task),
                    start_ms: s.start,
                    end_ms: s.end,
                    state: s.state.name().to_string(),
                    exit_code: s.exit.map(|e| e.code),
                    exit_signal: s.exit.map(|e| e.signal),
                    max_rss_kb: s.max_rss_kb(),
                    cpu_user_ms: cpu.map(|c| c.user_ms),
                    cpu_system_ms: cpu.map(|c| c.system_ms),
                }
            })
            .collect();
        JobRecord {
            job_id: j.id,
            attempt: run.attempt,
            display_id: j.display_id(),
            array_job_id: j.array.map(|a| a.array_id),
            array_task: j.array.map(|a| a.task),
            name: j.spec.name.clone(),
            user: j.spec.user.clone(),
            uid: j.spec.uid,
            gid: j.spec.gid,
            account: j.spec.account.clone(),
            partition,
            submit_ms: j.submit_time,
            eligible_ms: run.eligible_ms,
            start_ms: run.start_ms,
            end_ms: run.end_ms,
            state: run.state.name().to_string(),
            exit_code: run.exit.map(|e| e.code),
            exit_signal: run.exit.map(|e| e.signal),
            nodes,
            num_nodes,
            alloc_cpus: total.map_or(j.spec.total_cpus(), |t| u64::from(t.cpus)),
            alloc_mem_mb: total.map(|t| t.mem_mb),
            alloc_gpus: total.map_or(0, |t| u64::from(t.gpus)),
            time_limit_s: run.alloc.map_or(j.spec.time_limit, |a| a.time_limit),
            work_dir: j.spec.work_dir.clone(),
            max_rss_kb: run.max_rss_kb,
            restart_count: run.attempt,
            derived_exit_code: derived.map(|e| e.code),
            derived_exit_signal: derived.map(|e| e.signal),
            cpu_user_ms: run.cpu.map(|c| c.user_ms),
            cpu_system_ms: run.cpu.map(|c| c.system_ms),
            reason: Some(run.reason),
            superseded: run.superseded,
            steps,
        }
    }

    pub(crate) fn bind<'q>(&self, q: Query<'q, Any, AnyArguments<'q>>) -> Query<'q, Any, AnyArguments<'q>> {
        let int = |v: u64| v as i64;
        q.bind(int(self.job_id))
            .bind(i64::from(self.attempt))
            .bind(self.display_id.clone())
            .bind(self.array_job_id.map(int))
            .bind(self.array_task.map(i64::from))
            .bind(self.name.clone())
            .bind(self.user.clone())
            .bind(i64::from(self.uid))
            .bind(i64::from(self.gid))
            .bind(self.account.clone())
            .bind(self.partition.clone())
            .bind(int(self.submit_ms))
            .bind(int(self.eligible_ms))
            .bind(self.start_ms.map(int))
            .bind(self.end_ms.map(int))
            .bind(self.state.clone())
            .bind(self.exit_code.map(i64::from))
            .bind(self.exit_signal.map(i64::from))
            .bind(self.nodes.clone())
            .bind(i64::from(self.num_nodes))
            .bind(int(self.alloc_cpus))
            .bind(self.alloc_mem_mb.map(int))
            .bind(int(self.alloc_gpus))
            .bind(self.time_limit_s.map(int))
            .bind(self.work_dir.clone())
            .bind(self.max_rss_kb.map(int))
            .bind(i64::from(self.restart_count))
            .bind(self.derived_exit_code.map(i64::from))
            .bind(self.derived_exit_signal.map(i64::from))
            .bind(self.cpu_user_ms.map(int))
            .bind(self.cpu_system_ms.map(int))
            .bind(self.reason.clone())
            .bind(i64::from(self.superseded))
    }

    pub(crate) fn from_row(r: &AnyRow) -> Result<JobRecord, sqlx::Error> {
        let u = |c: &str| r.try_get::<i64, _>(c).map(|v| v as u64);
        let ou = |c: &str| r.try_get::<Option<i64>, _>(c).map(|v| v.map(|v| v as u64));
        let oi = |c: &str| r.try_get::<Option<i64>, _>(c).map(|v| v.map(|v| v as i32));
        Ok(JobRecord {
            job_id: u("job_id")?,
            attempt: u("attempt")? as u32,
            display_id: r.try_get("display_id")?,
            array_job_id: ou("array_job_id")?,
            array_task: ou("array_task")?.map(|t| t as u32),
            name: r.try_get("name")?,
            user: r.try_get("user_name")?,
            uid: u("uid")? as u32,
            gid: u("gid")? as u32,
            account: r.try_get("account")?,
            partition: r.try_get("partition")?,
            submit_ms: u("submit_ms")?,
            eligible_ms: u("eligible_ms")?,
            start_ms: ou("start_ms")?,
            end_ms: ou("end_ms")?,
            state: r.try_get("state")?,
            exit_code: oi("exit_code")?,
            exit_signal: oi("exit_signal")?,
            nodes: r.try_get("nodes")?,
            num_nodes: u("num_nodes")? as u32,
            alloc_cpus: u("alloc_cpus")?,
            alloc_mem_mb: ou("alloc_mem_mb")?,
            alloc_gpus: u("alloc_gpus")?,
            time_limit_s: ou("time_limit_s")?,
            work_dir: r.try_get("work_dir")?,
            max_rss_kb: ou("max_rss_kb")?,
            restart_count: u("restart_count")? as u32,
            derived_exit_code: oi("derived_exit_code")?,
            derived_exit_signal: oi("derived_exit_signal")?,
            cpu_user_ms: ou("cpu_user_ms")?,
            cpu_system_ms: ou("cpu_system_ms")?,
            reason: r.try_get("reason")?,
            superseded: u("superseded")? != 0,
            steps: Vec::new(),
        })
    }
}

impl StepRecord {
    pub(crate) fn bind<'q>(
        &self,
        j: &JobRecord,
        q: Query<'q, Any, AnyArguments<'q>>,
    ) -> Query<'q, Any, AnyArguments<'q>> {
        let int = |v: u64| v as i64;
        q.bind(int(j.job_id))
            .bind(i64::from(j.attempt))
            .bind(i64::from(self.step_id))
            .bind(self.name.clone())
            .bind(self.nodes.clone())
            .bind(i64::from(self.num_nodes))
            .bind(i64::from(self.ntasks))
            .bind(int(self.cpus))
            .bind(int(self.start_ms))
            .bind(self.end_ms.map(int))
            .bind(self.state.clone())
            .bind(self.exit_code.map(i64::from))
            .bind(self.exit_signal.map(i64::from))
            .bind(self.max_rss_kb.map(int))
            .bind(self.cpu_user_ms.map(int))
            .bind(self.cpu_system_ms.map(int))
    }

    /// (job id, attempt, the step).
    pub(crate) fn from_row(r: &AnyRow) -> Result<(u64, u32, StepRecord), sqlx::Error> {
        let u = |c: &str| r.try_get::<i64, _>(c).map(|v| v as u64);
        let oi = |c: &str| r.try_get::<Option<i64>, _>(c).map(|v| v.map(|v| v as i32));
        let ou = |c: &str| r.try_get::<Option<i64>, _>(c).map(|v| v.map(|v| v as u64));
        let step = StepRecord {
            step_id: u("step_id")? as u32,
            name: r.try_get("name")?,
            nodes: r.try_get("nodes")?,
            num_nodes: u("num_nodes")? as u32,
            ntasks: u("ntasks")? as u32,
            cpus: u("cpus")?,
            start_ms: u("start_ms")?,
            end_ms: r.try_get::<Option<i64>, _>("end_ms")?.map(|v| v as u64),
            state: r.try_get("state")?,
            exit_code: oi("exit_code")?,
            exit_signal: oi("exit_signal")?,
            max_rss_kb: ou("max_rss_kb")?,
            cpu_user_ms: ou("cpu_user_ms")?,
            cpu_system_ms: ou("cpu_system_ms")?,
        };
        Ok((u("job_id")?, u("attempt")? as u32, step))
    }
}

impl EventRecord {
    pub(crate) fn bind<'q>(&self, q: Query<'q, Any, AnyArguments<'q>>) -> Query<'q, Any, AnyArguments<'q>> {
        q.bind(self.time_ms as i64)
            .bind(self.kind.clone())
            .bind(self.job_id.map(|j| j as i64))
            .bind(self.node.clone())
            .bind(self.text.clone())
    }

    pub(crate) fn from_row(r: &AnyRow) -> Result<EventRecord, crate::Error> {
        Ok(EventRecord {
            time_ms: r.try_get::<i64, _>("time_ms")? as u64,
            kind: r.try_get("kind")?,
            job_id: r.try_get::<Option<i64>, _>("job_id")?.map(|v| v as u64),
            node: r.try_get("node")?,
            text: r.try_get("text")?,
        })
    }
}

pub(crate) const JOB_COLUMNS: &str =
    "job_id, attempt, display_id, array_job_id, array_task, name, user_name, uid, gid, \
     account, partition, submit_ms, eligible_ms, start_ms, end_ms, state, exit_code, exit_signal, nodes, num_nodes, \
     alloc_cpus, alloc_mem_mb, alloc_gpus, time_limit_s, work_dir, max_rss_kb, restart_count, derived_exit_code, \
     derived_exit_signal, cpu_user_ms, cpu_system_ms, reason, superseded";

pub(crate) const UPSERT_JOB: &str = "INSERT INTO jobs (job_id, attempt, display_id, array_job_id, array_task, name, \
     user_name, uid, gid, account, partition, submit_ms, eligible_ms, start_ms, end_ms, state, exit_code, exit_signal, \
     nodes, num_nodes, alloc_cpus, alloc_mem_mb, alloc_gpus, time_limit_s, work_dir, max_rss_kb, restart_count, \
     derived_exit_code, derived_exit_signal, cpu_user_ms, cpu_system_ms, reason, superseded) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, \
     $24, $25, $26, $27, $28, $29, $30, $31, $32, $33) \
     ON CONFLICT (job_id, attempt) DO UPDATE SET display_id = excluded.display_id, name = excluded.name, \
     account = excluded.account, partition = excluded.partition, start_ms = excluded.start_ms, \
     end_ms = excluded.end_ms, state = excluded.state, exit_code = excluded.exit_code, \
     exit_signal = excluded.exit_signal, nodes = excluded.nodes, num_nodes = excluded.num_nodes, \
     alloc_cpus = excluded.alloc_cpus, alloc_mem_mb = excluded.alloc_mem_mb, alloc_gpus = excluded.alloc_gpus, \
     time_limit_s = excluded.time_limit_s, max_rss_kb = excluded.max_rss_kb, restart_count = excluded.restart_count, \
     derived_exit_code = excluded.derived_exit_code, derived_exit_signal = excluded.derived_exit_signal, \
     cpu_user_ms = excluded.cpu_user_ms, cpu_system_ms = excluded.cpu_system_ms, reason = excluded.reason, \
     superseded = excluded.superseded";

pub(crate) const STEP_COLUMNS: &str =
    "job_id, attempt, step_id, name, nodes, num_nodes, ntasks, cpus, start_ms, end_ms, state, exit_code, exit_signal, \
     max_rss_kb, cpu_user_ms, cpu_system_ms";

pub(crate) const UPSERT_STEP: &str =
    "INSERT INTO steps (job_id, attempt, step_id, name, nodes, num_nodes, ntasks, cpus, \
     start_ms, end_ms, state, exit_code, exit_signal, max_rss_kb, cpu_user_ms, cpu_system_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
     ON CONFLICT (job_id, attempt, step_id) DO UPDATE SET end_ms = excluded.end_ms, state = excluded.state, \
     exit_code = excluded.exit_code, exit_signal = excluded.exit_signal, max_rss_kb = excluded.max_rss_kb, \
     cpu_user_ms = excluded.cpu_user_ms, cpu_system_ms = excluded.cpu_system_ms";

pub(crate) const INSERT_EVENT: &str =
    "INSERT INTO events (time_ms, kind, job_id, node, text) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (time_ms, text) DO NOTHING";
