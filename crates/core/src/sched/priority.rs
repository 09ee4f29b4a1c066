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
}

impl Default for Multifactor {
    fn default() -> Multifactor {
        Multifactor { weight_age: 1000, max_age_secs: 7 * 86400, weight_job_size: 0, favor_small: false }
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

#[cfg(test)]
mod tests {
    use super::*;

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
