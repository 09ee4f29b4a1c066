//! Raft wiring: the type configuration, the network between controllers,
//! and [`Controller`], which proposes commands and waits for them to commit.

use crate::log_store::LogStore;
use crate::machine::{Machine, Shared};
use drover_core::{Command, CommandError, Event};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The outcome of applying one committed command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied(pub Result<Vec<Event>, CommandError>);

openraft::declare_raft_types!(
    /// Drover's Raft types: log entries carry core commands.
    pub TypeConfig:
        D = Command,
        R = Applied,
);

/// Why a proposal did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The command was committed and applied, and the state machine refused it.
    #[error(transparent)]
    Refused(#[from] CommandError),
    /// This controller is not the leader; the client should ask `leader`.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<String> },
    #[error("raft: {0}")]
    Raft(String),
}

/// Talks to the other controllers. A one-member group never calls it; the
/// HA issue replaces this with a real transport.
pub struct NoNetwork;

fn unreachable<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other("controller networking arrives with HA (issue #5)")))
}

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoNetwork;
    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> NoNetwork {
        NoNetwork
    }
}

impl RaftNetwork<TypeConfig> for NoNetwork {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }
}

/// Opens the database, waiting a little for a previous instance in this
/// process to let go of it (its background tasks end shortly after shutdown).
/// Another process holding it is an error that names the file.
async fn open_database(path: &Path) -> Result<redb::Database, String> {
    let mut waited = Duration::ZERO;
    loop {
        match redb::Database::create(path) {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if waited < Duration::from_secs(3) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                waited += Duration::from_millis(20);
            }
            Err(e) => {
                return Err(format!(
                    "cannot open {}: {e} (is another controller using this state directory?)",
                    path.display()
                ))
            }
        }
    }
}

/// One controller: its Raft node and the state it applies.
pub struct Controller {
    pub id: u64,
    pub raft: Raft<TypeConfig>,
    pub shared: Arc<Shared>,
    pub log: LogStore,
}

impl Controller {
    /// Opens (or creates) the controller's state under `state_dir` and
    /// starts its Raft node. A fresh one-member cluster initializes itself.
    pub async fn open(state_dir: &Path, id: u64, addr: &str) -> Result<Controller, String> {
        std::fs::create_dir_all(state_dir).map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
        let path = state_dir.join("raft.redb");
        let db = Arc::new(open_database(&path).await?);
        let log = LogStore::new(db.clone())?;
        let machine = Machine::open(db).map_err(|e| e.to_string())?;
        let shared = machine.shared.clone();
        let config = Config {
            cluster_name: "drover".into(),
            heartbeat_interval: 150,
            election_timeout_min: 400,
            election_timeout_max: 800,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(20_000),
            max_in_snapshot_log_to_keep: 1_000,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(|e| e.to_string())?);
        let raft = Raft::new(id, config, NoNetwork, log.clone(), machine).await.map_err(|e| e.to_string())?;
        if !raft.is_initialized().await.map_err(|e| e.to_string())? {
            let members = BTreeMap::from([(id, BasicNode { addr: addr.to_string() })]);
            raft.initialize(members).await.map_err(|e| e.to_string())?;
        }
        Ok(Controller { id, raft, shared, log })
    }

    /// Waits until some controller leads (this one, for a single member).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, String> {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = metrics.borrow().current_leader {
                return Ok(leader);
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("raft stopped".into()),
                Err(_) => return Err(format!("no leader elected within {timeout:?}")),
            }
        }
    }

    /// Appends `cmd` to the log and returns its events once it is committed
    /// (on disk on a majority) and applied.
    pub async fn propose(&self, cmd: Command) -> Result<Vec<Event>, ProposeError> {
        use openraft::error::{ClientWriteError, RaftError};
        match self.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data.0?),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProposeError::NotLeader { leader: f.leader_node.map(|n| n.addr) })
            }
            Err(e) => Err(ProposeError::Raft(e.to_string())),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}
