//! The everyday commands: submit, queue, nodes, show, cancel, wait, logs.

use crate::client::Client;
use clap::Args;
use drover_core::job::JobRef;
use drover_core::state::CancelFilter;
use drover_core::{time, JobState};
use drover_proto::*;
use std::time::Duration;

#[derive(Args)]
pub struct SubmitArgs {
    /// sbatch options, then the script (or --wrap CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "OPTIONS... SCRIPT")]
    args: Vec<String>,
    /// Run as `sbatch`: messages carry its name, as Slurm's do.
    #[arg(skip)]
    as_sbatch: bool,
}

impl SubmitArgs {
    /// `sbatch ARGS…`.
    pub fn sbatch(args: Vec<String>) -> SubmitArgs {
        SubmitArgs { args, as_sbatch: true }
    }
}

#[derive(Args)]
pub struct QueueArgs {
    /// Only these users' jobs (comma-separated).
    #[arg(short, long)]
    user: Option<String>,
    /// Only jobs in these states (PD,R,CD… or names).
    #[arg(short = 't', long)]
    state: Option<String>,
    /// Only these job ids.
    #[arg(short, long)]
    jobs: Option<String>,
    #[arg(short, long)]
    partition: Option<String>,
    #[arg(long)]
    name: Option<String>,
    /// Include finished jobs.
    #[arg(short, long)]
    all: bool,
    #[arg(long)]
    json: bool,
    /// Read from the first controller that answers, leader or not: works
    /// without a leader, but may miss the latest changes.
    #[arg(long)]
    stale: bool,
}

#[derive(Args)]
pub struct CancelArgs {
    /// Job ids (1234, 1234_7).
    ids: Vec<String>,
    #[arg(short, long)]
    user: Option<String>,
    #[arg(short = 't', long)]
    state: Option<String>,
    #[arg(short, long)]
    name: Option<String>,
}

pub(crate) use drover_auth::now_ms;

pub async fn submit(client: &Client, a: SubmitArgs) -> Result<i32, String> {
    let (spec, opts) = crate::check::resolve(&a.args)?;
    if opts.test_only {
        return test_only(client, spec, a.as_sbatch).await;
    }
    let submitted: Submitted = client.post("/api/v1/jobs", &SubmitJobs { jobs: vec![spec] }).await?;
    let id = submitted.job_ids.first().copied().ok_or("the controller accepted no job")?;
    if opts.parsable {
        println!("{id}");
    } else if !opts.quiet {
        println!("Submitted batch job {id}");
    }
    if opts.wait {
        return wait_for(client, &[id.to_string()]).await;
    }
    Ok(0)
}

/// `--test-only`: the controller checks the job and says where and when it
/// would start; nothing is submitted. Slurm's sentence, on stderr as
/// Slurm's.
async fn test_only(client: &Client, spec: drover_core::job::JobSpec, as_sbatch: bool) -> Result<i32, String> {
    let answer: WouldStart = client.post("/api/v1/jobs/test", &SubmitJobs { jobs: vec![spec] }).await?;
    let e = answer.estimates.first().ok_or("the controller estimated nothing")?;
    let prefix = if as_sbatch { "sbatch: " } else { "" };
    match e.start_ms {
        Some(ms) => eprintln!(
            "{prefix}Job {} to start at {} using {} processors on nodes {} in partition {}",
            e.job_id,
            time::format_timestamp(ms / 1000),
            e.cpus,
            e.nodes,
            e.partition
        ),
        None => eprintln!(
            "{prefix}Job {} is valid, but its start cannot be foreseen in partition {}: the resources it needs are held by jobs without a time limit, or the partition is down",
            e.job_id, e.partition
        ),
    }
    Ok(0)
}

