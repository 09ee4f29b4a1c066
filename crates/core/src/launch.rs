//! Launch orders: everything an agent needs to start one job on one node,
//! resolved from the cluster state — the Slurm environment, the output file
//! paths, the limits. Pure, so what a job sees is testable without running it.

use crate::hostlist;
use crate::job::{JobId, MemRequest, OpenMode, SignalSpec};
use crate::state::State;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Start (or re-attach to) one job's batch step on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchOrder {
    pub job_id: JobId,
    /// `1234` or `1000_7`.
    pub display_id: String,
    /// The allocation epoch; reports must carry it back.
    pub attempt: u32,
    pub node_name: String,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub script: Arc<str>,
    pub work_dir: String,
    /// Absolute paths, patterns already expanded.
    pub stdout: String,
    pub stderr: String,
    pub stdin: Option<String>,
    pub open_mode: OpenMode,
    /// The complete environment of the batch step.
    pub env: Vec<(String, String)>,
    /// Seconds; `None` for no limit.
    pub time_limit: Option<u64>,
    /// Memory limit on this node in megabytes; `None` for none.
    pub mem_limit_mb: Option<u64>,
    /// CPUs allocated on this node.
    pub cpus: u32,
    pub signal: Option<SignalSpec>,
    /// The submitter's umask; `None`: 022.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
}

pub use crate::pattern::{expand_pattern, PatternInput};

fn absolute(dir: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", dir.trim_end_matches('/'))
    }
}

/// Where a job's stdout, stderr and stdin are: patterns expanded, relative
/// paths resolved against the working directory.
pub fn output_paths(j: &crate::job::Job, first_node: &str) -> (String, String, Option<String>) {
    let spec = &j.spec;
    let pattern = PatternInput {
        job_id: j.id,
        array_job_id: j.array.map(|t| t.array_id),
        array_task: j.array.map(|t| t.task),
        name: &spec.name,
        user: &spec.user,
        first_node,
        step: None,
        task: 0,
        node_index: 0,
    };
    let default_out = if j.array.is_some() { "slurm-%A_%a.out" } else { "slurm-%j.out" };
    let stdout = absolute(&spec.work_dir, &expand_pattern(spec.stdout.as_deref().unwrap_or(default_out), &pattern));
    let stderr = match &spec.stderr {
        Some(e) => absolute(&spec.work_dir, &expand_pattern(e, &pattern)),
        None => stdout.clone(),
    };
    let stdin = spec.stdin.as_ref().map(|i| absolute(&spec.work_dir, &expand_pattern(i, &pattern)));
    (stdout, stderr, stdin)
}

