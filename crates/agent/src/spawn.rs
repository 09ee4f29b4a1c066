//! Starting a step's process the way `posix_spawn` does: `clone` with
//! `CLONE_VM | CLONE_VFORK`, so the agent's address space is shared with the
//! child until it execs instead of copied. On the virtual machines clusters
//! often run on, `fork` of even a small multi-threaded daemon costs ~1.5 ms
//! of page-table copying and copy-on-write faults per job; this costs a
//! fraction of that (see bench/README.md). `posix_spawn` itself cannot be
//! used: a step needs a session, a cgroup, CPU affinity and a user switch
//! before exec.
//!
//! The child runs on its own stack, in the agent's memory, while the calling
//! thread is suspended; it may only make system calls on data prepared
//! beforehand (no allocation, no locks), which is what `pre_exec` promises.
//!
//! The parent learns about the child's end through a pidfd (Linux ≥ 5.3)
//! registered with tokio, or by polling `waitpid` on older kernels.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// The child's stack: setup and exec need little.
const STACK_BYTES: usize = 128 * 1024;

/// What the child reads; lives in the parent's memory, which the child shares.
struct ChildContext<'a> {
    program: &'a CString,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    pre_exec: &'a (dyn Fn() -> io::Result<()> + Sync),
    /// errno of the step that failed, 0 if the child reached exec.
    error: AtomicI32,
}

/// A process that has exec'd; [`Child::new`] makes it awaitable.
pub struct Spawned {
    pub pid: i32,
    pidfd: Option<OwnedFd>,
}

/// A started process, reaped by [`Child::wait`].
pub struct Child {
    pub pid: i32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    used: Option<Used>,
}

/// What a reaped process and the children it waited for used, as the
/// kernel counted it (`wait4`'s rusage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Used {
    pub user_ms: u64,
    pub system_ms: u64,
    /// The largest resident set of any one of those processes.
    pub max_rss_kb: u64,
}

impl Used {
    fn of(r: &libc::rusage) -> Used {
        let ms = |t: libc::timeval| t.tv_sec.max(0) as u64 * 1000 + t.tv_usec.max(0) as u64 / 1000;
        Used { user_ms: ms(r.ru_utime), system_ms: ms(r.ru_stime), max_rss_kb: r.ru_maxrss.max(0) as u64 }
    }
}

/// Runs `pre_exec` then execs `program` with exactly `argv` and `env`
/// (`KEY=VALUE`). Returns once the child has exec'd, or the error of the
/// step that failed (the child is reaped then). Blocks the calling thread
/// until the child execs: call it off the async runtime's workers.
///
/// # Safety
/// `pre_exec` runs in a child that shares the caller's memory: it must be
/// async-signal-safe and must neither allocate nor touch shared state.
pub unsafe fn spawn(
    program: &CString,
    argv: &[CString],
    env: &[CString],
    pre_exec: &(dyn Fn() -> io::Result<()> + Sync),
) -> io::Result<Spawned> {
    let argv_ptrs = pointers(argv);
    let env_ptrs = pointers(env);
    let ctx = ChildContext { program, argv: &argv_ptrs, envp: &env_ptrs, pre_exec, error: AtomicI32::new(0) };
    // SAFETY: ctx outlives the call, which returns once the child has
    // exec'd or exited.
    let (pid, pidfd) = unsafe { clone_vfork(child_main, (&ctx as *const ChildContext).cast_mut().cast())? };
    let failed = ctx.error.load(Ordering::SeqCst);
    if failed != 0 {
        reap(pid);
        return Err(io::Error::from_raw_os_error(failed));
    }
    Ok(Spawned { pid, pidfd })
}

/// `execve`'s null-terminated pointer array over `strings`.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

