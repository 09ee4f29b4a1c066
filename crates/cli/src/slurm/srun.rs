//! `srun` and `salloc`.
//!
//! Inside an allocation (`SLURM_JOB_ID` set, or `--jobid`), `srun` asks the
//! controller for a step, takes each node's sealed grant to that node's
//! agent, streams every rank's output back as it comes (`-l` labels lines
//! with the rank, `-o/-e` patterns write files), records how the step ended
//! and exits with the worst exit of its ranks. Outside one, it first makes an
//! allocation (a job whose batch step only holds the nodes), runs the step
//! in it, and gives it back. `salloc` makes the allocation and runs a
//! command (default: the user's shell) on this host with the job's
//! variables, then gives the allocation back.

/// `eprintln!` that cannot panic: srun's standard error may be a closed
/// pipe (`srun … 2>&1 | head -1`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use crate::client::{Client, ClientError};
use clap::Parser;
use drover_core::step::StepRequest;
use drover_proto::{ExitReport, JobView, LaunchTasks, StepCreated, StepNode, SubmitJobs, Submitted, TaskFrame};
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

/// Options of the allocation itself, shared by `srun` (outside an
/// allocation) and `salloc`; passed on to the submission as sbatch's.
#[derive(clap::Args, Debug, Default)]
struct Alloc {
    #[arg(short = 'p', long)]
    partition: Option<String>,
    #[arg(short = 't', long)]
    time: Option<String>,
    #[arg(long)]
    mem: Option<String>,
    #[arg(long = "mem-per-cpu")]
    mem_per_cpu: Option<String>,
    #[arg(short = 'A', long)]
    account: Option<String>,
    #[arg(short = 'q', long)]
    qos: Option<String>,
    #[arg(short = 'w', long)]
    nodelist: Option<String>,
    #[arg(short = 'x', long)]
    exclude: Option<String>,
    #[arg(short = 'C', long)]
    constraint: Option<String>,
    #[arg(long)]
    gres: Option<String>,
    #[arg(short = 'G', long)]
    gpus: Option<String>,
    #[arg(long = "gpus-per-node")]
    gpus_per_node: Option<String>,
    #[arg(long)]
    comment: Option<String>,
}

/// The shape of the tasks: of a step, or of the allocation srun or salloc makes.
#[derive(clap::Args, Debug, Default)]
struct Shape {
    #[arg(short = 'n', long)]
    ntasks: Option<u32>,
    #[arg(short = 'N', long)]
    nodes: Option<u32>,
    #[arg(long = "ntasks-per-node")]
    ntasks_per_node: Option<u32>,
    #[arg(short = 'c', long = "cpus-per-task")]
    cpus_per_task: Option<u32>,
    #[arg(short = 'J', long = "job-name")]
    job_name: Option<String>,
}

