//! The attacks of issue #19, as two unprivileged users on one host would
//! make them against a `drover up` cluster: each must fail.
//!
//! The users (`drover-mallory`, `drover-victim`) are made with `useradd`
//! when missing; where that cannot be done (not root) each test says so
//! and passes without running.

use drover_core::array::{ArraySpec, TaskRun, TaskSet};
use drover_core::JobSpec;
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;
use common::*;

#[derive(Clone, Copy)]
struct User {
    uid: u32,
    gid: u32,
}

fn id_of(name: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, name]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The test user `name`, made if missing; `None` where users cannot be made.
fn test_user(name: &str) -> Option<User> {
    // Two `useradd`s at once race over /etc/passwd.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the attacks need two unprivileged users, and only root can make them");
        return None;
    }
    if id_of(name, "-u").is_none() {
        let made =
            Command::new("useradd").args(["--no-create-home", "--user-group", "--shell", "/bin/sh", name]).status();
        if !made.is_ok_and(|s| s.success()) && id_of(name, "-u").is_none() {
            eprintln!("skipped: cannot create user {name} with useradd");
            return None;
        }
    }
    Some(User { uid: id_of(name, "-u")?, gid: id_of(name, "-g")? })
}

/// A directory the user owns (her working directory for jobs).
fn home(c: &Cluster, u: User, name: &str) -> PathBuf {
    let d = c.dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(u.uid), Some(u.gid)).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

/// `drover ARGS` as the user, in `dir`.
fn drover_as(c: &Cluster, u: User, dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .current_dir(dir)
        .env("DROVER_CONTROLLER", c.addrs())
        .env("DROVER_AUTH_SOCKET", c.dir.join(".drover/auth.sock"))
        .uid(u.uid)
        .gid(u.gid)
        .output()
        .expect("runs drover")
}

/// `sh -c SCRIPT` as the user, in `dir`.
fn sh_as(c: &Cluster, u: User, dir: &Path, script: &str) -> Output {
    Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .env("DROVER_CONTROLLER", c.addrs())
        .env("DROVER_AUTH_SOCKET", c.dir.join(".drover/auth.sock"))
        .env("PATH", format!("{}:/usr/bin:/bin", Path::new(env!("CARGO_BIN_EXE_drover")).parent().unwrap().display()))
        .uid(u.uid)
        .gid(u.gid)
        .output()
        .expect("runs sh")
}

/// A session token for the user's REST requests.
fn token_of(c: &Cluster, u: User, dir: &Path) -> String {
    let out = drover_as(c, u, dir, &["token"]);
    assert!(out.status.success(), "token: {}", String::from_utf8_lossy(&out.stderr));
    format!("Bearer {}", String::from_utf8_lossy(&out.stdout).trim())
}

/// A job of the user's, as a REST body would carry it.
fn spec_of(u: User, dir: &Path) -> JobSpec {
    let mut s = JobSpec::simple("drover-mallory", "#!/bin/sh\nid\n");
    (s.uid, s.gid) = (u.uid, u.gid);
    s.work_dir = dir.display().to_string();
    s
}

fn post_jobs(c: &Cluster, token: &str, specs: &[JobSpec]) -> (u16, String) {
    let body = json!({ "jobs": specs }).to_string();
    request(&c.addrs(), "POST", "/api/v1/jobs", Some(token), &body)
}

fn submitted_id(body: &str) -> u64 {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["job_ids"][0].as_u64().unwrap_or_else(|| panic!("no id in {body}"))
}

fn wait_done(c: &Cluster, id: &str) {
    c.wait_for(&format!("job {id} to end"), Duration::from_secs(30), || {
        matches!(state_of(c, id).as_str(), "COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT" | "OUT_OF_MEMORY")
    });
}

fn healthy_within(c: &Cluster, limit: Duration) -> bool {
    let begun = Instant::now();
    let out = c.drover(&["health"]);
    out.status.success() && begun.elapsed() < limit
}