/// Reaps our own child, which has exited.
fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waits for our own child only.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// Runs `entry(arg)` in a child made by `clone(CLONE_VM | CLONE_VFORK)` on
/// a stack of its own; returns once the child has exec'd or exited, with
/// its pid and (Linux 5.3+) a pidfd.
///
/// # Safety
/// `entry` runs in the caller's memory and may only make system calls on
/// data that `arg` points to, which must outlive the call.
unsafe fn clone_vfork(
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> io::Result<(i32, Option<OwnedFd>)> {
    let mut stack = vec![0u8; STACK_BYTES];
    // The stack grows down; the ABI wants 16-byte alignment at its top.
    let top = (stack.as_mut_ptr() as usize + STACK_BYTES) & !15;

    // No signal handler may run in the child before it resets them: it
    // would run on the agent's data. The child unblocks after the reset.
    // SAFETY: sigset_t is plain data; the calls only fill and swap masks.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut saved: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut saved);
    }
    let mut pidfd: libc::c_int = -1;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    // SAFETY: the stack is ours and outlives the child's use of it (VFORK
    // suspends us until exec or exit); arg outlives the call likewise.
    let mut pid = unsafe { libc::clone(entry, top as *mut libc::c_void, flags, arg, &mut pidfd) };
    if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // Kernels before 5.2 know no CLONE_PIDFD.
        pidfd = -1;
        // SAFETY: as above.
        pid = unsafe { libc::clone(entry, top as *mut libc::c_void, flags & !libc::CLONE_PIDFD, arg) };
    }
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    // SAFETY: clone returned this descriptor to us, and nobody else owns it.
    Ok((pid, (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) })))
}

/// A child made before its step: it has run its `prepare` (joined a
/// cgroup, say) and waits for the step it is to become, so that the slow
/// part of starting a step is over before the step arrives. A thread of
/// the agent's stays blocked in `clone` for as long as the child waits
/// (that is what `CLONE_VFORK` does); dropping a `Waiting` ends the child.
pub struct Waiting {
    /// When it was made (ms since the epoch): the step's process is older
    /// than the step.
    pub made_ms: u64,
    /// The step goes down this pipe: a pointer to its [`ChildContext`].
    go: OwnedFd,
    ended: std::sync::mpsc::Receiver<WaitingEnd>,
}

/// What became of a waiting child, from the thread that made it.
struct WaitingEnd {
    result: io::Result<Spawned>,
    /// It read its step: an error is the step's, not the waiting's.
    handed_over: bool,
}

/// What a waiting child reads; lives on the stack of the thread that made
/// it, which is blocked until the child execs or exits.
struct WaitingContext<'a> {
    prepare: &'a (dyn Fn() -> io::Result<()> + Sync),
    go_read: libc::c_int,
    handed_over: AtomicBool,
    error: AtomicI32,
}

impl Waiting {
    /// Starts a child that runs `prepare`, then waits for its step.
    ///
    /// # Safety
    /// `prepare` runs in a child that shares the caller's memory, as
    /// `pre_exec` does for [`spawn`]: async-signal-safe, no allocation.
    pub unsafe fn start(prepare: Box<dyn Fn() -> io::Result<()> + Send + Sync>) -> io::Result<Waiting> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors, which we own from here on.
        check_os(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: as above.
        let (go_read, go) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let made_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let (tell, ended) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("drover-waiting".into()).stack_size(256 * 1024).spawn(move || {
            let ctx = WaitingContext {
                prepare: &*prepare,
                go_read: go_read.as_raw_fd(),
                handed_over: AtomicBool::new(false),
                error: AtomicI32::new(0),
            };
            // SAFETY: ctx and prepare live on until clone returns.
            let cloned = unsafe { clone_vfork(waiting_main, (&ctx as *const WaitingContext).cast_mut().cast()) };
            let result = cloned.and_then(|(pid, pidfd)| match ctx.error.load(Ordering::SeqCst) {
                0 => Ok(Spawned { pid, pidfd }),
                failed => {
                    reap(pid);
                    Err(io::Error::from_raw_os_error(failed))
                }
            });
            let _ = tell.send(WaitingEnd { result, handed_over: ctx.handed_over.load(Ordering::SeqCst) });
        })?;
        Ok(Waiting { made_ms, go, ended })
    }