#[derive(Parser, Debug)]
#[command(name = "srun", disable_help_flag = true, disable_version_flag = true)]
pub struct SrunArgs {
    #[command(flatten)]
    common: super::Common,
    #[command(flatten)]
    alloc: Alloc,
    #[command(flatten)]
    shape: Shape,
    #[arg(short = 'o', long)]
    output: Option<String>,
    #[arg(short = 'e', long)]
    error: Option<String>,
    /// Prefix each line with the rank that wrote it.
    #[arg(short = 'l', long)]
    label: bool,
    /// Output is always passed on as it comes; accepted.
    #[arg(short = 'u', long)]
    unbuffered: bool,
    #[arg(short = 'O', long)]
    overcommit: bool,
    #[arg(short = 'D', long)]
    chdir: Option<String>,
    #[arg(long)]
    export: Option<String>,
    /// append|truncate the -o/-e files (default: as the job's, else truncate).
    #[arg(long = "open-mode")]
    open_mode: Option<String>,
    /// Run inside this job's allocation.
    #[arg(long)]
    jobid: Option<String>,
    #[arg(short = 'Q', long)]
    quiet: bool,
    /// Accepted: steps may always share their job's CPUs.
    #[arg(long)]
    overlap: bool,
    /// Accepted and ignored (Drover's step launcher needs no MPI plugin).
    #[arg(long)]
    mpi: Option<String>,
    /// Accepted and ignored.
    #[arg(long = "cpu-bind")]
    cpu_bind: Option<String>,
    /// Accepted and ignored.
    #[arg(short = 'K', long = "kill-on-bad-exit", num_args = 0..=1, default_missing_value = "1")]
    kill_on_bad_exit: Option<String>,
    /// Accepted and ignored.
    #[arg(long)]
    exclusive: bool,
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Parser, Debug)]
#[command(name = "salloc", disable_help_flag = true, disable_version_flag = true)]
pub struct SallocArgs {
    #[command(flatten)]
    common: super::Common,
    #[command(flatten)]
    alloc: Alloc,
    #[command(flatten)]
    shape: Shape,
    #[arg(short = 'Q', long)]
    quiet: bool,
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

const SRUN_USAGE: &str = "Usage: srun [-N nnodes] [-n ntasks] [-c ncpus] [--ntasks-per-node=n] [-l] [-o out] [-e err]\n            [-J jobname] [-p partition] [-t minutes] [--mem=MB] [--jobid=id] executable [args...]";
const SALLOC_USAGE: &str = "Usage: salloc [-N nnodes] [-n ntasks] [-c ncpus] [-J jobname] [-p partition] [-t minutes]\n              [--mem=MB] [command [args...]]";

/// The holder of an allocation made by srun or salloc: the batch step
/// only keeps the nodes until the allocation is given back.
const HOLDER: &str = "while :; do sleep 3600; done";

pub async fn srun(client: &Client, a: SrunArgs) -> Result<i32, String> {
    if a.common.answered(SRUN_USAGE) {
        return Ok(0);
    }
    if a.command.is_empty() {
        return Err("no command to run given; usage: srun [OPTIONS] COMMAND [ARGS...]".into());
    }
    let inside = a.jobid.clone().or_else(|| std::env::var("SLURM_JOB_ID").ok().filter(|v| !v.is_empty()));
    let (job, ours) = match inside {
        Some(id) => (id, false),
        None => {
            let name = a.shape.job_name.clone().unwrap_or_else(|| command_name(&a.command));
            (allocate(client, "srun", &a.alloc, &a.shape, &name, a.quiet).await?, true)
        }
    };
    let request = StepRequest {
        name: a.shape.job_name.clone().unwrap_or_else(|| command_name(&a.command)),
        // In an allocation srun made itself, the step is the whole of it.
        ntasks: if ours { None } else { a.shape.ntasks },
        nodes: if ours { None } else { a.shape.nodes },
        ntasks_per_node: if ours { None } else { a.shape.ntasks_per_node },
        cpus_per_task: a.shape.cpus_per_task,
        overcommit: a.overcommit,
        // Held open to the leader while srun lives (see `run_step`).
        client_held: true,
    };
    let outcome = match ours {
        true => hold_while(client, &job, run_step(client, &job, request, &a)).await,
        false => run_step(client, &job, request, &a).await,
    };
    if ours {
        let exit = match &outcome {
            Ok((code, _)) => ExitReport { exit_code: *code, ..Default::default() },
            Err(_) => ExitReport { exit_code: 1, ..Default::default() },
        };
        let given_back: Result<JobView, ClientError> =
            client.post(&format!("/api/v1/jobs/{job}/complete"), &exit).await;
        if let Err(e) = given_back {
            say!("srun: error: cannot give back job allocation {job}: {e}");
        }
    }
    let (code, ending) = outcome?;
    match ending {
        Ending::Normal => {}
        Ending::Interrupted => say!("srun: interrupted; step aborted"),
        // Only now, with the step ended and the allocation given back.
        Ending::OutputClosed => die_of_sigpipe(),
    }
    Ok(code)
}

/// How a step ended, from srun's side.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ending {
    Normal,
    /// SIGINT, SIGTERM or SIGHUP.
    Interrupted,
    /// Standard output or error is a closed pipe (`srun … | head -1`).
    OutputClosed,
}

/// Ends srun the way a closed pipe ends any Unix tool: by SIGPIPE (the
/// shell sees 141). Rust ignores SIGPIPE, so it is restored first.
fn die_of_sigpipe() -> ! {
    // SAFETY: signal and raise have no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE)
}

/// Runs `work` while keeping the allocation `job` attached to the leader
/// (see the controller's `holds.rs`): should this process end in any way
/// before it gives the allocation back — crash, `kill -9` — the leader
/// cancels the job within seconds.
async fn hold_while<T>(client: &Client, job: &str, work: impl std::future::Future<Output = T>) -> T {
    tokio::select! {
        out = work => out,
        never = keep_allocation(client, job) => match never {},
    }
}

