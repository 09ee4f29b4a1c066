//! Slurm's commands as front ends: `drover install-links` makes sbatch,
//! squeue, sinfo and scancel, and they drive a `drover up` cluster the way
//! scripts drive Slurm (same messages, formats, exit codes).

mod common;
use common::Cluster;
use std::process::{Command, Output};
use std::time::Duration;

struct Links {
    dir: std::path::PathBuf,
}

impl Links {
    fn run(&self, c: &Cluster, cmd: &str, args: &[&str]) -> Output {
        Command::new(self.dir.join(cmd))
            .args(args)
            .current_dir(&c.dir)
            .env("DROVER_CONTROLLER", c.addrs())
            .output()
            .unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }

    fn ok(&self, c: &Cluster, cmd: &str, args: &[&str]) -> String {
        let out = self.run(c, cmd, args);
        assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

#[test]
fn sbatch_squeue_sinfo_and_scancel_answer_as_slurm_does() {
    let c = Cluster::start("slurm-cmds", 2, 0);
    let links = Links { dir: c.dir.join("bin") };
    let out = c.drover(&["install-links", links.dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for name in ["sbatch", "squeue", "sinfo", "scancel", "scontrol", "sacct"] {
        assert!(links.dir.join(name).exists(), "{name} linked");
    }
    assert!(links.ok(&c, "sbatch", &["--version"]).starts_with("slurm 22.05.8 (drover "));

    // sbatch: Slurm's message, and its error prefix and exit code.
    let said = links.ok(&c, "sbatch", &["-J", "sleeper", "--wrap", "sleep 60"]);
    let id: u64 = said.strip_prefix("Submitted batch job ").and_then(|s| s.trim().parse().ok()).expect(&said);
    let bad = links.run(&c, "sbatch", &["-p", "nosuch", "--wrap", "true"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1));
    assert!(err.starts_with("sbatch: error: ") && err.contains("nosuch"), "{err}");
    let array = links.ok(&c, "sbatch", &["--parsable", "-H", "-a", "1-4", "-J", "arr", "--wrap", "true"]);
    let array = array.trim();

    // squeue: the default header, formats, filters.
    c.wait_for("the sleeper running", Duration::from_secs(15), || {
        links.ok(&c, "squeue", &["-h", "-j", &id.to_string(), "-o", "%T"]).trim() == "RUNNING"
    });
    let listing = links.ok(&c, "squeue", &[]);
    assert_eq!(
        listing.lines().next(),
        Some("             JOBID PARTITION     NAME     USER ST       TIME  NODES NODELIST(REASON)")
    );
    assert!(
        listing.contains(&format!("{array}_[1-4]     debug      arr     root PD       0:00      1 (JobHeldUser)")),
        "{listing}"
    );
    let line = links.ok(&c, "squeue", &["-h", "-o", "%i|%j|%t|%D|%C|%P|%l", "-n", "sleeper"]);
    assert_eq!(line, format!("{id}|sleeper|R|1|1|debug|UNLIMITED\n"));
    let json: serde_json::Value = serde_json::from_str(&links.ok(&c, "squeue", &["--json", "--me"])).unwrap();
    let jobs = json["jobs"].as_array().unwrap();
    assert!(
        jobs.iter().any(|j| j["job_id"] == id && j["job_state"] == "RUNNING" && j["user_name"] == "root"),
        "{json}"
    );
    assert_eq!(json["meta"]["Slurm"]["release"], "22.05.8");
    let bad = links.run(&c, "squeue", &["-o", "%Z%!"]);
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("squeue: error: invalid field '%!'"), "{bad:?}");

    // sinfo: partitions and nodes.
    let sinfo = links.ok(&c, "sinfo", &[]);
    assert_eq!(sinfo.lines().next(), Some("PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST"));
    assert!(sinfo.contains("debug*       up   infinite      1    mix node"), "{sinfo}");
    assert_eq!(links.ok(&c, "sinfo", &["-h", "-N", "-o", "%N %c %m"]), "node1 4 2048\nnode2 4 2048\n");
    let nodes: serde_json::Value = serde_json::from_str(&links.ok(&c, "sinfo", &["--json"])).unwrap();
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 2);

    // scontrol: show in Slurm's layout, hold and release, ping, token.
    let show = links.ok(&c, "scontrol", &["show", "job", &id.to_string()]);
    assert!(show.starts_with(&format!("JobId={id} JobName=sleeper\n   UserId=root(0) GroupId=root(0)")), "{show}");
    assert!(show.contains("\n   JobState=RUNNING Reason=None Dependency=(null)\n"), "{show}");
    let one = links.ok(&c, "scontrol", &["-o", "show", "job", &id.to_string()]);
    assert_eq!(one.lines().count(), 1, "{one}");
    let held = links.ok(&c, "sbatch", &["--parsable", "-H", "-J", "later", "--wrap", "true"]);
    let held = held.trim();
    assert!(links.ok(&c, "scontrol", &["show", "job", held]).contains("Reason=JobHeldUser"));
    links.ok(&c, "scontrol", &["release", held]);
    c.wait_for("the released job ran", Duration::from_secs(15), || common::state_of(&c, held) == "COMPLETED");
    let late = links.ok(&c, "sbatch", &["--parsable", "-b", "now+1hour", "--wrap", "true"]);
    links.ok(&c, "scontrol", &["hold", late.trim()]);
    assert!(links.ok(&c, "squeue", &["-h", "-o", "%r", "-j", late.trim()]).starts_with("JobHeld"));
    let bad = links.run(&c, "scontrol", &["hold", "999999"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("scontrol: error: Job 999999"), "{bad:?}");
    assert!(links.ok(&c, "scontrol", &["show", "node", "node1"]).starts_with("NodeName=node1 Arch="));
    assert!(links.ok(&c, "scontrol", &["show", "partition"]).starts_with("PartitionName=debug\n"));
    assert_eq!(links.ok(&c, "scontrol", &["ping"]), format!("Slurmctld(primary) at 127.0.0.1:{} is UP\n", c.port));
    assert!(links.ok(&c, "scontrol", &["token"]).starts_with("SLURM_JWT=t1."));

    // scancel: a task range of the array, then the sleeper.
    links.ok(&c, "scancel", &[&format!("{array}_[1-2]")]);
    let left = links.ok(&c, "squeue", &["-h", "-o", "%i", "-j", array]);
    assert_eq!(left.trim(), format!("{array}_[3-4]"));
    links.ok(&c, "scancel", &[&id.to_string()]);
    c.wait_for("the sleeper cancelled", Duration::from_secs(15), || {
        common::state_of(&c, &id.to_string()) == "CANCELLED"
    });
    // sacct: jobs and their batch steps, from the controller (until SQL accounting).
    let fail = links.ok(&c, "sbatch", &["--parsable", "--wrap", "exit 3"]);
    let fail = fail.trim();
    c.wait_for("the failing job ended", Duration::from_secs(15), || common::state_of(&c, fail) == "FAILED");
    let acct = links.ok(&c, "sacct", &["-j", fail, "-P", "-n", "-o", "JobID,JobName,State,ExitCode"]);
    assert_eq!(acct, format!("{fail}|wrap|FAILED|3:0\n{fail}.batch|batch|FAILED|3:0\n"));
    assert_eq!(
        links.ok(&c, "sacct", &["-X", "-n", "-P", "-o", "JobID,State", "-j", held]),
        format!("{held}|COMPLETED\n")
    );
    let table = links.ok(&c, "sacct", &["-a"]);
    assert_eq!(
        table.lines().next(),
        Some("JobID           JobName  Partition    Account  AllocCPUS      State ExitCode ")
    );
    assert!(
        table.contains(&format!("\n{id:<12}    sleeper      debug       root          1  CANCELLED     0:15 \n")),
        "{table}"
    );
    let never_ran = links.ok(&c, "sacct", &["-X", "-n", "-P", "-o", "JobID,State,NodeList", "-j", late.trim()]);
    assert_eq!(never_ran, format!("{}|PENDING|None assigned\n", late.trim()));
    let bad = links.run(&c, "sacct", &["-o", "JobID,Bogus"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).starts_with("sacct: error: Invalid field requested: \"Bogus\""),
        "{bad:?}"
    );

    // A script on standard input, as `sbatch << EOF`; a signal through scancel.
    let mut child = Command::new(links.dir.join("sbatch"))
        .arg("--parsable")
        .current_dir(&c.dir)
        .env("DROVER_CONTROLLER", c.addrs())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let script =
        "#!/bin/sh\n#SBATCH -J trapper\n#SBATCH -o trapper.out\ntrap 'echo got USR1; exit 0' USR1\nsleep 60 &\nwait\n";
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let trapper = String::from_utf8_lossy(&out.stdout).trim().to_string();
    c.wait_for("the trapper running", Duration::from_secs(15), || common::state_of(&c, &trapper) == "RUNNING");
    // The shell sets its trap first thing; give it a moment after the start.
    std::thread::sleep(Duration::from_secs(1));
    links.ok(&c, "scancel", &["--signal=USR1", &trapper]);
    c.wait_for("the trapper done", Duration::from_secs(15), || common::state_of(&c, &trapper) == "COMPLETED");
    assert_eq!(c.file("trapper.out").trim(), "got USR1");
    let bad = links.run(&c, "scancel", &["--signal=NOPE", &trapper]);
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("scancel: error: Invalid signal NOPE"), "{bad:?}");

    let bad = links.run(&c, "scancel", &["999999"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).starts_with("scancel: error: Kill job error on job id 999999"),
        "{bad:?}"
    );
}
