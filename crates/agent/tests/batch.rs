//! The step launcher against real processes.

use drover_agent::batch::{launch, recover, LaunchError, LauncherConfig, Recovered};
use drover_core::job::{OpenMode, SignalSpec};
use drover_core::launch::LaunchOrder;
use drover_core::state::StepOutcome;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("drover-step-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, p: &str) -> String {
        self.0.join(p).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn order(dir: &TempDir, job_id: u64, script: &str) -> LaunchOrder {
    let uid = unsafe { libc::geteuid() };
    let gid = unsafe { libc::getegid() };
    LaunchOrder {
        job_id,
        display_id: job_id.to_string(),
        attempt: 0,
        node_name: "n1".into(),
        user: "root".into(),
        uid,
        gid,
        script: Arc::from(format!("#!/bin/sh\n{script}\n")),
        work_dir: dir.0.display().to_string(),
        stdout: dir.path(&format!("slurm-{job_id}.out")),
        stderr: dir.path(&format!("slurm-{job_id}.out")),
        stdin: None,
        open_mode: OpenMode::Truncate,
        env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()), ("SLURM_JOB_ID".into(), job_id.to_string())],
        time_limit: None,
        mem_limit_mb: None,
        cpus: 1,
        signal: None,
        umask: None,
    }
}

fn config(dir: &TempDir) -> LauncherConfig {
    LauncherConfig {
        kill_grace: Duration::from_secs(1),
        rss_poll: Duration::from_millis(100),
        ..LauncherConfig::new(dir.0.join("spool"))
    }
}

fn output(dir: &TempDir, job_id: u64) -> String {
    std::fs::read_to_string(dir.path(&format!("slurm-{job_id}.out"))).unwrap_or_default()
}

#[tokio::test]
async fn runs_the_script_with_its_environment_and_output_file() {
    let dir = TempDir::new("env");
    let o = order(&dir, 11, "echo job=$SLURM_JOB_ID; pwd; echo to-stderr >&2; exit 0");
    let report = launch(&o, &config(&dir), &[]).await.unwrap().wait().await;
    assert_eq!(report.outcome, StepOutcome::Exited(0));
    let out = output(&dir, 11);
    assert!(out.contains("job=11\n"), "{out}");
    assert!(out.contains(&format!("{}\n", dir.0.display())), "runs in the work dir: {out}");
    assert!(out.contains("to-stderr"), "stderr joins stdout by default: {out}");
    assert!(!dir.0.join("spool/job11.0").exists(), "spool is cleaned up");
}

#[tokio::test]
async fn exit_codes_and_separate_stderr() {
    let dir = TempDir::new("exit");
    let mut o = order(&dir, 12, "echo out; echo err >&2; exit 3");
    o.stderr = dir.path("err.txt");
    let report = launch(&o, &config(&dir), &[]).await.unwrap().wait().await;
    assert_eq!(report.outcome, StepOutcome::Exited(3));
    assert_eq!(output(&dir, 12), "out\n");
    assert_eq!(std::fs::read_to_string(dir.path("err.txt")).unwrap(), "err\n");
}

#[tokio::test]
async fn time_limit_terminates_then_kills() {
    let dir = TempDir::new("time");
    let mut o = order(&dir, 13, "sleep 30");
    o.time_limit = Some(1);
    let report = launch(&o, &config(&dir), &[]).await.unwrap().wait().await;
    assert_eq!(report.outcome, StepOutcome::TimedOut);
    assert!(report.runtime < Duration::from_secs(5), "{:?}", report.runtime);

    // A script that ignores SIGTERM is killed after the grace period.
    let mut o = order(&dir, 14, "trap '' TERM; i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done");
    o.time_limit = Some(1);
    let report = launch(&o, &config(&dir), &[]).await.unwrap().wait().await;
    assert_eq!(report.outcome, StepOutcome::TimedOut);
    assert!(report.runtime >= Duration::from_secs(2), "grace was honoured: {:?}", report.runtime);
    assert!(report.runtime < Duration::from_secs(8), "{:?}", report.runtime);
}

const HOG: &str = "python3 -c \"import time; b = b'x' * (300 * 1024 * 1024); time.sleep(5)\"";

