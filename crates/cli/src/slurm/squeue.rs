//! `squeue`: Slurm's job listing, from the controller's job views.

use super::format::{self, Piece};
use crate::client::Client;
use clap::Parser;
use drover_core::time::{format_duration, format_timestamp};
use drover_proto::{JobList, JobView};

pub const DEFAULT_FORMAT: &str = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R";
pub const LONG_FORMAT: &str = "%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R";

#[derive(Parser, Debug)]
#[command(name = "squeue", disable_help_flag = true, disable_version_flag = true)]
pub struct Args {
    /// Do not print a header.
    #[arg(short = 'h', long = "noheader")]
    noheader: bool,
    #[arg(short = 'o', long = "format")]
    format: Option<String>,
    #[arg(short = 'O', long = "Format")]
    format_long: Option<String>,
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    #[arg(long)]
    me: bool,
    #[arg(short = 'j', long = "jobs")]
    jobs: Vec<String>,
    #[arg(short = 't', long = "states")]
    states: Option<String>,
    #[arg(short = 'p', long = "partition")]
    partition: Option<String>,
    #[arg(short = 'n', long = "name")]
    name: Option<String>,
    #[arg(short = 'w', long = "nodelist")]
    nodelist: Option<String>,
    #[arg(short = 'l', long = "long")]
    long: bool,
    /// Accepted: every partition is listed anyway.
    #[arg(short = 'a', long = "all")]
    all: bool,
    #[arg(short = 'r', long = "array")]
    array: bool,
    #[arg(short = 's', long = "steps")]
    steps: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: super::Common,
}

/// The header of a field.
fn title(code: char) -> &'static str {
    match code {
        'i' => "JOBID",
        'A' => "JOBID",
        'j' => "NAME",
        'u' => "USER",
        't' => "ST",
        'T' => "STATE",
        'M' => "TIME",
        'l' => "TIME_LIMIT",
        'L' => "TIME_LEFT",
        'D' => "NODES",
        'R' => "NODELIST(REASON)",
        'N' => "NODELIST",
        'P' => "PARTITION",
        'C' => "CPUS",
        'r' => "REASON",
        'S' => "START_TIME",
        'V' => "SUBMIT_TIME",
        'e' => "END_TIME",
        'a' => "ACCOUNT",
        'K' => "ARRAY_TASK_ID",
        'F' => "ARRAY_JOB_ID",
        'Z' => "WORK_DIR",
        'U' => "UID",
        'm' => "MIN_MEMORY",
        'b' => "TRES_PER_NODE",
        _ => "",
    }
}

fn known(code: char) -> bool {
    !title(code).is_empty()
}

/// `-O Name[:[.]WIDTH],…`: fields by name, 20 wide unless told.
fn parse_format_long(spec: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    for item in spec.split(',').filter(|s| !s.is_empty()) {
        let (name, width) = item.split_once(':').unwrap_or((item, ""));
        let code = match name.to_ascii_lowercase().as_str() {
            "jobid" => 'A',
            "jobarrayid" => 'i',
            "name" => 'j',
            "username" | "user" => 'u',
            "state" => 'T',
            "statecompact" => 't',
            "timeused" => 'M',
            "timelimit" => 'l',
            "timeleft" => 'L',
            "numnodes" => 'D',
            "nodelist" => 'N',
            "reasonlist" => 'R',
            "partition" => 'P',
            "numcpus" => 'C',
            "reason" => 'r',
            "starttime" => 'S',
            "submittime" => 'V',
            "endtime" => 'e',
            "account" => 'a',
            "arraytaskid" => 'K',
            "arrayjobid" => 'F',
            "workdir" => 'Z',
            "userid" => 'U',
            other => return Err(format!("Invalid job format specification: {other}")),
        };
        let right = width.starts_with('.');
        let digits = width.trim_start_matches('.');
        let width =
            if digits.is_empty() { 20 } else { digits.parse().map_err(|_| format!("invalid width in '{item}'"))? };
        pieces.push(Piece::Field { code, width: Some(width), right });
    }
    Ok(pieces)
}

fn timestamp(ms: Option<u64>) -> String {
    ms.map_or_else(|| "N/A".to_string(), |t| format_timestamp(t / 1000))
}

