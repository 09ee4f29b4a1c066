//! TLS everywhere: `drover up --tls` makes a cluster CA and a host
//! certificate, and every connection — clients, agents, the controllers'
//! Raft traffic, `srun` to the agents — speaks TLS trusting that CA alone.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn a_tls_cluster_runs_jobs_and_steps_and_speaks_no_plain_http() {
    let c = Cluster::start_with("tls", 2, 0, &["--tls", "--controllers", "3"]);
    let tls = c.dir.join(".drover/tls");
    for f in ["ca.pem", "ca.key", "localhost.pem", "localhost.key"] {
        assert!(tls.join(f).is_file(), "{f} made");
    }

    // The CLI in the cluster's directory finds the CA by itself; jobs and
    // srun inside them get it from their agent.
    let bin = c.dir.join("bin");
    assert!(c.drover(&["install-links", bin.to_str().unwrap()]).status.success());
    std::fs::write(
        c.dir.join("steps.sh"),
        "#!/bin/sh\n#SBATCH -N 2 -n 2\nsrun sh -c 'echo rank $SLURM_PROCID on $SLURMD_NODENAME'\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["submit", "--parsable", "steps.sh"])
        .current_dir(&c.dir)
        .env("DROVER_CONTROLLER", c.addrs())
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    c.wait_for("the job to end", Duration::from_secs(30), || {
        matches!(state_of(&c, &id).as_str(), "COMPLETED" | "FAILED")
    });
    let output = c.file(&format!("slurm-{id}.out"));
    assert_eq!(state_of(&c, &id), "COMPLETED", "{output}\n{}", c.logs());
    let mut lines: Vec<&str> = output.lines().collect();
    lines.sort();
    assert_eq!(lines, ["rank 0 on node1", "rank 1 on node2"], "{output}");

    // The leader fails over: the controllers' own traffic is TLS too.
    let killed = c.drover(&["chaos", "kill-controller"]);
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    let again = c.submit(&["--wrap", "echo again"]);
    c.wait_for("a job after the failover", Duration::from_secs(30), || state_of(&c, &again) == "COMPLETED");

    // Nothing answers in plain HTTP: the first bytes are not a TLS hello.
    let addr = c.addrs().split(',').next().unwrap().to_string();
    assert!(!plain_http_is_served(&addr), "plain HTTP must not be served");

    // A client that trusts another CA is refused before it says anything.
    let other = c.dir.join("other-ca");
    assert!(c.drover(&["certs", other.to_str().unwrap()]).status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["queue"])
        .current_dir(&c.dir)
        .env("DROVER_CONTROLLER", c.addrs())
        .env("DROVER_TLS_CA", other.join("ca.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a client trusting another CA must fail");
}

#[test]
fn certs_makes_a_ca_once_and_host_certificates_with_their_names() {
    let dir = std::env::temp_dir().join(format!("drover-it-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_drover")).args(args).output().unwrap();
    let out = run(&["certs", dir.to_str().unwrap(), "--host", "ctl1:ctl1.example,10.0.0.5", "--host", "node1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("created the cluster CA"), "{said}");
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    for f in ["ctl1.pem", "ctl1.key", "node1.pem", "node1.key"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    // Again: the CA stays, a new host is signed by it.
    let out = run(&["certs", dir.to_str().unwrap(), "--host", "node2"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("using the cluster CA"));
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
    let out = run(&["certs", dir.to_str().unwrap(), "--host", "bad/name"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cannot name a certificate"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether `addr` answers a plain HTTP request with `200`. A TLS server
/// may close the connection while the request is still being written
/// (EPIPE) or reset it before anything is read: both mean "not served".
fn plain_http_is_served(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(b"GET /api/v1/controllers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200")
}
