//! The aws-ec2 provider against a real EC2 API stand-in: moto's server on
//! loopback (`moto_server`, installed by `.ci/run`). An instance "boots"
//! when `tests/fixtures/ec2_cloud.py boot` starts the agent that belongs to
//! it, and "stops" when it kills it, so that the whole loop runs: instance
//! stopped → node DOWN → instance started → its agent registers → the
//! requeued job completes on it.
//!
//! moto differs from EC2 in ways the provider must survive, not rely on:
//! it starts instances at once and reports every running one healthy.

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLUSTER: &str = "it";

struct Moto {
    child: Child,
    endpoint: String,
}

/// A port no one listens on now (the OS's pick), for moto and the proxy:
/// the tests of this binary may run at once, and test_port's few slots go
/// to the clusters.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server runs (pip install 'moto[server,ec2]')");
        let endpoint = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "moto_server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, endpoint }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cloud(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ec2_cloud.py");
    let out = Command::new("python3").arg(script).args(args).output().expect("python3 runs");
    assert!(out.status.success(), "ec2_cloud.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn events(c: &Cluster) -> String {
    String::from_utf8_lossy(&c.drover(&["events"]).stdout).into_owned()
}

fn node_state(c: &Cluster, node: &str) -> String {
    let out = c.drover(&["nodes", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["name"] == node)
        .map_or(String::new(), |n| n["state"].as_str().unwrap_or_default().to_string())
}

/// The time the first event line containing `what` was logged, as
/// `HH:MM:SS.mmm` seconds of the day.
fn event_time(c: &Cluster, what: &str) -> Option<f64> {
    let ev = events(c);
    let line = ev.lines().find(|l| l.contains(what))?;
    let t = line.split_whitespace().next()?;
    let mut parts = t.split(':');
    let (h, m, s): (f64, f64, f64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The standard AWS environment that points the controllers (children of
/// `drover up`) at `endpoint`; given per cluster, as the tests of this
/// binary may share a process.
fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
    ]
}

/// A 2-node cluster healed through EC2, with `extra` flags.
fn ec2_cluster(name: &str, port_offset: u16, endpoint: &str, extra: &[&str]) -> Cluster {
    let mut flags = vec![
        "--node-timeout",
        "3",
        "--heartbeat",
        "0.5",
        "--kill-grace",
        "2",
        "--heal",
        "aws-ec2",
        "--ec2-cluster",
        CLUSTER,
        "--ec2-launch-template",
        "it-compute",
        "--ec2-terminate-replaced",
        "--heal-poll",
        "1",
    ];
    flags.extend_from_slice(extra);
    let env = aws_env(endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Cluster::start_with_env(name, 2, port_offset, &flags, &env)
}

/// The instances' "boot": see `ec2_cloud.py boot`; stopped on drop.
struct Boot(Child, std::path::PathBuf);

impl Boot {
    fn start(c: &Cluster, endpoint: &str) -> Boot {
        let state = c.dir.join(".drover");
        let child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ec2_cloud.py"))
            .args(["boot", endpoint, CLUSTER, state.to_str().unwrap(), env!("CARGO_BIN_EXE_drover")])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Boot(child, c.dir.join("cloud.stop"))
    }
}

impl Drop for Boot {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.1, "");
        let _ = self.0.wait();
    }
}

fn seconds_of_day_now() -> f64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    (t.as_secs() % 86_400) as f64 + f64::from(t.subsec_millis()) / 1000.0
}

