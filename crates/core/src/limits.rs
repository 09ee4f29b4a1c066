//! The bounds every job spec must keep, whoever sent it.
//!
//! A spec reaches the state machine from the CLI, from the REST API (any
//! JSON a client cares to write) and from the replicated log. The CLI's
//! parsers already refuse most bad values, but a JSON body skips them, and
//! a committed entry is applied on every controller, again on every replay:
//! one value that makes `apply` divide by zero or overflow takes the whole
//! group down for good. So the same [`SpecLimits::check`] runs at the API
//! before a spec is proposed and inside `apply` before it is used, and the
//! hard ceilings here are what the rest of the code may assume.

use crate::array::MAX_TASK_ID;
use crate::job::{ExportPolicy, JobSpec, MemRequest};
use serde::{Deserialize, Serialize};

/// Ten years, as the CLI's time parser allows: far past any sane limit and
/// far from overflowing an `Instant` or a millisecond count.
pub const MAX_TIME_SECS: u64 = 10 * 366 * 86400;
/// 9999-12-31T23:59:59Z: a begin time beyond is a mistake, and milliseconds
/// of it still fit a u64 many times over.
pub const MAX_BEGIN_SECS: u64 = 253_402_300_799;
/// Slurm's nice range.
pub const MAX_NICE: i32 = 2_147_483_645;
/// Bytes of memory in MB: 2^40 MB (an exbibyte) keeps `mb << 20` in a u64.
pub const MAX_MEM_MB: u64 = 1 << 40;
/// Counts that index tables or multiply each other.
pub const MAX_TASKS: u32 = 1 << 24;
pub const MAX_NODES: u32 = 1 << 20;
pub const MAX_CPUS_PER_TASK: u32 = 1 << 16;
pub const MAX_GPUS_PER_NODE: u32 = 1 << 12;
pub const MAX_SIGNAL: i32 = 64;
/// A path, as the kernel's PATH_MAX.
pub const MAX_PATH: usize = 4096;
/// Names: a partition, an account, a QOS, a host, a GPU type.
pub const MAX_NAME: usize = 256;
/// Conditions of one `--dependency`.
pub const MAX_DEPENDENCIES: usize = 1024;

/// The sizes a site may lower (never raise past the ceilings in
/// [`SpecLimits::CEILING`], which `apply` enforces whatever the site says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecLimits {
    /// The batch script, bytes (Slurm's `max_script_size`, 4 MiB).
    pub script_bytes: usize,
    /// A job's name, comment or mail address, bytes.
    pub text_bytes: usize,
    /// All of a job's environment together, bytes.
    pub env_bytes: usize,
    /// Variables in a job's environment.
    pub env_vars: usize,
    /// Names in `--nodelist` or `--exclude`.
    pub node_names: usize,
}

impl SpecLimits {
    /// What `apply` enforces: a spec past these never enters the state.
    pub const CEILING: SpecLimits = SpecLimits {
        script_bytes: 4 << 20,
        text_bytes: 64 << 10,
        env_bytes: 8 << 20,
        env_vars: 65_536,
        node_names: 1 << 16,
    };

    /// The API's defaults: what a job needs, with room.
    pub const DEFAULT: SpecLimits =
        SpecLimits { script_bytes: 4 << 20, text_bytes: 4 << 10, env_bytes: 1 << 20, env_vars: 4096, node_names: 4096 };

    /// These limits, none above the ceiling.
    pub fn capped(self) -> SpecLimits {
        let c = SpecLimits::CEILING;
        SpecLimits {
            script_bytes: self.script_bytes.min(c.script_bytes),
            text_bytes: self.text_bytes.min(c.text_bytes),
            env_bytes: self.env_bytes.min(c.env_bytes),
            env_vars: self.env_vars.min(c.env_vars),
            node_names: self.node_names.min(c.node_names),
        }
    }

