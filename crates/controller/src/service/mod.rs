//! `drover controller`: the REST API, the agent protocol, and the leader's
//! loops around one [`Controller`].

use crate::admission::{self, Proven, Refusal, SubmitPolicy};
use crate::dispatch::Dispatcher;
use crate::events::EventLog;
use crate::listing::{self, JobQuery};
use crate::loops::{self, now_ms, Liveness};
use crate::metrics::Metrics;
use crate::raft::{Controller, Membership, ProposeError, Timing};
use axum::body::Body;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use drover_auth::{Account, AuthError, Credential, ReplayGuard};
use drover_core::job::ExitStatus;
use drover_core::job::JobRef;
use drover_core::node::NodeAction;
use drover_core::sched::SchedConfig;
use drover_core::state::{CancelFilter, Requester};
use drover_core::step::{JobUpdate, StepRequest};
use drover_core::{Command, CommandError, Event};
use drover_proto::*;
use drover_supervise::Supervisor;
use futures_util::StreamExt;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod agents;
mod cluster;
mod controllers;
mod history;
mod jobs;

use agents::*;
use cluster::*;
use controllers::*;
use history::*;
use jobs::*;

/// How to run a controller.
#[derive(Debug, Clone)]
pub struct Options {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub id: u64,
    pub node_timeout: Duration,
    pub sched: SchedConfig,
    /// Wait after a change before scheduling, to batch bursts.
    pub coalesce: Duration,
    /// The cluster key: every request must carry a credential signed with it.
    pub key: Vec<u8>,
    /// Serve credentials to local users on this Unix socket.
    pub auth_socket: Option<PathBuf>,
    /// Uids besides root that may act on every job and node.
    pub operators: Vec<u32>,
    /// The Raft group on first start: alone (the default), static members,
    /// or joining a running group.
    pub membership: Option<Membership>,
    pub timing: Timing,
    /// Run through `sh -c` on gaining and losing leadership.
    pub leader_hook: Option<String>,
    /// With [`Membership::Join`]: the running group's controllers, which
    /// this one asks to add it.
    pub join: Option<String>,
    /// The accounting database (`sqlite://…`, `postgres://…`); `None`
    /// keeps no history.
    pub accounting: Option<String>,
    /// Accounting forgets jobs that ended longer ago than this.
    pub purge_after: Option<Duration>,
    /// How fast past use stops counting against fair-share priority.
    pub fairshare_half_life: Duration,
    /// Finished jobs leave the live state this long after they end, once
    /// accounting has them (0: never).
    pub min_job_age: Duration,
    /// Bounds on submissions: sizes, jobs per request, per-user limits.
    pub policy: SubmitPolicy,
    /// Open connections at most (default: what the descriptor limit allows).
    pub max_connections: Option<usize>,
    /// Serve TLS with this certificate and key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The cluster's CA: the other controllers are reached over TLS,
    /// trusting it alone.
    pub tls_ca: Option<PathBuf>,
    /// Restore capacity and save power through a provider (leader duty).
    pub healer: Option<crate::healing::Healer>,
    /// Built-in actions on gaining and losing leadership (the floating IP
    /// through EC2).
    pub on_leadership: Vec<std::sync::Arc<dyn crate::leadership::OnLeadership>>,
}

impl Options {
    pub fn new(state_dir: PathBuf, listen: SocketAddr, key: Vec<u8>) -> Options {
        Options {
            state_dir,
            listen,
            id: 1,
            node_timeout: Duration::from_secs(10),
            sched: SchedConfig::default(),
            coalesce: Duration::from_millis(2),
            key,
            auth_socket: None,
            operators: Vec::new(),
            membership: None,
            timing: Timing::default(),
            leader_hook: None,
            join: None,
            accounting: None,
            purge_after: None,
            fairshare_half_life: Duration::from_secs(7 * 86400),
            healer: None,
            on_leadership: Vec::new(),
            min_job_age: Duration::from_secs(300),
            policy: SubmitPolicy::default(),
            max_connections: None,
            tls: None,
            tls_ca: None,
        }
    }
}

