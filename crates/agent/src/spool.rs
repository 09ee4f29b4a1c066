//! Where an agent keeps its steps' scripts, journals and pid files.
//!
//! They must outlive the agent (a restarted agent re-attaches to its steps)
//! but not the host (a reboot ends the steps too), so they belong in memory.
//! Each step makes and removes a directory and three small files; on a disk
//! filesystem such as ext4 that churn of inodes cost about 30% of the
//! agent's CPU while spawning short jobs (bench/README.md). So the spool
//! path under the state directory is a symlink into a tmpfs (`/run` or
//! `/dev/shm`), made again after a reboot; a spool that is already a plain
//! directory (a site's choice, or no tmpfs here) is used as it is.
//!
//! Scripts are run from the spool, so a tmpfs mounted `noexec` (as
//! `/dev/shm` is in containers and on hardened hosts) is passed over; when
//! the spool that results cannot run programs either, the agent runs each
//! script through the interpreter its `#!` line names ([`allows_exec`]).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// tmpfs's `statfs` magic number.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Makes `spool` ready for steps and returns the directory it names.
pub fn prepare(spool: &Path) -> Result<PathBuf, String> {
    match fs::symlink_metadata(spool) {
        Ok(m) if m.file_type().is_symlink() => {
            let target =
                fs::read_link(spool).map_err(|e| format!("cannot read the spool link {}: {e}", spool.display()))?;
            ensure_private_dir(&target)?;
            Ok(target)
        }
        Ok(m) if m.is_dir() => Ok(spool.to_path_buf()),
        Ok(_) => Err(format!("spool {} exists and is not a directory; remove it", spool.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = spool.parent().unwrap_or(Path::new("."));
            fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            if let Some(target) = volatile_dir_for(spool) {
                ensure_private_dir(&target)?;
                if std::os::unix::fs::symlink(&target, spool).is_ok() {
                    return Ok(target);
                }
            }
            fs::create_dir_all(spool).map_err(|e| format!("cannot create spool directory {}: {e}", spool.display()))?;
            Ok(spool.to_path_buf())
        }
        Err(e) => Err(format!("cannot look at spool {}: {e}", spool.display())),
    }
}

/// Makes a step's directory in the spool: the agent's, mode 0711, so the
/// job's user can reach the script in it but not list, add or replace
/// anything. One left by a killed agent is taken over only if it is the
/// agent's own; anything else there is removed first.
pub fn make_step_dir(dir: &Path) -> io::Result<()> {
    if fs::symlink_metadata(dir).is_ok() && !is_agents_own(dir) {
        match fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(dir)?,
            _ => fs::remove_file(dir)?,
        }
    }
    if let Some(spool) = dir.parent() {
        fs::create_dir_all(spool)?;
    }
    match fs::DirBuilder::new().mode(0o711).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o711))
}

/// Whether `path` is a directory (not a link) that this process's user
/// owns and nobody else may write: only then are the files in it the
/// agent's word.
pub fn is_agents_own(path: &Path) -> bool {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o022 == 0)
}

/// Removes an empty in-memory spool and the link to it (after `drover down`);
/// a spool that still holds steps stays.
pub fn remove_if_empty(spool: &Path) {
    if let Ok(target) = fs::read_link(spool) {
        if fs::remove_dir(&target).is_ok() {
            let _ = fs::remove_file(spool);
        }
    }
}

/// A directory on a tmpfs for `spool`, named after this user and the
/// spool's absolute path so that agents of several clusters on one host do
/// not share one.
fn volatile_dir_for(spool: &Path) -> Option<PathBuf> {
    let hash = path_hash(&std::path::absolute(spool).ok()?);
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    ["/run", "/dev/shm"]
        .iter()
        .map(Path::new)
        .find(|base| is_writable_tmpfs(base))
        .map(|base| base.join(format!("drover-spool-{uid}-{hash:016x}")))
}

/// FNV-1a of a path: stable across runs and versions, unlike std's hasher,
/// so names made from it are found again by the next agent.
pub(crate) fn path_hash(path: &Path) -> u64 {
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

// `f_type`'s integer type differs between architectures.
#[allow(clippy::useless_conversion)]
fn is_writable_tmpfs(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs only writes into the zeroed struct we own.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path, fs a valid out pointer.
    let ok = unsafe { libc::statfs(c.as_ptr(), &mut fs) } == 0;
    // SAFETY: access has no memory-safety preconditions beyond a valid path.
    ok && i64::from(fs.f_type) == TMPFS_MAGIC
        && unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0
        && allows_exec(dir)
}

/// Whether programs may be executed from files in `dir` (its file system
/// is not mounted `noexec`).
pub fn allows_exec(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statvfs only writes into the zeroed struct we own.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path, vfs a valid out pointer.
    let ok = unsafe { libc::statvfs(c.as_ptr(), &mut vfs) } == 0;
    ok && vfs.f_flag & libc::ST_NOEXEC == 0
}

/// Creates `dir` (mode 0755: job users must reach their scripts) or checks
/// that the one there is ours: in a world-writable place such as /dev/shm,
/// somebody else could have made it first.
fn ensure_private_dir(dir: &Path) -> Result<(), String> {
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {
            // The umask may have taken bits away; set exactly what we need.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("cannot set the mode of spool {}: {e}", dir.display()))?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create spool directory {}: {e}", dir.display())),
    }
    let m = fs::symlink_metadata(dir).map_err(|e| format!("cannot look at spool {}: {e}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if !m.is_dir() || m.uid() != uid || m.mode() & 0o022 != 0 {
        return Err(format!(
            "refusing spool {}: it is not a directory owned by uid {uid} and writable only by it; remove it and \
             start the agent again",
            dir.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("drover-spool-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_new_spool_lives_in_memory_and_comes_back_after_a_reboot() {
        let state = scratch("new");
        let spool = state.join("spool");
        let target = prepare(&spool).unwrap();
        if target == spool {
            eprintln!("skipped: no writable tmpfs at /run or /dev/shm on this host");
            return;
        }
        assert!(is_writable_tmpfs(target.parent().unwrap()));
        assert!(fs::symlink_metadata(&spool).unwrap().file_type().is_symlink());
        assert_eq!(fs::metadata(&target).unwrap().mode() & 0o777, 0o755);
        // A reboot empties the tmpfs: the link dangles until the next start.
        fs::remove_dir(&target).unwrap();
        assert_eq!(prepare(&spool).unwrap(), target);
        assert!(target.is_dir());
        // Preparing again changes nothing.
        assert_eq!(prepare(&spool).unwrap(), target);
        remove_if_empty(&spool);
        assert!(!target.exists() && fs::symlink_metadata(&spool).is_err());
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn a_spool_somebody_else_could_write_is_refused() {
        let state = scratch("foreign");
        let target = state.join("elsewhere");
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o777)).unwrap();
        let spool = state.join("spool");
        std::os::unix::fs::symlink(&target, &spool).unwrap();
        let err = prepare(&spool).unwrap_err();
        assert!(err.contains("refusing spool") && err.contains("elsewhere"), "{err}");
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn a_plain_directory_is_kept() {
        let state = scratch("plain");
        let spool = state.join("spool");
        fs::create_dir(&spool).unwrap();
        assert_eq!(prepare(&spool).unwrap(), spool);
        assert!(fs::symlink_metadata(&spool).unwrap().is_dir());
        fs::write(state.join("file"), "").unwrap();
        assert!(prepare(&state.join("file")).unwrap_err().contains("not a directory"));
        fs::remove_dir_all(&state).unwrap();
    }
}