pub async fn queue(client: &Client, a: QueueArgs) -> Result<i32, String> {
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(u) = a.user {
        q.push(("user", u));
    }
    if let Some(s) = a.state {
        q.push(("state", s));
    }
    if let Some(j) = a.jobs {
        q.push(("id", j));
    }
    if let Some(p) = a.partition {
        q.push(("partition", p));
    }
    if let Some(n) = a.name {
        q.push(("name", n));
    }
    if a.all {
        q.push(("all", "true".into()));
    }
    if a.stale {
        q.push((drover_proto::STALE_PARAM, "true".into()));
    }
    if a.json {
        let list: JobList = client.get("/api/v1/jobs", &q).await?;
        println!("{}", serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?);
        return Ok(0);
    }
    // The controller writes the table itself: the client only copies it.
    q.push(("format", "table".into()));
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match client.copy_text("/api/v1/jobs", &q, &mut stdout).await {
        Err(e) if e.refused_with(reqwest::StatusCode::BAD_REQUEST).is_some_and(|m| m.contains("unknown format")) => {
            // A controller from before the table: its compact rows, padded here.
            q.pop();
            q.push(("format", "tsv".into()));
            let text = client.get_text("/api/v1/jobs", &q).await?;
            let mut out = drover_proto::queue_table_header();
            for row in text.lines().skip(1).filter_map(JobRow::parse_tsv) {
                row.push_table_line(&mut out, now_ms());
            }
            // A closed pipe (`drover queue | head`) is not an error.
            let _ = stdout.write_all(out.as_bytes());
            Ok(0)
        }
        other => Ok(other.map(|()| 0)?),
    }
}

pub async fn nodes(client: &Client, json: bool) -> Result<i32, String> {
    let list: NodeList = client.get("/api/v1/nodes", &[]).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?);
        return Ok(0);
    }
    println!(
        "{:<12} {:<10} {:>9} {:>11} {:>5} {:<10} REASON",
        "NODE", "STATE", "CPU(A/T)", "MEM(A/T)", "JOBS", "PARTITION"
    );
    for n in list.nodes {
        println!(
            "{:<12} {:<10} {:>9} {:>11} {:>5} {:<10} {}",
            n.name,
            format!("{}{}", n.state.to_lowercase(), n.power_mark()),
            format!("{}/{}", n.alloc.cpus, n.total.cpus),
            format!(
                "{}/{}",
                drover_core::memory::format_mb(n.alloc.mem_mb),
                drover_core::memory::format_mb(n.total.mem_mb)
            ),
            n.jobs,
            n.partitions.join(","),
            match (&n.repair, n.reason) {
                (Some(r), Some(why)) => format!("{why} [{r}]"),
                (Some(r), None) => format!("[{r}]"),
                (None, why) => why.unwrap_or_default(),
            }
        );
    }
    Ok(0)
}

pub async fn show(client: &Client, what: &str, id: &str, json: bool) -> Result<i32, String> {
    let value: serde_json::Value = match what {
        "job" => {
            JobRef::parse(id)?;
            client.get(&format!("/api/v1/jobs/{id}"), &[]).await?
        }
        "node" => client.get(&format!("/api/v1/nodes/{id}"), &[]).await?,
        other => return Err(format!("cannot show '{other}'; use 'drover show job ID' or 'drover show node NAME'")),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?);
    } else if let Some(obj) = value.as_object() {
        for (k, v) in obj {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "(null)".into(),
                other => other.to_string(),
            };
            println!("{k}={v}");
        }
    }
    Ok(0)
}

