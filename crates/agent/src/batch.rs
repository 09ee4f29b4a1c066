//! Launching and supervising a job's batch step.
//!
//! The step runs in its own session and process group, as the job's user
//! (when the agent runs as root), in the job's working directory, with its
//! output going to the files the job named — opened *as the user*, so a job
//! cannot write where its user could not. The supervisor enforces the time
//! limit (SIGTERM, a grace period, then SIGKILL of the whole group → TIMEOUT),
//! the memory limit (a cgroup, or RSS sampling where none can be made →
//! OUT_OF_MEMORY), cancels and `--signal` warnings, and reports how the step
//! ended. Steps are not killed when the agent exits: a restarted agent can
//! re-attach to them.

use crate::cgroup::{self, MemoryCgroup};
use crate::child::{setup_failure, ChildSetup, Stage};
use crate::ready::ReadyCells;
use crate::spawn;
use drover_core::job::OpenMode;
use drover_core::launch::LaunchOrder;
use drover_core::state::StepOutcome;
use std::ffi::CString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

/// How the launcher runs steps on this host.
#[derive(Debug, Clone)]
pub struct LauncherConfig {
    /// Where scripts are written (one directory per step).
    pub spool_dir: PathBuf,
    /// Between SIGTERM and SIGKILL (Slurm's KillWait).
    pub kill_grace: Duration,
    /// The cgroup mount point; `None` disables cgroups (RSS sampling then).
    pub cgroup_root: Option<PathBuf>,
    /// How often RSS is sampled where no cgroup could be made.
    pub rss_poll: Duration,
    /// Children waiting in fresh memory cgroups ([`ReadyCells::start`]);
    /// `None`: each step joins its cgroup itself.
    pub ready: Option<Arc<ReadyCells>>,
    /// The spool is on a `noexec` file system: run each script through the
    /// interpreter of its `#!` line instead of executing it.
    pub script_via_interpreter: bool,
}

impl LauncherConfig {
    /// A step's cgroup name. Cgroups are shared by everything on the host,
    /// so the name carries this agent's spool (several agents, even of
    /// several clusters, may run a job 1 on one host): `<spool hash>-job<ID>.<ATTEMPT>`.
    pub fn cgroup_name(&self, job_id: u64, attempt: u32) -> String {
        format!("{}-job{job_id}.{attempt}", self.agent_tag())
    }

    /// What this agent's cgroups are named after: its spool's hash.
    pub fn agent_tag(&self) -> String {
        format!("{:08x}", crate::spool::path_hash(&self.spool_dir) as u32)
    }

    /// Keeps children waiting in fresh memory cgroups for the next steps,
    /// where the host's memory hierarchy is cgroup v1 ([`crate::ready`]).
    pub fn with_ready_cells(mut self) -> LauncherConfig {
        let hierarchy = self.cgroup_root.as_deref().and_then(cgroup::detect);
        self.ready = hierarchy.and_then(|(h, v)| ReadyCells::start(&h, v, &self.agent_tag()));
        self
    }

    pub fn new(spool_dir: impl Into<PathBuf>) -> LauncherConfig {
        LauncherConfig {
            spool_dir: spool_dir.into(),
            kill_grace: Duration::from_secs(30),
            cgroup_root: Some(PathBuf::from("/sys/fs/cgroup")),
            rss_poll: Duration::from_secs(1),
            ready: None,
            script_via_interpreter: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("working directory {0} does not exist or is not a directory")]
    WorkDir(String),
    #[error("cannot create output file {path}: directory {dir} does not exist")]
    OutputDir { path: String, dir: String },
    #[error("cannot prepare the step's spool directory {path}: {source}")]
    Spool { path: String, source: io::Error },
    #[error("a value in the launch order contains a NUL byte: {0}")]
    NulByte(String),
    #[error("cannot start the batch script as uid {uid}: {source}")]
    Spawn { uid: u32, source: io::Error },
    /// A step of the child's set-up failed: `what` names it for the job's
    /// user (the file, the directory, the user), who cannot read our log.
    #[error("{what}: {source}")]
    Setup { what: String, source: io::Error },
}

/// What the supervisor can be asked to do.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    /// SIGTERM, grace, SIGKILL.
    Cancel,
    /// Deliver a signal to the whole step.
    Signal(i32),
    /// A new time limit, seconds from the start (`None`: none).
    Limit(Option<u64>),
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReport {
    pub job_id: u64,
    pub attempt: u32,
    pub outcome: StepOutcome,
    pub max_rss_bytes: Option<u64>,
    /// The batch shell's CPU time and that of the children it waited for;
    /// unknown for a step an earlier agent process started.
    pub cpu: Option<drover_core::job::CpuTime>,
    pub runtime: Duration,
    /// Why it ended before its script ran (the launch failed).
    pub failure: Option<String>,
}

/// A running step.
pub struct BatchStep {
    pub job_id: u64,
    pub attempt: u32,
    pub pid: i32,
    control: mpsc::UnboundedSender<Control>,
    done: JoinHandle<BatchReport>,
}

/// A handle to send controls to a running step; cheap to clone.
#[derive(Clone)]
pub struct BatchControl(mpsc::UnboundedSender<Control>);

impl BatchControl {
    pub fn cancel(&self) {
        let _ = self.0.send(Control::Cancel);
    }

