//! The daemons the binary runs: `drover controller`, `drover agent` and
//! `drover agent-watchdog`, from the arguments `drover-cli` parsed. Here,
//! not in the client crate, so that clients carry none of the server code.

use drover_agent::batch::LauncherConfig;
use drover_agent::daemon::{self, AgentOptions};
use drover_cli::client::Client;
use drover_cli::cluster::{parse_peers, AgentArgs, ControllerArgs, MemberChange, RaftArgs, WatchdogArgs};
use drover_cli::logging::Log;
use drover_controller::leadership::OnLeadership;
use drover_controller::service::{self, Options};
use std::path::Path;
use std::time::Duration;

/// `drover agent-watchdog`: started by an agent, not by people.
pub fn watchdog(a: WatchdogArgs) -> Result<(), String> {
    drover_agent::watchdog::run(&a.state_dir, Duration::from_millis(a.fence_after_ms.max(1)))
}

pub fn parse_mem(text: &str) -> Result<u64, String> {
    drover_core::memory::parse_memory_mb(text).map_err(|e| format!("invalid memory '{text}': {e}"))
}

pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

pub async fn controller(a: ControllerArgs, client: &Client, log: Log) -> Result<(), String> {
    match a.change {
        Some(MemberChange::Join { id, addr }) => {
            let c: drover_proto::Controllers =
                client.post("/api/v1/controllers", &drover_proto::JoinController { id, addr }).await?;
            println!("controller {id} joined; voters: {}", voters(&c));
            return Ok(());
        }
        Some(MemberChange::Leave { id }) => {
            let c: drover_proto::Controllers = client.delete(&format!("/api/v1/controllers/{id}")).await?;
            println!("controller {id} left; voters: {}", voters(&c));
            return Ok(());
        }
        None => {}
    }
    let membership = match (&a.peers, &a.join) {
        (Some(p), _) => {
            let peers = parse_peers(p)?;
            if !peers.contains_key(&a.id) {
                return Err(format!("--id {} is not among --peers {p}", a.id));
            }
            Some(drover_controller::Membership::Static(peers))
        }
        (None, Some(_)) => Some(drover_controller::Membership::Join),
        (None, None) => None,
    };
    let listen = match (&a.listen, &membership) {
        (Some(l), _) => l.clone(),
        (None, Some(drover_controller::Membership::Static(peers))) => peers[&a.id].clone(),
        (None, _) => "127.0.0.1:6817".into(),
    };
    let listen = listen.parse().map_err(|e| format!("invalid --listen '{listen}': {e}"))?;
    let timing = timing(&a.raft)?;
    let accounting = match a.raft.accounting.as_deref() {
        Some("none") => None,
        Some(url) => Some(url.to_string()),
        None => {
            let dir = std::env::current_dir().map_err(|e| e.to_string())?.join(&a.state_dir);
            Some(format!("sqlite://{}", dir.join("accounting.db").display()))
        }
    };
    let half_life = match drover_core::time::parse_time_limit(&a.raft.fairshare_half_life) {
        Ok(Some(secs)) if secs > 0 => Duration::from_secs(secs),
        _ => {
            return Err(format!(
                "invalid --fairshare-half-life '{}': use D-HH or HH:MM:SS, more than 0",
                a.raft.fairshare_half_life
            ))
        }
    };
    let purge_after = match a.raft.purge_after.as_deref().map(drover_core::time::parse_time_limit) {
        None => None,
        Some(Ok(Some(secs))) if secs > 0 => Some(Duration::from_secs(secs)),
        Some(_) => {
            return Err(format!(
                "invalid --purge-after '{}': use D-HH (e.g. 365-0) or HH:MM:SS, more than 0",
                a.raft.purge_after.as_deref().unwrap_or_default()
            ))
        }
    };
    if a.raft.priority_weight_fairshare > 0 && accounting.is_none() {
        return Err(
            "--priority-weight-fairshare needs accounting (past use comes from it); drop --accounting none".into()
        );
    }
    let healer = healer(&a).await?;
    let on_leadership = floating_ip(&a).await?;
    drover_cli::logging::init("controller", format!("controller{}", a.id), log);
    // The log, the snapshots and the accounting database hold every job's
    // environment and script: the controller's alone.
    private_files(&a.state_dir, 0o700)?;
    let key = drover_auth::load_key(&a.key_file)?;
    let mut opts = Options::new(a.state_dir, listen, key);
    opts.id = a.id;
    opts.membership = membership;
    opts.join = a.join;
    opts.accounting = accounting;
    opts.sched.priority.weight_fairshare = a.raft.priority_weight_fairshare;
    opts.fairshare_half_life = half_life;
    opts.min_job_age = Duration::from_secs(a.raft.min_job_age);
    opts.purge_after = purge_after;
    opts.leader_hook = a.raft.leader_hook;
    opts.timing = timing;
    opts.node_timeout = Duration::from_secs(a.node_timeout.max(1));
    opts.auth_socket = a.auth_socket;
    opts.operators = a.operators;
    opts.policy.max_submit_jobs = a.raft.max_submit_jobs;
    opts.sched.max_running_per_user = a.raft.max_jobs.filter(|&n| n > 0);
    opts.policy.max_jobs_per_request = a.raft.max_jobs_per_request.max(1);
    let ceiling = drover_core::limits::SpecLimits::CEILING.script_bytes;
    if a.raft.max_script_size > ceiling {
        return Err(format!("--max-script-size {} is above the most Drover stores, {ceiling}", a.raft.max_script_size));
    }
    opts.policy.limits.script_bytes = a.raft.max_script_size;
    opts.max_connections = a.raft.max_connections;
    opts.tls = a.tls.serve();
    opts.tls_ca = a.tls.tls_ca.clone();
    opts.healer = healer;
    opts.on_leadership = on_leadership;
    service::run(opts, shutdown_signal()).await
}