    /// Makes the child the step [`spawn`] would start, and returns once it
    /// has exec'd. `Err(None)`: the child was gone before it took the step
    /// (killed, or its `prepare` failed): start the step another way.
    /// Blocks the calling thread: call it off the async runtime's workers.
    ///
    /// # Safety
    /// As for [`spawn`].
    pub unsafe fn hand_over(
        self,
        program: &CString,
        argv: &[CString],
        env: &[CString],
        pre_exec: &(dyn Fn() -> io::Result<()> + Sync),
    ) -> Result<Spawned, Option<io::Error>> {
        let argv_ptrs = pointers(argv);
        let env_ptrs = pointers(env);
        let ctx = ChildContext { program, argv: &argv_ptrs, envp: &env_ptrs, pre_exec, error: AtomicI32::new(0) };
        let address = (&ctx as *const ChildContext) as usize;
        // SAFETY: writes our own variable's bytes to our own pipe. A pipe
        // takes 8 bytes at once; a gone child is EPIPE (Rust ignores SIGPIPE).
        let written =
            unsafe { libc::write(self.go.as_raw_fd(), (&address as *const usize).cast(), size_of::<usize>()) };
        if written != size_of::<usize>() as isize {
            return Err(None);
        }
        // ctx stays alive until the child has exec'd or exited: the thread
        // reports only then.
        match self.ended.recv() {
            Ok(WaitingEnd { result: Ok(spawned), .. }) => Ok(spawned),
            Ok(WaitingEnd { result: Err(e), handed_over: true }) => Err(Some(e)),
            Ok(WaitingEnd { handed_over: false, .. }) => Err(None),
            Err(_) => Err(Some(io::Error::other("the thread that made the waiting child is gone"))),
        }
    }
}

/// A system call's result: negative is the thread's errno.
pub(crate) fn check_os(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

extern "C" fn waiting_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg is the making thread's WaitingContext, alive while we run.
    let ctx = unsafe { &*(arg as *const WaitingContext) };
    // SAFETY: only system calls on prepared data from here on; the step's
    // context is in the agent's memory, which we share, until we exec.
    unsafe {
        reset_signals();
        // Shares the agent's command line (its memory); `ps -o comm` tells
        // it apart.
        libc::prctl(libc::PR_SET_NAME, c"drover-ready".as_ptr());
        let err = match (ctx.prepare)() {
            Err(e) => e.raw_os_error().unwrap_or(libc::EINVAL),
            Ok(()) => {
                // Copies of the agent's descriptors would keep its
                // connections and files open for as long as we wait: all go
                // but the pipe (close_range is Linux 5.9+; before, they are
                // closed on exec as usual).
                let go = ctx.go_read as libc::c_uint;
                if go > 3 {
                    libc::syscall(libc::SYS_close_range, 3u32, go - 1, 0u32);
                }
                libc::syscall(libc::SYS_close_range, go + 1, u32::MAX, 0u32);
                let mut address: usize = 0;
                let n = loop {
                    let n = libc::read(ctx.go_read, (&mut address as *mut usize).cast(), size_of::<usize>());
                    if n >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                        break n;
                    }
                };
                if n == size_of::<usize>() as isize {
                    ctx.handed_over.store(true, Ordering::SeqCst);
                    exec_step(&*(address as *const ChildContext))
                } else {
                    // The agent let us go, or is gone.
                    libc::ECANCELED
                }
            }
        };
        ctx.error.store(err.max(1), Ordering::SeqCst);
        libc::_exit(127)
    }
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg is the parent's ChildContext, alive while we run.
    let ctx = unsafe { &*(arg as *const ChildContext) };
    // SAFETY: only system calls on prepared data from here on.
    unsafe {
        reset_signals();
        let err = exec_step(ctx);
        ctx.error.store(err.max(1), Ordering::SeqCst);
        libc::_exit(127)
    }
}