    pub fn signal(&self, sig: i32) {
        let _ = self.0.send(Control::Signal(sig));
    }

    pub fn set_limit(&self, secs: Option<u64>) {
        let _ = self.0.send(Control::Limit(secs));
    }
}

impl BatchStep {
    pub fn control(&self) -> BatchControl {
        BatchControl(self.control.clone())
    }

    /// Waits for the step to end.
    pub async fn wait(self) -> BatchReport {
        self.done.await.expect("step supervisor panicked")
    }
}

fn cstring(s: &str) -> Result<CString, LaunchError> {
    CString::new(s).map_err(|_| LaunchError::NulByte(s.chars().take(60).collect()))
}

/// Removes a directory when dropped, unless told to keep it.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A job's umask when its submitter's is not known (an older client).
pub(crate) const DEFAULT_UMASK: libc::mode_t = 0o022;

/// How long a launch waits for its output file's directory to appear.
/// Clients such as submitit submit first and make the job's log directory
/// (named after the job id) right after; Slurm's slower start hides that
/// race, Drover's millisecond start must wait it out.
const OUTPUT_DIR_WAIT: Duration = Duration::from_secs(5);

async fn parent_dir_exists(path: &str) -> Result<(), LaunchError> {
    let dir = Path::new(path).parent().unwrap_or(Path::new("/"));
    let deadline = Instant::now() + OUTPUT_DIR_WAIT;
    while !dir.is_dir() {
        if Instant::now() >= deadline {
            return Err(LaunchError::OutputDir { path: path.to_string(), dir: dir.display().to_string() });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } == 0;
    if !ok {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads within the set for i < CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize).filter(|&i| unsafe { libc::CPU_ISSET(i, &set) }).collect()
}

/// Starts `order`'s batch step, bound to `cpus` (host CPU ids; empty for no
/// binding). Returns once the process exists.
pub async fn launch(order: &LaunchOrder, cfg: &LauncherConfig, cpus: &[usize]) -> Result<BatchStep, LaunchError> {
    let (control, controls) = controls();
    launch_controlled(order, cfg, cpus, control, controls).await
}

/// The receiving end of a step's controls. Made before the step exists, so
/// that a cancel arriving while it launches is acted on once it runs.
pub struct Controls(mpsc::UnboundedReceiver<Control>);

/// A new step's control handle and its receiving end.
pub fn controls() -> (BatchControl, Controls) {
    let (tx, rx) = mpsc::unbounded_channel();
    (BatchControl(tx), Controls(rx))
}

/// [`launch`], with controls made beforehand by [`controls`].
pub async fn launch_controlled(
    order: &LaunchOrder,
    cfg: &LauncherConfig,
    cpus: &[usize],
    control: BatchControl,
    controls: Controls,
) -> Result<BatchStep, LaunchError> {
    // What cannot be launched is refused before anything is made for it.
    for (k, v) in &order.env {
        if k.contains('\0') || v.contains('\0') || k.contains('=') {
            return Err(LaunchError::NulByte(k.clone()));
        }
    }
    if !Path::new(&order.work_dir).is_dir() {
        return Err(LaunchError::WorkDir(order.work_dir.clone()));
    }
    parent_dir_exists(&order.stdout).await?;
    parent_dir_exists(&order.stderr).await?;

    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let switch_user = root && order.uid != 0;

    let step_dir = cfg.spool_dir.join(format!("job{}.{}", order.job_id, order.attempt));
    let spool_err = |source| LaunchError::Spool { path: step_dir.display().to_string(), source };
    // The step's directory stays the agent's (0711: the job's user may
    // reach its script, not list or change anything): the agent and its
    // watchdog write `journal`, `exit` and `fenced` there and read `pid`
    // back, and none of that may go through a name the user could replace
    // with a link. Only the script is the user's.
    crate::spool::make_step_dir(&step_dir).map_err(spool_err)?;
    // A launch that fails from here on leaves no directory behind.
    let made = RemoveOnDrop(Some(step_dir.clone()));
    let script = step_dir.join("script");
    std::fs::write(&script, order.script.as_bytes()).map_err(spool_err)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).map_err(spool_err)?;
    if switch_user {
        std::os::unix::fs::chown(&script, Some(order.uid), Some(order.gid)).map_err(spool_err)?;
    }

    // A ready cell if one waits: its child is in the cgroup already.
    let (memory, cell) = match (order.mem_limit_mb, &cfg.cgroup_root) {
        (Some(mb), Some(root)) => {
            let name = cfg.cgroup_name(order.job_id, order.attempt);
            match cfg.ready.as_ref().and_then(|r| r.take(&name, mb.saturating_mul(1024 * 1024))) {
                Some((memory, waiting)) => (Some(memory), Some(waiting)),
                None => (
                    cgroup::detect(root).and_then(|(hierarchy, version)| {
                        MemoryCgroup::create(&hierarchy, version, &name, mb.saturating_mul(1024 * 1024)).ok()
                    }),
                    None,
                ),
            }
        }
        _ => (None, None),
    };
    let cgroup_procs = memory.as_ref().map(|m| cstring(&m.procs_file().display().to_string())).transpose()?;

    let cpus = (!cpus.is_empty()).then(|| {
        // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            // SAFETY: cpu is below CPU_SETSIZE.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        set
    });

    let out_flags = libc::O_WRONLY
        | libc::O_CREAT
        | match order.open_mode {
            OpenMode::Append => libc::O_APPEND,
            OpenMode::Truncate => libc::O_TRUNC,
        };
    let stage = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let mut setup = ChildSetup {
        pid_file: cstring(&step_dir.join("pid").display().to_string())?,
        cgroup_procs: if cell.is_some() { None } else { cgroup_procs.clone() },
        cpus,
        user: switch_user.then(|| (order.uid, order.gid, crate::child::groups_of(order.uid, order.gid))),
        work_dir: cstring(&order.work_dir)?,
        stdin: cstring(order.stdin.as_deref().unwrap_or("/dev/null"))?,
        stdout: cstring(&order.stdout)?,
        stderr: (order.stderr != order.stdout).then(|| cstring(&order.stderr)).transpose()?,
        out_flags,
        umask: order.umask.unwrap_or(DEFAULT_UMASK) & 0o777,
        stage: stage.clone(),
    };

    let script_path = cstring(&script.display().to_string())?;
    let argv: Vec<CString> = match cfg.script_via_interpreter {
        false => vec![script_path],
        true => {
            let mut argv = interpreter_of(&order.script).iter().map(|a| cstring(a)).collect::<Result<Vec<_>, _>>()?;
            argv.push(script_path);
            argv
        }
    };
    let program = argv[0].clone();
    // What a restarted agent needs besides the pid, which the child writes.
    let started_ms = epoch_ms();
    // A ready cell's process began before the step, when the cell was made.
    let born_after_ms = cell.as_ref().map_or(started_ms, |w| w.made_ms.min(started_ms));
    let journal = Journal { started_ms, born_after_ms, time_limit_s: order.time_limit, cpus: order.cpus };
    std::fs::write(step_dir.join("journal"), journal.to_line()).map_err(spool_err)?;
    let env: Vec<CString> = order.env.iter().map(|(k, v)| cstring(&format!("{k}={v}"))).collect::<Result<_, _>>()?;
    let started = Instant::now();
    // The calling thread waits until the child execs, which can take a
    // while when the CPU it is bound to is busy: not on a runtime worker.
    let ready = cfg.ready.clone();
    let spawned = tokio::task::spawn_blocking(move || {
        if let Some(waiting) = cell {
            // SAFETY: as below.
            match unsafe { waiting.hand_over(&program, &argv, &env, &|| setup.apply()) } {
                Ok(spawned) => return Ok(spawned),
                Err(Some(e)) => return Err(e),
                // The cell ended before it took the step: join as usual.
                Err(None) => {
                    ready.inspect(|r| r.lost());
                    setup.cgroup_procs = cgroup_procs;
                }
            }
        }
        // SAFETY: apply() only makes system calls on data prepared above.
        // Nothing kills the step when the agent goes: a restarted agent
        // re-attaches.
        unsafe { spawn::spawn(&program, &argv, &env, &|| setup.apply()) }
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
    let child = match spawned {
        Ok(s) => spawn::Child::new(s),
        Err(source) => {
            if let Some(m) = memory {
                m.remove().await;
            }
            let _ = std::fs::remove_dir_all(&step_dir);
            let reached = Stage::of(stage.load(std::sync::atomic::Ordering::SeqCst));
            return Err(setup_failure(order, reached, source));
        }
    };
    let pid = child.pid;
    made.keep();

    let warn_at = match (&order.signal, order.time_limit) {
        (Some(sig), Some(limit)) => {
            Some((after(started, limit.saturating_sub(u64::from(sig.secs_before))), sig.clone()))
        }
        _ => None,
    };
    let rss_limit = match (&memory, order.mem_limit_mb) {
        (None, Some(mb)) => Some(mb.saturating_mul(1024 * 1024)),
        _ => None,
    };
    let supervised = Supervised {
        job_id: order.job_id,
        attempt: order.attempt,
        pid,
        process: Process::Child(child),
        started,
        limit: order.time_limit.map(|s| after(started, s)),
        warn_at,
        rss_limit,
        memory,
        step_dir,
    };
    Ok(supervised.start(cfg, control, controls))
}

/// `secs` after `start`. A limit comes from the controller (or a journal a
/// restarted agent reads back): whatever its size, this never overflows —
/// anything past the longest limit a job may have is that limit.
fn after(start: Instant, secs: u64) -> Instant {
    let secs = secs.min(drover_core::limits::MAX_TIME_SECS);
    start.checked_add(Duration::from_secs(secs)).unwrap_or(start)
}

use drover_auth::now_ms as epoch_ms;

/// What became of the process a step started as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepProcess {
    Running,
    /// Exited, not yet reaped: its status is still in /proc.
    Zombie,
    /// Gone, or the pid now names another process.
    Gone,
}

/// Whether `pid` is still the step launched at `started_ms`: a process
/// that began between `born_after_ms` (the launch, or the ready cell the step
/// started in) and moments after the launch. A pid reused by another
/// process began later; the step's command line is no proof, since a
/// script may `exec` another program.
pub(crate) fn step_process(pid: i32, born_after_ms: u64, started_ms: u64) -> StepProcess {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return StepProcess::Gone };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return StepProcess::Gone };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (Some(ticks), Some(boot_ms)) = (fields.get(19).and_then(|t| t.parse::<u64>().ok()), boot_time_ms()) else {
        return StepProcess::Gone;
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let began_ms = boot_ms + ticks * 1000 / hz;
    // btime has one-second resolution; a launch takes well under 30 s.
    if began_ms + 2_000 < born_after_ms || began_ms > started_ms + 30_000 {
        StepProcess::Gone
    } else if fields.first() == Some(&"Z") {
        StepProcess::Zombie
    } else {
        StepProcess::Running
    }
}

/// When this host booted (`btime` in /proc/stat), read once.
fn boot_time_ms() -> Option<u64> {
    static BOOT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok()).map(|s| s * 1000)
    })
}

