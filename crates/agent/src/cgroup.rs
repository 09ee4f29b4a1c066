//! Per-job memory containment: a cgroup with a memory limit, so the kernel's
//! OOM killer stops a job that outgrows its allocation and records that it
//! did. cgroup v2 (`memory.max`) where the host has it, v1
//! (`memory.limit_in_bytes`) on hybrid hosts; none when neither is writable,
//! in which case the launcher falls back to sampling RSS.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A job's memory cgroup.
#[derive(Debug)]
pub struct MemoryCgroup {
    pub dir: PathBuf,
    pub version: Version,
}

/// Finds a writable memory hierarchy: v2 if the memory controller is enabled
/// there, else v1.
pub fn detect(root: &Path) -> Option<(PathBuf, Version)> {
    let v2_controllers = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    if v2_controllers.split_whitespace().any(|c| c == "memory") {
        return Some((root.to_path_buf(), Version::V2));
    }
    let v1 = root.join("memory");
    if v1.join("memory.limit_in_bytes").exists() {
        return Some((v1, Version::V1));
    }
    None
}

/// `<hierarchy>/drover`, where every agent's cgroups go; made on first use.
pub fn drover_parent(hierarchy: &Path, version: Version) -> io::Result<PathBuf> {
    let parent = hierarchy.join("drover");
    if !parent.exists() {
        match fs::create_dir(&parent) {
            // Another agent on this host was first.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(parent),
            other => other?,
        }
        if version == Version::V2 {
            // Children of `drover` may only limit memory if the parent
            // delegates the controller.
            fs::write(parent.join("cgroup.subtree_control"), "+memory")?;
        }
    }
    Ok(parent)
}

impl MemoryCgroup {
    /// Creates `<hierarchy>/drover/<name>` with `limit_bytes`.
    pub fn create(hierarchy: &Path, version: Version, name: &str, limit_bytes: u64) -> io::Result<MemoryCgroup> {
        let parent = drover_parent(hierarchy, version)?;
        let dir = parent.join(name);
        if dir.exists() {
            // Left over from a crash of an earlier attempt: reuse it.
            let _ = fs::remove_dir(&dir);
        }
        if !dir.exists() {
            fs::create_dir(&dir)?;
        }
        let cg = MemoryCgroup { dir, version };
        cg.set_limit(limit_bytes)?;
        Ok(cg)
    }

    /// The memory limit, swap included.
    pub fn set_limit(&self, limit_bytes: u64) -> io::Result<()> {
        match self.version {
            Version::V2 => {
                fs::write(self.dir.join("memory.max"), limit_bytes.to_string())?;
                // No swap: over the limit means OOM, as Slurm sites expect.
                let _ = fs::write(self.dir.join("memory.swap.max"), "0");
            }
            Version::V1 => {
                fs::write(self.dir.join("memory.limit_in_bytes"), limit_bytes.to_string())?;
                let _ = fs::write(self.dir.join("memory.memsw.limit_in_bytes"), limit_bytes.to_string());
            }
        }
        Ok(())
    }

    /// The file a process writes `0` to in order to join.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// How many times the OOM killer acted in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// Peak memory use, bytes.
    pub fn peak_bytes(&self) -> Option<u64> {
        let file = match self.version {
            Version::V2 => "memory.peak",
            Version::V1 => "memory.max_usage_in_bytes",
        };
        fs::read_to_string(self.dir.join(file)).ok()?.trim().parse().ok()
    }

    /// Process ids still in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.procs_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Removes the cgroup once empty; retried because the kernel takes a
    /// moment to reap the last killed processes.
    pub async fn remove(self) {
        for attempt in 0..100u64 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1 + attempt.min(20))).await;
        }
    }
}
