//! `sacct`: job accounting as Slurm prints it, from the controller's live
//! jobs and the accounting database's finished ones. Each job that ran has
//! its batch step line (`N.batch`) and a line per `srun` step, as in Slurm.

use crate::client::Client;
use clap::Parser;
use drover_core::job::CpuTime;
use drover_core::time::parse_begin;
use drover_proto::{JobList, JobView};

pub const DEFAULT_FIELDS: &str = "JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode";
pub const LONG_FIELDS: &str =
    "JobID,JobIDRaw,JobName,Partition,MaxRSS,AllocCPUS,Elapsed,State,ExitCode,ReqMem,NodeList,Submit,Start,End";

#[derive(Parser, Debug)]
#[command(name = "sacct", disable_help_flag = true, disable_version_flag = true)]
pub struct Args {
    #[arg(short = 'j', long = "jobs")]
    jobs: Vec<String>,
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Every user's jobs (the default for root).
    #[arg(short = 'a', long = "allusers")]
    allusers: bool,
    #[arg(short = 'S', long = "starttime")]
    start: Option<String>,
    #[arg(short = 'E', long = "endtime")]
    end: Option<String>,
    #[arg(short = 's', long = "state")]
    state: Option<String>,
    #[arg(short = 'r', long = "partition")]
    partition: Option<String>,
    #[arg(short = 'n', long = "noheader")]
    noheader: bool,
    /// Jobs only, no step lines.
    #[arg(short = 'X', long = "allocations")]
    allocations: bool,
    /// `|`-separated, without a trailing `|`.
    #[arg(short = 'P', long = "parsable2")]
    parsable2: bool,
    /// `|`-separated, with a trailing `|`.
    #[arg(short = 'p', long = "parsable")]
    parsable: bool,
    #[arg(short = 'o', long = "format")]
    format: Option<String>,
    #[arg(short = 'l', long = "long")]
    long: bool,
    /// Earlier runs of requeued jobs too, each on its own lines.
    #[arg(short = 'D', long = "duplicates")]
    duplicates: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: super::Common,
}

/// A field: its header, default width, and whether it is left-justified.
fn field(name: &str) -> Option<(&'static str, usize, bool)> {
    Some(match name.to_ascii_lowercase().as_str() {
        "jobid" => ("JobID", 12, true),
        "jobidraw" => ("JobIDRaw", 12, true),
        "jobname" => ("JobName", 10, false),
        "partition" => ("Partition", 10, false),
        "account" => ("Account", 10, false),
        "alloccpus" => ("AllocCPUS", 10, false),
        "state" => ("State", 10, false),
        "exitcode" => ("ExitCode", 8, false),
        "derivedexitcode" => ("DerivedExitCode", 15, false),
        "user" => ("User", 9, false),
        "uid" => ("UID", 6, false),
        "nodelist" => ("NodeList", 15, false),
        "nnodes" => ("NNodes", 8, false),
        "elapsed" => ("Elapsed", 10, false),
        "elapsedraw" => ("ElapsedRaw", 10, false),
        "submit" => ("Submit", 19, false),
        "start" => ("Start", 19, false),
        "end" => ("End", 19, false),
        "maxrss" => ("MaxRSS", 10, false),
        "reqmem" => ("ReqMem", 10, false),
        "reason" => ("Reason", 20, false),
        "timelimit" => ("Timelimit", 10, false),
        "workdir" => ("WorkDir", 20, false),
        "reqcpus" => ("ReqCPUS", 8, false),
        "ntasks" => ("NTasks", 8, false),
        "restarts" => ("Restarts", 8, false),
        "totalcpu" => ("TotalCPU", 10, false),
        "usercpu" => ("UserCPU", 10, false),
        "systemcpu" => ("SystemCPU", 10, false),
        _ => return None,
    })
}

struct Column {
    key: String,
    title: &'static str,
    width: usize,
    left: bool,
}

/// `Name[%WIDTH],…` (and `-o` given several times).
fn columns(spec: &str) -> Result<Vec<Column>, String> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let (name, width) = item.trim().split_once('%').unwrap_or((item.trim(), ""));
            let (title, default, left) = field(name).ok_or_else(|| format!("Invalid field requested: \"{name}\""))?;
            let width = if width.is_empty() {
                default
            } else {
                width.parse().map_err(|_| format!("invalid width in \"{item}\""))?
            };
            Ok(Column { key: name.to_ascii_lowercase(), title, width, left })
        })
        .collect()
}

