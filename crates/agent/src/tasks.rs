//! The tasks of job steps (`srun`): run on a grant the controller sealed,
//! their output streamed back to `srun` as they write it, killed when `srun`
//! hangs up or the job is killed.
//!
//! `srun` asks the controller for a step and gets one grant per node: which
//! ranks run there, as which user, with which Slurm variables. It brings each
//! grant to its node's agent (`POST /api/v1/steps`), which checks the seal,
//! starts the ranks in sessions of their own as the job's user — inside the
//! job's memory cgroup where the node has one — and answers with a stream of
//! [`TaskFrame`]s until every rank has ended. Once the node's ranks of a
//! step are gone, what they used (CPU time, the largest peak memory) goes
//! to the controller with the agent's other reports: from the agent, not
//! from `srun`, which the user could make say anything.

use crate::batch::LauncherConfig;
use crate::spawn::{self, Used};
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use drover_core::launch::StepGrant;
use drover_proto::{LaunchTasks, Report, TaskFrame};
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// One launch's processes: the session leader of each rank, while it runs.
type Group = Arc<Mutex<Vec<Option<i32>>>>;

/// The step tasks this node runs, by job and attempt.
pub struct Tasks {
    key: Arc<Vec<u8>>,
    node: String,
    launcher: LauncherConfig,
    /// Where what a step's ranks used goes (the agent's reports to the
    /// controller).
    reports: Option<mpsc::UnboundedSender<Report>>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    running: HashMap<(u64, u32), Vec<Group>>,
    /// Grants used already (job, attempt, step): each runs once.
    used: HashSet<(u64, u32, u32)>,
    /// Jobs killed here lately: a grant that arrives after the kill runs nothing.
    killed: VecDeque<(u64, u32)>,
}

const KILLED_KEPT: usize = 4096;

impl Tasks {
    pub fn new(
        key: Vec<u8>,
        node: String,
        launcher: LauncherConfig,
        reports: Option<mpsc::UnboundedSender<Report>>,
    ) -> Arc<Tasks> {
        Arc::new(Tasks { key: Arc::new(key), node, launcher, reports, inner: Mutex::default() })
    }

    pub fn routes(self: Arc<Self>) -> Router {
        Router::new().route(
            "/api/v1/steps",
            post(move |Json(req): Json<LaunchTasks>| {
                let tasks = self.clone();
                async move { tasks.launch(req).await }
            }),
        )
    }

