//! Highly available controllers: three controllers started by `drover up
//! --controllers 3`, faults injected while a client keeps writing, and a
//! history check of everything the client was told.

mod common;

use common::{http, live, test_port, Cluster};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The HA tests each run three controllers; on a two-core machine they
/// run one at a time so that elections are about faults, not load.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn json(c: &Cluster, args: &[&str]) -> serde_json::Value {
    let out = c.drover(args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{args:?} printed no JSON ({e}): {}{}", String::from_utf8_lossy(&out.stderr), c.logs())
    })
}

/// Each controller's own view (`drover controllers --json`).
fn views(c: &Cluster) -> Vec<serde_json::Value> {
    json(c, &["controllers", "--json"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.get("status").cloned())
        .collect()
}

/// The leader every live controller agrees on, with its term.
fn agreed_leader(c: &Cluster, live_controllers: usize) -> Option<(u64, u64)> {
    let v = views(c);
    if v.len() < live_controllers {
        return None;
    }
    let leaders: Vec<(u64, u64)> =
        v.iter().filter_map(|s| Some((s["leader"].as_u64()?, s["term"].as_u64()?))).collect();
    let claiming = v.iter().filter(|s| s["role"] == "Leader").count();
    (leaders.len() == v.len() && leaders.windows(2).all(|w| w[0] == w[1]) && claiming == 1).then(|| leaders[0])
}

/// What the client did and was told.
#[derive(Debug, Clone)]
enum Op {
    Submitted { id: u64, at: Instant },
    SubmitFailed { error: String },
    Cancelled { id: u64, at: Instant },
    CancelFailed { id: u64, error: String },
}

/// Submits jobs (and now and then a held job it then cancels) until told
/// to stop, one `drover` process per operation, recording every answer.
fn client_loop(c: &Cluster, stop: &AtomicBool, history: &Mutex<Vec<Op>>) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let hold = n % 5 == 0;
        let mut args = vec!["submit", "--parsable", "--wrap", "true"];
        if hold {
            args.push("--hold");
        }
        let out = c.drover(&args);
        let at = Instant::now();
        let id = String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().ok();
        match (out.status.success(), id) {
            (true, Some(id)) => {
                history.lock().unwrap().push(Op::Submitted { id, at });
                if hold {
                    let out = c.drover(&["cancel", &id.to_string()]);
                    let op = if out.status.success() {
                        Op::Cancelled { id, at: Instant::now() }
                    } else {
                        Op::CancelFailed { id, error: String::from_utf8_lossy(&out.stderr).into() }
                    };
                    history.lock().unwrap().push(op);
                }
            }
            _ => history
                .lock()
                .unwrap()
                .push(Op::SubmitFailed { error: String::from_utf8_lossy(&out.stderr).trim().to_string() }),
        }
    }
}

