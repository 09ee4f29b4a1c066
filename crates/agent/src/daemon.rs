//! `drover agent`: registers the node, heartbeats, follows the controller's
//! order stream, runs steps and reports how they end.

use crate::batch::{self, BatchControl, LauncherConfig};
use crate::metrics::HostMetrics;
use drover_core::state::StepOutcome;
use drover_core::Resources;
use drover_proto::{Endpoints, ErrorBody, Order, Register, Report, Reports};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The controllers, `ADDR[,ADDR…]`: the agent follows whichever leads.
    pub controller: String,
    pub name: String,
    pub cpus: u32,
    pub memory_mb: u64,
    pub gpus: u32,
    pub features: Vec<String>,
    pub heartbeat: Duration,
    pub launcher: LauncherConfig,
    /// The cluster key: the agent signs its requests with it.
    pub key: Vec<u8>,
    /// Kill this node's steps when the agent shows no sign of life for this
    /// long (a [`crate::watchdog`] process, run as `<exe> agent-watchdog`).
    /// Must be shorter than the controller's node timeout. `None`: no fence.
    pub fence: Option<(std::path::PathBuf, Duration)>,
    /// A command run every `.1` through `sh -c`, like Slurm's
    /// HealthCheckProgram: exit 0 healthy, anything else drains the node
    /// with the command's output as the reason.
    pub health_check: Option<(String, Duration)>,
    /// Where to serve `GET /metrics` (port 0: any free port). The address
    /// is registered with the controller, which lists it for Prometheus'
    /// service discovery. `None`: no listener.
    pub listen: Option<std::net::SocketAddr>,
    /// Serve TLS on `listen` with this certificate and key (PEM).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The cluster's CA: the controllers are reached over TLS, trusting it
    /// alone.
    pub tls_ca: Option<std::path::PathBuf>,
}

/// This host's CPUs and memory.
pub fn detect_resources() -> (u32, u64) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(1024 * 1024u64);
    (cpus, mem_kb / 1024)
}

/// The host name, short form.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().split('.').next().unwrap_or("localhost").to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// How long a controller may take to answer an agent before the agent
/// counts it hung and turns to another.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

type Running = Arc<Mutex<HashMap<u64, (u32, BatchControl)>>>;

/// Which of the node's CPU slots each job holds, and the host CPUs they
/// map onto (round-robin, so several agents emulating nodes on one host
/// still bind to real CPUs).
struct Cores {
    holder: Vec<Option<u64>>,
    host: Vec<usize>,
}

impl Cores {
    fn take(&mut self, job: u64, n: u32) -> Vec<usize> {
        if self.host.is_empty() {
            return Vec::new();
        }
        let mut got = Vec::new();
        for (slot, h) in self.holder.iter_mut().enumerate() {
            if got.len() == n as usize {
                break;
            }
            if h.is_none() {
                *h = Some(job);
                got.push(self.host[slot % self.host.len()]);
            }
        }
        got.sort_unstable();
        got.dedup();
        got
    }

    fn release(&mut self, job: u64) {
        for h in self.holder.iter_mut().filter(|h| **h == Some(job)) {
            *h = None;
        }
    }
}

struct Agent {
    opts: AgentOptions,
    endpoints: Endpoints,
    http: reqwest::Client,
    running: Running,
    cores: Mutex<Cores>,
    reports: tokio::sync::mpsc::UnboundedSender<Report>,
    /// Steps whose end the controller has not acknowledged yet: still
    /// named at registration, so that the controller does not think them
    /// lost and requeue a job that has in fact finished.
    unacked: Mutex<std::collections::HashSet<(u64, u32)>>,
    metrics: Arc<HostMetrics>,
    /// Ranks of job steps (`srun`) running here.
    tasks: Arc<crate::tasks::Tasks>,
    /// The address registered: `host:port` of the metrics listener.
    advertise: String,
}