/// Whether the process `pid` is the step in `step_dir` (from its journal).
pub(crate) fn step_process_of(step_dir: &Path, pid: i32) -> Option<StepProcess> {
    let j = Journal::parse(&std::fs::read_to_string(step_dir.join("journal")).ok()?)?;
    Some(step_process(pid, j.born_after_ms, j.started_ms))
}

/// What the agent writes about a step before starting it, one line in its
/// spool dir (the pid goes in `pid`, written by the step itself).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Journal {
    started_ms: u64,
    /// The step's process began no earlier (its launch, or the ready cell
    /// it started in); journals before cells lack it: the launch.
    born_after_ms: u64,
    time_limit_s: Option<u64>,
    cpus: u32,
}

impl Journal {
    fn to_line(&self) -> String {
        let limit = self.time_limit_s.map_or("-".to_string(), |s| s.to_string());
        format!("v1 {} {} {} {}\n", self.started_ms, limit, self.cpus, self.born_after_ms)
    }

    fn parse(line: &str) -> Option<Journal> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if !(4..=5).contains(&f.len()) || f[0] != "v1" {
            return None;
        }
        let started_ms = f[1].parse().ok()?;
        Some(Journal {
            started_ms,
            born_after_ms: f.get(4).map_or(Some(started_ms), |b| b.parse().ok())?,
            time_limit_s: if f[2] == "-" { None } else { Some(f[2].parse().ok()?) },
            cpus: f[3].parse().ok()?,
        })
    }
}