#[derive(Clone)]
struct App {
    ctl: Arc<Controller>,
    dispatch: Arc<Dispatcher>,
    liveness: Arc<Liveness>,
    key: Arc<Vec<u8>>,
    replay: Arc<std::sync::Mutex<ReplayGuard>>,
    operators: Arc<Vec<u32>>,
    events: Arc<EventLog>,
    metrics: Arc<Metrics>,
    accounting: Option<Arc<crate::accounting::Sink>>,
    policy: Arc<SubmitPolicy>,
    /// The scheduler's settings, for `--test-only` estimates.
    sched: Arc<SchedConfig>,
    /// Allocations whose srun/salloc is attached (leader only).
    holds: Arc<crate::holds::Holds>,
    /// The healer's provider, for `drover chaos stop-instance`.
    healer: Option<crate::healing::Healer>,
}

impl App {
    /// Who is asking, proven by a credential signed with the cluster key
    /// (`Authorization: Drover <credential>`, each good once) or by a
    /// session token (`Authorization: Bearer <token>`, good until it
    /// expires: the dashboard's and scripts').
    fn authenticate(&self, headers: &HeaderMap) -> Result<Requester, ApiError> {
        self.authenticate_proven(headers).map(|p| p.who)
    }

    /// Who is asking and the gid the kernel saw them run with (a token
    /// keeps the gid of the credential it was issued for).
    fn authenticate_proven(&self, headers: &HeaderMap) -> Result<Proven, ApiError> {
        let value = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let (who, gid) = match value.strip_prefix("Bearer ") {
            Some(token) => self.authenticate_token(token)?,
            None => self.authenticate_credential(headers)?,
        };
        Ok(Proven { who, gid })
    }

    /// A one-time credential only, and the gid it proves.
    fn authenticate_credential(&self, headers: &HeaderMap) -> Result<(Requester, u32), ApiError> {
        let text = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Drover "))
            .ok_or_else(|| unauthorized(AuthError::Missing))?;
        let now = now_ms();
        let cred = Credential::verify(&self.key, text, now).map_err(unauthorized)?;
        self.replay.lock().expect("replay lock").check(&cred, now).map_err(unauthorized)?;
        Ok((self.requester(cred.uid), cred.gid))
    }

    fn authenticate_token(&self, token: &str) -> Result<(Requester, u32), ApiError> {
        let t = drover_auth::Token::verify(&self.key, token, now_ms()).map_err(unauthorized)?;
        Ok((self.requester(t.uid), t.gid))
    }

    fn requester(&self, uid: u32) -> Requester {
        Requester { uid, operator: uid == 0 || self.operators.contains(&uid) }
    }

    /// Waits until this controller's state is at least as new as any write
    /// acknowledged before the call (a read index confirmed by a majority),
    /// unless the caller asked for a `stale` read. Only the leader can.
    async fn read_barrier(&self, f: &Freshness) -> Result<(), ApiError> {
        use openraft::error::{CheckIsLeaderError, RaftError};
        if f.stale {
            return Ok(());
        }
        match self.ctl.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => Err(self.not_leader()),
            Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("cannot confirm leadership: {e}"))),
        }
    }

    /// Proposes a client's command; a request the client named (a retry may
    /// follow) is applied at most once, and a retry gets the first answer.
    async fn propose_request(&self, headers: &HeaderMap, cmd: Command) -> Result<Vec<Event>, ApiError> {
        // A one-time credential's nonce goes into the log with the change:
        // a replay to any controller, at any time, is refused there.
        let credential = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Drover "))
            .and_then(|text| Credential::verify(&self.key, text, now_ms()).ok());
        let cmd = match credential {
            Some(c) => Command::Credentialed { uid: c.uid, nonce: c.nonce, expires: c.expires_ms, cmd: Box::new(cmd) },
            None => cmd,
        };
        let request = headers.get(REQUEST_HEADER).and_then(|v| v.to_str().ok()).filter(|r| !r.is_empty());
        let cmd = match request {
            Some(r) if r.len() > 128 => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("{REQUEST_HEADER} is over 128 bytes")))
            }
            Some(r) => Command::Once { request: r.to_string(), cmd: Box::new(cmd) },
            None => cmd,
        };
        let mut events = self.ctl.propose(cmd).await?;
        if let [Event::Repeated { answer, .. }] = events.as_mut_slice() {
            return Ok(std::mem::take(answer));
        }
        Ok(events)
    }

    /// Sends the client to the leader (or says there is none).
    fn not_leader(&self) -> ApiError {
        ApiError::not_leader(self.ctl.other_leader_addr())
    }

    /// Membership changes are for operators (root, --operators, agents).
    fn authenticate_operator(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.authenticate(headers)?.operator {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "only operators may change the controllers"))
        }
    }

    /// Requests that only the leader may serve (agents' heartbeats and order
    /// streams) are sent on to it.
    fn leader_only(&self) -> Result<(), ApiError> {
        if self.ctl.is_leader() && self.dispatch.is_active() {
            Ok(())
        } else {
            Err(self.not_leader())
        }
    }

    /// Agents sign their requests with the key itself (as uid 0).
    fn authenticate_agent(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.authenticate(headers)? {
            Requester { uid: 0, .. } => Ok(()),
            _ => Err(ApiError::new(StatusCode::FORBIDDEN, "only agents holding the cluster key may do this")),
        }
    }
}

