//! The command-line arguments of the daemons (`drover controller`, `drover
//! agent`, `drover agent-watchdog`) and of the local cluster (`drover up`,
//! `drover down`), and the pids file they share. Parsing only: what runs
//! them is the binary's (`src/daemons.rs`, `src/local_cluster.rs`), so that
//! this client crate carries none of the server code.

use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ControllerArgs {
    #[command(subcommand)]
    pub change: Option<MemberChange>,
    /// Where the Raft log and snapshots live.
    #[arg(long, default_value = ".drover/controller")]
    pub state_dir: PathBuf,
    /// Address for the REST API, agents and the other controllers (default:
    /// this controller's entry in --peers, else 127.0.0.1:6817).
    #[arg(long)]
    pub listen: Option<String>,
    /// This controller's id in the group (1, 2, 3…).
    #[arg(long, default_value_t = 1)]
    pub id: u64,
    /// Every member of a static group, this one included: ADDR,ADDR,… (the
    /// first is id 1) or ID=ADDR,…. Used on the first start only; later the
    /// membership comes from the log.
    #[arg(long)]
    pub peers: Option<String>,
    /// Start empty and ask these running controllers (ADDR,…) to add this one.
    #[arg(long, conflicts_with = "peers")]
    pub join: Option<String>,
    #[command(flatten)]
    pub raft: RaftArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Seconds without a heartbeat before a node is DOWN.
    #[arg(long, default_value_t = 10)]
    pub node_timeout: u64,
    /// The cluster key shared with the agents (create it with 'drover keygen').
    #[arg(long, default_value = "/etc/drover/cluster.key")]
    pub key_file: PathBuf,
    /// Serve credentials to local users on this Unix socket.
    #[arg(long)]
    pub auth_socket: Option<PathBuf>,
    /// Uids besides root that may act on every job and node.
    #[arg(long, value_delimiter = ',')]
    pub operators: Vec<u32>,
    /// Restore lost nodes and save power through this provider: none,
    /// local (the agents 'drover up' started under --heal-state-dir),
    /// command (--resume-program and friends) or aws-ec2 (--ec2-cluster and
    /// friends). See docs/healing.md.
    #[arg(long, default_value = "none")]
    pub heal: String,
    /// With --heal local: the state directory of the 'drover up' cluster.
    #[arg(long)]
    pub heal_state_dir: Option<PathBuf>,
    /// With --heal command: run as PROGRAM HOSTLIST to power nodes up
    /// (Slurm's ResumeProgram; SLURM_RESUME_FILE names the waiting jobs).
    #[arg(long)]
    pub resume_program: Option<PathBuf>,
    /// With --heal command: run as PROGRAM HOSTLIST to power nodes down.
    #[arg(long)]
    pub suspend_program: Option<PathBuf>,
    /// With --heal command: run as PROGRAM HOSTLIST to replace lost nodes
    /// (default: the resume program).
    #[arg(long)]
    pub replace_program: Option<PathBuf>,
    /// Seconds a program may run before it is killed.
    #[arg(long, default_value_t = 60)]
    pub program_timeout: u64,
    #[command(flatten)]
    pub ec2: Ec2Args,
    #[command(flatten)]
    pub healing: HealArgs,
}

/// The aws-ec2 provider's settings (`--heal aws-ec2`). Credentials, region
/// and endpoint come from the standard AWS environment and profiles.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct Ec2Args {
    /// The value of the drover:cluster tag on the cluster's instances.
    #[arg(long)]
    pub ec2_cluster: Option<String>,
    /// Launch replacements from this launch template (name or lt-… id)
    /// when no stopped instance or standby is left.
    #[arg(long)]
    pub ec2_launch_template: Option<String>,
    /// Instance types to try in order, comma-separated (default: the
    /// template's); one short of capacity is set aside for 10 minutes.
    #[arg(long, value_delimiter = ',')]
    pub ec2_instance_types: Vec<String>,
    /// Terminate the instances replaced (default: stop them).
    #[arg(long)]
    pub ec2_terminate_replaced: bool,
    /// Seconds before an instance tagged for the cluster that belongs to
    /// no node (and is no standby) is terminated; 0: never.
    #[arg(long, default_value_t = 600)]
    pub ec2_orphan_grace: u64,
}