/// How the supervisor learns that the step ended.
enum Process {
    /// Our own child: reaped, its status exact.
    Child(spawn::Child),
    /// A step launched by an earlier agent process: its status comes from
    /// its pidfd, or from the file the fence watchdog wrote.
    Adopted(spawn::Adopted),
}

impl Process {
    async fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        match self {
            Process::Child(c) => c.wait().await,
            Process::Adopted(a) => a.wait().await,
        }
    }

    /// CPU time, once reaped; only our own children's is known.
    fn cpu(&self) -> Option<drover_core::job::CpuTime> {
        match self {
            Process::Child(c) => {
                c.used().map(|u| drover_core::job::CpuTime { user_ms: u.user_ms, system_ms: u.system_ms })
            }
            Process::Adopted(_) => None,
        }
    }
}

/// A step and everything its supervisor enforces.
struct Supervised {
    job_id: u64,
    attempt: u32,
    pid: i32,
    process: Process,
    started: Instant,
    limit: Option<Instant>,
    warn_at: Option<(Instant, drover_core::job::SignalSpec)>,
    rss_limit: Option<u64>,
    memory: Option<MemoryCgroup>,
    step_dir: PathBuf,
}

impl Supervised {
    /// Starts the supervisor task.
    fn start(self, cfg: &LauncherConfig, control: BatchControl, controls: Controls) -> BatchStep {
        let (job_id, attempt, pid) = (self.job_id, self.attempt, self.pid);
        let done = tokio::spawn(self.supervise(cfg.kill_grace, cfg.rss_poll, controls));
        BatchStep { job_id, attempt, pid, control: control.0, done }
    }

