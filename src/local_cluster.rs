//! `drover up` and `drover down`: a whole local cluster as separate
//! processes of this binary under `./.drover/`, started, started again and
//! stopped by pid.

use crate::daemons::{heartbeat_interval, parse_mem, shutdown_signal};
use crate::up_settings::Settings;
use drover_agent::daemon;
use drover_cli::client::Client;
use drover_cli::cluster::{alive, read_pids, DownArgs, Started, TlsArgs, UpArgs};
use drover_proto::NodeList;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn spawn_daemon(state: &Path, role: &str, args: &[String]) -> Result<i32, String> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the drover binary: {e}"))?;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let logs = state.join("logs");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&logs)
        .map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    // Logs name users, jobs and their paths: the operator's alone.
    std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    let path = logs.join(format!("{role}.log"));
    let log = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    let child = std::process::Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        // Its own process group: a detached cluster outlives this shell's Ctrl-C.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {role}: {e}"))?;
    let pid = child.id() as i32;
    let mut pids = std::fs::read_to_string(state.join("pids")).unwrap_or_default();
    pids.push_str(&format!("{role} {pid}\n"));
    std::fs::write(state.join("pids"), pids).map_err(|e| e.to_string())?;
    Ok(pid)
}

pub async fn up(a: UpArgs) -> Result<(), String> {
    if a.nodes == 0 || a.nodes > 256 {
        return Err(format!("--nodes {} is out of range 1-256", a.nodes));
    }
    let max_nodes = a.max_nodes.unwrap_or(a.nodes);
    if max_nodes < a.nodes || max_nodes > 256 {
        return Err(format!("--max-nodes {max_nodes} is out of range {}-256 (at least --nodes)", a.nodes));
    }
    if max_nodes > a.nodes && a.heal != "local" {
        return Err("--max-nodes starts nodes through the local healer: drop --heal or give --heal local".into());
    }
    if a.controllers == 0 || a.controllers > 7 {
        return Err(format!("--controllers {} is out of range 1-7 (3 or 5 for fault tolerance)", a.controllers));
    }
    a.raft.timing()?;
    if u32::from(a.port) + u32::from(a.controllers) > 65_536 {
        return Err(format!("--port {} leaves no room for {} controllers", a.port, a.controllers));
    }
    heartbeat_interval(a.heartbeat)?;
    let heal_args = a.heal_args(&std::path::absolute(&a.state_dir).map_err(|e| e.to_string())?)?;
    if a.node_timeout as f64 <= a.heartbeat * 2.0 {
        return Err(format!(
            "--node-timeout {} must be more than two heartbeats (--heartbeat {})",
            a.node_timeout, a.heartbeat
        ));
    }
    let state = std::path::absolute(&a.state_dir).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&state).map_err(|e| format!("cannot create {}: {e}", state.display()))?;
    {
        // Users reach the credential socket and the controllers' address
        // here by name; they may not list or read the rest.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| format!("cannot set the mode of {}: {e}", state.display()))?;
    }
    let running = read_pids(&state);
    // Forget what is no longer running, keep what is: `up` is idempotent.
    let keep: Vec<&Started> = running.iter().filter(|s| alive(s.pid)).collect();
    let running_settings = if keep.is_empty() { None } else { Settings::read(&state) };
    let (host_cpus, host_mem) = daemon::detect_resources();
    let cpus = a.cpus_per_node.unwrap_or(host_cpus);
    let mem = match (&a.mem_per_node, running_settings.as_ref().and_then(|s| s.get("--mem-per-node"))) {
        (Some(m), _) => parse_mem(m)?,
        // Nodes added to a running cluster get what the others have.
        (None, Some(running)) => parse_mem(running)?,
        (None, None) => host_mem / u64::from(a.nodes),
    };
    // A cluster once up with TLS stays so.
    let tls_wanted = a.tls || state.join("tls/ca.pem").exists();
    let wanted = Settings(vec![
        ("--nodes", a.nodes.to_string()),
        ("--cpus-per-node", cpus.to_string()),
        ("--mem-per-node", format!("{mem}M")),
        ("--port", a.port.to_string()),
        ("--controllers", a.controllers.to_string()),
        ("--tls", tls_wanted.to_string()),
        ("--node-timeout", a.node_timeout.to_string()),
        ("--heartbeat", a.heartbeat.to_string()),
        ("--kill-grace", a.kill_grace.to_string()),
        ("--health-check", a.health_check.clone().unwrap_or_default()),
        ("--health-interval", a.health_interval.to_string()),
        ("controller flags", a.raft.to_args().join(" ")),
        ("healer flags", heal_args.join(" ")),
        ("--max-nodes", max_nodes.to_string()),
    ]);
    if let Some(running) = &running_settings {
        let differences = wanted.differences(running);
        if !differences.is_empty() {
            return Err(crate::up_settings::refusal(&state, &differences));
        }
    }
    wanted.write(&state)?;
    let addr = format!("127.0.0.1:{}", a.port);
    let key = state.join("cluster.key");
    if !key.exists() {
        drover_auth::generate_key(&key)?;
    }
    let key_arg = key.display().to_string();
    let tls = if tls_wanted {
        let dir = state.join("tls");
        drover_tls::make_ca(&dir)?;
        if !dir.join("localhost.pem").exists() {
            drover_tls::make_host(&dir, "localhost", &["localhost".into(), "127.0.0.1".into()])?;
        }
        // This process's own requests (waiting for the cluster) trust it too.
        std::env::set_var("DROVER_TLS_CA", dir.join("ca.pem"));
        TlsArgs {
            tls_cert: Some(dir.join("localhost.pem")),
            tls_key: Some(dir.join("localhost.key")),
            tls_ca: Some(dir.join("ca.pem")),
        }
    } else {
        TlsArgs::default()
    };
    let _ = std::fs::remove_file(state.join(drover_healer::local::STOPPING));
    let kept: String = keep.iter().map(|s| format!("{} {}\n", s.role, s.pid)).collect();
    std::fs::write(state.join("pids"), kept).map_err(|e| e.to_string())?;
    let is_running = |role: &str| keep.iter().any(|s| s.role == role);

    // One controller keeps the single-member layout (`controller`); a group
    // has `controller1..N` on consecutive ports.
    let group: Vec<(u64, String, String)> = if a.controllers == 1 {
        vec![(1, "controller".to_string(), addr.clone())]
    } else {
        (0..a.controllers)
            .map(|i| (u64::from(i) + 1, format!("controller{}", i + 1), format!("127.0.0.1:{}", a.port + i)))
            .collect()
    };
    let peers: String = group.iter().map(|(id, _, addr)| format!("{id}={addr}")).collect::<Vec<_>>().join(",");
    let addrs: String = group.iter().map(|(_, _, addr)| addr.clone()).collect::<Vec<_>>().join(",");
    for (id, role, caddr) in &group {
        if is_running(role) {
            continue;
        }
        let mut args = vec![
            "controller".to_string(),
            "--state-dir".into(),
            state.join(role).display().to_string(),
            "--listen".into(),
            caddr.clone(),
            "--key-file".into(),
            key_arg.clone(),
            // Every controller offers the socket; one holds it, the others
            // stand by to take it over.
            "--auth-socket".into(),
            state.join("auth.sock").display().to_string(),
            "--node-timeout".into(),
            a.node_timeout.to_string(),
        ];
        args.extend(a.raft.to_args());
        args.extend(tls.to_args());
        args.extend(heal_args.iter().cloned());
        if a.controllers > 1 {
            args.extend(["--id".to_string(), id.to_string(), "--peers".into(), peers.clone()]);
        }
        // What the leader's healer runs to bring a dead controller back.
        drover_healer::local::Local::record_controller(&state, role, &args)?;
        spawn_daemon(&state, role, &args)?;
    }
    std::fs::write(state.join("controller.addr"), format!("{addrs}\n")).map_err(|e| e.to_string())?;
    // Credentials come from this cluster's socket, wherever `up` was run from.
    std::env::set_var("DROVER_AUTH_SOCKET", state.join("auth.sock"));
    let client = Client::new(Some(&addrs));
    wait_until(Duration::from_secs(20), || async { client.get::<NodeList>("/api/v1/nodes", &[]).await.is_ok() })
        .await
        .map_err(|_| format!("the controllers did not come up; see the logs in {}", state.join("logs").display()))?;

    for i in 1..=max_nodes {
        let name = format!("node{i}");
        if is_running(&name) {
            continue;
        }
        // Past --nodes: recorded for the healer, defined powered down below.
        let elastic = i > a.nodes;
        let args = vec![
            "agent".to_string(),
            "--controller".into(),
            addrs.clone(),
            "--name".into(),
            name.clone(),
            "--cpus".into(),
            cpus.to_string(),
            "--memory".into(),
            format!("{mem}M"),
            "--state-dir".into(),
            state.join("agents").join(&name).display().to_string(),
            "--key-file".into(),
            key_arg.clone(),
            "--heartbeat".into(),
            a.heartbeat.to_string(),
            "--kill-grace".into(),
            a.kill_grace.to_string(),
            // The fence acts a second before the controller would requeue.
            "--fence-after".into(),
            (a.node_timeout as f64 - 1.0).max(a.heartbeat * 2.0).to_string(),
            "--health-interval".into(),
            a.health_interval.to_string(),
            // Several agents share this host: each takes a free port.
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        let mut args = args;
        args.extend(tls.to_args());
        if let Some(cmd) = &a.health_check {
            args.extend(["--health-check".to_string(), cmd.clone()]);
        }
        // What the healer runs to bring this node back.
        drover_healer::local::Local::record(&state, &name, &args)?;
        if !elastic {
            spawn_daemon(&state, &name, &args)?;
        }
    }
    if max_nodes > a.nodes {
        let spare =
            drover_core::hostlist::compress(&(a.nodes + 1..=max_nodes).map(|i| format!("node{i}")).collect::<Vec<_>>());
        let body =
            drover_proto::DefineNodes { nodes: spare.clone(), cpus, memory_mb: mem, gpus: 0, features: Vec::new() };
        let _: NodeList = client
            .post("/api/v1/nodes", &body)
            .await
            .map_err(|e| format!("cannot define the elastic nodes {spare}: {e}"))?;
    }
    let want: Vec<String> = (1..=a.nodes).map(|i| format!("node{i}")).collect();
    wait_until(Duration::from_secs(20), || async {
        client.get::<NodeList>("/api/v1/nodes", &[]).await.is_ok_and(|l| {
            want.iter().all(|w| l.nodes.iter().any(|n| &n.name == w && !matches!(n.state.as_str(), "DOWN" | "UNKNOWN")))
        })
    })
    .await
    .map_err(|_| format!("not every node came up; see the logs in {}", state.join("logs").display()))?;

    let scheme = if tls.tls_ca.is_some() { "https" } else { "http" };
    let controllers = match a.controllers {
        1 => format!("controller {}", drover_proto::base_url(scheme, &addr)),
        n => format!("{n} controllers {addrs}"),
    };
    println!(
        "Drover is up: {controllers}, {} node(s) node[1-{}] with {cpus} CPUs and {} each.",
        a.nodes,
        a.nodes,
        drover_core::memory::format_mb(mem)
    );
    println!("State, logs and pids: {}", state.display());
    // All a client needs, wherever it runs and whoever runs it: where the
    // controllers are, the credential socket, and the CA under TLS.
    let mut exports = format!("DROVER_CONTROLLER={addrs} DROVER_AUTH_SOCKET={}", state.join("auth.sock").display());
    if let Some(ca) = &tls.tls_ca {
        exports.push_str(&format!(" DROVER_TLS_CA={}", ca.display()));
    }
    println!("From another shell, in any directory, as any local user (drover and the Slurm names):");
    println!("  export {exports}");
    // The sign-in link carries a token with this user's rights (root's,
    // often): it goes to no terminal or log, only to `drover dashboard`.
    println!(
        "Dashboard: {}/  (sign in with the link 'drover dashboard' prints: it grants your rights)",
        drover_proto::base_url(scheme, &addr)
    );
    println!("Try: drover submit --wrap 'hostname' && drover queue");
    if a.detach {
        return Ok(());
    }
    println!("Press Ctrl-C to stop the cluster.");
    shutdown_signal().await;
    down(DownArgs { state_dir: state }).await
}