/// Keeps `GET /api/v1/jobs/{job}/attach` open, reconnecting (to a new
/// leader, say) whenever it ends.
async fn keep_allocation(client: &Client, job: &str) -> std::convert::Infallible {
    keep_attached(client, &format!("/api/v1/jobs/{job}/attach")).await
}

/// Keeps the attachment at `path` open, reconnecting whenever it ends.
async fn keep_attached(client: &Client, path: &str) -> std::convert::Infallible {
    loop {
        if let Ok(mut resp) = client.stream(path).await {
            if resp.status().is_success() {
                while let Ok(Some(_)) = resp.chunk().await {}
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn salloc(client: &Client, a: SallocArgs) -> Result<i32, String> {
    if a.common.answered(SALLOC_USAGE) {
        return Ok(0);
    }
    let name = a.shape.job_name.clone().unwrap_or_else(|| "interactive".into());
    let job = allocate(client, "salloc", &a.alloc, &a.shape, &name, a.quiet).await?;
    if !a.quiet {
        say!("salloc: Granted job allocation {job}");
    }
    let status = hold_while(client, &job, run_command(client, &job, &a)).await;
    let code = match &status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(s).unwrap_or(0)),
        Err(_) => 1,
    };
    if !a.quiet {
        say!("salloc: Relinquishing job allocation {job}");
    }
    let exit = ExitReport { exit_code: code, ..Default::default() };
    let given_back: Result<JobView, ClientError> = client.post(&format!("/api/v1/jobs/{job}/complete"), &exit).await;
    given_back.map_err(|e| format!("cannot give back job allocation {job}: {e}"))?;
    status?;
    Ok(code)
}

/// salloc's command (default: the user's shell), run here with the job's
/// variables.
async fn run_command(client: &Client, job: &str, a: &SallocArgs) -> Result<std::process::ExitStatus, String> {
    let env: Vec<(String, String)> = client.get(&format!("/api/v1/jobs/{job}/env"), &[]).await?;
    let command = match a.command.is_empty() {
        true => vec![std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into())],
        false => a.command.clone(),
    };
    let mut child = tokio::process::Command::new(&command[0]);
    child.args(&command[1..]).envs(env.into_iter().filter(|(k, _)| k != "SLURM_NODEID" && k != "DROVER_NODEID"));
    match child.spawn() {
        Ok(mut c) => {
            // The command has the terminal; ^C is for it, not for us.
            tokio::select! {
                s = c.wait() => s.map_err(|e| e.to_string()),
                _ = terminated() => {
                    let _ = c.kill().await;
                    Err("terminated".into())
                }
            }
        }
        Err(e) => Err(format!("cannot run {}: {e}", command[0])),
    }
}

/// Waits for SIGINT, SIGTERM or SIGHUP.
async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
}

fn command_name(command: &[String]) -> String {
    command.first().map_or("srun".into(), |c| c.rsplit('/').next().unwrap_or(c).to_string())
}

