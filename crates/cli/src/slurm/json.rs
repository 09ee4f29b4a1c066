//! `--json` output in the structure Slurm 22.05's data_parser (openapi
//! v0.0.38) emits, for the fields Drover has. Times are epoch seconds, as
//! Slurm's.

use drover_proto::{JobView, NodeView};
use serde_json::{json, Value};

fn meta() -> Value {
    json!({
        "plugin": {"type": "openapi/v0.0.38", "name": "Slurm OpenAPI v0.0.38"},
        "Slurm": {"version": {"major": 22, "micro": 8, "minor": 5}, "release": "22.05.8"},
        "drover": {"version": env!("CARGO_PKG_VERSION")},
    })
}

fn secs(ms: Option<u64>) -> u64 {
    ms.map_or(0, |t| t / 1000)
}

pub fn job(j: &JobView) -> Value {
    let task = j.array_task.as_deref();
    let single_task = task.and_then(|t| t.parse::<u64>().ok());
    let (exit, signal) = match j.exit_code.as_deref().and_then(|e| e.split_once(':')) {
        Some((c, s)) => (c.parse::<i64>().unwrap_or(0), s.parse::<i64>().unwrap_or(0)),
        None => (0, 0),
    };
    json!({
        "job_id": j.job_id,
        "array_job_id": j.array_job_id.unwrap_or(0),
        "array_task_id": single_task,
        "array_task_string": if single_task.is_none() { task.unwrap_or("") } else { "" },
        "name": j.name,
        "user_name": j.user,
        "user_id": j.uid,
        "account": j.account.clone().unwrap_or_default(),
        "partition": j.partition,
        "job_state": j.state,
        "state_reason": j.reason,
        "nodes": j.nodes,
        "node_count": j.num_nodes,
        "cpus": j.num_cpus,
        "time_limit": j.time_limit.map(|s| s / 60),
        "submit_time": j.submit_time / 1000,
        "start_time": secs(j.start_time),
        "end_time": secs(j.end_time),
        "exit_code": exit,
        "derived_exit_code": signal,
        "restart_cnt": j.restart_count,
        "current_working_directory": j.work_dir,
        "standard_output": j.stdout,
        "standard_error": j.stderr,
    })
}

pub fn jobs(list: &[JobView]) -> String {
    let doc = json!({"meta": meta(), "errors": [], "jobs": list.iter().map(job).collect::<Vec<_>>()});
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

pub fn nodes(list: &[NodeView]) -> String {
    let nodes: Vec<Value> = list
        .iter()
        .map(|n| {
            json!({
                "name": n.name,
                "hostname": n.name,
                "state": n.state.to_ascii_lowercase(),
                "state_flags": [],
                "cpus": n.total.cpus,
                "alloc_cpus": n.alloc.cpus,
                "idle_cpus": n.total.cpus - n.alloc.cpus,
                "real_memory": n.total.mem_mb,
                "alloc_memory": n.alloc.mem_mb,
                "boards": 1, "sockets": 1, "cores": n.total.cpus, "threads": 1,
                "partitions": n.partitions,
                "reason": n.reason.clone().unwrap_or_default(),
                "features": n.features.join(","),
                "active_features": n.features.join(","),
                "gres": if n.total.gpus > 0 { format!("gpu:{}", n.total.gpus) } else { String::new() },
            })
        })
        .collect();
    serde_json::to_string_pretty(&json!({"meta": meta(), "errors": [], "nodes": nodes})).unwrap_or_default()
}