#[tokio::test]
async fn memory_limit_with_a_cgroup() {
    let dir = TempDir::new("oom-cg");
    let root = Path::new("/sys/fs/cgroup");
    if !is_root() || drover_agent::cgroup::detect(root).is_none() {
        eprintln!("skipped: needs root and a writable memory cgroup hierarchy");
        return;
    }
    let mut o = order(&dir, 15, HOG);
    o.mem_limit_mb = Some(64);
    let report = launch(&o, &config(&dir), &[]).await.unwrap().wait().await;
    assert_eq!(report.outcome, StepOutcome::OutOfMemory);
    assert!(report.max_rss_bytes.unwrap_or(0) >= 32 * 1024 * 1024, "{:?}", report.max_rss_bytes);
    assert!(report.runtime < Duration::from_secs(5));
}

/// The cgroup mount point where ready cells can be made (root, a v1
/// memory hierarchy); `None` skips the test.
fn cgroup_v1_root() -> Option<&'static Path> {
    let root = Path::new("/sys/fs/cgroup");
    match drover_agent::cgroup::detect(root) {
        Some((_, drover_agent::cgroup::Version::V1)) if is_root() => Some(root),
        _ => {
            eprintln!("skipped: needs root and a cgroup-v1 memory hierarchy");
            None
        }
    }
}

#[tokio::test]
async fn a_ready_cell_becomes_the_step_in_its_own_named_cgroup() {
    let dir = TempDir::new("cells");
    let Some(root) = cgroup_v1_root() else { return };
    let cfg = config(&dir).with_ready_cells();
    let cells = cfg.ready.clone().expect("cells on a v1 host");
    assert_eq!(cells.waiting(), 2);
    let parent = root.join("memory/drover");
    let tag = cfg.agent_tag();
    let ready_dirs = || -> Vec<String> {
        let names = std::fs::read_dir(&parent).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned());
        names.filter(|n| n.starts_with(&format!("{tag}-ready"))).collect()
    };
    let first_cells = ready_dirs();
    assert_eq!(first_cells.len(), 2);

    // The step runs in the cell's cgroup, renamed after it, with its limit.
    let mut o = order(&dir, 41, "grep memory /proc/self/cgroup; cat /sys/fs/cgroup/memory$(grep memory /proc/self/cgroup | cut -d: -f3)/memory.limit_in_bytes");
    o.mem_limit_mb = Some(64);
    let report = launch(&o, &cfg, &[]).await.unwrap().wait().await;
    assert_eq!(report.outcome, StepOutcome::Exited(0));
    assert_eq!(output(&dir, 41), format!("4:memory:/drover/{}\n{}\n", cfg.cgroup_name(41, 0), 64 * 1024 * 1024));
    assert!(!parent.join(cfg.cgroup_name(41, 0)).exists(), "the step's cgroup goes with it");
    let begun = std::time::Instant::now();
    while cells.waiting() < 2 && begun.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let now = ready_dirs();
    assert_eq!(first_cells.iter().filter(|c| !now.contains(c)).count(), 1, "one cell became the step: {now:?}");

    // The limit holds in a cell as in a cgroup of the step's own.
    let mut o = order(&dir, 42, HOG);
    o.mem_limit_mb = Some(64);
    let report = launch(&o, &cfg, &[]).await.unwrap().wait().await;
    assert_eq!(report.outcome, StepOutcome::OutOfMemory);

    // Taken cells are replaced; closing ends the waiting children, whose
    // cgroups could not be removed while they were in them.
    let begun = std::time::Instant::now();
    while cells.waiting() < 2 && begun.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cells.waiting(), 2);
    cells.close().await;
    assert_eq!(ready_dirs(), Vec::<String>::new());
}

