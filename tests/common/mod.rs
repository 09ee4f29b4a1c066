//! A local cluster driven through the `drover` binary, for integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// A port per test (0..8) and test process: away from the default 6817 and
/// below the kernel's ephemeral range (32768+), where any outgoing
/// connection may already hold it.
pub fn test_port(offset: u16) -> u16 {
    10000 + (std::process::id() % 2500) as u16 * 8 + offset
}

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    /// Extra `drover up` flags, given again on every `up`.
    pub up_flags: Vec<String>,
    /// Controllers on consecutive ports from `port`.
    pub controllers: u16,
    /// Environment for every `drover` this cluster runs (and so for its
    /// daemons): tests of one binary share a process, so not `set_var`.
    pub env: Vec<(String, String)>,
}

impl Cluster {
    pub fn start(name: &str, nodes: u32, port_offset: u16) -> Cluster {
        Cluster::start_with(name, nodes, port_offset, &[])
    }

    pub fn start_with(name: &str, nodes: u32, port_offset: u16, up_flags: &[&str]) -> Cluster {
        Cluster::start_with_env(name, nodes, port_offset, up_flags, &[])
    }

    pub fn start_with_env(
        name: &str,
        nodes: u32,
        port_offset: u16,
        up_flags: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        let dir = std::env::temp_dir().join(format!("drover-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = test_port(port_offset);
        let controllers = up_flags
            .iter()
            .position(|f| *f == "--controllers")
            .and_then(|i| up_flags.get(i + 1)?.parse().ok())
            .unwrap_or(1);
        let c = Cluster {
            dir,
            port,
            up_flags: up_flags.iter().map(|s| s.to_string()).collect(),
            controllers,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let out = c.up(nodes);
        assert!(out.status.success(), "drover up failed: {}\n{}", String::from_utf8_lossy(&out.stderr), c.logs());
        c
    }

    /// The daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        let agents = std::fs::read_dir(self.dir.join(".drover/agents")).into_iter().flatten().flatten();
        let watchdogs = agents.map(|a| a.path().join("watchdog.log"));
        let daemons =
            std::fs::read_dir(self.dir.join(".drover/logs")).into_iter().flatten().flatten().map(|e| e.path());
        for path in daemons.chain(watchdogs) {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            all.push_str(&format!("--- {}\n{}\n", path.display(), text));
        }
        all
    }

    pub fn up(&self, nodes: u32) -> Output {
        let nodes = nodes.to_string();
        let port = self.port.to_string();
        let mut args =
            vec!["up", "--detach", "--nodes", &nodes, "--cpus-per-node", "4", "--mem-per-node", "2G", "--port", &port];
        args.extend(self.up_flags.iter().map(String::as_str));
        self.drover(&args)
    }

    pub fn drover(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(args)
            .current_dir(&self.dir)
            .env("DROVER_CONTROLLER", self.addrs())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("runs drover")
    }

    /// Polls `done` until it holds and returns how long that took; fails the
    /// test with the daemons' logs after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: std::time::Duration,
        mut done: impl FnMut() -> bool,
    ) -> std::time::Duration {
        let start = std::time::Instant::now();
        while !done() {
            assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}\n{}", self.logs());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        start.elapsed()
    }

    /// The controllers' addresses, comma-separated.
    pub fn addrs(&self) -> String {
        (0..self.controllers).map(|i| format!("127.0.0.1:{}", self.port + i)).collect::<Vec<_>>().join(",")
    }

    pub fn submit(&self, args: &[&str]) -> String {
        let mut all = vec!["submit", "--parsable"];
        all.extend_from_slice(args);
        let out = self.drover(&all);
        assert!(out.status.success(), "submit {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// What `drover up` started: (role, pid), e.g. ("node1", 4242).
    pub fn started(&self) -> Vec<(String, i32)> {
        std::fs::read_to_string(self.dir.join(".drover/pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(role, pid)| Some((role.to_string(), pid.trim().parse().ok()?)))
            .collect()
    }

    pub fn pids(&self) -> Vec<i32> {
        self.started().into_iter().map(|(_, pid)| pid).collect()
    }

    /// The pid of the daemon `drover up` started as `role`.
    pub fn pid_of(&self, role: &str) -> i32 {
        self.started().into_iter().rfind(|(r, _)| r == role).map(|(_, pid)| pid).expect("a pid for the role")
    }

    pub fn controller_pid(&self) -> i32 {
        self.pid_of("controller")
    }
}

pub fn live(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pids = self.pids();
        let _ = self.drover(&["down"]);
        for pid in pids {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // In-memory spools that still hold steps killed by `down` live
        // outside the cluster's directory.
        if let Ok(agents) = std::fs::read_dir(self.dir.join(".drover/agents")) {
            for agent in agents.flatten() {
                if let Ok(target) = std::fs::read_link(agent.path().join("spool")) {
                    let _ = std::fs::remove_dir_all(target);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn state_of(c: &Cluster, id: &str) -> String {
    let out = c.drover(&["show", "job", id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["state"].as_str().unwrap_or("?").to_string()
}

/// One HTTP/1.1 request to `addr` (`IP:PORT`); returns (status, body).
/// `auth`: a credential for `Authorization: Drover …`.
pub fn http(addr: &str, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    request(addr, method, path, auth.map(|a| format!("Drover {a}")).as_deref(), body)
}

/// One HTTP/1.1 request with `authorization` as the whole header value
/// (`Drover …`, `Bearer …`); returns (status, body).
pub fn request(addr: &str, method: &str, path: &str, authorization: Option<&str>, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}