/// Who is asking, proven by the request's credential or session token:
/// a handler that takes a `Caller` runs only for a proven requester.
pub(super) struct Caller(pub Requester);

impl axum::extract::FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, app: &App) -> Result<Caller, ApiError> {
        app.authenticate(&parts.headers).map(Caller)
    }
}

fn unauthorized(e: AuthError) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
}

/// An error response with a sentence a person can act on.
struct ApiError {
    code: StatusCode,
    error: String,
    leader: Option<String>,
}

impl ApiError {
    fn new(code: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError { code, error: error.into(), leader: None }
    }

    /// 421 naming the leader, where the client retries; 503 while there is
    /// none (an election is under way, or this controller is cut off).
    fn not_leader(leader: Option<String>) -> ApiError {
        match leader {
            Some(addr) => ApiError {
                code: StatusCode::MISDIRECTED_REQUEST,
                error: format!("this controller is not the leader; the leader is {addr}"),
                leader: Some(addr),
            },
            None => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no controller is leader at the moment (an election is under way, or this controller is cut off \
                 from the majority); retry shortly",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, Json(ErrorBody { error: self.error, leader: self.leader })).into_response()
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> ApiError {
        match e {
            ProposeError::Refused(e @ CommandError::PermissionDenied(_)) => {
                ApiError::new(StatusCode::FORBIDDEN, e.to_string())
            }
            ProposeError::Refused(e) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            ProposeError::NotLeader { leader } => ApiError::not_leader(leader),
            ProposeError::Raft(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e),
        }
    }
}

/// `?stale=true`: the caller accepts this controller's possibly lagging
/// view instead of the leader's.
#[derive(Deserialize, Default)]
struct Freshness {
    #[serde(default)]
    stale: bool,
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Binds the API port, waiting a few seconds if it is still taken (a
/// previous instance killed a moment ago may not have let go of it yet).
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
        }
    }
}

/// Runs a controller until `shutdown` resolves.
pub async fn run(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let listener = bind(opts.listen).await?;
    let local = listener.local_addr().map_err(|e| e.to_string())?.to_string();
    // The address the other controllers and clients reach this one at.
    let addr = match &opts.membership {
        Some(Membership::Static(members)) => members.get(&opts.id).cloned().unwrap_or(local),
        _ => local,
    };
    let membership = opts.membership.clone().unwrap_or_else(|| Membership::Static([(opts.id, addr.clone())].into()));
    let key = Arc::new(opts.key.clone());
    let ctl = Arc::new(
        Controller::open(
            &opts.state_dir,
            opts.id,
            &addr,
            membership,
            &opts.timing,
            key.clone(),
            opts.tls_ca.as_deref(),
        )
        .await?,
    );

    let app = App {
        ctl: ctl.clone(),
        dispatch: Arc::new(Dispatcher::default()),
        liveness: Arc::new(Liveness::default()),
        key,
        replay: Arc::default(),
        operators: Arc::new(opts.operators.clone()),
        events: Arc::new(EventLog::default()),
        metrics: Arc::new(Metrics::new()),
        accounting: opts.accounting.clone().map(|url| crate::accounting::Sink::new(url, opts.purge_after)),
        policy: Arc::new(opts.policy),
        sched: Arc::new(opts.sched.clone()),
        holds: Arc::default(),
        healer: opts.healer.clone(),
    };
    // Every task the controller runs beside its listener; should one die,
    // the controller exits (see drover-supervise).
    let mut tasks = Supervisor::new();
    if let Some(sock) = opts.auth_socket.clone() {
        let key = opts.key.clone();
        // Clients may still come with tokens: a socket that cannot be
        // served is logged, not fatal.
        tasks.spawn_task("credential socket", async move {
            if let Err(e) = drover_auth::serve_credentials(&sock, key).await {
                tracing::error!(error = %e, "credential socket failed");
            }
        });
    }
    tasks.spawn_loop("dispatcher", app.dispatch.clone().run(ctl.shared.clone()));
    tasks.spawn_loop("allocation holds", loops::release_abandoned(ctl.clone(), app.holds.clone()));
    tasks.spawn_loop("event log", app.events.clone().run(ctl.shared.clone()));
    tasks.spawn_loop("metrics", app.metrics.clone().run(ctl.shared.clone()));
    tasks.spawn_loop(
        "leadership",
        crate::leadership::follow(
            ctl.clone(),
            app.dispatch.clone(),
            app.liveness.clone(),
            opts.leader_hook.clone(),
            opts.on_leadership.clone(),
            opts.min_job_age.as_millis() as u64,
        ),
    );
    let usage = Arc::new(std::sync::RwLock::new(drover_core::sched::Usage::default()));
    match app.accounting.clone() {
        Some(sink) => {
            tasks.spawn_loop("accounting", sink.clone().run(ctl.clone(), app.events.clone()));
            if opts.sched.priority.weight_fairshare > 0 {
                let usage = usage.clone();
                tasks.spawn_loop("fair-share", sink.follow_usage(ctl.clone(), usage, opts.fairshare_half_life));
            }
        }
        // Nothing keeps history: finished jobs are let go at once, so that
        // retention still prunes them (as Slurm without slurmdbd does).
        None => tasks.spawn_loop("accounting", crate::accounting::let_go(ctl.clone())),
    }
    tasks.spawn_loop(
        "scheduler",
        loops::schedule(ctl.clone(), opts.sched.clone(), opts.coalesce, app.metrics.clone(), usage),
    );
    tasks.spawn_loop("node liveness", loops::watch(ctl.clone(), app.liveness.clone(), opts.node_timeout));
    if let Some(healer) = opts.healer.clone() {
        tasks.spawn_loop("healer", crate::healing::run(ctl.clone(), healer));
    }
    if let Some(existing) = opts.join.clone() {
        let join = crate::leadership::ask_to_join(ctl.clone(), existing, app.key.clone(), opts.tls_ca.clone());
        tasks.spawn_task("join", join);
    }

    let router = router(app);
    let limits = crate::connections::Limits::for_fd_limit(crate::connections::raise_fd_limit(), opts.max_connections);
    tracing::info!(max = limits.max, "connection limit");
    let acceptor = match &opts.tls {
        Some((cert, key)) => Some(drover_tls::TlsAcceptor::from(drover_tls::server_config(cert, key)?)),
        None => None,
    };
    let listener = crate::connections::GuardedListener::new(listener, limits, acceptor);
    let served = axum::serve(listener, router).with_graceful_shutdown(shutdown);
    let outcome = tokio::select! {
        r = served => r.map_err(|e| e.to_string()),
        died = tasks.death() => Err(drover_supervise::fatal("controller", &died)),
    };
    tasks.abort_all();
    ctl.shutdown().await;
    outcome
}

/// Records each request's latency under its route pattern (`/api/v1/jobs/{id}`,
/// not the id: the label set stays small).
async fn time_request(
    AxState(app): AxState<App>,
    route: Option<axum::extract::MatchedPath>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let resp = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", |r| r.as_str());
    app.metrics.http_request(route, method.as_str(), resp.status().as_u16(), started.elapsed());
    resp
}

fn router(app: App) -> Router {
    Router::new()
        .route("/api/v1/jobs", post(submit).get(list_jobs))
        .route("/api/v1/jobs/test", post(test_only))
        .route("/api/v1/jobs/cancel", post(cancel))
        .route("/api/v1/jobs/{id}", get(show_job).delete(cancel_one).patch(update_job))
        .route("/api/v1/jobs/{id}/steps", post(create_step))
        .route("/api/v1/jobs/{id}/steps/{step}/end", post(end_step))
        .route("/api/v1/jobs/{id}/steps/{step}/attach", get(attach_step))
        .route("/api/v1/jobs/{id}/complete", post(complete))
        .route("/api/v1/jobs/{id}/env", get(job_env))
        .route("/api/v1/jobs/{id}/attach", get(attach))
        .route("/api/v1/jobs/{id}/requeue", post(requeue))
        .route("/api/v1/jobs/{id}/output", get(job_output))
        .route("/api/v1/jobs/{id}/hold", post(hold))
        .route("/api/v1/jobs/{id}/signal", post(signal))
        .route("/api/v1/jobs/{id}/release", post(release))
        .route("/api/v1/events", get(list_events))
        .route("/api/v1/tokens", post(issue_token))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/partitions", get(list_partitions))
        .route("/api/v1/config", get(show_config))
        .route("/api/v1/history", get(history))
        .route("/api/v1/usage", get(usage))
        .route("/api/v1/nodes", get(list_nodes).post(define_nodes))
        .route("/api/v1/nodes/{name}", get(show_node))
        .route("/api/v1/nodes/{name}/drain", post(drain))
        .route("/api/v1/nodes/{name}/resume", post(resume))
        .route("/api/v1/nodes/{name}/stop-machine", post(stop_machine))
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(|| async { Json(crate::openapi::document()) }))
        .route("/api/v1/agent/register", post(register))
        .route("/api/v1/agent/heartbeat/{node}", post(heartbeat))
        .route("/api/v1/agent/orders/{node}", get(orders))
        .route("/api/v1/agent/reports", post(reports))
        .route("/api/v1/agent/health/{node}", post(node_health))
        .route("/api/v1/controllers", get(controllers).post(join_controller))
        .route("/metrics", get(metrics))
        .route("/api/v1/sd/prometheus", get(prometheus_targets))
        .route("/api/v1/controllers/{id}", axum::routing::delete(remove_controller))
        .route("/api/v1/raft/append", post(raft_append))
        .route("/api/v1/raft/vote", post(raft_vote))
        .route("/api/v1/raft/snapshot", post(raft_snapshot))
        // A batch of 10 000 jobs is ~10-30 MB of JSON; axum's default cap is
        // 2 MB. A body is read before its sender is known: no more than this.
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
        .layer(axum::middleware::map_response(json_errors))
        .merge(crate::web::routes())
        .layer(axum::middleware::from_fn_with_state(app.clone(), time_request))
        .with_state(app)
}