impl Ec2Args {
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(c) = &self.ec2_cluster {
            args.extend(["--ec2-cluster".to_string(), c.clone()]);
        }
        if let Some(t) = &self.ec2_launch_template {
            args.extend(["--ec2-launch-template".to_string(), t.clone()]);
        }
        if !self.ec2_instance_types.is_empty() {
            args.extend(["--ec2-instance-types".to_string(), self.ec2_instance_types.join(",")]);
        }
        if self.ec2_terminate_replaced {
            args.push("--ec2-terminate-replaced".to_string());
        }
        if self.ec2_orphan_grace != 600 {
            args.extend(["--ec2-orphan-grace".to_string(), self.ec2_orphan_grace.to_string()]);
        }
        args
    }
}

/// How the healer acts: given to `drover controller`, and by `drover up`
/// to each controller it starts.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct HealArgs {
    /// Seconds between the healer's looks at nodes and machines.
    #[arg(long, default_value_t = 2.0)]
    pub heal_poll: f64,
    /// Seconds a node may stay DOWN before it is replaced (a reboot comes
    /// back within it; a stopped machine is replaced at once).
    #[arg(long, default_value_t = 30)]
    pub heal_down_grace: u64,
    /// Seconds a machine may report impaired or scheduled for retirement
    /// before it is replaced.
    #[arg(long, default_value_t = 60)]
    pub heal_impaired_grace: u64,
    /// Seconds a replaced node has to register before the repair counts
    /// as failed (back-off 0, 1 min, 15 min, 1 h, then the healer gives up).
    #[arg(long, default_value_t = 600)]
    pub replace_timeout: u64,
    /// Power saving: seconds idle before a node is powered down (Slurm's
    /// SuspendTime); off unless given.
    #[arg(long)]
    pub suspend_time: Option<u64>,
    /// Nodes never powered down, as a hostlist.
    #[arg(long)]
    pub suspend_exclude: Option<String>,
    /// Per partition, at least this many nodes stay powered on:
    /// PARTITION=N[,PARTITION=N…].
    #[arg(long)]
    pub power_min_nodes: Option<String>,
    /// Per partition, at most this many nodes powered on at once (a budget
    /// for elastic capacity): PARTITION=N[,PARTITION=N…].
    #[arg(long)]
    pub power_max_nodes: Option<String>,
    /// Seconds a resumed node has to register (Slurm's ResumeTimeout); past
    /// it the node is DOWN and the resume counts as failed.
    #[arg(long, default_value_t = 600)]
    pub resume_timeout: u64,
    /// Seconds a suspend may take.
    #[arg(long, default_value_t = 120)]
    pub suspend_timeout: u64,
    /// Nodes resumed per minute at most (Slurm's ResumeRate).
    #[arg(long, default_value_t = 300)]
    pub resume_rate: u32,
    /// Nodes suspended per minute at most (Slurm's SuspendRate).
    #[arg(long, default_value_t = 60)]
    pub suspend_rate: u32,
    /// Seconds to wait before repairing a node again after 1, 2, 3…
    /// failed repairs in a row; past the last the healer gives up on the
    /// node until an operator resumes it.
    #[arg(long, default_value = "0,60,900,3600")]
    pub repair_backoff: String,
}

impl HealArgs {
    /// The flags that give a controller these settings (only those changed
    /// from the defaults).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let d = HealArgs::default();
        let mut flag = |name: &str, value: String, default: String| {
            if value != default {
                args.extend([format!("--{name}"), value]);
            }
        };
        flag("heal-poll", self.heal_poll.to_string(), d.heal_poll.to_string());
        flag("heal-down-grace", self.heal_down_grace.to_string(), d.heal_down_grace.to_string());
        flag("heal-impaired-grace", self.heal_impaired_grace.to_string(), d.heal_impaired_grace.to_string());
        flag("replace-timeout", self.replace_timeout.to_string(), d.replace_timeout.to_string());
        flag("resume-timeout", self.resume_timeout.to_string(), d.resume_timeout.to_string());
        flag("suspend-timeout", self.suspend_timeout.to_string(), d.suspend_timeout.to_string());
        flag("resume-rate", self.resume_rate.to_string(), d.resume_rate.to_string());
        flag("suspend-rate", self.suspend_rate.to_string(), d.suspend_rate.to_string());
        flag("repair-backoff", self.repair_backoff.clone(), d.repair_backoff.clone());
        if let Some(t) = self.suspend_time {
            args.extend(["--suspend-time".to_string(), t.to_string()]);
        }
        if let Some(x) = &self.suspend_exclude {
            args.extend(["--suspend-exclude".to_string(), x.clone()]);
        }
        for (flag, v) in [("--power-min-nodes", &self.power_min_nodes), ("--power-max-nodes", &self.power_max_nodes)] {
            if let Some(v) = v {
                args.extend([flag.to_string(), v.clone()]);
            }
        }
        args
    }
}

