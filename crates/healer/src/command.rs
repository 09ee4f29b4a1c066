//! The `command` provider: a site's own programs, as Slurm's power saving
//! calls them. Each is run directly (no shell) with one argument, the
//! nodes as a hostlist (`node[1-3]`), bounded in time, its output logged:
//!
//! - resume: `ResumeProgram HOSTLIST`, with `SLURM_RESUME_FILE` naming a
//!   JSON file of the jobs waiting for the nodes (Slurm's shape);
//! - suspend: `SuspendProgram HOSTLIST`;
//! - replace: the replace program if given, else the resume program.
//!
//! Exit 0 means it acted; the node must still register by the deadline.
//! The provider knows nothing of machines: the healer goes by node states.

use crate::provider::{Machine, Provider, Target};
use drover_core::node::RepairKind;
use futures_util::future::BoxFuture;
use std::path::PathBuf;
use std::time::Duration;

/// The most output kept from one run, for the log and the error.
const OUTPUT_KEPT: usize = 4096;

#[derive(Debug, Clone, Default)]
pub struct Programs {
    pub resume: Option<PathBuf>,
    pub suspend: Option<PathBuf>,
    pub replace: Option<PathBuf>,
    /// How long one run may take before it is killed.
    pub timeout: Duration,
    /// Where the resume file is written (the controller's state directory).
    pub scratch: PathBuf,
}

pub struct Command {
    programs: Programs,
}

impl Command {
    pub fn new(programs: Programs) -> Result<Command, String> {
        for p in [&programs.resume, &programs.suspend, &programs.replace].into_iter().flatten() {
            if !p.is_absolute() {
                return Err(format!("{}: give the program as an absolute path", p.display()));
            }
        }
        if programs.resume.is_none() && programs.replace.is_none() {
            return Err("the command provider needs --resume-program or --replace-program".into());
        }
        Ok(Command { programs })
    }

    fn program(&self, kind: RepairKind) -> Option<&PathBuf> {
        match kind {
            RepairKind::Resume => self.programs.resume.as_ref(),
            RepairKind::Suspend => self.programs.suspend.as_ref(),
            RepairKind::Replace => self.programs.replace.as_ref().or(self.programs.resume.as_ref()),
        }
    }

    async fn run(&self, kind: RepairKind, targets: &[Target], waiting: &serde_json::Value) -> Result<String, String> {
        let program = self.program(kind).ok_or_else(|| format!("no program to {kind} nodes is configured"))?;
        let names: Vec<&str> = targets.iter().map(|t| t.node.as_str()).collect();
        let hostlist = drover_core::hostlist::compress(&names);
        let tokens: Vec<&str> = targets.iter().map(|t| t.token.as_str()).collect();
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg(&hostlist)
            .env("DROVER_REPAIR_KIND", kind.name())
            .env("DROVER_REPAIR_TOKENS", tokens.join(","))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let resume_file = match kind {
            RepairKind::Suspend => None,
            _ => {
                let path = self.programs.scratch.join(format!("resume-{}.json", tokens.first().unwrap_or(&"x")));
                std::fs::write(&path, serde_json::to_vec_pretty(waiting).map_err(|e| e.to_string())?)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                cmd.env("SLURM_RESUME_FILE", &path);
                Some(path)
            }
        };
        let child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let done = tokio::time::timeout(self.programs.timeout, child.wait_with_output()).await;
        if let Some(p) = resume_file {
            let _ = std::fs::remove_file(p);
        }
        let out = match done {
            Err(_) => {
                return Err(format!(
                    "{} {hostlist} ran longer than {}s",
                    program.display(),
                    self.programs.timeout.as_secs()
                ))
            }
            Ok(Err(e)) => return Err(format!("{} {hostlist}: {e}", program.display())),
            Ok(Ok(out)) => out,
        };
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        let text = kept(text.trim());
        tracing::info!(program = %program.display(), nodes = %hostlist, kind = kind.name(), status = %out.status, output = %text, "repair program ran");
        if out.status.success() {
            Ok(format!("{} {hostlist}: ok", program.display()))
        } else {
            Err(format!("{} {hostlist} failed ({}): {text}", program.display(), out.status))
        }
    }
}

fn kept(text: &str) -> String {
    if text.len() <= OUTPUT_KEPT {
        return text.to_string();
    }
    let mut end = OUTPUT_KEPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl Provider for Command {
    fn name(&self) -> &'static str {
        "command"
    }

    fn describe<'a>(&'a self, _nodes: &'a [String]) -> BoxFuture<'a, Result<Vec<Machine>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn act<'a>(
        &'a self,
        kind: RepairKind,
        targets: &'a [Target],
        waiting: &'a serde_json::Value,
    ) -> BoxFuture<'a, Vec<Result<String, String>>> {
        Box::pin(async move {
            let answer = self.run(kind, targets, waiting).await;
            targets.iter().map(|_| answer.clone()).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[tokio::test]
    async fn programs_get_a_hostlist_and_the_waiting_jobs_and_are_bounded_in_time() {
        let dir = std::env::temp_dir().join(format!("drover-command-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let seen = dir.join("seen");
        let resume = script(
            &dir,
            "resume",
            &format!("echo \"$1 $DROVER_REPAIR_KIND\" > {0}; cat \"$SLURM_RESUME_FILE\" >> {0}", seen.display()),
        );
        let suspend = script(&dir, "suspend", "echo no power switch >&2; exit 3");
        let replace = script(&dir, "replace", "sleep 5");
        let provider = Command::new(Programs {
            resume: Some(resume),
            suspend: Some(suspend),
            replace: Some(replace),
            timeout: Duration::from_millis(500),
            scratch: dir.clone(),
        })
        .unwrap();
        let targets: Vec<Target> = ["node1", "node2", "node3"]
            .iter()
            .map(|n| Target { node: n.to_string(), token: format!("t-{n}") })
            .collect();
        let waiting = serde_json::json!({ "jobs": [{ "job_id": 7, "nodes_alloc": "node[1-3]" }] });
        let answers = provider.act(RepairKind::Resume, &targets, &waiting).await;
        assert!(answers.iter().all(|a| a.is_ok()), "{answers:?}");
        let text = std::fs::read_to_string(&seen).unwrap();
        assert!(text.starts_with("node[1-3] resume\n"), "{text}");
        assert!(text.contains("\"job_id\": 7"), "{text}");

        let answers = provider.act(RepairKind::Suspend, &targets[..1], &waiting).await;
        let e = answers[0].as_ref().unwrap_err();
        assert!(e.contains("no power switch") && e.contains("exit status: 3"), "{e}");

        let started = std::time::Instant::now();
        let answers = provider.act(RepairKind::Replace, &targets[..1], &waiting).await;
        assert!(answers[0].as_ref().unwrap_err().contains("ran longer than"), "{answers:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "killed at the timeout");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn relative_programs_are_refused() {
        let e = Command::new(Programs { resume: Some("resume.sh".into()), ..Programs::default() }).err().unwrap();
        assert!(e.contains("absolute path"), "{e}");
    }
}
