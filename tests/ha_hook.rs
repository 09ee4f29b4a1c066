//! The leadership hook moves a floating IP: `deploy/hooks/vip-linux.sh` run
//! by three controllers, each with its own interface in a network
//! namespace, so the test can see which controller holds the address.

mod common;

use common::Cluster;
use std::process::Command;
use std::time::Duration;

const VIP: &str = "10.213.0.10";

/// A network namespace with one veth interface per controller, deleted on
/// drop.
struct Namespace(String);

impl Namespace {
    fn create(controllers: u16) -> Option<Namespace> {
        let name = format!("drover-vip-{}", std::process::id());
        let ok = |args: &[&str]| Command::new("ip").args(args).output().is_ok_and(|o| o.status.success());
        if !ok(&["netns", "add", &name]) {
            return None;
        }
        let ns = Namespace(name);
        for i in 1..=controllers {
            let (dev, peer) = (format!("vip{i}"), format!("vip{i}p"));
            if !ok(&["-n", &ns.0, "link", "add", &dev, "type", "veth", "peer", "name", &peer])
                || !ok(&["-n", &ns.0, "link", "set", &dev, "up"])
            {
                return None;
            }
        }
        Some(ns)
    }

    /// Which controllers' interfaces hold the floating address.
    fn holders(&self) -> Vec<u64> {
        let out = Command::new("ip").args(["-n", &self.0, "-o", "addr", "show"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&format!(" {VIP}/")))
            .filter_map(|l| l.split_whitespace().nth(1)?.strip_prefix("vip")?.parse().ok())
            .collect()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn leader(c: &Cluster) -> Option<u64> {
    let out = c.drover(&["controllers", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?.iter().filter_map(|x| x.get("status")).find(|s| s["role"] == "Leader")?["this"].as_u64()
}

#[test]
fn the_floating_ip_follows_the_leader() {
    let Some(ns) = Namespace::create(3) else {
        eprintln!("skipped: cannot create a network namespace with veth pairs here (needs root and ip netns)");
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/hooks/vip-linux.sh");
    let hook =
        format!("DROVER_VIP={VIP}/32 DROVER_VIP_DEV=vip$DROVER_CONTROLLER_ID DROVER_VIP_NETNS={} {script}", ns.0);
    let c = Cluster::start_with("vip", 1, 0, &["--controllers", "3", "--leader-hook", &hook]);
    let mut first = 0;
    c.wait_for("the leader to hold the address", Duration::from_secs(10), || {
        first = leader(&c).unwrap_or(0);
        ns.holders() == vec![first]
    });

    // Hang the leader: the new one takes the address; the old one, resumed,
    // finds it is no longer leader and lets go.
    let hang = c.drover(&["chaos", "hang-controller", "--for", "3"]);
    assert!(hang.status.success(), "{}", String::from_utf8_lossy(&hang.stderr));
    let mut second = 0;
    c.wait_for("the new leader to hold the address alone", Duration::from_secs(10), || {
        second = leader(&c).unwrap_or(0);
        second != first && ns.holders() == vec![second]
    });
    let log = std::fs::read_to_string(c.dir.join(format!(".drover/logs/controller{first}.log"))).unwrap();
    assert!(log.contains(&format!("vip-linux: controller {first} released {VIP}")), "{log}");

    // Kill the new leader: it cannot let go, so the address is on two
    // interfaces of this one namespace until the dead host is gone; on
    // separate hosts the gratuitous ARP moves the traffic.
    let kill = c.drover(&["chaos", "kill-controller"]);
    assert!(kill.status.success(), "{}", String::from_utf8_lossy(&kill.stderr));
    c.wait_for("a third leader to hold the address", Duration::from_secs(10), || {
        leader(&c).is_some_and(|third| third != second && ns.holders().contains(&third))
    });
}
