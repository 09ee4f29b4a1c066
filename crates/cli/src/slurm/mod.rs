//! Slurm's commands as front ends of the one binary: invoked as `sbatch`,
//! `squeue`, `sinfo` or `scancel` (a link named so, see `drover
//! install-links`), `drover` answers as that command — its options, its
//! output formats, its messages (`sbatch: error: …`).

mod format;
mod json;
mod sacct;
pub(crate) use sacct::when;
mod sbatch;
mod scancel;
mod scontrol;
mod sinfo;
mod squeue;
mod srun;

use crate::client::Client;
use clap::Parser;

/// What `--version` prints: the Slurm release whose interface Drover
/// follows (tools parse the numbers), then Drover's own.
pub const VERSION: &str = concat!("slurm 22.05.8 (drover ", env!("CARGO_PKG_VERSION"), ")");

/// The names Drover answers to.
pub const COMMANDS: &[&str] = &["sbatch", "squeue", "sinfo", "scancel", "scontrol", "sacct", "srun", "salloc"];

/// Runs `name` with `args` (without the program name); the exit code.
pub fn main(name: &str, args: Vec<std::ffi::OsString>) -> i32 {
    let args: Vec<String> = match args.into_iter().map(|a| a.into_string()).collect() {
        Ok(a) => a,
        Err(bad) => {
            eprintln!("{name}: error: argument is not valid UTF-8: {bad:?}");
            return 1;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let client = Client::new(None);
    let argv = || std::iter::once(name.to_string()).chain(args.iter().cloned());
    let result = rt.block_on(async {
        match name {
            "sbatch" => sbatch::run(&client, args.clone()).await,
            "scontrol" => scontrol::run(&client, args.clone()).await,
            "squeue" => squeue::run(&client, squeue::Args::try_parse_from(argv()).map_err(usage)?).await,
            "sinfo" => sinfo::run(&client, sinfo::Args::try_parse_from(argv()).map_err(usage)?).await,
            "sacct" => sacct::run(&client, sacct::Args::try_parse_from(argv()).map_err(usage)?).await,
            "scancel" => scancel::run(&client, scancel::Args::try_parse_from(argv()).map_err(usage)?).await,
            "srun" => srun::srun(&client, srun::SrunArgs::try_parse_from(argv()).map_err(usage)?).await,
            "salloc" => srun::salloc(&client, srun::SallocArgs::try_parse_from(argv()).map_err(usage)?).await,
            other => Err(format!("drover does not answer as '{other}'")),
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => code,
        Err(msg) => {
            // Not eprintln!: a closed standard error must not panic.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{name}: error: {msg}");
            1
        }
    }
}

/// Flags every Slurm command takes.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Accepted; Drover's commands say the same either way.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    #[arg(long)]
    help: bool,
    #[arg(long)]
    usage: bool,
    #[arg(short = 'V', long = "version")]
    version: bool,
}

impl Common {
    /// Prints the usage or the version when asked for; true if it did.
    fn answered(&self, usage: &str) -> bool {
        if self.help || self.usage {
            println!("{usage}");
        } else if self.version {
            println!("{VERSION}");
        }
        self.help || self.usage || self.version
    }
}

/// A duration as sacct and scontrol print it: `HH:MM:SS`, or `D-HH:MM:SS`.
fn clock(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// Epoch milliseconds as Slurm's timestamp (`2026-11-22T04:12:15`, UTC),
/// or `none` when there is no time.
fn stamp(ms: Option<u64>, none: &str) -> String {
    ms.map_or_else(|| none.to_string(), |t| drover_core::time::format_timestamp(t / 1000))
}

/// Slurm's captured output `tests/fixtures/slurm/NAME.out`, for golden tests.
#[cfg(test)]
fn fixture(name: &str) -> String {
    let path = format!("{}/../../tests/fixtures/slurm/{name}.out", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The probe cluster's node as a view: idle, 4 CPUs, 4096 MB, in `debug`.
#[cfg(test)]
fn probe_node(name: &str) -> drover_proto::NodeView {
    drover_proto::NodeView {
        name: name.into(),
        state: "IDLE".into(),
        reason: None,
        partitions: vec!["debug".into()],
        total: drover_core::Resources::new(4, 4096, 0),
        alloc: drover_core::Resources::new(0, 0, 0),
        features: vec![],
        jobs: 0,
        last_heartbeat: 0,
        addr: String::new(),
        power: "ON".into(),
        repair: None,
    }
}

/// The probe cluster's partition: `debug`, the default, node1 and node2.
#[cfg(test)]
fn probe_partition() -> drover_proto::PartitionView {
    drover_proto::PartitionView {
        name: "debug".into(),
        is_default: true,
        up: true,
        max_time: None,
        default_time: None,
        nodes: vec!["node1".into(), "node2".into()],
    }
}

/// The caller's account name, for `--me`.
fn my_user() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    drover_auth::user_name(unsafe { libc::getuid() })
}

/// A command-line mistake, in one line (clap's own text, first line).
fn usage(e: clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
    format!("{first} (try --usage)")
}

/// `drover install-links DIR`: a symbolic link to this binary for each
/// Slurm command, so `sbatch` & co. run Drover.
pub fn install_links(dir: &std::path::Path) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the drover binary: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for name in COMMANDS {
        let link = dir.join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::remove_file(&link).map_err(|e| format!("cannot replace {}: {e}", link.display()))?
            }
            Ok(_) => return Err(format!("{} exists and is not a link; not touching it", link.display())),
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&exe, &link).map_err(|e| format!("cannot link {}: {e}", link.display()))?;
        println!("{} -> {}", link.display(), exe.display());
    }
    Ok(())
}

/// Now as C's `ctime` writes it (`Sun Nov 22 04:12:18 2026`), UTC: the
/// first line of `sinfo -l`.
pub fn ctime_now() -> String {
    let secs = crate::jobs::now_ms() / 1000;
    let stamp = drover_core::time::format_timestamp(secs);
    let (date, time) = stamp.split_once('T').unwrap_or((&stamp, ""));
    let mut parts = date.split('-');
    let (y, m, d) = (parts.next().unwrap_or(""), parts.next().unwrap_or("1"), parts.next().unwrap_or("1"));
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS[m.parse::<usize>().unwrap_or(1).clamp(1, 12) - 1];
    let day: u32 = d.parse().unwrap_or(1);
    format!("{} {month} {day:>2} {time} {y}", DAYS[(secs / 86_400 % 7) as usize])
}