/// Submits a job that only holds nodes and waits until it runs; its id.
/// Interrupted while waiting, the request is withdrawn.
async fn allocate(client: &Client, cmd: &str, a: &Alloc, s: &Shape, name: &str, quiet: bool) -> Result<String, String> {
    let mut args: Vec<String> = vec!["--job-name".into(), name.into(), "--output".into(), "/dev/null".into()];
    let counts = [
        ("--ntasks", s.ntasks),
        ("--nodes", s.nodes),
        ("--ntasks-per-node", s.ntasks_per_node),
        ("--cpus-per-task", s.cpus_per_task),
    ];
    for (flag, n) in counts {
        if let Some(n) = n {
            args.extend([flag.to_string(), n.to_string()]);
        }
    }
    let texts = [
        ("--partition", &a.partition),
        ("--time", &a.time),
        ("--mem", &a.mem),
        ("--mem-per-cpu", &a.mem_per_cpu),
        ("--account", &a.account),
        ("--qos", &a.qos),
        ("--nodelist", &a.nodelist),
        ("--exclude", &a.exclude),
        ("--constraint", &a.constraint),
        ("--gres", &a.gres),
        ("--gpus", &a.gpus),
        ("--gpus-per-node", &a.gpus_per_node),
        ("--comment", &a.comment),
    ];
    for (flag, value) in texts {
        if let Some(v) = value {
            args.extend([flag.to_string(), v.clone()]);
        }
    }
    // Not a script the user wrote: the job may not be requeued onto other
    // nodes behind the back of the srun that holds it.
    args.push("--no-requeue".into());
    args.push("--wrap".into());
    args.push(HOLDER.into());
    let (mut spec, _) = crate::check::resolve(&args)?;
    // Held by this process: should it die, the leader cancels the job.
    spec.client_held = true;
    let submitted: Submitted = client.post("/api/v1/jobs", &SubmitJobs { jobs: vec![spec] }).await?;
    let id = submitted.job_ids.first().copied().ok_or("the controller accepted no job")?.to_string();
    let mut told = false;
    let wait = async {
        loop {
            let v: JobView = client.get(&format!("/api/v1/jobs/{id}"), &[]).await?;
            match v.state.as_str() {
                "RUNNING" => return Ok::<(), String>(()),
                "PENDING" => {}
                other => return Err(format!("job {id} is {other}; the allocation was not granted")),
            }
            if !told && !quiet {
                // Said only when the allocation is not granted at once, as Slurm does.
                if cmd == "salloc" {
                    say!("salloc: Pending job allocation {id}");
                }
                say!("{cmd}: job {id} queued and waiting for resources");
                told = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        r = hold_while(client, &id, wait) => r?,
        _ = terminated() => {
            let _ = client.delete::<serde_json::Value>(&format!("/api/v1/jobs/{id}")).await;
            return Err(format!("Job allocation {id} has been revoked"));
        }
    }
    if told && !quiet {
        say!("{cmd}: job {id} has been allocated resources");
    }
    Ok(id)
}

/// Where one stream of the step's output goes.
enum Sink {
    Stdout,
    Stderr,
    /// One file for all ranks, or one per rank (`%t` in the pattern).
    Files {
        pattern: String,
        append: bool,
        open: HashMap<String, std::fs::File>,
        /// A write failed already (said once).
        failed: bool,
    },
}

impl Sink {
    fn of(pattern: Option<&str>, append: bool, default: Sink) -> Sink {
        match pattern {
            None => default,
            Some(p) => Sink::Files { pattern: p.to_string(), append, open: HashMap::new(), failed: false },
        }
    }

    fn is_standard(&self) -> bool {
        matches!(self, Sink::Stdout | Sink::Stderr)
    }

    /// Whether this is the sink's first failure (the terminal's count
    /// every time: each is a different moment).
    fn first_failure(&mut self) -> bool {
        match self {
            Sink::Files { failed, .. } => !std::mem::replace(failed, true),
            _ => true,
        }
    }

    fn write(&mut self, names: &Names<'_>, rank: u32, data: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => std::io::stdout().lock().write_all(data),
            Sink::Stderr => std::io::stderr().lock().write_all(data),
            Sink::Files { pattern, append, open, .. } => {
                let path = names.expand(pattern, rank);
                if !open.contains_key(&path) {
                    let f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
                    // Truncated once, on first use, unless appending.
                    if !*append {
                        f.set_len(0)?;
                    }
                    open.insert(path.clone(), f);
                }
                open.get_mut(&path).expect("just opened").write_all(data)
            }
        }
    }
}

/// What srun's `-o/-e` patterns may name.
struct Names<'a> {
    job_id: u64,
    /// The array and the task, when the job is an array task.
    array: Option<(u64, u32)>,
    step: u32,
    name: &'a str,
    user: String,
    /// Rank → (node id, node name).
    node_of: HashMap<u32, (usize, String)>,
}

impl Names<'_> {
    /// The pattern for `rank`, by the batch step's own rules plus the step's
    /// `%s %t %n %N %J`.
    fn expand(&self, pattern: &str, rank: u32) -> String {
        let (node_id, node) = self.node_of.get(&rank).cloned().unwrap_or((0, String::new()));
        drover_core::launch::expand_pattern(
            pattern,
            &drover_core::launch::PatternInput {
                job_id: self.job_id,
                array_job_id: self.array.map(|(a, _)| a),
                array_task: self.array.map(|(_, t)| t),
                name: self.name,
                user: &self.user,
                first_node: &node,
                step: Some(self.step),
                task: rank,
                node_index: node_id as u32,
            },
        )
    }
}

/// A frame from one node, or that node's connection ending.
enum FromNode {
    Frame(TaskFrame),
    Ended { node: String, error: Option<String> },
}