/// One line of output: a job, its batch step, or a step srun ran in it.
struct Line<'a> {
    job: &'a JobView,
    batch: bool,
    step: Option<&'a drover_proto::StepView>,
}

fn value(l: &Line, key: &str, now_ms: u64) -> String {
    let j = l.job;
    if let Some(s) = l.step {
        let elapsed = s.end_time.unwrap_or(now_ms).saturating_sub(s.start_time) / 1000;
        return match key {
            "jobid" => s.id.clone(),
            "jobidraw" => format!("{}.{}", j.job_id, s.step),
            "jobname" => s.name.clone(),
            "account" => j.account.clone().unwrap_or_else(|| j.user.clone()),
            "alloccpus" | "reqcpus" => s.num_cpus.to_string(),
            "state" => s.state.clone(),
            "exitcode" => s.exit_code.clone().unwrap_or_else(|| "0:0".into()),
            "uid" => j.uid.to_string(),
            "nodelist" => s.nodes.clone(),
            "nnodes" => s.num_nodes.to_string(),
            "ntasks" => s.ntasks.to_string(),
            "elapsed" => super::clock(elapsed),
            "elapsedraw" => elapsed.to_string(),
            "submit" | "start" => super::stamp(Some(s.start_time), "Unknown"),
            "end" => super::stamp(s.end_time, "Unknown"),
            "workdir" => j.work_dir.clone(),
            "maxrss" => s.max_rss_kb.map(|k| format!("{k}K")).unwrap_or_default(),
            "totalcpu" | "usercpu" | "systemcpu" => cpu_field(key, s.cpu),
            _ => String::new(),
        };
    }
    let elapsed = j.start_time.map_or(0, |s| j.end_time.unwrap_or(now_ms).saturating_sub(s) / 1000);
    let id = || if l.batch { format!("{}.batch", j.id) } else { j.id.clone() };
    match key {
        "jobid" => id(),
        "jobidraw" if l.batch => format!("{}.batch", j.job_id),
        "jobidraw" => j.job_id.to_string(),
        "jobname" if l.batch => "batch".into(),
        "jobname" => j.name.clone(),
        "partition" if l.batch => String::new(),
        "partition" => j.partition.clone(),
        "account" => j.account.clone().unwrap_or_else(|| j.user.clone()),
        "alloccpus" | "reqcpus" => j.num_cpus.to_string(),
        "reqmem" if l.batch => String::new(),
        // The batch step's peak, in KiB, as Slurm's default units print it.
        "maxrss" if l.batch => j.max_rss_kb.map(|k| format!("{k}K")).unwrap_or_default(),
        "reqmem" => j.mem_mb.map(mem_units).unwrap_or_default(),
        "state" => j.state.clone(),
        "exitcode" => j.exit_code.clone().unwrap_or_else(|| "0:0".into()),
        "derivedexitcode" if l.batch => String::new(),
        "derivedexitcode" => j.derived_exit_code.clone().unwrap_or_else(|| "0:0".into()),
        "totalcpu" | "usercpu" | "systemcpu" if l.batch => cpu_field(key, j.cpu),
        // The job's line counts every step of the run, the batch step's too.
        "totalcpu" | "usercpu" | "systemcpu" => {
            let all = j.steps.iter().filter_map(|s| s.cpu).chain(j.cpu).reduce(|a, b| a + b);
            cpu_field(key, all)
        }
        "user" if l.batch => String::new(),
        "user" => j.user.clone(),
        "uid" => j.uid.to_string(),
        "nodelist" if j.nodes.is_empty() => "None assigned".into(),
        "nodelist" if l.batch => {
            drover_core::hostlist::expand(&j.nodes).ok().and_then(|n| n.into_iter().next()).unwrap_or_default()
        }
        "nodelist" => j.nodes.clone(),
        "nnodes" => j.num_nodes.to_string(),
        "elapsed" => super::clock(elapsed),
        "elapsedraw" => elapsed.to_string(),
        "submit" => super::stamp(Some(j.submit_time), "Unknown"),
        "start" => super::stamp(j.start_time, "Unknown"),
        "end" => super::stamp(j.end_time, "Unknown"),
        "reason" if l.batch => String::new(),
        "reason" => j.reason.clone(),
        "timelimit" if l.batch => String::new(),
        "timelimit" => j.time_limit.map_or_else(|| "UNLIMITED".into(), super::clock),
        "workdir" => j.work_dir.clone(),
        "ntasks" if l.batch => "1".into(),
        "restarts" => j.restart_count.to_string(),
        _ => String::new(),
    }
}

