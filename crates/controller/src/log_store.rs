//! The Raft log and vote, in redb. Every write is a committed (fsync'd) redb
//! transaction before openraft is told it is durable.

use crate::raft::TypeConfig;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

type StorageResult<T> = Result<T, StorageError<u64>>;

/// The log store; cheap to clone (one shared database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

fn io_err<E: std::error::Error + 'static>(e: E) -> AnyError {
    AnyError::new(&e)
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Result<LogStore, String> {
        let create = || -> Result<(), AnyError> {
            let txn = db.begin_write().map_err(io_err)?;
            txn.open_table(LOG).map_err(io_err)?;
            txn.open_table(META).map_err(io_err)?;
            txn.commit().map_err(io_err)
        };
        create().map_err(|e| format!("cannot prepare the raft log: {e}"))?;
        Ok(LogStore { db })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AnyError> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(META).map_err(io_err)?;
        match table.get(key).map_err(io_err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(io_err)?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, key: &str, value: &T, durability: Durability) -> Result<(), AnyError> {
        let bytes = serde_json::to_vec(value).map_err(io_err)?;
        let mut txn = self.db.begin_write().map_err(io_err)?;
        txn.set_durability(durability);
        {
            let mut table = txn.open_table(META).map_err(io_err)?;
            table.insert(key, bytes.as_slice()).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let read = || -> Result<Vec<Entry<TypeConfig>>, AnyError> {
            let txn = self.db.begin_read().map_err(io_err)?;
            let table = txn.open_table(LOG).map_err(io_err)?;
            let start = match range.start_bound() {
                Bound::Included(&s) => s,
                Bound::Excluded(&s) => s + 1,
                Bound::Unbounded => 0,
            };
            let mut out = Vec::new();
            for item in table.range(start..).map_err(io_err)? {
                let (k, v) = item.map_err(io_err)?;
                if !range.contains(&k.value()) {
                    break;
                }
                out.push(serde_json::from_slice(v.value()).map_err(io_err)?);
            }
            Ok(out)
        };
        read().map_err(|e| StorageIOError::read_logs(e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let state = || -> Result<LogState<TypeConfig>, AnyError> {
            let last_purged: Option<LogId<u64>> = self.read_meta("last_purged")?;
            let txn = self.db.begin_read().map_err(io_err)?;
            let table = txn.open_table(LOG).map_err(io_err)?;
            let last = match table.last().map_err(io_err)? {
                Some((_, v)) => {
                    let e: Entry<TypeConfig> = serde_json::from_slice(v.value()).map_err(io_err)?;
                    Some(e.log_id)
                }
                None => last_purged,
            };
            Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
        };
        state().map_err(|e| StorageIOError::read_logs(e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        self.write_meta("vote", vote, Durability::Immediate).map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        self.read_meta("vote").map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        // Only a shortcut for replay after a restart (the entries themselves
        // are durable): written without its own fsync, it reaches the disk
        // with the next log append.
        self.write_meta("committed", &committed, Durability::None).map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        Ok(self.read_meta::<Option<LogId<u64>>>("committed").map_err(StorageIOError::read)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = || -> Result<(), AnyError> {
            let txn = self.db.begin_write().map_err(io_err)?;
            {
                let mut table = txn.open_table(LOG).map_err(io_err)?;
                for entry in entries {
                    let bytes = serde_json::to_vec(&entry).map_err(io_err)?;
                    table.insert(entry.log_id.index, bytes.as_slice()).map_err(io_err)?;
                }
            }
            // redb's default durability fsyncs here: the entries are on disk
            // before openraft (and so any client) hears they are.
            txn.commit().map_err(io_err)
        };
        let result = write();
        callback.log_io_completed(result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())));
        result.map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        self.remove(log_id.index..).map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        self.write_meta("last_purged", &Some(log_id), Durability::Immediate).map_err(StorageIOError::write_logs)?;
        self.remove(..=log_id.index).map_err(|e| StorageIOError::write_logs(e).into())
    }
}

impl LogStore {
    fn remove(&self, range: impl RangeBounds<u64>) -> Result<(), AnyError> {
        let txn = self.db.begin_write().map_err(io_err)?;
        {
            let mut table = txn.open_table(LOG).map_err(io_err)?;
            let keys: Vec<u64> = table
                .range::<u64>((range.start_bound().cloned(), range.end_bound().cloned()))
                .map_err(io_err)?
                .map(|item| item.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()
                .map_err(io_err)?;
            for k in keys {
                table.remove(k).map_err(io_err)?;
            }
        }
        txn.commit().map_err(io_err)
    }
}
