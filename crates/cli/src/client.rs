//! Talking to the controllers' REST API, whichever of them leads.
//!
//! The client knows a list of controllers. A request goes to the one it
//! believes leads; a follower answers 421 naming the leader and the client
//! goes there; a controller that refuses the connection, does not answer in
//! time or has no leader (503) is skipped for the next. Retries stop after
//! [`GIVE_UP`]. Every request that changes something carries a request id,
//! so that a retry of a request that did reach the log is applied once.

use drover_proto::{Endpoints, ErrorBody, REQUEST_HEADER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::{Duration, Instant};

/// How long a command keeps trying to reach a leader: several elections.
const GIVE_UP: Duration = Duration::from_secs(30);

/// How long it keeps trying while no controller even accepts a connection:
/// a restarting controller is back within this; no cluster at all should
/// not keep a user waiting.
const NOBODY_THERE: Duration = Duration::from_secs(3);

/// A first attempt's time limit: a healthy controller answers in
/// milliseconds, a hung one never; it doubles on each timeout, so a slow
/// but working controller still gets through.
const FIRST_ATTEMPT: Duration = Duration::from_millis(1500);

/// Where `drover up` writes its cluster's controllers.
const LOCAL_CLUSTER: &str = ".drover/controller.addr";

/// Where the CLI finds the controllers: `--controller`, then
/// `DROVER_CONTROLLER`, then the cluster `drover up` started in this
/// directory, then the default port on this host. A comma-separated list
/// names several. Also says whether the list is that local cluster's.
fn controller_list(flag: Option<&str>) -> (String, bool) {
    let local = std::fs::read_to_string(LOCAL_CLUSTER).ok().map(|s| s.trim().to_string());
    let list = flag
        .map(str::to_string)
        .or_else(|| std::env::var("DROVER_CONTROLLER").ok().filter(|s| !s.is_empty()))
        .or_else(|| local.clone())
        .unwrap_or_else(|| "127.0.0.1:6817".to_string());
    let is_local = local.is_some_and(|l| l == list);
    (list, is_local)
}

/// Why a request got no answer it could use, by what the caller can do
/// about it: nothing reached a leader (start a cluster, fix the address),
/// the controller refused (its message says why), or the answer made no
/// sense (a controller of another version). Callers that only report it
/// turn it into a `String` with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The controller list is wrong, or no controller led in time.
    Unreachable(String),
    /// A controller answered with an error status and this message.
    Refused { status: u16, message: String },
    /// A success status whose body could not be read as expected.
    BadAnswer(String),
    /// No credential could be had (the reason the request went unsigned).
    Unsigned(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable(m) | ClientError::Unsigned(m) => f.write_str(m),
            ClientError::Refused { message, .. } => f.write_str(message),
            ClientError::BadAnswer(m) => write!(f, "unexpected answer from the controller: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<ClientError> for String {
    fn from(e: ClientError) -> String {
        e.to_string()
    }
}

impl ClientError {
    /// The controller's refusal `status`, if that is what this is.
    pub fn refused_with(&self, status: StatusCode) -> Option<&str> {
        match self {
            ClientError::Refused { status: s, message } if *s == status.as_u16() => Some(message),
            _ => None,
        }
    }
}

pub struct Client {
    endpoints: Result<Endpoints, String>,
    http: reqwest::Client,
    /// Where the cluster `drover up` started here keeps the last leader
    /// seen, so that the next command goes straight to it.
    hint: Option<std::path::PathBuf>,
}

const LEADER_HINT: &str = ".drover/leader";

/// A request id unique to this process and call: pid, time, counter.
fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}-{:x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// What one request is: built afresh for every attempt (credentials are
/// good once).
struct Call<'a> {
    method: Method,
    path: &'a str,
    query: &'a [(&'a str, String)],
    body: Option<Vec<u8>>,
    /// Sent with changes, the same on every retry.
    request: Option<String>,
    /// Extra time the server may take on purpose (a long poll).
    patience: Duration,
}

impl Client {
    pub fn new(flag: Option<&str>) -> Client {
        let builder = reqwest::Client::builder().connect_timeout(Duration::from_millis(500)).tcp_nodelay(true);
        let ca = drover_tls::ca_path();
        let (list, local) = controller_list(flag);
        let (http, endpoints) = match drover_tls::http_client(builder, ca.as_deref()) {
            Ok((http, scheme)) => (http, Endpoints::parse_with(&list, scheme == "https")),
            Err(e) => (reqwest::Client::new(), Err(e)),
        };
        let hint = local.then(|| std::path::PathBuf::from(LEADER_HINT));
        if let (Ok(e), Some(h)) = (&endpoints, &hint) {
            if let Ok(leader) = std::fs::read_to_string(h) {
                if e.all().iter().any(|a| *a == leader.trim()) {
                    e.redirect(leader.trim());
                }
            }
        }
        Client { endpoints, http, hint }
    }

