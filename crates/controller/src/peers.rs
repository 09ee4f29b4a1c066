//! The network between controllers: Raft's three RPCs as JSON over HTTP,
//! on the same listener as the REST API (`/api/v1/raft/*`), signed with
//! the cluster key like agents' requests.

use crate::raft::TypeConfig;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

/// Makes a [`Peer`] per member; they share one HTTP connection pool.
#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
    key: Arc<Vec<u8>>,
    /// `https` when the group speaks TLS (`tls_ca` given).
    scheme: &'static str,
}

impl Network {
    pub fn new(key: Arc<Vec<u8>>, tls_ca: Option<&std::path::Path>) -> Result<Network, String> {
        // Loopback and LAN peers answer in milliseconds; a peer that does
        // not even accept a connection for long is as good as down.
        let builder = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_millis(300))
            .tcp_nodelay(true)
            // Closed before the controller's 75 s idle limit closes it under us.
            .pool_idle_timeout(std::time::Duration::from_secs(30));
        let (http, scheme) = drover_tls::http_client(builder, tls_ca)?;
        Ok(Network { http, key, scheme })
    }
}

pub struct Peer {
    target: u64,
    base: String,
    http: reqwest::Client,
    key: Arc<Vec<u8>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;
    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            target,
            base: format!("{}/api/v1/raft", drover_proto::base_url(self.scheme, &node.addr)),
            http: self.http.clone(),
            key: self.key.clone(),
        }
    }
}

type RpcResult<T, E> = Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl Peer {
    /// One RPC. The answer is the peer's `Result`, so Raft-level refusals
    /// (a higher term, say) come back as remote errors, and only transport
    /// failures as network errors.
    async fn call<Req, Resp, E>(&self, path: &str, req: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let auth = drover_auth::key_authorization(&self.key).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let sent = self
            .http
            .post(format!("{}/{path}", self.base))
            .header("authorization", auth)
            .timeout(option.hard_ttl())
            .json(req)
            .send()
            .await;
        // A refused connection is a network error, not `Unreachable`: openraft
        // backs off 500 ms from an unreachable peer, longer than an election
        // timeout, so a controller coming back would stand for election (and
        // depose the leader) before it heard from it.
        let resp = sent.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let e = std::io::Error::other(format!("peer {} answered {status}: {text}", self.target));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let body = resp.bytes().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer: Result<Resp, RaftError<u64, E>> =
            serde_json::from_slice(&body).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, openraft::error::Infallible> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, openraft::error::Infallible> {
        self.call("vote", &rpc, &option).await
    }
}
