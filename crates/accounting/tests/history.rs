//! The accounting database on SQLite, and on PostgreSQL when
//! `DROVER_TEST_POSTGRES` names one (`.ci/run` starts one on loopback):
//! records made from the cluster state go in, come back the same, and a
//! second write of the same jobs changes nothing.

use drover_accounting::{Accounting, HistoryQuery, JobRecord};
use drover_core::job::{CpuTime, ExitStatus, JobState};
use drover_core::options::{SubmitContext, SubmitRequest};
use drover_core::partition::PartitionSpec;
use drover_core::sched::{self, SchedConfig};
use drover_core::state::{Requester, StepOutcome};
use drover_core::step::StepRequest;
use drover_core::{Command, Resources, State};
use std::sync::Arc;

/// A state with finished jobs of two users: completed, failed, an array
/// of three, one with a step.
fn finished_jobs() -> (State, Vec<JobRecord>) {
    let mut s = State::default();
    s.apply(Command::SetPartition(PartitionSpec { is_default: true, ..PartitionSpec::new("debug", "ALL") })).unwrap();
    s.apply(Command::RegisterNode {
        name: "n1".into(),
        addr: String::new(),
        total: Resources::new(8, 8192, 0),
        features: vec![],
        known_steps: vec![],
        now: 0,
    })
    .unwrap();
    let submit = |s: &mut State, user: &str, uid: u32, args: &[&str], now: u64| {
        let mut r = SubmitRequest::default();
        r.apply_args(args).unwrap();
        let ctx = SubmitContext {
            user: user.into(),
            uid,
            gid: uid,
            cwd: "/home".into(),
            host: "login".into(),
            default_name: "job".into(),
            ..Default::default()
        };
        let spec = r.build(&ctx, "#!/bin/sh\n").unwrap();
        s.apply(Command::Submit { spec: Arc::new(spec), now }).unwrap();
    };
    submit(&mut s, "alice", 1001, &["-J", "ok"], 1_000);
    submit(&mut s, "bob", 1002, &["-J", "bad", "-A", "physics"], 2_000);
    submit(&mut s, "alice", 1001, &["-J", "arr", "-a", "0-2"], 3_000);
    let plan = sched::schedule(&s, 4_000, &SchedConfig::default());
    s.apply(Command::Allocate { plan, now: 4_000, term: 0 }).unwrap();
    let by = Requester::user(1001);
    let request = StepRequest { name: "hostname".into(), ..Default::default() };
    s.apply(Command::CreateStep { job: drover_core::job::JobRef::job(1), request, by, now: 4_500 }).unwrap();
    let exit = ExitStatus { code: 0, signal: 0 };
    s.apply(Command::EndStep { job: 1, step: 0, exit, cancelled: false, by, now: 4_800 }).unwrap();
    let active: Vec<u64> = s.active_ids().iter().copied().collect();
    for (k, id) in active.iter().enumerate() {
        let outcome = if *id == 2 { StepOutcome::Exited(3) } else { StepOutcome::Exited(0) };
        let now = 5_000 + k as u64 * 1_000;
        let cpu = None;
        s.apply(Command::StepFinished {
            job: *id,
            attempt: 0,
            outcome,
            max_rss_kb: Some(2048),
            cpu,
            failure: None,
            node: String::new(),
            now,
        })
        .unwrap();
    }
    let records = s.unaccounted_ids().iter().map(|id| JobRecord::of(&s, s.job(*id).unwrap())).collect();
    (s, records)
}

