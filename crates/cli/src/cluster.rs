//! Running the daemons: `drover controller`, `drover agent`, and the
//! one-command local cluster `drover up` / `drover down`.

use crate::client::Client;
use crate::up_settings::Settings;
use clap::Args;
use drover_agent::daemon::{self, AgentOptions};
use drover_agent::step::LauncherConfig;
use drover_controller::service::{self, Options};
use drover_proto::NodeList;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ControllerArgs {
    #[command(subcommand)]
    change: Option<MemberChange>,
    /// Where the Raft log and snapshots live.
    #[arg(long, default_value = ".drover/controller")]
    state_dir: PathBuf,
    /// Address for the REST API, agents and the other controllers (default:
    /// this controller's entry in --peers, else 127.0.0.1:6817).
    #[arg(long)]
    listen: Option<String>,
    /// This controller's id in the group (1, 2, 3…).
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// Every member of a static group, this one included: ADDR,ADDR,… (the
    /// first is id 1) or ID=ADDR,…. Used on the first start only; later the
    /// membership comes from the log.
    #[arg(long)]
    peers: Option<String>,
    /// Start empty and ask these running controllers (ADDR,…) to add this one.
    #[arg(long, conflicts_with = "peers")]
    join: Option<String>,
    #[command(flatten)]
    raft: RaftArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// Seconds without a heartbeat before a node is DOWN.
    #[arg(long, default_value_t = 10)]
    node_timeout: u64,
    /// The cluster key shared with the agents (create it with 'drover keygen').
    #[arg(long, default_value = "/etc/drover/cluster.key")]
    key_file: PathBuf,
    /// Serve credentials to local users on this Unix socket.
    #[arg(long)]
    auth_socket: Option<PathBuf>,
    /// Uids besides root that may act on every job and node.
    #[arg(long, value_delimiter = ',')]
    operators: Vec<u32>,
}

#[derive(Args)]
pub struct AgentArgs {
    #[command(flatten)]
    tls: TlsArgs,
    /// The controllers' addresses, ADDR[,ADDR…]: the agent follows the leader.
    #[arg(long, env = "DROVER_CONTROLLER", default_value = "127.0.0.1:6817")]
    controller: String,
    /// Node name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// CPUs to offer (default: all of this host's).
    #[arg(long)]
    cpus: Option<u32>,
    /// Memory to offer, e.g. 4G (default: all of this host's).
    #[arg(long)]
    memory: Option<String>,
    /// GPUs to offer.
    #[arg(long, default_value_t = 0)]
    gpus: u32,
    /// Node features, comma-separated.
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// Where job scripts are spooled.
    #[arg(long, default_value = ".drover/agent")]
    state_dir: PathBuf,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped.
    #[arg(long, default_value_t = 30)]
    kill_grace: u64,
    /// The cluster key shared with the controller.
    #[arg(long, default_value = "/etc/drover/cluster.key")]
    key_file: PathBuf,
    /// Seconds between heartbeats (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    heartbeat: f64,
    /// Kill this node's jobs when the agent itself has been dead or hung for
    /// this many seconds (fractions allowed; 0: never). Keep it below the
    /// controller's --node-timeout, so a job requeued elsewhere never runs
    /// twice at once.
    #[arg(long, default_value_t = 8.0)]
    fence_after: f64,
    /// A command run every --health-interval seconds (like Slurm's
    /// HealthCheckProgram); when it fails the node is drained with its output
    /// as the reason, and resumed when it passes again.
    #[arg(long)]
    health_check: Option<String>,
    #[arg(long, default_value_t = 60)]
    health_interval: u64,
    /// Where to serve Prometheus metrics (GET /metrics); port 0 picks a
    /// free port; "none" serves nothing. The controller lists the address
    /// for Prometheus' service discovery.
    #[arg(long, default_value = "0.0.0.0:6818")]
    listen: String,
}

/// TLS for a daemon: what it serves with and the CA it trusts.
#[derive(Args, Clone, Default)]
pub struct TlsArgs {
    /// Serve TLS with this certificate (PEM; 'drover certs' makes one per
    /// host).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM, mode 0600).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The cluster's CA (PEM): other daemons are reached over TLS,
    /// trusting it alone.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    fn serve(&self) -> Option<(PathBuf, PathBuf)> {
        self.tls_cert.clone().zip(self.tls_key.clone())
    }

    fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, v) in [("--tls-cert", &self.tls_cert), ("--tls-key", &self.tls_key), ("--tls-ca", &self.tls_ca)] {
            if let Some(p) = v {
                args.extend([flag.to_string(), p.display().to_string()]);
            }
        }
        args
    }
}