/// TotalCPU, UserCPU or SystemCPU of what was measured (nothing: zero).
fn cpu_field(key: &str, cpu: Option<CpuTime>) -> String {
    let c = cpu.unwrap_or_default();
    cpu_clock(match key {
        "usercpu" => c.user_ms,
        "systemcpu" => c.system_ms,
        _ => c.user_ms + c.system_ms,
    })
}

/// CPU time as sacct prints it: `D-HH:MM:SS`, `HH:MM:SS`, and below an
/// hour `MM:SS.mmm`, or `00:MM:SS` on a whole second.
fn cpu_clock(ms: u64) -> String {
    let (secs, milli) = (ms / 1000, ms % 1000);
    let (days, hours, minutes, seconds) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if days > 0 {
        format!("{days}-{hours:02}:{minutes:02}:{seconds:02}")
    } else if hours > 0 {
        format!("{hours:02}:{minutes:02}:{seconds:02}")
    } else if milli > 0 {
        format!("{minutes:02}:{seconds:02}.{milli:03}")
    } else {
        format!("00:{minutes:02}:{seconds:02}")
    }
}

/// Megabytes as sacct prints memory: `500M`, `4G`, `1.50G`, `2T`.
fn mem_units(mb: u64) -> String {
    let (mut value, mut unit) = (mb as f64, 0);
    while value >= 1024.0 && unit < 3 {
        value /= 1024.0;
        unit += 1;
    }
    let suffix = ["M", "G", "T", "P"][unit];
    if value.fract() == 0.0 {
        format!("{value}{suffix}")
    } else {
        format!("{value:.2}{suffix}")
    }
}

/// A value in its column: cut to the width with a `+` marking the cut.
fn fit(v: &str, c: &Column) -> String {
    let w = c.width;
    let shown =
        if v.chars().count() > w { v.chars().take(w.saturating_sub(1)).chain(['+']).collect() } else { v.to_string() };
    if c.left {
        format!("{shown:<w$}")
    } else {
        format!("{shown:>w$}")
    }
}

#[derive(Clone, Copy)]
enum Layout {
    Table,
    /// `|` between fields, and one at the end when true.
    Parsable(bool),
}

#[cfg(test)]
fn render(cols: &[Column], jobs: &[JobView], steps: bool, layout: Layout, noheader: bool, now_ms: u64) -> String {
    render_lines(cols, jobs, steps, false, layout, noheader, now_ms)
}

/// `only_steps`: `-j N.S` names steps; their job's own lines stay out.
fn render_lines(
    cols: &[Column],
    jobs: &[JobView],
    steps: bool,
    only_steps: bool,
    layout: Layout,
    noheader: bool,
    now_ms: u64,
) -> String {
    let mut out = String::new();
    let mut row = |cells: Vec<String>| {
        match layout {
            Layout::Table => {
                for cell in cells {
                    out.push_str(&cell);
                    out.push(' ');
                }
            }
            Layout::Parsable(trailing) => {
                out.push_str(&cells.join("|"));
                if trailing {
                    out.push('|');
                }
            }
        }
        out.push('\n');
    };
    let table = matches!(layout, Layout::Table);
    if !noheader {
        row(cols.iter().map(|c| if table { fit(c.title, c) } else { c.title.to_string() }).collect());
        if table {
            row(cols.iter().map(|c| "-".repeat(c.width)).collect());
        }
    }
    for j in jobs {
        let mut lines = vec![Line { job: j, batch: false, step: None }];
        if steps && j.start_time.is_some() {
            lines.push(Line { job: j, batch: true, step: None });
            lines.extend(j.steps.iter().map(|s| Line { job: j, batch: false, step: Some(s) }));
        }
        if only_steps {
            lines.retain(|l| l.step.is_some());
        }
        for l in lines {
            row(cols
                .iter()
                .map(|c| if table { fit(&value(&l, &c.key, now_ms), c) } else { value(&l, &c.key, now_ms) })
                .collect());
        }
    }
    out
}