/// The longest time between two successful writes.
fn longest_gap(history: &[Op]) -> Duration {
    let mut times: Vec<Instant> = history
        .iter()
        .filter_map(|op| match op {
            Op::Submitted { at, .. } | Op::Cancelled { at, .. } => Some(*at),
            _ => None,
        })
        .collect();
    times.sort();
    times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

/// Every acknowledged write is in the final state exactly once, no id was
/// handed out twice, acknowledged cancels took, and every other job ran to
/// completion.
fn check_history(c: &Cluster, history: &[Op]) {
    let mut acked: HashMap<u64, usize> = HashMap::new();
    for op in history {
        if let Op::Submitted { id, .. } = op {
            *acked.entry(*id).or_default() += 1;
        }
    }
    let twice: Vec<_> = acked.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "job ids handed out twice: {twice:?}");
    let cancelled: Vec<u64> =
        history.iter().filter_map(|op| if let Op::Cancelled { id, .. } = op { Some(*id) } else { None }).collect();
    let mut last = None;
    c.wait_for("every acknowledged job to end", Duration::from_secs(90), || {
        let list = json(c, &["queue", "-a", "--json"]);
        let jobs = list["jobs"].as_array().cloned().unwrap_or_default();
        let done = jobs.iter().filter(|j| acked.contains_key(&j["job_id"].as_u64().unwrap_or(0))).all(|j| {
            let s = j["state"].as_str().unwrap_or("");
            s == "COMPLETED" || s == "CANCELLED" || s == "PENDING" && j["reason"] == "JobHeldUser"
        });
        last = Some(jobs);
        done
    });
    let jobs = last.unwrap();
    let mut seen: BTreeMap<u64, Vec<&serde_json::Value>> = BTreeMap::new();
    for j in &jobs {
        seen.entry(j["job_id"].as_u64().unwrap()).or_default().push(j);
    }
    for (id, copies) in &seen {
        assert_eq!(copies.len(), 1, "job {id} listed {} times", copies.len());
    }
    for id in acked.keys() {
        let j = seen.get(id).unwrap_or_else(|| panic!("acknowledged job {id} is missing\n{}", c.logs()))[0];
        let state = j["state"].as_str().unwrap();
        if cancelled.contains(id) {
            assert_eq!(state, "CANCELLED", "job {id}: the cancel was acknowledged");
        } else if state != "COMPLETED" {
            // A held job whose cancel was not acknowledged may still be held.
            assert!(j["reason"] == "JobHeldUser", "job {id} ended {state}: {j}");
        }
    }
}

#[test]
fn losing_or_hanging_the_leader_loses_no_acknowledged_write_and_no_running_job() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start_with("ha-faults", 2, 0, &["--controllers", "3"]);
    assert!(agreed_leader(&c, 3).is_some(), "no agreed leader at start: {:?}", views(&c));
    // Long jobs that must run through both faults untouched.
    let long: Vec<String> = (0..2).map(|_| c.submit(&["--wrap", "sleep 14; echo done"])).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let (c2, stop, history) = (
            Cluster { dir: c.dir.clone(), port: c.port, up_flags: vec![], controllers: 3, env: vec![] },
            stop.clone(),
            history.clone(),
        );
        std::thread::spawn(move || {
            client_loop(&c2, &stop, &history);
            std::mem::forget(c2); // the test's own Cluster cleans up
        })
    };
    std::thread::sleep(Duration::from_secs(2));

    // 1. kill -9 the leader.
    let (old, term) = agreed_leader(&c, 3).expect("a leader before the kill");
    let killed = c.drover(&["chaos", "kill-controller"]);
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    let t = Instant::now();
    c.wait_for("a new leader after the kill", Duration::from_secs(10), || {
        agreed_leader(&c, 2).is_some_and(|(l, t2)| l != old && t2 > term)
    });
    eprintln!("new leader agreed {:?} after the kill", t.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    // The killed controller comes back and catches up.
    let up = c.up(2);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    c.wait_for("three controllers agreeing again", Duration::from_secs(15), || agreed_leader(&c, 3).is_some());

    // 2. SIGSTOP the leader for 4 s: it must be replaced, and on waking
    // must not act as leader.
    let (hung, term) = agreed_leader(&c, 3).expect("a leader before the hang");
    let hang = c.drover(&["chaos", "hang-controller", "--for", "4"]);
    assert!(hang.status.success(), "{}", String::from_utf8_lossy(&hang.stderr));
    c.wait_for("one agreed leader after the hang", Duration::from_secs(15), || {
        agreed_leader(&c, 3).is_some_and(|(l, t2)| l != hung && t2 > term)
    });
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();

    let history = history.lock().unwrap().clone();
    let writes = history.iter().filter(|o| matches!(o, Op::Submitted { .. } | Op::Cancelled { .. })).count();
    let failed: Vec<_> = history
        .iter()
        .filter_map(|o| match o {
            Op::SubmitFailed { error, .. } => Some(error.clone()),
            Op::CancelFailed { id, error } => Some(format!("cancel {id}: {error}")),
            _ => None,
        })
        .collect();
    let gap = longest_gap(&history);
    eprintln!("{writes} acknowledged writes, {} failed ({failed:?}), longest gap in service {gap:?}", failed.len());
    assert!(writes > 20, "the client got too few writes through: {history:?}");
    assert!(gap < Duration::from_secs(8), "service was out for {gap:?}\n{}", c.logs());
    check_history(&c, &history);

    for id in &long {
        let j = json(&c, &["show", "job", id, "--json"]);
        c.wait_for("the long jobs to finish", Duration::from_secs(30), || {
            json(&c, &["show", "job", id, "--json"])["state"] == "COMPLETED"
        });
        assert_eq!(j["restart_count"], 0, "job {id} was interrupted: {j}");
        let out = c.file(&format!("slurm-{id}.out"));
        assert_eq!(out.trim(), "done", "job {id} output: {out:?}");
    }
    // The hung controller, resumed, follows.
    let (leader, term) = agreed_leader(&c, 3).expect("one leader at the end");
    assert_ne!(leader, hung);
    // Prometheus sees the same on each controller.
    for id in 1..=3u16 {
        let text = http(&format!("127.0.0.1:{}", c.port + id - 1), "GET", "/metrics", None, "").1;
        assert!(text.contains(&format!("drover_raft_term {term}\n")), "controller {id}: {text}");
        let leads = u64::from(id) == leader;
        assert!(text.contains(&format!("drover_raft_is_leader {}\n", u8::from(leads))), "controller {id}: {text}");
        assert!(text.contains(&format!("drover_raft_leader_id {leader}\n")), "controller {id}: {text}");
    }
    let log = std::fs::read_to_string(c.dir.join(format!(".drover/logs/controller{hung}.log"))).unwrap_or_default();
    assert!(log.contains("no longer leader"), "the resumed leader did not step down:\n{log}");
    // The failovers are in the event history, the current leader's last.
    let out = c.drover(&["events", "--kind", "LeaderElected", "--json"]);
    let elected: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["text"].as_str().map(str::to_string))
        .collect();
    assert!(elected.len() >= 2, "two failovers at least: {elected:?}");
    assert_eq!(elected.last(), Some(&format!("controller {leader} leads in term {term}")), "{elected:?}");
}

