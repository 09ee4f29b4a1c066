//! When the healer acts, how fast, and when it stops trying.

use drover_core::Time;

/// The healer's settings (`drover controller --heal…` flags).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// How often it looks at nodes and machines (ms).
    pub poll_ms: u64,
    /// How long a node may stay DOWN, with nothing known of its machine,
    /// before it is replaced: a reboot comes back within it (ms).
    pub down_grace_ms: u64,
    /// How long a machine may report impaired before it is replaced (ms).
    pub impaired_grace_ms: u64,
    /// How long a replaced node has to register (ms).
    pub replace_timeout_ms: u64,
    /// How long a resumed node has to register (Slurm's ResumeTimeout, ms).
    pub resume_timeout_ms: u64,
    /// How long a suspend may take before the node counts as off (ms).
    pub suspend_timeout_ms: u64,
    /// Idle this long, a node is powered down; `None`: never (ms).
    pub suspend_time_ms: Option<u64>,
    /// Nodes never powered down.
    pub suspend_exclude: Vec<String>,
    /// Per partition: at least this many of its nodes stay powered on.
    pub min_powered: Vec<(String, u32)>,
    /// Per partition: at most this many of its nodes powered on (or
    /// powering up) at once — a budget for elastic capacity.
    pub max_powered: Vec<(String, u32)>,
    /// At most this many nodes resumed, and suspended, per minute.
    pub resume_rate: u32,
    pub suspend_rate: u32,
    /// Waits before the next repair of a node after 1, 2, 3… failures in
    /// a row (ms); past the last, the healer gives up on the node.
    pub backoff_ms: Vec<u64>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            poll_ms: 2_000,
            down_grace_ms: 30_000,
            impaired_grace_ms: 60_000,
            replace_timeout_ms: 600_000,
            resume_timeout_ms: 600_000,
            suspend_timeout_ms: 120_000,
            suspend_time_ms: None,
            suspend_exclude: Vec::new(),
            min_powered: Vec::new(),
            max_powered: Vec::new(),
            resume_rate: 300,
            suspend_rate: 60,
            // 0, 1 min, 15 min, 1 h, then stop.
            backoff_ms: vec![0, 60_000, 900_000, 3_600_000],
        }
    }
}

impl Policy {
    /// The wait before the next try after `failures` failures in a row,
    /// or `None` to give up.
    pub fn retry_after(&self, failures: u32) -> Option<u64> {
        self.backoff_ms.get(failures.saturating_sub(1) as usize).copied()
    }

    /// The deadline of a repair of `kind` started at `now`.
    pub fn deadline(&self, kind: drover_core::node::RepairKind, now: Time) -> Time {
        use drover_core::node::RepairKind::*;
        now + match kind {
            Replace => self.replace_timeout_ms,
            Resume => self.resume_timeout_ms,
            Suspend => self.suspend_timeout_ms,
        }
    }

    /// How many actions of a per-minute `rate` one poll may take (at
    /// least one while the rate is not zero).
    pub fn per_poll(&self, rate: u32) -> usize {
        if rate == 0 {
            return 0;
        }
        ((u64::from(rate) * self.poll_ms).div_ceil(60_000)).max(1) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_then_the_healer_gives_up() {
        let p = Policy::default();
        assert_eq!(p.retry_after(1), Some(0));
        assert_eq!(p.retry_after(2), Some(60_000));
        assert_eq!(p.retry_after(3), Some(900_000));
        assert_eq!(p.retry_after(4), Some(3_600_000));
        assert_eq!(p.retry_after(5), None);
    }

    #[test]
    fn rates_per_minute_become_actions_per_poll() {
        let p = Policy { poll_ms: 2_000, ..Policy::default() };
        assert_eq!(p.per_poll(300), 10);
        assert_eq!(p.per_poll(1), 1);
        assert_eq!(p.per_poll(0), 0);
    }
}