/// Errors are JSON (`{"error": …}`) as the API document says, including the
/// ones axum's extractors write as plain text (a path segment that is not a
/// number, a query that does not parse, a malformed body).
async fn json_errors(response: Response) -> Response {
    let plain = response.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(response.status().is_client_error() || response.status().is_server_error()) || !plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let error = String::from_utf8_lossy(&text).into_owned();
    (parts.status, Json(ErrorBody { error, leader: None })).into_response()
}

/// A JSON body parsed by serde_json alone. axum's `Json` tracks the path
/// of every value it reads, to name the field in an error, and those frames
/// stood out in the profile of a 10 000-job batch. Here only a body that
/// fails is parsed again by `Json`, for that same error.
struct FastJson<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for FastJson<T> {
    type Rejection = axum::extract::rejection::JsonRejection;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let plain_json = req.headers().get("content-type").is_some_and(|v| v.as_bytes() == b"application/json");
        if !plain_json {
            // Anything else (a charset, a +json type, none) as axum decides.
            return Json::<T>::from_request(req, state).await.map(|Json(v)| FastJson(v));
        }
        let body = axum::body::Bytes::from_request(req, state).await?;
        match serde_json::from_slice(&body) {
            Ok(v) => Ok(FastJson(v)),
            Err(_) => Json::<T>::from_bytes(&body).map(|Json(v)| FastJson(v)),
        }
    }
}