#[derive(Args)]
pub struct WatchdogArgs {
    #[arg(long)]
    state_dir: PathBuf,
    #[arg(long)]
    fence_after_ms: u64,
}

/// `drover agent-watchdog`: started by an agent, not by people.
pub fn watchdog(a: WatchdogArgs) -> Result<(), String> {
    drover_agent::watchdog::run(&a.state_dir, Duration::from_millis(a.fence_after_ms.max(1)))
}

#[derive(Args)]
pub struct UpArgs {
    /// Number of agents (nodes node1..nodeN).
    #[arg(long, default_value_t = 2)]
    nodes: u32,
    /// CPUs per node (default: this host's CPUs).
    #[arg(long)]
    cpus_per_node: Option<u32>,
    /// Memory per node, e.g. 2G (default: this host's memory divided among the nodes).
    #[arg(long)]
    mem_per_node: Option<String>,
    /// Where the cluster keeps its state, logs and pids.
    #[arg(long, default_value = ".drover")]
    state_dir: PathBuf,
    /// Controller port on 127.0.0.1 (with --controllers N: the first of N
    /// consecutive ports).
    #[arg(long, default_value_t = 6817)]
    port: u16,
    /// Controllers replicating the state with Raft (3 or 5 survive the
    /// loss of 1 or 2).
    #[arg(long, default_value_t = 1)]
    controllers: u16,
    /// Speak TLS everywhere: a cluster CA and a certificate for this host
    /// are made in STATE_DIR/tls (kept: a cluster once up with TLS stays
    /// so; clients in this directory find tls/ca.pem by themselves).
    #[arg(long)]
    tls: bool,
    #[command(flatten)]
    raft: RaftArgs,
    /// Return once the cluster is ready instead of staying in the foreground.
    #[arg(long)]
    detach: bool,
    /// Seconds without a heartbeat before a node is DOWN and its jobs requeued.
    #[arg(long, default_value_t = 10)]
    node_timeout: u64,
    /// Seconds between an agent's heartbeats (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    heartbeat: f64,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped.
    #[arg(long, default_value_t = 30)]
    kill_grace: u64,
    /// Every agent's health check (see 'drover agent --help').
    #[arg(long)]
    health_check: Option<String>,
    #[arg(long, default_value_t = 60)]
    health_interval: u64,
}

#[derive(Args)]
pub struct DownArgs {
    #[arg(long, default_value = ".drover")]
    state_dir: PathBuf,
}

