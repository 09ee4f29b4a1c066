//! The healer end to end on `drover up` clusters: the local provider brings
//! a killed agent back with no command typed, power saving stops idle nodes
//! and starts them again for waiting jobs, and the command provider runs a
//! site's programs the way Slurm's power saving does.

mod common;

use common::*;
use std::time::{Duration, Instant};

const FLAGS: &[&str] = &["--node-timeout", "3", "--heartbeat", "0.5", "--kill-grace", "2", "--heal-poll", "0.5"];

fn json(c: &Cluster, args: &[&str]) -> serde_json::Value {
    let out = c.drover(args);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)))
}

fn node(c: &Cluster, name: &str) -> serde_json::Value {
    let list = json(c, &["nodes", "--json"]);
    list["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).cloned().unwrap_or_default()
}

fn events(c: &Cluster) -> String {
    String::from_utf8_lossy(&c.drover(&["events"]).stdout).into_owned()
}

/// `sinfo -N -h -o '%N %t'`, through the link `install-links` makes.
fn sinfo(c: &Cluster) -> String {
    let bin = c.dir.join("bin");
    if !bin.join("sinfo").exists() {
        let out = c.drover(&["install-links", bin.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = std::process::Command::new(bin.join("sinfo"))
        .args(["-N", "-h", "-o", "%N %t"])
        .current_dir(&c.dir)
        .env("DROVER_CONTROLLER", c.addrs())
        .output()
        .expect("runs sinfo");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn drover_up_brings_a_killed_agent_back_by_itself_and_its_job_runs_on() {
    let c = Cluster::start_with("healkill", 2, 0, FLAGS);
    let id = c.submit(&["-o", "k.out", "-w", "node1", "--wrap", "sleep 4; echo ran $SLURM_RESTART_COUNT"]);
    c.wait_for("job running", Duration::from_secs(10), || state_of(&c, &id) == "RUNNING");
    let old = c.pid_of("node1");

    let killed = Instant::now();
    let out = c.drover(&["chaos", "kill-agent", "node1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.wait_for("node1 repaired", Duration::from_secs(10), || {
        events(&c).contains("repair replace of node1 done") && c.pid_of("node1") != old
    });
    let back = killed.elapsed();
    // Aim: back within node timeout + 2 s; the healer sees the dead process
    // at its next poll, before the node is even judged DOWN.
    assert!(back < Duration::from_secs(5), "back in {back:?}\n{}", c.logs());
    assert!(live(c.pid_of("node1")), "a new agent runs");
    eprintln!("local provider: agent killed -> node back in service in {back:?}");

    c.wait_for("job done", Duration::from_secs(15), || state_of(&c, &id) == "COMPLETED");
    assert_eq!(c.file("k.out"), "ran 0\n", "the job ran on, once, never requeued");
    let ev = events(&c);
    for what in ["RepairStarted", "repair replace of node1 through local", "RepairActed", "RepairDone"] {
        assert!(ev.contains(what), "events tell '{what}':\n{ev}");
    }
    assert!(!ev.contains("node node1 MIXED -> DOWN") && !ev.contains("ALLOCATED -> DOWN"), "never DOWN:\n{ev}");
    let metrics = http(&c.addrs(), "GET", "/metrics", None, "").1;
    let done = metrics.lines().any(|l| {
        l.starts_with("drover_healer_actions_total{")
            && l.contains("provider=\"local\"")
            && l.contains("result=\"done\"")
            && l.ends_with(" 1")
    });
    assert!(
        done,
        "a done repair is counted:\n{}",
        metrics.lines().filter(|l| l.contains("healer")).collect::<Vec<_>>().join("\n")
    );

    // Chaos through the provider (a local machine is its agent), and the
    // recovery view shows the repair.
    let out = c.drover(&["chaos", "stop-instance", "node2"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("stopped the machine of node2 through local: stopped the agent"), "{said}");
    c.wait_for("node2 repaired", Duration::from_secs(10), || events(&c).contains("repair replace of node2 done"));
    let view = String::from_utf8_lossy(&c.drover(&["watch", "recovery", "--count", "1"]).stdout).into_owned();
    assert!(view.contains("POWER") && view.contains("repair replace of node2 done"), "{view}");
}

#[test]
fn a_drained_node_is_not_healed_and_none_leaves_lost_nodes_down() {
    let c = Cluster::start_with("healdrain", 2, 1, FLAGS);
    let out = c.drover(&["drain", "node2", "--reason", "maintenance"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let old = c.pid_of("node2");
    c.drover(&["chaos", "kill-agent", "node2"]);
    c.wait_for("node2 DOWN", Duration::from_secs(8), || node(&c, "node2")["state"] == "DOWN");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.pid_of("node2"), old, "no new agent for a node under maintenance");
    assert!(!events(&c).contains("repair"), "{}", events(&c));

    // The same slot of ports: the tests of this binary may run at once.
    drop(c);
    let c = Cluster::start_with("healnone", 1, 1, &["--node-timeout", "3", "--heartbeat", "0.5", "--heal", "none"]);
    c.drover(&["chaos", "kill-agent", "node1"]);
    c.wait_for("node1 DOWN", Duration::from_secs(8), || node(&c, "node1")["state"] == "DOWN");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(node(&c, "node1")["state"], "DOWN", "--heal none: lost nodes stay down");
}

#[test]
fn idle_nodes_power_down_and_come_back_for_the_jobs_that_need_them() {
    let mut flags = FLAGS.to_vec();
    flags.extend(["--suspend-time", "2"]);
    let c = Cluster::start_with("healpower", 2, 3, &flags);
    c.wait_for("both powered down", Duration::from_secs(15), || {
        let s = sinfo(&c);
        s.contains("node1 idle~") && s.contains("node2 idle~")
    });
    assert!(!live(c.pid_of("node1")), "a powered-down local node's agent is stopped");
    let v = node(&c, "node1");
    assert_eq!(v["power"], "POWERED_DOWN", "{v}");

    // A job for both nodes powers both up, and runs.
    let submitted = Instant::now();
    let id = c.submit(&["-N", "2", "-n", "8", "-o", "p.out", "--wrap", "echo $SLURM_JOB_NODELIST"]);
    let ran = c.wait_for("job done", Duration::from_secs(20), || state_of(&c, &id) == "COMPLETED");
    eprintln!("power saving: powered-down nodes resumed and a 2-node job done in {:?}", submitted.elapsed().min(ran));
    assert_eq!(c.file("p.out"), "node[1-2]\n");
    let ev = events(&c);
    for what in ["repair suspend of node1", "repair resume of node1", "repair resume of node2 done"] {
        assert!(ev.contains(what), "events tell '{what}':\n{ev}");
    }
    // Idle again, powered down again.
    c.wait_for("powered down again", Duration::from_secs(15), || sinfo(&c).contains("node1 idle~"));
}

/// A resume program that starts the agent `drover up` recorded for each
/// node (as a site's would boot a machine), a suspend program that stops
/// it; both leave a trace of their arguments and the resume file.
fn programs(dir: &std::path::Path, cluster: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let resume = dir.join("resume.py");
    let suspend = dir.join("suspend.py");
    let exe = env!("CARGO_BIN_EXE_drover");
    let state = cluster.join(".drover");
    let expand = r#"
import json, os, re, signal, subprocess, sys, time
def expand(hosts):
    m = re.fullmatch(r"(.*)\[(.*)\]", hosts)
    if not m:
        return hosts.split(",")
    out = []
    for part in m.group(2).split(","):
        a, _, b = part.partition("-")
        out += [m.group(1) + str(i) for i in range(int(a), int(b or a) + 1)]
    return out
"#;
    std::fs::write(
        &resume,
        format!(
            r#"#!/usr/bin/env python3
{expand}
state = "{state}"
with open(os.path.join(state, "..", "resume.trace"), "a") as t:
    t.write(sys.argv[1] + " " + os.environ["DROVER_REPAIR_KIND"] + "\n")
    t.write(open(os.environ["SLURM_RESUME_FILE"]).read() + "\n")
if os.path.exists(os.path.join(state, "..", "fail-resume")):
    print("no capacity for", sys.argv[1]); sys.exit(4)
for node in expand(sys.argv[1]):
    args = json.load(open(os.path.join(state, "nodes", node + ".args")))
    log = open(os.path.join(state, "logs", node + ".log"), "a")
    p = subprocess.Popen(["{exe}"] + args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    open(os.path.join(state, "pids"), "a").write("%s %d\n" % (node, p.pid))
"#,
            state = state.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &suspend,
        format!(
            r#"#!/usr/bin/env python3
{expand}
state = "{state}"
with open(os.path.join(state, "..", "suspend.trace"), "a") as t:
    t.write(sys.argv[1] + "\n")
pids = [l.split() for l in open(os.path.join(state, "pids"))]
for node in expand(sys.argv[1]):
    for role, pid in pids:
        if role == node:
            try: os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError: pass
"#,
            state = state.display()
        ),
    )
    .unwrap();
    for p in [&resume, &suspend] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (resume, suspend)
}

#[test]
fn the_command_provider_runs_a_site_s_programs_with_a_hostlist_and_the_waiting_jobs() {
    // The programs live beside the cluster's directory, which `up` makes
    // afresh.
    let dir = std::env::temp_dir().join(format!("drover-it-healcmd-programs-{}", std::process::id()));
    let cluster = std::env::temp_dir().join(format!("drover-it-healcmd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (resume, suspend) = programs(&dir, &cluster);
    let (resume, suspend) = (resume.display().to_string(), suspend.display().to_string());
    let mut flags = FLAGS.to_vec();
    flags.extend(["--heal", "command", "--resume-program", &resume, "--suspend-program", &suspend]);
    flags.extend(["--suspend-time", "2", "--program-timeout", "20", "--repair-backoff", "1,1,1,1,1,1"]);
    let c = Cluster::start_with("healcmd", 2, 4, &flags);
    assert_eq!(c.dir, cluster);
    c.wait_for("both powered down", Duration::from_secs(15), || {
        let s = sinfo(&c);
        s.contains("node1 idle~") && s.contains("node2 idle~")
    });
    let suspended = c.file("suspend.trace");
    assert!(suspended.lines().all(|l| l.starts_with("node")), "{suspended}");

    let id = c.submit(&["-w", "node2", "-o", "c.out", "--wrap", "hostname >/dev/null; echo ok $SLURMD_NODENAME"]);
    c.wait_for("job done", Duration::from_secs(20), || state_of(&c, &id) == "COMPLETED");
    assert_eq!(c.file("c.out"), "ok node2\n");
    let trace = c.file("resume.trace");
    assert!(trace.starts_with("node2 resume\n"), "only the node the job needs, as a hostlist:\n{trace}");
    let file: serde_json::Value = serde_json::from_str(trace.lines().skip(1).collect::<Vec<_>>().join("\n").trim())
        .unwrap_or_else(|e| panic!("SLURM_RESUME_FILE is JSON: {e}\n{trace}"));
    assert_eq!(file["all_nodes_resume"], "node2", "{file}");
    assert_eq!(file["jobs"][0]["job_id"].to_string(), id, "{file}");
    assert_eq!(file["jobs"][0]["nodes_resume"], "node2", "{file}");
    assert_eq!(sinfo(&c).lines().find(|l| l.starts_with("node1")).unwrap_or_default(), "node1 idle~");

    // A resume program that fails: the repair fails, is retried after the
    // back-off, and the job waits; once it works the job runs.
    std::fs::write(c.dir.join("fail-resume"), "").unwrap();
    let id = c.submit(&["-w", "node1", "-o", "d.out", "--wrap", "echo ok"]);
    c.wait_for("resume failed", Duration::from_secs(15), || events(&c).contains("repair resume of node1 failed"));
    let ev = events(&c);
    assert!(ev.contains("no capacity for node1"), "the program's words reach the event:\n{ev}");
    let v = node(&c, "node1");
    assert_eq!(v["state"], "DOWN", "a failed resume is DOWN: {v}");
    std::fs::remove_file(c.dir.join("fail-resume")).unwrap();
    c.wait_for("job done after the retry", Duration::from_secs(20), || state_of(&c, &id) == "COMPLETED");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The healer is a leader duty: killing the leader together with an agent
/// loses no repair and doubles none — one agent for the node, one repair —
/// and the new leader starts the dead controller again.
#[test]
fn a_repair_survives_the_leader_s_death_without_double_actions() {
    let mut flags = FLAGS.to_vec();
    flags.extend(["--controllers", "3"]);
    let c = Cluster::start_with("healha", 2, 5, &flags);
    let out = c.drover(&["chaos", "kill-agent", "node1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = c.drover(&["chaos", "kill-controller"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.wait_for("node1 repaired", Duration::from_secs(20), || events(&c).contains("repair replace of node1 done"));
    std::thread::sleep(Duration::from_secs(2));
    // An agent runs helper processes under the same command line: count
    // the agents whose parent is not one of them.
    let matching: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| {
            let pid: i32 = p.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(p.path().join("stat")).ok()?;
            let rest = stat.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let (state, ppid) = (rest.first()?.to_string(), rest.get(1)?.parse::<i32>().ok()?);
            let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
            let ours = state != "Z"
                && args.get(1) == Some(&&b"agent"[..])
                && args.windows(2).any(|w| w[0] == b"--name" && w[1] == b"node1")
                && args
                    .windows(2)
                    .any(|w| w[0] == b"--state-dir" && w[1].starts_with(c.dir.to_str().unwrap().as_bytes()));
            ours.then_some((pid, ppid))
        })
        .collect();
    let agents: Vec<i32> =
        matching.iter().filter(|(_, ppid)| !matching.iter().any(|(p, _)| p == ppid)).map(|(p, _)| *p).collect();
    assert_eq!(agents.len(), 1, "one agent for node1: {agents:?}\n{}", events(&c));
    let ev = events(&c);
    assert_eq!(ev.matches("repair replace of node1 through local").count(), 1, "one repair:\n{ev}");
    assert_eq!(node(&c, "node1")["state"], "IDLE", "{ev}");

    // The new leader's healer also started the killed controller again.
    c.wait_for("three controllers answer", Duration::from_secs(15), || {
        let out = c.drover(&["controllers", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.as_array().is_some_and(|a| a.iter().filter(|c| c["status"].is_object()).count() == 3)
    });
    let log = c.logs();
    assert!(log.contains("again (pid"), "the leader's log says it:\n{log}");
}

/// Elastic capacity: `drover up --max-nodes` defines nodes powered down
/// (idle~) that the healer starts when a job needs them.
#[test]
fn drover_up_grows_by_itself_into_its_elastic_nodes() {
    let mut flags = FLAGS.to_vec();
    flags.extend(["--max-nodes", "3"]);
    let c = Cluster::start_with("healelastic", 1, 2, &flags);
    let s = sinfo(&c);
    assert!(s.contains("node1 idle\n") && s.contains("node2 idle~") && s.contains("node3 idle~"), "{s}");
    let started = Instant::now();
    let id = c.submit(&["-N", "3", "-n", "12", "-o", "e.out", "--wrap", "echo $SLURM_JOB_NODELIST"]);
    c.wait_for("the job on three nodes", Duration::from_secs(20), || state_of(&c, &id) == "COMPLETED");
    eprintln!("elastic: a 3-node job on 1 running + 2 defined nodes done in {:?}", started.elapsed());
    assert_eq!(c.file("e.out"), "node[1-3]\n");
    let ev = events(&c);
    assert!(ev.contains("repair resume of node2 done") && ev.contains("repair resume of node3 done"), "{ev}");
    // A node outside the cluster's reach stays refused at submission.
    let out = c.drover(&["submit", "-N", "4", "--wrap", "true"]);
    assert!(!out.status.success(), "no fourth node to grow into");
}