/// Runs one step; (worst exit code, how it ended).
async fn run_step(client: &Client, job: &str, request: StepRequest, a: &SrunArgs) -> Result<(i32, Ending), String> {
    // Checked before a step exists that a bad --export would leave behind.
    let mine: Vec<(String, String)> = std::env::vars().collect();
    let env = drover_core::options::exported_environment(a.export.as_deref(), &mine).map_err(|e| e.to_string())?;
    let created: StepCreated = client
        .post(&format!("/api/v1/jobs/{job}/steps"), &request)
        .await
        .map_err(|e| format!("Unable to create step for job {job}: {e}"))?;
    let step = created.step;
    let cwd = match &a.chdir {
        Some(d) => d.clone(),
        None => std::env::current_dir()
            .map_err(|e| format!("cannot tell the current directory: {e}"))?
            .display()
            .to_string(),
    };
    let mut node_of = HashMap::new();
    for (k, n) in created.nodes.iter().enumerate() {
        for r in n.first_rank..n.first_rank + n.tasks {
            node_of.insert(r, (k, n.name.clone()));
        }
    }
    let array = job.split_once('_').and_then(|(a, t)| Some((a.parse().ok()?, t.parse().ok()?)));
    let names = Names { job_id: created.job_id, array, step, name: &request.name, user: super::my_user(), node_of };
    // From here until the step has ended, the step is attached to the
    // leader: should this process die in any way — even before an agent
    // has started a task, which no agent would notice — the leader ends
    // the step within seconds.
    let attachment = format!("/api/v1/jobs/{job}/steps/{step}/attach");
    tokio::select! {
        out = follow_step(client, job, &created, names, a, env, cwd) => out,
        never = keep_attached(client, &attachment) => match never {},
    }
}

/// Launches the step's ranks on their nodes and follows them to their end.
async fn follow_step(
    client: &Client,
    job: &str,
    created: &StepCreated,
    names: Names<'_>,
    a: &SrunArgs,
    env: Vec<(String, String)>,
    cwd: String,
) -> Result<(i32, Ending), String> {
    let step = created.step;
    let total: u32 = created.nodes.iter().map(|n| n.tasks).sum();
    let mode = a.open_mode.clone().or_else(|| std::env::var("SLURM_OPEN_MODE").ok()).unwrap_or_default();
    let append = mode.to_ascii_lowercase().starts_with('a');
    let mut out = Sink::of(a.output.as_deref(), append, Sink::Stdout);
    // Without -e, errors follow -o (Slurm's rule), else go to stderr.
    let mut err = Sink::of(a.error.as_deref().or(a.output.as_deref()), append, Sink::Stderr);

    let (tx, mut rx) = tokio::sync::mpsc::channel::<FromNode>(256);
    let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).tcp_nodelay(true);
    let (http, scheme) = drover_tls::http_client(builder, drover_tls::ca_path().as_deref())?;
    let mut links = Vec::new();
    for n in &created.nodes {
        let body = LaunchTasks {
            grant: n.grant.clone(),
            seal: n.seal.clone(),
            argv: a.command.clone(),
            env: env.clone(),
            cwd: cwd.clone(),
        };
        links.push(tokio::spawn(follow_node((http.clone(), scheme), n.clone(), body, tx.clone())));
    }
    drop(tx);

    let mut exits: HashMap<u32, (i32, i32)> = HashMap::new();
    let mut lost: Vec<String> = Vec::new();
    let mut partial: HashMap<(u32, bool), Vec<u8>> = HashMap::new();
    let mut ending = Ending::Normal;
    let stop = terminated();
    tokio::pin!(stop);
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = &mut stop, if ending == Ending::Normal => {
                ending = Ending::Interrupted;
                // Hanging up kills the ranks (the agents see the stream drop).
                links.iter().for_each(|l| l.abort());
                continue;
            }
        };
        let Some(msg) = msg else { break };
        let written = match msg {
            // Nothing more can be shown: what is still queued is dropped.
            FromNode::Frame(TaskFrame::Stdout { .. } | TaskFrame::Stderr { .. }) if ending != Ending::Normal => Ok(()),
            FromNode::Frame(TaskFrame::Stdout { rank, data }) => {
                emit(&mut out, &names, a.label, rank, &data, &mut partial, false)
            }
            FromNode::Frame(TaskFrame::Stderr { rank, data }) => {
                emit(&mut err, &names, a.label, rank, &data, &mut partial, true)
            }
            other => {
                on_frame(other, &names, &mut exits, &mut lost);
                Ok(())
            }
        };
        if let (Err(OutputClosed), Ending::Normal) = (written, ending) {
            // A closed pipe ends srun as it ends any tool, and its ranks
            // with it (the agents see the streams drop).
            ending = Ending::OutputClosed;
            links.iter().for_each(|l| l.abort());
        }
    }

    // Unterminated last lines of labelled output.
    for ((rank, is_err), rest) in std::mem::take(&mut partial) {
        if !rest.is_empty() && ending != Ending::OutputClosed {
            let sink = if is_err { &mut err } else { &mut out };
            let _ = sink.write(&names, rank, &[format!("{rank}: ").into_bytes(), rest, b"\n".to_vec()].concat());
        }
    }
    let _ = std::io::stdout().flush();
    let missing = total as usize - exits.len().min(total as usize);
    if missing > 0 && ending == Ending::Normal && lost.is_empty() {
        say!("srun: error: {missing} task(s) of step {job}.{step} did not report how they ended");
    }
    let worst_code = exits.values().map(|&(c, s)| if s != 0 { 128 + s } else { c }).max().unwrap_or(0);
    let worst_signal = exits.values().map(|&(_, s)| s).max().unwrap_or(0);
    let (code, report) = if ending == Ending::Interrupted {
        (130, ExitReport { exit_code: 0, signal: libc::SIGINT, cancelled: true })
    } else if ending == Ending::OutputClosed {
        (128 + libc::SIGPIPE, ExitReport { exit_code: 0, signal: libc::SIGPIPE, cancelled: true })
    } else if missing > 0 {
        (worst_code.max(1), ExitReport { exit_code: worst_code.max(1), signal: worst_signal, cancelled: false })
    } else {
        let code = exits.values().map(|&(c, _)| c).max().unwrap_or(0);
        (worst_code, ExitReport { exit_code: code, signal: worst_signal, cancelled: false })
    };
    let ended: Result<JobView, ClientError> =
        client.post(&format!("/api/v1/jobs/{job}/steps/{step}/end"), &report).await;
    if let Err(e) = ended {
        say!("srun: error: cannot record the end of step {job}.{step}: {e}");
    }
    Ok((code, ending))
}

