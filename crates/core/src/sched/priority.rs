//! Job priority: which pending job is considered first.

use crate::job::JobSpec;
use crate::Time;
use serde::{Deserialize, Serialize};

/// What a priority policy may look at.
pub struct PriorityInput<'a> {
    pub spec: &'a JobSpec,
    pub submit_time: Time,
    /// CPUs in the job's partition, to scale the size factor.
    pub partition_cpus: u64,
}

/// Orders pending jobs: higher runs first. Ties go to the lower job id.
///
/// The default is [`Multifactor`]; fair-share plugs in by implementing this
/// trait over decayed usage (see the accounting issue).
pub trait PriorityPolicy {
    fn priority(&self, job: &PriorityInput<'_>, now: Time) -> u64;
}

/// Slurm's multifactor priority, restricted to the factors Drover has:
/// age, job size and nice. Each factor is a fraction in [0, 1] scaled by its
/// weight; nice is subtracted as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Multifactor {
    pub weight_age: u64,
    /// Age at which the age factor reaches 1 (seconds).
    pub max_age_secs: u64,
    pub weight_job_size: u64,
    /// Favour small jobs instead of large ones (Slurm's PriorityFavorSmall).
    pub favor_small: bool,
    /// Weight of the fair-share factor ([`FairShare`]); 0 turns it off.
    #[serde(default)]
    pub weight_fairshare: u64,
}

impl Default for Multifactor {
    fn default() -> Multifactor {
        Multifactor {
            weight_age: 1000,
            max_age_secs: 7 * 86400,
            weight_job_size: 0,
            favor_small: false,
            weight_fairshare: 0,
        }
    }
}

/// Keeps priorities positive whatever the nice value.
const NICE_OFFSET: u64 = 1 << 32;
const PPM: u64 = 1_000_000;

impl PriorityPolicy for Multifactor {
    fn priority(&self, job: &PriorityInput<'_>, now: Time) -> u64 {
        if let Some(p) = job.spec.priority {
            return p;
        }
        let age_ms = now.saturating_sub(job.submit_time);
        let max_age_ms = self.max_age_secs.max(1) * 1000;
        let age_ppm = age_ms.min(max_age_ms) * PPM / max_age_ms;
        let cpus = job.spec.total_cpus().min(job.partition_cpus.max(1));
        let mut size_ppm = cpus * PPM / job.partition_cpus.max(1);
        if self.favor_small {
            size_ppm = PPM - size_ppm;
        }
        let score = (self.weight_age * age_ppm + self.weight_job_size * size_ppm) / PPM;
        (NICE_OFFSET + score).saturating_add_signed(-i64::from(job.spec.nice))
    }
}

/// Decayed use of the cluster per user: CPU-seconds, each run's counting
/// half as much every half-life since it ended (Slurm's
/// PriorityDecayHalfLife). Built from accounting by the controller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    by_user: std::collections::HashMap<String, f64>,
    total: f64,
}

impl Usage {
    /// From finished runs: (user, when it ended, CPU-seconds).
    pub fn decayed<'a>(runs: impl IntoIterator<Item = (&'a str, Time, f64)>, now: Time, half_life_ms: u64) -> Usage {
        let mut u = Usage::default();
        for (user, ended, cpu_seconds) in runs {
            let age = now.saturating_sub(ended) as f64;
            let weight = 0.5f64.powf(age / half_life_ms.max(1) as f64);
            let v = cpu_seconds.max(0.0) * weight;
            *u.by_user.entry(user.to_string()).or_default() += v;
            u.total += v;
        }
        u
    }

    /// A user's share of all decayed use, in [0, 1].
    pub fn share(&self, user: &str) -> f64 {
        if self.total <= 0.0 {
            return 0.0;
        }
        self.by_user.get(user).copied().unwrap_or(0.0) / self.total
    }

    pub fn users(&self) -> usize {
        self.by_user.len()
    }

    pub fn of(&self, user: &str) -> f64 {
        self.by_user.get(user).copied().unwrap_or(0.0)
    }
}

/// Multifactor with Slurm's classic fair-share factor added: every user
/// with use has an equal share S = 1/N, and a user who has had U of all use
/// gets the factor 2^(-U/S) — 1 for no use, 1/2 for exactly their share,
/// less the more they used — scaled by `weight_fairshare`.
pub struct FairShare<'a> {
    pub base: &'a Multifactor,
    pub usage: &'a Usage,
}

impl PriorityPolicy for FairShare<'_> {
    fn priority(&self, job: &PriorityInput<'_>, now: Time) -> u64 {
        let base = self.base.priority(job, now);
        if job.spec.priority.is_some() {
            return base;
        }
        let users = self.usage.users().max(1) as f64;
        let factor = 2f64.powf(-self.usage.share(&job.spec.user) * users);
        base + (self.base.weight_fairshare as f64 * factor) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_decays_by_half_lives_and_shares_order_users() {
        let day = 86_400_000;
        let u = Usage::decayed([("a", 10 * day, 100.0), ("a", 9 * day, 100.0), ("b", 10 * day, 50.0)], 10 * day, day);
        assert!((u.of("a") - 150.0).abs() < 1e-9, "a run a half-life old counts half");
        assert!((u.share("b") - 0.25).abs() < 1e-9);
        assert_eq!(u.share("nobody"), 0.0);
        let m = Multifactor { weight_age: 0, weight_fairshare: 1000, ..Multifactor::default() };
        let fs = FairShare { base: &m, usage: &u };
        let prio = |user: &str| {
            let mut spec = JobSpec::simple(user, "#!/bin/sh\n");
            spec.user = user.into();
            fs.priority(&PriorityInput { spec: &spec, submit_time: 0, partition_cpus: 8 }, 0) - NICE_OFFSET
        };
        // Two users: a has 3/4 of the use, b 1/4, a newcomer none.
        assert_eq!(prio("a"), (1000.0 * 2f64.powf(-1.5)) as u64);
        assert_eq!(prio("b"), (1000.0 * 2f64.powf(-0.5)) as u64);
        assert_eq!(prio("c"), 1000);
        assert!(prio("c") > prio("b") && prio("b") > prio("a"));
    }

    fn prio(m: &Multifactor, spec: &JobSpec, submit: Time, now: Time) -> u64 {
        m.priority(&PriorityInput { spec, submit_time: submit, partition_cpus: 100 }, now)
    }

    #[test]
    fn older_first_nice_lowers_operator_overrides() {
        let m = Multifactor::default();
        let spec = JobSpec::simple("a", "");
        let day = 86_400_000;
        assert!(prio(&m, &spec, 0, day) > prio(&m, &spec, day / 2, day), "older job first");
        let mut nice = spec.clone();
        nice.nice = 50;
        assert_eq!(prio(&m, &spec, 0, 0) - prio(&m, &nice, 0, 0), 50);
        let mut fixed = spec.clone();
        fixed.priority = Some(7);
        assert_eq!(prio(&m, &fixed, 0, day), 7);
    }

    #[test]
    fn size_factor_favours_large_or_small() {
        let mut m = Multifactor { weight_age: 0, weight_job_size: 1000, ..Multifactor::default() };
        let small = JobSpec::simple("a", "");
        let mut big = small.clone();
        big.ntasks = 50;
        assert!(prio(&m, &big, 0, 0) > prio(&m, &small, 0, 0));
        m.favor_small = true;
        assert!(prio(&m, &big, 0, 0) < prio(&m, &small, 0, 0));
    }
}