pub async fn cancel(client: &Client, a: CancelArgs) -> Result<i32, String> {
    let jobs = a.ids.iter().map(|i| JobRef::parse(i)).collect::<Result<Vec<_>, _>>()?;
    let states = match &a.state {
        Some(s) => s.split(',').map(JobState::parse).collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    if jobs.is_empty() && a.user.is_none() && a.state.is_none() && a.name.is_none() {
        return Err("name the jobs to cancel (ids), or filter with --user, --state or --name".into());
    }
    let filter = CancelFilter { jobs, user: a.user, states, name: a.name, partition: None };
    let out: Cancelled = client.post("/api/v1/jobs/cancel", &CancelJobs { filter }).await?;
    for (target, reason) in &out.refused {
        eprintln!("drover: error: Kill job error on job id {target}: {reason}");
    }
    Ok(if out.refused.is_empty() { 0 } else { 1 })
}

/// Polls until every job is terminal; 0 only if all COMPLETED.
pub async fn wait_for(client: &Client, ids: &[String]) -> Result<i32, String> {
    for i in ids {
        JobRef::parse(i)?;
    }
    let q = [("id", ids.join(",")), ("all", "true".to_string())];
    let mut delay = Duration::from_millis(20);
    let started = std::time::Instant::now();
    let mut bar: Option<indicatif::ProgressBar> = None;
    loop {
        let list: JobList = client.get("/api/v1/jobs", &q).await?;
        if list.jobs.is_empty() {
            return Err(format!("no such job: {}", ids.join(",")));
        }
        // A progress bar once the wait is long, on a terminal only.
        use std::io::IsTerminal;
        if bar.is_none() && started.elapsed() > Duration::from_secs(1) && std::io::stdout().is_terminal() {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} done  {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar = Some(b);
        }
        if let Some(b) = &bar {
            // Pending array remainders count for their number of tasks.
            let size = |j: &JobView| match (&j.array_task, j.state_code.as_str()) {
                (Some(t), "PD") if t.contains(['-', ',']) => {
                    drover_core::array::ArraySpec::parse(t).map_or(1, |a| a.tasks.len())
                }
                _ => 1,
            };
            let total: u64 = list.jobs.iter().map(size).sum();
            let done = list.jobs.iter().filter(|j| j.terminal).count() as u64;
            let running = list.jobs.iter().filter(|j| j.state_code == "R" || j.state_code == "CG").count();
            b.set_length(total);
            b.set_position(done);
            b.set_message(format!("{running} running, {} pending", total - done - running as u64));
        }
        if list.jobs.iter().all(|j| j.terminal) {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            let failed: Vec<&JobView> = list.jobs.iter().filter(|j| j.state != "COMPLETED").collect();
            for j in &failed {
                eprintln!("job {} ended {} (exit {})", j.id, j.state, j.exit_code.clone().unwrap_or_default());
            }
            return Ok(if failed.is_empty() { 0 } else { 1 });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// Prints a job's output file; with `follow`, keeps printing until the job ends.
pub async fn logs(client: &Client, id: &str, follow: bool) -> Result<i32, String> {
    JobRef::parse(id)?;
    let mut printed = 0usize;
    loop {
        let job: JobView = client.get(&format!("/api/v1/jobs/{id}"), &[]).await?;
        if job.stdout.is_empty() {
            if !follow {
                return Err(format!("job {id} has not started yet; its output does not exist"));
            }
        } else {
            match std::fs::read(&job.stdout) {
                Ok(bytes) if bytes.len() > printed => {
                    use std::io::Write;
                    std::io::stdout().write_all(&bytes[printed..]).map_err(|e| e.to_string())?;
                    printed = bytes.len();
                }
                Ok(_) => {}
                Err(e) if !follow => return Err(format!("cannot read {}: {e}", job.stdout)),
                Err(_) => {}
            }
        }
        if !follow || job.terminal {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Exit 0 when the controller leads and every node is in service; 1 with
/// the list of problems otherwise.
pub async fn health(client: &Client) -> Result<i32, String> {
    let h: Health = client.get_any("/api/v1/health").await?;
    println!("{:<12} STATE", "NODE");
    for (node, state) in &h.nodes {
        println!("{node:<12} {}", state.to_lowercase());
    }
    match h.leader {
        Some(l) => println!("controller {l} is leader"),
        None => println!("no controller is leader"),
    }
    for p in &h.problems {
        println!("problem: {p}");
    }
    Ok(if h.ok { 0 } else { 1 })
}

/// Every page of `GET /api/v1/history` for `params` (at most 200 000
/// jobs); nothing when the cluster keeps no accounting or it cannot be
/// reached (the live jobs still answer).
pub async fn history(client: &Client, params: &[(&str, String)]) -> Vec<JobView> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut q: Vec<(&str, String)> = params.to_vec();
        if let Some(a) = &after {
            q.push(("after", a.clone()));
        }
        match client.get::<HistoryPage>("/api/v1/history", &q).await {
            Ok(page) => {
                out.extend(page.jobs);
                match page.next {
                    Some(n) if out.len() < 200_000 => after = Some(n),
                    _ => return out,
                }
            }
            Err(_) => return out,
        }
    }
}

#[derive(Args)]
pub struct HistoryArgs {
    /// Only these users' jobs (comma-separated).
    #[arg(short, long)]
    user: Option<String>,
    /// Only these accounts' jobs.
    #[arg(short = 'A', long)]
    account: Option<String>,
    /// Only jobs that ended in these states (COMPLETED,FAILED,… or CD,F,…).
    #[arg(short, long)]
    state: Option<String>,
    #[arg(short, long)]
    partition: Option<String>,
    /// Only these jobs (an array's id: all its tasks).
    #[arg(short, long)]
    jobs: Option<String>,
    /// Jobs that ended since: now-1day, 2026-11-01, 08:00 … (default: all).
    #[arg(short = 'S', long)]
    since: Option<String>,
    /// Jobs submitted until then.
    #[arg(short = 'E', long)]
    until: Option<String>,
    /// At most this many jobs (the oldest first).
    #[arg(long)]
    limit: Option<u32>,
    /// Requeued jobs' earlier runs too, each a line of its own.
    #[arg(short = 'D', long)]
    duplicates: bool,
    #[arg(long)]
    json: bool,
}

pub async fn show_history(client: &Client, a: HistoryArgs) -> Result<i32, String> {
    let now = now_ms();
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(states) = &a.state {
        let names = states
            .split(',')
            .map(|s| JobState::parse(s).map(|s| s.name().to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        q.push(("state", names.join(",")));
    }
    for (key, value) in [("user", &a.user), ("account", &a.account), ("partition", &a.partition), ("id", &a.jobs)] {
        if let Some(v) = value {
            q.push((key, v.clone()));
        }
    }
    if let Some(s) = &a.since {
        q.push(("since", crate::slurm::when(s, now).map_err(|e| format!("invalid --since '{s}': {e}"))?.to_string()));
    }
    if let Some(u) = &a.until {
        q.push(("until", crate::slurm::when(u, now).map_err(|e| format!("invalid --until '{u}': {e}"))?.to_string()));
    }
    if let Some(l) = a.limit {
        q.push(("limit", l.to_string()));
    }
    if a.duplicates {
        q.push(("attempts", "true".into()));
    }
    // One page checks that there is accounting to ask at all.
    let first: HistoryPage = client.get("/api/v1/history", &q).await?;
    let jobs = match (first.next.is_some(), a.limit) {
        (true, None) => history(client, &q).await,
        _ => first.jobs,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&JobList { jobs }).map_err(|e| e.to_string())?);
        return Ok(0);
    }
    use std::fmt::Write;
    let mut out = format!(
        "{:<14} {:<12} {:<9} {:<9} {:<10} {:>6} {:<19} {:<19} {:>10} NODELIST\n",
        "JOBID", "NAME", "USER", "PARTITION", "STATE", "EXIT", "START", "END", "ELAPSED"
    );
    let stamp = |t: Option<u64>| t.map_or("-".to_string(), |t| time::format_timestamp(t / 1000));
    for j in &jobs {
        let elapsed = match (j.start_time, j.end_time) {
            (Some(s), Some(e)) => time::format_duration(e.saturating_sub(s) / 1000),
            _ => "0:00".into(),
        };
        let _ = writeln!(
            out,
            "{:<14} {:<12} {:<9} {:<9} {:<10} {:>6} {:<19} {:<19} {:>10} {}",
            j.id,
            j.name.chars().take(12).collect::<String>(),
            j.user,
            j.partition,
            j.state,
            j.exit_code.as_deref().unwrap_or("-"),
            stamp(j.start_time),
            stamp(j.end_time),
            elapsed,
            if j.nodes.is_empty() { "None assigned" } else { &j.nodes }
        );
    }
    print!("{out}");
    Ok(0)
}

#[derive(Args)]
pub struct UsageArgs {
    /// From: now-7days (the default), 2026-11-01, …
    #[arg(short = 'S', long, default_value = "now-7days")]
    since: String,
    /// Until (default: now).
    #[arg(short = 'E', long, default_value = "now")]
    until: String,
    #[arg(long)]
    json: bool,
}

pub async fn show_usage(client: &Client, a: UsageArgs) -> Result<i32, String> {
    let now = now_ms();
    let since = crate::slurm::when(&a.since, now).map_err(|e| format!("invalid --since '{}': {e}", a.since))?;
    let until = crate::slurm::when(&a.until, now).map_err(|e| format!("invalid --until '{}': {e}", a.until))?;
    let report: UsageReport =
        client.get("/api/v1/usage", &[("since", since.to_string()), ("until", until.to_string())]).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
        return Ok(0);
    }
    use std::fmt::Write;
    let mut out = format!(
        "Usage {} - {} (UTC)\n{:<12} {:<12} {:>7} {:>9} {:>7} {:>9} {:>10} {:>10}\n",
        time::format_timestamp(report.since / 1000),
        time::format_timestamp(report.until / 1000),
        "USER",
        "ACCOUNT",
        "JOBS",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "CPU-HOURS",
        "GPU-HOURS"
    );
    let hours = |s: u64| format!("{:.2}", s as f64 / 3600.0);
    for r in &report.rows {
        let _ = writeln!(
            out,
            "{:<12} {:<12} {:>7} {:>9} {:>7} {:>9} {:>10} {:>10}",
            r.user,
            if r.account.is_empty() { "-" } else { &r.account },
            r.jobs,
            r.completed,
            r.failed,
            r.cancelled,
            hours(r.cpu_seconds),
            hours(r.gpu_seconds)
        );
    }
    print!("{out}");
    Ok(0)
}