async fn check(db: &Accounting) {
    let (_, records) = finished_jobs();
    assert_eq!(records.len(), 5);
    db.write_jobs(&records).await.unwrap();
    db.write_jobs(&records).await.unwrap();
    assert_eq!(db.count_jobs().await.unwrap(), 5, "writing twice duplicates nothing");

    let (all, next) = db.history(&HistoryQuery::default()).await.unwrap();
    assert_eq!(next, None);
    assert_eq!(all, records, "what went in comes back");
    let one = all.iter().find(|r| r.job_id == 1).unwrap();
    assert_eq!(one.steps.len(), 1);
    assert_eq!((one.steps[0].name.as_str(), one.steps[0].state.as_str()), ("hostname", "COMPLETED"));
    assert_eq!(one.max_rss_kb, Some(2048));

    let q = |f: fn(&mut HistoryQuery)| {
        let mut q = HistoryQuery::default();
        f(&mut q);
        q
    };
    let ids = |v: Vec<JobRecord>| v.iter().map(|r| r.display_id.clone()).collect::<Vec<_>>().join(" ");
    let (bob, _) = db.history(&q(|q| q.users = vec!["bob".into()])).await.unwrap();
    assert_eq!(ids(bob), "2");
    let (failed, _) = db.history(&q(|q| q.states = vec!["failed".into()])).await.unwrap();
    assert_eq!(ids(failed), "2");
    let (physics, _) = db.history(&q(|q| q.accounts = vec!["physics".into()])).await.unwrap();
    assert_eq!(ids(physics), "2");
    let (array, _) = db.history(&q(|q| q.jobs = vec![3])).await.unwrap();
    assert_eq!(ids(array), "3_0 3_1 3_2");
    let (late, _) = db.history(&q(|q| q.since_ms = Some(7_000))).await.unwrap();
    assert_eq!(late.len(), 3);
    let (early, _) = db.history(&q(|q| q.until_ms = Some(2_500))).await.unwrap();
    assert_eq!(ids(early), "1 2");

    // Use over a window: everything started at 4 000 ms on 1 CPU; job 1
    // (alice) ended at 5 000, job 2 (bob) at 6 000, the array's tasks after.
    let usage = db.usage(0, 100_000).await.unwrap();
    let alice = usage.iter().find(|u| u.user == "alice").unwrap();
    assert_eq!((alice.jobs, alice.completed, alice.failed), (4, 4, 0));
    let ran: u64 = records.iter().filter(|r| r.user == "alice").map(|r| r.end_ms.unwrap() - r.start_ms.unwrap()).sum();
    assert_eq!(alice.cpu_seconds, ran / 1000);
    let bob = usage.iter().find(|u| u.user == "bob").unwrap();
    assert_eq!((bob.account.as_str(), bob.jobs, bob.failed), ("physics", 1, 1));
    assert_eq!(usage[0].user, "alice", "most CPU time first");
    // Clipped to the window: [4 500, 5 500) holds one second of bob's job.
    let clipped = db.usage(4_500, 5_500).await.unwrap();
    let bob = clipped.iter().find(|u| u.user == "bob").unwrap();
    assert_eq!(bob.cpu_seconds, 1);
    assert!(db.usage(200_000, 300_000).await.unwrap().is_empty());
    // What fair-share decays: each run's user, end and CPU-seconds.
    let mut runs = db.runs_since(0).await.unwrap();
    runs.sort_by_key(|a| a.1);
    assert_eq!(runs.len(), 5);
    assert_eq!((runs[0].0.as_str(), runs[0].1, runs[0].2), ("alice", 5_000, 1.0));
    assert_eq!(db.runs_since(8_000).await.unwrap().len(), 2);

    // Purging forgets what ended before the cutoff, steps and all.
    let before = db.count_jobs().await.unwrap();
    assert_eq!(db.purge(5_500).await.unwrap(), 1, "job 1 ended at 5 000");
    assert_eq!(db.count_jobs().await.unwrap(), before - 1);
    assert!(db.history(&HistoryQuery { jobs: vec![1], ..Default::default() }).await.unwrap().0.is_empty());
    db.write_jobs(&records).await.unwrap();

    // Paging by (end, id): every job once, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = HistoryQuery { limit: Some(2), after, ..Default::default() };
        let (rows, next) = db.history(&page).await.unwrap();
        seen.extend(rows.iter().map(|r| r.job_id));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut expected: Vec<u64> = records.iter().map(|r| r.job_id).collect();
    expected.sort_by_key(|id| (records.iter().find(|r| r.job_id == *id).unwrap().end_ms, *id));
    assert_eq!(seen, expected);
}

