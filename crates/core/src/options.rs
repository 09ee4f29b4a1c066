//! The submission options, shared by the command line (`sbatch`, `drover
//! submit`), the `SBATCH_*` input variables and `#SBATCH`/`#DROVER` script
//! directives, so every way of asking means exactly the same thing.
//!
//! Values are applied in order and a later one wins: directives first, then
//! input variables, then the command line — Slurm's precedence.

use crate::array::ArraySpec;
use crate::dependency::Dependency;
use crate::error::ParseError;
use crate::job::{ExportPolicy, JobSpec, MemRequest, OpenMode, SignalSpec};
use crate::{hostlist, memory, time};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    None,
    Required,
    /// Only in the `--opt=value` form (`--nice`, `--exclusive`).
    Optional,
}

/// One option as the user can spell it.
#[derive(Debug, Clone, Copy)]
pub struct OptDef {
    pub long: &'static str,
    pub short: Option<char>,
    pub arg: Arg,
    pub help: &'static str,
}

const fn opt(long: &'static str, short: Option<char>, arg: Arg, help: &'static str) -> OptDef {
    OptDef { long, short, arg, help }
}

use Arg::{None as NoArg, Optional as OptArg, Required as Req};

/// Every submission option Drover understands.
pub const SUBMIT_OPTIONS: &[OptDef] = &[
    opt("account", Some('A'), Req, "charge the job to this account"),
    opt("array", Some('a'), Req, "job array task ids, e.g. 0-15, 1,3,5-9, 0-99:3%4"),
    opt("begin", Some('b'), Req, "start no earlier than this time (now+1hour, 2026-01-01T08:00)"),
    opt("chdir", Some('D'), Req, "working directory of the job"),
    opt("comment", None, Req, "a free-form comment kept with the job"),
    opt("constraint", Some('C'), Req, "required node features (a&b, a|b)"),
    opt("cpus-per-task", Some('c'), Req, "CPUs for each task"),
    opt(
        "dependency",
        Some('d'),
        Req,
        "afterok:ID[:ID], afterany:ID, afternotok:ID, after:ID[+min], singleton; ',' all, '?' any",
    ),
    opt("error", Some('e'), Req, "stderr file pattern (%j %x %A %a %N %u %%)"),
    opt("exclude", Some('x'), Req, "never run on these nodes (hostlist)"),
    opt("exclusive", None, OptArg, "allocate whole nodes"),
    opt("export", None, Req, "ALL, NONE, or VAR[=value],... to pass to the job"),
    opt("export-file", None, Req, "file of VAR=value lines to add to the job's environment"),
    opt("gpus", Some('G'), Req, "GPUs for the whole job ([type:]N)"),
    opt("gpus-per-node", None, Req, "GPUs on each node ([type:]N)"),
    opt("gres", None, Req, "generic resources, e.g. gpu:2 or gpu:a100:2"),
    opt("hold", Some('H'), NoArg, "submit held; release with scontrol release"),
    opt("input", Some('i'), Req, "stdin file pattern"),
    opt("job-name", Some('J'), Req, "name of the job"),
    opt("kill-on-invalid-dep", None, Req, "yes|no: cancel the job if its dependency can never be met"),
    opt("mail-type", None, Req, "recorded for compatibility"),
    opt("mail-user", None, Req, "recorded for compatibility"),
    opt("mem", None, Req, "memory per node (500M, 4G; 0 = whole node)"),
    opt("mem-per-cpu", None, Req, "memory per allocated CPU"),
    opt("nice", None, OptArg, "lower the job's priority by N (default 100)"),
    opt("no-requeue", None, NoArg, "never requeue this job after a node failure"),
    opt("nodelist", Some('w'), Req, "run on (at least) these nodes (hostlist)"),
    opt("nodes", Some('N'), Req, "number of nodes, N or MIN-MAX"),
    opt("ntasks", Some('n'), Req, "number of tasks"),
    opt("ntasks-per-node", None, Req, "tasks on each node"),
    opt("open-mode", None, Req, "append|truncate the output files"),
    opt("output", Some('o'), Req, "stdout file pattern (%j %x %A %a %N %u %%)"),
    opt("parsable", None, NoArg, "print only the job id"),
    opt("partition", Some('p'), Req, "partition to run in"),
    opt("qos", Some('q'), Req, "quality of service (recorded)"),
    opt("quiet", Some('Q'), NoArg, "print nothing but errors"),
    opt("requeue", None, NoArg, "allow requeue after a node failure (the default)"),
    opt("signal", None, Req, "[B:]SIG[@SECS]: send SIG this long before the time limit"),
    opt("test-only", None, NoArg, "validate and print what would be submitted, submit nothing"),
    opt("time", Some('t'), Req, "time limit (MM, HH:MM:SS, D-HH:MM:SS, UNLIMITED)"),
    opt("time-min", None, Req, "minimum time limit (recorded)"),
    opt("verbose", Some('v'), NoArg, "say more"),
    opt("wait", Some('W'), NoArg, "wait for the job to end; exit with its exit code"),
    opt("wckey", None, Req, "workload characterization key (accepted, ignored)"),
    opt("wrap", None, Req, "run this command line as the job's script"),
];

