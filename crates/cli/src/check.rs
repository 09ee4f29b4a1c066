//! `drover check`: what a submission would be, resolved offline.

use clap::Args;
use drover_core::job::{JobSpec, MemRequest};
use drover_core::options::{SubmitContext, SubmitRequest};
use drover_core::{hostlist, memory, script, time};
use std::path::Path;

#[derive(Args)]
pub struct CheckArgs {
    /// Print the resolved job as JSON.
    #[arg(long)]
    json: bool,
    /// sbatch options, then the script path (or --wrap CMD instead of a script).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "OPTIONS... SCRIPT")]
    args: Vec<String>,
}

fn context(default_name: &str) -> SubmitContext {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/proc/self").ok();
    let uid = meta.as_ref().map_or(0, |m| m.uid());
    let gid = meta.as_ref().map_or(0, |m| m.gid());
    let user = user_name(uid).unwrap_or_else(|| uid.to_string());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let now_secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    SubmitContext {
        user,
        uid,
        gid,
        cwd: std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_else(|_| "/".into()),
        host,
        now_secs,
        env: std::env::vars().collect(),
        export_file_vars: Vec::new(),
        default_name: default_name.to_string(),
        umask: Some(current_umask()),
    }
}

/// This process's umask: reading it means setting it, so it is set back.
fn current_umask() -> u32 {
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe {
        let mask = libc::umask(0o022);
        libc::umask(mask);
        mask as u32
    }
}

/// The login name of `uid` from /etc/passwd (no NSS: sites with LDAP users
/// get the numeric id until the agent's credential service resolves it).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

/// Reads `--export-file`: `VAR=value` lines; blank lines and `#` comments skipped.
fn read_export_file(path: &str) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read --export-file {path}: {e}"))?;
    let mut vars = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) =
            line.split_once('=').ok_or_else(|| format!("{path} line {}: expected VAR=value, got '{line}'", i + 1))?;
        vars.push((k.trim().to_string(), v.to_string()));
    }
    Ok(vars)
}

/// Resolves sbatch-style arguments into a spec, with Slurm's precedence:
/// script directives, then `SBATCH_*` variables, then the command line.
/// Also returns the command line's own options (client behaviour such as
/// `--parsable` and `--wait`).
pub fn resolve(args: &[String]) -> Result<(JobSpec, SubmitRequest), String> {
    // First pass over the command line only to find the script.
    let mut cli = SubmitRequest::default();
    let positionals = cli.apply_args(args).map_err(|e| e.to_string())?;
    let (script_text, default_name) = match (positionals.first(), &cli.wrap) {
        (Some(_), Some(_)) => return Err("give either a script or --wrap, not both".into()),
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read batch script {path}: {e}"))?;
            let name = Path::new(path).file_name().map_or("sbatch".into(), |n| n.to_string_lossy().into_owned());
            (text, name)
        }
        (None, Some(cmd)) => {
            (format!("#!/bin/sh\n# This script was created by sbatch --wrap.\n\n{cmd}\n"), "wrap".to_string())
        }
        // As sbatch: no script named, so it comes on standard input (`sbatch << EOF`).
        (None, None) => {
            use std::io::{IsTerminal, Read};
            if std::io::stdin().is_terminal() {
                return Err("no batch script given; name a script file, use --wrap CMD, or pipe one in".into());
            }
            let mut text = String::new();
            std::io::stdin()
                .take(16 << 20)
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read the batch script from standard input: {e}"))?;
            if text.trim().is_empty() {
                return Err(
                    "no batch script given: standard input was empty; name a script file or use --wrap CMD".into()
                );
            }
            (text, "sbatch".to_string())
        }
    };
    if !script_text.starts_with("#!") {
        return Err(
            "this does not look like a batch script: the first line must start with #! (e.g. #!/bin/bash)".into()
        );
    }
    let mut req = SubmitRequest::default();
    script::apply_directives(&script_text, &mut req).map_err(|e| e.to_string())?;
    let mut ctx = context(&default_name);
    req.apply_env(&ctx.env).map_err(|e| e.to_string())?;
    req.apply_args(args).map_err(|e| e.to_string())?;
    if let Some(path) = &req.export_file {
        ctx.export_file_vars = read_export_file(path)?;
    }
    let spec = req.build(&ctx, &script_text).map_err(|e| e.to_string())?;
    Ok((spec, cli))
}