/// In a new child: the agent's handlers and ignored signals are not the
/// job's. Ignored signals would be inherited through exec (Rust ignores
/// SIGPIPE): everything to default (the C library keeps its own two
/// real-time signals to itself), then nothing blocked.
///
/// # Safety
/// Only in a child made by `clone`, before exec.
unsafe fn reset_signals() {
    unsafe {
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// Runs the step's `pre_exec` and execs it; returns only on failure, with
/// the errno of the step that failed.
///
/// # Safety
/// Only in a child made by `clone`; `ctx` is prepared data in shared memory.
unsafe fn exec_step(ctx: &ChildContext) -> libc::c_int {
    unsafe {
        match (ctx.pre_exec)() {
            Ok(()) => {
                let mut tries = 0;
                loop {
                    libc::execve(ctx.program.as_ptr(), ctx.argv.as_ptr(), ctx.envp.as_ptr());
                    let err = io::Error::last_os_error().raw_os_error().unwrap_or(libc::ENOEXEC);
                    // A sibling spawned while this step's script was open for
                    // writing holds that descriptor until it execs itself.
                    if err != libc::ETXTBSY || tries == 100 {
                        break err;
                    }
                    tries += 1;
                    let pause = libc::timespec { tv_sec: 0, tv_nsec: 1_000_000 };
                    libc::nanosleep(&pause, std::ptr::null_mut());
                }
            }
            Err(e) => e.raw_os_error().unwrap_or(libc::EINVAL),
        }
    }
}

impl Child {
    /// Registers the process with the runtime. Call within a tokio runtime.
    pub fn new(spawned: Spawned) -> Child {
        // Where epoll refuses pidfds, `wait` falls back to polling.
        // SAFETY: OwnedFd keeps returning the same open descriptor until dropped.
        let pidfd = spawned
            .pidfd
            .and_then(|fd| unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok());
        Child { pid: spawned.pid, pidfd, status: None, used: None }
    }

    /// What the process used, once [`Child::wait`] has reaped it.
    pub fn used(&self) -> Option<Used> {
        self.used
    }

    /// Waits for the process to end and reaps it. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        loop {
            let mut guard = match &self.pidfd {
                Some(fd) => Some(fd.readable().await?),
                None => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    None
                }
            };
            let mut status = 0;
            // SAFETY: rusage is plain data the kernel fills.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: reaps our own child only; WNOHANG never blocks.
            let r = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) };
            if r == self.pid {
                let status = ExitStatus::from_raw(status);
                self.status = Some(status);
                self.used = Some(Used::of(&usage));
                return Ok(status);
            }
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(g) = guard.as_mut() {
                g.clear_ready();
            }
        }
    }
}

/// `PIDFD_GET_INFO` (Linux 6.13+; the exit status, `PIDFD_INFO_EXIT`,
/// since 6.15): `_IOWR(0xFF, 11, struct pidfd_info)` with the 64-byte
/// first version of the struct.
const PIDFD_GET_INFO: libc::c_ulong = 0xC040_FF0B;
const PIDFD_INFO_EXIT: u64 = 1 << 3;

#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    ids: [u32; 11],
    exit_code: i32,
}

/// The wait status of the process behind `pidfd`, once it has exited and
/// been reaped (by whoever its parent is): the kernel keeps it for as long
/// as a pidfd is open. `None` before that, or on kernels without it.
pub fn exit_status(pidfd: std::os::fd::RawFd) -> Option<ExitStatus> {
    let mut info = PidfdInfo { mask: PIDFD_INFO_EXIT, ..Default::default() };
    // SAFETY: the kernel writes at most the 64 bytes the request encodes.
    let r = unsafe { libc::ioctl(pidfd, PIDFD_GET_INFO as _, &mut info as *mut PidfdInfo) };
    (r == 0 && info.mask & PIDFD_INFO_EXIT != 0).then(|| ExitStatus::from_raw(info.exit_code))
}

/// The wait status of `pid` if it is a zombie (exited, not yet reaped):
/// /proc/PID/stat field 52. Where nobody reaps orphans promptly (some
/// container inits), this is the only place the status can be read.
pub fn zombie_status(pid: i32) -> Option<ExitStatus> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    if fields.first() != Some(&"Z") {
        return None;
    }
    fields.get(49)?.parse().ok().map(ExitStatus::from_raw)
}

/// A pidfd for `pid`, if the process exists (Linux 5.3+).
pub fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    // SAFETY: a fresh descriptor nobody else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A process this agent did not start (a step launched before a restart):
/// not our child, so its end is seen through a pidfd, and its status read
/// from the pidfd too, or from the `exit` file the fence watchdog wrote.
pub struct Adopted {
    pid: i32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    exit_file: std::path::PathBuf,
}

impl Adopted {
    /// Call within a tokio runtime.
    pub fn new(pid: i32, exit_file: std::path::PathBuf) -> Adopted {
        // SAFETY: OwnedFd keeps the descriptor open for the AsyncFd's life.
        let pidfd = pidfd_open(pid)
            .and_then(|fd| unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok());
        Adopted { pid, pidfd, exit_file }
    }