/// `SBATCH_*` input variables and the options they stand for.
pub const INPUT_ENV: &[(&str, &str)] = &[
    ("SBATCH_ACCOUNT", "account"),
    ("SBATCH_ARRAY_INX", "array"),
    ("SBATCH_CONSTRAINT", "constraint"),
    ("SBATCH_EXCLUSIVE", "exclusive"),
    ("SBATCH_EXPORT", "export"),
    ("SBATCH_GPUS", "gpus"),
    ("SBATCH_GPUS_PER_NODE", "gpus-per-node"),
    ("SBATCH_GRES", "gres"),
    ("SBATCH_JOB_NAME", "job-name"),
    ("SBATCH_MEM_PER_CPU", "mem-per-cpu"),
    ("SBATCH_MEM_PER_NODE", "mem"),
    ("SBATCH_NO_REQUEUE", "no-requeue"),
    ("SBATCH_OPEN_MODE", "open-mode"),
    ("SBATCH_PARTITION", "partition"),
    ("SBATCH_QOS", "qos"),
    ("SBATCH_REQUEUE", "requeue"),
    ("SBATCH_SIGNAL", "signal"),
    ("SBATCH_TIMELIMIT", "time"),
    ("SBATCH_WAIT", "wait"),
];

pub fn find_long(name: &str) -> Option<&'static OptDef> {
    SUBMIT_OPTIONS.iter().find(|o| o.long == name)
}

pub fn find_short(c: char) -> Option<&'static OptDef> {
    SUBMIT_OPTIONS.iter().find(|o| o.short == Some(c))
}

/// Submission options as given, before they are resolved against the
/// submitting user's context.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubmitRequest {
    pub job_name: Option<String>,
    pub account: Option<String>,
    pub array: Option<ArraySpec>,
    pub begin: Option<String>,
    pub chdir: Option<String>,
    pub comment: Option<String>,
    pub constraint: Option<String>,
    pub cpus_per_task: Option<u32>,
    pub dependency: Option<Dependency>,
    pub error: Option<String>,
    pub exclude: Option<Vec<String>>,
    pub exclusive: bool,
    pub export: Option<String>,
    pub export_file: Option<String>,
    /// (type, count) from --gpus.
    pub gpus_total: Option<(Option<String>, u32)>,
    pub gpus_per_node: Option<(Option<String>, u32)>,
    pub hold: bool,
    pub input: Option<String>,
    pub kill_on_invalid_dep: Option<bool>,
    pub mail_type: Option<String>,
    pub mail_user: Option<String>,
    pub mem: Option<MemRequest>,
    pub nice: Option<i32>,
    pub requeue: Option<bool>,
    pub nodelist: Option<Vec<String>>,
    pub nodes: Option<(u32, u32)>,
    pub ntasks: Option<u32>,
    pub ntasks_per_node: Option<u32>,
    pub open_mode: Option<OpenMode>,
    pub output: Option<String>,
    pub parsable: bool,
    pub partition: Option<String>,
    pub qos: Option<String>,
    pub quiet: bool,
    pub signal: Option<SignalSpec>,
    pub test_only: bool,
    pub time: Option<Option<u64>>,
    pub time_min: Option<u64>,
    pub verbose: u32,
    pub wait: bool,
    pub wrap: Option<String>,
}