impl LaunchOrder {
    /// The order for `job`'s batch step on node `node` (an index into the
    /// state's node table). `None` if the job is not running there.
    pub fn for_job(state: &State, job: JobId, node: u32) -> Option<LaunchOrder> {
        let j = state.job(job)?;
        let alloc = j.alloc.as_ref()?;
        let node_id = alloc.shares.iter().position(|s| s.node == node)?;
        let share = &alloc.shares[node_id];
        let spec = &j.spec;
        let nodes = state.nodes();
        let names: Vec<&str> = alloc.shares.iter().map(|s| nodes[s.node as usize].name.as_str()).collect();
        let node_name = nodes[node as usize].name.clone();
        let nodelist = hostlist::compress(&names);
        let array = j.array.and_then(|t| state.array(t.array_id).map(|a| (t, a)));
        let (stdout, stderr, stdin) = output_paths(j, names.first().copied().unwrap_or_default());
        let mut env: Vec<(String, String)> = spec.environment.to_vec();
        let mut set = |k: &str, v: String| {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v));
        };
        let tasks_per_node: Vec<String> = alloc.shares.iter().map(|s| s.tasks.to_string()).collect();
        let cpus_per_node: Vec<String> = alloc.shares.iter().map(|s| s.res.cpus.to_string()).collect();
        let mut vars: Vec<(&str, String)> = vec![
            ("JOB_ID", j.id.to_string()),
            ("JOBID", j.id.to_string()),
            ("JOB_NAME", spec.name.clone()),
            ("JOB_NODELIST", nodelist.clone()),
            ("NODELIST", nodelist),
            ("JOB_NUM_NODES", alloc.shares.len().to_string()),
            ("NNODES", alloc.shares.len().to_string()),
            ("NTASKS", spec.ntasks.to_string()),
            ("NPROCS", spec.ntasks.to_string()),
            ("CPUS_PER_TASK", spec.cpus_per_task.to_string()),
            ("CPUS_ON_NODE", share.res.cpus.to_string()),
            ("JOB_CPUS_PER_NODE", cpus_per_node.join(",")),
            ("TASKS_PER_NODE", tasks_per_node.join(",")),
            ("MEM_PER_NODE", share.res.mem_mb.to_string()),
            ("SUBMIT_DIR", spec.work_dir.clone()),
            ("SUBMIT_HOST", spec.submit_host.clone()),
            ("JOB_PARTITION", alloc.partition.clone()),
            ("JOB_USER", spec.user.clone()),
            ("JOB_UID", spec.uid.to_string()),
            ("JOB_GID", spec.gid.to_string()),
            ("PROCID", "0".into()),
            ("LOCALID", "0".into()),
            ("NODEID", node_id.to_string()),
            ("RESTART_COUNT", j.restart_count.to_string()),
            ("CLUSTER_NAME", state.config().cluster_name.clone()),
        ];
        if let MemRequest::PerCpu(m) = spec.mem {
            vars.push(("MEM_PER_CPU", m.to_string()));
        }
        if let Some(a) = &spec.account {
            vars.push(("JOB_ACCOUNT", a.clone()));
        }
        if spec.gpus_per_node > 0 {
            vars.push(("GPUS_ON_NODE", spec.gpus_per_node.to_string()));
        }
        if let Some((t, a)) = array {
            let all = a.spec.array.as_ref().map(|s| &s.tasks);
            vars.push(("ARRAY_JOB_ID", t.array_id.to_string()));
            vars.push(("ARRAY_TASK_ID", t.task.to_string()));
            vars.push(("ARRAY_TASK_COUNT", a.total.to_string()));
            vars.push(("ARRAY_TASK_MIN", all.and_then(|s| s.first()).unwrap_or(t.task).to_string()));
            vars.push(("ARRAY_TASK_MAX", all.and_then(|s| s.last()).unwrap_or(t.task).to_string()));
        }
        for (k, v) in vars {
            set(&format!("DROVER_{k}"), v.clone());
            set(&format!("SLURM_{k}"), v);
        }
        set("SLURMD_NODENAME", node_name.clone());
        set("ENVIRONMENT", "BATCH".into());
        // srun reads it: its own output files open the way the job's did.
        set("SLURM_OPEN_MODE", if spec.open_mode == OpenMode::Append { "a" } else { "t" }.into());
        if let Some(m) = spec.umask {
            set("SLURM_UMASK", format!("{m:04o}"));
        }

        Some(LaunchOrder {
            job_id: j.id,
            display_id: j.display_id(),
            attempt: j.restart_count,
            node_name,
            user: spec.user.clone(),
            uid: spec.uid,
            gid: spec.gid,
            script: spec.script.clone(),
            work_dir: spec.work_dir.clone(),
            stdout,
            stderr,
            stdin,
            open_mode: spec.open_mode,
            env,
            time_limit: alloc.time_limit,
            mem_limit_mb: (share.res.mem_mb > 0).then_some(share.res.mem_mb),
            cpus: share.res.cpus,
            signal: spec.signal.clone(),
            umask: spec.umask,
        })
    }

    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// One node's part of a step (`srun`): which ranks it runs, as whom, with