impl Default for HealArgs {
    fn default() -> HealArgs {
        HealArgs {
            heal_poll: 2.0,
            heal_down_grace: 30,
            heal_impaired_grace: 60,
            replace_timeout: 600,
            suspend_time: None,
            suspend_exclude: None,
            power_min_nodes: None,
            power_max_nodes: None,
            resume_timeout: 600,
            suspend_timeout: 120,
            resume_rate: 300,
            suspend_rate: 60,
            repair_backoff: "0,60,900,3600".into(),
        }
    }
}

#[derive(Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub tls: TlsArgs,
    /// The controllers' addresses, ADDR[,ADDR…]: the agent follows the leader.
    #[arg(long, env = "DROVER_CONTROLLER", default_value = "127.0.0.1:6817")]
    pub controller: String,
    /// Node name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// CPUs to offer (default: all of this host's).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory to offer, e.g. 4G (default: all of this host's).
    #[arg(long)]
    pub memory: Option<String>,
    /// GPUs to offer.
    #[arg(long, default_value_t = 0)]
    pub gpus: u32,
    /// Node features, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Where job scripts are spooled.
    #[arg(long, default_value = ".drover/agent")]
    pub state_dir: PathBuf,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped.
    #[arg(long, default_value_t = 30)]
    pub kill_grace: u64,
    /// The cluster key shared with the controller.
    #[arg(long, default_value = "/etc/drover/cluster.key")]
    pub key_file: PathBuf,
    /// Seconds between heartbeats (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    pub heartbeat: f64,
    /// Kill this node's jobs when the agent itself has been dead or hung for
    /// this many seconds (fractions allowed; 0: never). Keep it below the
    /// controller's --node-timeout, so a job requeued elsewhere never runs
    /// twice at once.
    #[arg(long, default_value_t = 8.0)]
    pub fence_after: f64,
    /// A command run every --health-interval seconds (like Slurm's
    /// HealthCheckProgram); when it fails the node is drained with its output
    /// as the reason, and resumed when it passes again.
    #[arg(long)]
    pub health_check: Option<String>,
    #[arg(long, default_value_t = 60)]
    pub health_interval: u64,
    /// Where to serve Prometheus metrics (GET /metrics); port 0 picks a
    /// free port; "none" serves nothing. The controller lists the address
    /// for Prometheus' service discovery.
    #[arg(long, default_value = "0.0.0.0:6818")]
    pub listen: String,
}

/// TLS for a daemon: what it serves with and the CA it trusts.
#[derive(Args, Clone, Default)]
pub struct TlsArgs {
    /// Serve TLS with this certificate (PEM; 'drover certs' makes one per
    /// host).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM, mode 0600).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA (PEM): other daemons are reached over TLS,
    /// trusting it alone.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    pub fn serve(&self) -> Option<(PathBuf, PathBuf)> {
        self.tls_cert.clone().zip(self.tls_key.clone())
    }

    pub fn to_args(&self) -> Vec<String> {
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
    pub state_dir: PathBuf,
    #[arg(long)]
    pub fence_after_ms: u64,
}

