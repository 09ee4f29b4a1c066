//! The fence watchdog: one small process per agent state directory, apart
//! from the agent, that kills the node's steps once the agent has shown no
//! sign of life (dead, or hung like a SIGSTOP'd process) for `fence_after`.
//!
//! Why: when an agent goes silent the controller waits `node_timeout`, then
//! requeues its jobs elsewhere. A hung agent cannot stop its steps, so
//! without a fence the old attempt and the new one would run at the same
//! time. The watchdog acts first (`fence_after` < `node_timeout`), so a
//! requeued job never runs twice at once. An agent that only lost the
//! controller keeps its steps: it stays alive and says so; Slurm keeps jobs
//! running through a controller outage too, and so does Drover.
//!
//! An agent restarted within `fence_after` (a crash, an upgrade) finds its
//! steps running and re-attaches to them.

use crate::batch;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The agent writes the time here (ms since the epoch) while it is alive.
pub fn alive_file(state_dir: &Path) -> PathBuf {
    state_dir.join("alive")
}

fn lock_file(state_dir: &Path) -> PathBuf {
    state_dir.join("watchdog.lock")
}

/// Where the running watchdog's pid is (for `drover down`).
pub fn pid_file(state_dir: &Path) -> PathBuf {
    state_dir.join("watchdog.pid")
}

use drover_auth::now_ms as epoch_ms;

/// Records that the agent is alive now. Written aside and renamed into
/// place: the watchdog must never read a half-written file.
pub fn touch_alive(state_dir: &Path) {
    let tmp = state_dir.join("alive.tmp");
    if std::fs::write(&tmp, format!("{}\n", epoch_ms())).is_ok() {
        let _ = std::fs::rename(&tmp, alive_file(state_dir));
    }
}

/// Takes the state directory's watchdog lock without waiting; `None` if a
/// watchdog holds it.
fn try_lock(state_dir: &Path) -> Option<File> {
    let file = File::options().create(true).truncate(false).write(true).open(lock_file(state_dir)).ok()?;
    // SAFETY: flock on a descriptor we own.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (r == 0).then_some(file)
}

/// Starts a watchdog for `state_dir` unless one runs: `exe agent-watchdog`,
/// in its own session, so that it outlives the agent.
pub fn ensure_running(exe: &Path, state_dir: &Path, fence_after: Duration) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    match try_lock(state_dir) {
        // Free: nobody watches. Let go, so the new watchdog can take it.
        Some(lock) => drop(lock),
        None => return Ok(()),
    }
    let log = File::options()
        .create(true)
        .append(true)
        .open(state_dir.join("watchdog.log"))
        .map_err(|e| format!("cannot open {}: {e}", state_dir.join("watchdog.log").display()))?;
    std::process::Command::new(exe)
        .arg("agent-watchdog")
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--fence-after-ms")
        .arg(fence_after.as_millis().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the fence watchdog: {e}"))?;
    Ok(())
}

fn last_alive(state_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(alive_file(state_dir)).ok()?.trim().parse().ok()
}

/// The running steps in `spool_dir` whose name `skip` does not exclude:
/// (job dir name, leader pid).
fn live_steps(spool_dir: &Path, skip: impl Fn(&str) -> bool) -> Vec<(String, i32)> {
    let Ok(dir) = std::fs::read_dir(spool_dir) else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            // A directory a user could write is no proof of a pid.
            if skip(&name) || !crate::spool::is_agents_own(&e.path()) {
                return None;
            }
            let pid: i32 = std::fs::read_to_string(e.path().join("pid")).ok()?.trim().parse().ok()?;
            let running = batch::step_process_of(&e.path(), pid)? == batch::StepProcess::Running;
            running.then_some((name, pid))
        })
        .collect()
}

/// Keeps a pidfd on every running step, so that the exit status of one
/// that ends while no agent runs is not lost: the kernel keeps it for
/// holders of a pidfd (Linux 6.15+), and this writes it to the step's
/// `exit` file for the next agent.
#[derive(Default)]
pub struct ExitRecorder {
    held: std::collections::HashMap<String, (i32, std::os::fd::OwnedFd)>,
}

impl ExitRecorder {
    /// Takes pidfds on new steps; records the ends of those that ended.
    pub fn scan(&mut self, spool: &Path) {
        // Only steps not held yet are looked up in /proc.
        for (name, pid) in live_steps(spool, |name| self.held.contains_key(name)) {
            if let Some(fd) = crate::spawn::pidfd_open(pid) {
                self.held.insert(name, (pid, fd));
            }
        }
        self.held.retain(|name, (pid, fd)| {
            let dir = spool.join(name);
            if !dir.is_dir() {
                return false; // reported and cleaned up by its agent
            }
            let status = crate::spawn::exit_status(fd.as_raw_fd()).or_else(|| crate::spawn::zombie_status(*pid));
            match status {
                Some(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    let _ = std::fs::write(dir.join("exit"), format!("{}\n", status.into_raw()));
                    false
                }
                None => true,
            }
        });
    }
}

/// The watchdog's life: hold the lock, check the agent's sign of life four
/// times a second, fence when it is too old. Ends when the agent is gone
/// and no step is left to guard (a new agent starts a new watchdog).
pub fn run(state_dir: &Path, fence_after: Duration) -> Result<(), String> {
    let Some(_lock) = try_lock(state_dir) else {
        return Ok(()); // another watchdog won the race
    };
    let _ = std::fs::write(pid_file(state_dir), format!("{}\n", std::process::id()));
    let spool = state_dir.join("spool");
    // A new watchdog gives the agent a full period from its own start.
    let mut seen = epoch_ms();
    eprintln!(
        "drover watchdog: watching {} (fence after {:?} without a sign of life)",
        state_dir.display(),
        fence_after
    );
    let mut exits = ExitRecorder::default();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        exits.scan(&spool);
        if let Some(t) = last_alive(state_dir) {
            seen = seen.max(t);
        }
        let silent = Duration::from_millis(epoch_ms().saturating_sub(seen));
        if silent <= fence_after {
            continue;
        }
        let steps = live_steps(&spool, |_| false);
        for (name, pid) in &steps {
            // Tells the agent (this one resumed, or a new one) that the step
            // died for its node's sake, not its own: the job is requeued.
            let _ = std::fs::write(spool.join(name).join("fenced"), "");
            // SAFETY: kill has no memory-safety preconditions; the step
            // leads its own process group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            eprintln!(
                "drover watchdog: fenced {name} (process group {pid}): the agent has been silent for {:.1} s",
                silent.as_secs_f64()
            );
        }
        if steps.is_empty() && silent > fence_after * 2 {
            eprintln!("drover watchdog: the agent is gone and no step is left; exiting");
            let _ = std::fs::remove_file(pid_file(state_dir));
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sign_of_life_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("drover-watchdog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let reader = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut torn = 0;
                for _ in 0..10_000 {
                    if std::fs::metadata(alive_file(&dir)).is_ok() && last_alive(&dir).is_none() {
                        torn += 1;
                    }
                }
                torn
            })
        };
        for _ in 0..10_000 {
            touch_alive(&dir);
        }
        assert_eq!(reader.join().unwrap(), 0, "a reader saw a half-written file");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
