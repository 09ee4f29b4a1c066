//! Job steps: what `srun` launches inside an allocation, and how its tasks
//! are laid out over the allocated nodes. Pure, so the layout — which rank
//! runs where — is testable as data.

use crate::job::{Allocation, CpuTime, ExitStatus, JobState};
use crate::Time;
use serde::{Deserialize, Serialize};

pub type StepId = u32;

/// What `srun` asks for. Unset fields take the allocation's own shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRequest {
    /// The step's name (`srun -J`, else the command's name).
    pub name: String,
    /// `-n`: tasks in all.
    pub ntasks: Option<u32>,
    /// `-N`: how many of the allocation's nodes the step uses.
    pub nodes: Option<u32>,
    /// `--ntasks-per-node`.
    pub ntasks_per_node: Option<u32>,
    /// `-c`: CPUs each task needs; defaults to the job's.
    pub cpus_per_task: Option<u32>,
    /// `--overcommit`: more tasks than CPUs is allowed.
    #[serde(default)]
    pub overcommit: bool,
    /// Its srun keeps it attached to the leader (`…/steps/{step}/attach`)
    /// and the leader ends it once srun is gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_held: bool,
}

/// A step as the cluster tracks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStep {
    pub id: StepId,
    pub name: String,
    /// The nodes used (indices into the state's node table), in rank order.
    pub nodes: Vec<u32>,
    /// Tasks on each of `nodes`: node k runs the ranks after node k-1's.
    pub tasks: Vec<u32>,
    pub cpus_per_task: u32,
    pub start: Time,
    pub end: Option<Time>,
    /// RUNNING, then COMPLETED, FAILED or CANCELLED.
    pub state: JobState,
    /// The worst exit of its tasks.
    pub exit: Option<ExitStatus>,
    /// The job's run (restart count) it belongs to.
    #[serde(default)]
    pub attempt: u32,
    /// What its tasks used, node by node, as the agents measured it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used: Vec<NodeUse>,
    /// Ended by the leader once the srun that holds it is gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_held: bool,
}

/// What one node's tasks of a step used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUse {
    /// Index into the state's node table.
    pub node: u32,
    /// The largest resident set of one task (sacct's MaxRSS).
    pub max_rss_kb: u64,
    pub cpu: CpuTime,
}

impl JobStep {
    pub fn ntasks(&self) -> u32 {
        self.tasks.iter().sum()
    }

    /// The largest task's peak memory on any node, once a node reported.
    pub fn max_rss_kb(&self) -> Option<u64> {
        self.used.iter().map(|u| u.max_rss_kb).max()
    }

    /// All its tasks' CPU time, once a node reported.
    pub fn cpu_time(&self) -> Option<CpuTime> {
        self.used.iter().map(|u| u.cpu).reduce(|a, b| a + b)
    }

    /// Records one node's measurement; the same node again replaces its own.
    pub fn record_use(&mut self, u: NodeUse) {
        match self.used.iter_mut().find(|x| x.node == u.node) {
            Some(x) => *x = u,
            None => self.used.push(u),
        }
    }

    /// The ranks that run on the `k`-th node of the step.
    pub fn ranks_on(&self, k: usize) -> std::ops::Range<u32> {
        let first: u32 = self.tasks[..k].iter().sum();
        first..first + self.tasks[k]
    }
}

/// Lays a step out over an allocation: which nodes, and how many tasks on
/// each (block distribution, Slurm's default: ranks fill a node before the
/// next). Returns (positions in `alloc.shares`, tasks on each), or why the
/// allocation cannot hold the step.
pub fn layout(alloc: &Allocation, job_cpus_per_task: u32, req: &StepRequest) -> Result<(Vec<usize>, Vec<u32>), String> {
    let have = alloc.shares.len() as u32;
    if [req.ntasks, req.nodes, req.ntasks_per_node, req.cpus_per_task].contains(&Some(0)) {
        return Err("tasks, nodes and CPUs per task must be at least 1".into());
    }
    let max = crate::limits::MAX_TASKS;
    if [req.ntasks, req.ntasks_per_node].iter().flatten().any(|&n| n > max) {
        return Err(format!("a step may have at most {max} tasks"));
    }
    if req.cpus_per_task.is_some_and(|c| c > crate::limits::MAX_CPUS_PER_TASK) {
        return Err(format!("CPUs per task must be at most {}", crate::limits::MAX_CPUS_PER_TASK));
    }
    if let Some(n) = req.nodes.filter(|&n| n > have) {
        return Err(format!("the step asks for {n} nodes, the job has {have}"));
    }
    let cpt = req.cpus_per_task.unwrap_or(job_cpus_per_task).max(1);
    // Nothing asked: the job's own tasks, where the job has them.
    if req.ntasks.is_none() && req.nodes.is_none() && req.ntasks_per_node.is_none() {
        let tasks: Vec<u32> = alloc.shares.iter().map(|s| s.tasks.max(1)).collect();
        return Ok(((0..alloc.shares.len()).collect(), tasks));
    }
    let nodes = match (req.nodes, req.ntasks, req.ntasks_per_node) {
        (Some(n), _, _) => n,
        (None, Some(t), Some(per)) => t.div_ceil(per).min(have),
        (None, Some(t), None) => t.min(have),
        (None, None, _) => have,
    };
    let ntasks = match (req.ntasks, req.ntasks_per_node) {
        (Some(t), _) => t,
        (None, Some(per)) => per.saturating_mul(nodes),
        (None, None) => nodes,
    };
    if ntasks < nodes {
        return Err(format!("{ntasks} tasks cannot cover {nodes} nodes; ask for fewer nodes (-N) or more tasks (-n)"));
    }
    let capacity = |k: usize| -> u32 {
        if req.overcommit {
            // As many as needed, spread evenly.
            ntasks.div_ceil(nodes)
        } else {
            alloc.shares[k].res.cpus / cpt
        }
    };
    let mut tasks = vec![0u32; nodes as usize];
    let mut left = ntasks;
    match req.ntasks_per_node {
        Some(per) => {
            for (k, t) in tasks.iter_mut().enumerate() {
                *t = per.min(left).min(capacity(k));
                left -= *t;
            }
        }
        None => {
            // One on each node first, so that every node of the step works…
            for (k, t) in tasks.iter_mut().enumerate() {
                if capacity(k) > 0 {
                    *t = 1;
                    left -= 1;
                }
            }
            // …then fill them in order.
            for (k, t) in tasks.iter_mut().enumerate() {
                let more = capacity(k).saturating_sub(*t).min(left);
                *t += more;
                left -= more;
            }
        }
    }
    if left > 0 || tasks.contains(&0) {
        let cpus: u32 = alloc.shares[..nodes as usize].iter().map(|s| s.res.cpus).sum();
        return Err(format!(
            "{ntasks} tasks of {cpt} CPU(s) need {} CPUs on {nodes} node(s), the job has {cpus} there; \
             ask for fewer tasks, or --overcommit",
            u64::from(ntasks) * u64::from(cpt)
        ));
    }
    Ok(((0..nodes as usize).collect(), tasks))
}