/// which Slurm variables. The controller signs it with the cluster key and
/// hands it to `srun`, which takes it to the node's agent; the agent runs
/// nothing without a valid one (Slurm's job credential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepGrant {
    pub job_id: JobId,
    /// `1234` or `1000_7`.
    pub display_id: String,
    pub attempt: u32,
    pub step: crate::step::StepId,
    pub node_name: String,
    /// This node's position in the step (SLURM_NODEID).
    pub node_id: u32,
    /// The first rank on this node; ranks run `first_rank..first_rank + tasks`.
    pub first_rank: u32,
    pub tasks: u32,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// CPUs the job holds on this node.
    pub cpus: u32,
    /// The variables every task of the step sees (per-task ones come from
    /// [`StepGrant::task_env`]).
    pub env: Vec<(String, String)>,
    /// Epoch milliseconds after which the agent refuses it.
    pub expires_ms: u64,
    /// The submitter's umask; `None`: 022.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
}

/// How long `srun` has to take a grant to its nodes.
pub const GRANT_TTL_MS: u64 = 60_000;

impl StepGrant {
    /// The grants of step `step` of `job`, one per node. `None` if the job
    /// does not run or has no such step.
    pub fn for_step(state: &State, job: JobId, step: crate::step::StepId, now_ms: u64) -> Option<Vec<StepGrant>> {
        let j = state.job(job)?;
        let alloc = j.alloc.as_ref()?;
        let s = j.steps.iter().find(|s| s.id == step)?;
        let nodes = state.nodes();
        let job_names: Vec<&str> = alloc.shares.iter().map(|sh| nodes[sh.node as usize].name.as_str()).collect();
        let step_names: Vec<&str> = s.nodes.iter().map(|&n| nodes[n as usize].name.as_str()).collect();
        let step_nodelist = hostlist::compress(&step_names);
        let tasks_per_node: Vec<String> = s.tasks.iter().map(u32::to_string).collect();
        let cpus_per_node: Vec<String> = alloc.shares.iter().map(|sh| sh.res.cpus.to_string()).collect();
        let spec = &j.spec;
        let mut vars: Vec<(&str, String)> = vec![
            ("JOB_ID", j.id.to_string()),
            ("JOBID", j.id.to_string()),
            ("JOB_NAME", spec.name.clone()),
            ("JOB_NODELIST", hostlist::compress(&job_names)),
            ("JOB_NUM_NODES", alloc.shares.len().to_string()),
            ("JOB_CPUS_PER_NODE", cpus_per_node.join(",")),
            ("JOB_PARTITION", alloc.partition.clone()),
            ("JOB_USER", spec.user.clone()),
            ("JOB_UID", spec.uid.to_string()),
            ("JOB_GID", spec.gid.to_string()),
            ("SUBMIT_DIR", spec.work_dir.clone()),
            ("SUBMIT_HOST", spec.submit_host.clone()),
            ("CLUSTER_NAME", state.config().cluster_name.clone()),
            ("RESTART_COUNT", j.restart_count.to_string()),
            ("STEP_ID", s.id.to_string()),
            ("STEPID", s.id.to_string()),
            ("STEP_NODELIST", step_nodelist.clone()),
            ("NODELIST", step_nodelist),
            ("STEP_NUM_NODES", s.nodes.len().to_string()),
            ("NNODES", s.nodes.len().to_string()),
            ("STEP_NUM_TASKS", s.ntasks().to_string()),
            ("NTASKS", s.ntasks().to_string()),
            ("NPROCS", s.ntasks().to_string()),
            ("STEP_TASKS_PER_NODE", tasks_per_node.join(",")),
            ("TASKS_PER_NODE", tasks_per_node.join(",")),
            ("CPUS_PER_TASK", s.cpus_per_task.to_string()),
            ("DISTRIBUTION", "block".into()),
        ];
        if let Some(t) = j.array {
            vars.push(("ARRAY_JOB_ID", t.array_id.to_string()));
            vars.push(("ARRAY_TASK_ID", t.task.to_string()));
        }
        if let Some(a) = &spec.account {
            vars.push(("JOB_ACCOUNT", a.clone()));
        }
        let mut env = Vec::with_capacity(vars.len() * 2);
        for (k, v) in vars {
            env.push((format!("SLURM_{k}"), v.clone()));
            env.push((format!("DROVER_{k}"), v));
        }
        let grants = s
            .nodes
            .iter()
            .enumerate()
            .map(|(k, &node)| {
                let share = alloc.shares.iter().find(|sh| sh.node == node);
                StepGrant {
                    job_id: j.id,
                    display_id: j.display_id(),
                    attempt: j.restart_count,
                    step: s.id,
                    node_name: nodes[node as usize].name.clone(),
                    node_id: k as u32,
                    first_rank: s.ranks_on(k).start,
                    tasks: s.tasks[k],
                    user: spec.user.clone(),
                    uid: spec.uid,
                    gid: spec.gid,
                    cpus: share.map_or(0, |sh| sh.res.cpus),
                    env: env.clone(),
                    expires_ms: now_ms.saturating_add(GRANT_TTL_MS),
                    umask: spec.umask,
                }
            })
            .collect();
        Some(grants)
    }