    async fn supervise(self, grace: Duration, rss_poll: Duration, controls: Controls) -> BatchReport {
        let Supervised { job_id, attempt, pid, mut process, started, mut limit, warn_at, rss_limit, memory, step_dir } =
            self;
        let Controls(mut rx) = controls;
        let far = Instant::now() + Duration::from_secs(100 * 365 * 86400);
        let mut kill_at: Option<Instant> = None;
        let mut warned = false;
        let mut timed_out = false;
        let mut rss_oom = false;
        let mut peak_rss = 0u64;
        let mut next_poll = Instant::now() + rss_poll;
        let status = loop {
            tokio::select! {
                status = process.wait() => break status,
                _ = sleep_until(warn_at.as_ref().map_or(far, |w| w.0)), if !warned => {
                    warned = true;
                    let (_, sig) = warn_at.as_ref().expect("guarded");
                    if sig.batch_only { signal_pid(pid, sig.signal) } else { signal_group(pid, sig.signal) }
                }
                _ = sleep_until(limit.unwrap_or(far)), if !timed_out && kill_at.is_none() => {
                    timed_out = true;
                    signal_group(pid, libc::SIGTERM);
                    kill_at = Some(Instant::now() + grace);
                }
                _ = sleep_until(kill_at.unwrap_or(far)) => {
                    signal_group(pid, libc::SIGKILL);
                    kill_at = None;
                }
                _ = sleep_until(next_poll), if rss_limit.is_some() => {
                    next_poll = Instant::now() + rss_poll;
                    let rss = group_rss_bytes(pid);
                    peak_rss = peak_rss.max(rss);
                    if rss > rss_limit.unwrap_or(u64::MAX) {
                        rss_oom = true;
                        signal_group(pid, libc::SIGKILL);
                    }
                }
                Some(ctl) = rx.recv() => match ctl {
                    Control::Cancel if kill_at.is_none() => {
                        signal_group(pid, libc::SIGTERM);
                        kill_at = Some(Instant::now() + grace);
                    }
                    Control::Cancel => {}
                    Control::Signal(sig) => signal_group(pid, sig),
                    Control::Limit(secs) => limit = secs.map(|s| after(started, s)),
                },
            }
        };
        // The batch shell is gone; nothing of the job may linger.
        signal_group(pid, libc::SIGKILL);
        let oom_kills = memory.as_ref().map_or(0, |m| m.oom_kills());
        let max_rss = memory.as_ref().and_then(|m| m.peak_bytes()).or((peak_rss > 0).then_some(peak_rss));
        if let Some(m) = &memory {
            for p in m.pids() {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        let fenced = step_dir.join("fenced").exists();
        // Everything is killed; waiting for the kernel to reap it (so the
        // cgroup can go) need not delay the report.
        tokio::spawn(async move {
            if let Some(m) = memory {
                m.remove().await;
            }
            let _ = std::fs::remove_dir_all(&step_dir);
        });
        let outcome = match status {
            _ if fenced => StepOutcome::Lost,
            _ if rss_oom || oom_kills > 0 => StepOutcome::OutOfMemory,
            _ if timed_out => StepOutcome::TimedOut,
            Ok(s) => outcome_of(s),
            Err(_) => StepOutcome::Exited(255),
        };
        let cpu = process.cpu();
        BatchReport { job_id, attempt, outcome, max_rss_bytes: max_rss, cpu, runtime: started.elapsed(), failure: None }
    }
}

fn outcome_of(s: std::process::ExitStatus) -> StepOutcome {
    match (s.code(), s.signal()) {
        (Some(code), _) => StepOutcome::Exited(code),
        (None, Some(sig)) => StepOutcome::Signaled(sig),
        (None, None) => StepOutcome::Exited(255),
    }
}

/// A step found in the spool when the agent starts.
pub enum Recovered {
    /// Still running: supervised again, as if this agent had launched it.
    Running(BatchStep),
    /// Ended while no agent was there.
    Ended(BatchReport),
}

/// Re-attaches to the steps an earlier agent process launched: every
/// `job<ID>.<ATTEMPT>` in the spool whose `pid` is still that step (a live
/// process begun at its launch) is supervised again, with its time limit
/// counted from its real start; one that ended meanwhile is reported with
/// the status the fence watchdog recorded (with none: SIGKILL).
pub async fn recover(cfg: &LauncherConfig) -> Vec<(Recovered, BatchControl, u32)> {
    let found = recover_steps(cfg).await;
    let running: Vec<String> = found
        .iter()
        .filter_map(|(r, _, _)| match r {
            Recovered::Running(step) => Some(cfg.cgroup_name(step.job_id, step.attempt)),
            Recovered::Ended(_) => None,
        })
        .collect();
    sweep_cgroups(cfg, &running);
    found
}

/// Removes the step cgroups an earlier agent of this spool left behind
/// (killed between making a step's cgroup and removing it), except those of
/// `running` steps. A cgroup that still holds a process stays: the kernel
/// refuses to remove it.
fn sweep_cgroups(cfg: &LauncherConfig, running: &[String]) {
    let Some((hierarchy, _)) = cfg.cgroup_root.as_deref().and_then(cgroup::detect) else { return };
    let Ok(dir) = std::fs::read_dir(hierarchy.join("drover")) else { return };
    let prefix = format!("{}-job", cfg.agent_tag());
    let mut removed = 0;
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(&prefix) && !running.contains(&name) && std::fs::remove_dir(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed step cgroups an earlier agent left behind");
    }
}

async fn recover_steps(cfg: &LauncherConfig) -> Vec<(Recovered, BatchControl, u32)> {
    let Ok(dir) = std::fs::read_dir(&cfg.spool_dir) else { return Vec::new() };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some((job_id, attempt)) = name
            .strip_prefix("job")
            .and_then(|r| r.split_once('.'))
            .and_then(|(j, a)| Some((j.parse::<u64>().ok()?, a.parse::<u32>().ok()?)))
        else {
            continue;
        };
        let step_dir = entry.path();
        if !crate::spool::is_agents_own(&step_dir) {
            // An older agent chowned step directories to their users: what
            // is in one may be a user's forgery. Nothing in it is trusted
            // (no pid is killed or adopted); the job is lost with its node's
            // fence, as any step this agent cannot vouch for.
            tracing::warn!(dir = %step_dir.display(), "step directory is not the agent's own; not re-attached");
            continue;
        }
        let journal = std::fs::read_to_string(step_dir.join("journal")).ok().and_then(|l| Journal::parse(&l));
        let pid: Option<i32> = std::fs::read_to_string(step_dir.join("pid")).ok().and_then(|p| p.trim().parse().ok());
        let (Some(journal), Some(pid)) = (journal, pid) else {
            // Never started (the agent died mid-launch): nothing runs.
            let _ = std::fs::remove_dir_all(&step_dir);
            continue;
        };
        let memory = cfg.cgroup_root.as_ref().and_then(|root| cgroup::detect(root)).and_then(|(h, v)| {
            let dir = h.join("drover").join(cfg.cgroup_name(job_id, attempt));
            dir.is_dir().then_some(MemoryCgroup { dir, version: v })
        });
        let (control, controls) = controls();
        let process = step_process(pid, journal.born_after_ms, journal.started_ms);
        let exit_file = step_dir.join("exit");
        if process == StepProcess::Running {
            let elapsed = Duration::from_millis(epoch_ms().saturating_sub(journal.started_ms));
            let started = Instant::now().checked_sub(elapsed).unwrap_or_else(Instant::now);
            let supervised = Supervised {
                job_id,
                attempt,
                pid,
                process: Process::Adopted(spawn::Adopted::new(pid, exit_file)),
                started,
                limit: journal.time_limit_s.map(|s| after(started, s)),
                warn_at: None,
                rss_limit: None,
                memory,
                step_dir,
            };
            let step = supervised.start(cfg, control.clone(), controls);
            found.push((Recovered::Running(step), control, journal.cpus));
        } else {
            // A zombie nobody reaped still tells how it ended.
            let zombie = (process == StepProcess::Zombie).then(|| spawn::zombie_status(pid)).flatten();
            let status = zombie.unwrap_or_else(|| spawn::read_status(&exit_file));
            let outcome = match &memory {
                _ if step_dir.join("fenced").exists() => StepOutcome::Lost,
                Some(m) if m.oom_kills() > 0 => StepOutcome::OutOfMemory,
                _ => outcome_of(status),
            };
            if let Some(m) = memory {
                m.remove().await;
            }
            let _ = std::fs::remove_dir_all(&step_dir);
            let report = BatchReport {
                job_id,
                attempt,
                outcome,
                max_rss_bytes: None,
                cpu: None,
                runtime: Duration::ZERO,
                failure: None,
            };
            found.push((Recovered::Ended(report), control, journal.cpus));
        }
    }
    found
}

fn signal_group(pgid: i32, sig: i32) {
    if pgid > 0 {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-pgid, sig) };
    }
}