#[derive(Args)]
pub struct UpArgs {
    /// Number of agents (nodes node1..nodeN).
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
    /// Elastic capacity: nodes up to this many are defined but powered
    /// down (idle~) and started by the healer when jobs need them (with
    /// --suspend-time, stopped again when idle). Needs --heal local.
    #[arg(long)]
    pub max_nodes: Option<u32>,
    /// CPUs per node (default: this host's CPUs).
    #[arg(long)]
    pub cpus_per_node: Option<u32>,
    /// Memory per node, e.g. 2G (default: this host's memory divided among the nodes).
    #[arg(long)]
    pub mem_per_node: Option<String>,
    /// Where the cluster keeps its state, logs and pids.
    #[arg(long, default_value = ".drover")]
    pub state_dir: PathBuf,
    /// Controller port on 127.0.0.1 (with --controllers N: the first of N
    /// consecutive ports).
    #[arg(long, default_value_t = 6817)]
    pub port: u16,
    /// Controllers replicating the state with Raft (3 or 5 survive the
    /// loss of 1 or 2).
    #[arg(long, default_value_t = 1)]
    pub controllers: u16,
    /// Speak TLS everywhere: a cluster CA and a certificate for this host
    /// are made in STATE_DIR/tls (kept: a cluster once up with TLS stays
    /// so; clients in this directory find tls/ca.pem by themselves).
    #[arg(long)]
    pub tls: bool,
    #[command(flatten)]
    pub raft: RaftArgs,
    /// Return once the cluster is ready instead of staying in the foreground.
    #[arg(long)]
    pub detach: bool,
    /// Seconds without a heartbeat before a node is DOWN and its jobs requeued.
    #[arg(long, default_value_t = 10)]
    pub node_timeout: u64,
    /// Seconds between an agent's heartbeats (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    pub heartbeat: f64,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped.
    #[arg(long, default_value_t = 30)]
    pub kill_grace: u64,
    /// Every agent's health check (see 'drover agent --help').
    #[arg(long)]
    pub health_check: Option<String>,
    #[arg(long, default_value_t = 60)]
    pub health_interval: u64,
    /// The controllers' healer: local (restart an agent that dies, start
    /// a suspended one again), command (the --resume-program and friends,
    /// as on a site), or none (lost nodes stay DOWN).
    #[arg(long, default_value = "local")]
    pub heal: String,
    /// With --heal command: see 'drover controller --help'.
    #[arg(long)]
    pub resume_program: Option<PathBuf>,
    #[arg(long)]
    pub suspend_program: Option<PathBuf>,
    #[arg(long)]
    pub replace_program: Option<PathBuf>,
    #[arg(long, default_value_t = 60)]
    pub program_timeout: u64,
    #[command(flatten)]
    pub ec2: Ec2Args,
    #[command(flatten)]
    pub healing: HealArgs,
}

impl UpArgs {
    /// The healer's flags for the controllers of the cluster under `state`.
    pub fn heal_args(&self, state: &std::path::Path) -> Result<Vec<String>, String> {
        let mut args = vec!["--heal".to_string(), self.heal.clone()];
        match self.heal.as_str() {
            "none" => return Ok(Vec::new()),
            "local" => args.extend(["--heal-state-dir".to_string(), state.display().to_string()]),
            "command" => {
                for (flag, p) in [
                    ("--resume-program", &self.resume_program),
                    ("--suspend-program", &self.suspend_program),
                    ("--replace-program", &self.replace_program),
                ] {
                    if let Some(p) = p {
                        let p = std::path::absolute(p).map_err(|e| format!("{flag}: {e}"))?;
                        args.extend([flag.to_string(), p.display().to_string()]);
                    }
                }
                args.extend(["--program-timeout".to_string(), self.program_timeout.to_string()]);
            }
            "aws-ec2" => args.extend(self.ec2.to_args()),
            other => return Err(format!("unknown --heal '{other}': use local, command, aws-ec2 or none")),
        }
        args.extend(self.healing.to_args());
        Ok(args)
    }
}

