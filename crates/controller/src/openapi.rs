//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`.
//!
//! Written by hand (the core's types carry no schema derives on purpose);
//! a test checks that it describes exactly the routes the router serves.

use serde_json::{json, Value};

/// Every route: (path, method, summary, request schema, response schema).
pub const ROUTES: &[(&str, &str, &str, Option<&str>, &str)] = &[
    ("/api/v1/jobs", "post", "Submit one or more jobs (all accepted or none)", Some("SubmitJobs"), "Submitted"),
    (
        "/api/v1/jobs",
        "get",
        "List jobs (filters: user, state, id, partition, name, all; detail=true adds output paths and dependencies; format=tsv for the compact text listing, format=table for drover queue's table as text)",
        None,
        "JobList",
    ),
    (
        "/api/v1/jobs/test",
        "post",
        "Validate jobs and estimate where and when each would start, submitting nothing (sbatch --test-only): no id is used, nothing is logged",
        Some("SubmitJobs"),
        "WouldStart",
    ),
    ("/api/v1/jobs/cancel", "post", "Cancel jobs matching a filter", Some("CancelJobs"), "Cancelled"),
    ("/api/v1/jobs/{id}", "get", "One job (1234 or 1234_7)", None, "JobView"),
    ("/api/v1/jobs/{id}", "delete", "Cancel one job", None, "Cancelled"),
    (
        "/api/v1/jobs/{id}/requeue",
        "post",
        "Requeue a running job (it ends, then waits in the queue again; held with hold=true)",
        Some("Requeue"),
        "JobView",
    ),
    (
        "/api/v1/events",
        "get",
        "Recent events after ?after=SEQ; ?wait=SECS waits for the first new one. With `Accept: text/event-stream`: server-sent events (id = seq, event = kind, data = EventRecord) until the client hangs up, resumed after `Last-Event-ID`; `?token=` authenticates an EventSource",
        None,
        "EventList",
    ),
    ("/api/v1/jobs/{id}/signal", "post", "Send a signal to a running job's processes (scancel --signal)", Some("SignalJob"), "JobView"),
    ("/api/v1/jobs/{id}/hold", "post", "Hold a pending job (scontrol hold)", None, "JobView"),
    (
        "/api/v1/jobs/{id}",
        "patch",
        "Change a job (scontrol update): time limit (users shorten, operators lengthen), partition (pending only), name, nice (negative: operators), comment",
        Some("UpdateJob"),
        "JobView",
    ),
    (
        "/api/v1/jobs/{id}/steps",
        "post",
        "Create a step of a running job (srun): its layout over the job's nodes and one sealed grant per node, which the node's agent needs to run its ranks (POST /api/v1/steps on the agent's listener)",
        Some("StepRequest"),
        "StepCreated",
    ),
    ("/api/v1/jobs/{id}/steps/{step}/end", "post", "Record how a step ended (the worst of its ranks)", Some("ExitReport"), "JobView"),
    (
        "/api/v1/jobs/{id}/steps/{step}/attach",
        "get",
        "Hold a step srun runs (StepRequest.client_held) for as long as this request stays open: a newline a second until the step ends; on the leader only. When no client has been attached for 5 s the leader ends the step, killed",
        None,
        "Text",
    ),
    (
        "/api/v1/jobs/{id}/complete",
        "post",
        "Give back an allocation (srun/salloc outside a batch job): the job ends COMPLETED, or FAILED for a non-zero exit",
        Some("ExitReport"),
        "JobView",
    ),
    ("/api/v1/jobs/{id}/env", "get", "A running job's SLURM_* and DROVER_* variables (salloc's shell); owner or operators", None, "Env"),
    (
        "/api/v1/jobs/{id}/attach",
        "get",
        "Hold an allocation made by srun or salloc (JobSpec.client_held) for as long as this request stays open: a newline a second until the job ends; on the leader only. When no client has been attached for 5 s the leader cancels the job",
        None,
        "Text",
    ),
    ("/api/v1/jobs/{id}/release", "post", "Release a held job (scontrol release)", None, "JobView"),
    (
        "/api/v1/jobs/{id}/output",
        "get",
        "A job's standard output from ?offset= (at most ?limit= bytes, 1 MiB): text/plain, with X-Drover-Next-Offset and X-Drover-Job-Terminal; the owner or operators only; read on the controller's host",
        None,
        "Text",
    ),
    ("/api/v1/nodes", "get", "List nodes", None, "NodeList"),
    ("/api/v1/partitions", "get", "List partitions: limits, state and member nodes", None, "PartitionList"),
    ("/api/v1/config", "get", "The cluster's settings (scontrol show config)", None, "Config"),
    (
        "/api/v1/usage",
        "get",
        "Use per user and account from accounting: jobs by how they ended, CPU and GPU seconds within ?since=&until= (epoch ms; default the last 7 days)",
        None,
        "UsageReport",
    ),
    (
        "/api/v1/history",
        "get",
        "Finished jobs from the accounting database, oldest end first: ?user=&account=&state=&partition=&id= (comma lists; an array id matches its tasks), since= (ended at or after, epoch ms), until= (submitted at or before), limit= (at most 10 000), after= (the previous page's next), attempts=true (requeued jobs' earlier runs too)",
        None,
        "HistoryPage",
    ),
    ("/api/v1/nodes/{name}", "get", "One node", None, "NodeView"),
    (
        "/api/v1/nodes",
        "post",
        "Define cloud nodes, powered down until power saving starts them (operators)",
        Some("DefineNodes"),
        "NodeList",
    ),
    ("/api/v1/nodes/{name}/drain", "post", "Drain a node (operators)", Some("Drain"), "NodeView"),
    ("/api/v1/nodes/{name}/resume", "post", "Return a node to service (operators)", None, "NodeView"),
    (
        "/api/v1/nodes/{name}/stop-machine",
        "post",
        "Stop the node's machine through the healer's provider, as a failure would (operators; chaos testing)",
        None,
        "MachineStopped",
    ),
    ("/api/v1/health", "get", "Cluster health: 200 when healthy, 503 with problems", None, "Health"),
    ("/api/v1/openapi.json", "get", "This document", None, "OpenApi"),
    (
        "/api/v1/tokens",
        "post",
        "Trade a one-time credential for a session token of the same identity (send it as `Authorization: Bearer`)",
        Some("TokenRequest"),
        "TokenGrant",
    ),
    ("/api/v1/whoami", "get", "The identity the request's credential or token proves", None, "WhoAmI"),
    (
        "/api/v1/sd/prometheus",
        "get",
        "Prometheus HTTP service discovery: the controllers and every agent's metrics listener (no credential)",
        None,
        "TargetGroups",
    ),
    ("/metrics", "get", "Prometheus metrics, classic text format or OpenMetrics (no credential)", None, "Text"),
    (
        "/api/v1/agent/register",
        "post",
        "Agent: register a node (cluster key holders only)",
        Some("Register"),
        "NodeView",
    ),
    ("/api/v1/agent/heartbeat/{node}", "post", "Agent: heartbeat; 409 means register again", None, "Empty"),
    ("/api/v1/agent/orders/{node}", "get", "Agent: stream of orders, newline-delimited JSON", None, "Order"),
    ("/api/v1/agent/reports", "post", "Agent: steps that started or finished, batched", Some("Reports"), "Empty"),
    (
        "/api/v1/agent/health/{node}",
        "post",
        "Agent: health-check result; a failure drains the node, a pass lifts such a drain",
        Some("HealthReport"),
        "Empty",
    ),
    (
        "/api/v1/controllers",
        "get",
        "The Raft group as this controller sees it: role, term, log indexes; on the leader, each member's lag",
        None,
        "Controllers",
    ),
    (
        "/api/v1/controllers",
        "post",
        "Add a controller: a learner until caught up, then a voter (operators)",
        Some("JoinController"),
        "Controllers",
    ),
    ("/api/v1/controllers/{id}", "delete", "Remove a controller from the group (operators)", None, "Controllers"),
    ("/api/v1/raft/append", "post", "Raft AppendEntries between controllers (cluster key)", Some("Raft"), "Raft"),
    ("/api/v1/raft/vote", "post", "Raft RequestVote between controllers (cluster key)", Some("Raft"), "Raft"),
    ("/api/v1/raft/snapshot", "post", "Raft InstallSnapshot chunk (cluster key)", Some("Raft"), "Raft"),
];

