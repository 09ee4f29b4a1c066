//! When a job would start if it were submitted now (`sbatch --test-only`,
//! Slurm's "will run" test): the answer a user gets without a job being
//! created, an id being used or anything being written to the log.

use super::{Pass, PriorityPolicy, SchedConfig};
use crate::job::{JobSpec, NodeShare};
use crate::place;
use crate::state::State;
use crate::CommandError;
use crate::Time;

/// Where and when a job would start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    /// `None`: not foreseeable — the resources it needs are held by jobs
    /// without a time limit, or its partition is down.
    pub start: Option<Time>,
    /// The nodes it would get (empty when `start` is `None`).
    pub shares: Vec<NodeShare>,
    pub partition: String,
}

/// Validates `spec` as a submission would, then finds the earliest time
/// it fits: now, after the jobs a scheduling pass would start now have
/// taken their share, or when running jobs reach their time limits.
///
/// Jobs still pending that would not start now are not counted, and
/// dependencies and holds are not waited for: like Slurm's, the answer is
/// the earliest the resources allow, which later submissions may change.
pub fn estimate_start(
    state: &State,
    now: Time,
    cfg: &SchedConfig,
    policy: &dyn PriorityPolicy,
    spec: &JobSpec,
) -> Result<Estimate, CommandError> {
    state.check_submit(spec)?;
    let part = state.partition_for(spec)?;
    let partition = part.name().to_string();
    let unknown = Estimate { start: None, shares: Vec::new(), partition: partition.clone() };
    if !part.spec.up {
        return Ok(unknown);
    }
    let mut pass = Pass::new(state, now, cfg);
    pass.run_in_place(policy);
    let mut releases = pass.releases;
    releases.sort_unstable_by_key(|r| (r.0, r.1));
    let nodes = state.nodes();
    let free_after = |k: usize| {
        let mut f: Vec<_> = pass
            .free
            .iter()
            .zip(&pass.usable)
            .map(|(r, &u)| if u { *r } else { crate::resources::Resources::ZERO })
            .collect();
        for &(_, node, res) in &releases[..k] {
            let x = &mut f[node as usize];
            *x = x.add(&res).min_with(&nodes[node as usize].total);
        }
        f
    };
    let place_with = |k: usize| {
        let free = free_after(k);
        place::place(spec, nodes, &part.members, &|i| Some(free[i as usize]), cfg.select)
    };
    let earliest = spec.begin.map_or(now, crate::secs).max(now);
    // Everything released by `earliest` is free then; fit only improves
    // as more is released, so search for the first release that suffices.
    let (mut lo, mut hi) = (releases.partition_point(|r| r.0 <= earliest), releases.len());
    if place_with(hi).is_none() {
        return Ok(unknown);
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if place_with(mid).is_some() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let start = if lo == 0 { earliest } else { releases[lo - 1].0.max(earliest) };
    // Every release at that same instant counts.
    let k = releases.partition_point(|r| r.0 <= start);
    let shares = place_with(k).unwrap_or_default();
    Ok(Estimate { start: Some(start), shares, partition })
}
