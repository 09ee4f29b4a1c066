//! `scancel`: cancel by ids (`N`, `N_K`, `N_[a-b,c]`) or by filters.

use crate::client::Client;
use clap::Parser;
use drover_core::job::{JobRef, JobState};
use drover_core::state::CancelFilter;
use drover_proto::{CancelJobs, Cancelled};

#[derive(Parser, Debug)]
#[command(name = "scancel", disable_help_flag = true, disable_version_flag = true)]
pub struct Args {
    ids: Vec<String>,
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    #[arg(long)]
    me: bool,
    #[arg(short = 'n', long = "name", alias = "jobname")]
    name: Option<String>,
    #[arg(short = 't', long = "state")]
    state: Option<String>,
    #[arg(short = 'p', long = "partition")]
    partition: Option<String>,
    #[arg(short = 's', long = "signal")]
    signal: Option<String>,
    /// Accepted: a cancel ends the whole job.
    #[arg(short = 'b', long = "batch")]
    batch: bool,
    /// Accepted: a cancel ends the whole job.
    #[arg(short = 'f', long = "full")]
    full: bool,
    #[arg(short = 'Q', long = "quiet")]
    quiet: bool,
    #[command(flatten)]
    common: super::Common,
}

/// `N`, `N_K` or `N_[a-b,c]`: the jobs it names.
fn refs(id: &str) -> Result<Vec<JobRef>, String> {
    match id.split_once("_[") {
        Some((base, rest)) => {
            let list = rest.strip_suffix(']').ok_or_else(|| format!("Invalid job id {id}"))?;
            let spec = drover_core::array::ArraySpec::parse(list).map_err(|e| format!("Invalid job id {id}: {e}"))?;
            if spec.tasks.len() > 100_000 {
                return Err(format!("Invalid job id {id}: more than 100000 tasks"));
            }
            let base: u64 = base.parse().map_err(|_| format!("Invalid job id {id}"))?;
            let mut tasks = spec.tasks;
            let mut out = Vec::new();
            while let Some(t) = tasks.pop_first() {
                out.push(JobRef { id: base, task: Some(t) });
            }
            Ok(out)
        }
        None => Ok(vec![JobRef::parse(id).map_err(|e| format!("Invalid job id {id}: {e}"))?]),
    }
}

pub async fn run(client: &Client, a: Args) -> Result<i32, String> {
    if a.common.answered("Usage: scancel [-u USER | --me] [-n NAME] [-t STATE] [-p PARTITION] [job_id[_array_id]...]") {
        return Ok(0);
    }
    let mut jobs = Vec::new();
    for id in &a.ids {
        jobs.extend(refs(id)?);
    }
    let states = match &a.state {
        Some(s) => s.split(',').map(JobState::parse).collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    if let Some(sig) = &a.signal {
        return signal(client, &jobs, sig, a.quiet).await;
    }
    let user = if a.me { Some(super::my_user()) } else { a.user };
    if jobs.is_empty() && user.is_none() && states.is_empty() && a.name.is_none() && a.partition.is_none() {
        return Err("No job identification provided".into());
    }
    let filter = CancelFilter { jobs, user, states, name: a.name, partition: a.partition };
    let out: Cancelled = client.post("/api/v1/jobs/cancel", &CancelJobs { filter }).await?;
    if !a.quiet {
        for (target, reason) in &out.refused {
            eprintln!("scancel: error: Kill job error on job id {target}: {reason}");
        }
    }
    Ok(i32::from(!out.refused.is_empty()))
}

/// `--signal SIG`: each named running job gets it (filters are not
/// supported with a signal: name the jobs).
async fn signal(client: &Client, jobs: &[JobRef], sig: &str, quiet: bool) -> Result<i32, String> {
    let number = drover_core::options::parse_signal(sig).map_err(|e| format!("Invalid signal {sig}: {e}"))?;
    if jobs.is_empty() {
        return Err("--signal needs job ids".into());
    }
    let mut failed = false;
    for j in jobs {
        let id = match j.task {
            Some(t) => format!("{}_{t}", j.id),
            None => j.id.to_string(),
        };
        let body = drover_proto::SignalJob { signal: number };
        if let Err(e) = client.post::<_, drover_proto::JobView>(&format!("/api/v1/jobs/{id}/signal"), &body).await {
            if !quiet {
                eprintln!("scancel: error: Kill job error on job id {id}: {e}");
            }
            failed = true;
        }
    }
    Ok(i32::from(failed))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_tasks_and_task_ranges() {
        let r = super::refs("7_[1-3,5]").unwrap();
        let shown: Vec<String> = r.iter().map(|j| format!("{}_{}", j.id, j.task.unwrap())).collect();
        assert_eq!(shown, ["7_1", "7_2", "7_3", "7_5"]);
        assert_eq!(super::refs("9").unwrap()[0].task, None);
        assert!(super::refs("7_[1-3").is_err());
    }
}