fn obj(props: &[(&str, Value)], required: &[&str]) -> Value {
    let map: serde_json::Map<String, Value> = props.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    json!({ "type": "object", "properties": map, "required": required })
}

fn s(t: &str) -> Value {
    json!({ "type": t })
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn schemas() -> Value {
    let resources =
        obj(&[("cpus", s("integer")), ("mem_mb", s("integer")), ("gpus", s("integer"))], &["cpus", "mem_mb", "gpus"]);
    let mut v = json!({
        "Empty": { "type": "object" },
        "Text": { "type": "string" },
        "SignalJob": obj(&[("signal", json!({"type": "integer", "minimum": 1, "maximum": 64}))], &["signal"]),
        "TokenRequest": obj(&[("lifetime_s", json!({"type": ["integer", "null"], "description": "seconds; default 8 hours, at most 7 days"}))], &[]),
        "TokenGrant": obj(&[("token", s("string")), ("uid", s("integer")), ("expires_ms", s("integer"))], &["token", "uid", "expires_ms"]),
        "WhoAmI": obj(&[("uid", s("integer")), ("user", s("string")), ("operator", s("boolean"))], &["uid", "user", "operator"]),
        "TargetGroups": {"type": "array", "items": obj(&[
            ("targets", json!({"type": "array", "items": s("string")})),
            ("labels", json!({"type": "object", "additionalProperties": s("string")})),
        ], &["targets", "labels"])},
        "OpenApi": { "type": "object" },
        "Error": obj(&[
            ("error", s("string")),
            ("leader", json!({"type": "string", "description": "On 421: the leader's address; send the request there"})),
        ], &["error"]),
        "Raft": {"type": "object", "description": "openraft's request or Result (serde JSON); controllers only"},
        "Member": obj(&[
            ("id", s("integer")), ("addr", s("string")), ("voter", s("boolean")),
            ("matched_index", json!({"type": ["integer", "null"]})), ("lag", json!({"type": ["integer", "null"]})),
        ], &["id", "addr", "voter"]),
        "Controllers": obj(&[
            ("this", s("integer")), ("leader", json!({"type": ["integer", "null"]})), ("term", s("integer")),
            ("role", s("string")), ("last_log_index", json!({"type": ["integer", "null"]})),
            ("committed_index", json!({"type": ["integer", "null"]})),
            ("applied_index", json!({"type": ["integer", "null"]})), ("snapshot_index", json!({"type": ["integer", "null"]})),
            ("purged_index", json!({"type": ["integer", "null"]})), ("members", json!({"type": "array", "items": r("Member")})),
        ], &["this", "term", "role", "members"]),
        "JoinController": obj(&[("id", s("integer")), ("addr", s("string"))], &["id", "addr"]),
        "Resources": resources,
        "JobSpec": {
            "type": "object",
            "description": "What a user asked for; the fields of `drover check --json`. Build one from sbatch options with `drover check --json OPTIONS SCRIPT`.",
            "properties": {
                "name": s("string"), "user": s("string"), "uid": s("integer"), "gid": s("integer"),
                "partition": {"type": ["string", "null"]}, "nodes_min": s("integer"), "nodes_max": s("integer"),
                "ntasks": s("integer"), "cpus_per_task": s("integer"), "time_limit": {"type": ["integer", "null"], "description": "seconds"},
                "work_dir": s("string"), "script": s("string"), "environment": {"type": "array", "items": {"type": "array", "items": s("string")}}
            },
            "required": ["name", "user", "uid", "gid", "script", "work_dir"],
            "additionalProperties": true
        },
        "SubmitJobs": obj(&[("jobs", json!({"type": "array", "items": r("JobSpec")}))], &["jobs"]),
        "Submitted": obj(&[("job_ids", json!({"type": "array", "items": s("integer")}))], &["job_ids"]),
        "WouldStart": obj(&[("estimates", json!({"type": "array", "items": obj(&[
            ("job_id", s("integer")),
            ("start_ms", json!({"type": ["integer", "null"]})),
            ("nodes", s("string")),
            ("cpus", s("integer")),
            ("partition", s("string")),
        ], &["job_id", "start_ms", "nodes", "cpus", "partition"])}))], &["estimates"]),
        "CancelJobs": obj(&[("filter", obj(&[
            ("jobs", json!({"type": "array", "items": obj(&[("id", s("integer")), ("task", json!({"type": ["integer", "null"]}))], &["id"])})),
            ("user", json!({"type": ["string", "null"]})),
            ("states", json!({"type": "array", "items": s("string")})),
            ("name", json!({"type": ["string", "null"]})),
            ("partition", json!({"type": ["string", "null"]})),
        ], &[]))], &["filter"]),
        "Cancelled": obj(&[
            ("cancelled", json!({"type": "array", "items": s("string")})),
            ("refused", json!({"type": "array", "items": {"type": "array", "items": s("string")}})),
        ], &["cancelled", "refused"]),
        "JobView": obj(&[
            ("id", s("string")), ("job_id", s("integer")), ("array_job_id", json!({"type": ["integer", "null"]})),
            ("name", s("string")), ("user", s("string")), ("uid", s("integer")), ("gid", s("integer")), ("partition", s("string")),
            ("state", s("string")), ("state_code", s("string")), ("reason", s("string")), ("nodes", s("string")),
            ("num_nodes", s("integer")), ("num_cpus", s("integer")), ("time_limit", json!({"type": ["integer", "null"]})),
            ("submit_time", s("integer")), ("start_time", json!({"type": ["integer", "null"]})), ("end_time", json!({"type": ["integer", "null"]})),
            ("exit_code", json!({"type": ["string", "null"]})), ("restart_count", s("integer")),
            ("stdout", s("string")), ("stderr", s("string")), ("terminal", s("boolean")),
            ("steps", json!({"type": "array", "items": r("StepView"), "description": "steps srun ran in the job"})),
            ("mem_mb", json!({"type": ["integer", "null"], "description": "memory held, all nodes (before the start: asked for)"})),
            ("max_rss_kb", json!({"type": ["integer", "null"], "description": "the batch step's peak memory"})),
            ("cpu", r("CpuTime")),
            ("derived_exit_code", json!({"type": ["string", "null"], "description": "the worst exit of the run's steps, CODE:SIGNAL"})),
            ("ntasks", s("integer")), ("cpus_per_task", s("integer")), ("nice", s("integer")),
            ("mem_per_node_mb", json!({"type": ["integer", "null"], "description": "--mem, as asked"})),
            ("mem_per_cpu_mb", json!({"type": ["integer", "null"], "description": "--mem-per-cpu, as asked"})),
            ("dependency", json!({"type": ["string", "null"], "description": "what a pending job's dependency still waits for: afterok:12(unfulfilled)"})),
            ("req_nodes", s("string")), ("exc_nodes", s("string")), ("features", json!({"type": ["string", "null"]})),
            ("stdin", s("string")),
        ], &["id", "job_id", "state"]),
        "CpuTime": obj(&[("user_ms", s("integer")), ("system_ms", s("integer"))], &["user_ms", "system_ms"]),
        "JobList": obj(&[("jobs", json!({"type": "array", "items": r("JobView")}))], &["jobs"]),
        "NodeView": obj(&[
            ("name", s("string")), ("state", s("string")), ("reason", json!({"type": ["string", "null"]})),
            ("partitions", json!({"type": "array", "items": s("string")})), ("total", r("Resources")), ("alloc", r("Resources")),
            ("features", json!({"type": "array", "items": s("string")})), ("jobs", s("integer")), ("last_heartbeat", s("integer")),
            ("addr", json!({"type": "string", "description": "what the agent registered: host:port of its metrics listener, or the host"})),
            ("power", json!({"type": "string", "enum": ["ON", "POWERING_DOWN", "POWERED_DOWN", "POWERING_UP"]})),
            ("repair", json!({"type": "string", "description": "the healer's repair in flight: KIND by PROVIDER since TIME"})),
        ], &["name", "state"]),
        "DefineNodes": obj(&[
            ("nodes", json!({"type": "string", "description": "a hostlist: node[3-8]"})), ("cpus", s("integer")),
            ("memory_mb", s("integer")), ("gpus", s("integer")), ("features", json!({"type": "array", "items": s("string")})),
        ], &["nodes", "cpus", "memory_mb"]),
        "MachineStopped": obj(&[("node", s("string")), ("provider", s("string")), ("detail", s("string"))], &["node", "provider", "detail"]),
        "PartitionList": obj(&[("partitions", json!({"type": "array", "items": obj(&[
            ("name", s("string")), ("is_default", s("boolean")), ("up", s("boolean")),
            ("max_time", json!({"type": ["integer", "null"]})), ("default_time", json!({"type": ["integer", "null"]})),
            ("nodes", json!({"type": "array", "items": s("string")})),
        ], &["name", "is_default", "up", "nodes"])}))], &["partitions"]),
        "NodeList": obj(&[("nodes", json!({"type": "array", "items": r("NodeView")}))], &["nodes"]),
        "Drain": obj(&[("reason", s("string"))], &["reason"]),
        "Requeue": obj(&[("hold", s("boolean"))], &[]),
        "HealthReport": obj(&[("ok", s("boolean")), ("message", s("string"))], &["ok", "message"]),
        "EventRecord": obj(&[
            ("seq", s("integer")), ("time_ms", s("integer")), ("kind", s("string")),
            ("job", json!({"type": ["integer", "null"]})), ("node", json!({"type": ["string", "null"]})), ("text", s("string")),
        ], &["seq", "time_ms", "kind", "text"]),
        "EventList": obj(&[("events", json!({"type": "array", "items": r("EventRecord")}))], &["events"]),
        "Health": obj(&[
            ("ok", s("boolean")), ("leader", json!({"type": ["integer", "null"]})),
            ("nodes", json!({"type": "array", "items": {"type": "array", "items": s("string")}})),
            ("problems", json!({"type": "array", "items": s("string")})),
        ], &["ok", "problems"]),
        "Register": obj(&[
            ("name", s("string")), ("addr", s("string")), ("total", r("Resources")),
            ("features", json!({"type": "array", "items": s("string")})),
            ("known_steps", json!({"type": "array", "items": {"type": "array", "items": s("integer")}})),
        ], &["name", "total"]),
        "Reports": obj(&[("reports", json!({"type": "array", "items": r("Report")}))], &["reports"]),
        "Report": obj(&[
            ("node", s("string")), ("job", s("integer")), ("attempt", s("integer")), ("finished", json!({})),
            ("max_rss_kb", s("integer")), ("cpu", r("CpuTime")),
            ("step", json!({"type": "integer", "description": "an srun step whose tasks here are gone: max_rss_kb and cpu are theirs"})),
        ], &["node", "job", "attempt"]),
        "Order": {"description": "One of {\"Launch\": LaunchOrder}, {\"Kill\": {job, attempt}}, {\"Signal\": {job, attempt, signal}}, \"Ping\""},
    });
    if let (Some(all), Value::Object(more)) = (v.as_object_mut(), step_schemas()) {
        all.extend(more);
    }
    v
}

/// The shapes of `srun`'s and `scontrol update`'s requests (apart: one
/// `json!` may only nest so deep).
fn step_schemas() -> Value {
    json!({
        "UpdateJob": obj(&[
            ("time_limit", json!({"type": "string", "description": "Slurm's forms: 30, 2:00:00, 1-00:00:00, UNLIMITED"})),
            ("partition", s("string")), ("name", s("string")), ("nice", s("integer")), ("comment", s("string")),
        ], &[]),
        "StepRequest": obj(&[
            ("name", s("string")), ("ntasks", json!({"type": ["integer", "null"]})), ("nodes", json!({"type": ["integer", "null"]})),
            ("ntasks_per_node", json!({"type": ["integer", "null"]})), ("cpus_per_task", json!({"type": ["integer", "null"]})),
            ("overcommit", s("boolean")),
            ("client_held", json!({"type": "boolean", "description": "srun holds the step open (…/steps/{step}/attach); the leader ends it 5 s after srun is gone"})),
        ], &["name"]),
        "StepCreated": obj(&[
            ("job_id", s("integer")), ("step", s("integer")),
            ("nodes", json!({"type": "array", "items": obj(&[
                ("name", s("string")), ("addr", s("string")), ("first_rank", s("integer")), ("tasks", s("integer")),
                ("grant", json!({"type": "string", "description": "the node's grant as JSON text; send it unchanged"})),
                ("seal", s("string")),
            ], &["name", "addr", "first_rank", "tasks", "grant", "seal"])})),
        ], &["job_id", "step", "nodes"]),
        "Config": obj(&[
            ("cluster_name", s("string")), ("node_timeout_ms", json!({"type": ["integer", "null"]})),
            ("max_requeue", s("integer")), ("requeue_backoff_ms", s("integer")), ("over_time_grace_ms", s("integer")),
        ], &["cluster_name"]),
        "UsageReport": obj(&[
            ("since", s("integer")), ("until", s("integer")),
            ("rows", json!({"type": "array", "items": obj(&[
                ("user", s("string")), ("account", s("string")), ("jobs", s("integer")), ("completed", s("integer")),
                ("failed", s("integer")), ("cancelled", s("integer")), ("cpu_seconds", s("integer")), ("gpu_seconds", s("integer")),
            ], &["user", "account", "jobs", "cpu_seconds"])})),
        ], &["since", "until", "rows"]),
        "HistoryPage": obj(&[
            ("jobs", json!({"type": "array", "items": r("JobView")})),
            ("next", json!({"type": ["string", "null"], "description": "END_MS:JOB_ID: pass as after= for the next page"})),
        ], &["jobs"]),
        "ExitReport": obj(&[("exit_code", s("integer")), ("signal", s("integer"))], &["exit_code"]),
        "Env": {"type": "array", "items": {"type": "array", "items": s("string"), "minItems": 2, "maxItems": 2}},
        "StepView": obj(&[
            ("id", s("string")), ("step", s("integer")), ("name", s("string")), ("state", s("string")), ("nodes", s("string")),
            ("num_nodes", s("integer")), ("ntasks", s("integer")), ("num_cpus", s("integer")), ("start_time", s("integer")),
            ("end_time", json!({"type": ["integer", "null"]})), ("exit_code", json!({"type": ["string", "null"]})),
            ("max_rss_kb", json!({"type": ["integer", "null"], "description": "the largest task's peak memory"})),
            ("cpu", r("CpuTime")),
        ], &["id", "step", "state"]),
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (path, method, summary, request, response) in ROUTES {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let media = if *response == "Text" { "text/plain" } else { "application/json" };
        let mut op = json!({
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {media: {"schema": r(response)}}},
                "4XX": {"description": "The request was refused; the body says why. 421: this controller is not the leader, `leader` names it", "content": {"application/json": {"schema": r("Error")}}},
                "503": {"description": "No leader at the moment (an election is under way); retry", "content": {"application/json": {"schema": r("Error")}}},
            },
        });
        let open = ["/api/v1/health", "/api/v1/openapi.json", "/api/v1/sd/prometheus", "/metrics"].contains(path)
            || (*path == "/api/v1/controllers" && *method == "get");
        if *method == "get"
            && path.starts_with("/api/v1/")
            && !path.starts_with("/api/v1/agent")
            && !path.starts_with("/api/v1/raft")
        {
            op["parameters"].as_array_mut().expect("a list").push(json!({
                "name": "stale", "in": "query", "required": false, "schema": {"type": "boolean"},
                "description": "Answer from this controller's state even if it is not the leader (may lag)",
            }));
        }
        if *method != "get" {
            op["parameters"].as_array_mut().expect("a list").push(json!({
                "name": "x-drover-request", "in": "header", "required": false, "schema": {"type": "string"},
                "description": "A client-chosen id: a retry with the same id is applied at most once and gets the first answer",
            }));
        }
        if let Some(req) = request {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": r(req)}}});
        }
        if *path == "/api/v1/tokens" {
            op["security"] = json!([{"droverCredential": []}]);
        } else if !open {
            op["security"] = json!([{"droverCredential": []}, {"droverToken": []}]);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Drover",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Drover's REST API. Routes need `Authorization: Drover <credential>` (one-time, from the local credential socket; see docs/cluster.md) or `Authorization: Bearer <token>` (a session token from `drover token`), except /health, /openapi.json, /sd/prometheus and /metrics.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "droverCredential": {"type": "http", "scheme": "Drover", "description": "A credential from the local socket: v1.UID.GID.EXPIRES.NONCE.MAC, good once for 5 minutes."},
                "droverToken": {"type": "http", "scheme": "bearer", "description": "A session token (`drover token`, POST /api/v1/tokens): t1.UID.GID.EXPIRES.NONCE.MAC, good until it expires."},
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_every_route_with_resolvable_schemas() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for name in text.split("#/components/schemas/").skip(1).map(|s| s.split('"').next().unwrap()) {
            assert!(schemas.contains_key(name), "unresolved schema {name}");
        }
        for (path, method, ..) in ROUTES {
            assert!(doc["paths"][path][method].is_object(), "{method} {path} missing");
        }
    }
}