    /// Kills every task of `job`'s attempt here: SIGTERM, then SIGKILL
    /// after the grace period (the job is being killed, or has ended).
    pub fn kill_job(&self, job: u64, attempt: u32) {
        let groups = {
            let mut inner = self.inner.lock().expect("tasks lock");
            if !inner.killed.contains(&(job, attempt)) {
                inner.killed.push_back((job, attempt));
                if inner.killed.len() > KILLED_KEPT {
                    inner.killed.pop_front();
                }
            }
            inner.running.remove(&(job, attempt)).unwrap_or_default()
        };
        if groups.is_empty() {
            return;
        }
        signal_groups(&groups, libc::SIGTERM);
        let grace = self.launcher.kill_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            signal_groups(&groups, libc::SIGKILL);
        });
    }

    fn check(&self, req: &LaunchTasks) -> Result<StepGrant, (StatusCode, String)> {
        drover_auth::check_seal(&self.key, &req.grant, &req.seal)
            .map_err(|e| (StatusCode::UNAUTHORIZED, format!("step grant refused: {e}")))?;
        let g: StepGrant = serde_json::from_str(&req.grant)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("unreadable step grant: {e}")))?;
        if g.node_name != self.node {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("this grant is for node {}, this is {}", g.node_name, self.node),
            ));
        }
        if drover_auth::now_ms() > g.expires_ms {
            return Err((StatusCode::UNAUTHORIZED, "step grant expired; clocks may disagree".into()));
        }
        if req.argv.is_empty() || req.argv[0].is_empty() {
            return Err((StatusCode::BAD_REQUEST, "no command to run".into()));
        }
        let mut inner = self.inner.lock().expect("tasks lock");
        if inner.killed.contains(&(g.job_id, g.attempt)) {
            return Err((StatusCode::CONFLICT, format!("job {} has ended on {}", g.display_id, self.node)));
        }
        if !inner.used.insert((g.job_id, g.attempt, g.step)) {
            return Err((StatusCode::CONFLICT, format!("step {}.{} already ran here", g.display_id, g.step)));
        }
        Ok(g)
    }

    async fn launch(self: Arc<Self>, req: LaunchTasks) -> Response {
        let g = match self.check(&req) {
            Ok(g) => g,
            Err((code, message)) => return (code, message).into_response(),
        };
        // Bounded: a rank that writes faster than srun reads waits for it.
        let (tx, rx) = mpsc::channel::<TaskFrame>(64);
        let group: Group = Arc::new(Mutex::new(vec![None; g.tasks as usize]));
        self.inner.lock().expect("tasks lock").running.entry((g.job_id, g.attempt)).or_default().push(group.clone());
        let cgroup = self.job_cgroup(g.job_id, g.attempt);
        // Starting a rank blocks its thread until the rank execs (and a
        // cgroup-v1 attach can take milliseconds): off the runtime's workers.
        let ranks = g.tasks;
        let started = {
            let (g, req) = (g.clone(), req.clone());
            tokio::task::spawn_blocking(move || {
                (0..g.tasks)
                    .map(|local| {
                        let mut env: Vec<(String, String)> = req.env.clone();
                        for (k, v) in g.env.iter().cloned().chain(g.task_env(local)) {
                            env.retain(|(key, _)| *key != k);
                            env.push((k, v));
                        }
                        spawn_task(&g, &req, env, cgroup.as_deref())
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_else(|e| (0..ranks).map(|_| Err(std::io::Error::other(e.to_string()))).collect())
        };
        let tally = Arc::new(Tally {
            left: Mutex::new((g.tasks, None)),
            report: self.reports.clone().map(|r| (r, self.node.clone(), g.job_id, g.attempt, g.step)),
        });
        for (local, started) in (0..g.tasks).zip(started) {
            let rank = g.first_rank + local;
            let followed = started.and_then(|(spawned, out, err)| {
                let pid = spawned.pid;
                let child = spawn::Child::new(spawned);
                match (pipe_reader(out), pipe_reader(err)) {
                    (Ok(out), Ok(err)) => Ok((child, out, err)),
                    (Err(e), _) | (_, Err(e)) => {
                        // SAFETY: kill has no memory-safety preconditions.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        let mut child = child;
                        tokio::spawn(async move { child.wait().await });
                        Err(e)
                    }
                }
            });
            match followed {
                Ok((child, out, err)) => {
                    group.lock().expect("group lock")[local as usize] = Some(child.pid);
                    let follow = follow(child, (out, err), rank, local as usize, group.clone(), tx.clone());
                    let tally = tally.clone();
                    tokio::spawn(async move { tally.done(follow.await) });
                }
                Err(e) => {
                    tally.done(None);
                    let message = format!("{}: cannot run {}: {e}", self.node, req.argv[0]);
                    tracing::warn!(job_id = g.job_id, step = g.step, "{message}");
                    let code = if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
                    let tx = tx.clone();
                    // Not awaited here: the stream is not being read yet.
                    tokio::spawn(async move {
                        let _ = tx.send(TaskFrame::Stderr { rank, data: format!("{message}\n").into_bytes() }).await;
                        let _ = tx.send(TaskFrame::Exit { rank, code, signal: 0 }).await;
                    });
                }
            }
        }
        drop(tx);
        tracing::info!(job_id = g.job_id, step = g.step, tasks = g.tasks, "started step {}.{}", g.display_id, g.step);
        // Dropped with the response body: when srun hangs up, its tasks go.
        let guard =
            HangUp { group, tasks: self.clone(), key: (g.job_id, g.attempt), step: g.step, every_rank_ended: false };
        let stream = futures_util::stream::unfold((rx, guard), |(mut rx, mut guard)| async move {
            // A ping when the ranks are quiet: writing to a client that is
            // gone fails, which drops the stream and with it the ranks.
            let frame = match tokio::time::timeout(PING_EVERY, rx.recv()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    guard.every_rank_ended = true;
                    drop(guard);
                    return None;
                }
                Err(_) => TaskFrame::Ping,
            };
            Some((Ok::<_, std::convert::Infallible>(Bytes::from(frame.encode())), (rx, guard)))
        });
        Response::builder()
            .header("content-type", "application/octet-stream")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
    }

    /// The cgroup of the job's batch step, when this node runs it.
    fn job_cgroup(&self, job: u64, attempt: u32) -> Option<CString> {
        let (hierarchy, _) = crate::cgroup::detect(self.launcher.cgroup_root.as_deref()?)?;
        let procs = hierarchy.join("drover").join(self.launcher.cgroup_name(job, attempt)).join("cgroup.procs");
        procs.exists().then(|| CString::new(procs.display().to_string()).ok()).flatten()
    }

    fn forget(&self, key: (u64, u32), group: &Group) {
        let mut inner = self.inner.lock().expect("tasks lock");
        if let Some(groups) = inner.running.get_mut(&key) {
            groups.retain(|g| !Arc::ptr_eq(g, group));
            if groups.is_empty() {
                inner.running.remove(&key);
            }
        }
    }
}

/// How often a step's stream says something while its ranks are quiet.
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Kills a launch's remaining ranks when its response stream is dropped
/// (`srun` hung up or finished).
struct HangUp {
    group: Group,
    tasks: Arc<Tasks>,
    key: (u64, u32),
    step: u32,
    /// The stream ended because every rank did; otherwise srun hung up.
    every_rank_ended: bool,
}

impl Drop for HangUp {
    fn drop(&mut self) {
        signal_groups(std::slice::from_ref(&self.group), libc::SIGKILL);
        self.tasks.forget(self.key, &self.group);
        if self.every_rank_ended {
            return;
        }
        // srun is gone before its ranks: nobody else will say the step
        // ended, so the agent does.
        tracing::info!(job_id = self.key.0, step = self.step, "srun hung up; its tasks here were killed");
        if let Some(reports) = &self.tasks.reports {
            let _ = reports.send(Report {
                node: self.tasks.node.clone(),
                job: self.key.0,
                attempt: self.key.1,
                finished: None,
                max_rss_kb: None,
                cpu: None,
                step: Some(self.step),
                abandoned: true,
                failure: None,
            });
        }
    }
}

fn signal_groups(groups: &[Group], sig: i32) {
    for g in groups {
        for pgid in g.lock().expect("group lock").iter().flatten() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(-pgid, sig) };
        }
    }
}

