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
            // First on PATH, as after install-links: jobs find our srun.
            .env("PATH", format!("{}:{}", self.dir.display(), std::env::var("PATH").unwrap_or_default()))
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
    for name in ["sbatch", "squeue", "sinfo", "scancel", "scontrol", "sacct", "srun", "salloc"] {
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

/// srun inside a batch job fans its ranks out over the job's nodes with the
/// environment rank-aware tools read; srun and salloc outside a job make
/// an allocation and give it back; steps show in squeue -s and sacct;
/// scontrol update changes jobs and nodes.
#[test]
fn srun_salloc_steps_and_updates() {
    let c = Cluster::start("slurm-srun", 2, 1);
    let links = Links { dir: c.dir.join("bin") };
    let out = c.drover(&["install-links", links.dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Inside a batch job of 2 nodes and 4 tasks.
    let script = c.dir.join("mpi.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n#SBATCH -N 2 -n 4 -J mpi\n\
         srun -l sh -c 'echo rank=$SLURM_PROCID of=$SLURM_NTASKS local=$SLURM_LOCALID node=$SLURM_NODEID \
         host=$SLURMD_NODENAME step=$SLURM_STEP_ID job=$SLURM_JOB_ID nodes=$SLURM_STEP_NODELIST'\n\
         srun -n 3 -o rank-%j-%s-%t.out sh -c 'echo file of $SLURM_PROCID'\n\
         srun -n 2 sh -c 'exit $((SLURM_PROCID * 3))'\n\
         echo after=$?\n\
         srun -N 3 true\n\
         echo toomany=$?\n",
    )
    .unwrap();
    let id = links.ok(&c, "sbatch", &["--parsable", script.to_str().unwrap()]).trim().to_string();
    c.wait_for("the mpi job to end", Duration::from_secs(30), || {
        links.ok(&c, "sacct", &["-X", "-n", "-P", "-j", &id, "-o", "State"]).trim() == "COMPLETED"
    });
    let output = std::fs::read_to_string(c.dir.join(format!("slurm-{id}.out"))).unwrap();
    let mut ranks: Vec<&str> = output.lines().filter(|l| l.contains("rank=")).collect();
    ranks.sort();
    let expected: Vec<String> = [(0, 0, 0, 1), (1, 1, 0, 1), (2, 0, 1, 2), (3, 1, 1, 2)]
        .iter()
        .map(|(rank, local, node, host)| {
            format!(
                "{rank}: rank={rank} of=4 local={local} node={node} host=node{host} step=0 job={id} nodes=node[1-2]"
            )
        })
        .collect();
    assert_eq!(ranks, expected, "{output}");
    for rank in 0..3 {
        let file = c.dir.join(format!("rank-{id}-1-{rank}.out"));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("file of {rank}\n"), "{file:?}");
    }
    assert!(output.contains("srun: error: node2: task 1: Exited with exit code 3"), "{output}");
    assert!(output.contains("after=3\n"), "{output}");
    assert!(
        output.contains(&format!(
            "srun: error: Unable to create step for job {id}: Requested node configuration is not available: \
             the step asks for 3 nodes, the job has 2"
        )),
        "{output}"
    );
    assert!(output.contains("toomany=1\n"), "{output}");
    let steps = links.ok(&c, "sacct", &["-j", &id, "-P", "-n", "-o", "JobID,JobName,State,ExitCode,NTasks,NodeList"]);
    assert_eq!(
        steps,
        format!(
            "{id}|mpi|COMPLETED|0:0||node[1-2]\n{id}.batch|batch|COMPLETED|0:0|1|node1\n\
             {id}.0|sh|COMPLETED|0:0|4|node[1-2]\n{id}.1|sh|COMPLETED|0:0|3|node[1-2]\n\
             {id}.2|sh|FAILED|3:0|2|node[1-2]\n"
        )
    );
    // The worst step's exit is the job's DerivedExitCode.
    let derived = links.ok(&c, "sacct", &["-j", &id, "-X", "-P", "-n", "-o", "ExitCode,DerivedExitCode"]);
    assert_eq!(derived, "0:0|3:0\n");

    // The batch step's peak memory is the N.batch line's MaxRSS; a step's
    // peak memory and CPU time come from its node's agent.
    let busy = "sum(range(10_000_000))";
    let big = links
        .ok(
            &c,
            "sbatch",
            &[
                "--parsable",
                "--mem",
                "500M",
                "--wrap",
                &format!(
                    "python3 -c 'x = bytearray(60_000_000); import time; time.sleep(1.5)'; \
                     srun python3 -c 'x = bytearray(90_000_000); {busy}'"
                ),
            ],
        )
        .trim()
        .to_string();
    let fields = ["-n", "-P", "-j", &big, "-o", "JobID,MaxRSS,ReqMem,TotalCPU,UserCPU"];
    c.wait_for("the memory job to end, its step measured", Duration::from_secs(30), || {
        let lines = links.ok(&c, "sacct", &fields);
        lines.starts_with(&format!("{big}||500M|")) && lines.lines().nth(2).is_some_and(|l| l.contains("K|"))
    });
    let rss = links.ok(&c, "sacct", &fields);
    let kb = |line: usize| -> u64 {
        let l = rss.lines().nth(line).expect(&rss);
        l.split('|').nth(1).and_then(|v| v.strip_suffix('K')).and_then(|v| v.parse().ok()).expect(&rss)
    };
    assert!((55_000..500_000).contains(&kb(1)), "{rss}");
    assert!((85_000..500_000).contains(&kb(2)), "{rss}");
    // Counting to ten million is CPU time, in the step and so in the job.
    let step = rss.lines().nth(2).unwrap();
    assert!(step.starts_with(&format!("{big}.0|")), "{rss}");
    let user = step.split('|').nth(4).unwrap();
    assert!(user != "00:00:00" && !user.starts_with("00:00.0"), "{rss}");
    assert!(!rss.lines().next().unwrap().ends_with("|00:00:00|00:00:00"), "{rss}");

    // A running step in squeue -s; the job ending kills its ranks everywhere.
    let marker = format!("drover-step-{}", std::process::id());
    let id = links
        .ok(
            &c,
            "sbatch",
            &["--parsable", "-N", "2", "-t", "10", "--wrap", &format!("srun -N 2 sh -c 'sleep 300; : {marker}'")],
        )
        .trim()
        .to_string();
    c.wait_for("the step running", Duration::from_secs(20), || {
        links.ok(&c, "squeue", &["-s", "-h", "-o", "%i %j %N"]).trim() == format!("{id}.0 sh node[1-2]")
    });
    let steps = links.ok(&c, "squeue", &["-s"]);
    assert!(steps.starts_with("         STEPID     NAME PARTITION     USER      TIME NODELIST\n"), "{steps}");
    let running = || {
        // The ranks' shells, not srun (whose command line names them too).
        let ps = Command::new("pgrep").args(["-f", &format!("^sh -c sleep 300; : {marker}")]).output().unwrap();
        String::from_utf8_lossy(&ps.stdout).lines().count()
    };
    c.wait_for("both ranks running", Duration::from_secs(10), || running() == 2);

    // scontrol update: a user may shorten a running job's limit; names change.
    links.ok(&c, "scontrol", &["update", &format!("JobId={id}"), "TimeLimit=5", "Name=renamed", "Comment=x y"]);
    assert_eq!(links.ok(&c, "squeue", &["-h", "-j", &id, "-o", "%j %l"]), "renamed 5:00\n");
    let bad = links.run(&c, "scontrol", &["update", &format!("JobId={id}"), "Partition=debug"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("the partition of a started job cannot change"), "{bad:?}");
    let bad = links.run(&c, "scontrol", &["update", &format!("JobId={id}"), "Colour=blue"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not supported: colour"), "{bad:?}");
    links.ok(&c, "scancel", &[&id]);
    c.wait_for("the ranks killed with their job", Duration::from_secs(15), || running() == 0);
    c.wait_for("the step recorded as cancelled", Duration::from_secs(10), || {
        links
            .ok(&c, "sacct", &["-j", &format!("{id}.0"), "-n", "-P", "-o", "JobID,State"])
            .contains(&format!("{id}.0|CANCELLED"))
    });

    let config = links.ok(&c, "scontrol", &["show", "config"]);
    assert!(config.starts_with("Configuration data as of "), "{config}");
    assert!(config.contains("\nClusterName             = drover\n"), "{config}");
    assert!(config.contains("\nSLURM_VERSION           = 22.05.8\n"), "{config}");
    assert!(config.ends_with(" is UP\n") && config.contains("\n\nSlurmctld(primary) at 127.0.0.1:"), "{config}");

    // Nodes: drain needs a reason, resume undoes it.
    let bad = links.run(&c, "scontrol", &["update", "NodeName=node2", "State=DRAIN"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("You must specify a reason"), "{bad:?}");
    links.ok(&c, "scontrol", &["update", "NodeName=node2", "State=DRAIN", "Reason=fan broken"]);
    assert!(links.ok(&c, "sinfo", &["-R", "-h", "-o", "%E|%N"]).contains("fan broken|node2"));
    links.ok(&c, "scontrol", &["update", "NodeName=node2", "State=RESUME"]);

    // srun outside a job: allocates, runs, gives back; exit code is the worst rank's.
    let out =
        links.run(&c, "srun", &["-N", "2", "-l", "sh", "-c", "echo $SLURM_PROCID $SLURM_NNODES; exit $SLURM_NODEID"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(lines, ["0: 0 2", "1: 1 2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("srun: error: node2: task 1: Exited with exit code 1"));
    let last = links.ok(&c, "sacct", &["-X", "-n", "-P", "-o", "JobID,JobName,State,ExitCode"]);
    assert!(last.lines().last().unwrap().ends_with("|sh|FAILED|1:0"), "{last}");

    // The same commands as the Slurm capture (tests/fixtures/slurm/), same output
    // but for the ids, the cluster's name and the host's.
    let fixture = |name: &str| {
        std::fs::read_to_string(format!("{}/tests/fixtures/slurm/{name}.out", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let env = links.ok(&c, "srun", &["-n1", "printenv", "SLURM_JOB_ID", "SLURM_NODELIST", "SLURM_CLUSTER_NAME"]);
    let job = env.lines().next().unwrap();
    // Whichever node was free first.
    let node = env.lines().nth(1).filter(|n| ["node1", "node2"].contains(n)).expect(&env);
    assert_eq!(env, fixture("41-srun_env").replacen("10069", job, 1).replace("node1", node).replace("peer", "drover"));
    let host = String::from_utf8(Command::new("hostname").output().unwrap().stdout).unwrap();
    let mut ours: Vec<String> = links.ok(&c, "srun", &["-N2", "-l", "hostname"]).lines().map(str::to_string).collect();
    let mut theirs: Vec<String> =
        fixture("41-srun_hostname").replace("vm", host.trim()).lines().map(str::to_string).collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
    let out = links.run(&c, "salloc", &["-N1", "-J", "probe_salloc", "true"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    let job = said.lines().next().and_then(|l| l.strip_prefix("salloc: Granted job allocation ")).expect(&said);
    let theirs =
        std::fs::read_to_string(format!("{}/tests/fixtures/slurm/42-salloc.err", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert_eq!(said, theirs.replace("10070", job));

    // salloc runs a command here with the job's variables, then gives the nodes back.
    let out = links.run(
        &c,
        "salloc",
        &[
            "-N",
            "1",
            "sh",
            "-c",
            "echo job=$SLURM_JOB_ID nodes=$SLURM_JOB_NUM_NODES; srun hostname >/dev/null && echo inner-ok",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    let job = err.lines().find_map(|l| l.strip_prefix("salloc: Granted job allocation ")).expect(&err).to_string();
    assert_eq!(said, format!("job={job} nodes=1\ninner-ok\n"));
    assert!(err.contains(&format!("salloc: Relinquishing job allocation {job}")), "{err}");
    assert_eq!(links.ok(&c, "sacct", &["-j", &job, "-X", "-n", "-P", "-o", "State"]).trim(), "COMPLETED");
    // A throttled array waits as N_[a-b%T], and -r lists its tasks.
    let arr = links.ok(&c, "sbatch", &["--parsable", "-H", "-a", "0-3%2", "--wrap", "true"]).trim().to_string();
    assert_eq!(links.ok(&c, "squeue", &["-h", "-j", &arr, "-o", "%i %K"]), format!("{arr}_[0-3%2] 0-3%2\n"));
    let tasks = links.ok(&c, "squeue", &["-h", "-r", "-j", &arr, "-o", "%i"]);
    assert_eq!(tasks, (0..4).map(|t| format!("{arr}_{t}\n")).collect::<String>());
    links.ok(&c, "scancel", &[&arr]);

    let bad = links.run(&c, "srun", &["true"]);
    assert!(bad.status.success(), "{bad:?}");
    let bad = links.run(&c, "srun", &["-N", "9", "true"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("srun: error: "), "{bad:?}");
}

/// What workflow libraries (dask-jobqueue, submitit, snakemake) do: submit
/// with `sbatch --parsable` and `-o logs/%x-%J.out`, poll `squeue -h -o %i
/// -j ID` until it prints nothing, then read the end from sacct — for a
/// job that completes, one that fails and one that is cancelled.
#[test]
fn workflow_libraries_poll_squeue_until_the_job_leaves_then_ask_sacct() {
    let c = Cluster::start("slurm-workflow", 1, 2);
    let links = Links { dir: c.dir.join("bin") };
    assert!(c.drover(&["install-links", links.dir.to_str().unwrap()]).status.success());
    std::fs::create_dir_all(c.dir.join("logs")).unwrap();
    let submit = |name: &str, cmd: &str| {
        links.ok(&c, "sbatch", &["--parsable", "-J", name, "-o", "logs/%x-%J.out", "--wrap", cmd]).trim().to_string()
    };
    let ok = submit("ok", "echo fine");
    let bad = submit("bad", "exit 3");
    let cancelled = submit("gone", "sleep 60");
    c.wait_for("the sleeper to start", Duration::from_secs(15), || {
        links.ok(&c, "squeue", &["-h", "-o", "%T", "-j", &cancelled]).trim() == "RUNNING"
    });
    links.ok(&c, "scancel", &[&cancelled]);
    for (id, state) in [(&ok, "COMPLETED"), (&bad, "FAILED"), (&cancelled, "CANCELLED")] {
        c.wait_for(&format!("job {id} to leave squeue"), Duration::from_secs(30), || {
            links.ok(&c, "squeue", &["-h", "-o", "%i", "-j", id]).trim().is_empty()
        });
        let got = links.ok(&c, "sacct", &["-j", id, "-o", "State", "-P", "-n", "-X"]);
        assert!(got.trim().starts_with(state), "job {id}: {got}");
        // Still listed when its state is asked for.
        assert_eq!(links.ok(&c, "squeue", &["-h", "-o", "%i", "-t", "all", "-j", id]).trim(), id.as_str());
    }
    // %J is the job id in a batch job's file name.
    assert_eq!(std::fs::read_to_string(c.dir.join(format!("logs/ok-{ok}.out"))).unwrap(), "fine\n");
}

/// Issue #20 item 6: a job that could not start says why, where its user
/// can read it: scontrol's Reason, `drover show job`, the events, sacct.
#[test]
fn a_job_that_could_not_start_says_why() {
    let c = Cluster::start("slurm-nostart", 1, 5);
    let links = Links { dir: c.dir.join("bin") };
    assert!(c.drover(&["install-links", links.dir.to_str().unwrap()]).status.success());
    // Its output "file" is a directory: the open fails on the node.
    let out_dir = c.dir.join("a-directory");
    std::fs::create_dir_all(&out_dir).unwrap();
    let id = links.ok(&c, "sbatch", &["--parsable", "-o", out_dir.to_str().unwrap(), "--wrap", "true"]);
    let id = id.trim();
    c.wait_for("the job to fail", Duration::from_secs(20), || {
        links.ok(&c, "squeue", &["-h", "-t", "all", "-o", "%T", "-j", id]).trim() == "FAILED"
    });
    let why = format!("cannot open the output file {}: Is a directory", out_dir.display());

    let shown = links.ok(&c, "scontrol", &["show", "job", id]);
    let reason = shown.split_whitespace().find_map(|kv| kv.strip_prefix("Reason=")).expect(&shown);
    assert!(reason.contains(&why.replace(' ', "_")), "{shown}");
    assert!(reason.starts_with("could_not_start_on_node1:"), "{shown}");
    assert!(shown.contains(&format!("StdOut={}", out_dir.display())), "{shown}");

    let mine = c.drover(&["show", "job", id]);
    let mine = String::from_utf8_lossy(&mine.stdout);
    assert!(mine.lines().any(|l| l.starts_with("reason=") && l.contains(&why)), "{mine}");

    let events = c.drover(&["events", "--kind", "JobFinished"]);
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(events.lines().any(|l| l.contains(&format!("finished {id} FAILED")) && l.contains(&why)), "{events}");

    c.wait_for("accounting to have the job", Duration::from_secs(20), || {
        links.ok(&c, "sacct", &["-j", id, "-X", "-n", "-P", "-o", "State,Reason"]).contains(&why)
    });
}

/// Issue #20 item 7: `scontrol show job` prints the job's own values, its
/// dependency among them (in `drover show job` too), and `sinfo -s` is one
/// line per partition.
#[test]
fn scontrol_shows_the_jobs_values_and_sinfo_s_one_line_per_partition() {
    let c = Cluster::start("slurm-values", 1, 6);
    let links = Links { dir: c.dir.join("bin") };
    assert!(c.drover(&["install-links", links.dir.to_str().unwrap()]).status.success());
    let first = links.ok(&c, "sbatch", &["--parsable", "-t", "5", "--wrap", "sleep 30"]);
    let first = first.trim();
    let args = ["--parsable", "-d", &format!("afterok:{first}"), "-n", "2", "-c", "2", "--mem-per-cpu", "100M"];
    let waiting = links.ok(
        &c,
        "sbatch",
        &[&args[..], &["--nice=5", "-i", "/dev/zero", "-o", "w-%j.txt", "--wrap", "true"]].concat(),
    );
    let waiting = waiting.trim();
    let shown = links.ok(&c, "scontrol", &["show", "job", waiting]);
    let lines: Vec<&str> = shown.lines().map(str::trim).collect();
    for want in [
        format!("JobState=PENDING Reason=Dependency Dependency=afterok:{first}(unfulfilled)"),
        "NumNodes=1 NumCPUs=4 NumTasks=2 CPUs/Task=2 ReqB:S:C:T=0:0:*:*".to_string(),
        "MinCPUsNode=2 MinMemoryCPU=100M MinTmpDiskNode=0".to_string(),
        "StdIn=/dev/zero".to_string(),
        format!("StdOut={}/w-{waiting}.txt", c.dir.display()),
    ] {
        assert!(lines.contains(&want.as_str()), "{want}:\n{shown}");
    }
    assert!(lines.iter().any(|l| l.starts_with("Priority=") && l.contains(" Nice=5 ")), "{shown}");
    let mine = c.drover(&["show", "job", waiting]);
    let mine = String::from_utf8_lossy(&mine.stdout);
    assert!(mine.lines().any(|l| l == format!("dependency=afterok:{first}(unfulfilled)")), "{mine}");

    c.wait_for("the first job to start", Duration::from_secs(15), || {
        links.ok(&c, "squeue", &["-h", "-o", "%T", "-j", first]).trim() == "RUNNING"
    });
    let summary = links.ok(&c, "sinfo", &["-s"]);
    assert_eq!(summary.lines().count(), 2, "a header and one partition:\n{summary}");
    assert!(summary.lines().nth(1).unwrap().split_whitespace().any(|w| w == "1/0/0/1"), "{summary}");
    links.ok(&c, "scancel", &[first, waiting]);
}

/// `sbatch --test-only` (issue #20 item 1): the controller checks the job
/// and says where and when it would start; no job is created, no id is
/// used and the replicated log does not grow.
#[test]
fn sbatch_test_only_says_when_a_job_would_start_and_submits_nothing() {
    let c = Cluster::start("slurm-testonly", 2, 3);
    let links = Links { dir: c.dir.join("bin") };
    assert!(c.drover(&["install-links", links.dir.to_str().unwrap()]).status.success());
    let log_index = || {
        let out = c.drover(&["controllers", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("controllers --json");
        v[0]["status"]["last_log_index"].as_u64().expect("last_log_index")
    };
    let queue = || links.ok(&c, "squeue", &["-h", "-t", "all", "-o", "%i %T"]);

    // An idle cluster: now, on one node; nothing written anywhere.
    let (index, listed) = (log_index(), queue());
    let out = links.run(&c, "sbatch", &["--test-only", "-n", "2", "--wrap", "touch made-by-test-only"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{said}");
    assert!(out.stdout.is_empty(), "no 'Submitted batch job' line: {:?}", out.stdout);
    let words: Vec<&str> = said.split_whitespace().collect();
    assert_eq!(words[..2], ["sbatch:", "Job"], "{said}");
    assert_eq!(words[3..6], ["to", "start", "at"], "{said}");
    assert_eq!(words[7..12], ["using", "2", "processors", "on", "nodes"], "{said}");
    assert!(["node1", "node2"].contains(&words[12]), "one node: {said}");
    assert_eq!(words[13..], ["in", "partition", "debug"], "{said}");
    let would_be: u64 = words[2].parse().expect(&said);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(log_index(), index, "the log grew");
    assert_eq!(queue(), listed, "the queue changed");
    assert!(!c.dir.join("made-by-test-only").exists(), "the job ran");

    // The next real job gets the id the estimate named.
    let id = links.ok(&c, "sbatch", &["--parsable", "-t", "10", "-N", "2", "--exclusive", "--wrap", "sleep 600"]);
    assert_eq!(id.trim().parse::<u64>().unwrap(), would_be);
    c.wait_for("the long job to start", Duration::from_secs(15), || {
        links.ok(&c, "squeue", &["-h", "-o", "%T", "-j", id.trim()]).trim() == "RUNNING"
    });
    // Every node is busy for ten minutes: that is when a new job could start.
    let out = c.drover(&["submit", "--test-only", "-n", "1", "--wrap", "true"]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success() && said.starts_with(&format!("Job {} to start at ", would_be + 1)), "{said}");
    let at = said.split_whitespace().nth(5).expect(&said);
    let secs = drover_core::time::parse_begin(at, 0).expect(at);
    let wait =
        secs as i64 - std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((500..=601).contains(&wait), "starts in {wait} s: {said}");

    // Bad requests are refused as a submission would be.
    let bad = links.run(&c, "sbatch", &["--test-only", "-n", "999", "--wrap", "true"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(err.starts_with("sbatch: error: ") && err.contains("not available"), "{err}");
}

/// Issue #20 item 2: a closed pipe ends srun as it ends any tool (SIGPIPE,
/// 141), and any end of srun or salloc — a closed pipe, `kill -9` — ends
/// its step's tasks and gives back an allocation it made, within seconds.
#[test]
fn srun_and_salloc_leave_nothing_behind_however_they_end() {
    let c = Cluster::start("slurm-ends", 2, 4);
    let links = Links { dir: c.dir.join("bin") };
    assert!(c.drover(&["install-links", links.dir.to_str().unwrap()]).status.success());
    let path = format!("{}:{}", links.dir.display(), std::env::var("PATH").unwrap_or_default());
    let shell = |script: &str| {
        Command::new("bash")
            .args(["-c", script])
            .current_dir(&c.dir)
            .env("DROVER_CONTROLLER", c.addrs())
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let live = || links.ok(&c, "squeue", &["-h", "-o", "%i %j %T"]);
    let steps = || links.ok(&c, "squeue", &["-h", "-s", "-o", "%i"]);
    let gone = |what: &str, name: &str| {
        c.wait_for(what, Duration::from_secs(15), || !live().contains(name));
    };

    // Both streams into a pipe that closes after one line.
    let out = shell("srun -n 2 -J pipe2 yes 2>&1 | head -1; echo \"srun=${PIPESTATUS[0]}\"");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text, "y\nsrun=141\n", "stderr: {}", String::from_utf8_lossy(&out.stderr));
    gone("the closed-pipe allocation to be given back", "pipe2");
    // Only stdout piped: srun stops, and says little.
    let out = shell("srun -n 1 -J pipe1 yes | head -1; echo \"srun=${PIPESTATUS[0]}\"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "y\nsrun=141\n");
    assert!(out.stderr.len() < 4096, "a flood on stderr: {} bytes", out.stderr.len());
    gone("the second closed-pipe allocation to be given back", "pipe1");

    let spawn = |cmd: &str, args: &[&str]| {
        Command::new(links.dir.join(cmd))
            .args(args)
            .current_dir(&c.dir)
            .env("DROVER_CONTROLLER", c.addrs())
            .env("PATH", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let kill9 = |child: &mut std::process::Child| {
        child.kill().unwrap();
        child.wait().unwrap();
    };
    // kill -9 of an srun that made its allocation: the leader cancels it.
    let mut srun = spawn("srun", &["-J", "killed-srun", "sleep", "300"]);
    c.wait_for("srun's allocation to run", Duration::from_secs(15), || live().contains("killed-srun RUNNING"));
    kill9(&mut srun);
    gone("the allocation of a killed srun to be cancelled", "killed-srun");
    // kill -9 of salloc, likewise.
    let mut salloc = spawn("salloc", &["-J", "killed-salloc", "sleep", "300"]);
    c.wait_for("salloc's allocation to run", Duration::from_secs(15), || live().contains("killed-salloc RUNNING"));
    kill9(&mut salloc);
    gone("the allocation of a killed salloc to be cancelled", "killed-salloc");

    // kill -9 of an srun step in a batch job: the step ends, the job runs on.
    let job = links.ok(&c, "sbatch", &["--parsable", "-J", "keeper", "--wrap", "sleep 300"]).trim().to_string();
    c.wait_for("the batch job to run", Duration::from_secs(15), || live().contains("keeper RUNNING"));
    let mut step = spawn("srun", &["--jobid", &job, "-n", "1", "sleep", "300"]);
    c.wait_for("the step to run", Duration::from_secs(15), || steps().contains(&format!("{job}.0")));
    kill9(&mut step);
    c.wait_for("the step of a killed srun to end", Duration::from_secs(15), || !steps().contains(&format!("{job}.0")));
    let state = links.ok(&c, "sacct", &["-j", &format!("{job}.0"), "-n", "-P", "-o", "State"]);
    assert_eq!(state.trim(), "CANCELLED", "the step: {state}");
    assert!(live().contains("keeper RUNNING"), "the job runs on: {}", live());

    // An srun gone after it made its step but before any agent started a
    // task (no agent can notice that): the leader ends the step itself.
    let token = String::from_utf8_lossy(&c.drover(&["token"]).stdout).trim().to_string();
    let (status, body) = common::request(
        &c.addrs(),
        "POST",
        &format!("/api/v1/jobs/{job}/steps"),
        Some(&format!("Bearer {token}")),
        r#"{"name": "orphan", "ntasks": 1, "client_held": true}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(steps().contains(&format!("{job}.1")), "{}", steps());
    c.wait_for("the step no srun holds to end", Duration::from_secs(15), || !steps().contains(&format!("{job}.1")));
    let state = links.ok(&c, "sacct", &["-j", &format!("{job}.1"), "-n", "-P", "-o", "State"]);
    assert_eq!(state.trim(), "CANCELLED", "the orphaned step: {state}");
    assert!(live().contains("keeper RUNNING"), "the job runs on: {}", live());
    links.ok(&c, "scancel", &[&job]);
}