fn parse_mem(text: &str) -> Result<u64, String> {
    drover_core::memory::parse_memory_mb(text).map_err(|e| format!("invalid memory '{text}': {e}"))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// How the controllers replicate: given to `drover controller`, and by
/// `drover up` to each controller it starts.
#[derive(Args, Clone)]
pub struct RaftArgs {
    /// A command run through 'sh -c' when a controller becomes leader and
    /// when it stops (DROVER_LEADER_EVENT=acquire|release,
    /// DROVER_CONTROLLER_ID, DROVER_CONTROLLER_ADDR, DROVER_TERM), e.g. to
    /// move a floating IP: see deploy/hooks/vip-linux.sh.
    #[arg(long)]
    leader_hook: Option<String>,
    /// Snapshot the state, and compact the log, every this many entries.
    #[arg(long, default_value_t = 20_000)]
    snapshot_every: u64,
    /// Milliseconds without a leader's heartbeat before a follower stands
    /// for election (randomized up to twice this; heartbeats every third of
    /// it). Lower fails over faster; too low for the machine's load brings
    /// needless elections.
    #[arg(long, default_value_t = 200)]
    election_timeout: u64,
    /// Where the leader records finished jobs: sqlite://PATH,
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DB, or none. Default: SQLite
    /// in the controller's state directory (accounting.db); a cluster of
    /// several controllers should share one PostgreSQL.
    #[arg(long)]
    accounting: Option<String>,
    /// Weight of fair-share in job priority (Slurm's
    /// PriorityWeightFairshare): users who used less of the cluster lately
    /// go first. 0 (the default) turns it off; age weighs 1000.
    #[arg(long, default_value_t = 0)]
    priority_weight_fairshare: u64,
    /// How fast past use stops counting for fair-share: its weight halves
    /// every this long (D-HH, HH:MM:SS; default 7 days).
    #[arg(long, default_value = "7-0")]
    fairshare_half_life: String,
    /// Seconds a finished job stays in the controller's state once
    /// accounting has it (Slurm's MinJobAge); later sacct and drover
    /// history read it from accounting. 0 keeps finished jobs forever.
    #[arg(long, default_value_t = 300)]
    min_job_age: u64,
    /// Accounting forgets jobs that ended longer ago than this (D-HH,
    /// Slurm's PurgeJobAfter); default: keep everything.
    #[arg(long)]
    purge_after: Option<String>,
    /// Jobs a user may have queued or running at once, array tasks each
    /// counting (Slurm's MaxSubmitJobs); past it a submission is refused.
    /// Default: no limit.
    #[arg(long)]
    max_submit_jobs: Option<u64>,
    /// Jobs a user may have running at once (Slurm's MaxJobs); the rest
    /// wait with reason AssocMaxJobsLimit. Default: no limit.
    #[arg(long)]
    max_jobs: Option<u32>,
    /// Jobs in one request from a user who is not an operator.
    #[arg(long, default_value_t = 10_000)]
    max_jobs_per_request: usize,
    /// The largest batch script accepted, bytes (Slurm's max_script_size).
    #[arg(long, default_value_t = 4 << 20)]
    max_script_size: usize,
    /// Open client connections at most; past it the one idle the longest
    /// is closed. Default: the file-descriptor limit less a reserve.
    #[arg(long)]
    max_connections: Option<usize>,
}

impl RaftArgs {
    fn timing(&self) -> Result<drover_controller::Timing, String> {
        if self.snapshot_every < 10 {
            return Err(format!("--snapshot-every {} is below 10", self.snapshot_every));
        }
        if !(30..=60_000).contains(&self.election_timeout) {
            return Err(format!("--election-timeout {} is out of range 30-60000 ms", self.election_timeout));
        }
        Ok(drover_controller::Timing {
            heartbeat_ms: (self.election_timeout / 3).max(10),
            election_min_ms: self.election_timeout,
            election_max_ms: self.election_timeout * 2,
            snapshot_every: self.snapshot_every,
        })
    }

    /// The same settings as `drover controller` flags.
    fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--snapshot-every".to_string(),
            self.snapshot_every.to_string(),
            "--election-timeout".into(),
            self.election_timeout.to_string(),
        ];
        if let Some(h) = &self.leader_hook {
            args.extend(["--leader-hook".to_string(), h.clone()]);
        }
        if let Some(a) = &self.accounting {
            args.extend(["--accounting".to_string(), a.clone()]);
        }
        if let Some(p) = &self.purge_after {
            args.extend(["--purge-after".to_string(), p.clone()]);
        }
        if self.min_job_age != 300 {
            args.extend(["--min-job-age".to_string(), self.min_job_age.to_string()]);
        }
        if let Some(n) = self.max_submit_jobs {
            args.extend(["--max-submit-jobs".to_string(), n.to_string()]);
        }
        if let Some(n) = self.max_jobs {
            args.extend(["--max-jobs".to_string(), n.to_string()]);
        }
        if self.max_jobs_per_request != 10_000 {
            args.extend(["--max-jobs-per-request".to_string(), self.max_jobs_per_request.to_string()]);
        }
        if self.max_script_size != 4 << 20 {
            args.extend(["--max-script-size".to_string(), self.max_script_size.to_string()]);
        }
        if let Some(n) = self.max_connections {
            args.extend(["--max-connections".to_string(), n.to_string()]);
        }
        if self.priority_weight_fairshare > 0 {
            args.extend([
                "--priority-weight-fairshare".to_string(),
                self.priority_weight_fairshare.to_string(),
                "--fairshare-half-life".into(),
                self.fairshare_half_life.clone(),
            ]);
        }
        args
    }
}

/// Changing a running group's members (operators).
#[derive(clap::Subcommand)]
pub enum MemberChange {
    /// Add controller ID at ADDR (start it first with --join, or it will be
    /// added when it starts): it catches up as a learner, then votes.
    Join { id: u64, addr: String },
    /// Remove controller ID from the group.
    Leave { id: u64 },
}