async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(())
}

/// The agents' fence watchdogs (they outlive their agents by design).
/// The agents' state directories under `state`.
fn agent_dirs(state: &Path) -> Vec<PathBuf> {
    let Ok(agents) = std::fs::read_dir(state.join("agents")) else { return Vec::new() };
    agents.flatten().map(|a| a.path()).collect()
}

fn watchdog_pids(state: &Path) -> Vec<i32> {
    agent_dirs(state)
        .iter()
        .filter_map(|a| std::fs::read_to_string(drover_agent::watchdog::pid_file(a)).ok())
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// The pids of job steps the agents under `state` still run.
fn step_pids(state: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for agent in agent_dirs(state) {
        let Ok(steps) = std::fs::read_dir(agent.join("spool")) else { continue };
        for step in steps.flatten() {
            if let Some(pid) = std::fs::read_to_string(step.path().join("pid")).ok().and_then(|p| p.trim().parse().ok())
            {
                pids.push(pid);
            }
        }
    }
    pids
}

pub async fn down(a: DownArgs) -> Result<(), String> {
    let state = a.state_dir;
    let started = read_pids(&state);
    if started.is_empty() {
        println!("Nothing to stop in {}.", state.display());
        return Ok(());
    }
    // The healers restart nothing from now on.
    let stopping = state.join(drover_healer::local::STOPPING);
    std::fs::write(&stopping, "").map_err(|e| format!("cannot write {}: {e}", stopping.display()))?;
    // Daemons first (agents leave steps running by design), then the steps.
    let signal = |pid: i32, sig: i32| {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, sig) };
    };
    for s in &started {
        signal(s.pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while started.iter().any(|s| alive(s.pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in started.iter().filter(|s| alive(s.pid)) {
        signal(s.pid, libc::SIGKILL);
    }
    for pid in watchdog_pids(&state) {
        signal(pid, libc::SIGKILL);
    }
    for pid in step_pids(&state) {
        // Each step leads its own process group.
        signal(-pid, libc::SIGKILL);
    }
    // In-memory spools that hold no step (left by a kill) go too.
    for agent in agent_dirs(&state) {
        drover_agent::spool::remove_if_empty(&agent.join("spool"));
    }
    let _ = std::fs::remove_file(state.join("pids"));
    let _ = std::fs::remove_file(&stopping);
    println!(
        "Stopped {} daemon(s): {}.",
        started.len(),
        started.iter().map(|s| s.role.as_str()).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
