//! An acknowledged command survives a controller restart.

use drover_controller::{Controller, Membership, ProposeError, Timing};
use drover_core::partition::PartitionSpec;
use drover_core::{Command, Event, JobSpec, Resources};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("drover-ctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn open(dir: &TempDir) -> Controller {
    let members = Membership::Static([(1, "127.0.0.1:0".to_string())].into());
    let key = std::sync::Arc::new(b"0123456789abcdef0123456789abcdef".to_vec());
    let c = Controller::open(&dir.0, 1, "127.0.0.1:0", members, &Timing::default(), key, None)
        .await
        .expect("controller opens");
    c.wait_for_leader(Duration::from_secs(10)).await.expect("leader");
    c
}

async fn setup(c: &Controller) {
    c.propose(Command::SetPartition(PartitionSpec { is_default: true, ..PartitionSpec::new("debug", "ALL") }))
        .await
        .unwrap();
    c.propose(Command::RegisterNode {
        name: "node1".into(),
        addr: String::new(),
        total: Resources::new(4, 8192, 0),
        features: vec![],
        known_steps: vec![],
        now: 1,
    })
    .await
    .unwrap();
}

fn submit(now: u64) -> Command {
    Command::Submit { spec: Arc::new(JobSpec::simple("alice", "#!/bin/sh\ntrue\n")), now }
}

/// Waits until the restarted controller has re-applied its log.
async fn jobs_after_restart(c: &Controller, want: usize) -> usize {
    for _ in 0..200 {
        let n = c.shared.read(|s| s.jobs().len());
        if n >= want {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    c.shared.read(|s| s.jobs().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_jobs_survive_a_restart() {
    let dir = TempDir::new("restart");
    let c = open(&dir).await;
    setup(&c).await;
    for i in 0..3 {
        let ev = c.propose(submit(10 + i)).await.unwrap();
        assert_eq!(ev, vec![Event::JobSubmitted { job: i + 1, array_tasks: None }]);
    }
    // A refused command is committed, applied, refused — and changes nothing.
    let mut bad = JobSpec::simple("alice", "");
    bad.partition = Some("nosuch".into());
    match c.propose(Command::Submit { spec: Arc::new(bad), now: 20 }).await {
        Err(ProposeError::Refused(e)) => assert!(e.to_string().contains("invalid partition name"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    c.shutdown().await;
    drop(c);

    let c = open(&dir).await;
    assert_eq!(jobs_after_restart(&c, 3).await, 3);
    // Ids continue where they left off.
    let ev = c.propose(submit(30)).await.unwrap();
    assert_eq!(ev, vec![Event::JobSubmitted { job: 4, array_tasks: None }]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_plus_log_tail_after_restart() {
    let dir = TempDir::new("snapshot");
    let c = open(&dir).await;
    setup(&c).await;
    for i in 0..50 {
        c.propose(submit(10 + i)).await.unwrap();
    }
    c.raft.trigger().snapshot().await.unwrap();
    // Wait for the snapshot to be built.
    for _ in 0..200 {
        if c.raft.metrics().borrow().snapshot.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(c.raft.metrics().borrow().snapshot.is_some(), "snapshot built");
    for i in 0..5 {
        c.propose(submit(100 + i)).await.unwrap();
    }
    let before = c.shared.read(|s| s.snapshot());
    c.shutdown().await;
    drop(c);

    let c = open(&dir).await;
    assert_eq!(jobs_after_restart(&c, 55).await, 55);
    let after = c.shared.read(|s| s.snapshot());
    assert_eq!(before.jobs, after.jobs, "the same jobs, field for field");
    assert_eq!(before.next_job_id, after.next_job_id);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_latency_is_reported() {
    let dir = TempDir::new("latency");
    let c = open(&dir).await;
    setup(&c).await;
    let n = 200;
    let start = std::time::Instant::now();
    for i in 0..n {
        c.propose(submit(10 + i)).await.unwrap();
    }
    let per = start.elapsed() / n as u32;
    // Not a performance assertion: a record of what one fsync'd commit costs here.
    eprintln!("sequential propose+commit+apply: {per:?} per command ({n} commands)");
    c.shutdown().await;
}