#[tokio::test]
async fn cells_a_killed_agent_left_do_not_stop_new_ones() {
    let dir = TempDir::new("cells-left");
    let Some(root) = cgroup_v1_root() else { return };
    let cfg = config(&dir);
    // An earlier agent's cell whose child has not gone yet: it cannot be
    // removed, and its number is taken.
    let left = root.join(format!("memory/drover/{}-ready0", cfg.agent_tag()));
    std::fs::create_dir_all(&left).unwrap();
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(left.join("cgroup.procs"), child.id().to_string()).unwrap();
    let cfg = cfg.with_ready_cells();
    let cells = cfg.ready.clone().expect("cells on a v1 host");
    assert_eq!(cells.waiting(), 2, "new cells are made beside the old one");
    cells.close().await;
    child.kill().unwrap();
    child.wait().unwrap();
    let begun = std::time::Instant::now();
    while std::fs::remove_dir(&left).is_err() && begun.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!left.exists());
}

#[tokio::test]
async fn a_restarted_agent_removes_the_step_cgroups_a_killed_one_left() {
    let dir = TempDir::new("cgroups-left");
    let Some(root) = cgroup_v1_root() else { return };
    let cfg = config(&dir);
    let parent = root.join("memory/drover");
    let made = |name: String| {
        let path = parent.join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    };
    // Left by a killed agent of this spool: one empty (its step's spool
    // record gone), one still holding a process; and another agent's.
    let empty = made(cfg.cgroup_name(81, 0));
    let busy = made(cfg.cgroup_name(82, 1));
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(busy.join("cgroup.procs"), child.id().to_string()).unwrap();
    let other = made("0badc0de-job81.0".to_string());
    assert!(drover_agent::batch::recover(&cfg).await.is_empty());
    assert!(!empty.exists(), "the empty cgroup is removed");
    assert!(busy.exists(), "a cgroup holding a process stays");
    assert!(other.exists(), "another agent's cgroup stays");
    child.kill().unwrap();
    child.wait().unwrap();
    for path in [busy, other] {
        let begun = std::time::Instant::now();
        while std::fs::remove_dir(&path).is_err() && begun.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn memory_limit_by_sampling_without_cgroups() {
    let dir = TempDir::new("oom-rss");
    let mut o = order(&dir, 16, HOG);
    o.mem_limit_mb = Some(64);
    let cfg = LauncherConfig { cgroup_root: None, ..config(&dir) };
    let report = launch(&o, &cfg, &[]).await.unwrap().wait().await;
    assert_eq!(report.outcome, StepOutcome::OutOfMemory);
    assert!(report.runtime < Duration::from_secs(5));
    // Within the limit, nothing happens.
    let mut o = order(&dir, 17, "echo small");
    o.mem_limit_mb = Some(64);
    assert_eq!(launch(&o, &cfg, &[]).await.unwrap().wait().await.outcome, StepOutcome::Exited(0));
}

#[tokio::test]
async fn cancel_signals_the_whole_group() {
    let dir = TempDir::new("cancel");
    let o = order(&dir, 18, "sleep 30 & sleep 30; wait");
    let step = launch(&o, &config(&dir), &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    step.control().cancel();
    let report = tokio::time::timeout(Duration::from_secs(5), step.wait()).await.expect("cancel ends the step");
    assert_eq!(report.outcome, StepOutcome::Signaled(libc::SIGTERM));
}

#[tokio::test]
async fn nothing_of_the_job_outlives_it() {
    let dir = TempDir::new("leftover");
    let pidfile = dir.path("bg.pid");
    let o = order(&dir, 19, &format!("sleep 300 & echo $! > {pidfile}; exit 0"));
    let report = launch(&o, &config(&dir), &[]).await.unwrap().wait().await;
    assert_eq!(report.outcome, StepOutcome::Exited(0));
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let mut gone = false;
    for _ in 0..50 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "background process {pid} survived the job");
}

#[tokio::test]
async fn runs_as_the_jobs_user() {
    if !is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let dir = TempDir::new("user");
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut o = order(&dir, 20, "id -u; id -g; touch /root/drover-should-not-exist 2>/dev/null && echo wrote-root");
    (o.uid, o.gid, o.user) = (65534, 65534, "nobody".into());
    let report = launch(&o, &config(&dir), &[]).await.unwrap().wait().await;
    assert_eq!(report.outcome, StepOutcome::Exited(1));
    assert_eq!(output(&dir, 20), "65534\n65534\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(dir.path("slurm-20.out")).unwrap().uid(), 65534, "output opened as the user");
    assert!(!Path::new("/root/drover-should-not-exist").exists());
}

#[tokio::test]
async fn warning_signal_before_the_limit() {
    let dir = TempDir::new("warn");
    let mut o =
        order(&dir, 21, "trap 'echo warned; exit 0' USR1; i=0; while [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done");
    o.time_limit = Some(3);
    o.signal = Some(SignalSpec { signal: libc::SIGUSR1, secs_before: 2, batch_only: true });
    let report = launch(&o, &config(&dir), &[]).await.unwrap().wait().await;
    assert_eq!(report.outcome, StepOutcome::Exited(0), "{}", output(&dir, 21));
    assert_eq!(output(&dir, 21), "warned\n");
    assert!(report.runtime < Duration::from_secs(3));
}

#[tokio::test]
async fn append_mode_keeps_earlier_output() {
    let dir = TempDir::new("append");
    let mut o = order(&dir, 22, "echo run");
    o.open_mode = OpenMode::Append;
    launch(&o, &config(&dir), &[]).await.unwrap().wait().await;
    o.attempt = 1;
    launch(&o, &config(&dir), &[]).await.unwrap().wait().await;
    assert_eq!(output(&dir, 22), "run\nrun\n");
}

#[tokio::test]
async fn bad_orders_are_refused_with_the_reason() {
    let dir = TempDir::new("bad");
    let mut o = order(&dir, 23, "true");
    o.work_dir = "/nonexistent/dir".into();
    assert!(matches!(launch(&o, &config(&dir), &[]).await, Err(LaunchError::WorkDir(_))));
    let mut o = order(&dir, 24, "true");
    o.stdout = "/nonexistent/out/%j.txt".into();
    let err = launch(&o, &config(&dir), &[]).await.err().unwrap();
    assert_eq!(
        err.to_string(),
        "cannot create output file /nonexistent/out/%j.txt: directory /nonexistent/out does not exist"
    );
    let mut o = order(&dir, 25, "true");
    o.env.push(("BAD".into(), "nul\0byte".into()));
    assert!(matches!(launch(&o, &config(&dir), &[]).await, Err(LaunchError::NulByte(_))));
    // One that fails after its spool directory was made leaves none behind
    // (`drover down` could not remove a spool that held them).
    let mut o = order(&dir, 26, "true");
    o.stdin = Some("/dev/null\0x".into());
    assert!(launch(&o, &config(&dir), &[]).await.is_err());
    let left: Vec<_> = std::fs::read_dir(dir.0.join("spool"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Issue #19: a limit of 2^64-1 seconds reached the agent's clock and
/// panicked its supervisor. Whatever an order says, the agent clamps it.
#[tokio::test]
async fn a_huge_time_limit_does_not_panic_the_supervisor() {
    let dir = TempDir::new("hugelimit");
    let mut o = order(&dir, 28, "sleep 30");
    o.time_limit = Some(u64::MAX);
    o.signal = Some(drover_core::job::SignalSpec { signal: 10, secs_before: u32::MAX, batch_only: false });
    let step = launch(&o, &config(&dir), &[]).await.unwrap();
    step.control().set_limit(Some(u64::MAX));
    step.control().cancel();
    let report = step.wait().await;
    assert!(matches!(report.outcome, StepOutcome::Signaled(_) | StepOutcome::Exited(_)), "{:?}", report.outcome);
}

/// The step's directory is the agent's: the job may run its script there,
/// not list, add or replace anything in it.
#[tokio::test]
async fn the_step_directory_is_the_agents_not_the_jobs() {
    if !is_root() {
        eprintln!("skipped: needs root to run a job as another user");
        return;
    }
    let dir = TempDir::new("stepdir");
    std::os::unix::fs::chown(&dir.0, Some(65534), Some(65534)).unwrap();
    let mut o =
        order(&dir, 27, "d=$(dirname $0); touch $d/x 2>/dev/null && echo wrote || echo refused; stat -c %U:%a $d");
    (o.uid, o.gid, o.user) = (65534, 65534, "nobody".into());
    let report = launch(&o, &config(&dir), &[]).await.unwrap().wait().await;
    assert_eq!(report.outcome, StepOutcome::Exited(0));
    assert_eq!(output(&dir, 27), "refused\nroot:711\n");
}

#[tokio::test]
async fn binds_to_the_given_cpus() {
    let dir = TempDir::new("cpus");
    let allowed = drover_agent::batch::allowed_cpus();
    assert!(!allowed.is_empty());
    let cpu = *allowed.last().unwrap();
    let o = order(&dir, 26, "grep Cpus_allowed_list /proc/self/status");
    let report = launch(&o, &config(&dir), &[cpu]).await.unwrap().wait().await;
    assert_eq!(report.outcome, StepOutcome::Exited(0));
    assert_eq!(output(&dir, 26).split_whitespace().last(), Some(cpu.to_string().as_str()));
}

/// Launches `script` under a runtime that is then dropped, as if the agent
/// died: the step keeps running, its supervisor is gone.
fn launch_and_lose_the_agent(dir: &TempDir, job_id: u64, script: &str) -> i32 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let o = order(dir, job_id, script);
    let step = rt.block_on(launch(&o, &config(dir), &[])).unwrap();
    let pid = step.pid;
    drop(step);
    drop(rt);
    pid
}

#[test]
fn a_step_started_in_a_ready_cell_is_re_attached_after_an_agent_restart() {
    let dir = TempDir::new("cell-recover");
    if cgroup_v1_root().is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let cfg = config(&dir).with_ready_cells();
    // The cell's process is older than the step by more than the two
    // seconds a launch is allowed: it must still count as the step's.
    std::thread::sleep(Duration::from_millis(3_000));
    let mut o = order(&dir, 43, "sleep 1; exit 6");
    o.mem_limit_mb = Some(64);
    let step = rt.block_on(launch(&o, &cfg, &[])).unwrap();
    drop(step);
    rt.block_on(cfg.ready.as_ref().unwrap().close());
    drop(rt);
    let found = recover_now(&dir);
    assert_eq!(ended(&found), vec![(43, StepOutcome::Exited(6))]);
}

fn recover_now(dir: &TempDir) -> Vec<Recovered> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut out = Vec::new();
        for (found, _, _) in recover(&config(dir)).await {
            out.push(match found {
                Recovered::Running(step) => Recovered::Ended(step.wait().await),
                ended => ended,
            });
        }
        // The spool is removed in the background once a step is reported.
        for _ in 0..500 {
            let left = std::fs::read_dir(dir.0.join("spool")).map_or(0, |d| d.count());
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        out
    })
}

fn ended(found: &[Recovered]) -> Vec<(u64, StepOutcome)> {
    found
        .iter()
        .map(|f| match f {
            Recovered::Ended(r) => (r.job_id, r.outcome),
            Recovered::Running(_) => unreachable!("waited"),
        })
        .collect()
}

#[test]
fn a_restarted_agent_re_attaches_to_a_running_step_and_gets_its_exit_status() {
    let dir = TempDir::new("reattach");
    launch_and_lose_the_agent(&dir, 31, "sleep 1; echo done; exit 3");
    let found = recover_now(&dir);
    assert_eq!(ended(&found), vec![(31, StepOutcome::Exited(3))]);
    assert_eq!(output(&dir, 31), "done\n", "the step ran once, to its end");
    assert!(!dir.0.join("spool/job31.0").exists(), "spool is cleaned up");
}

#[test]
fn a_step_that_ended_while_no_agent_ran_is_reported_with_its_status() {
    let dir = TempDir::new("ended");
    let pid = launch_and_lose_the_agent(&dir, 32, "sleep 0.3; exit 5");
    // The fence watchdog holds a pidfd on it while no agent runs ...
    let mut recorder = drover_agent::watchdog::ExitRecorder::default();
    recorder.scan(&dir.0.join("spool"));
    // ... it ends and is reaped by its parent (here: this test, as init) ...
    let mut raw = 0;
    assert_eq!(unsafe { libc::waitpid(pid, &mut raw, 0) }, pid);
    // ... and the watchdog writes down how, for the next agent.
    recorder.scan(&dir.0.join("spool"));
    assert!(dir.0.join("spool/job32.0/exit").exists(), "the exit status was recorded");
    assert_eq!(ended(&recover_now(&dir)), vec![(32, StepOutcome::Exited(5))]);
}

#[test]
fn a_step_killed_while_no_agent_ran_reports_the_signal() {
    let dir = TempDir::new("killed");
    let pid = launch_and_lose_the_agent(&dir, 33, "sleep 30");
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(ended(&recover_now(&dir)), vec![(33, StepOutcome::Signaled(libc::SIGKILL))]);
}

#[test]
fn a_re_attached_step_can_still_be_cancelled() {
    let dir = TempDir::new("recancel");
    launch_and_lose_the_agent(&dir, 34, "echo up; sleep 30");
    // Running its script: the cancel must find the step under way.
    for _ in 0..500 {
        if output(&dir, 34) == "up\n" {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let outcome = rt.block_on(async {
        let mut found = recover(&config(&dir)).await;
        assert_eq!(found.len(), 1);
        let (Recovered::Running(step), control, _) = found.remove(0) else { panic!("not running") };
        control.cancel();
        tokio::time::timeout(Duration::from_secs(10), step.wait()).await.expect("cancel ends it").outcome
    });
    assert_eq!(outcome, StepOutcome::Signaled(libc::SIGTERM));
}

/// Issue #20 item 5: a spool on a `noexec` file system (`/dev/shm` in
/// containers) cannot run a script; the agent then runs it through its
/// `#!` interpreter. Needs root to mount a tmpfs; skipped with a line
/// otherwise.
#[tokio::test]
async fn a_noexec_spool_runs_scripts_through_their_interpreter() {
    let dir = TempDir::new("noexec");
    let spool = dir.0.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "noexec,size=16m", "tmpfs"])
        .arg(&spool)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!("skipped: cannot mount a noexec tmpfs here (needs root)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(spool.clone());
    assert!(!drover_agent::spool::allows_exec(&spool), "mounted noexec");
    assert!(drover_agent::spool::allows_exec(&dir.0), "the test directory allows exec");

    // As before the fix: executing the script itself is refused.
    let o = order(&dir, 51, "echo ran");
    let refused = launch(&o, &config(&dir), &[]).await;
    assert!(refused.is_err(), "executing from a noexec spool must fail");

    // Through the interpreter of its #! line, with that line's argument.
    let cfg = LauncherConfig { script_via_interpreter: true, ..config(&dir) };
    let mut o = order(&dir, 52, "");
    o.script = Arc::from("#!/bin/sh -e\necho ran as $0\nfalse\necho not reached\n");
    let report = launch(&o, &cfg, &[]).await.unwrap().wait().await;
    assert_eq!(report.outcome, StepOutcome::Exited(1), "-e from the #! line applies");
    let out = output(&dir, 52);
    assert!(out.starts_with("ran as ") && out.trim_end().ends_with("/script"), "{out}");
    // A Python script, through env.
    if std::process::Command::new("python3").arg("-V").output().is_ok() {
        let mut o = order(&dir, 53, "");
        o.script = Arc::from("#!/usr/bin/env python3\nprint('python', 6 * 7)\n");
        let report = launch(&o, &cfg, &[]).await.unwrap().wait().await;
        assert_eq!(report.outcome, StepOutcome::Exited(0));
        assert_eq!(output(&dir, 53), "python 42\n");
    }
}

/// Issue #20 item 6: a launch that fails in the child names the part that
/// failed (the job's user reads this, not the node's log).
#[tokio::test]
async fn a_failed_launch_names_what_failed() {
    let dir = TempDir::new("named");
    let mut o = order(&dir, 61, "true");
    o.stdout = dir.0.display().to_string();
    o.stderr = dir.path("err.txt");
    let e = launch(&o, &config(&dir), &[]).await.err().expect("a directory is not an output file").to_string();
    assert_eq!(e, format!("cannot open the output file {}: Is a directory (os error 21)", dir.0.display()));

    let mut o = order(&dir, 62, "true");
    o.stdin = Some(dir.path("no-such-input"));
    let e = launch(&o, &config(&dir), &[]).await.err().expect("no input").to_string();
    assert!(e.starts_with(&format!("cannot open the input file {}: ", dir.path("no-such-input"))), "{e}");
}