fn controller_status(c: &Cluster, id: u64) -> serde_json::Value {
    views(c).into_iter().find(|v| v["this"] == id).unwrap_or_default()
}

#[test]
fn snapshots_bound_the_log_and_an_empty_controller_catches_up_from_one() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A debug build ships snapshots slowly; a longer election timeout keeps
    // the catching-up controller from standing for election meanwhile (what
    // this test is about is the snapshot, not failover speed).
    let c = Cluster::start_with(
        "ha-snap",
        1,
        3,
        &["--controllers", "3", "--snapshot-every", "100", "--election-timeout", "500"],
    );
    // 100 000 jobs through the log (100 arrays of 1 000, waiting on a begin
    // time an hour away), then all cancelled; and 600 jobs actually run.
    for i in 0..100 {
        let out = c.drover(&["submit", "--parsable", "--array", "0-999", "--begin", "now+1hour", "--wrap", "true"]);
        assert!(out.status.success(), "array {i}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = c.drover(&["cancel", "--state", "PENDING"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ran = c.submit(&["--array", "0-599", "--wrap", "true"]);
    let out = c.drover(&["wait", &ran]);
    assert!(out.status.success(), "the 600 tasks: {}{}", String::from_utf8_lossy(&out.stderr), c.logs());
    for id in 1..=3u64 {
        c.wait_for("every controller to apply everything", Duration::from_secs(20), || {
            let s = controller_status(&c, id);
            s["applied_index"] == s["last_log_index"] && s["snapshot_index"].as_u64().is_some()
        });
        let s = controller_status(&c, id);
        let kept = s["last_log_index"].as_u64().unwrap() - s["purged_index"].as_u64().unwrap_or(0);
        eprintln!("controller {id}: {s}");
        // A snapshot every 100 entries, purged in batches of 256.
        assert!(kept < 600, "controller {id} keeps {kept} log entries: {s}");
    }

    // A follower loses its disk and comes back empty: the leader, which
    // had it fully replicated, must go back and send it a snapshot.
    let leader = views(&c).into_iter().find(|v| v["role"] == "Leader").expect("a leader")["this"].as_u64().unwrap();
    let victim = (1..=3u64).find(|i| *i != leader).unwrap();
    let pid = c.pid_of(&format!("controller{victim}"));
    unsafe { libc::kill(pid, libc::SIGKILL) };
    c.wait_for("the follower to die", Duration::from_secs(5), || !live(pid));
    std::fs::remove_dir_all(c.dir.join(format!(".drover/controller{victim}"))).unwrap();
    let up = c.up(1);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    c.wait_for("the empty controller to catch up", Duration::from_secs(60), || {
        let leader = views(&c).into_iter().find(|v| v["role"] == "Leader").unwrap_or_default();
        let s = controller_status(&c, victim);
        s["applied_index"].as_u64().is_some() && s["applied_index"] == leader["applied_index"]
    });
    let s = controller_status(&c, victim);
    assert!(s["snapshot_index"].as_u64().is_some(), "controller {victim} caught up without a snapshot: {s}");
    // Its own (stale) view holds every job.
    let third =
        Cluster { dir: c.dir.clone(), port: c.port + victim as u16 - 1, up_flags: vec![], controllers: 1, env: vec![] };
    let mine = json(&third, &["queue", "-a", "--stale", "--json"]);
    std::mem::forget(third);
    let theirs = json(&c, &["queue", "-a", "--json"]);
    assert_eq!(mine["jobs"].as_array().map(Vec::len), theirs["jobs"].as_array().map(Vec::len));
}

#[test]
fn a_controller_joins_a_running_group_and_leaves_it() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start_with("ha-join", 1, 6, &[]);
    let id = c.submit(&["--wrap", "true"]);
    let second = format!("127.0.0.1:{}", test_port(7));
    let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["controller", "--id", "2", "--listen", &second, "--join", &c.addrs()])
        .args(["--state-dir", c.dir.join(".drover/controller-joined").to_str().unwrap()])
        .args(["--key-file", c.dir.join(".drover/cluster.key").to_str().unwrap()])
        .stderr(std::fs::File::create(c.dir.join(".drover/logs/joined.log")).unwrap())
        .spawn()
        .unwrap();
    let with_second = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(args)
            .current_dir(&c.dir)
            .env("DROVER_CONTROLLER", format!("{},{second}", c.addrs()))
            .output()
            .unwrap()
    };
    c.wait_for("controller 2 to join as a voter", Duration::from_secs(20), || {
        let out = with_second(&["controllers", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.as_array().is_some_and(|all| {
            all.iter().filter_map(|x| x.get("status")).any(|s| {
                s["this"] == 2 && s["applied_index"].as_u64().is_some() && {
                    let members = s["members"].as_array().cloned().unwrap_or_default();
                    members.iter().filter(|m| m["voter"] == true).count() == 2
                }
            })
        })
    });
    // It holds the state: its own view has the job.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["queue", "-a", "--stale", "--json"])
        .current_dir(&c.dir)
        .env("DROVER_CONTROLLER", &second)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(v["jobs"].as_array().is_some_and(|j| j.iter().any(|j| j["id"] == id.as_str())), "{v}");

    let out = with_second(&["controller", "leave", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("voters: 1="), "{}", String::from_utf8_lossy(&out.stdout));
    let out = with_second(&["controller", "leave", "2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a voting member"));
    let _ = daemon.kill();
    let _ = daemon.wait();
}
