//! What a step's child does between fork and exec — its session, pid file,
//! cgroup, CPUs, user and groups, umask, working directory and files —
//! prepared beforehand so that the child only makes system calls, and how a
//! failure there is named for the job's user.

use crate::batch::LaunchError;
use crate::spawn::check_os as check;
use drover_core::launch::LaunchOrder;
use std::ffi::CString;
use std::io;
use std::sync::Arc;

/// The error of a launch whose child stopped at `stage`, in words for the
/// job's user.
pub(crate) fn setup_failure(order: &LaunchOrder, stage: Stage, source: io::Error) -> LaunchError {
    let what = match stage {
        Stage::Prepare => return LaunchError::Spawn { uid: order.uid, source },
        Stage::User => format!("cannot run as uid {} gid {}", order.uid, order.gid),
        Stage::WorkDir => format!("cannot enter the working directory {}", order.work_dir),
        Stage::Stdin => format!("cannot open the input file {}", order.stdin.as_deref().unwrap_or("/dev/null")),
        Stage::Stdout => format!("cannot open the output file {}", order.stdout),
        Stage::Stderr => format!("cannot open the error file {}", order.stderr),
        Stage::Exec => "cannot run the batch script".to_string(),
    };
    LaunchError::Setup { what, source }
}

/// Everything the child does between fork and exec, prepared beforehand so
/// that the child only makes system calls (no allocation after fork).
pub(crate) struct ChildSetup {
    /// Written by the child itself before anything else: a step that runs
    /// is always findable, even if the agent dies the moment after.
    pub(crate) pid_file: CString,
    pub(crate) cgroup_procs: Option<CString>,
    pub(crate) cpus: Option<libc::cpu_set_t>,
    pub(crate) user: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    pub(crate) work_dir: CString,
    pub(crate) stdin: CString,
    pub(crate) stdout: CString,
    pub(crate) stderr: Option<CString>,
    pub(crate) out_flags: libc::c_int,
    /// The submitter's: the job's output and every file it makes get it.
    pub(crate) umask: libc::mode_t,
    /// How far the child got ([`Stage`]): written by the child, in memory
    /// it shares with us, so that a failure can be named afterwards.
    pub(crate) stage: Arc<std::sync::atomic::AtomicU8>,
}

/// The parts of a child's set-up, in order, as [`ChildSetup::stage`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Stage {
    Prepare = 0,
    User = 1,
    WorkDir = 2,
    Stdin = 3,
    Stdout = 4,
    Stderr = 5,
    Exec = 6,
}

impl Stage {
    pub(crate) fn of(n: u8) -> Stage {
        [Stage::Prepare, Stage::User, Stage::WorkDir, Stage::Stdin, Stage::Stdout, Stage::Stderr, Stage::Exec]
            .get(usize::from(n))
            .copied()
            .unwrap_or(Stage::Prepare)
    }
}

impl ChildSetup {
    /// Runs in the child after fork. Only async-signal-safe calls.
    pub(crate) unsafe fn apply(&self) -> io::Result<()> {
        let reached = |stage: Stage| self.stage.store(stage as u8, std::sync::atomic::Ordering::SeqCst);
        unsafe {
            reached(Stage::Prepare);
            check(libc::setsid())?;
            let fd = check(libc::open(
                self.pid_file.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            ))?;
            let mut digits = [0u8; 16];
            let mut n = libc::getpid() as u32;
            let mut at = digits.len() - 1;
            digits[at] = b'\n';
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            let written = libc::write(fd, digits[at..].as_ptr().cast(), digits.len() - at);
            libc::close(fd);
            if written < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(procs) = &self.cgroup_procs {
                let fd = check(libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC))?;
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(set) = &self.cpus {
                check(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set))?;
            }
            reached(Stage::User);
            if let Some((uid, gid, groups)) = &self.user {
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
                check(libc::setgid(*gid))?;
                check(libc::setuid(*uid))?;
            }
            libc::umask(self.umask);
            reached(Stage::WorkDir);
            check(libc::chdir(self.work_dir.as_ptr()))?;
            let redirect = |path: &CString, flags: libc::c_int, target: libc::c_int| -> io::Result<()> {
                let fd = check(libc::open(path.as_ptr(), flags, 0o644 as libc::c_uint))?;
                if fd != target {
                    check(libc::dup2(fd, target))?;
                    libc::close(fd);
                }
                Ok(())
            };
            reached(Stage::Stdin);
            redirect(&self.stdin, libc::O_RDONLY, 0)?;
            reached(Stage::Stdout);
            redirect(&self.stdout, self.out_flags, 1)?;
            reached(Stage::Stderr);
            match &self.stderr {
                Some(path) => redirect(path, self.out_flags, 2)?,
                None => {
                    check(libc::dup2(1, 2))?;
                }
            }
            reached(Stage::Exec);
            Ok(())
        }
    }
}

/// The groups a job of `uid` runs with, as login would set them: from this
/// host's user database for the uid, never from the order's user name (a
/// forged name would bring another account's groups). An unknown uid gets
/// its primary group alone.
pub(crate) fn groups_of(uid: u32, gid: u32) -> Vec<libc::gid_t> {
    match drover_auth::Account::of_uid(uid) {
        Some(account) => drover_auth::account::group_list(&account.name, gid),
        None => vec![gid],
    }
}
