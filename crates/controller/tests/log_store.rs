//! The log store and state machine against openraft's own storage test
//! suite (append, read back, truncate, purge, vote, membership, snapshots).

use drover_controller::log_store::LogStore;
use drover_controller::machine::Machine;
use drover_controller::TypeConfig;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// A state directory removed when the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> TempDir {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("drover-logstore-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, Machine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, Machine), StorageError<u64>> {
        let dir = temp_dir();
        let db = Arc::new(redb::Database::create(dir.0.join("raft.redb")).unwrap());
        let log = LogStore::new(db.clone()).unwrap();
        let machine = Machine::open(db).unwrap();
        Ok((dir, log, machine))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}
