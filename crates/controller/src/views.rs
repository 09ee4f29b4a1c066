//! How the controller shows its state to clients: the projections of
//! `drover_core::State` into the wire views of `drover-proto` (jobs, array
//! remainders, steps, nodes, partitions). They live here, beside their
//! only user, so that the wire crate knows nothing of the state.

use drover_core::job::{ExitStatus, Job, JobSpec};
use drover_core::state::ArrayJob;
use drover_core::step::JobStep;
use drover_core::{hostlist, launch, JobState, State};
use drover_proto::{JobView, NodeView, PartitionView, StepView};

/// A partition and the nodes registered in it.
pub fn partition_view(state: &State, p: &drover_core::partition::Partition) -> PartitionView {
    PartitionView {
        name: p.spec.name.clone(),
        is_default: p.spec.is_default,
        up: p.spec.up,
        max_time: p.spec.max_time,
        default_time: p.spec.default_time,
        nodes: p.members.iter().map(|i| state.nodes()[*i as usize].name.clone()).collect(),
    }
}

/// A step of a job's current run.
pub fn step_view(state: &State, j: &Job, s: &JobStep) -> StepView {
    let names: Vec<&str> = s.nodes.iter().map(|&n| state.nodes()[n as usize].name.as_str()).collect();
    StepView {
        id: format!("{}.{}", j.display_id(), s.id),
        step: s.id,
        name: s.name.clone(),
        state: s.state.name().into(),
        nodes: hostlist::compress(&names),
        num_nodes: s.nodes.len() as u32,
        ntasks: s.ntasks(),
        num_cpus: u64::from(s.ntasks()) * u64::from(s.cpus_per_task),
        start_time: s.start,
        end_time: s.end,
        exit_code: s.exit.map(|e| e.to_string()),
        max_rss_kb: s.max_rss_kb(),
        cpu: s.cpu_time(),
    }
}

/// The full view, with output file paths (for `GET /jobs/{id}`).
pub fn job_view(state: &State, j: &Job) -> JobView {
    let mut v = job_summary(state, j);
    let first = j.alloc.as_ref().and_then(|a| a.shares.first()).map(|s| state.nodes()[s.node as usize].name.as_str());
    (v.stdout, v.stderr, _) = launch::output_paths(j, first.unwrap_or_default());
    v.stdin = j.spec.stdin.clone().unwrap_or_else(|| "/dev/null".into());
    // What it still waits for: worked out here, not in listings (a
    // singleton looks at every other job).
    if j.state == drover_core::JobState::Pending {
        v.dependency = state.dependency_text(&j.spec, j.id, j.array);
    }
    v
}

/// The view for listings: everything but the output paths (pattern
/// expansion per job), which stay empty.
pub fn job_summary(state: &State, j: &Job) -> JobView {
    let part = state.partition_for(&j.spec).map(|p| p.name().to_string()).unwrap_or_default();
    let (nodes, num_nodes, cpus) = match &j.alloc {
        Some(a) => {
            let names: Vec<&str> = a.shares.iter().map(|s| state.nodes()[s.node as usize].name.as_str()).collect();
            (hostlist::compress(&names), a.shares.len() as u32, u64::from(a.total().cpus))
        }
        None => (String::new(), j.spec.nodes_min, j.spec.total_cpus()),
    };
    JobView {
        id: j.display_id(),
        job_id: j.id,
        array_job_id: j.array.map(|a| a.array_id),
        array_task: j.array.map(|a| a.task.to_string()),
        name: j.spec.name.clone(),
        user: j.spec.user.clone(),
        uid: j.spec.uid,
        gid: j.spec.gid,
        account: j.spec.account.clone(),
        partition: j.alloc.as_ref().map_or(part, |a| a.partition.clone()),
        state: j.state.name().into(),
        state_code: j.state.code().into(),
        reason: match (&j.failure, j.state) {
            (_, drover_core::JobState::Pending) => j.reason.name().into(),
            (Some(why), s) if s.is_terminal() => why.clone(),
            _ => "None".into(),
        },
        nodes,
        num_nodes,
        num_cpus: cpus,
        time_limit: j.alloc.as_ref().map_or(j.spec.time_limit, |a| a.time_limit),
        submit_time: j.submit_time,
        start_time: j.start_time,
        end_time: j.end_time,
        exit_code: j.exit.map(|e: ExitStatus| e.to_string()),
        restart_count: j.restart_count,
        work_dir: j.spec.work_dir.clone(),
        stdout: String::new(),
        stderr: String::new(),
        terminal: j.state.is_terminal(),
        mem_mb: match &j.alloc {
            Some(a) => Some(a.total().mem_mb),
            None => requested_mem_mb(&j.spec),
        },
        max_rss_kb: j.max_rss_kb,
        cpu: j.cpu_time,
        derived_exit_code: j.derived_exit(j.restart_count).map(|e| e.to_string()),
        steps: j.steps.iter().filter(|s| s.attempt == j.restart_count).map(|s| step_view(state, j, s)).collect(),
        ..asked(&j.spec)
    }
}

/// [`array_view`] with what its dependency still waits for.
pub fn array_view_full(state: &State, a: &ArrayJob) -> JobView {
    let mut v = array_view(state, a);
    v.dependency = state.dependency_text(&a.spec, a.id, None);
    v
}

