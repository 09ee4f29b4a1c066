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