    /// What task `local` (0-based on this node) sees besides [`StepGrant::env`].
    pub fn task_env(&self, local: u32) -> Vec<(String, String)> {
        let ranks: Vec<String> = (self.first_rank..self.first_rank + self.tasks).map(|r| r.to_string()).collect();
        let mut env = Vec::new();
        for (k, v) in [
            ("PROCID", (self.first_rank + local).to_string()),
            ("LOCALID", local.to_string()),
            ("NODEID", self.node_id.to_string()),
            ("CPUS_ON_NODE", self.cpus.to_string()),
            ("GTIDS", ranks.join(",")),
        ] {
            env.push((format!("SLURM_{k}"), v.clone()));
            env.push((format!("DROVER_{k}"), v));
        }
        env.push(("SLURMD_NODENAME".into(), self.node_name.clone()));
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{SubmitContext, SubmitRequest};
    use crate::partition::PartitionSpec;
    use crate::sched::{self, SchedConfig};
    use crate::{Command, Resources};

    fn running(args: &[&str]) -> (State, JobId) {
        let mut s = State::default();
        s.apply(Command::SetPartition(PartitionSpec { is_default: true, ..PartitionSpec::new("debug", "ALL") }))
            .unwrap();
        for n in ["n1", "n2"] {
            s.apply(Command::RegisterNode {
                name: n.into(),
                addr: String::new(),
                total: Resources::new(4, 8192, 0),
                features: vec![],
                known_steps: vec![],
                now: 0,
            })
            .unwrap();
        }
        let mut r = SubmitRequest::default();
        r.apply_args(args).unwrap();
        let ctx = SubmitContext {
            user: "alice".into(),
            uid: 1001,
            gid: 1001,
            cwd: "/home/alice".into(),
            host: "login1".into(),
            env: vec![("PATH".into(), "/usr/bin".into()), ("SLURM_JOB_ID".into(), "stale".into())],
            default_name: "job.sh".into(),
            ..Default::default()
        };
        let spec = r.build(&ctx, "#!/bin/sh\n").unwrap();
        s.apply(Command::Submit { spec: Arc::new(spec), now: 0 }).unwrap();
        let plan = sched::schedule(&s, 0, &SchedConfig::default());
        let ev = s.apply(Command::Allocate { plan, now: 0, term: 0 }).unwrap();
        let id = ev
            .iter()
            .find_map(|e| match e {
                crate::Event::JobStarted { job, .. } => Some(*job),
                _ => None,
            })
            .expect("started");
        (s, id)
    }

    #[test]
    fn slurm_environment() {
        let (s, id) = running(&["-N", "2", "-n", "4", "-c", "2", "-J", "sim", "-t", "5"]);
        let o = LaunchOrder::for_job(&s, id, 1).unwrap();
        let v = |k| o.env_var(k).unwrap_or("<unset>").to_string();
        assert_eq!(v("SLURM_JOB_ID"), id.to_string(), "the job's id replaces a stale one from the submit shell");
        assert_eq!(v("SLURM_JOB_NODELIST"), "n[1-2]");
        assert_eq!(v("SLURM_NNODES"), "2");
        assert_eq!(v("SLURM_NTASKS"), "4");
        assert_eq!(v("SLURM_CPUS_PER_TASK"), "2");
        assert_eq!(v("SLURM_CPUS_ON_NODE"), "4");
        assert_eq!(v("SLURM_MEM_PER_NODE"), "8192");
        assert_eq!(v("SLURM_NODEID"), "1");
        assert_eq!(v("SLURM_JOB_PARTITION"), "debug");
        assert_eq!(v("SLURM_SUBMIT_DIR"), "/home/alice");
        assert_eq!(v("SLURM_SUBMIT_HOST"), "login1");
        assert_eq!(v("SLURM_CLUSTER_NAME"), "drover");
        assert_eq!(v("DROVER_JOB_NAME"), "sim");
        assert_eq!(v("PATH"), "/usr/bin");
        assert_eq!(o.stdout, format!("/home/alice/slurm-{id}.out"));
        assert_eq!(o.stderr, o.stdout);
        assert_eq!(o.time_limit, Some(300));
        assert_eq!(o.mem_limit_mb, Some(8192));
        assert!(LaunchOrder::for_job(&s, id, 7).is_none());
    }

    #[test]
    fn array_environment_and_files() {
        let (s, id) = running(&["-a", "3-9:3", "-o", "out/%x_%A_%a.txt", "-e", "/tmp/%j.err"]);
        let o = LaunchOrder::for_job(&s, id, 0).unwrap();
        assert_eq!(o.env_var("SLURM_ARRAY_JOB_ID"), Some("1"));
        assert_eq!(o.env_var("SLURM_ARRAY_TASK_ID"), Some("3"));
        assert_eq!(o.env_var("SLURM_ARRAY_TASK_COUNT"), Some("3"));
        assert_eq!(o.env_var("SLURM_ARRAY_TASK_MIN"), Some("3"));
        assert_eq!(o.env_var("SLURM_ARRAY_TASK_MAX"), Some("9"));
        assert_eq!(o.display_id, "1_3");
        assert_eq!(o.stdout, "/home/alice/out/job.sh_1_3.txt");
        assert_eq!(o.stderr, format!("/tmp/{id}.err"));
    }

    #[test]
    fn step_grants_give_each_rank_its_place() {
        let (mut s, id) = running(&["-N", "2", "-n", "4", "-J", "mpi"]);
        let request = crate::step::StepRequest { ntasks: Some(5), overcommit: true, ..Default::default() };
        let by = crate::state::Requester::user(1001);
        s.apply(Command::CreateStep { job: crate::job::JobRef::job(id), request, by, now: 5 }).unwrap();
        let grants = StepGrant::for_step(&s, id, 0, 1000).unwrap();
        assert_eq!(grants.len(), 2);
        let (a, b) = (&grants[0], &grants[1]);
        assert_eq!((a.node_name.as_str(), a.node_id, a.first_rank, a.tasks), ("n1", 0, 0, 3));
        assert_eq!((b.node_name.as_str(), b.node_id, b.first_rank, b.tasks), ("n2", 1, 3, 2));
        assert_eq!(a.expires_ms, 1000 + GRANT_TTL_MS);
        let var = |env: &[(String, String)], k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(var(&a.env, "SLURM_STEP_ID").as_deref(), Some("0"));
        assert_eq!(var(&a.env, "SLURM_NTASKS").as_deref(), Some("5"));
        assert_eq!(var(&a.env, "SLURM_STEP_TASKS_PER_NODE").as_deref(), Some("3,2"));
        assert_eq!(var(&a.env, "SLURM_JOB_NODELIST").as_deref(), Some("n[1-2]"));
        assert_eq!(var(&a.env, "DROVER_STEP_NUM_NODES").as_deref(), Some("2"));
        let t = b.task_env(1);
        assert_eq!(var(&t, "SLURM_PROCID").as_deref(), Some("4"));
        assert_eq!(var(&t, "SLURM_LOCALID").as_deref(), Some("1"));
        assert_eq!(var(&t, "SLURM_NODEID").as_deref(), Some("1"));
        assert_eq!(var(&t, "SLURM_GTIDS").as_deref(), Some("3,4"));
        assert_eq!(var(&t, "SLURMD_NODENAME").as_deref(), Some("n2"));
        assert!(StepGrant::for_step(&s, id, 1, 0).is_none());
    }
}