    /// Waits for the process to end. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            match &self.pidfd {
                // Readable once the process has exited.
                Some(fd) => drop(fd.readable().await?),
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
            // SAFETY: signal 0 only checks that the process exists.
            let gone = unsafe { libc::kill(self.pid, 0) } < 0
                && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if self.pidfd.is_none() && !gone {
                continue;
            }
            // Its parent (init, or a subreaper) reaps it in a moment; the
            // status is ours to read after that.
            for _ in 0..50 {
                let mut raw = 0;
                // SAFETY: reaps it only if it happens to be our child.
                if unsafe { libc::waitpid(self.pid, &mut raw, libc::WNOHANG) } == self.pid {
                    return Ok(ExitStatus::from_raw(raw));
                }
                if let Some(status) = self.pidfd.as_ref().and_then(|fd| exit_status(fd.get_ref().as_raw_fd())) {
                    return Ok(status);
                }
                if let Some(status) = zombie_status(self.pid) {
                    return Ok(status);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            return Ok(read_status(&self.exit_file));
        }
    }
}

/// The wait status the fence watchdog recorded for a step that ended while
/// no agent ran; a step with none was killed outright (SIGKILL).
pub fn read_status(file: &std::path::Path) -> ExitStatus {
    let recorded = std::fs::read_to_string(file).ok().and_then(|s| s.trim().parse::<i32>().ok());
    ExitStatus::from_raw(recorded.unwrap_or(libc::SIGKILL))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    #[tokio::test]
    async fn runs_the_program_with_its_environment_and_reports_the_exit_code() {
        let argv = [c("/bin/sh"), c("-c"), c("test \"$GREETING\" = hello && exit 7")];
        let env = [c("GREETING=hello")];
        let mut child = Child::new(unsafe { spawn(&argv[0], &argv, &env, &|| Ok(())) }.unwrap());
        assert!(child.pid > 0);
        assert_eq!(child.wait().await.unwrap().code(), Some(7));
        // A second wait answers from memory: the pid is gone.
        assert_eq!(child.wait().await.unwrap().code(), Some(7));
    }

    #[tokio::test]
    async fn the_kernel_counts_what_the_process_used() {
        // Busy for a while in the shell itself, and in a child it waits for.
        let script = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sh -c 'j=0; while [ $j -lt 100000 ]; do j=$((j+1)); done'";
        let argv = [c("/bin/sh"), c("-c"), c(script)];
        let mut child = Child::new(unsafe { spawn(&argv[0], &argv, &[], &|| Ok(())) }.unwrap());
        assert_eq!(child.used(), None, "nothing before the end");
        let begun = std::time::Instant::now();
        assert!(child.wait().await.unwrap().success());
        let wall = begun.elapsed().as_millis() as u64;
        let used = child.used().unwrap();
        let cpu = used.user_ms + used.system_ms;
        // A busy loop is CPU time (some of the wall time went to others on a
        // shared host), and never more than the wall time on one core.
        assert!(cpu >= wall / 4 && cpu <= wall + 20, "{used:?} over {wall} ms");
        assert!(used.max_rss_kb > 100, "{used:?}");
    }

    #[tokio::test]
    async fn a_failing_pre_exec_step_is_the_spawn_error() {
        let argv = [c("/bin/true")];
        let r = unsafe { spawn(&argv[0], &argv, &[], &|| Err(io::Error::from_raw_os_error(libc::EACCES))) };
        assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::EACCES));
    }

    #[tokio::test]
    async fn a_missing_program_is_the_spawn_error() {
        let argv = [c("/nonexistent/drover-test")];
        let r = unsafe { spawn(&argv[0], &argv, &[], &|| Ok(())) };
        assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::ENOENT));
    }

    #[tokio::test]
    async fn the_child_starts_with_default_signal_handling() {
        // Rust ignores SIGPIPE in the agent; a job must not inherit that.
        // Signals 1-31 not ignored (32 and 33 belong to the C library).
        let argv = [c("/bin/sh"), c("-c"), c("grep -Eq '^SigIgn:[[:space:]]*[0-9a-f]*[08]0000000$' /proc/self/status")];
        let mut child = Child::new(unsafe { spawn(&argv[0], &argv, &[], &|| Ok(())) }.unwrap());
        assert_eq!(child.wait().await.unwrap().code(), Some(0));
    }

    /// A `prepare` that creates `path`: proof that it ran, and in which process.
    fn touch(path: &str) -> Box<dyn Fn() -> io::Result<()> + Send + Sync> {
        let path = c(path);
        Box::new(move || {
            // SAFETY: open/close on a prepared path.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC, 0o644) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            unsafe { libc::close(fd) };
            Ok(())
        })
    }

    fn scratch(name: &str) -> String {
        let path = std::env::temp_dir().join(format!("drover-spawn-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path.display().to_string()
    }

    #[tokio::test]
    async fn a_waiting_child_prepares_first_then_becomes_the_step() {
        let marker = scratch("prepared");
        let waiting = unsafe { Waiting::start(touch(&marker)) }.unwrap();
        // The preparation happens before any step is handed over.
        let begun = std::time::Instant::now();
        while !std::path::Path::new(&marker).exists() && begun.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(std::path::Path::new(&marker).exists(), "prepare ran while waiting");
        let argv = [c("/bin/sh"), c("-c"), c("test \"$GREETING\" = hello && exit 9")];
        let env = [c("GREETING=hello")];
        let spawned = tokio::task::spawn_blocking(move || unsafe {
            waiting.hand_over(&argv[0], &argv, &env, &|| Ok(())).map_err(|e| format!("{e:?}"))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(Child::new(spawned).wait().await.unwrap().code(), Some(9));
        let _ = std::fs::remove_file(&marker);
    }

    #[tokio::test]
    async fn a_step_that_cannot_start_in_a_waiting_child_is_the_steps_error() {
        let waiting = unsafe { Waiting::start(Box::new(|| Ok(()))) }.unwrap();
        let argv = [c("/nonexistent/drover-test")];
        let r = tokio::task::spawn_blocking(move || unsafe { waiting.hand_over(&argv[0], &argv, &[], &|| Ok(())) })
            .await
            .unwrap();
        assert_eq!(r.err().flatten().and_then(|e| e.raw_os_error()), Some(libc::ENOENT));
    }

    #[tokio::test]
    async fn a_child_that_could_not_prepare_hands_the_step_back() {
        let waiting = unsafe { Waiting::start(touch("/nonexistent/dir/marker")) }.unwrap();
        let argv = [c("/bin/true")];
        let r = tokio::task::spawn_blocking(move || unsafe { waiting.hand_over(&argv[0], &argv, &[], &|| Ok(())) })
            .await
            .unwrap();
        assert!(matches!(r, Err(None)), "{:?}", r.map(|s| s.pid));
    }

    #[test]
    fn a_dropped_waiting_child_ends() {
        // The child records its pid as it prepares.
        let pid_file = scratch("pid");
        let path = c(&pid_file);
        let write_pid = Box::new(move || {
            // SAFETY: open/write/close on prepared data.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC, 0o644);
                let pid = libc::getpid().to_le_bytes();
                libc::write(fd, pid.as_ptr().cast(), pid.len());
                libc::close(fd);
            }
            Ok(())
        });
        let waiting = unsafe { Waiting::start(write_pid) }.unwrap();
        let read_pid = || {
            std::fs::read(&pid_file).ok().filter(|b| b.len() == 4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let begun = std::time::Instant::now();
        while read_pid().is_none() && begun.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid = read_pid().expect("the child prepared");
        assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "waits");
        drop(waiting);
        // It exits and the thread that made it reaps it.
        let gone = || unsafe { libc::kill(pid, 0) } != 0;
        while !gone() && begun.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(gone(), "child {pid} still there");
        let _ = std::fs::remove_file(&pid_file);
    }

    #[tokio::test]
    async fn a_signalled_child_reports_the_signal() {
        let argv = [c("/bin/sh"), c("-c"), c("kill -TERM $$")];
        let mut child = Child::new(unsafe { spawn(&argv[0], &argv, &[], &|| Ok(())) }.unwrap());
        assert_eq!(child.wait().await.unwrap().signal(), Some(libc::SIGTERM));
    }
}