    /// Remembers `base` as the leader for the next command, if it changed.
    fn remember(&self, first: &str, base: &str) {
        if let Some(h) = self.hint.as_ref().filter(|_| first != base) {
            let tmp = h.with_extension(format!("{}", std::process::id()));
            if std::fs::write(&tmp, base).is_ok() {
                let _ = std::fs::rename(&tmp, h);
            }
        }
    }

    /// The controller believed to lead (after a request: the one that
    /// answered), as `http://ADDR`.
    pub fn leader(&self) -> String {
        self.endpoints.as_ref().map(|e| e.current()).unwrap_or_default()
    }

    fn endpoints(&self) -> Result<&Endpoints, ClientError> {
        self.endpoints.as_ref().map_err(|e| ClientError::Unreachable(format!("{e}; give controllers as ADDR[,ADDR…]")))
    }

    /// Asks every controller in the list directly (no leader following):
    /// each one's own view, or why it did not answer.
    pub async fn get_each<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Vec<(String, Result<T, ClientError>)>, ClientError> {
        let mut out = Vec::new();
        for base in self.endpoints()?.all() {
            let answer = match self.http.get(format!("{base}{path}")).timeout(FIRST_ATTEMPT).send().await {
                Ok(resp) => self.decode(resp, None).await,
                Err(e) => Err(ClientError::Unreachable(e.to_string())),
            };
            out.push((base, answer));
        }
        Ok(out)
    }

    /// A fresh credential from the local socket (each is good once). If
    /// none can be had, the request goes without, and a refusal explains
    /// why.
    fn sign(&self, req: reqwest::RequestBuilder) -> (reqwest::RequestBuilder, Option<String>) {
        match drover_auth::fetch_credential() {
            Ok(cred) => (req.header("authorization", format!("Drover {cred}")), None),
            Err(e) => (req, Some(e)),
        }
    }

    fn unreachable(&self, why: &str) -> ClientError {
        let list = self.endpoints().map(|e| e.all().join(", ")).unwrap_or_default();
        ClientError::Unreachable(format!(
            "cannot reach a leading controller at {list}: {why}. Start a cluster with 'drover up', or point to one \
             with --controller ADDR[,ADDR…] or DROVER_CONTROLLER=ADDR[,ADDR…]"
        ))
    }

