//! Ready cells: a child or two already in a fresh memory cgroup, waiting
//! for a step to become.
//!
//! Moving a process into a cgroup takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace
//! period: 5–25 ms on an idle host (bench/README.md), most of the time from
//! a job's order to its first command. A cell pays that before any step
//! arrives. A step takes a cell, the cell's cgroup is renamed after the step
//! and given its limit, and the waiting child becomes the step (the rest of
//! its setup, then exec). The pool is topped up behind it.
//!
//! Cgroup v1 only: v2 cannot rename a cgroup (there, `clone3` with
//! `CLONE_INTO_CGROUP` is the way, not yet taken). Without cells, or when
//! none is left in a burst, a step joins its cgroup itself, as before.

use crate::cgroup::{self, MemoryCgroup, Version};
use crate::spawn::Waiting;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How many cells wait: one serves an idle node, a second the step after.
const CELLS: usize = 2;

/// An agent's waiting cells.
pub struct ReadyCells {
    /// `<hierarchy>/drover`.
    parent: PathBuf,
    /// Cells are `<prefix><n>`; the prefix names this agent, as job cgroups do.
    prefix: String,
    next: AtomicU64,
    cells: Mutex<Vec<Cell>>,
    /// Set once cells fail: steps join their cgroups themselves from then on.
    given_up: AtomicBool,
    topping_up: AtomicBool,
}

struct Cell {
    dir: PathBuf,
    waiting: Waiting,
}

impl std::fmt::Debug for ReadyCells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyCells").field("prefix", &self.prefix).field("waiting", &self.waiting()).finish()
    }
}

impl ReadyCells {
    /// Cells for steps under `<hierarchy>/drover`, named after `agent_tag`
    /// (unique to the agent on this host); `None` where the hierarchy is
    /// not v1. Cells a previous agent of the same tag left are removed.
    pub fn start(hierarchy: &Path, version: Version, agent_tag: &str) -> Option<Arc<ReadyCells>> {
        if version != Version::V1 {
            return None;
        }
        let parent = cgroup::drover_parent(hierarchy, version).ok()?;
        let prefix = format!("{agent_tag}-ready");
        // A killed agent's cells ended with it (their pipe closed); their
        // cgroups stay until removed.
        for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
        let cells = ReadyCells {
            parent,
            prefix,
            next: AtomicU64::new(0),
            cells: Mutex::default(),
            given_up: AtomicBool::new(false),
            topping_up: AtomicBool::new(false),
        };
        cells.top_up();
        Some(Arc::new(cells))
    }

    /// Cells waiting now.
    pub fn waiting(&self) -> usize {
        self.cells.lock().expect("cells lock").len()
    }

    fn top_up(&self) {
        while !self.given_up.load(Ordering::Relaxed) && self.waiting() < CELLS {
            match self.make() {
                Ok(cell) => self.cells.lock().expect("cells lock").push(cell),
                Err(e) => self.give_up(&format!("cannot make a ready cell: {e}")),
            }
        }
    }

    fn make(&self) -> io::Result<Cell> {
        let mut tries = 0;
        let dir = loop {
            let dir = self.parent.join(format!("{}{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed)));
            match std::fs::create_dir(&dir) {
                Ok(()) => break dir,
                // A killed agent's cell whose child had not yet gone when
                // this agent started: its number is taken.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
                Err(e) => return Err(e),
            }
        };
        // Opened here, not by path in the child: the cell may be renamed
        // for its step before the child gets to join.
        let procs = std::fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs"))?;
        let join = move || -> io::Result<()> {
            // SAFETY: a write to a descriptor the closure owns: async-signal-safe.
            if unsafe { libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: `join` only makes system calls on data it owns.
        match unsafe { Waiting::start(Box::new(join)) } {
            Ok(waiting) => Ok(Cell { dir, waiting }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// A cell for a step: its cgroup renamed `name`, limited to
    /// `limit_bytes`. `None` when no cell waits. The pool is topped up
    /// behind it, off the caller's path.
    pub fn take(self: &Arc<Self>, name: &str, limit_bytes: u64) -> Option<(MemoryCgroup, Waiting)> {
        let cell = self.cells.lock().expect("cells lock").pop();
        if !self.topping_up.swap(true, Ordering::AcqRel) {
            let cells = self.clone();
            tokio::task::spawn_blocking(move || loop {
                cells.top_up();
                cells.topping_up.store(false, Ordering::Release);
                // A cell taken between the last count and the flag's reset
                // found the flag still set: look again.
                let short = cells.waiting() < CELLS && !cells.given_up.load(Ordering::Relaxed);
                if !short || cells.topping_up.swap(true, Ordering::AcqRel) {
                    break;
                }
            });
        }
        let Cell { dir, waiting } = cell?;
        let named = self.parent.join(name);
        if named.exists() {
            // Left over from a crash of an earlier attempt.
            let _ = std::fs::remove_dir(&named);
        }
        let memory = MemoryCgroup { dir: named, version: Version::V1 };
        match std::fs::rename(&dir, &memory.dir).and_then(|()| memory.set_limit(limit_bytes)) {
            Ok(()) => Some((memory, waiting)),
            Err(e) => {
                self.give_up(&format!("cannot name a ready cell's cgroup {}: {e}", memory.dir.display()));
                drop(waiting);
                let gone = if dir.exists() { dir } else { memory.dir };
                tokio::spawn(MemoryCgroup { dir: gone, version: Version::V1 }.remove());
                None
            }
        }
    }

    /// A cell's child was gone before its step came (killed, or it could
    /// not join its cgroup): cells are not to be relied on here.
    pub fn lost(&self) {
        self.give_up("a ready cell ended before its step came");
    }

    fn give_up(&self, why: &str) {
        if !self.given_up.swap(true, Ordering::Relaxed) {
            tracing::warn!("{why}; steps join their memory cgroups themselves from now on");
        }
    }

    /// Ends the waiting children and removes their cgroups.
    pub async fn close(&self) {
        self.given_up.store(true, Ordering::Relaxed);
        let cells = std::mem::take(&mut *self.cells.lock().expect("cells lock"));
        for Cell { dir, waiting } in cells {
            // The child reads the closed pipe's end and exits; the cgroup
            // can go once it has.
            drop(waiting);
            MemoryCgroup { dir, version: Version::V1 }.remove().await;
        }
    }
}