/// Ten thousand finished jobs of mixed outcomes, as the state machine ends
/// them, written in the writer's batches of 500: every one comes back with
/// its state, times and exit code.
async fn ten_thousand(db: &Accounting) {
    let mut s = State::default();
    s.apply(Command::SetPartition(PartitionSpec { is_default: true, ..PartitionSpec::new("big", "ALL") })).unwrap();
    s.apply(Command::RegisterNode {
        name: "n1".into(),
        addr: String::new(),
        total: Resources::new(10_000, 1 << 30, 0),
        features: vec![],
        known_steps: vec![],
        now: 0,
    })
    .unwrap();
    let mut r = SubmitRequest::default();
    r.apply_args(&["-a", "0-9999", "-J", "many"]).unwrap();
    let ctx = SubmitContext { user: "carol".into(), uid: 1003, gid: 1003, cwd: "/w".into(), ..Default::default() };
    let spec = r.build(&ctx, "#!/bin/sh\n").unwrap();
    s.apply(Command::Submit { spec: Arc::new(spec), now: 1_000_000 }).unwrap();
    let plan = sched::schedule(&s, 1_000_000, &SchedConfig::default());
    s.apply(Command::Allocate { plan, now: 1_000_000, term: 0 }).unwrap();
    let running: Vec<u64> = s.active_ids().iter().copied().collect();
    assert_eq!(running.len(), 10_000);
    for (k, id) in running.iter().enumerate() {
        let outcome = match k % 4 {
            0 | 1 => StepOutcome::Exited(0),
            2 => StepOutcome::Exited((k % 250) as i32 + 1),
            _ => StepOutcome::Signaled(9),
        };
        let now = 2_000_000 + k as u64;
        s.apply(Command::step_finished(*id, 0, outcome, now)).unwrap();
    }
    let records: Vec<JobRecord> = s.unaccounted_ids().iter().map(|id| JobRecord::of(&s, s.job(*id).unwrap())).collect();
    for batch in records.chunks(500) {
        db.write_jobs(batch).await.unwrap();
    }
    let mut back = Vec::new();
    let mut after = None;
    loop {
        let q = HistoryQuery { users: vec!["carol".into()], after, ..Default::default() };
        let (rows, next) = db.history(&q).await.unwrap();
        back.extend(rows);
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    back.sort_by_key(|r| r.job_id);
    let mut expected = records;
    expected.sort_by_key(|r| r.job_id);
    assert_eq!(back.len(), 10_000);
    assert_eq!(back, expected);
    let failed = back.iter().filter(|r| r.state == "FAILED").count();
    assert_eq!(failed, 5_000, "exit codes and signals both fail");
}

#[tokio::test]
async fn sqlite_keeps_ten_thousand_jobs() {
    let dir = std::env::temp_dir().join(format!("drover-acct-10k-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = Accounting::open(&format!("sqlite://{}/accounting.db", dir.display())).await.unwrap();
    ten_thousand(&db).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh database on the test server, named for the test: tests run at
/// once and each counts its own rows.
async fn fresh_postgres(name: &str) -> Option<String> {
    let Ok(server) = std::env::var("DROVER_TEST_POSTGRES") else {
        eprintln!("DROVER_TEST_POSTGRES not set: PostgreSQL not tested here (.ci/run sets it)");
        return None;
    };
    sqlx::any::install_default_drivers();
    let db = format!("drover_{name}_{}", std::process::id());
    let pool = sqlx::AnyPool::connect(&server).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db}")).execute(&pool).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&pool).await.unwrap();
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b).to_string();
    Some(format!("{base}/{db}"))
}

#[tokio::test]
async fn postgres_keeps_ten_thousand_jobs() {
    let Some(url) = fresh_postgres("tenk").await else { return };
    let db = Accounting::open(&url).await.unwrap();
    ten_thousand(&db).await;
}

#[tokio::test]
async fn sqlite_keeps_history() {
    let dir = std::env::temp_dir().join(format!("drover-acct-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/accounting.db", dir.display());
    let db = Accounting::open(&url).await.unwrap();
    check(&db).await;
    drop(db);
    // Reopened: the schema is not applied twice, the rows are there.
    let db = Accounting::open(&url).await.unwrap();
    assert_eq!(db.count_jobs().await.unwrap(), 5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn postgres_keeps_history() {
    let Some(url) = fresh_postgres("history").await else { return };
    let db = Accounting::open(&url).await.unwrap();
    check(&db).await;
}

/// A job requeued once, whose second run had a step that failed: each run
/// is a row, the earlier one marked superseded; the steps' and the batch
/// step's measured use, and the derived exit code, come back.
async fn attempts_and_use(db: &Accounting) {
    let (mut s, _) = finished_jobs();
    let by = Requester::user(1001);
    let mut r = SubmitRequest::default();
    r.apply_args(&["-J", "twice"]).unwrap();
    let ctx = SubmitContext { user: "alice".into(), uid: 1001, gid: 1001, cwd: "/w".into(), ..Default::default() };
    s.apply(Command::Submit { spec: Arc::new(r.build(&ctx, "#!/bin/sh\n").unwrap()), now: 10_000 }).unwrap();
    let id = *s.pending_ids().iter().next().unwrap();
    let start = |s: &mut State, now| {
        let plan = sched::schedule(s, now, &SchedConfig::default());
        s.apply(Command::Allocate { plan, now, term: 0 }).unwrap();
    };
    start(&mut s, 10_000);
    let job = drover_core::job::JobRef::job(id);
    s.apply(Command::Requeue { job, hold: false, by, now: 12_000 }).unwrap();
    let (outcome, cpu) = (StepOutcome::Signaled(15), Some(CpuTime { user_ms: 700, system_ms: 100 }));
    s.apply(Command::StepFinished {
        job: id,
        attempt: 0,
        outcome,
        max_rss_kb: Some(100),
        cpu,
        failure: None,
        node: String::new(),
        now: 12_100,
    })
    .unwrap();
    assert_eq!(s.job(id).unwrap().state, JobState::Pending);
    // The earlier run is written while the job waits again.
    let early = JobRecord::records(&s, s.job(id).unwrap());
    assert_eq!(early.len(), 1);
    db.write_jobs(&early).await.unwrap();
    start(&mut s, 13_000);
    let request = StepRequest { name: "train".into(), ..Default::default() };
    s.apply(Command::CreateStep { job, request, by, now: 13_500 }).unwrap();
    let exit = ExitStatus { code: 2, signal: 0 };
    s.apply(Command::EndStep { job: id, step: 0, exit, cancelled: false, by, now: 14_000 }).unwrap();
    let cpu = CpuTime { user_ms: 4_000, system_ms: 250 };
    s.apply(Command::StepUsage { job: id, step: 0, node: "n1".into(), max_rss_kb: 9_000, cpu }).unwrap();
    let (outcome, cpu) = (StepOutcome::Exited(0), Some(CpuTime { user_ms: 30, system_ms: 20 }));
    s.apply(Command::StepFinished {
        job: id,
        attempt: 1,
        outcome,
        max_rss_kb: Some(300),
        cpu,
        failure: None,
        node: String::new(),
        now: 15_000,
    })
    .unwrap();
    let records = JobRecord::records(&s, s.job(id).unwrap());
    assert_eq!(records.len(), 2);
    db.write_jobs(&records).await.unwrap();

    let q = HistoryQuery { jobs: vec![id], ..Default::default() };
    let (last, _) = db.history(&q).await.unwrap();
    assert_eq!(last.len(), 1, "without all_attempts, each job's last run only");
    let last = &last[0];
    assert_eq!((last.attempt, last.state.as_str(), last.superseded), (1, "COMPLETED", false));
    assert_eq!((last.derived_exit_code, last.derived_exit_signal), (Some(2), Some(0)));
    assert_eq!((last.cpu_user_ms, last.cpu_system_ms, last.max_rss_kb), (Some(30), Some(20), Some(300)));
    assert_eq!(last.steps.len(), 1);
    let step = &last.steps[0];
    assert_eq!((step.max_rss_kb, step.cpu_user_ms, step.cpu_system_ms), (Some(9_000), Some(4_000), Some(250)));
    let (all, _) = db.history(&HistoryQuery { all_attempts: true, ..q }).await.unwrap();
    assert_eq!(all.len(), 2);
    let first = &all[0];
    assert_eq!((first.attempt, first.state.as_str(), first.superseded), (0, "REQUEUED", true));
    assert_eq!((first.start_ms, first.end_ms), (Some(10_000), Some(12_100)));
    assert_eq!((first.exit_signal, first.cpu_user_ms, first.max_rss_kb), (Some(15), Some(700), Some(100)));
    assert_eq!(first.reason.as_deref(), Some("requeued by request"));
    assert!(first.steps.is_empty(), "the step ran in the second run");
    assert_eq!(all[1], *last);
    // Usage counts the job once, and both runs' CPU time.
    let usage = db.usage(10_000, 16_000).await.unwrap();
    let alice = usage.iter().find(|u| u.user == "alice").unwrap();
    assert_eq!((alice.jobs, alice.completed, alice.failed), (1, 1, 0));
    assert_eq!(alice.cpu_seconds, (2_100 + 2_000) / 1000);
}

#[tokio::test]
async fn sqlite_keeps_each_attempt() {
    let dir = std::env::temp_dir().join(format!("drover-acct-attempts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = Accounting::open(&format!("sqlite://{}/accounting.db", dir.display())).await.unwrap();
    attempts_and_use(&db).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn postgres_keeps_each_attempt() {
    let Some(url) = fresh_postgres("attempts").await else { return };
    let db = Accounting::open(&url).await.unwrap();
    attempts_and_use(&db).await;
}

#[tokio::test]
async fn bad_urls_say_what_is_expected() {
    let e = Accounting::open("mysql://x").await.err().unwrap().to_string();
    assert!(e.contains("use sqlite://PATH or postgres://"), "{e}");
    let e = Accounting::open("sqlite:///nonexistent-dir/x/acct.db").await.err().unwrap().to_string();
    assert!(e.starts_with("accounting database sqlite:///nonexistent-dir/x/acct.db: "), "{e}");
}