    /// Sends `call` until a controller that can answer does, following the
    /// leader; returns its response whatever the status (except 421/503,
    /// which mean "ask another").
    async fn send(&self, call: Call<'_>) -> Result<(reqwest::Response, Option<String>), ClientError> {
        let endpoints = self.endpoints()?;
        let started = Instant::now();
        let size_allowance = Duration::from_millis(call.body.as_ref().map_or(0, |b| b.len() as u64 / 1000));
        let mut limit = FIRST_ATTEMPT + size_allowance + call.patience;
        // Short pauses: an election takes well under a second, and each try
        // is one small request.
        let mut pause = Duration::from_millis(10);
        let mut last_error = String::new();
        // Controllers that just timed out: a follower may still name one as
        // leader until its election timeout passes; ask around instead.
        let mut hung: Vec<(String, Instant)> = Vec::new();
        let first = endpoints.current();
        let mut heard = false;
        while started.elapsed() < GIVE_UP && (heard || started.elapsed() < NOBODY_THERE) {
            let base = endpoints.current();
            hung.retain(|(_, when)| when.elapsed() < Duration::from_secs(3));
            if hung.iter().any(|(h, _)| *h == base) && hung.len() < endpoints.all().len() {
                endpoints.failed(&base);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let mut req = self.http.request(call.method.clone(), format!("{base}{}", call.path)).query(call.query);
            req = req.timeout(limit);
            if let Some(body) = &call.body {
                req = req.header("content-type", "application/json").body(body.clone());
            }
            if let Some(r) = &call.request {
                req = req.header(REQUEST_HEADER, r);
            }
            let (req, why_unsigned) = self.sign(req);
            match req.send().await {
                Ok(resp) if resp.status() == StatusCode::MISDIRECTED_REQUEST => {
                    heard = true;
                    endpoints.misdirected(&base, resp.json().await.ok());
                    last_error = format!("{base} is not the leader");
                }
                Ok(resp) if resp.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    heard = true;
                    last_error = resp.json::<ErrorBody>().await.map(|b| b.error).unwrap_or_else(|e| e.to_string());
                    endpoints.failed(&base);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Ok(resp) => {
                    self.remember(&first, &base);
                    return Ok((resp, why_unsigned));
                }
                Err(e) => {
                    last_error = e.to_string();
                    if e.is_timeout() {
                        heard = true;
                        // Hung, or slow: the next try here gets longer.
                        limit = (limit * 2).min(Duration::from_secs(60));
                        hung.push((base.clone(), Instant::now()));
                    } else {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(100));
                    }
                    endpoints.failed(&base);
                }
            }
        }
        Err(self.unreachable(&last_error))
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        resp: reqwest::Response,
        why_unsigned: Option<String>,
    ) -> Result<T, ClientError> {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            if let Some(why) = why_unsigned {
                return Err(ClientError::Unsigned(why));
            }
        }
        let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable(e.to_string()))?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer(e.to_string()))
        } else {
            let message = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => b.error,
                Err(_) => format!("controller answered {status}: {}", String::from_utf8_lossy(&bytes)),
            };
            Err(ClientError::Refused { status: status.as_u16(), message })
        }
    }

    fn read<'a>(path: &'a str, query: &'a [(&'a str, String)]) -> Call<'a> {
        // A long poll (`wait=SECS`) is given that much more time.
        let patience = query.iter().find(|(k, _)| *k == "wait").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        Call { method: Method::GET, path, query, body: None, request: None, patience: Duration::from_secs(patience) }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T, ClientError> {
        let (resp, why) = self.send(Client::read(path, query)).await?;
        self.decode(resp, why).await
    }

    /// A text answer (e.g. the TSV listing); errors as for [`Client::get`].
    pub async fn get_text(&self, path: &str, query: &[(&str, String)]) -> Result<String, ClientError> {
        let (resp, why) = self.send(Client::read(path, query)).await?;
        if resp.status().is_success() {
            let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable(e.to_string()))?;
            return String::from_utf8(bytes.into()).map_err(|e| ClientError::BadAnswer(e.to_string()));
        }
        self.decode::<serde_json::Value>(resp, why).await.map(|v| v.to_string())
    }

    /// A long-lived answer from the leader (`/attach`), for the caller to
    /// read as it comes; a non-success status is returned as is.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        let mut call = Client::read(path, &[]);
        // Open for as long as the process lives.
        call.patience = Duration::from_secs(30 * 86_400);
        Ok(self.send(call).await?.0)
    }

    /// A text answer copied to `out` as it arrives, never held whole (a
    /// 10 000-job table is ~1 MB); errors as for [`Client::get`]. A closed
    /// `out` (`drover queue | head`) ends the copy quietly.
    pub async fn copy_text(
        &self,
        path: &str,
        query: &[(&str, String)],
        out: &mut impl std::io::Write,
    ) -> Result<(), ClientError> {
        let (mut resp, why) = self.send(Client::read(path, query)).await?;
        if !resp.status().is_success() {
            return self.decode::<serde_json::Value>(resp, why).await.map(|_| ());
        }
        while let Some(chunk) = resp.chunk().await.map_err(|e| ClientError::Unreachable(e.to_string()))? {
            if out.write_all(&chunk).is_err() {
                return Ok(());
            }
        }
        let _ = out.flush();
        Ok(())
    }

    /// Like [`Client::get`], but from the first controller that answers,
    /// leader or not, and a non-success answer is returned as data (health
    /// reports problems with 503 and a body).
    pub async fn get_any<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let mut last = String::new();
        for base in self.endpoints()?.all() {
            match self.http.get(format!("{base}{path}")).timeout(FIRST_ATTEMPT).send().await {
                Ok(resp) => {
                    let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable(e.to_string()))?;
                    return serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer(e.to_string()));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(self.unreachable(&last))
    }

    /// Changes something; retried until a leader answers, applied once.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.change(Method::POST, path, Some(body)).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.change(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.change::<(), T>(Method::DELETE, path, None).await
    }

    async fn change<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = body.map(serde_json::to_vec).transpose().map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        let call = Call { method, path, query: &[], body, request: Some(request_id()), patience: Duration::ZERO };
        let (resp, why) = self.send(call).await?;
        self.decode(resp, why).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_keeps_its_status_and_reads_as_the_controllers_message() {
        let e = ClientError::Refused { status: 400, message: "unknown format 'table'".into() };
        assert_eq!(e.refused_with(StatusCode::BAD_REQUEST), Some("unknown format 'table'"));
        assert_eq!(e.refused_with(StatusCode::NOT_FOUND), None);
        assert_eq!(String::from(e), "unknown format 'table'");
        let e = ClientError::BadAnswer("expected value at line 1".into());
        assert_eq!(e.refused_with(StatusCode::BAD_REQUEST), None);
        assert_eq!(e.to_string(), "unexpected answer from the controller: expected value at line 1");
    }
}