/// Counts a launch's ranks down; the last one out reports what they used.
struct Tally {
    /// Ranks still running, and what the ended ones used together.
    left: Mutex<(u32, Option<Used>)>,
    /// (reports, node, job, attempt, step).
    report: Option<(mpsc::UnboundedSender<Report>, String, u64, u32, u32)>,
}

impl Tally {
    fn done(&self, used: Option<Used>) {
        let mut left = self.left.lock().expect("tally lock");
        left.0 -= 1;
        if let Some(u) = used {
            let sum = left.1.get_or_insert_with(Used::default);
            sum.user_ms += u.user_ms;
            sum.system_ms += u.system_ms;
            sum.max_rss_kb = sum.max_rss_kb.max(u.max_rss_kb);
        }
        if left.0 > 0 {
            return;
        }
        let (Some(sum), Some((reports, node, job, attempt, step))) = (left.1, &self.report) else { return };
        let _ = reports.send(Report {
            node: node.clone(),
            job: *job,
            attempt: *attempt,
            finished: None,
            max_rss_kb: Some(sum.max_rss_kb),
            cpu: Some(drover_core::job::CpuTime { user_ms: sum.user_ms, system_ms: sum.system_ms }),
            step: Some(*step),
            abandoned: false,
            failure: None,
        });
    }
}

/// A pipe's parent ends: (read, write), both close-on-exec.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn pipe_reader(fd: OwnedFd) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
}

