//! A whole local cluster through the `drover` binary, as a user drives it:
//! `drover up`, submissions of every kind, a controller killed with -9 while
//! jobs run, and `drover down`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::*;

#[test]
fn a_local_cluster_runs_every_kind_of_job_and_survives_its_controller() {
    let c = Cluster::start("all", 2, 0);

    // Short jobs, submitted one CLI call each.
    let start = Instant::now();
    let short: Vec<String> =
        (0..200).map(|i| c.submit(&["-J", "short", "--wrap", &format!("echo short {i}")])).collect();
    let submit_rate = 200.0 / start.elapsed().as_secs_f64();

    let array = c.submit(&["-a", "0-99", "-o", "arr-%A_%a.out", "--wrap", "echo task $SLURM_ARRAY_TASK_ID"]);
    let a = c.submit(&["--wrap", "echo a > chain.txt"]);
    let b = c.submit(&["-d", &format!("afterok:{a}"), "--wrap", "echo b >> chain.txt"]);
    let d = c.submit(&["-d", &format!("afterok:{b}"), "--wrap", "echo c >> chain.txt"]);
    let timeout = c.submit(&["-t", "0:02", "--wrap", "sleep 60"]);
    let oom = c.submit(&["--mem", "64M", "--wrap", "python3 -c \"b = b'x' * (300 * 1024 * 1024)\""]);
    // Jobs still running when the controller dies.
    let slow: Vec<String> = (0..3).map(|i| c.submit(&["--wrap", &format!("sleep 2; echo slow {i}")])).collect();

    let pid = c.controller_pid();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let out = c.up(2);
    assert!(out.status.success(), "up after kill: {}\n{}", String::from_utf8_lossy(&out.stderr), c.logs());

    let mut all: Vec<&str> = short.iter().map(String::as_str).collect();
    all.extend([array.as_str(), a.as_str(), b.as_str(), d.as_str()]);
    all.extend(slow.iter().map(String::as_str));
    let waited = Instant::now();
    let out = c.drover(&[&["wait"][..], &all].concat());
    assert!(out.status.success(), "every job completed: {}", String::from_utf8_lossy(&out.stderr));
    let out = c.drover(&["wait", &timeout, &oom]);
    assert_eq!(out.status.code(), Some(1), "wait fails when a job does not complete");
    eprintln!(
        "submit: {submit_rate:.0} jobs/s (one CLI call each); all {} jobs done {:.1}s after the controller restart",
        all.len(),
        waited.elapsed().as_secs_f64()
    );

    assert_eq!(state_of(&c, &timeout), "TIMEOUT");
    assert_eq!(state_of(&c, &oom), "OUT_OF_MEMORY");
    for (i, id) in short.iter().enumerate().step_by(37) {
        assert_eq!(c.file(&format!("slurm-{id}.out")), format!("short {i}\n"));
    }
    for t in [0, 42, 99] {
        assert_eq!(c.file(&format!("arr-{array}_{t}.out")), format!("task {t}\n"));
    }
    // The array's own record, once every task ran, says how they did.
    assert_eq!(state_of(&c, &array), "COMPLETED");
    assert_eq!(c.file("chain.txt"), "a\nb\nc\n");
    for (i, id) in slow.iter().enumerate() {
        assert_eq!(c.file(&format!("slurm-{id}.out")), format!("slow {i}\n"));
    }

    // The agents' spools live in memory where the host has a tmpfs, and go
    // with the cluster.
    let spool = c.dir.join(".drover/agents/node1/spool");
    let in_memory = std::fs::read_link(&spool).ok();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts.lines().any(|m| m.starts_with("tmpfs /dev/shm ")) {
        let target = in_memory.clone().expect("the spool is a link into a tmpfs");
        assert!(target.starts_with("/run") || target.starts_with("/dev/shm"), "{}", target.display());
    }

    // Down leaves no process behind.
    let pids = c.pids();
    assert_eq!(pids.len(), 3);
    // Each agent keeps two children waiting in fresh memory cgroups where
    // the hierarchy is cgroup v1 (docs/cluster.md); they go with it.
    let cells = ready_cells(&pids);
    if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() && unsafe { libc::geteuid() } == 0 {
        assert_eq!(cells.len(), 4, "{cells:?}");
    }
    let out = c.drover(&["down"]);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| live(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!pids.iter().any(|p| live(*p)), "a daemon survived drover down");
    for (dir, pid) in &cells {
        assert!(!dir.exists(), "drover down left the ready cell {}", dir.display());
        assert!(!live(*pid), "the waiting child {pid} outlived its agent");
    }
    if let Some(target) = in_memory {
        assert!(!target.exists(), "drover down left the empty spool {}", target.display());
    }
}

