//! The Raft log and vote, in redb. Every write is a committed (fsync'd) redb
//! transaction before openraft is told it is durable.

use crate::raft::TypeConfig;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

type StorageResult<T> = Result<T, StorageError<u64>>;

/// The log store; cheap to clone (one shared database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    recent: Arc<Mutex<Recent>>,
}

/// The newest entries as they were appended. Applying (and replicating) a
/// just-written entry clones it from here instead of reading it back and
/// parsing it: a submitted job's spec is a shared `Arc`, so a 10 000-job
/// batch clones in microseconds where parsing took a sixth of the request.
#[derive(Default)]
struct Recent {
    /// Consecutive indexes, ending at the last entry of the log.
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
}

impl Recent {
    /// Entries kept, at most; and their encoded size, at most.
    const MAX_ENTRIES: usize = 4096;
    const MAX_BYTES: usize = 64 << 20;

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn push(&mut self, entry: Entry<TypeConfig>, size: usize) {
        let follows = self.entries.back().is_none_or(|(last, _)| last.log_id.index + 1 == entry.log_id.index);
        if !follows {
            self.clear();
        }
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.entries.len() > Self::MAX_ENTRIES || (self.bytes > Self::MAX_BYTES && self.entries.len() > 1) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn pop_back(&mut self) {
        if let Some((_, size)) = self.entries.pop_back() {
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Forgets entries from `index` on (the log was truncated there).
    fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|(e, _)| e.log_id.index >= index) {
            self.pop_back();
        }
    }

    /// Forgets entries up to `index` (the log was purged there).
    fn purge(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    /// The entries in `start..end` (`end`: past the last when `None`), if
    /// all of them are here.
    fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry<TypeConfig>>> {
        let first = self.first_index()?;
        let after_last = first + self.entries.len() as u64;
        let end = end.unwrap_or(after_last);
        if start < first || end > after_last {
            return None;
        }
        let (from, to) = ((start - first) as usize, end.saturating_sub(first) as usize);
        Some(self.entries.range(from..to.max(from)).map(|(e, _)| e.clone()).collect())
    }
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
        Ok(LogStore { db, recent: Arc::default() })
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
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => Some(e + 1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => None,
        };
        if let Some(entries) = self.recent.lock().expect("recent entries lock").get(start, end) {
            return Ok(entries);
        }
        let read = || -> Result<Vec<Entry<TypeConfig>>, AnyError> {
            let txn = self.db.begin_read().map_err(io_err)?;
            let table = txn.open_table(LOG).map_err(io_err)?;
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
        let mut written = Vec::new();
        let write = || -> Result<(), AnyError> {
            let txn = self.db.begin_write().map_err(io_err)?;
            {
                let mut table = txn.open_table(LOG).map_err(io_err)?;
                for entry in entries {
                    let bytes = serde_json::to_vec(&entry).map_err(io_err)?;
                    table.insert(entry.log_id.index, bytes.as_slice()).map_err(io_err)?;
                    written.push((entry, bytes.len()));
                }
            }
            // redb's default durability fsyncs here: the entries are on disk
            // before openraft (and so any client) hears they are.
            txn.commit().map_err(io_err)
        };
        let result = write();
        {
            let mut recent = self.recent.lock().expect("recent entries lock");
            match &result {
                Ok(()) => written.into_iter().for_each(|(entry, size)| recent.push(entry, size)),
                // What is on disk is not known: read it from there.
                Err(_) => recent.clear(),
            }
        }
        callback.log_io_completed(result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())));
        result.map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        self.recent.lock().expect("recent entries lock").truncate(log_id.index);
        self.remove(log_id.index..).map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        self.recent.lock().expect("recent entries lock").purge(log_id.index);
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

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 0), index), payload: EntryPayload::Blank }
    }

    fn indexes(entries: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        entries.map(|es| es.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_answer_only_what_they_hold_whole() {
        let mut r = Recent::default();
        assert_eq!(indexes(r.get(0, None)), None, "nothing held: read the disk");
        (1..=5).for_each(|i| r.push(entry(i), 10));
        assert_eq!(indexes(r.get(1, None)), Some(vec![1, 2, 3, 4, 5]));
        assert_eq!(indexes(r.get(2, Some(4))), Some(vec![2, 3]));
        assert_eq!(indexes(r.get(6, None)), Some(vec![]), "past the end: nothing, as the disk says");
        assert_eq!(indexes(r.get(0, None)), None, "an older entry is not held");
        assert_eq!(indexes(r.get(3, Some(7))), None, "nor one past the last");
        r.truncate(3);
        assert_eq!(indexes(r.get(1, None)), Some(vec![1, 2]));
        r.purge(1);
        assert_eq!(indexes(r.get(1, None)), None);
        assert_eq!(indexes(r.get(2, None)), Some(vec![2]));
        assert_eq!(r.bytes, 10);
        // A gap (after a snapshot was installed, say): start again.
        r.push(entry(9), 10);
        assert_eq!(indexes(r.get(9, None)), Some(vec![9]));
        assert_eq!(indexes(r.get(2, None)), None);
        // The budget: the oldest go first, the newest always stays.
        r.push(entry(10), Recent::MAX_BYTES);
        assert_eq!(indexes(r.get(10, None)), Some(vec![10]));
        assert_eq!(indexes(r.get(9, None)), None);
        (11..11 + Recent::MAX_ENTRIES as u64 + 5).for_each(|i| r.push(entry(i), 1));
        assert_eq!(r.entries.len(), Recent::MAX_ENTRIES);
    }
}
