//! The accounting writer: on the leader, finished jobs go from the
//! replicated state into the SQL database, then are marked written through
//! the log (`Command::Accounted`).
//!
//! The state, not the writer, remembers what is left to write: a job that
//! ends while the database is down, or while the leader changes, stays
//! unwritten in every controller's state until some leader writes it. A
//! batch written twice (the leader died between the write and the mark)
//! is harmless: rows are upserted by job id and attempt. The writer runs
//! beside the scheduler, never in its way: it reads the state under the
//! read lock for a moment, writes without any lock, and its marks are one
//! log entry per batch.

use crate::events::EventLog;
use crate::raft::Controller;
use drover_accounting::{Accounting, EventRecord, HistoryQuery, JobRecord, StepRecord};
use drover_core::{Command, JobState};
use drover_proto::{JobView, StepView};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Jobs per transaction and per `Accounted` entry.
const BATCH: usize = 500;

/// The database, connected on first use and again after a failure.
pub struct Sink {
    url: String,
    /// Forget jobs that ended longer ago than this (`None`: keep all).
    purge_after: Option<Duration>,
    db: Mutex<Option<Accounting>>,
    /// Finished jobs written, for the metrics and the tests.
    pub written: AtomicU64,
    /// Finished jobs waiting to be written, as last seen.
    pub backlog: AtomicU64,
}

impl Sink {
    pub fn new(url: String, purge_after: Option<Duration>) -> Arc<Sink> {
        Arc::new(Sink {
            url,
            purge_after,
            db: Mutex::new(None),
            written: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
        })
    }