/// Where and by whom a job is submitted: what the options are resolved
/// against.
#[derive(Debug, Clone, Default)]
pub struct SubmitContext {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub cwd: String,
    pub host: String,
    pub now_secs: u64,
    /// The submitting shell's environment.
    pub env: Vec<(String, String)>,
    /// Lines of `--export-file`, already read by the caller.
    pub export_file_vars: Vec<(String, String)>,
    /// Name to use without `-J`: the script's file name, or "wrap".
    pub default_name: String,
    /// The submitting process's umask, which the job runs with.
    pub umask: Option<u32>,
}

fn positive(option: &str, value: &str) -> Result<u32, ParseError> {
    match value.trim().parse::<u32>() {
        Ok(n) if n > 0 && n <= 1_000_000 => Ok(n),
        Ok(_) => Err(ParseError::new(option, value, "must be between 1 and 1000000")),
        Err(_) => Err(ParseError::new(option, value, "must be a positive whole number")),
    }
}

fn yes_no(option: &str, value: &str) -> Result<bool, ParseError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "yes" | "y" | "true" | "1" => Ok(true),
        "no" | "n" | "false" | "0" => Ok(false),
        _ => Err(ParseError::new(option, value, "must be yes or no")),
    }
}

/// Parses `[type:]N` for --gpus and --gpus-per-node.
fn gpu_count(option: &str, value: &str) -> Result<(Option<String>, u32), ParseError> {
    let (ty, n) = match value.rsplit_once(':') {
        Some((ty, n)) => (Some(ty.to_string()), n),
        None => (None, value),
    };
    if matches!(&ty, Some(t) if t.is_empty()) {
        return Err(ParseError::new(option, value, "empty GPU type; use [type:]N, e.g. a100:2"));
    }
    match n.parse::<u32>() {
        Ok(c) if c <= 1024 => Ok((ty, c)),
        _ => Err(ParseError::new(option, value, "expected [type:]N, e.g. 2 or a100:2")),
    }
}

/// Parses `--gres`: only GPUs are schedulable today.
fn gres(value: &str) -> Result<(Option<String>, u32), ParseError> {
    let mut parts = value.split(':');
    let name = parts.next().unwrap_or_default();
    if name != "gpu" {
        return Err(ParseError::new(
            "--gres",
            value,
            format!("unknown resource '{name}'; Drover schedules gpu (gpu[:type]:N)"),
        ));
    }
    let rest: Vec<&str> = parts.collect();
    match rest.as_slice() {
        [] => Ok((None, 1)),
        [n] if n.bytes().all(|b| b.is_ascii_digit()) => gpu_count("--gres", n),
        [ty] => Ok((Some(ty.to_string()), 1)),
        [ty, n] => gpu_count("--gres", &format!("{ty}:{n}")),
        _ => Err(ParseError::new("--gres", value, "expected gpu, gpu:N or gpu:type:N")),
    }
}

/// Linux signal names, numbered from 1.
const SIGNAL_NAMES: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM", "TERM",
    "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO",
    "PWR", "SYS",
];

/// Linux signal numbers by name, for --signal and scancel -s.
pub fn parse_signal(text: &str) -> Result<i32, String> {
    let t = text.trim().to_ascii_uppercase();
    if let Ok(n) = t.parse::<i32>() {
        return if (1..=64).contains(&n) { Ok(n) } else { Err(format!("signal number {n} is out of range 1-64")) };
    }
    let name = t.strip_prefix("SIG").unwrap_or(&t);
    SIGNAL_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as i32 + 1)
        .ok_or_else(|| format!("unknown signal '{text}'; use a name like USR1, TERM or a number"))
}

/// The name of a signal number, for display (`USR1`).
pub fn signal_name(sig: i32) -> String {
    usize::try_from(sig - 1).ok().and_then(|i| SIGNAL_NAMES.get(i)).map_or_else(|| sig.to_string(), |n| n.to_string())
}

fn signal_spec(value: &str) -> Result<SignalSpec, ParseError> {
    let err = |reason: String| ParseError::new("--signal", value, reason);
    let (batch_only, rest) = match value.strip_prefix("B:") {
        Some(r) => (true, r),
        None => (false, value),
    };
    let (sig, secs) = match rest.split_once('@') {
        Some((s, t)) => (s, Some(t)),
        None => (rest, None),
    };
    let signal = parse_signal(sig).map_err(err)?;
    let secs_before = match secs {
        None => 60,
        Some(t) => match t.parse::<u32>() {
            Ok(n) if n <= 65535 => n,
            _ => return Err(err("seconds after '@' must be a whole number up to 65535".into())),
        },
    };
    Ok(SignalSpec { signal, secs_before, batch_only })
}

