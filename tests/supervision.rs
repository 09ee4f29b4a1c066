//! A daemon whose internal task dies exits non-zero, saying which task and
//! why, so that its supervisor (systemd, `drover up`, a container runtime)
//! starts it again — instead of answering requests while, say, nothing
//! schedules. The panic is injected with `DROVER_FAULT_PANIC=TASK`
//! (drover-supervise).

mod common;
use common::{test_port, Cluster};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `drover ARGS` with the fault injected into `task`; its output once
/// it has exited, or a failure after `within`.
fn run_with_fault(task: &str, args: &[&str], within: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .env("DROVER_FAULT_PANIC", task)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs drover");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > within {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {within:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_controller_whose_scheduler_dies_exits_non_zero_and_says_why() {
    let dir = std::env::temp_dir().join(format!("drover-it-supervise-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("cluster.key");
    let made = Command::new(env!("CARGO_BIN_EXE_drover")).arg("keygen").arg(&key).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let state = dir.join("controller");
    let listen = format!("127.0.0.1:{}", test_port(0));
    let args = ["controller", "--state-dir", state.to_str().unwrap(), "--listen", &listen];
    let args = [&args[..], &["--key-file", key.to_str().unwrap(), "--accounting", "none"]].concat();
    let out = run_with_fault("scheduler", &args, Duration::from_secs(20));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("the scheduler task died: it panicked: a fault injected with DROVER_FAULT_PANIC=scheduler"),
        "{log}"
    );
    assert!(log.contains("the controller exits so that its supervisor"), "{log}");
}

#[test]
fn an_agent_whose_report_sender_dies_exits_non_zero_and_says_why() {
    let c = Cluster::start("supervise-agent", 1, 1);
    let state = c.dir.join("extra-agent");
    let key = c.dir.join(".drover/cluster.key");
    let args = ["agent", "--controller", &c.addrs(), "--name", "extra", "--key-file", key.to_str().unwrap()];
    let args = [&args[..], &["--state-dir", state.to_str().unwrap(), "--listen", "none"]].concat();
    let out = run_with_fault("reports", &args, Duration::from_secs(20));
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("the reports task died: it panicked: a fault injected with DROVER_FAULT_PANIC=reports"),
        "{log}"
    );
    assert!(log.contains("the agent exits so that its supervisor"), "{log}");
    // The cluster's own daemons, started without the fault, run on.
    assert!(c.drover(&["nodes"]).status.success());
}