/// Runs the agent until `shutdown` resolves. Steps keep running when the
/// agent stops.
pub async fn run(mut opts: AgentOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<(), String> {
    let spool = crate::spool::prepare(&opts.launcher.spool_dir)?;
    opts.launcher.script_via_interpreter = !crate::spool::allows_exec(&spool);
    if opts.launcher.script_via_interpreter {
        tracing::warn!(
            spool = %spool.display(),
            "the spool's file system is mounted noexec: batch scripts run through the interpreter their #! line names"
        );
    } else {
        tracing::info!(spool = %spool.display(), "batch scripts run from the spool");
    }
    opts.launcher = opts.launcher.with_ready_cells();
    let cores = Cores { holder: vec![None; opts.cpus as usize], host: batch::allowed_cpus() };
    let (reports, pending) = tokio::sync::mpsc::unbounded_channel();
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        // Closed before the controller's 75 s idle limit closes it under us.
        .pool_idle_timeout(std::time::Duration::from_secs(30));
    let (http, scheme) = drover_tls::http_client(builder, opts.tls_ca.as_deref())?;
    let endpoints = Endpoints::parse_with(&opts.controller, scheme == "https")?;
    let acceptor = match &opts.tls {
        Some((cert, key)) => Some(drover_tls::TlsAcceptor::from(drover_tls::server_config(cert, key)?)),
        None => None,
    };
    // Every task the agent runs; should one die, the agent exits (steps
    // run on, and the restarted agent re-attaches to them).
    let mut supervised = drover_supervise::Supervisor::new();
    let metrics = HostMetrics::new(&opts.name);
    let tasks =
        crate::tasks::Tasks::new(opts.key.clone(), opts.name.clone(), opts.launcher.clone(), Some(reports.clone()));
    let mut advertise = hostname();
    if let Some(addr) = opts.listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                let bound = listener.local_addr().map_err(|e| e.to_string())?;
                advertise = match bound.ip().is_unspecified() {
                    true => format!("{advertise}:{}", bound.port()),
                    false => bound.to_string(),
                };
                let routes = crate::metrics::routes(metrics.clone()).merge(tasks.clone().routes());
                let listener = drover_tls::Listener { inner: listener, tls: acceptor };
                supervised.spawn_loop("listener", async move {
                    if let Err(e) = axum::serve(listener, routes).await {
                        tracing::error!(error = %e, "the agent's listener failed");
                    }
                });
                supervised.spawn_loop("cpu sampler", metrics.clone().sample_cpu());
            }
            // Worth a warning, not a node: batch jobs still run.
            Err(e) => tracing::warn!(error = %e, "no metrics and no srun steps: cannot listen on {addr}"),
        }
    }
    let agent = Arc::new(Agent {
        metrics,
        tasks,
        advertise,
        opts,
        endpoints,
        http,
        running: Arc::default(),
        cores: Mutex::new(cores),
        reports,
        unacked: Mutex::default(),
    });
    agent.recover().await;
    supervised.spawn_loop("signs of life", agent.clone().show_life());
    supervised.spawn_loop("health check", agent.clone().check_health());
    supervised.spawn_loop("orders", agent.clone().serve());
    supervised.spawn_loop("reports", agent.clone().send_reports(pending));
    let outcome = tokio::select! {
        died = supervised.death() => Err(drover_supervise::fatal("agent", &died)),
        _ = shutdown => Ok(()),
    };
    supervised.abort_all();
    if let Some(cells) = &agent.opts.launcher.ready {
        cells.close().await;
    }
    outcome
}

impl Agent {
    /// A fresh credential per request: the controller accepts each once.
    fn auth(&self) -> String {
        drover_auth::key_authorization(&self.opts.key).unwrap_or_default()
    }