impl SubmitRequest {
    /// Applies one option; `name` is the long name without dashes.
    pub fn apply(&mut self, name: &str, value: Option<&str>) -> Result<(), ParseError> {
        let def = find_long(name)
            .ok_or_else(|| ParseError::new(format!("--{name}"), "", "unknown option; see --help for the list"))?;
        let flag = format!("--{name}");
        let v = match (def.arg, value) {
            (Arg::Required, None) => return Err(ParseError::new(&flag, "", "needs a value")),
            (Arg::None, Some(v)) if !v.is_empty() => {
                return Err(ParseError::new(&flag, v, "takes no value"));
            }
            (_, v) => v.unwrap_or(""),
        };
        let s = || Some(v.to_string());
        fn wrap<T>(flag: &str, v: &str, r: Result<T, String>) -> Result<T, ParseError> {
            r.map_err(|reason| ParseError::new(flag, v, reason))
        }
        match name {
            "account" => self.account = s(),
            "array" => self.array = Some(wrap(&flag, v, ArraySpec::parse(v))?),
            "begin" => self.begin = s(),
            "chdir" => self.chdir = s(),
            "comment" => self.comment = s(),
            "constraint" => self.constraint = s(),
            "cpus-per-task" => self.cpus_per_task = Some(positive(&flag, v)?),
            "dependency" => self.dependency = Some(wrap(&flag, v, Dependency::parse(v))?),
            "error" => self.error = s(),
            "exclude" => self.exclude = Some(wrap(&flag, v, hostlist::expand(v))?),
            "exclusive" => self.exclusive = true,
            "export" => self.export = s(),
            "export-file" => self.export_file = s(),
            "gpus" => self.gpus_total = Some(gpu_count(&flag, v)?),
            "gpus-per-node" => self.gpus_per_node = Some(gpu_count(&flag, v)?),
            "gres" => self.gpus_per_node = Some(gres(v)?),
            "hold" => self.hold = true,
            "input" => self.input = s(),
            "job-name" => self.job_name = s(),
            "kill-on-invalid-dep" => self.kill_on_invalid_dep = Some(yes_no(&flag, v)?),
            "mail-type" => self.mail_type = s(),
            "mail-user" => self.mail_user = s(),
            "mem" => self.mem = Some(MemRequest::PerNode(wrap(&flag, v, memory::parse_memory_mb(v))?)),
            "mem-per-cpu" => match wrap(&flag, v, memory::parse_memory_mb(v))? {
                0 => return Err(ParseError::new(&flag, v, "must be more than 0")),
                mb => self.mem = Some(MemRequest::PerCpu(mb)),
            },
            "nice" => {
                self.nice = Some(if v.is_empty() {
                    100
                } else {
                    match v.parse::<i32>() {
                        Ok(n) if n.unsigned_abs() <= 2_147_483_645 => n,
                        _ => return Err(ParseError::new(&flag, v, "must be a whole number")),
                    }
                })
            }
            "no-requeue" => self.requeue = Some(false),
            "requeue" => self.requeue = Some(true),
            "nodelist" => self.nodelist = Some(wrap(&flag, v, hostlist::expand(v))?),
            "nodes" => {
                let (lo, hi) = v.split_once('-').unwrap_or((v, v));
                let (lo, hi) = (positive(&flag, lo)?, positive(&flag, hi)?);
                if lo > hi {
                    return Err(ParseError::new(&flag, v, "minimum is above maximum"));
                }
                self.nodes = Some((lo, hi));
            }
            "ntasks" => self.ntasks = Some(positive(&flag, v)?),
            "ntasks-per-node" => self.ntasks_per_node = Some(positive(&flag, v)?),
            "open-mode" => {
                self.open_mode = Some(match v.to_ascii_lowercase().as_str() {
                    "append" | "a" => OpenMode::Append,
                    "truncate" | "t" => OpenMode::Truncate,
                    _ => return Err(ParseError::new(&flag, v, "must be append or truncate")),
                })
            }
            "output" => self.output = s(),
            "parsable" => self.parsable = true,
            "partition" => self.partition = s(),
            "qos" => self.qos = s(),
            "wckey" => {}
            "quiet" => self.quiet = true,
            "signal" => self.signal = Some(signal_spec(v)?),
            "test-only" => self.test_only = true,
            "time" => self.time = Some(wrap(&flag, v, time::parse_time_limit(v))?),
            "time-min" => self.time_min = wrap(&flag, v, time::parse_time_limit(v))?,
            "verbose" => self.verbose += 1,
            "wait" => self.wait = true,
            "wrap" => self.wrap = s(),
            _ => unreachable!("every option in SUBMIT_OPTIONS is handled"),
        }
        if let Some(v) = value {
            if v.is_empty() && def.arg == Arg::Required {
                return Err(ParseError::new(&flag, "", "needs a value"));
            }
        }
        Ok(())
    }