/// `-S`/`-E`: `now`, `now-2hours`, `now+1day`, `YYYY-MM-DD[THH:MM[:SS]]`,
/// `HH:MM[:SS]`; epoch milliseconds.
pub(crate) fn when(text: &str, now_ms: u64) -> Result<u64, String> {
    // "now" to the millisecond: cut to the second, an end of "now" would
    // leave out what started in the current second.
    if text.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    let now = now_ms / 1000;
    let secs = match text.to_ascii_lowercase().strip_prefix("now-") {
        Some(rest) => now.saturating_sub(parse_begin(&format!("now+{rest}"), now)?.saturating_sub(now)),
        None => parse_begin(text, now)?,
    };
    Ok(secs * 1000)
}

pub async fn run(client: &Client, a: Args) -> Result<i32, String> {
    if a.common
        .answered("Usage: sacct [-a] [-X] [-n] [-P|-p] [-j JOBS] [-u USER] [-s STATES] [-S TIME] [-E TIME] [-o FIELDS]")
    {
        return Ok(0);
    }
    let now = crate::jobs::now_ms();
    let cols = columns(a.format.as_deref().unwrap_or(if a.long { LONG_FIELDS } else { DEFAULT_FIELDS }))?;
    let mut q: Vec<(&str, String)> = vec![("all", "true".into())];
    // `N.S` names a step: its job is asked for, and only the step shown.
    let wanted: Vec<&str> = a.jobs.iter().flat_map(|j| j.split(',')).filter(|j| !j.is_empty()).collect();
    let wanted_steps: Vec<&str> = wanted.iter().copied().filter(|j| j.contains('.')).collect();
    if !wanted.is_empty() {
        let ids: Vec<&str> = wanted.iter().map(|j| j.split('.').next().unwrap_or(j)).collect();
        q.push(("id", ids.join(",")));
    }
    // Without -a or -u a user sees their own jobs; root sees everyone's.
    let me = super::my_user();
    match (&a.user, a.allusers || me == "root") {
        (Some(u), _) => q.push(("user", u.clone())),
        (None, false) => q.push(("user", me)),
        (None, true) => {}
    }
    if let Some(p) = &a.partition {
        q.push(("partition", p.clone()));
    }
    if let Some(s) = &a.state {
        q.push(("state", s.clone()));
    }
    // Without -j: jobs active after the start time (default: midnight, as Slurm's).
    let from = match &a.start {
        Some(s) => when(s, now).map_err(|e| format!("invalid --starttime '{s}': {e}"))?,
        None => now - now % 86_400_000,
    };
    let to = match &a.end {
        Some(e) => when(e, now).map_err(|err| format!("invalid --endtime '{e}': {err}"))?,
        None => u64::MAX,
    };
    let mut jobs = client.get::<JobList>("/api/v1/jobs", &q).await?.jobs;
    let windowed = a.jobs.is_empty() || a.start.is_some();
    // Finished jobs the controller no longer holds come from accounting.
    let mut h: Vec<(&str, String)> = q.iter().filter(|(k, _)| *k != "all").cloned().collect();
    if windowed {
        h.push(("since", from.to_string()));
    }
    if a.duplicates {
        h.push(("attempts", "true".into()));
    }
    if to != u64::MAX {
        h.push(("until", to.to_string()));
    }
    // Each live job's current run; accounting adds the rest.
    let live: std::collections::HashMap<u64, u32> = jobs.iter().map(|j| (j.job_id, j.restart_count)).collect();
    let asked = |j: &JobView| {
        wanted.is_empty()
            || wanted
                .iter()
                .map(|w| w.split('.').next().unwrap_or(w))
                .any(|w| w == j.id || w.parse::<u64>().is_ok_and(|n| n == j.job_id || Some(n) == j.array_job_id))
    };
    let earlier = |j: &JobView| live.get(&j.job_id).is_none_or(|&run| j.restart_count < run);
    jobs.extend(crate::jobs::history(client, &h).await.into_iter().filter(|j| earlier(j) && asked(j)));
    if windowed {
        jobs.retain(|j| j.end_time.is_none_or(|e| e >= from) && j.submit_time <= to);
    }
    jobs.sort_by_key(|j| (j.array_job_id.unwrap_or(j.job_id), j.job_id, j.restart_count));
    if a.json {
        let list: Vec<serde_json::Value> = jobs.iter().map(super::json::job).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"jobs": list})).unwrap_or_default());
        return Ok(0);
    }
    let layout = match (a.parsable2, a.parsable) {
        (true, _) => Layout::Parsable(false),
        (false, true) => Layout::Parsable(true),
        _ => Layout::Table,
    };
    let only_steps = !wanted_steps.is_empty() && wanted_steps.len() == wanted.len();
    if only_steps {
        for j in &mut jobs {
            j.steps.retain(|s| wanted_steps.contains(&s.id.as_str()));
        }
    }
    let text = render_lines(&cols, &jobs, !a.allocations, only_steps, layout, a.noheader, now);
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slurm::fixture;

    /// The first jobs of the probe's accounting: bench jobs that ran on node1.
    fn bench_job(id: u64, node: &str, submit_s: u64) -> JobView {
        serde_json::from_value(serde_json::json!({
            "id": id.to_string(), "job_id": id, "array_job_id": null, "array_task": null, "name": "bench29109.a1",
            "user": "root", "uid": 0, "gid": 0, "account": "root", "partition": "debug", "state": "COMPLETED",
            "state_code": "CD", "reason": "None", "nodes": node, "num_nodes": 1, "num_cpus": 1, "time_limit": null,
            "submit_time": submit_s * 1000, "start_time": 1_795_318_514_000u64, "end_time": 1_795_318_514_000u64,
            "exit_code": "0:0", "restart_count": 0, "work_dir": "/", "stdout": "", "stderr": "", "terminal": true
        }))
        .unwrap()
    }

    #[test]
    fn memory_in_sacct_units() {
        assert_eq!(mem_units(500), "500M");
        assert_eq!(mem_units(1536), "1.50G");
        assert_eq!(mem_units(2 << 20), "2T");
        // The probe's job held its node's 4096 MB: Slurm's -l line says 4G.
        let mut job = bench_job(10109, "node1", 1_795_318_511);
        job.mem_mb = Some(4096);
        assert_eq!(value(&Line { job: &job, batch: false, step: None }, "reqmem", 0), "4G");
        assert!(fixture("34-sacct_long").lines().nth(2).unwrap().contains(" 4G "));
        assert_eq!(value(&Line { job: &job, batch: true, step: None }, "reqmem", 0), "");
        job.max_rss_kb = Some(2156);
        assert_eq!(value(&Line { job: &job, batch: true, step: None }, "maxrss", 0), "2156K");
        assert_eq!(value(&Line { job: &job, batch: false, step: None }, "maxrss", 0), "");
    }

    #[test]
    fn the_default_table_matches_slurms() {
        let jobs: Vec<JobView> = (1..=6).map(|i| bench_job(i, "node1", 1_795_318_511)).collect();
        let ours = render(&columns(DEFAULT_FIELDS).unwrap(), &jobs, true, Layout::Table, false, 0);
        let theirs: String = fixture("28-sacct_default").lines().take(14).map(|l| format!("{l}\n")).collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn formats_and_times_match_slurms() {
        let submits = [1_795_318_511, 1_795_318_511, 1_795_318_512];
        let jobs: Vec<JobView> =
            submits.iter().enumerate().map(|(i, s)| bench_job(i as u64 + 1, "node1", *s)).collect();
        let spec = "JobID,JobName,User,Partition,State,ExitCode,NodeList,AllocCPUS,Elapsed,Submit,Start,End";
        let ours = render(&columns(spec).unwrap(), &jobs, false, Layout::Table, false, 0);
        let theirs: String = fixture("30-sacct_fmt").lines().take(5).map(|l| format!("{l}\n")).collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn parsable2_matches_slurms() {
        let jobs: Vec<JobView> = (1..=3).map(|i| bench_job(i, "node1", 0)).collect();
        let ours = render(
            &columns("JobID,JobName,State,ExitCode,Reason").unwrap(),
            &jobs,
            true,
            Layout::Parsable(false),
            true,
            0,
        );
        let theirs: String = fixture("31-sacct_P").lines().take(6).map(|l| format!("{l}\n")).collect();
        assert_eq!(ours, theirs);
        let trailing = render(&columns("JobID").unwrap(), &jobs[..1], false, Layout::Parsable(true), true, 0);
        assert_eq!(trailing, "1|\n");
    }

    #[test]
    fn cpu_times_print_as_slurms() {
        assert_eq!(cpu_clock(0), "00:00:00");
        assert_eq!(cpu_clock(4), "00:00.004");
        assert_eq!(cpu_clock(83_456), "01:23.456");
        assert_eq!(cpu_clock(61_000), "00:01:01");
        assert_eq!(cpu_clock(3_723_999), "01:02:03");
        assert_eq!(cpu_clock(93_784_000), "1-02:03:04");
    }

    /// The probe's job 14523 (35-sacct_cpu.script): a batch script with two
    /// steps, the first exiting 3. Nothing measured CPU time there
    /// (jobacct_gather/none): zeros, as Drover prints unmeasured time.
    #[test]
    fn cpu_and_derived_exit_code_match_slurms() {
        let mut job = bench_job(14523, "node1", 0);
        job.name = "cpujob".into();
        job.derived_exit_code = Some("3:0".into());
        let step = |n: u32, name: &str, state: &str, exit: &str| drover_proto::StepView {
            id: format!("14523.{n}"),
            step: n,
            name: name.into(),
            state: state.into(),
            nodes: "node1".into(),
            num_nodes: 1,
            ntasks: 1,
            num_cpus: 1,
            start_time: 0,
            end_time: Some(0),
            exit_code: Some(exit.into()),
            max_rss_kb: None,
            cpu: None,
        };
        job.steps = vec![step(0, "bash", "FAILED", "3:0"), step(1, "true", "COMPLETED", "0:0")];
        let spec = "JobID,JobName,TotalCPU,UserCPU,SystemCPU,MaxRSS,ExitCode,DerivedExitCode,State";
        let ours = render(&columns(spec).unwrap(), std::slice::from_ref(&job), true, Layout::Table, false, 0);
        assert_eq!(ours, fixture("35-sacct_cpu"));
        // Measured, the job's line adds every step's time to the batch step's.
        job.cpu = Some(CpuTime { user_ms: 1_500, system_ms: 20 });
        job.steps[0].cpu = Some(CpuTime { user_ms: 60_000, system_ms: 480 });
        job.steps[0].max_rss_kb = Some(61_440);
        let line = |l: &Line| ["totalcpu", "usercpu", "systemcpu", "maxrss"].map(|k| value(l, k, 0)).join(" ");
        assert_eq!(line(&Line { job: &job, batch: false, step: None }), "00:01:02 01:01.500 00:00.500 ");
        assert_eq!(line(&Line { job: &job, batch: true, step: None }), "00:01.520 00:01.500 00:00.020 ");
        let s0 = Line { job: &job, batch: false, step: Some(&job.steps[0]) };
        assert_eq!(line(&s0), "01:00.480 00:01:00 00:00.480 61440K");
    }

    /// `-D`: a requeued job's earlier run has its own line (probe job 14524,
    /// requeued, then cancelled: Slurm says who cancelled, which Drover
    /// does not keep, so only the requeued run's line is compared).
    #[test]
    fn an_earlier_run_is_a_line_of_its_own() {
        let mut first = bench_job(14524, "node1", 0);
        first.name = "rq".into();
        first.state = "REQUEUED".into();
        let mut last = first.clone();
        last.state = "CANCELLED".into();
        last.restart_count = 1;
        let spec = "JobID,JobName,State,ExitCode";
        let ours = render(&columns(spec).unwrap(), &[first, last], false, Layout::Table, false, 0);
        let theirs = fixture("36-sacct_D");
        assert_eq!(ours.lines().take(3).collect::<Vec<_>>(), theirs.lines().take(3).collect::<Vec<_>>());
        assert_eq!(theirs.lines().nth(3), Some("14524                rq CANCELLED+      0:0 "));
        assert_eq!(ours.lines().nth(3), Some("14524                rq  CANCELLED      0:0 "));
    }

    #[test]
    fn bad_fields_and_times_are_named() {
        assert!(columns("JobID,Bogus").err().unwrap().contains("\"Bogus\""));
        assert_eq!(when("now", 10_000_123).unwrap(), 10_000_123, "to the millisecond");
        assert_eq!(when("now-1hour", 10_000_000).unwrap(), 6_400_000);
        assert!(when("yesterday-ish", 0).is_err());
    }
}
