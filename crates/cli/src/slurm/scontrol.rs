//! `scontrol`: show jobs, nodes and partitions in Slurm's key=value layout
//! (`-o`: one line each); hold, release, requeue; ping; token.

use crate::client::{Client, ClientError};
use drover_proto::{JobList, JobView, NodeList, NodeView, PartitionList, PartitionView};

/// Key=value pairs in lines, as `scontrol show` prints them.
type Record = Vec<Vec<(&'static str, String)>>;

/// Multi-line: the first line flush, the rest indented three spaces, then
/// an indented empty line and a blank one. One line (`-o`): every pair
/// joined by spaces, a space at the end.
pub fn render(record: &Record, one_line: bool) -> String {
    let lines: Vec<String> =
        record.iter().map(|l| l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")).collect();
    if one_line {
        format!("{} \n", lines.join(" "))
    } else {
        format!("{}\n   \n\n", lines.join("\n   "))
    }
}

fn or_null(v: &str) -> String {
    if v.is_empty() {
        "(null)".into()
    } else {
        v.to_string()
    }
}

pub fn job_record(j: &JobView, now_ms: u64) -> Record {
    let mut head = vec![("JobId", j.job_id.to_string())];
    if let Some(array) = j.array_job_id {
        head.push(("ArrayJobId", array.to_string()));
        let task = j.array_task.clone().unwrap_or_default();
        head.push(("ArrayTaskId", task.trim_start_matches('[').trim_end_matches(']').to_string()));
    }
    head.push(("JobName", j.name.clone()));
    let running = j.start_time.is_some();
    let run_time = j.start_time.map_or(0, |s| j.end_time.unwrap_or(now_ms).saturating_sub(s) / 1000);
    let limit = j.time_limit.map_or_else(|| "UNLIMITED".into(), super::clock);
    let mut lines = vec![
        head,
        vec![
            ("UserId", format!("{}({})", j.user, j.uid)),
            ("GroupId", format!("{}({})", drover_auth::group_name(j.gid), j.gid)),
            ("MCS_label", "N/A".into()),
        ],
        vec![
            ("Priority", if j.reason.starts_with("JobHeld") { "0" } else { "1" }.into()),
            ("Nice", j.nice.to_string()),
            ("Account", j.account.clone().unwrap_or_else(|| "(null)".into())),
            ("QOS", "normal".into()),
        ],
        vec![
            ("JobState", j.state.clone()),
            // As Slurm does with a reason in words: one token, for parsers
            // that split on white space.
            ("Reason", j.reason.split_whitespace().collect::<Vec<_>>().join("_")),
            ("Dependency", j.dependency.clone().unwrap_or_else(|| "(null)".into())),
        ],
        vec![
            ("Requeue", "1".into()),
            ("Restarts", j.restart_count.to_string()),
            ("BatchFlag", "1".into()),
            ("Reboot", "0".into()),
            ("ExitCode", j.exit_code.clone().unwrap_or_else(|| "0:0".into())),
        ],
        vec![("RunTime", super::clock(run_time)), ("TimeLimit", limit), ("TimeMin", "N/A".into())],
        vec![
            ("SubmitTime", super::stamp(Some(j.submit_time), "Unknown")),
            ("EligibleTime", super::stamp(Some(j.submit_time), "Unknown")),
        ],
        vec![("AccrueTime", super::stamp(Some(j.submit_time), "Unknown"))],
        vec![
            ("StartTime", super::stamp(j.start_time, "Unknown")),
            ("EndTime", super::stamp(j.end_time, "Unknown")),
            ("Deadline", "N/A".into()),
        ],
        vec![
            ("SuspendTime", "None".into()),
            ("SecsPreSuspend", "0".into()),
            ("LastSchedEval", super::stamp(j.start_time.or(Some(j.submit_time)), "Unknown")),
            ("Scheduler", "Main".into()),
        ],
        vec![("Partition", j.partition.clone()), ("AllocNode:Sid", "localhost:0".into())],
        vec![("ReqNodeList", or_null(&j.req_nodes)), ("ExcNodeList", or_null(&j.exc_nodes))],
        vec![("NodeList", j.nodes.clone())],
    ];
    if running {
        let first = drover_core::hostlist::expand(&j.nodes).ok().and_then(|n| n.into_iter().next()).unwrap_or_default();
        lines.push(vec![("BatchHost", first)]);
    }
    let cpus_per_task = j.cpus_per_task.max(1);
    // Memory as asked: per node or per CPU; a job that took its CPUs'
    // share asked for none, as Slurm shows one without --mem.
    let (min_memory, tres_mem) = match (j.mem_per_node_mb, j.mem_per_cpu_mb) {
        (Some(m), _) => {
            (("MinMemoryNode", drover_core::memory::format_mb(m)), j.mem_mb.or(Some(m * u64::from(j.num_nodes.max(1)))))
        }
        (None, Some(m)) => (("MinMemoryCPU", drover_core::memory::format_mb(m)), j.mem_mb.or(Some(m * j.num_cpus))),
        (None, None) => (("MinMemoryNode", "0".into()), None),
    };
    let tres = match tres_mem {
        Some(mb) => format!(
            "cpu={},mem={},node={},billing={}",
            j.num_cpus,
            drover_core::memory::format_mb(mb),
            j.num_nodes,
            j.num_cpus
        ),
        None => format!("cpu={},node={},billing={}", j.num_cpus, j.num_nodes, j.num_cpus),
    };
    lines.extend([
        vec![
            ("NumNodes", j.num_nodes.to_string()),
            ("NumCPUs", j.num_cpus.to_string()),
            ("NumTasks", j.ntasks.max(1).to_string()),
            ("CPUs/Task", cpus_per_task.to_string()),
            ("ReqB:S:C:T", "0:0:*:*".into()),
        ],
        vec![("TRES", tres)],
        vec![("Socks/Node", "*".into()), ("NtasksPerN:B:S:C", "0:0:*:*".into()), ("CoreSpec", "*".into())],
        vec![("MinCPUsNode", cpus_per_task.to_string()), min_memory, ("MinTmpDiskNode", "0".into())],
        vec![("Features", j.features.clone().unwrap_or_else(|| "(null)".into())), ("DelayBoot", "00:00:00".into())],
        vec![
            ("OverSubscribe", "OK".into()),
            ("Contiguous", "0".into()),
            ("Licenses", "(null)".into()),
            ("Network", "(null)".into()),
        ],
        vec![("Command", "(null)".into())],
        vec![("WorkDir", j.work_dir.clone())],
        vec![("StdErr", or_null(&j.stderr))],
        vec![("StdIn", if j.stdin.is_empty() { "/dev/null".into() } else { j.stdin.clone() })],
        vec![("StdOut", or_null(&j.stdout))],
        vec![("Power", String::new())],
    ]);
    lines
}

pub fn node_record(n: &NodeView) -> Record {
    let mut lines = vec![
        vec![
            ("NodeName", n.name.clone()),
            ("Arch", std::env::consts::ARCH.into()),
            ("CoresPerSocket", n.total.cpus.to_string()),
        ],
        vec![
            ("CPUAlloc", n.alloc.cpus.to_string()),
            ("CPUEfctv", n.total.cpus.to_string()),
            ("CPUTot", n.total.cpus.to_string()),
            ("CPULoad", "N/A".into()),
        ],
        vec![("AvailableFeatures", or_null(&n.features.join(",")))],
        vec![("ActiveFeatures", or_null(&n.features.join(",")))],
        vec![("Gres", if n.total.gpus > 0 { format!("gpu:{}", n.total.gpus) } else { "(null)".into() })],
        {
            let (host, port) = n.addr.rsplit_once(':').unwrap_or((n.addr.as_str(), "0"));
            vec![
                ("NodeAddr", if host.is_empty() { n.name.clone() } else { host.to_string() }),
                ("NodeHostName", n.name.clone()),
                ("Port", port.to_string()),
                ("Version", concat!("drover-", env!("CARGO_PKG_VERSION")).into()),
            ]
        },
        vec![("OS", std::env::consts::OS.into())],
        vec![
            ("RealMemory", n.total.mem_mb.to_string()),
            ("AllocMem", n.alloc.mem_mb.to_string()),
            ("FreeMem", "N/A".into()),
            ("Sockets", "1".into()),
            ("Boards", "1".into()),
        ],
        vec![
            ("State", if n.power == "ON" { n.state.clone() } else { format!("{}+{}", n.state, n.power) }),
            ("ThreadsPerCore", "1".into()),
            ("TmpDisk", "0".into()),
            ("Weight", "1".into()),
            ("Owner", "N/A".into()),
            ("MCS_label", "N/A".into()),
        ],
        vec![("Partitions", n.partitions.join(","))],
        vec![("BootTime", "None".into()), ("SlurmdStartTime", "None".into())],
        vec![("LastBusyTime", super::stamp(Some(n.last_heartbeat), "Unknown"))],
        vec![("CfgTRES", format!("cpu={},mem={}M,billing={}", n.total.cpus, n.total.mem_mb, n.total.cpus))],
        vec![("AllocTRES", if n.alloc.cpus > 0 { format!("cpu={}", n.alloc.cpus) } else { String::new() })],
        vec![("CapWatts", "n/a".into())],
        vec![("CurrentWatts", "0".into()), ("AveWatts", "0".into())],
        vec![("ExtSensorsJoules", "n/s".into()), ("ExtSensorsWatts", "0".into()), ("ExtSensorsTemp", "n/s".into())],
    ];
    if let Some(reason) = &n.reason {
        lines.push(vec![("Reason", reason.clone())]);
    }
    lines
}

pub fn partition_record(p: &PartitionView, nodes: &[NodeView]) -> Record {
    let members: Vec<&NodeView> = nodes.iter().filter(|n| p.nodes.contains(&n.name)).collect();
    let cpus: u32 = members.iter().map(|n| n.total.cpus).sum();
    let mem: u64 = members.iter().map(|n| n.total.mem_mb).sum();
    let limit = |t: Option<u64>, none: &str| t.map_or_else(|| none.to_string(), super::clock);
    vec![
        vec![("PartitionName", p.name.clone())],
        vec![("AllowGroups", "ALL".into()), ("AllowAccounts", "ALL".into()), ("AllowQos", "ALL".into())],
        vec![
            ("AllocNodes", "ALL".into()),
            ("Default", if p.is_default { "YES" } else { "NO" }.into()),
            ("QoS", "N/A".into()),
        ],
        vec![
            ("DefaultTime", limit(p.default_time, "NONE")),
            ("DisableRootJobs", "NO".into()),
            ("ExclusiveUser", "NO".into()),
            ("GraceTime", "0".into()),
            ("Hidden", "NO".into()),
        ],
        vec![
            ("MaxNodes", "UNLIMITED".into()),
            ("MaxTime", limit(p.max_time, "UNLIMITED")),
            ("MinNodes", "0".into()),
            ("LLN", "NO".into()),
            ("MaxCPUsPerNode", "UNLIMITED".into()),
        ],
        vec![("Nodes", drover_core::hostlist::compress(&p.nodes))],
        vec![
            ("PriorityJobFactor", "1".into()),
            ("PriorityTier", "1".into()),
            ("RootOnly", "NO".into()),
            ("ReqResv", "NO".into()),
            ("OverSubscribe", "NO".into()),
        ],
        vec![("OverTimeLimit", "NONE".into()), ("PreemptMode", "OFF".into())],
        vec![
            ("State", if p.up { "UP" } else { "DOWN" }.into()),
            ("TotalCPUs", cpus.to_string()),
            ("TotalNodes", members.len().to_string()),
            ("SelectTypeParameters", "NONE".into()),
        ],
        vec![("JobDefaults", "(null)".into())],
        vec![("DefMemPerNode", "UNLIMITED".into()), ("MaxMemPerNode", "UNLIMITED".into())],
        vec![("TRES", format!("cpu={cpus},mem={mem}M,node={},billing={cpus}", members.len()))],
    ]
}

const USAGE: &str = "Usage: scontrol [-o] show job|node|partition [NAME] | hold|release|requeue|requeuehold JOBID[,…] | ping | token [lifetime=SECONDS] | version";

pub async fn run(client: &Client, args: Vec<String>) -> Result<i32, String> {
    let one_line = args.iter().any(|a| a == "-o" || a == "--oneliner");
    let words: Vec<&str> = args.iter().map(String::as_str).filter(|a| !a.starts_with('-')).collect();
    if args.iter().any(|a| a == "-V" || a == "--version") || words.first() == Some(&"version") {
        println!("{}", super::VERSION);
        return Ok(0);
    }
    if args.iter().any(|a| a == "--help" || a == "--usage") || words.is_empty() {
        println!("{USAGE}");
        return Ok(0);
    }
    let now = crate::jobs::now_ms();
    let mut out = String::new();
    match (words[0].to_ascii_lowercase().as_str(), words.get(1).map(|w| w.to_ascii_lowercase())) {
        ("show", Some(what)) if what.starts_with("job") => {
            let jobs: Vec<JobView> = match words.get(2) {
                Some(id) => {
                    let list: JobList = client
                        .get(
                            "/api/v1/jobs",
                            &[("id", id.to_string()), ("all", "true".into()), ("detail", "true".into())],
                        )
                        .await?;
                    if list.jobs.is_empty() {
                        return Err("Invalid job id specified".into());
                    }
                    list.jobs
                }
                None => {
                    let q = [("all", "true".into()), ("detail", "true".into())];
                    client.get::<JobList>("/api/v1/jobs", &q).await?.jobs
                }
            };
            if jobs.is_empty() {
                println!("No jobs in the system");
            }
            for j in &jobs {
                out.push_str(&render(&job_record(j, now), one_line));
            }
        }
        ("show", Some(what)) if what.starts_with("node") => {
            let nodes = client.get::<NodeList>("/api/v1/nodes", &[]).await?.nodes;
            let shown: Vec<&NodeView> = match words.get(2) {
                Some(expr) => {
                    let want =
                        drover_core::hostlist::expand(expr).map_err(|e| format!("invalid node name '{expr}': {e}"))?;
                    nodes.iter().filter(|n| want.contains(&n.name)).collect()
                }
                None => nodes.iter().collect(),
            };
            if shown.is_empty() {
                return Err(format!("Node {} not found", words.get(2).unwrap_or(&"")));
            }
            for n in shown {
                out.push_str(&render(&node_record(n), one_line));
            }
        }
        ("show", Some(what)) if what.starts_with("partition") => {
            let partitions = client.get::<PartitionList>("/api/v1/partitions", &[]).await?.partitions;
            let nodes = client.get::<NodeList>("/api/v1/nodes", &[]).await?.nodes;
            let shown: Vec<&PartitionView> =
                partitions.iter().filter(|p| words.get(2).is_none_or(|w| *w == p.name)).collect();
            if shown.is_empty() {
                return Err(format!("Partition {} not found", words.get(2).unwrap_or(&"")));
            }
            for p in shown {
                out.push_str(&render(&partition_record(p, &nodes), one_line));
            }
        }
        ("show", Some(what)) if what.starts_with("config") => {
            let config: drover_core::state::Config = client.get("/api/v1/config", &[]).await?;
            let controllers = client.get_each::<drover_proto::Controllers>("/api/v1/controllers").await?;
            let addrs: Vec<String> = controllers
                .iter()
                .map(|(addr, _)| addr.trim_start_matches("http://").trim_start_matches("https://").to_string())
                .collect();
            out.push_str(&config_text(&config, &addrs, now));
            out.push('\n');
            out.push_str(&ping_lines(&controllers).0);
        }
        ("show", other) => {
            return Err(format!("invalid entity: {} (try job, node or partition)", other.unwrap_or_default()))
        }
        (verb @ ("hold" | "uhold" | "release" | "requeue" | "requeuehold"), Some(_)) => {
            let mut failed = false;
            for id in words[1..].iter().flat_map(|w| w.split(',')).filter(|w| !w.is_empty()) {
                let id = id.trim_start_matches("jobid=").trim_start_matches("JobId=");
                let result = match verb {
                    "hold" | "uhold" => {
                        client.post::<_, JobView>(&format!("/api/v1/jobs/{id}/hold"), &serde_json::json!({})).await
                    }
                    "release" => {
                        client.post::<_, JobView>(&format!("/api/v1/jobs/{id}/release"), &serde_json::json!({})).await
                    }
                    _ => {
                        let body = drover_proto::Requeue { hold: verb == "requeuehold" };
                        client.post::<_, JobView>(&format!("/api/v1/jobs/{id}/requeue"), &body).await
                    }
                };
                if let Err(e) = result {
                    eprintln!("scontrol: error: Job {id}: {e}");
                    failed = true;
                }
            }
            return Ok(i32::from(failed));
        }
        ("ping", _) => {
            let views = client.get_each::<drover_proto::Controllers>("/api/v1/controllers").await?;
            let (text, down) = ping_lines(&views);
            print!("{text}");
            return Ok(i32::from(down));
        }
        ("token", _) => {
            let lifetime = words
                .iter()
                .find_map(|w| w.strip_prefix("lifetime="))
                .map(|s| s.parse::<u64>().map_err(|_| format!("invalid lifetime '{s}': seconds")))
                .transpose()?
                .unwrap_or(1800);
            let grant: drover_proto::TokenGrant =
                client.post("/api/v1/tokens", &drover_proto::TokenRequest { lifetime_s: Some(lifetime) }).await?;
            println!("SLURM_JWT={}", grant.token);
            return Ok(0);
        }
        ("update", _) => return update(client, &args).await,
        (other, _) => return Err(format!("invalid keyword: {other}\n{USAGE}")),
    }
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(0)
}

/// `Slurmctld(primary) at HOST is UP`, a line per controller; whether any is down.
fn ping_lines(views: &[(String, Result<drover_proto::Controllers, ClientError>)]) -> (String, bool) {
    let mut out = String::new();
    let mut down = false;
    for (i, (addr, view)) in views.iter().enumerate() {
        let role = match view {
            Ok(v) if v.leader == Some(v.this) => "primary".to_string(),
            _ => format!("backup{}", i.max(1)),
        };
        let state = if view.is_ok() { "UP" } else { "DOWN" };
        down |= view.is_err();
        let host = addr.trim_start_matches("http://").trim_start_matches("https://");
        out.push_str(&format!("Slurmctld({role}) at {host} is {state}\n"));
    }
    (out, down)
}

/// `scontrol show config`: the settings Drover has, under Slurm's names
/// and in its layout (`Key<pad to 23> = value`, Slurm's order).
fn config_text(c: &drover_core::state::Config, controllers: &[String], now_ms: u64) -> String {
    let secs = |ms: u64| format!("{} sec", ms / 1000);
    let mut pairs: Vec<(String, String)> = vec![
        ("AuthType".into(), "auth/drover".into()),
        ("ClusterName".into(), c.cluster_name.clone()),
        ("JobRequeue".into(), "1".into()),
        ("DroverMaxRequeue".into(), c.max_requeue.to_string()),
        ("OverTimeLimit".into(), format!("{} min", c.over_time_grace_ms.div_ceil(60_000))),
        ("PriorityType".into(), "priority/multifactor".into()),
        ("SchedulerType".into(), "sched/backfill".into()),
        ("SelectType".into(), "select/cons_tres".into()),
    ];
    for (i, addr) in controllers.iter().enumerate() {
        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
        pairs.push((format!("SlurmctldHost[{i}]"), format!("controller{}({host})", i + 1)));
    }
    if let Some(port) = controllers.first().and_then(|a| a.rsplit_once(':')).map(|(_, p)| p.to_string()) {
        pairs.push(("SlurmctldPort".into(), port));
    }
    pairs.push(("SlurmdTimeout".into(), c.node_timeout_ms.map_or("0 sec".into(), secs)));
    pairs.push(("SLURM_VERSION".into(), "22.05.8".into()));
    pairs.push(("DROVER_VERSION".into(), env!("CARGO_PKG_VERSION").into()));
    let mut out = format!("Configuration data as of {}\n", super::stamp(Some(now_ms), "Unknown"));
    for (k, v) in pairs {
        out.push_str(&format!("{k:<23} = {v}\n"));
    }
    out
}

/// `scontrol update JobId=… KEY=VALUE…` or `update NodeName=… State=…`.
async fn update(client: &Client, args: &[String]) -> Result<i32, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for word in args.iter().skip_while(|a| !a.eq_ignore_ascii_case("update")).skip(1) {
        let (k, v) =
            word.split_once('=').ok_or_else(|| format!("invalid update argument: {word} (expected KEY=VALUE)"))?;
        pairs.push((k.to_ascii_lowercase(), v.to_string()));
    }
    let take = |pairs: &mut Vec<(String, String)>, keys: &[&str]| -> Option<String> {
        let i = pairs.iter().position(|(k, _)| keys.contains(&k.as_str()))?;
        Some(pairs.remove(i).1)
    };
    if let Some(nodes) = take(&mut pairs, &["nodename", "node"]) {
        let state = take(&mut pairs, &["state"]).ok_or("update NodeName=… needs State=DRAIN|RESUME")?;
        let reason = take(&mut pairs, &["reason"]);
        if let Some((k, _)) = pairs.first() {
            return Err(format!("Update of this parameter is not supported: {k}"));
        }
        let names = drover_core::hostlist::expand(&nodes).map_err(|e| format!("invalid node name '{nodes}': {e}"))?;
        for node in names {
            let result: Result<NodeView, ClientError> = match state.to_ascii_uppercase().as_str() {
                "DRAIN" => {
                    let reason = reason
                        .clone()
                        .filter(|r| !r.trim().is_empty())
                        .ok_or("You must specify a reason when DOWNING or DRAINING a node. Request denied")?;
                    client.post(&format!("/api/v1/nodes/{node}/drain"), &drover_proto::Drain { reason }).await
                }
                "RESUME" | "UNDRAIN" | "IDLE" => {
                    client.post(&format!("/api/v1/nodes/{node}/resume"), &serde_json::json!({})).await
                }
                other => return Err(format!("invalid node state specified: {other} (Drover takes DRAIN or RESUME)")),
            };
            result.map_err(|e| format!("Node {node}: {e}"))?;
        }
        return Ok(0);
    }
    let ids = take(&mut pairs, &["jobid", "job"]).ok_or("update needs JobId=… or NodeName=…")?;
    let mut body = drover_proto::UpdateJob::default();
    for (k, v) in pairs {
        match k.as_str() {
            "timelimit" => body.time_limit = Some(v),
            "partition" => body.partition = Some(v),
            "name" | "jobname" => body.name = Some(v),
            "nice" => body.nice = Some(v.parse().map_err(|_| format!("invalid Nice value: {v}"))?),
            "comment" => body.comment = Some(v),
            other => return Err(format!("Update of this parameter is not supported: {other}")),
        }
    }
    let mut failed = false;
    for id in ids.split(',').filter(|i| !i.is_empty()) {
        if let Err(e) = client.patch::<_, JobView>(&format!("/api/v1/jobs/{id}"), &body).await {
            eprintln!("scontrol: error: Job {id}: {e}");
            failed = true;
        }
    }
    Ok(i32::from(failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lines_are_laid_out_as_slurms() {
        let config =
            drover_core::state::Config { cluster_name: "peer".into(), over_time_grace_ms: 0, ..Default::default() };
        let ours = config_text(&config, &["127.0.0.1:6817".into()], 1_795_320_738_000);
        let theirs = std::fs::read_to_string(format!(
            "{}/../../tests/fixtures/slurm/21-scontrol_config.out",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert_eq!(ours.lines().next(), theirs.lines().next(), "the date line");
        // Every setting both print, on the same line; the values Slurm's own
        // configuration differs in are left out.
        let mut same = 0;
        for line in ours.lines().skip(1) {
            let key = line.split(" = ").next().unwrap().trim_end();
            if let Some(t) = theirs.lines().find(|l| l.split(" = ").next().unwrap().trim_end() == key) {
                if !["SlurmctldHost[0]", "SlurmdTimeout", "AuthType", "PriorityType"].contains(&key) {
                    assert_eq!(line, t);
                    same += 1;
                }
            }
        }
        assert!(same >= 6, "{ours}");
    }
    use crate::slurm::fixture;

    /// The keys of a `scontrol show` text, line by line.
    fn keys(text: &str) -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string())).collect())
            .collect()
    }

    fn running_job() -> JobView {
        serde_json::from_value(serde_json::json!({
            "id": "10109", "job_id": 10109, "array_job_id": null, "array_task": null, "name": "probe_ok",
            "user": "root", "uid": 0, "gid": 0, "account": null, "partition": "debug", "state": "RUNNING",
            "state_code": "R", "reason": "None", "nodes": "node1", "num_nodes": 1, "num_cpus": 1,
            "time_limit": null, "submit_time": 1_795_320_735_000u64, "start_time": 1_795_320_738_000u64,
            "end_time": null, "exit_code": null, "restart_count": 0, "work_dir": "/srv/peers/slurm",
            "stdout": "/tmp/slurm-peer/tmp/probe_ok.10109.out", "stderr": "/tmp/slurm-peer/tmp/probe_ok.10109.out",
            "terminal": false
        }))
        .unwrap()
    }

    #[test]
    fn a_job_has_slurms_keys_in_slurms_lines_and_our_values_where_we_have_them() {
        let ours = render(&job_record(&running_job(), 1_795_320_738_000), false);
        let theirs = fixture("14-scontrol_job_ok");
        assert_eq!(keys(&ours), keys(&theirs));
        for same in [
            "JobId=10109 JobName=probe_ok",
            "   UserId=root(0) GroupId=root(0) MCS_label=N/A",
            "   JobState=RUNNING Reason=None Dependency=(null)",
            "   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0",
            "   RunTime=00:00:00 TimeLimit=UNLIMITED TimeMin=N/A",
            "   SubmitTime=2026-11-22T04:12:15 EligibleTime=2026-11-22T04:12:15",
            "   StartTime=2026-11-22T04:12:18 EndTime=Unknown Deadline=N/A",
            "   NodeList=node1",
            "   BatchHost=node1",
            "   WorkDir=/srv/peers/slurm",
            "   StdOut=/tmp/slurm-peer/tmp/probe_ok.10109.out",
        ] {
            assert!(theirs.lines().any(|l| l == same), "the fixture has {same:?}");
            assert!(ours.lines().any(|l| l == same), "ours has {same:?}:\n{ours}");
        }
        assert!(ours.ends_with("   Power=\n   \n\n"), "{ours:?}");
        let one = render(&job_record(&running_job(), 0), true);
        assert!(one.starts_with("JobId=10109 JobName=probe_ok UserId=root(0)") && one.ends_with("Power= \n"), "{one}");
        assert_eq!(one.lines().count(), 1);
    }

    /// Issue #20 item 7: no placeholders where the job said something.
    #[test]
    fn a_job_shows_what_it_asked_for_its_dependency_and_why_it_failed() {
        let waiting = JobView {
            state: "PENDING".into(),
            reason: "Dependency".into(),
            start_time: None,
            nodes: String::new(),
            ntasks: 4,
            cpus_per_task: 2,
            num_cpus: 8,
            nice: 10,
            mem_per_cpu_mb: Some(512),
            dependency: Some("afterok:12(unfulfilled),afterany:13(unfulfilled)".into()),
            req_nodes: "node[1-2]".into(),
            features: Some("fast".into()),
            stdin: "/data/in.txt".into(),
            stdout: "/home/u/out-10109.txt".into(),
            ..running_job()
        };
        let text = render(&job_record(&waiting, 0), false);
        for want in [
            "   Priority=1 Nice=10 Account=(null) QOS=normal",
            "   JobState=PENDING Reason=Dependency Dependency=afterok:12(unfulfilled),afterany:13(unfulfilled)",
            "   ReqNodeList=node[1-2] ExcNodeList=(null)",
            "   NumNodes=1 NumCPUs=8 NumTasks=4 CPUs/Task=2 ReqB:S:C:T=0:0:*:*",
            "   TRES=cpu=8,mem=4G,node=1,billing=8",
            "   MinCPUsNode=2 MinMemoryCPU=512M MinTmpDiskNode=0",
            "   Features=fast DelayBoot=00:00:00",
            "   StdIn=/data/in.txt",
            "   StdOut=/home/u/out-10109.txt",
        ] {
            assert!(text.lines().any(|l| l == want), "{want:?}:\n{text}");
        }
        let failed = JobView {
            state: "FAILED".into(),
            reason: "could not start on node1: cannot open the output file /x/o: Permission denied (os error 13)"
                .into(),
            mem_per_node_mb: Some(2048),
            mem_mb: Some(2048),
            ..running_job()
        };
        let text = render(&job_record(&failed, 0), false);
        let reason =
            "Reason=could_not_start_on_node1:_cannot_open_the_output_file_/x/o:_Permission_denied_(os_error_13)";
        assert!(text.contains(&format!("JobState=FAILED {reason} Dependency=(null)")), "{text}");
        assert!(text.contains("MinMemoryNode=2G") && text.contains("TRES=cpu=1,mem=2G,node=1"), "{text}");
    }

    #[test]
    fn nodes_and_partitions_have_slurms_keys() {
        let node = NodeView {
            state: "MIXED".into(),
            alloc: drover_core::Resources::new(3, 0, 0),
            jobs: 3,
            ..crate::slurm::probe_node("node1")
        };
        let theirs = fixture("19-scontrol_nodes");
        let first_node = theirs.split("\n\n").next().unwrap();
        assert_eq!(keys(&render(&node_record(&node), false)), keys(first_node));
        let p = crate::slurm::probe_partition();
        let two = [node.clone(), NodeView { name: "node2".into(), ..node }];
        let ours = render(&partition_record(&p, &two), false);
        assert_eq!(keys(&ours), keys(&fixture("20-scontrol_part")));
        for same in [
            "   Nodes=node[1-2]",
            "   AllocNodes=ALL Default=YES QoS=N/A",
            "   MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED",
        ] {
            assert!(ours.lines().any(|l| l == same), "{same:?}:\n{ours}");
        }
    }
}
