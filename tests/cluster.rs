//! A whole local cluster through the `drover` binary, as a user drives it:
//! `drover up`, submissions of every kind, a controller killed with -9 while
//! jobs run, and `drover down`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    fn start(name: &str, nodes: u32, port_offset: u16) -> Cluster {
        let dir = std::env::temp_dir().join(format!("drover-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A port of our own per test, derived from the pid, away from the default.
        let port = 20000 + (std::process::id() % 10000) as u16 * 4 + port_offset;
        let c = Cluster { dir, port };
        let out = c.up(nodes);
        assert!(out.status.success(), "drover up failed: {}", String::from_utf8_lossy(&out.stderr));
        c
    }

    fn up(&self, nodes: u32) -> Output {
        self.drover(&[
            "up",
            "--detach",
            "--nodes",
            &nodes.to_string(),
            "--cpus-per-node",
            "4",
            "--mem-per-node",
            "2G",
            "--port",
            &self.port.to_string(),
        ])
    }

    fn drover(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(args)
            .current_dir(&self.dir)
            .env("DROVER_CONTROLLER", format!("127.0.0.1:{}", self.port))
            .output()
            .expect("runs drover")
    }

    fn submit(&self, args: &[&str]) -> String {
        let mut all = vec!["submit", "--parsable"];
        all.extend_from_slice(args);
        let out = self.drover(&all);
        assert!(out.status.success(), "submit {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join(".drover/pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(1)?.trim().parse().ok())
            .collect()
    }

    fn controller_pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.join(".drover/pids"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("controller ").and_then(|p| p.trim().parse().ok()))
            .expect("controller pid")
    }
}

fn live(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pids = self.pids();
        let _ = self.drover(&["down"]);
        for pid in pids {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn state_of(c: &Cluster, id: &str) -> String {
    let out = c.drover(&["show", "job", id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["state"].as_str().unwrap_or("?").to_string()
}

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
    assert!(out.status.success(), "up after kill: {}", String::from_utf8_lossy(&out.stderr));

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
    assert_eq!(c.file("chain.txt"), "a\nb\nc\n");
    for (i, id) in slow.iter().enumerate() {
        assert_eq!(c.file(&format!("slurm-{id}.out")), format!("slow {i}\n"));
    }

    // Down leaves no process behind.
    let pids = c.pids();
    assert_eq!(pids.len(), 3);
    let out = c.drover(&["down"]);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| live(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!pids.iter().any(|p| live(*p)), "a daemon survived drover down");
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
    assert!(err.contains("cannot reach the controller at http://127.0.0.1:1"), "{err}");
    assert!(err.contains("DROVER_CONTROLLER"), "says how to point elsewhere: {err}");
}
