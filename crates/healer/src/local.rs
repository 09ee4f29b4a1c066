//! The `local` provider: the agents of a cluster `drover up` started on
//! this host, one process each. A machine is an agent process; replacing
//! or resuming a node starts its agent again with the command line `drover
//! up` recorded, suspending it stops the agent.
//!
//! The records live in the cluster's state directory, which belongs to
//! whoever ran `drover up`: a record not owned by this process's user, or
//! writable by others, is refused (root never runs what a user can edit).

use crate::provider::{Machine, MachineState, Provider, Target};
use drover_core::node::RepairKind;
use futures_util::future::BoxFuture;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where `drover up` records each agent's command line: `NODE.args`, a
/// JSON array of the arguments after the binary.
pub const RECORDS: &str = "nodes";
/// Present while `drover down` stops the cluster: nothing is restarted.
pub const STOPPING: &str = "stopping";
/// Where `drover up` records each controller's command line: `ROLE.args`.
pub const CONTROLLER_RECORDS: &str = "controllers";

pub struct Local {
    state_dir: PathBuf,
    exe: PathBuf,
}

impl Local {
    /// The provider for the cluster under `state_dir`, starting agents
    /// with `exe` (this very binary).
    pub fn new(state_dir: PathBuf, exe: PathBuf) -> Local {
        Local { state_dir, exe }
    }

    /// Records `node`'s agent command line (for `drover up`).
    pub fn record(state_dir: &Path, node: &str, args: &[String]) -> Result<(), String> {
        Self::record_in(&state_dir.join(RECORDS), node, args)
    }

    /// Records the command line of the controller `role` (for `drover up`).
    pub fn record_controller(state_dir: &Path, role: &str, args: &[String]) -> Result<(), String> {
        Self::record_in(&state_dir.join(CONTROLLER_RECORDS), role, args)
    }

    fn record_in(dir: &Path, node: &str, args: &[String]) -> Result<(), String> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = dir.to_path_buf();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(format!("{node}.args"));
        let tmp = dir.join(format!(".{node}.args.{}", std::process::id()));
        let text = serde_json::to_string(args).map_err(|e| e.to_string())?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    fn args_of(&self, node: &str) -> Result<Vec<String>, String> {
        let args = self.read_record(RECORDS, node)?;
        if args.first().map(String::as_str) != Some("agent") || !has_name(&args, node) {
            return Err(format!("the record of {node} does not start its agent"));
        }
        Ok(args)
    }

    /// A record of `drover up`'s, if it is a file of this process's user
    /// that only it may write.
    fn read_record(&self, dir: &str, name: &str) -> Result<Vec<String>, String> {
        let path = self.state_dir.join(dir).join(format!("{name}.args"));
        let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if !meta.is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 {
            return Err(format!("{} is not a file of uid {me} that only it may write: refused", path.display()));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The pid of the controller `role` if it runs: the last one recorded
    /// whose process is a controller with that state directory.
    fn controller_pid(&self, role: &str, state_dir_arg: &str) -> Option<i32> {
        let pids = std::fs::read_to_string(self.state_dir.join("pids")).ok()?;
        pids.lines()
            .rev()
            .filter_map(|l| l.split_once(' '))
            .filter(|(r, _)| *r == role)
            .filter_map(|(_, pid)| pid.trim().parse().ok())
            .find(|&pid| {
                let args = cmdline(pid);
                !is_zombie(pid)
                    && args.get(1).map(String::as_str) == Some("controller")
                    && args.windows(2).any(|w| w[0] == "--state-dir" && w[1] == state_dir_arg)
            })
    }

    /// Starts the cluster's dead controllers again (the leader, which runs
    /// this, is alive by definition).
    async fn restart_controllers(&self) -> Vec<String> {
        if self.stopping() {
            return Vec::new();
        }
        let Ok(entries) = std::fs::read_dir(self.state_dir.join(CONTROLLER_RECORDS)) else { return Vec::new() };
        let mut did = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(role) = name.strip_suffix(".args").filter(|r| !r.starts_with('.')) else { continue };
            let args = match self.read_record(CONTROLLER_RECORDS, role) {
                Ok(a) if a.first().map(String::as_str) == Some("controller") => a,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(role, error = %e, "cannot read a controller's record");
                    continue;
                }
            };
            let Some(dir) = args.windows(2).find(|w| w[0] == "--state-dir").map(|w| w[1].clone()) else { continue };
            if self.controller_pid(role, &dir).is_some() {
                continue;
            }
            match self.spawn(role, &args) {
                Ok(pid) => did.push(format!("started {role} again (pid {pid})")),
                Err(e) => did.push(format!("cannot start {role} again: {e}")),
            }
        }
        did
    }

    /// Starts `drover ARGS` as `role`, its output appended to its log, its
    /// pid recorded; reaped when it exits.
    fn spawn(&self, role: &str, args: &[String]) -> Result<i32, String> {
        let logs = self.state_dir.join("logs");
        let log_path = logs.join(format!("{role}.log"));
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new(&self.exe)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            // Its own group: it outlives this controller, as `drover up`'s do.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let pid = child.id().ok_or("it exited at once")? as i32;
        // Reaped here, so that a dead process is not taken for a live one.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let mut pids = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.state_dir.join("pids"))
            .map_err(|e| format!("cannot record the pid: {e}"))?;
        std::io::Write::write_all(&mut pids, format!("{role} {pid}\n").as_bytes()).map_err(|e| e.to_string())?;
        Ok(pid)
    }