/// `ADDR,ADDR,…` (ids 1, 2, …) or `ID=ADDR,…`.
pub(crate) fn parse_peers(text: &str) -> Result<std::collections::BTreeMap<u64, String>, String> {
    let mut peers = std::collections::BTreeMap::new();
    for (i, item) in text.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
        let (id, addr) = match item.split_once('=') {
            Some((id, addr)) => {
                (id.trim().parse::<u64>().map_err(|_| format!("invalid controller id '{id}' in --peers"))?, addr.trim())
            }
            None => (i as u64 + 1, item),
        };
        if id == 0 {
            return Err("controller ids start at 1".into());
        }
        addr.parse::<std::net::SocketAddr>()
            .map_err(|e| format!("invalid address '{addr}' in --peers: {e} (use IP:PORT)"))?;
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("controller id {id} appears twice in --peers"));
        }
    }
    if peers.is_empty() {
        return Err("--peers names no controller".into());
    }
    Ok(peers)
}

pub async fn controller(a: ControllerArgs, client: &Client, log: crate::logging::Log) -> Result<(), String> {
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
    let timing = a.raft.timing()?;
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
    crate::logging::init("controller", format!("controller{}", a.id), log);
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
    service::run(opts, shutdown_signal()).await
}

fn voters(c: &drover_proto::Controllers) -> String {
    c.members.iter().filter(|m| m.voter).map(|m| format!("{}={}", m.id, m.addr)).collect::<Vec<_>>().join(", ")
}

fn heartbeat_interval(secs: f64) -> Result<Duration, String> {
    if !(0.05..=60.0).contains(&secs) {
        return Err(format!("--heartbeat {secs} is out of range 0.05-60 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub async fn agent(a: AgentArgs, log: crate::logging::Log) -> Result<(), String> {
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
    crate::logging::init("agent", opts.name.clone(), log);
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

/// One line of `<state>/pids`: what `drover up` started.
pub(crate) struct Started {
    pub role: String,
    pub pid: i32,
}

pub(crate) fn read_pids(state: &Path) -> Vec<Started> {
    std::fs::read_to_string(state.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (role, pid) = l.split_once(' ')?;
            Some(Started { role: role.to_string(), pid: pid.trim().parse().ok()? })
        })
        .collect()
}

pub(crate) fn alive(pid: i32) -> bool {
    // Zombies count as gone, and so does a process with a SIGKILL pending
    // (`drover up` right after a kill must start its replacement).
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let killed =
        |mask: Option<&str>| mask.and_then(|m| u64::from_str_radix(m, 16).ok()).is_some_and(|m| m & (1 << 8) != 0);
    let zombie = field("State:").is_some_and(|s| s.starts_with('Z') || s.starts_with('X'));
    !zombie && !killed(field("SigPnd:")) && !killed(field("ShdPnd:"))
}

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
    if a.controllers == 0 || a.controllers > 7 {
        return Err(format!("--controllers {} is out of range 1-7 (3 or 5 for fault tolerance)", a.controllers));
    }
    a.raft.timing()?;
    if u32::from(a.port) + u32::from(a.controllers) > 65_536 {
        return Err(format!("--port {} leaves no room for {} controllers", a.port, a.controllers));
    }
    heartbeat_interval(a.heartbeat)?;
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
        if a.controllers > 1 {
            args.extend(["--id".to_string(), id.to_string(), "--peers".into(), peers.clone()]);
        }
        spawn_daemon(&state, role, &args)?;
    }
    std::fs::write(state.join("controller.addr"), format!("{addrs}\n")).map_err(|e| e.to_string())?;
    // Credentials come from this cluster's socket, wherever `up` was run from.
    std::env::set_var("DROVER_AUTH_SOCKET", state.join("auth.sock"));
    let client = Client::new(Some(&addrs));
    wait_until(Duration::from_secs(20), || async { client.get::<NodeList>("/api/v1/nodes", &[]).await.is_ok() })
        .await
        .map_err(|_| format!("the controllers did not come up; see the logs in {}", state.join("logs").display()))?;

    for i in 1..=a.nodes {
        let name = format!("node{i}");
        if is_running(&name) {
            continue;
        }
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
        spawn_daemon(&state, &name, &args)?;
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
    println!(
        "Stopped {} daemon(s): {}.",
        started.len(),
        started.iter().map(|s| s.role.as_str()).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