/// `program` as `execvp` finds it: a name without a slash is looked up in
/// the rank's own `PATH`.
fn find_program(program: &str, env: &[(String, String)]) -> std::io::Result<CString> {
    use std::os::unix::fs::PermissionsExt;
    let found = if program.contains('/') {
        Some(std::path::PathBuf::from(program))
    } else {
        let path = env.iter().find(|(k, _)| k == "PATH").map_or("/usr/local/bin:/usr/bin:/bin", |(_, v)| v.as_str());
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| std::path::Path::new(d).join(program))
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
    };
    let found = found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "command not found"))?;
    CString::new(found.into_os_string().into_encoded_bytes())
        .map_err(|_| std::io::Error::other("NUL byte in the command"))
}

/// Starts one rank: its own session, the job's user, the job's cgroup, its
/// output into two pipes. Blocks until the rank execs.
fn spawn_task(
    g: &StepGrant,
    req: &LaunchTasks,
    env: Vec<(String, String)>,
    cgroup: Option<&std::ffi::CStr>,
) -> std::io::Result<(spawn::Spawned, OwnedFd, OwnedFd)> {
    let nul = |_| std::io::Error::other("NUL byte in the command or its environment");
    // SAFETY: geteuid has no preconditions.
    let switch_user = unsafe { libc::geteuid() } == 0 && g.uid != 0;
    let groups = if switch_user { crate::child::groups_of(g.uid, g.gid) } else { Vec::new() };
    let cwd = CString::new(req.cwd.as_str()).map_err(|_| std::io::Error::other("NUL byte in the directory"))?;
    let program = find_program(&req.argv[0], &env)?;
    let argv = req.argv.iter().map(|a| CString::new(a.as_str())).collect::<Result<Vec<_>, _>>().map_err(nul)?;
    let env = env.iter().map(|(k, v)| CString::new(format!("{k}={v}"))).collect::<Result<Vec<_>, _>>().map_err(nul)?;
    let devnull = c"/dev/null";
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (out, err) = (out_w.as_raw_fd(), err_w.as_raw_fd());
    let (uid, gid) = (g.uid, g.gid);
    let umask = g.umask.unwrap_or(crate::batch::DEFAULT_UMASK) & 0o777;
    let setup = move || -> std::io::Result<()> {
        let check = |r: libc::c_int| if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) };
        // SAFETY: system calls on descriptors and strings prepared above.
        unsafe {
            check(libc::setsid())?;
            libc::umask(umask);
            let null = libc::open(devnull.as_ptr(), libc::O_RDONLY);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::close(null);
            }
            check(libc::dup2(out, 1))?;
            check(libc::dup2(err, 2))?;
            if let Some(procs) = cgroup {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
            }
            if switch_user {
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
            // As the user: a directory they cannot enter is an error.
            check(libc::chdir(cwd.as_ptr()))
        }
    };
    // SAFETY: the setup only makes system calls on data prepared above.
    let spawned = unsafe { spawn::spawn(&program, &argv, &env, &setup) }?;
    // The rank holds the write ends now; ours must close for EOF to come.
    drop((out_w, err_w));
    Ok((spawned, out_r, err_r))
}

/// Streams one rank's output, then how it ended; what it used, once reaped.
async fn follow(
    mut child: spawn::Child,
    (stdout, stderr): (tokio::net::unix::pipe::Receiver, tokio::net::unix::pipe::Receiver),
    rank: u32,
    local: usize,
    group: Group,
    tx: mpsc::Sender<TaskFrame>,
) -> Option<Used> {
    let out = tokio::spawn(pump(stdout, rank, false, tx.clone()));
    let err = tokio::spawn(pump(stderr, rank, true, tx.clone()));
    let status = child.wait().await;
    // The rank is gone; anything it left in its session goes with it (and
    // lets go of the pipes).
    if let Some(pgid) = group.lock().expect("group lock")[local].take() {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    for pump in [out, err] {
        let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
    }
    let (code, signal) = match status {
        Ok(s) => (s.code().unwrap_or(0), s.signal().unwrap_or(0)),
        Err(_) => (255, 0),
    };
    let _ = tx.send(TaskFrame::Exit { rank, code, signal }).await;
    child.used()
}

async fn pump(mut from: impl tokio::io::AsyncRead + Unpin, rank: u32, stderr: bool, tx: mpsc::Sender<TaskFrame>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let data = buf[..n].to_vec();
                let frame = if stderr { TaskFrame::Stderr { rank, data } } else { TaskFrame::Stdout { rank, data } };
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
        }
    }
}