fn signal_pid(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: as above.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Resident memory of every process in the group, from /proc.
fn group_rss_bytes(pgid: i32) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    let mut total = 0;
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // Fields after the command name, which may contain spaces.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // state ppid pgrp ... rss is field 24 overall, 22 here (0-based 21).
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) {
            total += fields.get(21).and_then(|r| r.parse::<u64>().ok()).unwrap_or(0) * page;
        }
    }
    total
}
/// What runs a script whose file cannot be executed (a `noexec` spool):
/// its `#!` interpreter and that line's one optional argument, as the
/// kernel would split them; `/bin/sh` for a script without one.
fn interpreter_of(script: &str) -> Vec<String> {
    let first = script.lines().next().unwrap_or_default();
    let Some(line) = first.strip_prefix("#!").map(str::trim).filter(|l| !l.is_empty()) else {
        return vec!["/bin/sh".into()];
    };
    match line.split_once([' ', '\t']) {
        Some((program, arg)) if !arg.trim().is_empty() => vec![program.into(), arg.trim().into()],
        Some((program, _)) => vec![program.into()],
        None => vec![line.into()],
    }
}

#[cfg(test)]
mod tests {
    use super::interpreter_of;

    #[test]
    fn the_interpreter_is_read_as_the_kernel_reads_it() {
        assert_eq!(interpreter_of("#!/bin/bash\necho"), ["/bin/bash"]);
        assert_eq!(interpreter_of("#! /bin/sh -e \necho"), ["/bin/sh", "-e"]);
        assert_eq!(interpreter_of("#!/usr/bin/env python3\n"), ["/usr/bin/env", "python3"]);
        assert_eq!(interpreter_of("#!/usr/bin/env -S a b\n"), ["/usr/bin/env", "-S a b"]);
        assert_eq!(interpreter_of("echo no shebang\n"), ["/bin/sh"]);
        assert_eq!(interpreter_of("#!\n"), ["/bin/sh"]);
        assert_eq!(interpreter_of(""), ["/bin/sh"]);
    }
}
