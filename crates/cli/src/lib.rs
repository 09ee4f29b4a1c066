//! The `drover` command line: argument parsing and dispatch.

// `println!` and `print!` for this crate: std's panic when stdout is a
// closed pipe (`drover queue | head -1`); these end the command quietly
// instead, with the status a shell gives a command SIGPIPE killed. The
// process keeps ignoring SIGPIPE itself, so that a dropped connection is
// an error its requests can retry, not death.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout_failed(e)
        }
    }};
}

macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout_failed(e)
        }
    }};
}

/// Standard output is gone (a closed pipe) or failing: nothing more can be
/// said, so the command ends.
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(128 + libc::SIGPIPE);
    }
    eprintln!("drover: error: cannot write to standard output: {e}");
    std::process::exit(1);
}

mod check;
pub mod client;
pub mod cluster;
mod jobs;
pub mod logging;
mod ops;
mod slurm;
mod top;

/// What runs the daemons and the local cluster. The binary supplies it
/// (`src/daemons.rs`, `src/local_cluster.rs`): this crate parses their
/// arguments but carries none of the server code.
pub trait Daemons {
    fn controller<'a>(
        &'a self,
        args: cluster::ControllerArgs,
        client: &'a client::Client,
        log: logging::Log,
    ) -> Running<'a>;
    fn agent(&self, args: cluster::AgentArgs, log: logging::Log) -> Running<'_>;
    fn watchdog(&self, args: cluster::WatchdogArgs) -> Result<(), String>;
    fn up(&self, args: cluster::UpArgs) -> Running<'_>;
    fn down(&self, args: cluster::DownArgs) -> Running<'_>;
}

/// A daemon, or the local cluster's start or stop, until it ends.
pub type Running<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + 'a>>;