    /// Applies `SBATCH_*` input variables from an environment.
    pub fn apply_env(&mut self, env: &[(String, String)]) -> Result<(), ParseError> {
        for (var, option) in INPUT_ENV {
            if let Some((_, value)) = env.iter().find(|(k, _)| k == var) {
                let arg = find_long(option).map(|d| d.arg).unwrap_or(Arg::Required);
                let value = (arg != Arg::None).then_some(value.as_str());
                self.apply(option, value).map_err(|mut e| {
                    e.option = format!("{} ({var})", e.option);
                    e
                })?;
            }
        }
        Ok(())
    }

    /// Parses command-line style arguments until the first positional one;
    /// returns the positionals (script path and its arguments).
    pub fn apply_args<S: AsRef<str>>(&mut self, args: &[S]) -> Result<Vec<String>, ParseError> {
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_ref();
            if a == "--" {
                return Ok(args[i + 1..].iter().map(|s| s.as_ref().to_string()).collect());
            }
            if let Some(long) = a.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v)),
                    None => (long, None),
                };
                let def = find_long(name).ok_or_else(|| {
                    ParseError::new(format!("--{name}"), "", "unknown option; see --help for the list")
                })?;
                let value = match (def.arg, inline) {
                    (Arg::Required, None) => {
                        i += 1;
                        let v = args.get(i).ok_or_else(|| ParseError::new(format!("--{name}"), "", "needs a value"))?;
                        Some(v.as_ref())
                    }
                    (_, v) => v,
                };
                self.apply(name, value)?;
            } else if a.len() > 1 && a.starts_with('-') {
                for (pos, c) in a[1..].char_indices() {
                    let def = find_short(c).ok_or_else(|| {
                        ParseError::new(format!("-{c}"), "", "unknown option; see --help for the list")
                    })?;
                    if def.arg == Arg::None {
                        self.apply(def.long, None)?;
                        continue;
                    }
                    // `-t10` or `-t 10`.
                    let rest = &a[1 + pos + c.len_utf8()..];
                    let value = if !rest.is_empty() {
                        rest.strip_prefix('=').unwrap_or(rest).to_string()
                    } else {
                        i += 1;
                        args.get(i)
                            .ok_or_else(|| ParseError::new(format!("-{c}"), "", "needs a value"))?
                            .as_ref()
                            .to_string()
                    };
                    self.apply(def.long, Some(&value)).map_err(|mut e| {
                        e.option = format!("-{c}/--{}", def.long);
                        e
                    })?;
                    break;
                }
            } else {
                return Ok(args[i..].iter().map(|s| s.as_ref().to_string()).collect());
            }
            i += 1;
        }
        Ok(Vec::new())
    }

    /// Resolves the options against the submitting context into a spec.
    pub fn build(&self, ctx: &SubmitContext, script: &str) -> Result<JobSpec, ParseError> {
        let mut spec = JobSpec::simple(&ctx.user, script);
        spec.name = self.job_name.clone().unwrap_or_else(|| ctx.default_name.clone());
        if spec.name.is_empty() {
            spec.name = "sbatch".into();
        }
        spec.uid = ctx.uid;
        spec.gid = ctx.gid;
        spec.account = self.account.clone();
        spec.partition = self.partition.clone();
        spec.qos = self.qos.clone();

        let cpt = self.cpus_per_task.unwrap_or(1);
        let (nodes, ntasks) = match (self.nodes, self.ntasks, self.ntasks_per_node) {
            (Some((lo, hi)), Some(n), _) => ((lo, hi, true), n),
            (Some((lo, hi)), None, tpn) => ((lo, hi, true), lo.saturating_mul(tpn.unwrap_or(1))),
            (None, Some(n), Some(tpn)) => {
                let k = n.div_ceil(tpn);
                ((k, k, true), n)
            }
            (None, Some(n), None) => ((1, n, false), n),
            (None, None, tpn) => ((1, 1, false), tpn.unwrap_or(1)),
        };
        if ntasks < nodes.0 {
            return Err(ParseError::new(
                "--ntasks",
                ntasks.to_string(),
                format!("fewer tasks than the {} nodes asked for; every node runs at least one task", nodes.0),
            ));
        }
        if let Some(tpn) = self.ntasks_per_node {
            if u64::from(tpn) * u64::from(nodes.1) < u64::from(ntasks) {
                return Err(ParseError::new(
                    "--ntasks-per-node",
                    tpn.to_string(),
                    format!("{} nodes at {tpn} tasks each cannot hold {ntasks} tasks", nodes.1),
                ));
            }
        }
        (spec.nodes_min, spec.nodes_max, spec.nodes_given) = nodes;
        spec.ntasks = ntasks;
        spec.ntasks_per_node = self.ntasks_per_node;
        spec.cpus_per_task = cpt;
        if u64::from(ntasks) * u64::from(cpt) > 10_000_000 {
            return Err(ParseError::new("--ntasks", ntasks.to_string(), "asks for more than 10 000 000 CPUs"));
        }
        spec.mem = self.mem.unwrap_or(MemRequest::Default);

        let gpu_type = |t: &Option<String>| t.clone();
        match (&self.gpus_per_node, &self.gpus_total) {
            (Some((t, n)), _) => {
                spec.gpus_per_node = *n;
                spec.gpu_type = gpu_type(t);
            }
            (None, Some((t, n))) => {
                spec.gpus_per_node = n.div_ceil(spec.nodes_min);
                spec.gpu_type = gpu_type(t);
            }
            (None, None) => {}
        }

        spec.time_limit = self.time.flatten();
        spec.time_min = self.time_min;
        spec.exclusive = self.exclusive;
        spec.nodelist = self.nodelist.clone().unwrap_or_default();
        spec.exclude = self.exclude.clone().unwrap_or_default();
        if let Some(n) = spec.nodelist.iter().find(|n| spec.exclude.contains(n)) {
            return Err(ParseError::new("--nodelist", n.clone(), "is also in --exclude"));
        }
        if spec.nodelist.len() as u64 > u64::from(spec.nodes_max) {
            if self.nodes.is_some() {
                return Err(ParseError::new(
                    "--nodelist",
                    hostlist::compress(&spec.nodelist),
                    format!("names {} nodes but --nodes allows at most {}", spec.nodelist.len(), spec.nodes_max),
                ));
            }
            let n = spec.nodelist.len() as u32;
            (spec.nodes_min, spec.nodes_max) = (n, n.max(spec.nodes_max));
            if spec.ntasks < n {
                spec.ntasks = n;
            }
        }
        spec.constraint = self.constraint.clone();
        spec.work_dir = self.chdir.clone().unwrap_or_else(|| ctx.cwd.clone());
        if !spec.work_dir.starts_with('/') {
            spec.work_dir = format!("{}/{}", ctx.cwd.trim_end_matches('/'), spec.work_dir);
        }
        spec.stdout = self.output.clone();
        spec.stderr = self.error.clone();
        spec.stdin = self.input.clone();
        spec.open_mode = self.open_mode.unwrap_or(OpenMode::Truncate);
        let (policy, extra) = export_policy(self.export.as_deref().unwrap_or("ALL"))?;
        spec.environment = Arc::from(job_environment(&policy, &extra, ctx));
        spec.export = policy;
        spec.array = self.array.clone();
        spec.dependency = self.dependency.clone();
        spec.kill_on_invalid_dep = self.kill_on_invalid_dep.unwrap_or(false);
        spec.requeue = self.requeue.unwrap_or(true);
        spec.signal = self.signal.clone();
        spec.hold = self.hold;
        spec.begin = match &self.begin {
            None => None,
            Some(b) => Some(
                time::parse_begin(b, ctx.now_secs).map_err(|reason| ParseError::new("--begin", b.clone(), reason))?,
            ),
        };
        spec.nice = self.nice.unwrap_or(0);
        spec.comment = self.comment.clone();
        spec.mail_type = self.mail_type.clone();
        spec.mail_user = self.mail_user.clone();
        spec.submit_host = ctx.host.clone();
        spec.umask = ctx.umask;
        Ok(spec)
    }
}

