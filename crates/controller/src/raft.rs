//! Raft wiring: the type configuration, the network between controllers,
//! and [`Controller`], which proposes commands and waits for them to commit.

use crate::log_store::LogStore;
use crate::machine::{Machine, Shared};
use crate::peers::Network;
use drover_core::{Command, CommandError, Event};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
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

/// How a controller finds its Raft group the first time it starts (later
/// starts read the membership from the log).
#[derive(Debug, Clone)]
pub enum Membership {
    /// These members (id → address), started together; a lone controller
    /// is a group of one. Every member initializes with the same list, which
    /// Raft allows.
    Static(BTreeMap<u64, String>),
    /// Start empty and wait for the running group to add this controller.
    Join,
}

/// Raft timing: a leader heartbeats every 66 ms and followers stand for
/// election after 200–400 ms of silence. openraft's followers also refuse
/// to vote until the old leader's lease (the maximum) has run out, so a
/// failover takes about 0.4–0.8 s. A snapshot every `snapshot_every` entries
/// bounds the log.
#[derive(Debug, Clone)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub snapshot_every: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing { heartbeat_ms: 66, election_min_ms: 200, election_max_ms: 400, snapshot_every: 20_000 }
    }
}

/// One controller: its Raft node and the state it applies.
pub struct Controller {
    pub id: u64,
    pub addr: String,
    pub raft: Raft<TypeConfig>,
    pub shared: Arc<Shared>,
    pub log: LogStore,
}

impl Controller {
    /// Opens (or creates) the controller's state under `state_dir` and
    /// starts its Raft node.
    pub async fn open(
        state_dir: &Path,
        id: u64,
        addr: &str,
        membership: Membership,
        timing: &Timing,
        key: Arc<Vec<u8>>,
        tls_ca: Option<&Path>,
    ) -> Result<Controller, String> {
        std::fs::create_dir_all(state_dir).map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
        let path = state_dir.join("raft.redb");
        let db = Arc::new(open_database(&path).await?);
        let log = LogStore::new(db.clone())?;
        let machine = Machine::open(db).map_err(|e| e.to_string())?;
        let shared = machine.shared.clone();
        let config = Config {
            cluster_name: "drover".into(),
            heartbeat_interval: timing.heartbeat_ms,
            election_timeout_min: timing.election_min_ms,
            election_timeout_max: timing.election_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(timing.snapshot_every),
            max_in_snapshot_log_to_keep: 1_000.min(timing.snapshot_every),
            // Compact the log as soon as the snapshot covers it.
            purge_batch_size: 256,
            // Snapshot chunks travel as JSON (a byte is up to four
            // characters). Each chunk also counts as the leader's heartbeat:
            // small ones keep a follower that is catching up from standing
            // for election.
            snapshot_max_chunk_size: 256 * 1024,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(|e| e.to_string())?);
        let raft =
            Raft::new(id, config, Network::new(key, tls_ca)?, log.clone(), machine).await.map_err(|e| e.to_string())?;
        if let Membership::Static(members) = membership {
            if !raft.is_initialized().await.map_err(|e| e.to_string())? {
                if members.get(&id).is_none_or(|a| a != addr) {
                    return Err(format!("this controller (id {id}, {addr}) is not among the members {members:?}"));
                }
                let members: BTreeMap<u64, BasicNode> =
                    members.into_iter().map(|(i, addr)| (i, BasicNode { addr })).collect();
                raft.initialize(members).await.map_err(|e| e.to_string())?;
            }
        }
        Ok(Controller { id, addr: addr.to_string(), raft, shared, log })
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
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.id) && m.state == ServerState::Leader
    }

    /// Where to send a client this controller cannot serve: the leader's
    /// address, as far as this controller knows, if it is another one.
    pub fn other_leader_addr(&self) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader.filter(|l| *l != self.id)?;
        m.membership_config.membership().get_node(&leader).map(|n| n.addr.clone())
    }

    /// The voting members now.
    pub fn voters(&self) -> std::collections::BTreeSet<u64> {
        self.raft.metrics().borrow().membership_config.membership().voter_ids().collect()
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}