/// What `scontrol update JobId=…` may change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUpdate {
    /// Seconds; `Some(None)` is unlimited.
    pub time_limit: Option<Option<u64>>,
    pub partition: Option<String>,
    pub name: Option<String>,
    pub nice: Option<i32>,
    pub comment: Option<String>,
}

impl JobUpdate {
    pub fn is_empty(&self) -> bool {
        *self == JobUpdate::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::NodeShare;
    use crate::Resources;

    fn alloc(cpus: &[u32], tasks: &[u32]) -> Allocation {
        Allocation {
            shares: cpus
                .iter()
                .zip(tasks)
                .enumerate()
                .map(|(i, (&c, &t))| NodeShare { node: i as u32, res: Resources::new(c, 0, 0), tasks: t })
                .collect(),
            time_limit: None,
            partition: "p".into(),
        }
    }

    fn req(n: Option<u32>, nodes: Option<u32>, per: Option<u32>) -> StepRequest {
        StepRequest { ntasks: n, nodes, ntasks_per_node: per, ..StepRequest::default() }
    }

    #[test]
    fn the_jobs_own_shape_by_default() {
        let a = alloc(&[4, 2], &[3, 2]);
        assert_eq!(layout(&a, 1, &StepRequest::default()), Ok((vec![0, 1], vec![3, 2])));
    }

    #[test]
    fn block_distribution() {
        let a = alloc(&[2, 2, 2], &[2, 2, 2]);
        assert_eq!(layout(&a, 1, &req(Some(4), None, None)), Ok((vec![0, 1, 2], vec![2, 1, 1])));
        assert_eq!(layout(&a, 1, &req(Some(4), Some(2), None)), Ok((vec![0, 1], vec![2, 2])));
        assert_eq!(layout(&a, 1, &req(Some(1), None, None)), Ok((vec![0], vec![1])));
        assert_eq!(layout(&a, 1, &req(None, Some(2), None)), Ok((vec![0, 1], vec![1, 1])));
        assert_eq!(layout(&a, 1, &req(None, None, Some(2))), Ok((vec![0, 1, 2], vec![2, 2, 2])));
        assert_eq!(layout(&a, 1, &req(Some(3), None, Some(1))), Ok((vec![0, 1, 2], vec![1, 1, 1])));
    }

    #[test]
    fn cpus_per_task_limit_the_ranks_per_node() {
        let a = alloc(&[4, 4], &[1, 1]);
        let r = StepRequest { ntasks: Some(4), cpus_per_task: Some(2), ..StepRequest::default() };
        assert_eq!(layout(&a, 1, &r), Ok((vec![0, 1], vec![2, 2])));
        let r = StepRequest { ntasks: Some(5), cpus_per_task: Some(2), ..StepRequest::default() };
        assert!(layout(&a, 1, &r).unwrap_err().contains("need 10 CPUs on 2 node(s), the job has 8"));
        let r = StepRequest { overcommit: true, ..r };
        assert_eq!(layout(&a, 1, &r), Ok((vec![0, 1], vec![3, 2])));
    }

    #[test]
    fn impossible_steps_say_why() {
        let a = alloc(&[2, 2], &[1, 1]);
        assert!(layout(&a, 1, &req(None, Some(3), None)).unwrap_err().contains("asks for 3 nodes, the job has 2"));
        assert!(layout(&a, 1, &req(Some(1), Some(2), None)).unwrap_err().contains("1 tasks cannot cover 2 nodes"));
        assert!(layout(&a, 1, &req(Some(0), None, None)).unwrap_err().contains("at least 1"));
    }

    #[test]
    fn ranks_follow_the_node_order() {
        let s = JobStep {
            id: 0,
            name: "x".into(),
            nodes: vec![3, 1],
            tasks: vec![2, 3],
            cpus_per_task: 1,
            start: 0,
            end: None,
            state: JobState::Running,
            exit: None,
            attempt: 0,
            used: Vec::new(),
            client_held: false,
        };
        assert_eq!(s.ranks_on(0), 0..2);
        assert_eq!(s.ranks_on(1), 2..5);
        assert_eq!(s.ntasks(), 5);
    }
}
