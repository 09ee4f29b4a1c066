//! Job accounting in SQL: finished jobs with their steps, and the cluster's
//! notable events, written by the leading controller and read back by
//! `sacct`, `drover history` and `GET /api/v1/history`.
//!
//! One schema and one set of queries serve SQLite (the embedded default, a
//! file under the state directory, WAL mode) and PostgreSQL (`--accounting
//! postgres://…` for sites): only BIGINT and TEXT columns, `$N` parameters
//! (rewritten to SQLite's `?N`), `ON CONFLICT` upserts both understand.
//! Writes are idempotent — keyed by job id and attempt — so a batch written
//! again after a crash or a failover changes nothing.

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row};
use std::borrow::Cow;
use std::time::Duration;

pub mod record;
pub use record::{EventRecord, JobRecord, StepRecord};

/// The schema's versions, embedded in the binary, applied in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "jobs steps events", include_str!("../migrations/0001_jobs_steps_events.sql")),
    (2, "attempts and use", include_str!("../migrations/0002_attempts_and_use.sql")),
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("accounting database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("accounting schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("accounting database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("'{0}' is not an accounting database URL; use sqlite://PATH or postgres://USER@HOST/DB")]
    BadUrl(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The accounting database.
#[derive(Clone)]
pub struct Accounting {
    pool: AnyPool,
    backend: Backend,
}

/// One user's (and account's) use of the cluster over a window: the wire
/// type itself, which the API sends as read.
pub use drover_proto::UsageRow;

/// Which finished jobs to read back. Empty lists match everything.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryQuery {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub accounts: Vec<String>,
    #[serde(default)]
    pub states: Vec<String>,
    #[serde(default)]
    pub partitions: Vec<String>,
    /// Job ids; an array's id matches all its tasks.
    #[serde(default)]
    pub jobs: Vec<u64>,
    /// Jobs that ended at or after this time (epoch ms).
    pub since_ms: Option<u64>,
    /// Jobs submitted at or before this time (epoch ms).
    pub until_ms: Option<u64>,
    /// At most this many (default and cap 10 000).
    pub limit: Option<u32>,
    /// Paging: only jobs after this (end_ms, job_id), as the last page's
    /// `next` said.
    pub after: Option<(u64, u64)>,
    /// Earlier runs of requeued jobs too (sacct's `--duplicates`), not
    /// only each job's last.
    #[serde(default)]
    pub all_attempts: bool,
}

pub const MAX_PAGE: u32 = 10_000;

impl Accounting {
    /// Connects, creating a SQLite file if needed, and brings the schema up
    /// to date.
    pub async fn open(url: &str) -> Result<Accounting, Error> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(Error::BadUrl(url.to_string()));
        };
        let connect_url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
            }
            _ => url.to_string(),
        };
        let pool = AnyPoolOptions::new()
            // SQLite has one writer; the pool is for readers meanwhile.
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::query("PRAGMA journal_mode=WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous=NORMAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout=5000").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await
            .map_err(|source| Error::Connect { url: redact(url), source })?;
        let migrations: Vec<Migration> = MIGRATIONS
            .iter()
            .map(|(v, d, sql)| Migration::new(*v, Cow::Borrowed(*d), MigrationType::Simple, Cow::Borrowed(*sql), false))
            .collect();
        let migrator =
            Migrator { migrations: Cow::Owned(migrations), ignore_missing: false, locking: true, no_tx: false };
        migrator.run(&pool).await?;
        Ok(Accounting { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `$N` parameters as this backend spells them.
    fn sql<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.backend {
            Backend::Postgres => Cow::Borrowed(text),
            Backend::Sqlite => Cow::Owned(text.replace('$', "?")),
        }
    }

    /// Writes finished jobs and their steps in one transaction; writing a
    /// job again replaces its row.
    pub async fn write_jobs(&self, jobs: &[JobRecord]) -> Result<(), Error> {
        let upsert_job = self.sql(record::UPSERT_JOB);
        let upsert_step = self.sql(record::UPSERT_STEP);
        let mut tx = self.pool.begin().await?;
        for j in jobs {
            j.bind(sqlx::query(&upsert_job)).execute(&mut *tx).await?;
            for s in &j.steps {
                s.bind(j, sqlx::query(&upsert_step)).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records events; one already there (same time and text) is skipped.
    pub async fn write_events(&self, events: &[EventRecord]) -> Result<(), Error> {
        let insert = self.sql(record::INSERT_EVENT);
        let mut tx = self.pool.begin().await?;
        for e in events {
            e.bind(sqlx::query(&insert)).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Finished jobs matching `q`, oldest end first, with their steps; and
    /// the cursor of the next page when there may be one.
    pub async fn history(&self, q: &HistoryQuery) -> Result<(Vec<JobRecord>, Option<(u64, u64)>), Error> {
        let mut sql = format!("SELECT {} FROM jobs WHERE 1=1", record::JOB_COLUMNS);
        if !q.all_attempts {
            sql.push_str(" AND superseded = 0");
        }
        let mut args: Vec<Arg> = Vec::new();
        let any_of = |column: &str, values: Vec<Arg>, sql: &mut String, args: &mut Vec<Arg>| {
            if values.is_empty() {
                return;
            }
            let marks: Vec<String> = (0..values.len()).map(|i| format!("${}", args.len() + i + 1)).collect();
            sql.push_str(&format!(" AND {column} IN ({})", marks.join(",")));
            args.extend(values);
        };
        any_of("user_name", q.users.iter().cloned().map(Arg::Text).collect(), &mut sql, &mut args);
        any_of("account", q.accounts.iter().cloned().map(Arg::Text).collect(), &mut sql, &mut args);
        any_of("state", q.states.iter().map(|s| Arg::Text(s.to_ascii_uppercase())).collect(), &mut sql, &mut args);
        any_of("partition", q.partitions.iter().cloned().map(Arg::Text).collect(), &mut sql, &mut args);
        if !q.jobs.is_empty() {
            let ids: Vec<Arg> = q.jobs.iter().map(|&j| Arg::Int(j as i64)).collect();
            let n = ids.len();
            let marks = |from: usize| (0..n).map(|i| format!("${}", from + i + 1)).collect::<Vec<_>>().join(",");
            sql.push_str(&format!(
                " AND (job_id IN ({}) OR array_job_id IN ({}))",
                marks(args.len()),
                marks(args.len() + n)
            ));
            args.extend(ids.clone());
            args.extend(ids);
        }
        if let Some(since) = q.since_ms {
            args.push(Arg::Int(since as i64));
            sql.push_str(&format!(" AND end_ms >= ${}", args.len()));
        }
        if let Some(until) = q.until_ms {
            args.push(Arg::Int(until as i64));
            sql.push_str(&format!(" AND submit_ms <= ${}", args.len()));
        }
        if let Some((end, id)) = q.after {
            args.push(Arg::Int(end as i64));
            args.push(Arg::Int(id as i64));
            let (e, i) = (args.len() - 1, args.len());
            sql.push_str(&format!(" AND (end_ms > ${e} OR (end_ms = ${e} AND job_id > ${i}))"));
        }
        let limit = q.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
        sql.push_str(&format!(" ORDER BY end_ms, job_id, attempt LIMIT {}", limit + 1));
        let sql = self.sql(&sql);
        let mut query = sqlx::query(&sql);
        for a in args {
            query = match a {
                Arg::Int(i) => query.bind(i),
                Arg::Text(t) => query.bind(t),
            };
        }
        let rows: Vec<AnyRow> = query.fetch_all(&self.pool).await?;
        let mut jobs = rows.iter().map(JobRecord::from_row).collect::<Result<Vec<_>, _>>()?;
        let next = (jobs.len() > limit as usize).then(|| {
            jobs.truncate(limit as usize);
            let last = jobs.last().expect("more than the limit");
            (last.end_ms.unwrap_or(0), last.job_id)
        });
        self.attach_steps(&mut jobs).await?;
        Ok((jobs, next))
    }

    async fn attach_steps(&self, jobs: &mut [JobRecord]) -> Result<(), Error> {
        for chunk in jobs.chunks_mut(500) {
            if chunk.is_empty() {
                continue;
            }
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {} FROM steps WHERE job_id IN ({}) ORDER BY job_id, attempt, step_id",
                record::STEP_COLUMNS,
                marks.join(",")
            );
            let sql = self.sql(&sql);
            let mut query = sqlx::query(&sql);
            for j in chunk.iter() {
                query = query.bind(j.job_id as i64);
            }
            let rows: Vec<AnyRow> = query.fetch_all(&self.pool).await?;
            for row in &rows {
                let (job, attempt, step) = StepRecord::from_row(row)?;
                if let Some(j) = chunk.iter_mut().find(|j| j.job_id == job && j.attempt == attempt) {
                    j.steps.push(step);
                }
            }
        }
        Ok(())
    }

    /// Use per user and account of the jobs that ran in `[since, until)`
    /// (epoch ms): jobs by how they ended (each job once), and CPU and GPU time
    /// clipped to the window (every run, requeued ones too). Most CPU time
    /// first.
    pub async fn usage(&self, since_ms: u64, until_ms: u64) -> Result<Vec<UsageRow>, Error> {
        // Seconds of the run inside the window, for one allocated unit.
        let inside = "(CASE WHEN start_ms IS NULL THEN 0 ELSE \
             (CASE WHEN end_ms < $2 THEN end_ms ELSE $2 END) - (CASE WHEN start_ms > $1 THEN start_ms ELSE $1 END) END)";
        let sql = format!(
            "SELECT user_name, COALESCE(account, '') AS account, \
             CAST(SUM(CASE WHEN superseded = 0 THEN 1 ELSE 0 END) AS BIGINT) AS jobs, \
             CAST(SUM(CASE WHEN superseded = 0 AND state = 'COMPLETED' THEN 1 ELSE 0 END) AS BIGINT) AS completed, \
             CAST(SUM(CASE WHEN superseded = 0 AND state IN ('FAILED', 'TIMEOUT', 'OUT_OF_MEMORY', 'NODE_FAIL') \
             THEN 1 ELSE 0 END) AS BIGINT) AS failed, \
             CAST(SUM(CASE WHEN superseded = 0 AND state = 'CANCELLED' THEN 1 ELSE 0 END) AS BIGINT) AS cancelled, \
             CAST(SUM(alloc_cpus * {inside}) AS BIGINT) AS cpu_ms, \
             CAST(SUM(alloc_gpus * {inside}) AS BIGINT) AS gpu_ms \
             FROM jobs WHERE end_ms >= $1 AND (start_ms IS NULL OR start_ms < $2) AND submit_ms < $2 \
             GROUP BY user_name, COALESCE(account, '') ORDER BY cpu_ms DESC, user_name"
        );
        let sql = self.sql(&sql);
        let rows: Vec<AnyRow> =
            sqlx::query(&sql).bind(since_ms as i64).bind(until_ms as i64).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let n = |c: &str| r.try_get::<i64, _>(c).map(|v| v.max(0) as u64);
                Ok(UsageRow {
                    user: r.try_get("user_name")?,
                    account: r.try_get("account")?,
                    jobs: n("jobs")?,
                    completed: n("completed")?,
                    failed: n("failed")?,
                    cancelled: n("cancelled")?,
                    cpu_seconds: n("cpu_ms")? / 1000,
                    gpu_seconds: n("gpu_ms")? / 1000,
                })
            })
            .collect()
    }

    /// Runs that ended since `since_ms`: (user, end, CPU-seconds), for
    /// fair-share's decayed use.
    pub async fn runs_since(&self, since_ms: u64) -> Result<Vec<(String, u64, f64)>, Error> {
        let sql = self.sql(
            "SELECT user_name, end_ms, alloc_cpus * (end_ms - start_ms) AS cpu_ms FROM jobs \
             WHERE start_ms IS NOT NULL AND end_ms >= $1",
        );
        let rows: Vec<AnyRow> = sqlx::query(&sql).bind(since_ms as i64).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let end = r.try_get::<i64, _>("end_ms")? as u64;
                let cpu = r.try_get::<i64, _>("cpu_ms")?.max(0) as f64 / 1000.0;
                Ok((r.try_get("user_name")?, end, cpu))
            })
            .collect()
    }

    /// Recent events, newest last.
    pub async fn events(&self, since_ms: u64, limit: u32) -> Result<Vec<EventRecord>, Error> {
        let sql = self
            .sql("SELECT time_ms, kind, job_id, node, text FROM events WHERE time_ms >= $1 ORDER BY time_ms LIMIT $2");
        let rows: Vec<AnyRow> =
            sqlx::query(&sql).bind(since_ms as i64).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(EventRecord::from_row).collect()
    }

    /// Forgets jobs (with their steps) that ended before `before_ms`, and
    /// events from before then; how many jobs went.
    pub async fn purge(&self, before_ms: u64) -> Result<u64, Error> {
        let cutoff = before_ms as i64;
        let mut tx = self.pool.begin().await?;
        let steps = self.sql(
            "DELETE FROM steps WHERE EXISTS (SELECT 1 FROM jobs WHERE jobs.job_id = steps.job_id \
             AND jobs.attempt = steps.attempt AND jobs.end_ms < $1)",
        );
        sqlx::query(&steps).bind(cutoff).execute(&mut *tx).await?;
        let jobs = self.sql("DELETE FROM jobs WHERE end_ms < $1");
        let gone = sqlx::query(&jobs).bind(cutoff).execute(&mut *tx).await?.rows_affected();
        let events = self.sql("DELETE FROM events WHERE time_ms < $1");
        sqlx::query(&events).bind(cutoff).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(gone)
    }

    /// How many finished jobs are recorded (for tests and the bench).
    pub async fn count_jobs(&self) -> Result<u64, Error> {
        let row = sqlx::query("SELECT COUNT(*) FROM jobs").fetch_one(&self.pool).await?;
        Ok(row.try_get::<i64, _>(0)? as u64)
    }
}

#[derive(Clone)]
enum Arg {
    Int(i64),
    Text(String),
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(redact("postgres://drover:secret@db/acct"), "postgres://drover:***@db/acct");
        assert_eq!(redact("postgres://drover@db/acct"), "postgres://drover@db/acct");
        assert_eq!(redact("sqlite:///var/lib/drover/accounting.db"), "sqlite:///var/lib/drover/accounting.db");
    }
}
