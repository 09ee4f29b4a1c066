//! `drover up` as a new user meets it: what it prints for another shell
//! is all a client needs, and running it again with other flags adds nodes
//! or says what runs and how to change it (issue #20 items 8 and 9).

use std::process::Command;
use std::time::Duration;

mod common;
use common::*;

/// Issue #20 item 8: what `drover up` prints for "from another shell" is
/// all a client needs — any directory, any local user, drover's commands
/// and the Slurm names alike.
#[test]
fn what_up_prints_runs_every_command_from_anywhere_as_any_user() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: running as another user needs root");
        return;
    }
    let Some((uid, gid)) = user_ids("nobody") else {
        eprintln!("skipped: no user 'nobody' here");
        return;
    };
    let c = Cluster::start("anywhere", 1, 0);
    let bin = c.dir.join("bin");
    assert!(c.drover(&["install-links", bin.to_str().unwrap()]).status.success());
    // The same `up` again (nothing to start) prints the lines again.
    let up = c.up(1);
    let said = String::from_utf8_lossy(&up.stdout).to_string();
    assert!(up.status.success(), "{said}");
    let exports = said.lines().find_map(|l| l.trim().strip_prefix("export ")).expect(&said).to_string();
    let vars: Vec<(&str, &str)> = exports.split_whitespace().filter_map(|kv| kv.split_once('=')).collect();
    assert!(vars.iter().any(|(k, _)| *k == "DROVER_AUTH_SOCKET"), "{exports}");

    // Elsewhere, owned by the user; a shell with nothing but PATH and what
    // `up` said.
    let elsewhere = std::env::temp_dir().join(format!("drover-it-elsewhere-{}", std::process::id()));
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::chown(&elsewhere, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
    let drover_dir = std::path::Path::new(env!("CARGO_BIN_EXE_drover")).parent().unwrap();
    let script = "set -e
        drover submit --wrap 'echo from $(id -un)' >/dev/null
        id=$(sbatch --parsable --wrap 'echo sbatch job')
        drover wait $id >/dev/null
        squeue -h -t all -o '%i %T %u' -j $id
        sinfo -h -o '%P %D'
        scontrol show job $id | grep -o 'JobState=[A-Z]*'
        srun -n 1 echo srun ran
        drover queue --all >/dev/null
        sacct -j $id -X -n -P -o State
        cat slurm-$id.out";
    let out = Command::new("sh")
        .args(["-c", script])
        .current_dir(&elsewhere)
        .env_clear()
        .env("PATH", format!("{}:{}:/usr/bin:/bin", bin.display(), drover_dir.display()))
        .envs(vars.iter().copied())
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let _ = std::fs::remove_dir_all(&elsewhere);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].ends_with(" COMPLETED nobody"), "{text}");
    assert_eq!(lines[1..], ["debug* 1", "JobState=COMPLETED", "srun ran", "COMPLETED", "sbatch job"], "{text}");
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, name]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// Issue #20 item 9: `drover up` again with other flags adds the nodes a
/// larger `--nodes` asks for, and refuses anything else, saying what runs
/// and how to change it; `down` then `up` applies new flags.
#[test]
fn up_again_adds_nodes_and_refuses_other_changes() {
    let c = Cluster::start("upagain", 1, 1);
    let nodes = |c: &Cluster| {
        let out = c.drover(&["nodes", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nodes --json");
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["name"].as_str().unwrap().to_string(), n["total"]["cpus"].as_u64().unwrap()))
            .collect::<Vec<_>>()
    };
    let out = c.up(2);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(nodes(&c), [("node1".to_string(), 4), ("node2".to_string(), 4)]);
    let controller = c.controller_pid();

    let port = c.port.to_string();
    for (flags, says) in [
        (vec!["--nodes", "2", "--controllers", "3"], "  --controllers 3 (running: 1)"),
        (vec!["--nodes", "1"], "  --nodes 1 (running: 2)"),
        (
            vec!["--nodes", "2", "--cpus-per-node", "2", "--kill-grace", "5"],
            "  --cpus-per-node 2 (running: 4)\n  --kill-grace 5 (running: 30)",
        ),
    ] {
        let mut args = vec!["up", "--detach", "--mem-per-node", "2G", "--port", &port];
        if !flags.contains(&"--cpus-per-node") {
            args.extend(["--cpus-per-node", "4"]);
        }
        args.extend(flags.iter().copied());
        let out = c.drover(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flags:?} refused: {err}");
        assert!(err.contains("a cluster is already running from") && err.contains(says), "{err}");
        assert!(err.contains("drover down --state-dir"), "{err}");
    }
    assert_eq!(c.controller_pid(), controller, "nothing restarted");
    assert_eq!(c.started().len(), 3, "nothing started: {:?}", c.started());

    // Stopped, it starts with the new flags.
    assert!(c.drover(&["down"]).status.success());
    let out =
        c.drover(&["up", "--detach", "--nodes", "2", "--cpus-per-node", "2", "--mem-per-node", "2G", "--port", &port]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.wait_for("the nodes to re-register with 2 CPUs", Duration::from_secs(20), || {
        nodes(&c).iter().all(|(_, cpus)| *cpus == 2)
    });
}
