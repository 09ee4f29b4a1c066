//! Operator commands: drain and resume nodes, requeue jobs, follow events,
//! watch a recovery, and inject faults into a `drover up` cluster.

use crate::client::Client;
use clap::Subcommand;
use drover_proto::{Controllers, Drain, EventList, EventRecord, JobView, NodeList, NodeView, Requeue};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub async fn drain(client: &Client, node: &str, reason: &str) -> Result<i32, String> {
    let v: NodeView = client.post(&format!("/api/v1/nodes/{node}/drain"), &Drain { reason: reason.into() }).await?;
    println!("node {} is {} ({})", v.name, v.state.to_lowercase(), v.reason.unwrap_or_default());
    Ok(0)
}

pub async fn resume(client: &Client, node: &str) -> Result<i32, String> {
    let v: NodeView = client.post(&format!("/api/v1/nodes/{node}/resume"), &serde_json::json!({})).await?;
    println!("node {} is {}", v.name, v.state.to_lowercase());
    Ok(0)
}

pub async fn requeue(client: &Client, ids: &[String], hold: bool) -> Result<i32, String> {
    let mut failed = false;
    for id in ids {
        match client.post::<_, JobView>(&format!("/api/v1/jobs/{id}/requeue"), &Requeue { hold }).await {
            Ok(v) => println!("job {} requeued ({})", v.id, v.state),
            Err(e) => {
                eprintln!("drover: error: job {id}: {e}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

/// `drover token`: a session token for the REST API (`Authorization:
/// Bearer …`), good for `lifetime`.
pub async fn token(client: &Client, lifetime: &str) -> Result<i32, String> {
    let grant = grant_token(client, lifetime).await?;
    println!("{}", grant.token);
    Ok(0)
}

/// `drover dashboard`: a link to the web dashboard that signs the browser in.
pub async fn dashboard(client: &Client, lifetime: &str) -> Result<i32, String> {
    println!("{}", dashboard_link(client, lifetime).await?);
    Ok(0)
}

/// The leader's dashboard URL with a session token in the fragment (which
/// browsers do not send to the server, so it stays out of access logs).
pub async fn dashboard_link(client: &Client, lifetime: &str) -> Result<String, String> {
    let grant = grant_token(client, lifetime).await?;
    Ok(format!("{}/#token={}", client.leader(), grant.token))
}

async fn grant_token(client: &Client, lifetime: &str) -> Result<drover_proto::TokenGrant, String> {
    let lifetime_s = parse_lifetime(lifetime)?;
    client
        .post("/api/v1/tokens", &drover_proto::TokenRequest { lifetime_s: Some(lifetime_s) })
        .await
        .map_err(String::from)
}

/// `90`, `90s`, `30m`, `8h`, `2d`: seconds.
fn parse_lifetime(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid lifetime '{text}': want a number with s, m, h or d (e.g. 8h)")),
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n.saturating_mul(scale))
        .ok_or_else(|| format!("invalid lifetime '{text}': want a positive number with s, m, h or d (e.g. 8h)"))
}

pub(crate) fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!("{:02}:{:02}:{:02}.{:03}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60, ms % 1000)
}

fn print_event(e: &EventRecord) {
    println!("{} {:>6} {:<17} {}", clock(e.time_ms), e.seq, e.kind, e.text);
}

/// `drover events [-f]`: the controller's recent events (UTC times), and
/// with `-f` the new ones as they happen.
pub async fn events(client: &Client, follow: bool, kinds: &[String], json: bool) -> Result<i32, String> {
    let wanted = |e: &EventRecord| kinds.is_empty() || kinds.iter().any(|k| k.eq_ignore_ascii_case(&e.kind));
    let mut after = 0;
    let mut first = true;
    loop {
        // Later requests wait at the controller for the next event.
        let wait = if first { "0" } else { "25" };
        first = false;
        let list: EventList =
            client.get("/api/v1/events", &[("after", after.to_string()), ("wait", wait.to_string())]).await?;
        for e in &list.events {
            after = after.max(e.seq);
            if wanted(e) && json {
                println!("{}", serde_json::to_string(e).map_err(|e| e.to_string())?);
            } else if wanted(e) {
                print_event(e);
            }
        }
        if !follow {
            return Ok(0);
        }
    }
}

/// `drover watch recovery`: node states and the latest failures and
/// requeues, redrawn every second until Ctrl-C (`--count N` stops after N).
pub async fn watch_recovery(client: &Client, count: Option<u32>) -> Result<i32, String> {
    let interesting = [
        "NodeStateChanged",
        "JobRequeued",
        "StaleStep",
        "NodeRegistered",
        "RepairStarted",
        "RepairActed",
        "RepairDone",
        "RepairFailed",
    ];
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut shown = 0;
    loop {
        let nodes: NodeList = client.get("/api/v1/nodes", &[]).await?;
        let events: EventList = client.get("/api/v1/events", &[("after", "0".to_string())]).await?;
        if tty {
            print!("\x1b[2J\x1b[H");
        }
        println!("{:<12} {:<10} {:<13} {:>5}  REASON / REPAIR", "NODE", "STATE", "POWER", "JOBS");
        for n in &nodes.nodes {
            println!(
                "{:<12} {:<10} {:<13} {:>5}  {}{}",
                n.name,
                format!("{}{}", n.state.to_lowercase(), n.power_mark()),
                n.power.to_lowercase(),
                n.jobs,
                n.reason.clone().unwrap_or_default(),
                n.repair.as_ref().map(|r| format!(" [{r}]")).unwrap_or_default()
            );
        }
        println!();
        let recent: Vec<&EventRecord> =
            events.events.iter().filter(|e| interesting.contains(&e.kind.as_str())).collect();
        println!("recent failures, repairs, recoveries and requeues ({} in all):", recent.len());
        for e in recent.iter().rev().take(12).rev() {
            print_event(e);
        }
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return Ok(0);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}

#[derive(Subcommand)]
pub enum Chaos {
    /// SIGKILL a node's agent (its jobs keep running; the healer, or
    /// 'drover up', starts it again).
    KillAgent { node: String },
    /// Stop a node's machine through the healer's provider (an EC2
    /// instance stopped, a local agent stopped, the site's suspend
    /// program), as a failure would: the healer notices and repairs it.
    StopInstance { node: String },
    /// SIGSTOP a node's agent, and SIGCONT it after --for seconds if given.
    HangAgent {
        node: String,
        #[arg(long = "for")]
        secs: Option<f64>,
    },
    /// SIGKILL a controller, the leader if no id is given (restart it with
    /// 'drover up').
    KillController { id: Option<u64> },
    /// SIGSTOP a controller (the leader if no id is given), and SIGCONT it
    /// after --for seconds if given.
    HangController {
        id: Option<u64>,
        #[arg(long = "for")]
        secs: Option<f64>,
    },
    /// SIGKILL a running job's processes on its node.
    KillJobStep { job: String },
}

/// The pid `drover up` recorded for `role` under `state`.
fn pid_of(state: &Path, role: &str) -> Result<i32, String> {
    let started = crate::cluster::read_pids(state);
    if started.is_empty() {
        return Err(format!("no cluster started by 'drover up' in {}", state.display()));
    }
    started
        .into_iter()
        .rfind(|s| s.role == role)
        .map(|s| s.pid)
        .ok_or_else(|| format!("'drover up' in {} started no {role}", state.display()))
}

fn signal(pid: i32, sig: i32) -> Result<(), String> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(format!("cannot signal pid {pid}: {}", std::io::Error::last_os_error()))
    }
}

pub async fn chaos(client: &Client, state: &Path, what: Chaos) -> Result<i32, String> {
    match what {
        Chaos::KillAgent { node } => {
            let pid = pid_of(state, &node)?;
            signal(pid, libc::SIGKILL)?;
            wait_gone(pid).await;
            println!("killed the agent of {node} (pid {pid}, SIGKILL); its jobs keep running until it is back or they are requeued");
        }
        Chaos::StopInstance { node } => {
            let done: drover_proto::MachineStopped =
                client.post(&format!("/api/v1/nodes/{node}/stop-machine"), &serde_json::json!({})).await?;
            println!("stopped the machine of {} through {}: {}", done.node, done.provider, done.detail);
        }
        Chaos::HangAgent { node, secs } => hang(&format!("the agent of {node}"), pid_of(state, &node)?, secs).await?,
        Chaos::KillController { id } => {
            let (who, pid) = controller_pid(client, state, id).await?;
            signal(pid, libc::SIGKILL)?;
            wait_gone(pid).await;
            println!("killed {who} (pid {pid}, SIGKILL); 'drover up' restarts it with every job");
        }
        Chaos::HangController { id, secs } => {
            let (who, pid) = controller_pid(client, state, id).await?;
            hang(&who, pid, secs).await?;
        }
        Chaos::KillJobStep { job } => {
            let v: JobView = client.get(&format!("/api/v1/jobs/{job}"), &[]).await?;
            let (dir, pid) = step_of(state, v.job_id, v.restart_count)
                .ok_or_else(|| format!("job {} has no running step under {}", v.id, state.display()))?;
            signal(-pid, libc::SIGKILL)?;
            println!("killed job {}'s step (process group {pid}, SIGKILL) in {}", v.id, dir.display());
        }
    }
    Ok(0)
}

/// Waits (up to 5 s) until a killed process has exited, so that a `drover
/// up` right after does not take the dying process for a running one.
async fn wait_gone(pid: i32) {
    // Exited for good: a zombie or nothing (`alive` already counts a
    // process with SIGKILL pending as gone, but it still holds its port).
    let exited = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z ") || s.contains(") X "))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !exited(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// SIGSTOPs `pid`, and SIGCONTs it after `secs` if given.
async fn hang(who: &str, pid: i32, secs: Option<f64>) -> Result<(), String> {
    signal(pid, libc::SIGSTOP)?;
    println!("stopped {who} (pid {pid}, SIGSTOP)");
    if let Some(secs) = secs {
        tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await;
        signal(pid, libc::SIGCONT)?;
        println!("resumed {who} (pid {pid}, SIGCONT) after {secs} s");
    }
    Ok(())
}

/// Which controller (for messages) and the pid of controller `id` of the
/// cluster under `state`, or of the current leader.
async fn controller_pid(client: &Client, state: &Path, id: Option<u64>) -> Result<(String, i32), String> {
    let single = crate::cluster::read_pids(state).iter().any(|s| s.role == "controller");
    if single {
        if id.is_some_and(|i| i != 1) {
            return Err(format!("the cluster in {} has one controller (id 1)", state.display()));
        }
        return Ok(("the controller".into(), pid_of(state, "controller")?));
    }
    let (id, leader) = match id {
        Some(id) => (id, false),
        None => (leader_id(client).await?, true),
    };
    let who = if leader { format!("controller {id} (the leader)") } else { format!("controller {id}") };
    Ok((who, pid_of(state, &format!("controller{id}"))?))
}

/// The leader, as the first controller that knows one says.
async fn leader_id(client: &Client) -> Result<u64, String> {
    let views = client.get_each::<Controllers>("/api/v1/controllers").await?;
    views
        .into_iter()
        .find_map(|(_, v)| v.ok().and_then(|c| c.leader))
        .ok_or_else(|| "no controller knows a leader; name one: drover chaos kill-controller ID".to_string())
}

/// `drover controllers`: each controller's own view, side by side, with
/// the leader's replication lag per member.
pub async fn controllers(client: &Client, json: bool) -> Result<i32, String> {
    let views = client.get_each::<Controllers>("/api/v1/controllers").await?;
    if json {
        let out: Vec<serde_json::Value> = views
            .iter()
            .map(|(base, v)| match v {
                Ok(c) => serde_json::json!({ "url": base, "status": c }),
                Err(e) => serde_json::json!({ "url": base, "error": e.to_string() }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
        return Ok(0);
    }
    let leader_view = views.iter().find_map(|(_, v)| v.as_ref().ok().filter(|c| c.leader == Some(c.this)));
    let lag_of = |id: u64| {
        leader_view.and_then(|l| l.members.iter().find(|m| m.id == id)).and_then(|m| m.lag).map(|l| l.to_string())
    };
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    println!(
        "{:<4} {:<22} {:<10} {:>6} {:>7} {:>9} {:>9} {:>9} {:>6}",
        "ID", "URL", "ROLE", "TERM", "LEADER", "LAST_LOG", "APPLIED", "SNAPSHOT", "LAG"
    );
    let mut healthy = 0;
    for (base, v) in &views {
        let url = base.trim_start_matches("http://").trim_start_matches("https://");
        match v {
            Ok(c) => {
                healthy += 1;
                println!(
                    "{:<4} {:<22} {:<10} {:>6} {:>7} {:>9} {:>9} {:>9} {:>6}",
                    c.this,
                    url,
                    c.role,
                    c.term,
                    opt(c.leader),
                    opt(c.last_log_index),
                    opt(c.applied_index),
                    opt(c.snapshot_index),
                    lag_of(c.this).unwrap_or_else(|| "-".into())
                );
            }
            Err(e) => println!("{:<4} {url:<22} unreachable: {e}", "?"),
        }
    }
    if let Some(l) = leader_view {
        let voters: Vec<String> = l.members.iter().filter(|m| m.voter).map(|m| m.id.to_string()).collect();
        let learners: Vec<String> = l.members.iter().filter(|m| !m.voter).map(|m| m.id.to_string()).collect();
        println!(
            "members: voters {}{}",
            voters.join(","),
            match learners.is_empty() {
                true => String::new(),
                false => format!(", learners {}", learners.join(",")),
            }
        );
    }
    Ok(if healthy > 0 && leader_view.is_some() { 0 } else { 1 })
}

/// The spool directory and leader pid of a job's running step, on any of
/// the cluster's agents.
fn step_of(state: &Path, job_id: u64, attempt: u32) -> Option<(PathBuf, i32)> {
    let agents = std::fs::read_dir(state.join("agents")).ok()?;
    agents.flatten().find_map(|a| {
        let dir = a.path().join("spool").join(format!("job{job_id}.{attempt}"));
        let pid = std::fs::read_to_string(dir.join("pid")).ok()?.trim().parse().ok()?;
        Some((dir, pid))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn lifetimes() {
        assert_eq!(super::parse_lifetime("90"), Ok(90));
        assert_eq!(super::parse_lifetime("30m"), Ok(1800));
        assert_eq!(super::parse_lifetime("8h"), Ok(28_800));
        assert_eq!(super::parse_lifetime("2d"), Ok(172_800));
        assert!(super::parse_lifetime("0h").is_err());
        assert!(super::parse_lifetime("h").unwrap_err().contains("e.g. 8h"));
        assert!(super::parse_lifetime("3w").is_err());
    }
}