/// Splits `--export` into the policy and the `VAR=value` pairs it sets.
fn export_policy(text: &str) -> Result<(ExportPolicy, Vec<(String, String)>), ParseError> {
    let mut policy = None;
    let mut names = Vec::new();
    let mut extra = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item.eq_ignore_ascii_case("ALL") {
            policy = Some(ExportPolicy::All);
        } else if item.eq_ignore_ascii_case("NONE") || item.eq_ignore_ascii_case("NIL") {
            policy = Some(ExportPolicy::None);
        } else if let Some((k, v)) = item.split_once('=') {
            check_var_name(k, text)?;
            extra.push((k.to_string(), v.to_string()));
        } else {
            check_var_name(item, text)?;
            names.push(item.to_string());
        }
    }
    let policy = match policy {
        Some(p) => p,
        None if !names.is_empty() => ExportPolicy::Names(names),
        None if !extra.is_empty() => ExportPolicy::Names(Vec::new()),
        None => ExportPolicy::All,
    };
    Ok((policy, extra))
}

fn check_var_name(name: &str, whole: &str) -> Result<(), ParseError> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ParseError::new("--export", whole, format!("'{name}' is not a variable name")))
    }
}

fn job_environment(policy: &ExportPolicy, extra: &[(String, String)], ctx: &SubmitContext) -> Vec<(String, String)> {
    apply_export(policy, ctx.export_file_vars.iter().chain(extra), &ctx.env)
}

