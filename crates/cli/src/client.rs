//! Talking to the controller's REST API.

use drover_proto::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

/// Where the CLI finds the controller: `--controller`, then
/// `DROVER_CONTROLLER`, then the cluster `drover up` started in this
/// directory, then the default port on this host.
pub fn controller_address(flag: Option<&str>) -> String {
    let addr = flag
        .map(str::to_string)
        .or_else(|| std::env::var("DROVER_CONTROLLER").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::fs::read_to_string(Path::new(".drover/controller.addr")).ok().map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "127.0.0.1:6817".to_string());
    // A list of controllers: the first for now (HA brings leader following).
    let first = addr.split(',').next().unwrap_or_default().trim().to_string();
    if first.starts_with("http://") || first.starts_with("https://") {
        first
    } else {
        format!("http://{first}")
    }
}

pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(flag: Option<&str>) -> Client {
        Client { base: controller_address(flag), http: reqwest::Client::new() }
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

    fn unreachable(&self, e: reqwest::Error) -> String {
        format!(
            "cannot reach the controller at {}: {e}. Start a cluster with 'drover up', or point to one with \
             --controller ADDR or DROVER_CONTROLLER=ADDR",
            self.base
        )
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        resp: reqwest::Response,
        why_unsigned: Option<String>,
    ) -> Result<T, String> {
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            if let Some(why) = why_unsigned {
                return Err(why);
            }
        }
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| format!("unexpected answer from the controller: {e}"))
        } else {
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => Err(b.error),
                Err(_) => Err(format!("controller answered {status}: {}", String::from_utf8_lossy(&bytes))),
            }
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T, String> {
        let (req, why) = self.sign(self.http.get(format!("{}{path}", self.base)).query(query));
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        self.decode(resp, why).await
    }

    /// A text answer (e.g. the TSV listing); errors as for [`Client::get`].
    pub async fn get_text(&self, path: &str, query: &[(&str, String)]) -> Result<String, String> {
        let (req, why) = self.sign(self.http.get(format!("{}{path}", self.base)).query(query));
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        if resp.status().is_success() {
            let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
            return String::from_utf8(bytes.into()).map_err(|e| format!("unexpected answer from the controller: {e}"));
        }
        self.decode::<serde_json::Value>(resp, why).await.map(|v| v.to_string())
    }

    /// Like [`Client::get`], but a non-success answer is returned as data
    /// (health reports problems with 503 and a body).
    pub async fn get_any<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await.map_err(|e| self.unreachable(e))?;
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| format!("unexpected answer from the controller: {e}"))
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, String> {
        let (req, why) = self.sign(self.http.post(format!("{}{path}", self.base)).json(body));
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        self.decode(resp, why).await
    }
}