/// A field's value for a job, as squeue prints it.
pub fn value(j: &JobView, code: char, now_ms: u64) -> String {
    let pending = j.state == "PENDING";
    match code {
        'i' => j.id.clone(),
        'A' => j.job_id.to_string(),
        'j' => j.name.clone(),
        'u' => j.user.clone(),
        'U' => j.uid.to_string(),
        't' => j.state_code.clone(),
        'T' => j.state.clone(),
        'M' => match j.start_time {
            Some(s) => format_duration(j.end_time.unwrap_or(now_ms).saturating_sub(s) / 1000),
            None => "0:00".into(),
        },
        'l' => j.time_limit.map_or_else(|| "UNLIMITED".into(), format_duration),
        'L' => match (j.time_limit, j.start_time) {
            (None, _) => "UNLIMITED".into(),
            (Some(l), Some(s)) => format_duration(l.saturating_sub(now_ms.saturating_sub(s) / 1000)),
            (Some(l), None) => format_duration(l),
        },
        'D' => j.num_nodes.to_string(),
        'R' if pending => format!("({})", j.reason),
        'R' | 'N' => j.nodes.clone(),
        'P' => j.partition.clone(),
        'C' => j.num_cpus.to_string(),
        'r' => j.reason.clone(),
        'S' => timestamp(j.start_time),
        'V' => timestamp(Some(j.submit_time)),
        'e' => timestamp(j.end_time),
        'a' => j.account.clone().unwrap_or_else(|| "(null)".into()),
        'K' => j.array_task.clone().unwrap_or_else(|| "N/A".into()),
        'F' => j.array_job_id.unwrap_or(j.job_id).to_string(),
        'Z' => j.work_dir.clone(),
        // Not in the job views yet: what Slurm prints when nothing was asked.
        'm' => "0".into(),
        'b' => "N/A".into(),
        _ => String::new(),
    }
}

/// Slurm's default order: partition, then state (pending before running),
/// then priority — held jobs (priority 0) last — then submission.
fn sort(jobs: &mut [JobView]) {
    let rank = |s: &str| match s {
        "PENDING" => 0,
        "RUNNING" => 1,
        "SUSPENDED" => 2,
        "COMPLETING" => 3,
        _ => 4,
    };
    jobs.sort_by(|a, b| {
        let held = |j: &JobView| j.reason.starts_with("JobHeld");
        (a.partition.as_str(), rank(&a.state), held(a), a.job_id, &a.id).cmp(&(
            b.partition.as_str(),
            rank(&b.state),
            held(b),
            b.job_id,
            &b.id,
        ))
    });
}

/// The listing's text: a header (unless `noheader`) and a line per job.
pub fn render(pieces: &[Piece], jobs: &[JobView], noheader: bool, now_ms: u64) -> String {
    let mut out = String::new();
    if !noheader {
        out.push_str(&format::line(pieces, |c| title(c).to_string()));
        out.push('\n');
    }
    for j in jobs {
        out.push_str(&format::line(pieces, |c| value(j, c, now_ms)));
        out.push('\n');
    }
    out
}

/// `squeue -s`: Slurm's default step columns.
const STEP_FORMAT: &str = "%.15i %.8j %.9P %.8u %.9M %N";

/// `-r`: an array's waiting tasks one per line (`1000_5`, `1000_6`, …)
/// instead of one `1000_[5-99]` line.
fn one_per_task(jobs: Vec<JobView>) -> Vec<JobView> {
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        let tasks = match (&j.array_task, j.id.contains('[')) {
            (Some(t), true) => drover_core::array::ArraySpec::parse(t).ok(),
            _ => None,
        };
        match tasks {
            Some(spec) => out.extend(spec.tasks.iter().map(|t| JobView {
                id: format!("{}_{t}", j.job_id),
                array_task: Some(t.to_string()),
                ..j.clone()
            })),
            None => out.push(j),
        }
    }
    out
}

/// `-s`: the running steps of the listed jobs, as lines squeue's step
/// format can print (id, name, times and nodes are the step's).
fn step_lines(jobs: &[JobView]) -> Vec<JobView> {
    jobs.iter()
        .flat_map(|j| {
            j.steps.iter().filter(|s| s.state == "RUNNING").map(move |s| JobView {
                id: s.id.clone(),
                name: s.name.clone(),
                nodes: s.nodes.clone(),
                num_nodes: s.num_nodes,
                num_cpus: s.num_cpus,
                start_time: Some(s.start_time),
                end_time: None,
                state: s.state.clone(),
                state_code: "R".into(),
                steps: Vec::new(),
                ..j.clone()
            })
        })
        .collect()
}