use clap::{Parser, Subcommand};
use std::ffi::OsString;

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "A workload manager for HPC clusters: Slurm's model, one binary.",
    long_about = None,
)]
struct Cli {
    /// Controller address(es), ADDR[,ADDR…] (default: DROVER_CONTROLLER, the
    /// cluster of ./.drover, then 127.0.0.1:6817).
    #[arg(long, global = true)]
    controller: Option<String>,
    /// How daemons write their log lines: text, or json for ELK and Loki.
    #[arg(long, global = true, env = "DROVER_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: logging::LogFormat,
    /// The least severe log lines daemons write: error, warn, info, debug, trace.
    #[arg(long, global = true, env = "DROVER_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster: a controller and N agents, state under ./.drover.
    Up(cluster::UpArgs),
    /// Stop what 'drover up' started, and the jobs it runs.
    Down(cluster::DownArgs),
    /// Run a controller.
    #[command(name = "controller")]
    ControllerDaemon(cluster::ControllerArgs),
    /// Run a node agent.
    #[command(name = "agent")]
    AgentDaemon(cluster::AgentArgs),
    /// An agent's fence watchdog (started by the agent).
    #[command(name = "agent-watchdog", hide = true)]
    AgentWatchdog(cluster::WatchdogArgs),
    /// Submit a batch script (sbatch options; prints 'Submitted batch job N').
    Submit(jobs::SubmitArgs),
    /// List jobs, like squeue.
    Queue(jobs::QueueArgs),
    /// Finished jobs from the accounting database, like sacct.
    History(jobs::HistoryArgs),
    /// CPU- and GPU-hours and jobs per user and account over a window, like
    /// sreport cluster AccountUtilizationByUser.
    Usage(jobs::UsageArgs),
    /// List nodes, like sinfo -N.
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// Show one job or node in detail.
    Show {
        /// job or node
        what: String,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel jobs by id, array task, user, state or name.
    Cancel(jobs::CancelArgs),
    /// Wait until jobs end; exit 0 only if all COMPLETED.
    Wait {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Check the cluster: exit 0 when healthy, 1 with what is wrong.
    Health,
    /// Drain a node: running jobs finish, no new ones start (operators).
    Drain {
        node: String,
        #[arg(long)]
        reason: String,
    },
    /// Return a drained or down node to service (operators).
    Resume { node: String },
    /// Requeue running jobs: they end and wait in the queue again, same id.
    Requeue {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Hold them once requeued.
        #[arg(long)]
        hold: bool,
    },
    /// Print the controller's recent events (node failures, requeues, …).
    Events {
        /// Keep printing new events as they happen.
        #[arg(short, long)]
        follow: bool,
        /// Only these kinds (JobRequeued, NodeStateChanged, JobFinished, …).
        #[arg(long, value_delimiter = ',')]
        kind: Vec<String>,
        /// One JSON object per line (seq, time_ms, kind, job, node, text).
        #[arg(long)]
        json: bool,
    },
    /// Print a session token for the REST API (send it as
    /// `Authorization: Bearer TOKEN`); anyone holding it acts as you.
    Token {
        /// How long it is good for: 90s, 30m, 8h, 2d (at most 7d).
        #[arg(long, default_value = "8h")]
        lifetime: String,
    },
    /// Print a link to the web dashboard that signs your browser in.
    Dashboard {
        #[arg(long, default_value = "8h")]
        lifetime: String,
    },
    /// The cluster in the terminal, refreshed every second: nodes, jobs,
    /// events (keys: u user filter, p partition filter, c clear, q quit).
    Top {
        #[arg(short, long)]
        user: Option<String>,
        #[arg(short, long)]
        partition: Option<String>,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Live views: `drover watch recovery`.
    Watch {
        #[arg(value_parser = ["recovery"])]
        view: String,
        /// Stop after this many refreshes.
        #[arg(long)]
        count: Option<u32>,
    },
    /// Inject faults into the cluster 'drover up' started, for tests and demos.
    Chaos {
        #[command(subcommand)]
        what: ops::Chaos,
        #[arg(long, default_value = ".drover", global = true)]
        state_dir: std::path::PathBuf,
    },
    /// The controllers: role, term, log and applied index, replication lag.
    Controllers {
        #[arg(long)]
        json: bool,
    },
    /// Print (and with -f follow) a job's output.
    Logs {
        id: String,
        #[arg(short, long)]
        follow: bool,
    },
    /// Resolve a batch script and options the way submission will, and print
    /// the job it describes, without submitting anything.
    Check(check::CheckArgs),
    /// Create a cluster key (32 random bytes, mode 0600) for the daemons.
    Keygen {
        #[arg(default_value = "/etc/drover/cluster.key")]
        path: std::path::PathBuf,
    },
    /// Make a cluster CA (DIR/ca.pem, DIR/ca.key) unless DIR has one, and a
    /// certificate for each --host signed by it (DIR/NAME.pem, NAME.key),
    /// for the daemons' --tls-cert/--tls-key/--tls-ca.
    Certs {
        #[arg(default_value = "/etc/drover/tls")]
        dir: std::path::PathBuf,
        /// NAME[:ALT,ALT…]: a host and the names and addresses clients
        /// reach it by (default: the name alone). Repeatable.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Create links named sbatch, squeue, sinfo, scancel, scontrol, sacct,
    /// srun and salloc to this binary in DIR, which then answer as those
    /// Slurm commands.
    InstallLinks { dir: std::path::PathBuf },
    /// Expand or compress hostlist expressions (node[01-04,7] <-> names).
    Hostlist {
        #[command(subcommand)]
        action: HostlistAction,
    },
}

#[derive(Subcommand)]
enum HostlistAction {
    /// Print each host of an expression on its own line.
    Expand { expr: String },
    /// Print the shortest expression for the given host names.
    Compress { hosts: Vec<String> },
}

/// Runs the command line and returns the process exit code. Invoked as
/// `sbatch`, `squeue`, `sinfo` or `scancel`, answers as that command.
/// `drover certs`: the cluster CA and host certificates.
fn certs(dir: &std::path::Path, hosts: &[String]) -> Result<(), String> {
    if drover_tls::make_ca(dir)? {
        println!(
            "created the cluster CA {} (key {}, mode 0600)",
            dir.join("ca.pem").display(),
            dir.join("ca.key").display()
        );
    } else {
        println!("using the cluster CA in {}", dir.display());
    }
    for h in hosts {
        let (name, alts) = match h.split_once(':') {
            Some((n, alts)) => {
                (n, alts.split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect())
            }
            None => (h.as_str(), Vec::new()),
        };
        let (cert, key) = drover_tls::make_host(dir, name, &alts)?;
        println!("created {} and {} for {h}", cert.display(), key.display());
    }
    Ok(())
}

/// Runs the command `args` name, with `daemons` for the commands that start
/// daemons; the process's exit code.
pub fn main<I: IntoIterator<Item = OsString>>(args: I, daemons: &dyn Daemons) -> i32 {
    let mut args = args.into_iter();
    let program = args.next().unwrap_or_default();
    let name = std::path::Path::new(&program).file_name().and_then(|n| n.to_str()).unwrap_or("drover").to_string();
    if slurm::COMMANDS.contains(&name.as_str()) {
        return slurm::main(&name, args.collect());
    }
    let cli = match Cli::try_parse_from(std::iter::once(program).chain(args)) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let level = match logging::parse_level(&cli.log_level) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("drover: error: {e}");
            return 2;
        }
    };
    let log = (cli.log_format, level);
    if matches!(cli.command, Command::Up(_)) {
        // The daemons `up` starts log the same way.
        let format = if cli.log_format == logging::LogFormat::Json { "json" } else { "text" };
        std::env::set_var("DROVER_LOG_FORMAT", format);
        std::env::set_var("DROVER_LOG_LEVEL", level.as_str());
    }
    let needs_runtime = !matches!(
        cli.command,
        Command::Check(_)
            | Command::Hostlist { .. }
            | Command::Keygen { .. }
            | Command::Certs { .. }
            | Command::AgentWatchdog(_)
            | Command::InstallLinks { .. }
    );
    if needs_runtime {
        // Daemons get worker threads; a client command is one request or a
        // few, where spawning threads costs more than it saves.
        let daemon = matches!(cli.command, Command::ControllerDaemon(_) | Command::AgentDaemon(_) | Command::Up(_));
        let built = if daemon {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
        } else {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        };
        let rt = match built {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("drover: error: cannot start the async runtime: {e}");
                return 1;
            }
        };
        let client = client::Client::new(cli.controller.as_deref());
        let result = rt.block_on(async {
            match cli.command {
                Command::Up(a) => daemons.up(a).await.map(|_| 0),
                Command::Down(a) => daemons.down(a).await.map(|_| 0),
                Command::ControllerDaemon(a) => daemons.controller(a, &client, log).await.map(|_| 0),
                Command::AgentDaemon(a) => daemons.agent(a, log).await.map(|_| 0),
                Command::Submit(a) => jobs::submit(&client, a).await,
                Command::Queue(a) => jobs::queue(&client, a).await,
                Command::History(a) => jobs::show_history(&client, a).await,
                Command::Usage(a) => jobs::show_usage(&client, a).await,
                Command::Nodes { json } => jobs::nodes(&client, json).await,
                Command::Show { what, id, json } => jobs::show(&client, &what, &id, json).await,
                Command::Cancel(a) => jobs::cancel(&client, a).await,
                Command::Wait { ids } => jobs::wait_for(&client, &ids).await,
                Command::Health => jobs::health(&client).await,
                Command::Controllers { json } => ops::controllers(&client, json).await,
                Command::Logs { id, follow } => jobs::logs(&client, &id, follow).await,
                Command::Drain { node, reason } => ops::drain(&client, &node, &reason).await,
                Command::Resume { node } => ops::resume(&client, &node).await,
                Command::Requeue { ids, hold } => ops::requeue(&client, &ids, hold).await,
                Command::Events { follow, kind, json } => ops::events(&client, follow, &kind, json).await,
                Command::Top { user, partition, interval } => {
                    let every = std::time::Duration::from_secs_f64(interval.clamp(0.2, 60.0));
                    top::run(&client, user, partition, every).await
                }
                Command::Token { lifetime } => ops::token(&client, &lifetime).await,
                Command::Dashboard { lifetime } => ops::dashboard(&client, &lifetime).await,
                Command::Watch { count, .. } => ops::watch_recovery(&client, count).await,
                Command::Chaos { what, state_dir } => ops::chaos(&client, &state_dir, what).await,
                Command::Check(_)
                | Command::Hostlist { .. }
                | Command::Keygen { .. }
                | Command::Certs { .. }
                | Command::AgentWatchdog(_)
                | Command::InstallLinks { .. } => {
                    unreachable!("handled without a runtime")
                }
            }
        });
        // Daemons' background tasks must not keep the process alive.
        rt.shutdown_timeout(std::time::Duration::from_millis(100));
        return match result {
            Ok(code) => code,
            Err(msg) => {
                eprintln!("drover: error: {msg}");
                1
            }
        };
    }
    let result = match cli.command {
        Command::Check(args) => check::run(args),
        Command::AgentWatchdog(args) => daemons.watchdog(args),
        Command::InstallLinks { dir } => slurm::install_links(&dir),
        Command::Keygen { path } => drover_auth::generate_key(&path).map(|_| println!("created {}", path.display())),
        Command::Certs { dir, hosts } => certs(&dir, &hosts),
        Command::Hostlist { action: HostlistAction::Expand { expr } } => drover_core::hostlist::expand(&expr)
            .map(|hosts| {
                for h in hosts {
                    println!("{h}");
                }
            })
            .map_err(|e| format!("invalid hostlist '{expr}': {e}")),
        Command::Hostlist { action: HostlistAction::Compress { hosts } } => {
            println!("{}", drover_core::hostlist::compress(&hosts));
            Ok(())
        }
        _ => unreachable!("async commands are handled above"),
    };
    match result {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("drover: error: {msg}");
            1
        }
    }
}
