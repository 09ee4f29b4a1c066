//! Consumable resources: what a node has and what an allocation holds.

use serde::{Deserialize, Serialize};
use std::fmt;

/// CPUs, memory and GPUs: the three things the scheduler counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: u32,
    pub mem_mb: u64,
    pub gpus: u32,
}

impl Resources {
    pub const ZERO: Resources = Resources { cpus: 0, mem_mb: 0, gpus: 0 };

    pub fn new(cpus: u32, mem_mb: u64, gpus: u32) -> Resources {
        Resources { cpus, mem_mb, gpus }
    }

    /// Whether `need` fits inside `self`.
    pub fn covers(&self, need: &Resources) -> bool {
        self.cpus >= need.cpus && self.mem_mb >= need.mem_mb && self.gpus >= need.gpus
    }

    pub fn is_zero(&self) -> bool {
        *self == Resources::ZERO
    }

    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cpus: self.cpus.checked_sub(other.cpus)?,
            mem_mb: self.mem_mb.checked_sub(other.mem_mb)?,
            gpus: self.gpus.checked_sub(other.gpus)?,
        })
    }

    /// Subtracts, flooring at zero. Only for projections, never for
    /// bookkeeping, where an underflow is a bug to report.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpus: self.cpus.saturating_sub(other.cpus),
            mem_mb: self.mem_mb.saturating_sub(other.mem_mb),
            gpus: self.gpus.saturating_sub(other.gpus),
        }
    }

    /// Component-wise minimum.
    pub fn min_with(&self, other: &Resources) -> Resources {
        Resources {
            cpus: self.cpus.min(other.cpus),
            mem_mb: self.mem_mb.min(other.mem_mb),
            gpus: self.gpus.min(other.gpus),
        }
    }

    pub fn add(&self, other: &Resources) -> Resources {
        Resources {
            cpus: self.cpus.saturating_add(other.cpus),
            mem_mb: self.mem_mb.saturating_add(other.mem_mb),
            gpus: self.gpus.saturating_add(other.gpus),
        }
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpu={} mem={}", self.cpus, crate::memory::format_mb(self.mem_mb))?;
        if self.gpus > 0 {
            write!(f, " gpu={}", self.gpus)?;
        }
        Ok(())
    }
}
