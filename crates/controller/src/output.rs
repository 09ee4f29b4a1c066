//! Reading a job's output file for its owner, on a path the owner chose.
//!
//! The controller runs as root and the path is the user's: a link to
//! `/etc/shadow`, a FIFO that blocks `open` forever, a directory. So the
//! file is opened on a blocking thread (never the async runtime), with that
//! thread's file-system identity switched to the job's user (`setfsuid`,
//! which is per thread), with `O_NOFOLLOW` for the last name and
//! `O_NONBLOCK` so a FIFO cannot hold the thread, and it is served only if
//! it is a regular file the user owns.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::FromRawFd;
use std::os::unix::fs::MetadataExt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputError {
    NotOwned,
    NotRegular,
    Unreadable(String),
}

/// Up to `limit` bytes of `path` from `offset`, read as `uid`/`gid`, and
/// the offset after them. Blocking: call it from `spawn_blocking`.
pub fn read_as(path: &str, uid: u32, gid: u32, offset: u64, limit: u64) -> Result<(Vec<u8>, u64), OutputError> {
    let c = CString::new(path).map_err(|_| OutputError::Unreadable("the path has a NUL byte".into()))?;
    let fd = {
        let _as_user = FsIdentity::switch(uid, gid);
        // SAFETY: c is a valid NUL-terminated path; open has no other
        // preconditions.
        unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        }
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ELOOP) => OutputError::NotRegular,
            _ => OutputError::Unreadable(e.to_string()),
        });
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    let meta = file.metadata().map_err(|e| OutputError::Unreadable(e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(OutputError::NotRegular);
    }
    if meta.uid() != uid {
        return Err(OutputError::NotOwned);
    }
    let from = offset.min(meta.len());
    file.seek(SeekFrom::Start(from)).map_err(|e| OutputError::Unreadable(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).map_err(|e| OutputError::Unreadable(e.to_string()))?;
    let next = from + bytes.len() as u64;
    Ok((bytes, next))
}

/// This thread's file-system uid and gid, switched for as long as the
/// value lives (a blocking-pool thread is reused: it must come back as it
/// was). Where the process may not switch (not root) nothing changes, and
/// the owner check still holds.
struct FsIdentity {
    uid: u32,
    gid: u32,
}

impl FsIdentity {
    fn switch(uid: u32, gid: u32) -> FsIdentity {
        // SAFETY: setfsgid/setfsuid change only this thread's credentials
        // and return the previous value.
        unsafe {
            let old_gid = libc::setfsgid(gid) as u32;
            let old_uid = libc::setfsuid(uid) as u32;
            FsIdentity { uid: old_uid, gid: old_gid }
        }
    }
}

impl Drop for FsIdentity {
    fn drop(&mut self) {
        // SAFETY: as in `switch`.
        unsafe {
            libc::setfsuid(self.uid);
            libc::setfsgid(self.gid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> (u32, u32) {
        // SAFETY: no preconditions.
        unsafe { (libc::geteuid(), libc::getegid()) }
    }

    #[test]
    fn a_fifo_is_refused_at_once_and_a_link_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("drover-output-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (uid, gid) = me();
        let fifo = dir.join("fifo");
        let c = CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let begun = std::time::Instant::now();
        assert_eq!(read_as(fifo.to_str().unwrap(), uid, gid, 0, 10), Err(OutputError::NotRegular));
        assert!(begun.elapsed() < std::time::Duration::from_secs(1));
        let file = dir.join("out");
        std::fs::write(&file, "hello").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_as(link.to_str().unwrap(), uid, gid, 0, 10), Err(OutputError::NotRegular));
        assert_eq!(read_as(file.to_str().unwrap(), uid, gid, 1, 3), Ok((b"ell".to_vec(), 4)));
        assert_eq!(read_as(file.to_str().unwrap(), uid + 1, gid, 0, 3), Err(OutputError::NotOwned));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
