//! A real third-party Slurm client from PyPI, unchanged, against a `drover
//! up` cluster through the Slurm command names: simple-slurm submits,
//! polls, cancels; the script checks outputs and states
//! (tests/pyclients/simple_slurm_client.py).

mod common;
use common::Cluster;

#[test]
fn simple_slurm_submits_waits_reads_back_and_cancels() {
    let c = Cluster::start("pypi", 2, 0);
    let bin = c.dir.join("bin");
    let out = c.drover(&["install-links", bin.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let run = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pyclients/simple_slurm_client.py"))
        .arg(&c.dir)
        .current_dir(&c.dir)
        .env("PATH", path)
        .env("DROVER_CONTROLLER", c.addrs())
        .output()
        .expect("runs python3");
    let said = String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "simple-slurm against Drover failed (pip install simple-slurm==0.3.6; .ci/run does):\n{said}\n{}",
        c.logs()
    );
    assert!(said.contains("all checks passed"), "{said}");
}