/// The floating IP through EC2, if `--ec2-floating-ip` asks for it.
async fn floating_ip(a: &ControllerArgs) -> Result<Vec<std::sync::Arc<dyn OnLeadership>>, String> {
    let Some(ip) = a.raft.ec2_floating_ip.clone() else { return Ok(Vec::new()) };
    let enis = a.raft.ec2_floating_ip_eni.clone().unwrap_or_default();
    // One interface, or this controller's among ID=ENI pairs.
    let eni = if enis.contains('=') {
        enis.split(',')
            .filter_map(|p| p.split_once('='))
            .find(|(id, _)| id.trim().parse() == Ok(a.id))
            .map(|(_, eni)| eni.trim().to_string())
            .ok_or_else(|| format!("--ec2-floating-ip-eni '{enis}' names no interface for controller {}", a.id))?
    } else {
        enis
    };
    let settings = drover_ec2::floating_ip::Settings {
        ip,
        eni,
        route_table: a.raft.ec2_route_table.clone(),
        device: a.raft.floating_ip_device.clone(),
    };
    Ok(vec![std::sync::Arc::new(FloatingIp(drover_ec2::floating_ip::FloatingIp::new(settings).await?))])
}

/// The EC2 floating IP as something that follows the leadership.
struct FloatingIp(drover_ec2::floating_ip::FloatingIp);

impl OnLeadership for FloatingIp {
    fn name(&self) -> String {
        self.0.describe()
    }

    fn acquire(&self) -> futures_util::future::BoxFuture<'_, Result<String, String>> {
        Box::pin(self.0.acquire())
    }

    fn release(&self) -> futures_util::future::BoxFuture<'_, Result<String, String>> {
        Box::pin(self.0.release())
    }
}

/// The healer `--heal` asks for, with its policy.
async fn healer(a: &ControllerArgs) -> Result<Option<drover_controller::healing::Healer>, String> {
    use drover_healer::{command, local};
    use std::sync::Arc;
    let h = &a.healing;
    if !(h.heal_poll.is_finite() && (0.1..=3600.0).contains(&h.heal_poll)) {
        return Err(format!("--heal-poll {} is out of range 0.1-3600 seconds", h.heal_poll));
    }
    let suspend_exclude = match &h.suspend_exclude {
        Some(list) => drover_core::hostlist::expand(list).map_err(|e| format!("--suspend-exclude: {e}"))?,
        None => Vec::new(),
    };
    let backoff_ms = h
        .repair_backoff
        .split(',')
        .map(|s| s.trim().parse::<u64>().ok().filter(|&s| s <= 7 * 86_400).map(|s| s * 1000))
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| format!("invalid --repair-backoff '{}': give seconds, e.g. 0,60,900,3600", h.repair_backoff))?;
    let bounds = |flag: &str, v: &Option<String>| -> Result<Vec<(String, u32)>, String> {
        let Some(v) = v else { return Ok(Vec::new()) };
        v.split(',')
            .map(|pair| {
                let (p, n) = pair.split_once('=').ok_or(())?;
                Ok((p.trim().to_string(), n.trim().parse().map_err(|_| ())?))
            })
            .collect::<Result<_, ()>>()
            .map_err(|()| format!("invalid {flag} '{v}': give PARTITION=N[,PARTITION=N…]"))
    };
    let min_powered = bounds("--power-min-nodes", &h.power_min_nodes)?;
    let max_powered = bounds("--power-max-nodes", &h.power_max_nodes)?;
    let policy = drover_healer::Policy {
        poll_ms: (h.heal_poll * 1000.0) as u64,
        down_grace_ms: h.heal_down_grace * 1000,
        impaired_grace_ms: h.heal_impaired_grace * 1000,
        replace_timeout_ms: h.replace_timeout.max(1) * 1000,
        resume_timeout_ms: h.resume_timeout.max(1) * 1000,
        suspend_timeout_ms: h.suspend_timeout.max(1) * 1000,
        suspend_time_ms: h.suspend_time.map(|s| s * 1000),
        suspend_exclude,
        min_powered,
        max_powered,
        resume_rate: h.resume_rate,
        suspend_rate: h.suspend_rate,
        backoff_ms,
    };
    let provider: Arc<dyn drover_healer::Provider> = match a.heal.as_str() {
        "none" => return Ok(None),
        "local" => {
            let dir =
                a.heal_state_dir.clone().ok_or("--heal local needs --heal-state-dir (the 'drover up' directory)")?;
            let exe = std::env::current_exe().map_err(|e| format!("cannot find the drover binary: {e}"))?;
            Arc::new(local::Local::new(std::path::absolute(&dir).map_err(|e| e.to_string())?, exe))
        }
        "command" => Arc::new(command::Command::new(command::Programs {
            resume: a.resume_program.clone(),
            suspend: a.suspend_program.clone(),
            replace: a.replace_program.clone(),
            timeout: Duration::from_secs(a.program_timeout.max(1)),
            scratch: std::path::absolute(&a.state_dir).map_err(|e| e.to_string())?,
        })?),
        "aws-ec2" => Arc::new(
            drover_ec2::Ec2::new(drover_ec2::Settings {
                cluster: a.ec2.ec2_cluster.clone().unwrap_or_default(),
                launch_template: a.ec2.ec2_launch_template.clone(),
                instance_types: a.ec2.ec2_instance_types.clone(),
                terminate_replaced: a.ec2.ec2_terminate_replaced,
                orphan_grace: (a.ec2.ec2_orphan_grace > 0).then(|| Duration::from_secs(a.ec2.ec2_orphan_grace)),
            })
            .await?,
        ),
        other => return Err(format!("unknown --heal provider '{other}': use none, local, command or aws-ec2")),
    };
    if policy.suspend_time_ms.is_some() && a.heal == "command" && a.suspend_program.is_none() {
        return Err("--suspend-time with --heal command needs --suspend-program".into());
    }
    Ok(Some(drover_controller::healing::Healer { provider, policy }))
}