#[test]
fn a_user_cannot_choose_her_groups_name_priority_or_break_the_controllers() {
    let (Some(mallory), Some(_)) = (test_user("drover-mallory"), test_user("drover-victim")) else { return };
    let c = Cluster::start("sec-id", 1, 0);
    let dir = home(&c, mallory, "mallory");
    let token = token_of(&c, mallory, &dir);

    // 1. Groups: shadow (42), root (0), disk (6) are not hers.
    for gid in [42, 0, 6] {
        let mut s = spec_of(mallory, &dir);
        s.gid = gid;
        let (status, body) = post_jobs(&c, &token, &[s]);
        assert_eq!(status, 403, "gid {gid}: {body}");
        assert!(body.contains("not a member of group"), "{body}");
    }
    // A forged name is replaced by her own, everywhere the job shows.
    let mut s = spec_of(mallory, &dir);
    s.user = "root".into();
    let (status, body) = post_jobs(&c, &token, &[s]);
    assert_eq!(status, 200, "{body}");
    let id = submitted_id(&body).to_string();
    let show = c.drover(&["show", "job", &id, "--json"]);
    let v: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(v["user"], "drover-mallory");
    wait_done(&c, &id);
    let out = std::fs::read_to_string(dir.join(format!("slurm-{id}.out"))).unwrap_or_default();
    assert!(out.contains("drover-mallory") && !out.contains("(root)") && !out.contains("(shadow)"), "{out}");

    // 8. Queue jumping: a priority, or a negative nice, are operators' only.
    let mut s = spec_of(mallory, &dir);
    s.priority = Some(1 << 30);
    let (status, body) = post_jobs(&c, &token, &[s]);
    assert_eq!(status, 403, "{body}");
    let mut s = spec_of(mallory, &dir);
    s.nice = -1000;
    assert_eq!(post_jobs(&c, &token, &[s]).0, 403);
    let cli = drover_as(&c, mallory, &dir, &["submit", "--nice=-5", "--wrap", "true"]);
    assert!(!cli.status.success(), "a negative nice from the CLI is refused");
    assert!(String::from_utf8_lossy(&cli.stderr).contains("negative nice"), "{}", String::from_utf8_lossy(&cli.stderr));

    // 3. An array of step 0, 4. numbers past their bounds, 10. sizes: a
    // clear 400 each, and the controller serves on.
    let mut s = spec_of(mallory, &dir);
    s.array = Some(ArraySpec {
        tasks: TaskSet::from_raw_runs(vec![TaskRun { start: 0, end: 10, step: 0 }]),
        max_running: None,
    });
    let (status, body) = post_jobs(&c, &token, &[s]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("malformed"), "{body}");
    let mut s = spec_of(mallory, &dir);
    s.time_limit = Some(u64::MAX);
    let (status, body) = post_jobs(&c, &token, &[s]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("time limit"), "{body}");
    let mut s = spec_of(mallory, &dir);
    s.comment = Some("x".repeat(10 << 20));
    let (status, body) = post_jobs(&c, &token, &[s]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("comment is 10485760 bytes"), "{body}");
    let many = vec![spec_of(mallory, &dir); 10_001];
    let (status, body) = post_jobs(&c, &token, &many);
    assert_eq!(status, 429, "{body}");
    assert!(healthy_within(&c, Duration::from_secs(5)), "{}", c.logs());

    // The controller restarts and replays its log without trouble.
    unsafe { libc::kill(c.controller_pid(), libc::SIGKILL) };
    let up = c.up(1);
    assert!(up.status.success(), "up right after a kill: {}", c.logs());
    // 12. `drover up` prints no sign-in token (it would grant root).
    assert!(!String::from_utf8_lossy(&up.stdout).contains("#token="), "{}", String::from_utf8_lossy(&up.stdout));
    assert!(healthy_within(&c, Duration::from_secs(10)), "{}", c.logs());
    assert!(!c.submit(&["--wrap", "true"]).is_empty());
}

