//! A network partition: three controllers, each in its own network
//! namespace on a bridge (in a fourth, "hub" namespace), and a client in a
//! fifth. The leader's link is cut: it must stop accepting writes while the
//! majority elects a new leader and goes on; when the link is back, the
//! group converges on one log. Skipped where network namespaces cannot be
//! made (not root, no veth or bridge support).

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

struct Net {
    tag: String,
    subnet: String,
    namespaces: Vec<String>,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).output().is_ok_and(|o| o.status.success())
}

impl Net {
    /// Namespaces c1..c3 (controllers) and cl (client) on a bridge in `hub`.
    fn create() -> Option<Net> {
        let tag = format!("{}", std::process::id());
        let subnet = format!("10.79.{}", std::process::id() % 250);
        let mut net = Net { tag: tag.clone(), subnet, namespaces: Vec::new() };
        let hub = net.ns("hub");
        if !ip(&["netns", "add", &hub]) {
            return None;
        }
        net.namespaces.push(hub.clone());
        if !ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]) || !ip(&["-n", &hub, "link", "set", "br0", "up"])
        {
            return None;
        }
        for (i, name) in ["c1", "c2", "c3", "cl"].iter().enumerate() {
            let ns = net.ns(name);
            if !ip(&["netns", "add", &ns]) {
                return None;
            }
            net.namespaces.push(ns.clone());
            let addr = format!("{}.{}/24", net.subnet, i + 1);
            let ok = ip(&["-n", &hub, "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", &ns])
                && ip(&["-n", &hub, "link", "set", name, "master", "br0"])
                && ip(&["-n", &hub, "link", "set", name, "up"])
                && ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])
                && ip(&["-n", &ns, "link", "set", "eth0", "up"])
                && ip(&["-n", &ns, "link", "set", "lo", "up"]);
            if !ok {
                return None;
            }
        }
        Some(net)
    }

    fn ns(&self, name: &str) -> String {
        format!("drover-{name}-{}", self.tag)
    }

    fn addr(&self, controller: u64) -> String {
        format!("{}.{controller}:7000", self.subnet)
    }

    /// Cuts (or restores) controller `id`'s link to the bridge.
    fn link(&self, id: u64, up: bool) {
        assert!(ip(&["-n", &self.ns("hub"), "link", "set", &format!("c{id}"), if up { "up" } else { "down" }]));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

struct Group {
    net: Net,
    dir: PathBuf,
    controllers: Vec<Child>,
}

impl Drop for Group {
    fn drop(&mut self) {
        for c in &mut self.controllers {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Group {
    fn start(net: Net) -> Group {
        let dir = std::env::temp_dir().join(format!("drover-it-partition-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("cluster.key");
        assert!(Command::new(env!("CARGO_BIN_EXE_drover")).arg("keygen").arg(&key).output().unwrap().status.success());
        let peers: Vec<String> = (1..=3).map(|i| format!("{i}={}", net.addr(i))).collect();
        let mut controllers = Vec::new();
        for i in 1..=3u64 {
            let log = std::fs::File::create(dir.join(format!("controller{i}.log"))).unwrap();
            let child = Command::new("ip")
                .args(["netns", "exec", &net.ns(&format!("c{i}")), env!("CARGO_BIN_EXE_drover"), "controller"])
                .args(["--id", &i.to_string(), "--peers", &peers.join(","), "--listen", &net.addr(i)])
                .args(["--state-dir", dir.join(format!("c{i}")).to_str().unwrap()])
                .args(["--key-file", key.to_str().unwrap(), "--auth-socket", dir.join("auth.sock").to_str().unwrap()])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            controllers.push(child);
        }
        Group { net, dir, controllers }
    }

    /// `drover ARGS` from namespace `ns`, talking to `controllers`.
    fn drover_in(&self, ns: &str, controllers: &[u64], args: &[&str], timeout: Duration) -> Output {
        let list: Vec<String> = controllers.iter().map(|i| self.net.addr(*i)).collect();
        Command::new("timeout")
            .arg(format!("{}", timeout.as_secs_f64()))
            .args(["ip", "netns", "exec", &self.net.ns(ns), env!("CARGO_BIN_EXE_drover")])
            .args(args)
            .current_dir(&self.dir)
            .env("DROVER_CONTROLLER", list.join(","))
            .env("DROVER_AUTH_SOCKET", self.dir.join("auth.sock"))
            .output()
            .unwrap()
    }

    /// Each controller's own view, as seen from the client namespace.
    fn views(&self) -> Vec<serde_json::Value> {
        let out = self.drover_in("cl", &[1, 2, 3], &["controllers", "--json"], Duration::from_secs(10));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.as_array().into_iter().flatten().filter_map(|x| x.get("status").cloned()).collect()
    }

    fn logs(&self) -> String {
        (1..=3)
            .map(|i| {
                let text = std::fs::read_to_string(self.dir.join(format!("controller{i}.log"))).unwrap_or_default();
                format!("--- controller{i}\n{text}")
            })
            .collect()
    }

    fn wait_for(&self, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn submit(&self, ns: &str, controllers: &[u64], timeout: Duration) -> Option<u64> {
        let out = self.drover_in(ns, controllers, &["submit", "--parsable", "--wrap", "true"], timeout);
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    fn job_count(&self, ns: &str, controller: u64, stale: bool) -> usize {
        let mut args = vec!["queue", "-a", "--json"];
        if stale {
            args.push("--stale");
        }
        let out = self.drover_in(ns, &[controller], &args, Duration::from_secs(10));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["jobs"].as_array().map_or(usize::MAX, Vec::len)
    }
}

#[test]
fn a_partitioned_leader_stops_writing_and_the_majority_goes_on() {
    let Some(net) = Net::create() else {
        eprintln!("skipped: cannot build network namespaces with a bridge and veth pairs here (needs root)");
        return;
    };
    let g = Group::start(net);
    let mut leader = 0;
    g.wait_for("a leader all three agree on", Duration::from_secs(20), || {
        let v = g.views();
        leader = v.first().and_then(|s| s["leader"].as_u64()).unwrap_or(0);
        v.len() == 3 && leader > 0 && v.iter().all(|s| s["leader"] == leader)
    });
    let first = g.submit("cl", &[1, 2, 3], Duration::from_secs(20)).expect("a write before the partition");

    // Cut the leader off. It keeps its own namespace; a client there that
    // can only reach it gets no acknowledgement.
    g.net.link(leader, false);
    let own = format!("c{leader}");
    let cut_off = g.drover_in(&own, &[leader], &["submit", "--parsable", "--wrap", "true"], Duration::from_secs(4));
    assert!(
        !cut_off.status.success() && String::from_utf8_lossy(&cut_off.stdout).trim().is_empty(),
        "the cut-off leader acknowledged a write: {}",
        String::from_utf8_lossy(&cut_off.stdout)
    );
    // The majority elects a new leader and takes writes.
    let majority: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let mut second = None;
    g.wait_for("a write through the majority", Duration::from_secs(20), || {
        second = g.submit("cl", &majority, Duration::from_secs(5));
        second.is_some()
    });
    let new_leader = g.views().iter().find(|s| s["role"] == "Leader").and_then(|s| s["this"].as_u64());
    assert!(new_leader.is_some_and(|l| l != leader), "no new leader in the majority: {:?}", g.views());

    // Heal: one leader, one log.
    g.net.link(leader, true);
    g.wait_for("the group to converge", Duration::from_secs(20), || {
        let v = g.views();
        v.len() == 3
            && v.iter().filter(|s| s["role"] == "Leader").count() == 1
            && v.windows(2).all(|w| w[0]["leader"] == w[1]["leader"] && w[0]["applied_index"] == w[1]["applied_index"])
    });
    let on_leader = g.job_count("cl", new_leader.unwrap(), false);
    let on_old = g.job_count("cl", leader, true);
    assert_eq!(on_old, on_leader, "the old leader's state differs after healing\n{}", g.logs());
    // The jobs acknowledged before and during the partition are there; the
    // cut-off write is not (it was never acknowledged nor committed).
    assert_eq!(on_leader, 2, "jobs {first} and {second:?} and nothing else\n{}", g.logs());
}