fn voters(c: &drover_proto::Controllers) -> String {
    c.members.iter().filter(|m| m.voter).map(|m| format!("{}={}", m.id, m.addr)).collect::<Vec<_>>().join(", ")
}

pub fn heartbeat_interval(secs: f64) -> Result<Duration, String> {
    if !(0.05..=60.0).contains(&secs) {
        return Err(format!("--heartbeat {secs} is out of range 0.05-60 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub async fn agent(a: AgentArgs, log: Log) -> Result<(), String> {
    let (cpus, mem) = daemon::detect_resources();
    let memory_mb = match &a.memory {
        Some(m) => parse_mem(m)?,
        None => mem,
    };
    let mut launcher = LauncherConfig::new(a.state_dir.join("spool"));
    launcher.kill_grace = Duration::from_secs(a.kill_grace);
    let opts = AgentOptions {
        controller: a.controller,
        name: a.name.unwrap_or_else(daemon::hostname),
        cpus: a.cpus.unwrap_or(cpus),
        memory_mb,
        gpus: a.gpus,
        features: a.features,
        heartbeat: heartbeat_interval(a.heartbeat)?,
        launcher,
        key: drover_auth::load_key(&a.key_file)?,
        health_check: a.health_check.map(|c| (c, Duration::from_secs(a.health_interval.max(1)))),
        listen: match a.listen.as_str() {
            "none" => None,
            l => Some(l.parse().map_err(|e| format!("invalid --listen '{l}' (want IP:PORT or none): {e}"))?),
        },
        fence: match a.fence_after {
            0.0 => None,
            f if !(0.1..=3600.0).contains(&f) => {
                return Err(format!("--fence-after {f} is out of range 0.1-3600 seconds"))
            }
            f => Some((
                std::env::current_exe().map_err(|e| format!("cannot find the drover binary: {e}"))?,
                Duration::from_secs_f64(f),
            )),
        },
        tls: a.tls.serve(),
        tls_ca: a.tls.tls_ca.clone(),
    };
    drover_cli::logging::init("agent", opts.name.clone(), log);
    // Jobs' users pass through (to their scripts in the spool), nothing more.
    private_files(&a.state_dir, 0o711)?;
    daemon::run(opts, shutdown_signal()).await
}

/// A daemon's files are its own: everything it creates from now on is
/// mode 0600 (0700 for directories; what others must reach is opened up
/// explicitly), and its state directory gets `mode`, whatever an earlier
/// version or the umask it was started with left there.
fn private_files(state_dir: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    // Parents as the umask it was started with makes them (an agent's
    // users pass through them).
    std::fs::create_dir_all(state_dir).map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe { libc::umask(0o077) };
    std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", state_dir.display()))
}

/// Raft's timing from the flags, checked.
pub fn timing(raft: &RaftArgs) -> Result<drover_controller::Timing, String> {
    let t = raft.timing()?;
    Ok(drover_controller::Timing {
        heartbeat_ms: t.heartbeat_ms,
        election_min_ms: t.election_min_ms,
        election_max_ms: t.election_max_ms,
        snapshot_every: t.snapshot_every,
    })
}