pub fn run(args: CheckArgs) -> Result<(), String> {
    let (spec, _) = resolve(&args.args)?;
    if args.json {
        let mut value = serde_json::to_value(&spec).map_err(|e| e.to_string())?;
        // The environment can be long and private; show only its size.
        value["environment"] = serde_json::json!(format!("{} variables", spec.environment.len()));
        println!("{}", serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?);
        return Ok(());
    }
    print!("{}", describe(&spec));
    Ok(())
}

/// `scontrol show job`-like key=value lines for a spec.
fn describe(s: &JobSpec) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(null)".into());
    let mem = match s.mem {
        MemRequest::Default => "default (per-CPU share of the node)".to_string(),
        MemRequest::PerNode(0) => "whole node".to_string(),
        MemRequest::PerNode(m) => format!("{} per node", memory::format_mb(m)),
        MemRequest::PerCpu(m) => format!("{} per CPU", memory::format_mb(m)),
    };
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k}={v}\n"));
    line("JobName", s.name.clone());
    line("UserId", format!("{}({})", s.user, s.uid));
    line("Partition", s.partition.clone().unwrap_or_else(|| "(default)".into()));
    line("Account", opt(&s.account));
    line(
        "NumNodes",
        if s.nodes_min == s.nodes_max { s.nodes_min.to_string() } else { format!("{}-{}", s.nodes_min, s.nodes_max) },
    );
    line("NumTasks", s.ntasks.to_string());
    line("CPUs/Task", s.cpus_per_task.to_string());
    line("Memory", mem);
    if s.gpus_per_node > 0 {
        line(
            "GPUs/Node",
            format!("{}{}", s.gpu_type.as_ref().map_or(String::new(), |t| format!("{t}:")), s.gpus_per_node),
        );
    }
    line("TimeLimit", s.time_limit.map_or("(partition default)".into(), |t| time::format_limit(Some(t))));
    if let Some(a) = &s.array {
        line("ArrayTasks", format!("{} ({} tasks)", a, a.tasks.len()));
    }
    if let Some(d) = &s.dependency {
        line("Dependency", d.to_string());
    }
    if !s.nodelist.is_empty() {
        line("ReqNodeList", hostlist::compress(&s.nodelist));
    }
    if !s.exclude.is_empty() {
        line("ExcNodeList", hostlist::compress(&s.exclude));
    }
    if let Some(c) = &s.constraint {
        line("Features", c.clone());
    }
    line("Exclusive", s.exclusive.to_string());
    line("Requeue", u8::from(s.requeue).to_string());
    line("Hold", s.hold.to_string());
    if let Some(b) = s.begin {
        line("BeginTime", time::format_timestamp(b));
    }
    line("Nice", s.nice.to_string());
    line("WorkDir", s.work_dir.clone());
    line(
        "StdOut",
        s.stdout.clone().unwrap_or_else(|| if s.array.is_some() { "slurm-%A_%a.out" } else { "slurm-%j.out" }.into()),
    );
    line("StdErr", s.stderr.clone().unwrap_or_else(|| "(same as StdOut)".into()));
    line("Export", format!("{:?} ({} variables)", s.export, s.environment.len()));
    if let Some(sig) = &s.signal {
        line(
            "Signal",
            format!(
                "{}{}@{}",
                if sig.batch_only { "B:" } else { "" },
                drover_core::options::signal_name(sig.signal),
                sig.secs_before
            ),
        );
    }
    if let Some(c) = &s.comment {
        line("Comment", c.clone());
    }
    out
}