    /// One request to the controller believed to lead. A follower's 421
    /// names the leader, which the next request goes to; a controller that
    /// is down, hung or without a leader is skipped for the next one.
    async fn call<B: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, String> {
        let base = self.endpoints.current();
        let mut req =
            self.http.request(method, format!("{base}/api/v1/agent/{path}")).header("authorization", self.auth());
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        match req.send().await {
            Ok(r) if r.status() == StatusCode::MISDIRECTED_REQUEST => {
                self.endpoints.misdirected(&base, r.json().await.ok());
                Err(format!("{base} is not the leader"))
            }
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                self.endpoints.failed(&base);
                Err(format!("{base}: {}", r.json::<ErrorBody>().await.map(|b| b.error).unwrap_or_default()))
            }
            Ok(r) => Ok(r),
            Err(e) => {
                self.endpoints.failed(&base);
                Err(format!("{base}: {e}"))
            }
        }
    }

    /// Register, then follow orders; start over whenever the controller is
    /// lost or forgets us.
    async fn serve(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.register().await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    let mut beat = tokio::spawn(self.clone().heartbeat());
                    tokio::select! {
                        r = self.follow_orders() => if let Err(e) = r {
                            tracing::warn!(error = %e, "order stream ended");
                        },
                        // After a hang or a partition the controller has
                        // marked the node DOWN: register again, naming our
                        // steps, so it can fence the stale ones.
                        beat_ended = &mut beat => match beat_ended {
                            // A panic is the orders loop's own: its supervisor hears of it.
                            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                            _ => tracing::warn!("the controller no longer counts this node up; registering again"),
                        },
                    }
                    beat.abort();
                }
                Err(e) => tracing::warn!(error = %e, "cannot register"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn register(&self) -> Result<(), String> {
        let mut known_steps: Vec<(u64, u32)> =
            self.running.lock().expect("running lock").iter().map(|(j, (a, _))| (*j, *a)).collect();
        known_steps.extend(self.unacked.lock().expect("unacked lock").iter().copied());
        let body = Register {
            name: self.opts.name.clone(),
            addr: self.advertise.clone(),
            total: Resources::new(self.opts.cpus, self.opts.memory_mb, self.opts.gpus),
            features: self.opts.features.clone(),
            known_steps,
        };
        let resp = self.call(Method::POST, "register", Some(&body), Some(REQUEST_TIMEOUT)).await?;
        if !resp.status().is_success() {
            return Err(resp.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// Heartbeats until the controller stops counting us up, or stops
    /// answering, or is no longer the leader: then the agent registers
    /// again, with whichever controller leads.
    async fn heartbeat(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.opts.heartbeat).await;
            let path = format!("heartbeat/{}", self.opts.name);
            match self.call::<()>(Method::POST, &path, None, Some(REQUEST_TIMEOUT)).await {
                Ok(r) if r.status() == StatusCode::CONFLICT => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat failed");
                    return;
                }
            }
        }
    }

    async fn follow_orders(self: &Arc<Self>) -> Result<(), String> {
        let resp = self.call::<()>(Method::GET, &format!("orders/{}", self.opts.name), None, None).await?;
        if !resp.status().is_success() {
            return Err(format!("controller answered {}", resp.status()));
        }
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            // Pings arrive every 5 s: silence for longer means a dead link.
            let chunk = match tokio::time::timeout(Duration::from_secs(15), body.next()).await {
                Ok(Some(Ok(c))) => c,
                Ok(Some(Err(e))) => return Err(e.to_string()),
                Ok(None) => return Err("closed by the controller".into()),
                Err(_) => return Err("no ping from the controller for 15 s".into()),
            };
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                match serde_json::from_slice::<Order>(&line) {
                    Ok(order) => self.handle(order).await,
                    Err(e) => tracing::error!(error = %e, "unreadable order"),
                }
            }
        }
    }

    async fn handle(self: &Arc<Self>, order: Order) {
        match order {
            Order::Ping => {}
            Order::Launch(mut order) => {
                // srun inside the job reaches the controllers the way this
                // agent does: over TLS, trusting the cluster's CA.
                if let Some(ca) = &self.opts.tls_ca {
                    if !order.env.iter().any(|(k, _)| k == "DROVER_TLS_CA") {
                        order.env.push(("DROVER_TLS_CA".into(), ca.display().to_string()));
                    }
                }
                let key = order.job_id;
                let (control, controls) = batch::controls();
                {
                    let mut running = self.running.lock().expect("running lock");
                    if running.get(&key).is_some_and(|(a, _)| *a == order.attempt) {
                        return;
                    }
                    // Registered before the launch: a kill that arrives
                    // meanwhile waits in the step's control channel.
                    running.insert(key, (order.attempt, control.clone()));
                }
                let cpus = self.cores.lock().expect("cores lock").take(key, order.cpus);
                // Launches overlap: a step waiting for its CPU to exec must
                // not hold up the next order.
                let agent = self.clone();
                tokio::spawn(async move {
                    let attempt = order.attempt;
                    let outcome = match batch::launch_controlled(&order, &agent.opts.launcher, &cpus, control, controls)
                        .await
                    {
                        Ok(step) => {
                            tracing::info!(job_id = key, attempt, pid = step.pid, "started job {}", order.display_id);
                            agent.report(key, attempt, None);
                            let partition = order.env.iter().find(|(k, _)| k == "SLURM_JOB_PARTITION");
                            let partition = partition.map_or("", |(_, v)| v.as_str());
                            agent.metrics.track_launched(key, step.pid, &order.user, partition);
                            let report = step.wait().await;
                            tracing::info!(job_id = key, attempt, outcome = ?report.outcome, "job {} ended", order.display_id);
                            report
                        }
                        Err(e) => {
                            tracing::error!(job_id = key, attempt, error = %e, "job {} could not start", order.display_id);
                            batch::BatchReport {
                                job_id: key,
                                attempt,
                                outcome: StepOutcome::Exited(1),
                                max_rss_bytes: None,
                                cpu: None,
                                runtime: Duration::ZERO,
                                failure: Some(format!("could not start on {}: {e}", agent.opts.name)),
                            }
                        }
                    };
                    agent.forget(key, attempt);
                    agent.report(key, attempt, Some(&outcome));
                });
            }
            Order::Kill { job, attempt } => {
                if let Some((a, ctl)) = self.running.lock().expect("running lock").get(&job) {
                    if *a == attempt {
                        ctl.cancel();
                    }
                }
                self.tasks.kill_job(job, attempt);
            }
            Order::TimeLimit { job, attempt, limit } => {
                if let Some((a, ctl)) = self.running.lock().expect("running lock").get(&job) {
                    if *a == attempt {
                        ctl.set_limit(limit);
                    }
                }
            }
            Order::Signal { job, attempt, signal } => {
                if let Some((a, ctl)) = self.running.lock().expect("running lock").get(&job) {
                    if *a == attempt {
                        ctl.signal(signal);
                    }
                }
            }
        }
    }

    /// Tells the fence watchdog this agent lives (whether or not the
    /// controller can be reached), and keeps a watchdog running.
    async fn show_life(self: Arc<Self>) {
        let Some((exe, fence_after)) = self.opts.fence.clone() else { return std::future::pending().await };
        let state_dir = self.opts.launcher.spool_dir.parent().unwrap_or(Path::new(".")).to_path_buf();
        let beat = (fence_after / 4).min(self.opts.heartbeat).max(Duration::from_millis(50));
        let mut checked = None::<tokio::time::Instant>;
        loop {
            crate::watchdog::touch_alive(&state_dir);
            if checked.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
                checked = Some(tokio::time::Instant::now());
                if let Err(e) = crate::watchdog::ensure_running(&exe, &state_dir, fence_after) {
                    tracing::error!(error = %e, "fence watchdog");
                }
            }
            tokio::time::sleep(beat).await;
        }
    }

    /// Runs the health check every interval and tells the controller.
    async fn check_health(self: Arc<Self>) {
        let Some((cmd, every)) = self.opts.health_check.clone() else { return std::future::pending().await };
        loop {
            let (ok, message) = run_health_check(&cmd, every.max(Duration::from_secs(1))).await;
            if !ok {
                tracing::warn!("health check failed: {message}");
            }
            let body = drover_proto::HealthReport { ok, message };
            let _ = self
                .call(Method::POST, &format!("health/{}", self.opts.name), Some(&body), Some(REQUEST_TIMEOUT))
                .await;
            tokio::time::sleep(every).await;
        }
    }

    /// Takes back the steps an earlier agent process left running (and
    /// reports those that ended meanwhile) before registering, so that the
    /// registration names them.
    async fn recover(self: &Arc<Self>) {
        for (found, control, cpus) in batch::recover(&self.opts.launcher).await {
            match found {
                batch::Recovered::Running(step) => {
                    let (job, attempt) = (step.job_id, step.attempt);
                    tracing::info!(
                        job_id = job,
                        attempt,
                        pid = step.pid,
                        "re-attached to job {job} (pid {})",
                        step.pid
                    );
                    self.running.lock().expect("running lock").insert(job, (attempt, control));
                    self.metrics.track(job, step.pid);
                    self.cores.lock().expect("cores lock").take(job, cpus);
                    let agent = self.clone();
                    tokio::spawn(async move {
                        let report = step.wait().await;
                        agent.forget(job, attempt);
                        agent.report(job, attempt, Some(&report));
                    });
                }
                batch::Recovered::Ended(report) => {
                    tracing::info!(
                        job_id = report.job_id,
                        attempt = report.attempt,
                        "job {} ended while no agent ran ({:?})",
                        report.job_id,
                        report.outcome
                    );
                    self.report(report.job_id, report.attempt, Some(&report));
                }
            }
        }
    }

    /// Frees what a step of `job` held, unless a newer attempt took its place.
    fn forget(&self, job: u64, attempt: u32) {
        let mut running = self.running.lock().expect("running lock");
        if running.get(&job).is_some_and(|(a, _)| *a == attempt) {
            running.remove(&job);
            self.metrics.untrack(job);
            self.cores.lock().expect("cores lock").release(job);
        }
    }

    /// Queues a batch step's start (`None`) or end for the controller.
    fn report(&self, job: u64, attempt: u32, finished: Option<&batch::BatchReport>) {
        if finished.is_some() {
            self.unacked.lock().expect("unacked lock").insert((job, attempt));
        }
        let _ = self.reports.send(Report {
            node: self.opts.name.clone(),
            job,
            attempt,
            finished: finished.map(|r| r.outcome),
            max_rss_kb: finished.and_then(|r| r.max_rss_bytes).map(|b| b / 1024),
            cpu: finished.and_then(|r| r.cpu),
            step: None,
            abandoned: false,
            failure: finished.and_then(|r| r.failure.clone()),
        });
    }

    /// Sends queued reports: one at a time when idle, everything that piled
    /// up meanwhile in one request when busy (the controller commits a
    /// request's finishes with one fsync). Retries until the controller has
    /// them: a lost report would leave a job running forever.
    async fn send_reports(self: Arc<Self>, mut pending: tokio::sync::mpsc::UnboundedReceiver<Report>) {
        while let Some(first) = pending.recv().await {
            let mut reports = vec![first];
            while reports.len() < 1000 {
                match pending.try_recv() {
                    Ok(r) => reports.push(r),
                    Err(_) => break,
                }
            }
            let body = Reports { reports };
            let mut backoff = Duration::from_millis(50);
            loop {
                // Finishes are committed with an fsync; a big batch may take a while.
                let sent = self.call(Method::POST, "reports", Some(&body), Some(REQUEST_TIMEOUT * 4)).await;
                match sent {
                    Ok(r) if r.status().is_success() || r.status().is_client_error() => {
                        let mut unacked = self.unacked.lock().expect("unacked lock");
                        for r in body.reports.iter().filter(|r| r.finished.is_some()) {
                            unacked.remove(&(r.job, r.attempt));
                        }
                        break;
                    }
                    _ => {}
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs `cmd` through `sh -c`, allowing it `timeout`: (healthy, what it
/// printed, trimmed to one line).
async fn run_health_check(cmd: &str, timeout: Duration) -> (bool, String) {
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(timeout, child).await {
        Err(_) => (false, format!("'{cmd}' did not finish within {} s", timeout.as_secs())),
        Ok(Err(e)) => (false, format!("cannot run '{cmd}': {e}")),
        Ok(Ok(out)) => {
            let text = [out.stdout, out.stderr].concat();
            let text = String::from_utf8_lossy(&text);
            let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let status = out.status.code().map_or_else(|| "killed by a signal".to_string(), |c| format!("exit {c}"));
            match out.status.success() {
                true => (true, line),
                false if line.is_empty() => (false, format!("'{cmd}': {status}")),
                false => (false, line),
            }
        }
    }
}