#[test]
fn bad_input_gets_clear_errors() {
    let c = Cluster::start("bad", 1, 1);
    let run = |args: &[&str]| {
        let out = c.drover(args);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["submit", "-p", "nosuch", "--wrap", "true"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("invalid partition name specified: 'nosuch'"), "{err}");
    let (_, err) = run(&["submit", "-n", "64", "-N", "1", "--wrap", "true"]);
    assert!(err.contains("Requested node configuration is not available"), "{err}");
    assert!(err.contains("64 CPUs"), "names the numbers: {err}");
    std::fs::write(c.dir.join("bad.sh"), "#!/bin/sh\n#SBATCH --time=later\ntrue\n").unwrap();
    let (_, err) = run(&["submit", "bad.sh"]);
    assert!(err.contains("script line 2: invalid --time 'later'"), "{err}");
    let (code, err) = run(&["cancel", "999"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("999"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["queue", "--controller", "127.0.0.1:1"])
        .current_dir(Path::new("/"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach a leading controller at http://127.0.0.1:1"), "{err}");
    assert!(err.contains("DROVER_CONTROLLER"), "says how to point elsewhere: {err}");
}

#[test]
fn only_proven_identities_act_and_only_on_their_own_jobs() {
    let c = Cluster::start("auth", 1, 2);
    let key = drover_auth::load_key(&c.dir.join(".drover/cluster.key")).unwrap();
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let cred = |uid: u32| drover_auth::Credential::mint(&key, uid, uid, now()).unwrap();

    // No credential, a forged one, an expired one, a replayed one.
    let (status, body) = http(&format!("127.0.0.1:{}", c.port), "GET", "/api/v1/jobs", None, "");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("no credential"), "{body}");
    let forged = cred(1001).replacen("v1.1001.", "v1.0.", 1);
    let (status, body) = http(&format!("127.0.0.1:{}", c.port), "GET", "/api/v1/jobs", Some(&forged), "");
    assert_eq!((status, body.contains("signature is invalid")), (401, true), "{body}");
    let old = drover_auth::Credential::sign(
        &key,
        &drover_auth::Credential { uid: 1001, gid: 1001, expires_ms: now() - 1, nonce: 7 },
    );
    let (status, body) = http(&format!("127.0.0.1:{}", c.port), "GET", "/api/v1/jobs", Some(&old), "");
    assert_eq!((status, body.contains("expired")), (401, true), "{body}");
    let once = cred(1001);
    assert_eq!(http(&format!("127.0.0.1:{}", c.port), "GET", "/api/v1/jobs", Some(&once), "").0, 200);
    let (status, body) = http(&format!("127.0.0.1:{}", c.port), "GET", "/api/v1/jobs", Some(&once), "");
    assert_eq!((status, body.contains("replayed")), (401, true), "{body}");

    // A user cannot register nodes (only key holders: agents).
    let reg = r#"{"name":"evil","addr":"x","total":{"cpus":64,"mem_mb":1,"gpus":0},"features":[],"known_steps":[]}"#;
    assert_eq!(http(&format!("127.0.0.1:{}", c.port), "POST", "/api/v1/agent/register", Some(&cred(1001)), reg).0, 403);

    // A job runs as the credential's user; another user may not cancel it,
    // nor submit in someone else's name.
    let dir = c.dir.display().to_string();
    std::fs::set_permissions(&c.dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let spec = |uid: u32| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&c.drover(&["check", "--json", "--wrap", "id -u; sleep 30"]).stdout).unwrap();
        v["uid"] = uid.into();
        v["gid"] = uid.into();
        v["user"] = format!("u{uid}").into();
        v["work_dir"] = dir.clone().into();
        v["environment"] = serde_json::json!([["PATH", "/usr/bin:/bin"]]);
        serde_json::json!({ "jobs": [v] }).to_string()
    };
    let (status, body) = http(&format!("127.0.0.1:{}", c.port), "POST", "/api/v1/jobs", Some(&cred(1002)), &spec(1001));
    assert_eq!(status, 403, "{body}");
    // A malformed body is refused naming the value it got wrong.
    let bad = r#"{"jobs":[{"uid":"many"}]}"#;
    let (status, body) = http(&format!("127.0.0.1:{}", c.port), "POST", "/api/v1/jobs", Some(&cred(1001)), bad);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("jobs[0].uid"), "{body}");
    let (status, body) = http(&format!("127.0.0.1:{}", c.port), "POST", "/api/v1/jobs", Some(&cred(1001)), &spec(1001));
    assert_eq!(status, 200, "{body}");
    let id: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = id["job_ids"][0].as_u64().unwrap();
    let cancel = format!(r#"{{"filter":{{"jobs":[{{"id":{id},"task":null}}]}}}}"#);
    let (_, body) = http(&format!("127.0.0.1:{}", c.port), "POST", "/api/v1/jobs/cancel", Some(&cred(1002)), &cancel);
    assert!(body.contains("Access/permission denied"), "{body}");
    // The job really runs as uid 1001.
    let out = c.dir.join(format!("slurm-{id}.out"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&out).unwrap_or_default().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "1001");
    }
    let (_, body) = http(&format!("127.0.0.1:{}", c.port), "POST", "/api/v1/jobs/cancel", Some(&cred(1001)), &cancel);
    assert!(body.contains(&format!("\"{id}\"")), "the owner cancels it: {body}");
}

#[test]
fn the_openapi_document_describes_the_served_api() {
    let c = Cluster::start("openapi", 1, 3);
    let (status, body) = http(&format!("127.0.0.1:{}", c.port), "GET", "/api/v1/openapi.json", None, "");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 10);
    // Every documented route is served (anything but 404/405).
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "1").replace("{name}", "node1").replace("{node}", "node1");
            if concrete.ends_with("/orders/node1") {
                continue; // a stream that stays open
            }
            let (status, _) = http(&format!("127.0.0.1:{}", c.port), &method.to_uppercase(), &concrete, None, "{}");
            assert!(status != 404 && status != 405, "{method} {path} is documented but not served ({status})");
        }
    }
    // And it is a valid OpenAPI document, where the validator is installed
    // (.ci/run installs it).
    let file = c.dir.join("openapi.json");
    std::fs::write(&file, &body).unwrap();
    let check = Command::new("python3")
        .args(["-c", "import sys, json; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print('valid')"])
        .arg(&file)
        .output();
    match check {
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named") => {
            eprintln!("skipped validation: pip install openapi-spec-validator")
        }
        Ok(out) => assert!(out.status.success(), "invalid OpenAPI: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => eprintln!("skipped validation: {e}"),
    }
}