pub async fn run(client: &Client, a: Args) -> Result<i32, String> {
    if a.common.answered("Usage: squeue [-h] [-o FORMAT | -O FIELDS] [-u USERS | --me] [-j JOBS] [-t STATES] [-p PARTITIONS] [-n NAMES] [-w NODES] [-l]") {
        return Ok(0);
    }
    let pieces = match (&a.format_long, &a.format) {
        (Some(f), _) => parse_format_long(f)?,
        (None, Some(f)) => format::parse(f, known)?,
        (None, None) if a.steps => format::parse(STEP_FORMAT, known)?,
        (None, None) => format::parse(if a.long { LONG_FORMAT } else { DEFAULT_FORMAT }, known)?,
    };
    let mut q: Vec<(&str, String)> = Vec::new();
    let user = if a.me { Some(super::my_user()) } else { a.user.clone() };
    if let Some(u) = user {
        q.push(("user", u));
    }
    let mut all = false;
    if let Some(states) = &a.states {
        if states.split(',').any(|s| s.eq_ignore_ascii_case("all")) {
            all = true;
        } else {
            q.push(("state", states.clone()));
            all = true;
        }
    }
    if all {
        q.push(("all", "true".into()));
    }
    if !a.jobs.is_empty() {
        q.push(("id", a.jobs.join(",")));
    }
    if let Some(p) = &a.partition {
        q.push(("partition", p.clone()));
    }
    if let Some(n) = &a.name {
        q.push(("name", n.clone()));
    }
    let list: JobList = client.get("/api/v1/jobs", &q).await?;
    let mut jobs = list.jobs;
    if let Some(nodes) = &a.nodelist {
        let wanted = drover_core::hostlist::expand(nodes).map_err(|e| format!("invalid --nodelist '{nodes}': {e}"))?;
        jobs.retain(|j| {
            drover_core::hostlist::expand(&j.nodes).is_ok_and(|have| have.iter().any(|n| wanted.contains(n)))
        });
    }
    sort(&mut jobs);
    if a.array {
        jobs = one_per_task(jobs);
    }
    if a.steps {
        let text = render(&pieces, &step_lines(&jobs), a.noheader, crate::jobs::now_ms());
        // The id column is the step's.
        let text = text.replacen(" JOBID", "STEPID", usize::from(!a.noheader));
        use std::io::Write;
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        return Ok(0);
    }
    if a.json {
        println!("{}", super::json::jobs(&jobs));
        return Ok(0);
    }
    let text = render(&pieces, &jobs, a.noheader, crate::jobs::now_ms());
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slurm::fixture;

    /// The jobs of Slurm's capture in tests/fixtures/slurm/ (made by
    /// ../shared/peers/slurm/cli_probe.sh): four pending jobs and an array.
    fn probe_jobs() -> Vec<JobView> {
        let job = |id: &str, job_id: u64, name: &str, reason: &str, nodes: u32| {
            let tasks = id.split_once("_[").map(|(_, t)| t.trim_end_matches(']'));
            serde_json::from_value::<JobView>(serde_json::json!({
                "id": id, "job_id": job_id, "array_job_id": tasks.map(|_| job_id), "array_task": tasks,
                "name": name, "user": "root",
                "uid": 0, "account": null, "partition": "debug", "state": "PENDING", "state_code": "PD",
                "reason": reason, "nodes": "", "num_nodes": nodes, "num_cpus": 1, "time_limit": null,
                "submit_time": 1_795_320_735_000u64, "start_time": null, "end_time": null, "exit_code": null,
                "restart_count": 0, "work_dir": "/tmp", "stdout": "", "stderr": "", "terminal": false
            }))
            .unwrap()
        };
        let mut jobs = vec![
            job("10111", 10111, "probe_held", "JobHeldUser", 1),
            job("10109", 10109, "probe_ok", "None", 1),
            job("10113", 10113, "probe_long", "Priority", 2),
            job("10110", 10110, "probe_fail", "Priority", 1),
            job("10112_[1-4]", 10112, "probe_arr", "None", 1),
        ];
        sort(&mut jobs);
        jobs
    }

    #[test]
    fn the_default_listing_matches_slurms() {
        let pieces = format::parse(DEFAULT_FORMAT, known).unwrap();
        assert_eq!(render(&pieces, &probe_jobs(), false, 0), fixture("07-squeue"));
    }

    #[test]
    fn one_line_per_array_task_matches_slurms() {
        let pieces = format::parse(DEFAULT_FORMAT, known).unwrap();
        assert_eq!(render(&pieces, &one_per_task(probe_jobs()), false, 0), fixture("11-squeue_r"));
    }

    #[test]
    fn a_custom_format_matches_slurms() {
        let pieces = format::parse("%i|%j|%T|%M|%l|%D|%R|%r", known).unwrap();
        assert_eq!(render(&pieces, &probe_jobs(), true, 0), fixture("09-squeue_fmt"));
    }

    #[test]
    fn field_names_match_slurms() {
        let pieces = parse_format_long("JobID,Name,State,Reason,NodeList,SubmitTime,StartTime").unwrap();
        let ours = render(&pieces, &probe_jobs(), false, 0);
        let theirs = fixture("10-squeue_Format");
        assert_eq!(ours, theirs);
    }
}
