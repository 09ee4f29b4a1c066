//! A real third-party Slurm client from PyPI, unchanged, against a `drover
//! up` cluster through the Slurm command names: simple-slurm submits,
//! polls, cancels; the script checks outputs and states
//! (tests/pyclients/simple_slurm_client.py).

mod common;
use common::Cluster;

/// Runs `script` (in tests/pyclients) against a fresh two-node cluster with
/// the Slurm links first on PATH; what it printed.
fn run_client(name: &str, port_offset: u16, script: &str, package: &str) -> String {
    let c = Cluster::start(name, 2, port_offset);
    let bin = c.dir.join("bin");
    let out = c.drover(&["install-links", bin.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let run = std::process::Command::new("python3")
        .arg(format!("{}/tests/pyclients/{script}", env!("CARGO_MANIFEST_DIR")))
        .arg(&c.dir)
        .current_dir(&c.dir)
        .env("PATH", path)
        .env("DROVER_CONTROLLER", c.addrs())
        .output()
        .expect("runs python3");
    let said = String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "{script} against Drover failed (pip install {package}; .ci/run does):\n{said}\n{}",
        c.logs()
    );
    assert!(said.contains("all checks passed"), "{said}");
    said
}

#[test]
fn simple_slurm_submits_waits_reads_back_and_cancels() {
    run_client("pypi", 0, "simple_slurm_client.py", "simple-slurm==0.3.6");
}

/// submitit runs its function through srun inside the job: one rank per
/// task across two nodes, each with its place in the job.
#[test]
fn submitit_runs_functions_through_srun() {
    run_client("pypi-submitit", 1, "submitit_client.py", "submitit==1.5.2");
}