#[derive(Args)]
pub struct DownArgs {
    #[arg(long, default_value = ".drover")]
    pub state_dir: PathBuf,
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
    pub leader_hook: Option<String>,
    /// A floating IP moved through the EC2 API to the leading controller
    /// (a secondary private IP on its network interface; see docs/ha.md).
    #[arg(long, requires = "ec2_floating_ip_eni")]
    pub ec2_floating_ip: Option<String>,
    /// The leading controller's network interface for --ec2-floating-ip:
    /// eni-… for this controller, or ID=eni-…,ID=eni-… for every controller
    /// of the group (one flag for all, as `drover up` passes it).
    #[arg(long)]
    pub ec2_floating_ip_eni: Option<String>,
    /// Also point this route table's IP/32 route at the leader's interface.
    #[arg(long)]
    pub ec2_route_table: Option<String>,
    /// Also add the floating IP to this device on the leader's host.
    #[arg(long)]
    pub floating_ip_device: Option<String>,
    /// Snapshot the state, and compact the log, every this many entries.
    #[arg(long, default_value_t = 20_000)]
    pub snapshot_every: u64,
    /// Milliseconds without a leader's heartbeat before a follower stands
    /// for election (randomized up to twice this; heartbeats every third of
    /// it). Lower fails over faster; too low for the machine's load brings
    /// needless elections.
    #[arg(long, default_value_t = 200)]
    pub election_timeout: u64,
    /// Where the leader records finished jobs: sqlite://PATH,
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DB, or none. Default: SQLite
    /// in the controller's state directory (accounting.db); a cluster of
    /// several controllers should share one PostgreSQL.
    #[arg(long)]
    pub accounting: Option<String>,
    /// Weight of fair-share in job priority (Slurm's
    /// PriorityWeightFairshare): users who used less of the cluster lately
    /// go first. 0 (the default) turns it off; age weighs 1000.
    #[arg(long, default_value_t = 0)]
    pub priority_weight_fairshare: u64,
    /// How fast past use stops counting for fair-share: its weight halves
    /// every this long (D-HH, HH:MM:SS; default 7 days).
    #[arg(long, default_value = "7-0")]
    pub fairshare_half_life: String,
    /// Seconds a finished job stays in the controller's state once
    /// accounting has it (Slurm's MinJobAge); later sacct and drover
    /// history read it from accounting. 0 keeps finished jobs forever.
    #[arg(long, default_value_t = 300)]
    pub min_job_age: u64,
    /// Accounting forgets jobs that ended longer ago than this (D-HH,
    /// Slurm's PurgeJobAfter); default: keep everything.
    #[arg(long)]
    pub purge_after: Option<String>,
    /// Jobs a user may have queued or running at once, array tasks each
    /// counting (Slurm's MaxSubmitJobs); past it a submission is refused.
    /// Default: no limit.
    #[arg(long)]
    pub max_submit_jobs: Option<u64>,
    /// Jobs a user may have running at once (Slurm's MaxJobs); the rest
    /// wait with reason AssocMaxJobsLimit. Default: no limit.
    #[arg(long)]
    pub max_jobs: Option<u32>,
    /// Jobs in one request from a user who is not an operator.
    #[arg(long, default_value_t = 10_000)]
    pub max_jobs_per_request: usize,
    /// The largest batch script accepted, bytes (Slurm's max_script_size).
    #[arg(long, default_value_t = 4 << 20)]
    pub max_script_size: usize,
    /// Open client connections at most; past it the one idle the longest
    /// is closed. Default: the file-descriptor limit less a reserve.
    #[arg(long)]
    pub max_connections: Option<usize>,
}

impl RaftArgs {
    /// The Raft timing these flags ask for, checked.
    pub fn timing(&self) -> Result<RaftTiming, String> {
        if self.snapshot_every < 10 {
            return Err(format!("--snapshot-every {} is below 10", self.snapshot_every));
        }
        if !(30..=60_000).contains(&self.election_timeout) {
            return Err(format!("--election-timeout {} is out of range 30-60000 ms", self.election_timeout));
        }
        Ok(RaftTiming {
            heartbeat_ms: (self.election_timeout / 3).max(10),
            election_min_ms: self.election_timeout,
            election_max_ms: self.election_timeout * 2,
            snapshot_every: self.snapshot_every,
        })
    }

    /// The same settings as `drover controller` flags.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--snapshot-every".to_string(),
            self.snapshot_every.to_string(),
            "--election-timeout".into(),
            self.election_timeout.to_string(),
        ];
        if let Some(h) = &self.leader_hook {
            args.extend(["--leader-hook".to_string(), h.clone()]);
        }
        for (flag, v) in [
            ("--ec2-floating-ip", &self.ec2_floating_ip),
            ("--ec2-floating-ip-eni", &self.ec2_floating_ip_eni),
            ("--ec2-route-table", &self.ec2_route_table),
            ("--floating-ip-device", &self.floating_ip_device),
        ] {
            if let Some(v) = v {
                args.extend([flag.to_string(), v.clone()]);
            }
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

/// Raft's timing, as `--election-timeout` and `--snapshot-every` set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub snapshot_every: u64,
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
pub fn parse_peers(text: &str) -> Result<std::collections::BTreeMap<u64, String>, String> {
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

/// One line of `<state>/pids`: what `drover up` started.
pub struct Started {
    pub role: String,
    pub pid: i32,
}

pub fn read_pids(state: &Path) -> Vec<Started> {
    std::fs::read_to_string(state.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (role, pid) = l.split_once(' ')?;
            Some(Started { role: role.to_string(), pid: pid.trim().parse().ok()? })
        })
        .collect()
}

pub fn alive(pid: i32) -> bool {
    // Zombies count as gone, and so does a process with a SIGKILL pending
    // (`drover up` right after a kill must start its replacement).
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let killed =
        |mask: Option<&str>| mask.and_then(|m| u64::from_str_radix(m, 16).ok()).is_some_and(|m| m & (1 << 8) != 0);
    let zombie = field("State:").is_some_and(|s| s.starts_with('Z') || s.starts_with('X'));
    !zombie && !killed(field("SigPnd:")) && !killed(field("ShdPnd:"))
}