/// What of `env` a policy passes on, with `set` laid over it.
fn apply_export<'a>(
    policy: &ExportPolicy,
    set: impl Iterator<Item = &'a (String, String)>,
    env: &[(String, String)],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = match policy {
        ExportPolicy::All => env.to_vec(),
        ExportPolicy::None => Vec::new(),
        ExportPolicy::Names(names) => env.iter().filter(|(k, _)| names.contains(k)).cloned().collect(),
    };
    for (k, v) in set {
        out.retain(|(key, _)| key != k);
        out.push((k.clone(), v.clone()));
    }
    out
}

/// `--export` as srun applies it to its own environment `env`: `ALL` (also
/// when not given), `NONE`, names, each with `VAR=value`s.
pub fn exported_environment(spec: Option<&str>, env: &[(String, String)]) -> Result<Vec<(String, String)>, ParseError> {
    let (policy, extra) = match spec {
        Some(text) => export_policy(text)?,
        None => (ExportPolicy::All, Vec::new()),
    };
    Ok(apply_export(&policy, extra.iter(), env))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> SubmitContext {
        SubmitContext {
            user: "alice".into(),
            uid: 1001,
            gid: 1001,
            cwd: "/home/alice".into(),
            host: "login1".into(),
            now_secs: 1_700_000_000,
            env: vec![("PATH".into(), "/bin".into()), ("HOME".into(), "/home/alice".into())],
            export_file_vars: vec![],
            default_name: "job.sh".into(),
            umask: None,
        }
    }

    fn build(args: &[&str]) -> Result<JobSpec, ParseError> {
        let mut r = SubmitRequest::default();
        r.apply_args(args)?;
        r.build(&ctx(), "#!/bin/sh\ntrue\n")
    }

    #[test]
    fn long_short_and_attached_forms() {
        let s = build(&["-N2", "-n", "8", "--cpus-per-task=2", "-t10", "--mem", "4G", "-J", "x"]).unwrap();
        assert_eq!((s.nodes_min, s.nodes_max, s.ntasks, s.cpus_per_task), (2, 2, 8, 2));
        assert_eq!(s.time_limit, Some(600));
        assert_eq!(s.mem, MemRequest::PerNode(4096));
        assert_eq!(s.name, "x");
        assert_eq!(s.work_dir, "/home/alice");
        let s = build(&["-Hp", "gpu"]).unwrap();
        assert!(s.hold);
        assert_eq!(s.partition.as_deref(), Some("gpu"));
    }

    #[test]
    fn later_wins() {
        let s = build(&["-t", "10", "--time=20"]).unwrap();
        assert_eq!(s.time_limit, Some(1200));
    }

    #[test]
    fn positionals_end_options() {
        let mut r = SubmitRequest::default();
        let rest = r.apply_args(&["-n", "2", "job.sh", "-n", "5"]).unwrap();
        assert_eq!(rest, vec!["job.sh", "-n", "5"]);
        assert_eq!(r.ntasks, Some(2));
    }

    #[test]
    fn errors_name_option_and_value() {
        let e = build(&["--time", "1:2:3:4"]).unwrap_err();
        assert_eq!(e.option, "--time");
        assert_eq!(e.value, "1:2:3:4");
        let e = build(&["-t", "xx"]).unwrap_err();
        assert_eq!(e.option, "-t/--time");
        assert!(build(&["--bogus"]).unwrap_err().to_string().contains("unknown option"));
        assert!(build(&["-N", "4", "-n", "2"]).unwrap_err().to_string().contains("fewer tasks"));
        assert!(build(&["--mem"]).unwrap_err().to_string().contains("needs a value"));
        assert!(build(&["--hold=yes"]).unwrap_err().to_string().contains("takes no value"));
        assert!(build(&["--gres", "nic:1"]).unwrap_err().to_string().contains("unknown resource"));
        assert!(build(&["-w", "n1", "-x", "n1"]).is_err());
    }

    #[test]
    fn node_and_task_shapes() {
        let s = build(&["-n", "6"]).unwrap();
        assert_eq!((s.nodes_min, s.nodes_max, s.nodes_given), (1, 6, false));
        let s = build(&["-N", "3"]).unwrap();
        assert_eq!(s.ntasks, 3);
        let s = build(&["-N", "2", "--ntasks-per-node", "4"]).unwrap();
        assert_eq!(s.ntasks, 8);
        let s = build(&["-n", "8", "--ntasks-per-node", "4"]).unwrap();
        assert_eq!((s.nodes_min, s.nodes_max), (2, 2));
        let s = build(&["-N", "2", "--gpus", "a100:4"]).unwrap();
        assert_eq!((s.gpus_per_node, s.gpu_type.as_deref()), (2, Some("a100")));
        let s = build(&["--gres", "gpu:2"]).unwrap();
        assert_eq!(s.gpus_per_node, 2);
    }

    #[test]
    fn exports() {
        let s = build(&["--export", "NONE,FOO=1"]).unwrap();
        assert_eq!(&*s.environment, &[("FOO".to_string(), "1".to_string())]);
        let s = build(&["--export", "HOME"]).unwrap();
        assert_eq!(s.environment.len(), 1);
        let s = build(&[]).unwrap();
        assert_eq!(s.environment.len(), 2);
        assert!(build(&["--export", "1BAD=x"]).is_err());
    }

    #[test]
    fn input_env_is_below_command_line() {
        let mut r = SubmitRequest::default();
        r.apply_env(&[("SBATCH_PARTITION".into(), "debug".into()), ("SBATCH_NO_REQUEUE".into(), "1".into())]).unwrap();
        r.apply_args(&["-p", "gpu"]).unwrap();
        let s = r.build(&ctx(), "").unwrap();
        assert_eq!(s.partition.as_deref(), Some("gpu"));
        assert!(!s.requeue);
        let mut r = SubmitRequest::default();
        let e = r.apply_env(&[("SBATCH_TIMELIMIT".into(), "abc".into())]).unwrap_err();
        assert!(e.option.contains("SBATCH_TIMELIMIT"));
    }

    #[test]
    fn signals() {
        let s = build(&["--signal", "B:USR1@120"]).unwrap().signal.unwrap();
        assert_eq!((s.signal, s.secs_before, s.batch_only), (10, 120, true));
        assert_eq!(build(&["--signal=SIGTERM"]).unwrap().signal.unwrap().secs_before, 60);
        assert!(build(&["--signal", "FOO"]).is_err());
        assert_eq!(signal_name(15), "TERM");
    }
}