/// The not-yet-started tasks of an array, as one line (`1000_[5-99]`).
pub fn array_view(state: &State, a: &ArrayJob) -> JobView {
    let part = state.partition_for(&a.spec).map(|p| p.name().to_string()).unwrap_or_default();
    // Once no task waits, the array's record says how its tasks are
    // doing: running while any runs, then COMPLETED if all did, else
    // the state of the first that did not (CANCELLED if only tasks that
    // never started were cancelled).
    let (st, reason, terminal) = if !a.pending.is_empty() {
        (JobState::Pending, a.reason.name(), false)
    } else if a.active > 0 {
        (JobState::Running, "None", false)
    } else if a.ended_ok == a.total {
        (JobState::Completed, "None", true)
    } else {
        let first_bad =
            a.split_ids.iter().filter_map(|id| state.job(*id)).map(|j| j.state).find(|s| *s != JobState::Completed);
        (first_bad.unwrap_or(JobState::Cancelled), "None", true)
    };
    let (id, tasks) = pending_tasks_id(a);
    JobView {
        id,
        job_id: a.id,
        array_job_id: Some(a.id),
        array_task: Some(tasks),
        name: a.spec.name.clone(),
        user: a.spec.user.clone(),
        uid: a.spec.uid,
        gid: a.spec.gid,
        account: a.spec.account.clone(),
        partition: part,
        state: st.name().into(),
        state_code: st.code().into(),
        reason: reason.into(),
        nodes: String::new(),
        num_nodes: a.spec.nodes_min,
        num_cpus: a.spec.total_cpus(),
        time_limit: a.spec.time_limit,
        submit_time: a.submit_time,
        start_time: None,
        end_time: None,
        exit_code: None,
        restart_count: 0,
        work_dir: a.spec.work_dir.clone(),
        stdout: String::new(),
        stderr: String::new(),
        terminal,
        mem_mb: requested_mem_mb(&a.spec),
        max_rss_kb: None,
        cpu: None,
        derived_exit_code: None,
        steps: Vec::new(),
        ..asked(&a.spec)
    }
}

/// The fields of a view that say what a job asked for; the rest are left
/// for the caller to fill.
fn asked(spec: &JobSpec) -> JobView {
    use drover_core::job::MemRequest;
    JobView {
        ntasks: spec.ntasks,
        cpus_per_task: spec.cpus_per_task,
        nice: spec.nice,
        mem_per_node_mb: match spec.mem {
            MemRequest::PerNode(m) => Some(m),
            _ => None,
        },
        mem_per_cpu_mb: match spec.mem {
            MemRequest::PerCpu(m) => Some(m),
            _ => None,
        },
        dependency: None,
        req_nodes: hostlist::compress(&spec.nodelist.iter().map(String::as_str).collect::<Vec<_>>()),
        exc_nodes: hostlist::compress(&spec.exclude.iter().map(String::as_str).collect::<Vec<_>>()),
        features: spec.constraint.clone(),
        ..JobView::default()
    }
}

/// What a job asked for in memory, all nodes together, if it said.
fn requested_mem_mb(spec: &JobSpec) -> Option<u64> {
    match spec.mem {
        drover_core::job::MemRequest::Default => None,
        drover_core::job::MemRequest::PerNode(m) => Some(m * u64::from(spec.nodes_min)),
        drover_core::job::MemRequest::PerCpu(m) => Some(m * spec.total_cpus()),
    }
}

/// How an array's waiting tasks are named, as squeue shows them: `1000_7`,
/// `1000_[5-99]`, with the throttle `1000_[0-99%4]`; and the task part.
pub fn pending_tasks_id(a: &ArrayJob) -> (String, String) {
    let throttle = a.spec.array.as_ref().and_then(|s| s.max_running).map_or(String::new(), |n| format!("%{n}"));
    let tasks = format!("{}{throttle}", a.pending);
    let id = if a.pending.len() == 1 && throttle.is_empty() {
        format!("{}_{tasks}", a.id)
    } else {
        format!("{}_[{tasks}]", a.id)
    };
    (id, tasks)
}

/// The node at index `i` of the state's node table.
pub fn node_view(state: &State, i: usize) -> NodeView {
    let n = &state.nodes()[i];
    NodeView {
        name: n.name.clone(),
        state: n.state().name().into(),
        reason: n.reason.clone(),
        partitions: state
            .partitions()
            .iter()
            .filter(|p| p.members.contains(&(i as u32)))
            .map(|p| p.name().to_string())
            .collect(),
        total: n.total,
        alloc: n.alloc,
        features: n.features.clone(),
        jobs: n.jobs,
        last_heartbeat: n.last_heartbeat,
        addr: n.addr.clone(),
        power: n.power.name().into(),
        repair: n.repair.as_ref().map(|r| {
            let since = drover_core::time::format_timestamp(r.started / 1000);
            match &r.acted {
                None => format!("{} by {} since {since}", r.kind, r.provider),
                Some(_) => format!("{} by {} since {since}, waiting for the node", r.kind, r.provider),
            }
        }),
    }
}
