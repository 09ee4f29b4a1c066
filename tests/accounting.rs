//! Job accounting end to end: finished jobs reach the SQL database with the
//! states, times and exit codes the controller gave them; a database that
//! is unreachable for a while and a controller killed mid-write lose
//! nothing and duplicate nothing; `sacct` and `drover history` read them
//! back. On SQLite always, on PostgreSQL when `DROVER_TEST_POSTGRES` names
//! one (`.ci/run` starts one on loopback).

mod common;
use common::Cluster;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

/// Job id → (state, exit code) from a `{"jobs": [JobView]}` answer.
fn outcomes(v: &serde_json::Value) -> Option<BTreeMap<String, (String, String)>> {
    let jobs = v["jobs"].as_array()?.iter().filter(|j| j["terminal"] == true);
    Some(
        jobs.map(|j| {
            let exit = j["exit_code"].as_str().unwrap_or("").to_string();
            (j["id"].as_str().unwrap().to_string(), (j["state"].as_str().unwrap().to_string(), exit))
        })
        .collect(),
    )
}

/// As the live controller reports them.
fn live_outcomes(c: &Cluster) -> BTreeMap<String, (String, String)> {
    let out = c.drover(&["queue", "--all", "--json"]);
    outcomes(&serde_json::from_slice(&out.stdout).expect("queue --json")).expect("a job list")
}

/// As accounting reports them; None while it cannot answer.
fn history_outcomes(c: &Cluster) -> Option<BTreeMap<String, (String, String)>> {
    let out = c.drover(&["history", "--json"]);
    if !out.status.success() {
        return None;
    }
    outcomes(&serde_json::from_slice(&out.stdout).ok()?)
}

fn all_finished(c: &Cluster, n: usize) -> bool {
    live_outcomes(c).len() >= n
}

/// Mixed outcomes: completed, failed with codes, cancelled, timed out, and
/// an array whose tasks exit with their id mod 3. Returns how many jobs.
fn mixed_jobs(c: &Cluster, array: u32) -> usize {
    c.submit(&["--wrap", "true"]);
    c.submit(&["--wrap", "exit 7"]);
    c.submit(&["-t", "0:02", "--wrap", "sleep 30"]);
    let held = c.submit(&["-H", "--wrap", "true"]);
    let out = c.drover(&["cancel", &held]);
    assert!(out.status.success(), "{out:?}");
    c.submit(&["-a", &format!("0-{}", array - 1), "--wrap", "exit $((SLURM_ARRAY_TASK_ID % 3))"]);
    4 + array as usize
}