/// A frame that is not output: an exit, an error, a node's end.
fn on_frame(msg: FromNode, names: &Names<'_>, exits: &mut HashMap<u32, (i32, i32)>, lost: &mut Vec<String>) {
    match msg {
        FromNode::Frame(TaskFrame::Exit { rank, code, signal }) => {
            exits.insert(rank, (code, signal));
            let node = names.node_of.get(&rank).map(|n| n.1.clone()).unwrap_or_default();
            if signal != 0 {
                say!("srun: error: {node}: task {rank}: {}", signal_name(signal));
            } else if code != 0 {
                say!("srun: error: {node}: task {rank}: Exited with exit code {code}");
            }
        }
        FromNode::Frame(TaskFrame::Error { message }) => say!("srun: error: {message}"),
        FromNode::Frame(TaskFrame::Stdout { .. } | TaskFrame::Stderr { .. } | TaskFrame::Ping) => {}
        FromNode::Ended { node, error } => {
            if let Some(e) = error {
                say!("srun: error: {node}: {e}");
                lost.push(node);
            }
        }
    }
}

/// Writes a piece of a rank's output; with `label`, whole lines only, each
/// prefixed by the rank.
fn emit(
    sink: &mut Sink,
    names: &Names<'_>,
    label: bool,
    rank: u32,
    data: &[u8],
    partial: &mut HashMap<(u32, bool), Vec<u8>>,
    is_err: bool,
) -> Result<(), OutputClosed> {
    let result = if !label {
        sink.write(names, rank, data)
    } else {
        let buf = partial.entry((rank, is_err)).or_default();
        buf.extend_from_slice(data);
        let mut text = Vec::new();
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            text.extend_from_slice(format!("{rank}: ").as_bytes());
            text.extend_from_slice(&line);
        }
        if text.is_empty() {
            Ok(())
        } else {
            sink.write(names, rank, &text)
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe && sink.is_standard() => Err(OutputClosed),
        Err(e) => {
            // Once per sink: a full disk must not flood the terminal.
            if sink.first_failure() {
                say!("srun: error: cannot write the output of task {rank}: {e}");
            }
            Ok(())
        }
    }
}

/// srun's standard output or error is a closed pipe.
#[derive(Debug)]
struct OutputClosed;