#[test]
fn lost_instances_come_back_started_from_a_standby_and_launched_from_the_template() {
    let moto = Moto::start();
    let ids: serde_json::Value =
        serde_json::from_str(&cloud(&["setup", &moto.endpoint, CLUSTER, "node1,node2"])).unwrap();
    let c = ec2_cluster("healec2", 0, &moto.endpoint, &[]);
    let state = c.dir.join(".drover");
    let _boot = Boot::start(&c, &moto.endpoint);

    // 1. The node's instance stops (the seed's case): the healer sees the
    //    stopped state (no "impaired" check ever comes), requeues the job at
    //    once and starts the same instance again.
    let id = c.submit(&["-w", "node1", "--requeue", "-o", "j.out", "--wrap", "sleep 2; echo ran $SLURM_RESTART_COUNT"]);
    c.wait_for("job running", Duration::from_secs(10), || state_of(&c, &id) == "RUNNING");
    let stopped_wall = seconds_of_day_now();
    let stopped_at = Instant::now();
    let stopped = cloud(&["stop", &moto.endpoint, CLUSTER, "node1", state.to_str().unwrap()]);
    assert_eq!(stopped, ids["node1"].as_str().unwrap());
    c.wait_for("node1 back", Duration::from_secs(20), || events(&c).contains("repair replace of node1 done"));
    let back = stopped_at.elapsed();
    let ev = events(&c);
    assert!(ev.contains(&format!("acted: started {stopped}")), "its own instance was started:\n{ev}");
    assert!(ev.contains("node node1 MIXED -> DOWN (its machine is stopped)"), "{ev}");
    c.wait_for("job done", Duration::from_secs(20), || state_of(&c, &id) == "COMPLETED");
    assert_eq!(c.file("j.out"), "ran 1\n", "requeued once, ran once");
    let noticed = event_time(&c, "-> DOWN (its machine is stopped)").unwrap() - stopped_wall;
    let reaction = event_time(&c, "repair replace of node1 through aws-ec2").unwrap() - stopped_wall;
    eprintln!(
        "aws-ec2 (moto): instance stopped -> noticed {noticed:.3}s, repair started {reaction:.3}s, node back {back:?}"
    );
    // Within one poll (1 s here), with room for a slow machine.
    assert!(reaction < 2.5, "the healer reacted in {reaction:.3}s");

    // 2. Terminated: the stopped standby is tagged for the node and started.
    cloud(&["terminate", &moto.endpoint, CLUSTER, "node2", state.to_str().unwrap()]);
    c.wait_for("node2 back", Duration::from_secs(20), || events(&c).contains("repair replace of node2 done"));
    let standby = ids["standby"].as_str().unwrap();
    assert!(events(&c).contains(&format!("acted: started standby {standby}")), "{}", events(&c));

    // 3. Terminated again, no standby left: launched from the template,
    //    with the cluster's tags, under the node's name.
    cloud(&["terminate", &moto.endpoint, CLUSTER, "node1", state.to_str().unwrap()]);
    c.wait_for("node1 back again", Duration::from_secs(20), || {
        events(&c).matches("repair replace of node1 done").count() == 2
    });
    let ev = events(&c);
    assert!(ev.contains("acted: launched i-"), "launched from the template:\n{ev}");
    assert_eq!(node_state(&c, "node1"), "IDLE");
    let id = c.submit(&["-N", "2", "-o", "k.out", "--wrap", "echo $SLURM_JOB_NODELIST"]);
    c.wait_for("a job on both", Duration::from_secs(20), || state_of(&c, &id) == "COMPLETED");
    assert_eq!(c.file("k.out"), "node[1-2]\n");

    // Chaos through the provider: the instance stops, the healer starts it.
    let out = c.drover(&["chaos", "stop-instance", "node2"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("stopped the machine of node2 through aws-ec2: stopped i-"), "{said}");
    c.wait_for("node2 back again", Duration::from_secs(20), || {
        events(&c).matches("repair replace of node2 done").count() == 2
    });

    // Counted by provider.
    let metrics = http(&c.addrs(), "GET", "/metrics", None, "").1;
    let done = metrics.lines().find(|l| {
        l.starts_with("drover_healer_actions_total{") && l.contains("aws-ec2") && l.contains("result=\"done\"")
    });
    assert!(done.is_some_and(|l| l.ends_with(" 4")), "{done:?}");
}

#[test]
fn short_capacity_moves_to_the_next_type_and_repeated_boot_failures_give_up_loudly() {
    let moto = Moto::start();
    // EC2 through a proxy that has no c5.large to give.
    let proxy_port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ec2_cloud.py");
    let proxy = Command::new("python3")
        .arg(&script)
        .args(["proxy", &proxy_port.to_string(), &moto.endpoint, "c5.large"])
        .spawn()
        .unwrap();
    let _proxy = Moto { child: proxy, endpoint: format!("http://127.0.0.1:{proxy_port}") };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", proxy_port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "the proxy did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    cloud(&["setup", &moto.endpoint, CLUSTER, "node1,node2", "0"]);
    let c = ec2_cluster(
        "healec2cap",
        1,
        &_proxy.endpoint,
        &["--ec2-instance-types", "c5.large,t3.micro", "--replace-timeout", "3", "--repair-backoff", "1,1"],
    );
    let state = c.dir.join(".drover");
    let _boot = Boot::start(&c, &moto.endpoint);

    // No standby: launched from the template; c5.large has no capacity, so
    // the next type is taken.
    cloud(&["terminate", &moto.endpoint, CLUSTER, "node1", state.to_str().unwrap()]);
    c.wait_for("node1 back", Duration::from_secs(30), || events(&c).contains("repair replace of node1 done"));
    let ev = events(&c);
    assert!(ev.contains("(t3.micro)"), "launched as the next type:\n{ev}");
    let log = std::fs::read_to_string(state.join("logs/controller.log")).unwrap_or_default();
    assert!(log.contains("insufficient capacity"), "said in the log:\n{log}");

    // A node whose instances never boot: each repair times out, backs off,
    // and after the last the healer gives up and says so.
    std::fs::write(c.dir.join("noboot"), "node2").unwrap();
    cloud(&["terminate", &moto.endpoint, CLUSTER, "node2", state.to_str().unwrap()]);
    c.wait_for("given up", Duration::from_secs(40), || events(&c).contains("failures=3 gave up"));
    let ev = events(&c);
    assert!(ev.contains("repair replace of node2 failed (not registered within 3s) failures=1"), "{ev}");
    let nodes = String::from_utf8_lossy(&c.drover(&["nodes"]).stdout).into_owned();
    assert!(nodes.contains("healing stopped after 3 failed repairs"), "{nodes}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(events(&c).matches("repair replace of node2 through").count(), 3, "no launch after giving up");
    // And what it last launched is stopped, not left running at a cost.
    let log = std::fs::read_to_string(state.join("logs/controller.log")).unwrap_or_default();
    assert!(log.contains("gave up repairing node2; its machine is stopped"), "{log}");

    // The operator fixed the boot and resumes the node: the last instance
    // boots, the node is back, and the healer may act on it again.
    std::fs::remove_file(c.dir.join("noboot")).unwrap();
    let out = c.drover(&["resume", "node2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.wait_for("node2 back", Duration::from_secs(30), || node_state(&c, "node2") == "IDLE");
}

#[test]
fn power_saving_stops_idle_instances_and_starts_them_for_a_burst_of_jobs() {
    let moto = Moto::start();
    cloud(&["setup", &moto.endpoint, CLUSTER, "node1,node2", "0"]);
    // An instance of the cluster for a node it does not have: terminated
    // after the grace period.
    let ghost = cloud(&["ghost", &moto.endpoint, CLUSTER, "node9"]);
    let c = ec2_cluster("healec2power", 2, &moto.endpoint, &["--suspend-time", "2", "--ec2-orphan-grace", "2"]);
    let _boot = Boot::start(&c, &moto.endpoint);
    c.wait_for("both powered down", Duration::from_secs(20), || {
        let out = c.drover(&["nodes", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["nodes"].as_array().is_some_and(|n| n.iter().all(|n| n["power"] == "POWERED_DOWN"))
    });
    assert!(events(&c).contains("repair suspend of node1 acted: stopped i-"), "{}", events(&c));
    c.wait_for("the orphan terminated", Duration::from_secs(15), || {
        cloud(&["state", &moto.endpoint, &ghost]) == "terminated"
    });

    // A burst of eight 4-CPU jobs: both instances start, all jobs run.
    let submitted = Instant::now();
    let ids: Vec<String> =
        (0..8).map(|i| c.submit(&["-n", "4", "-o", &format!("b{i}.out"), "--wrap", "echo ok"])).collect();
    c.wait_for("burst done", Duration::from_secs(40), || ids.iter().all(|id| state_of(&c, id) == "COMPLETED"));
    eprintln!("aws-ec2 (moto) power saving: 8 jobs on 2 powered-down nodes done in {:?}", submitted.elapsed());
    let ev = events(&c);
    for what in ["repair resume of node1 acted: started i-", "repair resume of node2 done"] {
        assert!(ev.contains(what), "events tell '{what}':\n{ev}");
    }
}

fn vip(endpoint: &str, rtb: &str) -> serde_json::Value {
    serde_json::from_str(&cloud(&["vip-holder", endpoint, "10.0.0.100", rtb])).unwrap()
}

/// The leader's log line for the floating IP's acquisition: how long the
/// EC2 calls took after it was confirmed leader.
fn acquired_in_ms(c: &Cluster, controller: u64) -> Option<u64> {
    let log = std::fs::read_to_string(c.dir.join(format!(".drover/logs/controller{controller}.log"))).ok()?;
    let line = log.lines().rev().find(|l| l.contains("floating IP 10.0.0.100") && l.contains("(acquire)"))?;
    line.split(" in ").last()?.split(" ms").next()?.trim().parse().ok()
}

fn leader_id(c: &Cluster) -> Option<u64> {
    let out = c.drover(&["controllers", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?.iter().find_map(|c| c["status"]["leader"].as_u64())
}

#[test]
fn the_floating_ip_follows_the_leader_through_ec2_on_a_kill_9() {
    let moto = Moto::start();
    let net: serde_json::Value = serde_json::from_str(&cloud(&["vip-setup", &moto.endpoint])).unwrap();
    let enis: Vec<String> = net["enis"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect();
    let rtb = net["rtb"].as_str().unwrap().to_string();
    let map = format!("1={},2={},3={}", enis[0], enis[1], enis[2]);
    let env = aws_env(&moto.endpoint);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let c = Cluster::start_with_env(
        "vipec2",
        1,
        3,
        &[
            "--controllers",
            "3",
            "--heal",
            "none",
            "--ec2-floating-ip",
            "10.0.0.100",
            "--ec2-floating-ip-eni",
            &map,
            "--ec2-route-table",
            &rtb,
        ],
        &env,
    );
    let eni_of = |id: u64| enis[id as usize - 1].clone();
    let first = leader_id(&c).expect("a leader");
    c.wait_for("the IP on the leader", Duration::from_secs(15), || {
        let v = vip(&moto.endpoint, &rtb);
        v["holders"] == serde_json::json!([eni_of(first)]) && v["route"] == eni_of(first).as_str()
    });

    let out = c.drover(&["chaos", "kill-controller"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let killed = Instant::now();
    let mut second = None;
    c.wait_for("a new leader", Duration::from_secs(15), || {
        second = leader_id(&c).filter(|&l| l != first);
        second.is_some()
    });
    let second = second.unwrap();
    c.wait_for("the IP on the new leader", Duration::from_secs(15), || {
        let v = vip(&moto.endpoint, &rtb);
        // Only there: taken from the dead leader, which could not let go.
        v["holders"] == serde_json::json!([eni_of(second)]) && v["route"] == eni_of(second).as_str()
    });
    let moved = killed.elapsed();
    let calls = acquired_in_ms(&c, second).expect("the new leader logged the move");
    eprintln!("floating IP (moto): leader kill -9 -> IP and route on the new leader within {moved:?}; EC2 calls {calls} ms after the election");
    assert!(calls < 1000, "moved within 1 s of the election: {calls} ms");
}