fn check_outage_and_kill(name: &str, offset: u16, accounting: &str, unreachable_until: impl FnOnce()) {
    let c = Cluster::start_with(name, 2, offset, &["--accounting", accounting]);
    let n = mixed_jobs(&c, 200);
    c.wait_for("every job to finish", Duration::from_secs(120), || all_finished(&c, n));
    // While the database cannot be reached, history says so, and the jobs
    // wait in the replicated state.
    assert!(history_outcomes(&c).is_none_or(|h| h.is_empty()), "history before the database exists");
    let sacct = c.drover(&["queue", "--all"]);
    assert!(sacct.status.success());
    let backlog = || {
        let (_, text) = common::http(&format!("127.0.0.1:{}", c.port), "GET", "/metrics", None, "");
        text.lines().find_map(|l| l.strip_prefix("drover_accounting_backlog_jobs ")?.parse::<f64>().ok())
    };
    assert_eq!(backlog(), Some(n as f64), "the backlog is exported");
    unreachable_until();
    c.wait_for("the backlog written", Duration::from_secs(60), || history_outcomes(&c).is_some_and(|h| h.len() == n));
    let live = live_outcomes(&c);
    assert_eq!(history_outcomes(&c).unwrap(), live, "history agrees with the controller");
    c.wait_for("the backlog drained", Duration::from_secs(10), || backlog() == Some(0.0));
    let states: Vec<&str> = live.values().map(|(s, _)| s.as_str()).collect();
    for s in ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"] {
        assert!(states.contains(&s), "a {s} job among {states:?}");
    }

    // Killed while writing a new burst: restarted, it writes the rest once.
    let more = mixed_jobs(&c, 300);
    c.wait_for("the second burst to finish", Duration::from_secs(120), || all_finished(&c, n + more));
    let pid = c.controller_pid();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    c.wait_for("the controller gone", Duration::from_secs(10), || !common::live(pid));
    let out = c.up(2);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.wait_for("everything written, once", Duration::from_secs(60), || {
        history_outcomes(&c).is_some_and(|h| h.len() == n + more)
    });
    assert_eq!(history_outcomes(&c).unwrap(), live_outcomes(&c));

    // sacct reads accounting for what the live state no longer answers:
    // here both agree, and a window and a state filter work on history.
    let out = c.drover(&["history", "-s", "TIMEOUT"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| l.contains(" TIMEOUT ")).count(), 2, "{text}");
    let out = c.drover(&["history", "-S", "now+1day"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1, "only the header");

    // Usage agrees with the jobs' outcomes.
    let out = c.drover(&["usage", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{report}");
    let live = live_outcomes(&c);
    let count = |st: &str| live.values().filter(|(s, _)| s == st).count() as u64;
    assert_eq!(rows[0]["user"], "root");
    assert_eq!(rows[0]["jobs"], (n + more) as u64);
    assert_eq!(rows[0]["completed"], count("COMPLETED"));
    assert_eq!(rows[0]["failed"], count("FAILED") + count("TIMEOUT"));
    assert_eq!(rows[0]["cancelled"], count("CANCELLED"));
    // The two timed-out jobs alone ran their 2 s limit each.
    assert!(rows[0]["cpu_seconds"].as_u64().unwrap() >= 4, "{report}");
    let text = String::from_utf8_lossy(&c.drover(&["usage"]).stdout).to_string();
    assert!(text.lines().nth(1).unwrap().starts_with("USER"), "{text}");
}

#[test]
fn sqlite_history_survives_an_outage_and_a_killed_controller() {
    let dir = std::env::temp_dir().join(format!("drover-it-acct-db-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The directory does not exist yet: the database cannot be opened.
    let url = format!("sqlite://{}/acct.db", dir.display());
    check_outage_and_kill("acct-sqlite", 0, &url, || std::fs::create_dir_all(&dir).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn postgres_history_survives_an_outage_and_a_killed_controller() {
    let Ok(server) = std::env::var("DROVER_TEST_POSTGRES") else {
        eprintln!("DROVER_TEST_POSTGRES not set: PostgreSQL not tested here (.ci/run sets it)");
        return;
    };
    // A database of its own, created only later: until then connecting fails.
    let db = format!("drover_it_{}", std::process::id());
    let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b).to_string();
    let url = format!("{base}/{db}");
    let psql = |sql: &str| {
        let out = Command::new("psql").args([&server, "-q", "-c", sql]).output().expect("psql");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    };
    psql(&format!("DROP DATABASE IF EXISTS {db}"));
    check_outage_and_kill("acct-postgres", 1, &url, || psql(&format!("CREATE DATABASE {db}")));
    psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}

/// Finished jobs leave the controller's state `--min-job-age` after they
/// end, once accounting has them; sacct and drover history still show them.
/// A requeued job's earlier run is a row of its own (`sacct -D`).
#[test]
fn finished_jobs_leave_the_live_state_but_not_history() {
    let c = Cluster::start_with("acct-prune", 1, 2, &["--min-job-age", "1"]);
    let twice = c.submit(&["--wrap", "[ \"$SLURM_RESTART_COUNT\" = 1 ] || sleep 60"]);
    c.wait_for("the first run", Duration::from_secs(20), || common::state_of(&c, &twice) == "RUNNING");
    let out = c.drover(&["requeue", &twice]);
    assert!(out.status.success(), "{out:?}");
    // Written while the job runs again: sacct -D shows it beside the live run.
    c.wait_for("the earlier run in history", Duration::from_secs(20), || {
        sacct(&c, &["-j", &twice, "-D", "-X", "-n", "-P", "-o", "JobID,State"])
            .starts_with(&format!("{twice}|REQUEUED\n"))
    });
    let ok = c.submit(&["--wrap", "true"]);
    let bad = c.submit(&["--wrap", "exit 4"]);
    c.wait_for("all pruned from the live state", Duration::from_secs(30), || {
        [&ok, &bad, &twice].iter().all(|id| !c.drover(&["show", "job", id]).status.success())
    });
    let runs = sacct(&c, &["-j", &twice, "-D", "-X", "-n", "-P", "-o", "JobID,State,ExitCode"]);
    assert_eq!(runs, format!("{twice}|REQUEUED|0:15\n{twice}|COMPLETED|0:0\n"));
    let last = sacct(&c, &["-j", &twice, "-X", "-n", "-P", "-o", "JobID,State"]);
    assert_eq!(last, format!("{twice}|COMPLETED\n"), "without -D, the last run only");
    let out = c.drover(&["show", "job", &ok]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid job id"), "{out:?}");
    let sacct = sacct(&c, &["-j", &format!("{ok},{bad}"), "-X", "-n", "-P", "-o", "JobID,State,ExitCode"]);
    assert_eq!(sacct, format!("{ok}|COMPLETED|0:0\n{bad}|FAILED|4:0\n"));
    let history = String::from_utf8_lossy(&c.drover(&["history", "-j", &bad]).stdout).to_string();
    assert!(history.contains(" FAILED "), "{history}");
    let queue = String::from_utf8_lossy(&c.drover(&["queue", "--all"]).stdout).to_string();
    assert_eq!(queue.lines().count(), 1, "only the header: {queue}");
}

/// Runs the binary under the name `sacct` (a link in the cluster's
/// directory, as `drover install-links` makes); what it printed.
fn sacct(c: &Cluster, args: &[&str]) -> String {
    let link = c.dir.join("sacct");
    let _ = std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_drover"), &link);
    let out = Command::new(&link).args(args).current_dir(&c.dir).env("DROVER_CONTROLLER", c.addrs()).output().unwrap();
    assert!(out.status.success(), "sacct {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Without a database, finished jobs still leave the live state after
/// `--min-job-age` (as Slurm without slurmdbd forgets them); history says
/// why it has nothing.
#[test]
fn without_accounting_finished_jobs_still_go() {
    let c = Cluster::start_with("acct-none", 1, 3, &["--accounting", "none", "--min-job-age", "1"]);
    let id = c.submit(&["--wrap", "true"]);
    c.wait_for("the job pruned", Duration::from_secs(30), || !c.drover(&["show", "job", &id]).status.success());
    let out = c.drover(&["history", "-j", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("keeps no accounting (--accounting none)"), "{out:?}");
}