/// Sends one node its ranks and relays what comes back.
async fn follow_node(
    (http, scheme): (reqwest::Client, &'static str),
    n: StepNode,
    body: LaunchTasks,
    tx: tokio::sync::mpsc::Sender<FromNode>,
) {
    let ended = |error: Option<String>| FromNode::Ended { node: n.name.clone(), error };
    if n.addr.is_empty() {
        let _ = tx.send(ended(Some("the node's agent has no listener (started with --listen none?)".into()))).await;
        return;
    }
    let resp =
        match http.post(format!("{}/api/v1/steps", drover_proto::base_url(scheme, &n.addr))).json(&body).send().await {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(ended(Some(format!("cannot reach the agent at {}: {e}", n.addr)))).await;
                return;
            }
        };
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let _ = tx.send(ended(Some(format!("the agent refused the step ({status}): {text}")))).await;
        return;
    }
    let mut resp = resp;
    let mut buf = Vec::new();
    let mut exited = 0;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(ended(Some(format!("lost the connection to the agent: {e}")))).await;
                return;
            }
        }
        loop {
            match TaskFrame::decode(&mut buf) {
                Ok(Some(f)) => {
                    match f {
                        TaskFrame::Ping => continue,
                        TaskFrame::Exit { .. } => exited += 1,
                        _ => {}
                    }
                    if tx.send(FromNode::Frame(f)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(ended(Some(e))).await;
                    return;
                }
            }
        }
    }
    let error = (exited < n.tasks).then(|| format!("{} of its {} task(s) ended unreported", n.tasks - exited, n.tasks));
    let _ = tx.send(ended(error)).await;
}

fn signal_name(sig: i32) -> String {
    match sig {
        9 => "Killed".into(),
        15 => "Terminated".into(),
        11 => "Segmentation fault".into(),
        6 => "Aborted".into(),
        2 => "Interrupt".into(),
        n => format!("Killed by signal {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_lists() {
        let mine = vec![("A".to_string(), "1".to_string()), ("B".to_string(), "2".to_string())];
        let exported = |spec: Option<&str>, env: Vec<(String, String)>| {
            drover_core::options::exported_environment(spec, &env).unwrap()
        };
        let pairs = |e: Vec<(String, String)>| e.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
        assert_eq!(pairs(exported(None, mine.clone())), "A=1 B=2");
        assert_eq!(pairs(exported(Some("ALL"), mine.clone())), "A=1 B=2");
        assert_eq!(pairs(exported(Some("NONE"), mine.clone())), "");
        assert_eq!(pairs(exported(Some("NONE,C=3"), mine.clone())), "C=3");
        assert_eq!(pairs(exported(Some("B,C=3"), mine.clone())), "B=2 C=3");
        assert_eq!(pairs(exported(Some("ALL,A=9"), mine)), "B=2 A=9");
    }

    #[test]
    fn output_patterns() {
        let mut node_of = HashMap::new();
        node_of.insert(3, (1, "node2".to_string()));
        let names = Names { job_id: 7, array: None, step: 2, name: "sim", user: "alice".into(), node_of };
        assert_eq!(names.expand("out-%j-%s-%t-%n-%N.txt", 3), "out-7-2-3-1-node2.txt");
        assert_eq!(names.expand("%J %x %u %A %a %% %q", 3), "7.2 sim alice 7 4294967294 % %q");
        let array =
            Names { job_id: 9, array: Some((7, 4)), step: 0, name: "", user: String::new(), node_of: HashMap::new() };
        assert_eq!(array.expand("%A-%a", 0), "7-4");
    }

    #[test]
    fn labelled_output_is_whole_lines() {
        let dir = std::env::temp_dir().join(format!("drover-srun-label-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let pattern = dir.join("%t.out").display().to_string();
        let names = Names { job_id: 1, array: None, step: 0, name: "", user: String::new(), node_of: HashMap::new() };
        let mut sink = Sink::of(Some(&pattern), false, Sink::Stdout);
        let mut partial = HashMap::new();
        emit(&mut sink, &names, true, 1, b"hel", &mut partial, false).unwrap();
        emit(&mut sink, &names, true, 1, b"lo\nwor", &mut partial, false).unwrap();
        emit(&mut sink, &names, true, 1, b"ld\n", &mut partial, false).unwrap();
        drop(sink);
        assert_eq!(std::fs::read_to_string(dir.join("1.out")).unwrap(), "1: hello\n1: world\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