    /// Whether `spec` keeps every bound; the error names the field and the
    /// bound, as a user would fix it.
    pub fn check(&self, spec: &JobSpec) -> Result<(), String> {
        let text = |field: &str, value: &str, max: usize| -> Result<(), String> {
            if value.len() > max {
                return Err(format!("{field} is {} bytes; at most {max} are allowed", value.len()));
            }
            if value.contains('\0') {
                return Err(format!("{field} contains a NUL byte"));
            }
            Ok(())
        };
        let at_most = |field: &str, value: u64, max: u64| -> Result<(), String> {
            if value > max {
                return Err(format!("{field} {value} is above the maximum {max}"));
            }
            Ok(())
        };
        text("name", &spec.name, self.text_bytes.min(MAX_PATH))?;
        text("user", &spec.user, MAX_NAME)?;
        for (field, value) in [
            ("account", &spec.account),
            ("partition", &spec.partition),
            ("qos", &spec.qos),
            ("gpu type", &spec.gpu_type),
            ("constraint", &spec.constraint),
        ] {
            if let Some(v) = value {
                text(field, v, MAX_NAME)?;
            }
        }
        text("submit host", &spec.submit_host, MAX_NAME)?;
        text("work dir", &spec.work_dir, MAX_PATH)?;
        for (field, value) in [("stdout", &spec.stdout), ("stderr", &spec.stderr), ("stdin", &spec.stdin)] {
            if let Some(v) = value {
                text(field, v, MAX_PATH)?;
            }
        }
        for (field, value) in
            [("comment", &spec.comment), ("mail type", &spec.mail_type), ("mail user", &spec.mail_user)]
        {
            if let Some(v) = value {
                text(field, v, self.text_bytes)?;
            }
        }
        if spec.script.len() > self.script_bytes {
            return Err(format!(
                "the batch script is {} bytes; at most {} are allowed (Slurm's max_script_size)",
                spec.script.len(),
                self.script_bytes
            ));
        }
        if spec.environment.len() > self.env_vars {
            return Err(format!(
                "the environment has {} variables; at most {} are allowed",
                spec.environment.len(),
                self.env_vars
            ));
        }
        let env_bytes: usize = spec.environment.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        if env_bytes > self.env_bytes {
            return Err(format!("the environment is {env_bytes} bytes; at most {} are allowed", self.env_bytes));
        }
        if let Some((k, _)) =
            spec.environment.iter().find(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
        {
            return Err(format!("environment variable '{}' has an empty name, '=' or a NUL byte", k.escape_debug()));
        }
        if let ExportPolicy::Names(names) = &spec.export {
            if names.len() > self.env_vars {
                return Err(format!("--export names {} variables; at most {} are allowed", names.len(), self.env_vars));
            }
        }
        for (field, list) in [("nodelist", &spec.nodelist), ("exclude", &spec.exclude)] {
            if list.len() > self.node_names {
                return Err(format!("{field} names {} nodes; at most {} are allowed", list.len(), self.node_names));
            }
            for n in list {
                text(field, n, MAX_NAME)?;
            }
        }

        if spec.ntasks == 0 || spec.cpus_per_task == 0 || spec.nodes_min == 0 {
            return Err("tasks, CPUs per task and nodes must be at least 1".into());
        }
        if spec.nodes_min > spec.nodes_max {
            return Err(format!("at least {} nodes but at most {} asked", spec.nodes_min, spec.nodes_max));
        }
        at_most("ntasks", spec.ntasks.into(), MAX_TASKS.into())?;
        at_most("nodes", spec.nodes_max.into(), MAX_NODES.into())?;
        if let Some(n) = spec.ntasks_per_node {
            if n == 0 {
                return Err("ntasks per node must be at least 1".into());
            }
            at_most("ntasks per node", n.into(), MAX_TASKS.into())?;
        }
        at_most("cpus per task", spec.cpus_per_task.into(), MAX_CPUS_PER_TASK.into())?;
        let cpus = u64::from(spec.ntasks) * u64::from(spec.cpus_per_task);
        at_most("CPUs in all (ntasks x cpus per task)", cpus, u64::from(MAX_TASKS))?;
        at_most("gpus per node", spec.gpus_per_node.into(), MAX_GPUS_PER_NODE.into())?;
        match spec.mem {
            MemRequest::Default => {}
            MemRequest::PerNode(mb) => at_most("memory (MB per node)", mb, MAX_MEM_MB)?,
            MemRequest::PerCpu(mb) => {
                at_most("memory (MB per CPU)", mb, MAX_MEM_MB)?;
                at_most("memory (MB, per CPU x CPUs)", mb.saturating_mul(cpus), MAX_MEM_MB)?;
            }
        }
        if let Some(t) = spec.time_limit {
            at_most("time limit (s)", t, MAX_TIME_SECS)?;
        }
        if let Some(t) = spec.time_min {
            at_most("minimum time (s)", t, MAX_TIME_SECS)?;
        }
        if let Some(b) = spec.begin {
            at_most("begin time (epoch s)", b, MAX_BEGIN_SECS)?;
        }
        if spec.nice.unsigned_abs() > MAX_NICE.unsigned_abs() {
            return Err(format!("nice {} is outside -{MAX_NICE}..{MAX_NICE}", spec.nice));
        }
        if let Some(p) = spec.priority {
            at_most("priority", p, u64::from(u32::MAX))?;
        }
        if let Some(s) = &spec.signal {
            if !(1..=MAX_SIGNAL).contains(&s.signal) {
                return Err(format!("signal {} is not a signal number (1-{MAX_SIGNAL})", s.signal));
            }
            at_most("signal lead time (s)", s.secs_before.into(), 65_535)?;
        }
        if let Some(a) = &spec.array {
            a.tasks.check()?;
            if a.tasks.is_empty() {
                return Err("the array has no tasks".into());
            }
            if a.max_running == Some(0) {
                return Err("the array's %N throttle must be at least 1".into());
            }
            if a.tasks.last().is_some_and(|t| t > MAX_TASK_ID) {
                return Err(format!("array task ids must be at most {MAX_TASK_ID}"));
            }
        }
        if let Some(m) = spec.umask {
            at_most("umask", m.into(), 0o777)?;
        }
        if let Some(d) = &spec.dependency {
            if d.conditions.len() > MAX_DEPENDENCIES {
                return Err(format!(
                    "the dependency has {} conditions; at most {MAX_DEPENDENCIES} are allowed",
                    d.conditions.len()
                ));
            }
        }
        Ok(())
    }
}

impl Default for SpecLimits {
    fn default() -> SpecLimits {
        SpecLimits::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::{ArraySpec, TaskRun, TaskSet};

    fn ok() -> JobSpec {
        JobSpec::simple("alice", "#!/bin/sh\ntrue\n")
    }

    #[test]
    fn a_plain_spec_passes_and_each_bound_is_named() {
        let l = SpecLimits::DEFAULT;
        l.check(&ok()).unwrap();
        type Break = fn(&mut JobSpec);
        let cases: Vec<(Break, &str)> = vec![
            (|s| s.time_limit = Some(u64::MAX), "time limit"),
            (|s| s.begin = Some(u64::MAX), "begin time"),
            (|s| s.nice = i32::MIN, "nice"),
            (|s| s.ntasks = 0, "at least 1"),
            (|s| s.cpus_per_task = u32::MAX, "cpus per task"),
            (|s| s.mem = MemRequest::PerNode(u64::MAX), "memory"),
            (|s| (s.ntasks, s.mem) = (4, MemRequest::PerCpu(1 << 39)), "per CPU x CPUs"),
            (|s| s.name = "x".repeat(10_000), "name is 10000 bytes"),
            (|s| s.comment = Some("x".repeat(5_000)), "comment"),
            (|s| s.script = "x".repeat(5 << 20).into(), "max_script_size"),
            (|s| s.environment = vec![("A=B".to_string(), String::new())].into(), "environment variable"),
            (|s| s.nodes_min = 3, "at least 3 nodes"),
            (|s| s.priority = Some(u64::MAX), "priority"),
            (|s| s.work_dir = "/a\0b".into(), "NUL"),
        ];
        for (break_it, expect) in cases {
            let mut s = ok();
            break_it(&mut s);
            let e = l.check(&s).unwrap_err();
            assert!(e.contains(expect), "{e} should mention {expect}");
        }
    }

    #[test]
    fn arrays_whose_runs_the_parser_would_never_make_are_refused() {
        let l = SpecLimits::DEFAULT;
        let mut s = ok();
        s.array = Some(ArraySpec::parse("0-9").unwrap());
        l.check(&s).unwrap();
        for runs in [
            vec![TaskRun { start: 0, end: 9, step: 0 }],
            vec![TaskRun { start: 9, end: 0, step: 1 }],
            vec![TaskRun { start: 0, end: 9, step: 2 }],
            vec![TaskRun { start: 0, end: 9, step: 1 }, TaskRun { start: 5, end: 12, step: 1 }],
            vec![TaskRun { start: 0, end: u32::MAX, step: 1 }],
            vec![],
        ] {
            s.array = Some(ArraySpec { tasks: TaskSet::from_raw_runs(runs.clone()), max_running: None });
            assert!(l.check(&s).is_err(), "{runs:?}");
        }
    }
}