    /// Forgets old history, at most once an hour, while leading.
    async fn purge(&self, last: &mut Option<tokio::time::Instant>) -> Result<(), String> {
        let Some(after) = self.purge_after else { return Ok(()) };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(3600)) {
            return Ok(());
        }
        *last = Some(tokio::time::Instant::now());
        let before = crate::loops::now_ms().saturating_sub(after.as_millis() as u64);
        let gone = self.db().await?.purge(before).await.map_err(|e| e.to_string())?;
        if gone > 0 {
            tracing::info!(jobs = gone, "accounting: purged {gone} jobs that ended over {after:?} ago");
        }
        Ok(())
    }

    /// The database, connecting (and migrating) if need be.
    pub async fn db(&self) -> Result<Accounting, String> {
        let mut db = self.db.lock().await;
        if let Some(d) = db.as_ref() {
            return Ok(d.clone());
        }
        let d = Accounting::open(&self.url).await.map_err(|e| e.to_string())?;
        *db = Some(d.clone());
        Ok(d)
    }

    /// Forgets the connection after an error; the next use reconnects.
    async fn reset(&self) {
        *self.db.lock().await = None;
    }

    /// Finished jobs from the database, as job views.
    pub async fn history(&self, q: &HistoryQuery) -> Result<(Vec<JobView>, Option<(u64, u64)>), String> {
        let db = self.db().await?;
        match db.history(q).await {
            Ok((rows, next)) => Ok((rows.iter().map(view_of).collect(), next)),
            Err(e) => {
                self.reset().await;
                Err(e.to_string())
            }
        }
    }

    /// Writes while this controller leads, for its whole life.
    pub async fn run(self: Arc<Self>, ctl: Arc<Controller>, events: Arc<EventLog>) {
        let mut backoff = Duration::from_millis(200);
        let mut last_event = 0u64;
        let mut leading = false;
        let mut last_purge = None;
        loop {
            if !ctl.is_leader() {
                leading = false;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            if !leading {
                // A new leader's history restarts: its events are written
                // from the start of what it holds (duplicates are skipped).
                leading = true;
                last_event = 0;
            }
            match self.pass(&ctl, &events, &mut last_event).await {
                Ok(0) => {
                    if let Err(e) = self.purge(&mut last_purge).await {
                        tracing::warn!(error = %e, "accounting: cannot purge old jobs: {e}");
                    }
                    backoff = Duration::from_millis(200);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(_) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %e, backlog = self.backlog.load(Ordering::Relaxed), "accounting: {e}; retrying in {backoff:?}");
                    self.reset().await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// One batch: how many jobs it wrote.
    async fn pass(&self, ctl: &Controller, events: &EventLog, last_event: &mut u64) -> Result<usize, String> {
        // Each job's records, and the revision they show.
        let (batch, marks, backlog) = ctl.shared.read(|s| {
            let ids = s.unaccounted_ids();
            let jobs: Vec<&drover_core::job::Job> = ids.iter().take(BATCH).filter_map(|id| s.job(*id)).collect();
            let batch: Vec<JobRecord> = jobs.iter().flat_map(|j| JobRecord::records(s, j)).collect();
            let marks: (Vec<u64>, Vec<u32>) = jobs.iter().map(|j| (j.id, j.revision)).unzip();
            (batch, marks, ids.len())
        });
        self.backlog.store(backlog as u64, Ordering::Relaxed);
        let notable: Vec<EventRecord> = events
            .since(*last_event, BATCH)
            .into_iter()
            .inspect(|e| *last_event = (*last_event).max(e.seq))
            .filter(|e| {
                matches!(e.kind.as_str(), "NodeStateChanged" | "JobRequeued" | "LeaderElected" | "NodeRegistered")
            })
            .map(|e| EventRecord { time_ms: e.time_ms, kind: e.kind, job_id: e.job, node: e.node, text: e.text })
            .collect();
        if marks.0.is_empty() && notable.is_empty() {
            return Ok(0);
        }
        let db = self.db().await?;
        if !notable.is_empty() {
            db.write_events(&notable).await.map_err(|e| e.to_string())?;
        }
        if marks.0.is_empty() {
            return Ok(0);
        }
        db.write_jobs(&batch).await.map_err(|e| e.to_string())?;
        let (jobs, revisions) = marks;
        let n = jobs.len();
        ctl.propose(Command::Accounted { jobs, revisions })
            .await
            .map_err(|e| format!("cannot mark jobs written: {e}"))?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Without a database (`--accounting none`): the leader marks finished
/// jobs as let go, so that retention (`--min-job-age`) still prunes them.
pub async fn let_go(ctl: Arc<Controller>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !ctl.is_leader() {
            continue;
        }
        let (jobs, revisions): (Vec<u64>, Vec<u32>) = ctl.shared.read(|s| {
            s.unaccounted_ids().iter().take(BATCH).filter_map(|id| s.job(*id)).map(|j| (j.id, j.revision)).unzip()
        });
        if !jobs.is_empty() {
            if let Err(e) = ctl.propose(Command::Accounted { jobs, revisions }).await {
                tracing::debug!(error = %e, "cannot let finished jobs go: {e}");
            }
        }
    }
}

impl Sink {
    /// Keeps `usage` up to date for fair-share while this controller leads:
    /// every minute, the runs of the last ten half-lives, decayed.
    pub async fn follow_usage(
        self: Arc<Self>,
        ctl: Arc<Controller>,
        usage: Arc<std::sync::RwLock<drover_core::sched::Usage>>,
        half_life: Duration,
    ) {
        let half_ms = half_life.as_millis().max(1) as u64;
        loop {
            if ctl.is_leader() {
                let now = crate::loops::now_ms();
                let since = now.saturating_sub(half_ms.saturating_mul(10));
                let runs = match self.db().await {
                    Ok(db) => db.runs_since(since).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                match runs {
                    Ok(runs) => {
                        let fresh = drover_core::sched::Usage::decayed(
                            runs.iter().map(|(u, end, cpu)| (u.as_str(), *end, *cpu)),
                            now,
                            half_ms,
                        );
                        *usage.write().expect("usage lock") = fresh;
                    }
                    Err(e) => tracing::warn!(error = %e, "fair-share: cannot read past use: {e}"),
                }
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
}

/// A finished job's record as clients see jobs.
pub fn view_of(r: &JobRecord) -> JobView {
    let state = JobState::parse(&r.state).unwrap_or(JobState::Completed);
    let exit = match (r.exit_code, r.exit_signal) {
        (None, None) => None,
        (c, s) => Some(format!("{}:{}", c.unwrap_or(0), s.unwrap_or(0))),
    };
    JobView {
        id: r.display_id.clone(),
        job_id: r.job_id,
        array_job_id: r.array_job_id,
        array_task: r.array_task.map(|t| t.to_string()),
        name: r.name.clone(),
        user: r.user.clone(),
        uid: r.uid,
        gid: r.gid,
        account: r.account.clone(),
        partition: r.partition.clone(),
        state: state.name().into(),
        state_code: state.code().into(),
        reason: r.reason.clone().unwrap_or_else(|| "None".into()),
        nodes: r.nodes.clone(),
        num_nodes: r.num_nodes,
        num_cpus: r.alloc_cpus,
        time_limit: r.time_limit_s,
        submit_time: r.submit_ms,
        start_time: r.start_ms,
        end_time: r.end_ms,
        exit_code: exit,
        restart_count: r.restart_count,
        work_dir: r.work_dir.clone(),
        stdout: String::new(),
        stderr: String::new(),
        terminal: true,
        mem_mb: r.alloc_mem_mb,
        max_rss_kb: r.max_rss_kb,
        cpu: cpu_time(r.cpu_user_ms, r.cpu_system_ms),
        derived_exit_code: r.derived_exit_code.map(|c| format!("{c}:{}", r.derived_exit_signal.unwrap_or(0))),
        steps: r.steps.iter().map(|s| step_view(r, s)).collect(),
        ..JobView::default()
    }
}

fn step_view(j: &JobRecord, s: &StepRecord) -> StepView {
    StepView {
        id: format!("{}.{}", j.display_id, s.step_id),
        step: s.step_id,
        name: s.name.clone(),
        state: s.state.clone(),
        nodes: s.nodes.clone(),
        num_nodes: s.num_nodes,
        ntasks: s.ntasks,
        num_cpus: s.cpus,
        start_time: s.start_ms,
        end_time: s.end_ms,
        exit_code: s.exit_code.map(|c| format!("{c}:{}", s.exit_signal.unwrap_or(0))),
        max_rss_kb: s.max_rss_kb,
        cpu: cpu_time(s.cpu_user_ms, s.cpu_system_ms),
    }
}

fn cpu_time(user_ms: Option<u64>, system_ms: Option<u64>) -> Option<drover_core::job::CpuTime> {
    match (user_ms, system_ms) {
        (None, None) => None,
        (u, s) => Some(drover_core::job::CpuTime { user_ms: u.unwrap_or(0), system_ms: s.unwrap_or(0) }),
    }
}