    /// The pid of `node`'s agent, if one runs: the last pid recorded for
    /// it whose process is that agent (a reused pid is not).
    fn pid_of(&self, node: &str) -> Option<i32> {
        let pids = std::fs::read_to_string(self.state_dir.join("pids")).ok()?;
        pids.lines()
            .rev()
            .filter_map(|l| l.split_once(' '))
            .filter(|(role, _)| *role == node)
            .filter_map(|(_, pid)| pid.trim().parse().ok())
            .find(|&pid| is_agent_of(pid, node))
    }

    fn stopping(&self) -> bool {
        self.state_dir.join(STOPPING).exists()
    }

    /// Starts `node`'s agent for the repair `token`; the same token again
    /// (a new leader calling for a repair its predecessor recorded) finds
    /// the agent it started and leaves it be.
    async fn start(&self, node: &str, token: &str) -> Result<String, String> {
        let token_file = self.state_dir.join(RECORDS).join(format!("{node}.token"));
        let last = std::fs::read_to_string(&token_file).unwrap_or_default();
        if let (true, Some(pid)) = (last.trim() == token, self.pid_of(node)) {
            return Ok(format!("the agent of {node} runs (pid {pid}), started for this repair"));
        }
        if let Some(pid) = self.pid_of(node) {
            // Hung (DOWN while its process lives): make room for a new one.
            stop(pid, libc::SIGKILL, Duration::from_secs(5)).await;
        }
        let args = self.args_of(node)?;
        let pid = self.spawn(node, &args)?;
        let _ = std::fs::write(&token_file, token);
        Ok(format!("started the agent of {node} (pid {pid})"))
    }

    async fn act_one(&self, kind: RepairKind, node: &str, token: &str) -> Result<String, String> {
        if self.stopping() {
            return Err("the cluster is stopping".into());
        }
        match kind {
            RepairKind::Replace => self.start(node, token).await,
            RepairKind::Resume => match self.pid_of(node) {
                // The same resume again (a new leader): already done.
                Some(pid) => Ok(format!("the agent of {node} runs (pid {pid})")),
                None => self.start(node, token).await,
            },
            RepairKind::Suspend => match self.pid_of(node) {
                Some(pid) => {
                    stop(pid, libc::SIGTERM, Duration::from_secs(10)).await;
                    Ok(format!("stopped the agent of {node} (pid {pid})"))
                }
                None => Ok(format!("the agent of {node} is not running")),
            },
        }
    }
}

fn has_name(args: &[String], node: &str) -> bool {
    args.windows(2).any(|w| w[0] == "--name" && w[1] == node)
}

fn cmdline(pid: i32) -> Vec<String> {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return Vec::new() };
    cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// Whether `pid` is a drover agent named `node` (not a zombie, not a
/// process that took a dead agent's pid).
fn is_agent_of(pid: i32, node: &str) -> bool {
    let args = cmdline(pid);
    !is_zombie(pid) && args.get(1).map(String::as_str) == Some("agent") && has_name(&args, node)
}

/// Signals `pid`, waits up to `patience` for it to go, then kills it.
async fn stop(pid: i32, sig: i32, patience: Duration) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
    let start = Instant::now();
    while start.elapsed() < patience {
        // Gone, or a zombie its parent has still to reap.
        if is_zombie(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

impl Provider for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn loss_kills_jobs(&self) -> bool {
        false
    }

    fn tend(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(self.restart_controllers())
    }

    fn describe<'a>(&'a self, nodes: &'a [String]) -> BoxFuture<'a, Result<Vec<Machine>, String>> {
        Box::pin(async move {
            if self.stopping() {
                return Ok(Vec::new());
            }
            Ok(nodes
                .iter()
                .filter(|n| self.state_dir.join(RECORDS).join(format!("{n}.args")).exists())
                .map(|n| match self.pid_of(n) {
                    Some(pid) => Machine { node: n.clone(), state: MachineState::Running, id: format!("pid {pid}") },
                    None => Machine { node: n.clone(), state: MachineState::Stopped, id: String::new() },
                })
                .collect())
        })
    }

    fn act<'a>(
        &'a self,
        kind: RepairKind,
        targets: &'a [Target],
        _waiting: &'a serde_json::Value,
    ) -> BoxFuture<'a, Vec<Result<String, String>>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for t in targets {
                out.push(self.act_one(kind, &t.node, &t.token).await);
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_others_may_write_is_refused() {
        let dir = std::env::temp_dir().join(format!("drover-local-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let args: Vec<String> = ["agent", "--name", "node1"].map(String::from).to_vec();
        Local::record(&dir, "node1", &args).unwrap();
        let local = Local::new(dir.clone(), PathBuf::from("/bin/true"));
        assert_eq!(local.args_of("node1").unwrap(), args);
        assert!(local.args_of("node2").is_err(), "no record");
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(RECORDS).join("node1.args");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = local.args_of("node1").unwrap_err();
        assert!(e.contains("refused"), "{e}");
        // A record that starts something else, or another node, is refused.
        Local::record(&dir, "node1", &["controller".to_string()]).unwrap();
        assert!(local.args_of("node1").unwrap_err().contains("does not start its agent"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