#[test]
fn per_user_limits_refuse_past_max_submit_and_hold_past_max_jobs() {
    let Some(mallory) = test_user("drover-mallory") else { return };
    let c = Cluster::start_with("sec-limit", 1, 1, &["--max-submit-jobs", "5", "--max-jobs", "1"]);
    let dir = home(&c, mallory, "mallory");
    let ok = drover_as(&c, mallory, &dir, &["submit", "--hold", "-a", "0-3", "--wrap", "true"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let past = drover_as(&c, mallory, &dir, &["submit", "--hold", "-a", "0-1", "--wrap", "true"]);
    assert!(!past.status.success());
    assert!(
        String::from_utf8_lossy(&past.stderr).contains("MaxSubmitJobs=5"),
        "{}",
        String::from_utf8_lossy(&past.stderr)
    );
    // Root is an operator: the submit limit is not its.
    c.submit(&["--hold", "-a", "0-9", "--wrap", "true"]);
    // MaxJobs: her one running job holds the next back, with Slurm's reason.
    let cancel = drover_as(&c, mallory, &dir, &["cancel", "--user", "drover-mallory"]);
    assert!(cancel.status.success(), "{}", String::from_utf8_lossy(&cancel.stderr));
    let first =
        String::from_utf8_lossy(&drover_as(&c, mallory, &dir, &["submit", "--parsable", "--wrap", "sleep 30"]).stdout)
            .trim()
            .to_string();
    let second =
        String::from_utf8_lossy(&drover_as(&c, mallory, &dir, &["submit", "--parsable", "--wrap", "true"]).stdout)
            .trim()
            .to_string();
    c.wait_for("the first to run", Duration::from_secs(10), || state_of(&c, &first) == "RUNNING");
    c.wait_for("the second to wait for her limit", Duration::from_secs(10), || {
        let out = c.drover(&["show", "job", &second, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["reason"] == "AssocMaxJobsLimit"
    });
    drover_as(&c, mallory, &dir, &["cancel", &first]);
    wait_done(&c, &second);
    assert_eq!(state_of(&c, &second), "COMPLETED");
}

#[test]
fn a_job_cannot_make_root_write_through_its_spool_directory() {
    let Some(mallory) = test_user("drover-mallory") else { return };
    let c = Cluster::start("sec-spool", 1, 2);
    let dir = home(&c, mallory, "mallory");
    let target = c.dir.join("root-owned");
    std::fs::write(&target, "root's\n").unwrap();
    let script = format!(
        "#!/bin/sh\nd=$(dirname \"$0\")\nln -s {t} \"$d/exit\" 2>/dev/null && echo planted || echo refused\n\
         ln -s {t} \"$d/fenced\" 2>/dev/null && echo planted || echo refused\n\
         (echo 99999 > \"$d/pid\") 2>/dev/null && echo forged || echo refused\nls \"$d\" >/dev/null 2>&1 && echo listed || echo refused\n",
        t = target.display()
    );
    std::fs::write(dir.join("job.sh"), script).unwrap();
    let out = drover_as(&c, mallory, &dir, &["submit", "--parsable", "job.sh"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_done(&c, &id);
    assert_eq!(state_of(&c, &id), "COMPLETED");
    let out = std::fs::read_to_string(dir.join(format!("slurm-{id}.out"))).unwrap();
    assert_eq!(out, "refused\nrefused\nrefused\nrefused\n", "the job changed the agent's files");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "root's\n");
}

#[test]
fn reading_output_never_freezes_the_controller() {
    let Some(mallory) = test_user("drover-mallory") else { return };
    let c = Cluster::start("sec-fifo", 1, 3);
    let dir = home(&c, mallory, "mallory");
    let token = token_of(&c, mallory, &dir);
    let out = drover_as(&c, mallory, &dir, &["submit", "--parsable", "-o", "out.txt", "--wrap", "echo hello"]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_done(&c, &id);
    let path = format!("/api/v1/jobs/{id}/output");
    assert_eq!(request(&c.addrs(), "GET", &path, Some(&token), "").1, "hello\n");

    // Her output becomes a FIFO: four readers would each block an `open`.
    let made = sh_as(&c, mallory, &dir, "rm out.txt && mkfifo out.txt");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let begun = Instant::now();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (addrs, path, token) = (c.addrs(), path.clone(), token.clone());
            std::thread::spawn(move || request(&addrs, "GET", &path, Some(&token), ""))
        })
        .collect();
    for r in readers {
        let (status, body) = r.join().unwrap();
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("not a regular file"), "{body}");
    }
    assert!(begun.elapsed() < Duration::from_secs(3), "answered in {:?}", begun.elapsed());
    assert!(healthy_within(&c, Duration::from_secs(2)));

    // A link to a file only root may read is not followed.
    let made = sh_as(&c, mallory, &dir, "rm out.txt && ln -s /etc/shadow out.txt");
    assert!(made.status.success());
    let (status, body) = request(&c.addrs(), "GET", &path, Some(&token), "");
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("root:"), "{body}");
}

#[test]
fn thousands_of_idle_connections_do_not_take_the_controller_down() {
    let c = Cluster::start("sec-conns", 2, 4);
    // The attack exhausts descriptors: give the controller few.
    let pid = c.controller_pid().to_string();
    let lowered = Command::new("prlimit").args(["--pid", &pid, "--nofile=1500:1500"]).status();
    if !lowered.is_ok_and(|s| s.success()) {
        eprintln!("skipped: prlimit cannot lower the controller's descriptor limit");
        return;
    }
    let addr = c.addrs();
    let mut idle = Vec::new();
    let begun = Instant::now();
    while idle.len() < 3000 && begun.elapsed() < Duration::from_secs(20) {
        match std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200)) {
            Ok(s) => idle.push(s),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    eprintln!("{} idle connections open after {:?}", idle.len(), begun.elapsed());
    // Agents keep heartbeating, health answers, a job runs.
    std::thread::sleep(Duration::from_secs(2));
    assert!(healthy_within(&c, Duration::from_secs(5)), "health with idle connections open\n{}", c.logs());
    let id = c.submit(&["--wrap", "echo still here"]);
    wait_done(&c, &id);
    assert_eq!(state_of(&c, &id), "COMPLETED");
    let nodes = c.drover(&["nodes"]);
    assert!(!String::from_utf8_lossy(&nodes.stdout).contains("down"), "{}", String::from_utf8_lossy(&nodes.stdout));
    // Silent connections are closed within the first-byte timeout.
    std::thread::sleep(Duration::from_secs(11));
    let closed = idle
        .iter_mut()
        .take(200)
        .filter(|s| {
            use std::io::{ErrorKind, Read};
            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            match (&**s).read(&mut [0u8; 1]) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            }
        })
        .count();
    assert!(closed >= 190, "{closed} of 200 idle connections closed");
}

#[test]
fn state_logs_and_job_files_are_private() {
    let Some(mallory) = test_user("drover-mallory") else { return };
    let c = Cluster::start("sec-modes", 1, 5);
    let mode = |p: &str| std::fs::metadata(c.dir.join(p)).unwrap().mode() & 0o777;
    assert_eq!(mode(".drover/controller"), 0o700);
    assert_eq!(mode(".drover/logs"), 0o700);
    assert_eq!(mode(".drover/logs/controller.log"), 0o600);
    for f in std::fs::read_dir(c.dir.join(".drover/controller")).unwrap().flatten() {
        let m = f.metadata().unwrap().mode() & 0o777;
        assert_eq!(m & 0o077, 0, "{} is mode {m:o}", f.path().display());
    }
    let dir = home(&c, mallory, "mallory");
    let peek = sh_as(
        &c,
        mallory,
        &dir,
        &format!(
            "cat {}/.drover/controller/* 2>&1; cat {}/.drover/logs/controller.log 2>&1",
            c.dir.display(),
            c.dir.display()
        ),
    );
    let text = String::from_utf8_lossy(&peek.stdout);
    assert!(text.lines().count() >= 2 && text.lines().all(|l| l.contains("Permission denied")), "{text}");

    // Her umask is her jobs' umask.
    let out = sh_as(
        &c,
        mallory,
        &dir,
        "umask 077; drover submit --parsable -o private.txt --wrap 'echo $SLURM_UMASK; touch made'",
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_done(&c, &id);
    let m = |f: &str| std::fs::metadata(dir.join(f)).unwrap().mode() & 0o777;
    assert_eq!(std::fs::read_to_string(dir.join("private.txt")).unwrap(), "0077\n");
    assert_eq!((m("private.txt"), m("made")), (0o600, 0o600));
    let out = sh_as(&c, mallory, &dir, "umask 022; drover submit --parsable -o public.txt --wrap 'touch made2'");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    wait_done(&c, &id);
    assert_eq!((m("public.txt"), m("made2")), (0o644, 0o644));
}

/// A credential from the cluster's socket, as the CLI gets one.
fn credential(c: &Cluster) -> String {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(c.dir.join(".drover/auth.sock")).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.trim().to_string()
}

fn job_count(c: &Cluster) -> usize {
    let out = c.drover(&["queue", "-a", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["jobs"].as_array().map_or(0, |j| j.len())
}

/// `GET path` from `addr`, or `None` on any error.
fn get_quietly(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// The address of the controller that says it leads (unauthenticated).
fn leader_addr(c: &Cluster) -> String {
    for _ in 0..100 {
        for addr in c.addrs().split(',') {
            // A controller may be dying or starting: any error, try the next.
            let Some(body) = get_quietly(addr, "/api/v1/controllers") else { continue };
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            if v["role"] == "Leader" {
                return addr.to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no leader\n{}", c.logs());
}

/// POSTs the request with `cred` to the leader only: no other controller
/// sees the credential.
fn submit_with(c: &Cluster, cred: &str, body: &str) -> (u16, String) {
    http(&leader_addr(c), "POST", "/api/v1/jobs", Some(cred), body)
}

#[test]
fn a_credential_acts_once_across_restarts_and_failovers() {
    let c = Cluster::start_with("sec-replay", 1, 6, &["--controllers", "3"]);
    let mut spec = JobSpec::simple("root", "#!/bin/sh\ntrue\n");
    (spec.uid, spec.gid, spec.hold) = (0, 0, true);
    spec.work_dir = c.dir.display().to_string();
    let body = json!({ "jobs": [spec] }).to_string();
    let cred = credential(&c);
    let (status, first) = submit_with(&c, &cred, &body);
    assert_eq!(status, 200, "{first}");
    assert_eq!(job_count(&c), 1);

    // The leader goes; the new one never saw the credential itself.
    let leader = c.drover(&["chaos", "kill-controller"]);
    assert!(leader.status.success(), "{}", String::from_utf8_lossy(&leader.stderr));
    let (status, body_back) = submit_with(&c, &cred, &body);
    assert_eq!(status, 403, "replayed after a failover: {body_back}");
    assert!(body_back.contains("replayed"), "{body_back}");

    // Every controller restarted: the log still knows it.
    for pid in c.pids() {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(c.up(1).status.success(), "{}", c.logs());
    let (status, body_back) = submit_with(&c, &cred, &body);
    assert_eq!(status, 403, "replayed after a restart: {body_back}");
    assert_eq!(job_count(&c), 1, "exactly one job");
}

/// schemathesis (PyPI) fuzzes every operation of the API document as a
/// hostile user, for a bounded time: no 5xx, and no response that
/// contradicts the document (status, content type, schema).
#[test]
fn the_api_survives_schemathesis_as_its_document_says() {
    let Some(mallory) = test_user("drover-mallory") else { return };
    if !Command::new("schemathesis").arg("--version").output().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: schemathesis is not installed (pip install schemathesis; .ci/run does)");
        return;
    }
    let c = Cluster::start("sec-st", 1, 7);
    let dir = home(&c, mallory, "mallory");
    let token = token_of(&c, mallory, &dir);
    let run = Command::new("schemathesis")
        .args(["run", &format!("http://{}/api/v1/openapi.json", c.addrs()), "-H", &format!("Authorization: {token}")])
        .args(["--max-time", "60", "-w", "1", "--seed", "1"])
        .args(["-c", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("runs schemathesis");
    let said = String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    let summary = said.rsplit_once("SUMMARY").map_or(said.as_str(), |(_, s)| s);
    eprintln!("schemathesis:{summary}");
    assert!(run.status.success(), "schemathesis found failures:\n{said}\n{}", c.logs());
    assert!(healthy_within(&c, Duration::from_secs(5)));
}