#[test]
fn foreground_up_stops_everything_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let dir = std::env::temp_dir().join(format!("drover-it-fg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = test_port(4);
    let mut up = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["up", "--nodes", "1", "--cpus-per-node", "2", "--mem-per-node", "1G", "--port", &port.to_string()])
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let ready = lines.by_ref().take(10).map_while(Result::ok).any(|l| l.contains("Press Ctrl-C"));
    assert!(ready, "drover up did not become ready");
    let drover = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(args)
            .current_dir(&dir)
            .env("DROVER_CONTROLLER", format!("127.0.0.1:{port}"))
            .output()
            .unwrap()
    };
    let out = drover(&["submit", "--parsable", "--wrap", "sleep 300"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Find the running step's pid through the agent's spool.
    let spool = dir.join(".drover/agents/node1/spool");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut step_pid = None;
    while step_pid.is_none() && Instant::now() < deadline {
        step_pid = std::fs::read_dir(&spool)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_to_string(e.ok()?.path().join("pid")).ok())
            .and_then(|p| p.trim().parse::<i32>().ok());
        std::thread::sleep(Duration::from_millis(50));
    }
    let step_pid = step_pid.expect("the job started");
    let daemons: Vec<i32> = std::fs::read_to_string(dir.join(".drover/pids"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(1)?.trim().parse().ok())
        .collect();
    unsafe { libc::kill(up.id() as i32, libc::SIGINT) };
    let status = up.wait().unwrap();
    assert!(status.success(), "drover up exits cleanly on Ctrl-C");
    let deadline = Instant::now() + Duration::from_secs(5);
    let any_live = || daemons.iter().chain([&step_pid]).any(|p| live(*p));
    while any_live() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!any_live(), "a daemon or the running job survived Ctrl-C");
    // The killed job's step stays in the in-memory spool (a later `up`
    // reports it), so the test removes it.
    if let Ok(target) = std::fs::read_link(&spool) {
        let _ = std::fs::remove_dir_all(target);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_request_submits_thousands_of_jobs() {
    let c = Cluster::start("batch", 1, 5);
    let key = drover_auth::load_key(&c.dir.join(".drover/cluster.key")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let cred = drover_auth::Credential::mint(&key, 0, 0, now).unwrap();
    let mut spec: serde_json::Value =
        serde_json::from_slice(&c.drover(&["check", "--json", "-H", "--wrap", "true"]).stdout).unwrap();
    spec["environment"] = serde_json::json!([["PATH", "/usr/bin:/bin"]]);
    let n = 3000;
    let body = serde_json::json!({ "jobs": vec![spec; n] }).to_string();
    assert!(body.len() > 2 * 1024 * 1024, "bigger than axum's default body limit");
    let (status, answer) = http(&format!("127.0.0.1:{}", c.port), "POST", "/api/v1/jobs", Some(&cred), &body);
    assert_eq!(status, 200, "{}", &answer[..answer.len().min(300)]);
    let ids: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(ids["job_ids"].as_array().unwrap().len(), n);
}

fn queue_lines(c: &Cluster, args: &[&str]) -> Vec<String> {
    let mut all = vec!["queue"];
    all.extend_from_slice(args);
    let out = c.drover(&all);
    assert!(out.status.success(), "queue {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
}

#[test]
fn the_queue_lists_like_squeue_and_filters() {
    let c = Cluster::start("queue", 1, 6);
    let running = c.submit(&["-J", "runner", "-o", "/dev/null", "--wrap", "sleep 30"]);
    let held = c.submit(&["-H", "-J", "waiter", "-o", "/dev/null", "--wrap", "true"]);
    let array = c.submit(&["-H", "--array=1-5", "-J", "many", "-o", "/dev/null", "--wrap", "true"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while state_of(&c, &running) != "RUNNING" {
        assert!(Instant::now() < deadline, "job did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = queue_lines(&c, &[]);
    assert_eq!(lines[0], "JOBID PARTITION NAME USER ST TIME NODES NODELIST(REASON)");
    assert!(lines[1].starts_with(&format!("{running} debug runner root R ")), "{lines:?}");
    assert!(lines[1].ends_with(" 1 node1"), "{lines:?}");
    assert_eq!(lines[2], format!("{held} debug waiter root PD 0:00 1 (JobHeldUser)"));
    assert_eq!(lines[3], format!("{array}_[1-5] debug many root PD 0:00 1 (JobHeldUser)"));
    assert_eq!(lines.len(), 4);

    assert_eq!(queue_lines(&c, &["-t", "R"]).len(), 2, "state filter");
    assert_eq!(queue_lines(&c, &["--name", "waiter,many"]).len(), 3, "name filter");
    assert_eq!(queue_lines(&c, &["-u", "nobody"]).len(), 1, "user filter: the header alone");
    let task = queue_lines(&c, &["-j", &format!("{array}_3")]);
    assert_eq!(task.len(), 2, "an array task is found in the pending array's line: {task:?}");
    let out = c.drover(&["queue", "-t", "SLEEPY"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("SLEEPY"));
    // The JSON listing carries the same jobs.
    let v: serde_json::Value = serde_json::from_slice(&c.drover(&["queue", "--json"]).stdout).unwrap();
    assert_eq!(v["jobs"].as_array().map(Vec::len), Some(3));
}

/// The agents' ready cells: cgroups under `drover/` whose waiting child is
/// named `drover-ready` and shares an agent's memory (its command line is
/// the agent's), with that child's pid.
fn ready_cells(agents: &[i32]) -> Vec<(std::path::PathBuf, i32)> {
    let cmdline = |pid: i32| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let agent_lines: Vec<Vec<u8>> = agents.iter().map(|p| cmdline(*p)).collect();
    let Ok(dirs) = std::fs::read_dir("/sys/fs/cgroup/memory/drover") else { return Vec::new() };
    let mut found = Vec::new();
    for dir in dirs.flatten().map(|e| e.path()) {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "drover-ready" && agent_lines.contains(&cmdline(pid)) {
                found.push((dir.clone(), pid));
            }
        }
    }
    found
}

/// How many scheduling passes the controller has run, from its metrics.
fn passes(c: &Cluster) -> u64 {
    let text = http(&format!("127.0.0.1:{}", c.port), "GET", "/metrics", None, "").1;
    text.lines()
        .find_map(|l| l.strip_prefix("drover_scheduler_pass_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pass count in the metrics:\n{text}"))
}

#[test]
fn the_scheduler_passes_only_when_something_changed_or_a_job_waits_on_the_clock() {
    let c = Cluster::start("passes", 1, 7);
    for _ in 0..3 {
        c.submit(&["-H", "-o", "/dev/null", "--wrap", "true"]);
    }
    std::thread::sleep(Duration::from_millis(500));
    // Held jobs wait on a release, not on the clock: an idle cluster does
    // not plan again and again.
    let before = passes(&c);
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(passes(&c), before, "passes ran while nothing changed");
    // A begin time is the clock's business: the job starts when it is due.
    let begin = std::time::SystemTime::now() + Duration::from_secs(2);
    let at = format!("@{}", begin.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 1);
    let job = c.submit(&["--begin", &at, "-o", "/dev/null", "--wrap", "true"]);
    let deadline = Instant::now() + Duration::from_secs(6);
    while state_of(&c, &job) != "COMPLETED" {
        assert!(Instant::now() < deadline, "the job with a begin time did not run within 4 s of it");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(std::time::SystemTime::now() >= begin, "the job ran before its begin time");
}
