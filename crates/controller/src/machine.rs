//! The Raft state machine: the core cluster state, applying committed
//! commands, and its snapshots (kept in the same redb database).

use crate::listing::TableIndex;
use crate::raft::{Applied, TypeConfig};
use drover_core::state::Snapshot as CoreSnapshot;
use drover_core::{Command, CommandError, Event, State};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use redb::{Database, TableDefinition};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::Mutex;
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

type StorageResult<T> = Result<T, StorageError<u64>>;

/// The state and how far it has applied the log, under one lock so a
/// snapshot is always consistent.
pub struct AppliedState {
    pub state: State,
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
    /// The queue table, kept beside the state; listings lock it to bring
    /// it up to date under the state's read lock.
    pub table: Mutex<TableIndex>,
}

impl AppliedState {
    fn new(state: State) -> AppliedState {
        let mut applied = AppliedState {
            state: State::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            table: Mutex::new(TableIndex::new()),
        };
        applied.set_state(state);
        applied
    }

    /// Puts `state` in place, with a table index that will render it whole.
    fn set_state(&mut self, mut state: State) {
        state.track_changes();
        self.state = state;
        self.table = Mutex::new(TableIndex::new());
    }
}

/// What the rest of the controller reads: the state, and the events of
/// every applied command in log order.
pub struct Shared {
    pub inner: RwLock<AppliedState>,
    /// Unbounded on purpose: a burst (10 000 array tasks starting in one
    /// plan) must not drop a single launch order.
    subscribers: Mutex<Vec<mpsc::UnboundedSender<(u64, Event)>>>,
}

impl Shared {
    /// Every event applied from now on, in log order.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<(u64, Event)> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.lock().expect("subscribers lock").push(tx);
        rx
    }

    fn publish(&self, index: u64, events: &[Event]) {
        let mut subs = self.subscribers.lock().expect("subscribers lock");
        subs.retain(|s| events.iter().all(|e| s.send((index, e.clone())).is_ok()));
    }

    /// Runs `f` on the current state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.inner.read().expect("state lock poisoned").state)
    }

    /// Runs `f` on the current state and its queue table index.
    pub fn read_with_table<T>(&self, f: impl FnOnce(&State, &Mutex<TableIndex>) -> T) -> T {
        let inner = self.inner.read().expect("state lock poisoned");
        f(&inner.state, &inner.table)
    }
}

/// A stored snapshot: the core snapshot and where in the log it was taken.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

#[derive(Clone)]
pub struct Machine {
    pub shared: Arc<Shared>,
    db: Arc<Database>,
}

fn err<E: std::error::Error + 'static>(e: E) -> AnyError {
    AnyError::new(&e)
}

impl Machine {
    /// Opens the machine, restoring the last snapshot if there is one; the
    /// log entries after it are re-applied by Raft.
    pub fn open(db: Arc<Database>) -> Result<Machine, AnyError> {
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(SNAPSHOT).map_err(err)?;
        txn.commit().map_err(err)?;
        let mut applied = AppliedState::new(State::default());
        if let Some(stored) = load_snapshot(&db)? {
            let core: CoreSnapshot = serde_json::from_slice(&stored.data).map_err(err)?;
            applied.set_state(State::restore(core));
            applied.last_applied = stored.meta.last_log_id;
            applied.membership = stored.meta.last_membership;
        }
        Ok(Machine {
            shared: Arc::new(Shared { inner: RwLock::new(applied), subscribers: Mutex::new(Vec::new()) }),
            db,
        })
    }
}

fn load_snapshot(db: &Database) -> Result<Option<StoredSnapshot>, AnyError> {
    let txn = db.begin_read().map_err(err)?;
    let table = txn.open_table(SNAPSHOT).map_err(err)?;
    match table.get("current").map_err(err)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(err)?)),
        None => Ok(None),
    }
}

fn save_snapshot(db: &Database, s: &StoredSnapshot) -> Result<(), AnyError> {
    let bytes = serde_json::to_vec(s).map_err(err)?;
    let txn = db.begin_write().map_err(err)?;
    {
        let mut table = txn.open_table(SNAPSHOT).map_err(err)?;
        table.insert("current", bytes.as_slice()).map_err(err)?;
    }
    txn.commit().map_err(err)
}

impl RaftSnapshotBuilder<TypeConfig> for Machine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let build = || -> Result<StoredSnapshot, AnyError> {
            let inner = self.shared.inner.read().expect("state lock poisoned");
            let data = serde_json::to_vec(&inner.state.snapshot()).map_err(err)?;
            let last = inner.last_applied;
            let snapshot_id = last.map_or_else(|| "0-0".to_string(), |l| format!("{}-{}", l.leader_id.term, l.index));
            Ok(StoredSnapshot {
                meta: SnapshotMeta { last_log_id: last, last_membership: inner.membership.clone(), snapshot_id },
                data,
            })
        };
        let stored = build().map_err(|e| StorageIOError::write_snapshot(None, e))?;
        save_snapshot(&self.db, &stored).map_err(|e| StorageIOError::write_snapshot(None, e))?;
        Ok(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

/// Applies one committed command; a command that panics is refused instead.
///
/// Every request is checked before it is proposed and `apply` checks again
/// before it changes anything, so this should never catch. It is here
/// because an entry is replicated before it is applied: a panic would take
/// every controller down, and again at every restart as it replays the
/// entry. Catching it is deterministic — each replica runs the same code on
/// the same state — so the group stays in agreement and keeps serving.
fn apply_guarded(state: &mut State, cmd: Command, index: u64) -> Result<Vec<Event>, CommandError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.apply(cmd))) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(index, panic = %what, "a committed entry panicked while applied; refused");
            Err(CommandError::Invalid(format!("entry {index} could not be applied: {what}")))
        }
    }
}

impl RaftStateMachine<TypeConfig> for Machine {
    type SnapshotBuilder = Machine;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        let inner = self.shared.inner.read().expect("state lock poisoned");
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let mut inner = self.shared.inner.write().expect("state lock poisoned");
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Applied(Ok(Vec::new())),
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    Applied(Ok(Vec::new()))
                }
                EntryPayload::Normal(cmd) => {
                    let result = match cmd {
                        // The fence: only the leader of the term that commits a
                        // plan may have made it.
                        Command::Allocate { term, .. } if term != 0 && term != entry.log_id.leader_id.term => {
                            Err(CommandError::InvalidState(format!(
                                "scheduling plan of term {term} refused in term {}: its leader was deposed",
                                entry.log_id.leader_id.term
                            )))
                        }
                        cmd => apply_guarded(&mut inner.state, cmd, entry.log_id.index),
                    };
                    if let Ok(events) = &result {
                        self.shared.publish(entry.log_id.index, events);
                    }
                    Applied(result)
                }
            };
            replies.push(reply);
        }
        let AppliedState { state, table, .. } = &mut *inner;
        table.get_mut().expect("table index lock poisoned").note(state.take_changes());
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let core: CoreSnapshot =
            serde_json::from_slice(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), err(e)))?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        save_snapshot(&self.db, &stored).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        let mut inner = self.shared.inner.write().expect("state lock poisoned");
        inner.set_state(State::restore(core));
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let stored = load_snapshot(&self.db).map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
