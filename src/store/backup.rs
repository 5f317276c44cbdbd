//! Consistent copies of the live file: one read transaction copies every
//! table into a fresh database, which is then compacted and fsynced. Copying
//! the file itself during writes would not be safe.
//!
//! What a backup costs, and why:
//! - Memory: the copy is built with its own page cache of a quarter of
//!   `storage.cache_mb` (redb's default of 1 GiB would hold most of a
//!   large copy in memory); reading the snapshot goes through the live
//!   file's cache, which `cache_mb` already bounds.
//! - Disk: the copy, beside the live file, until it is streamed. The live
//!   file grows only while the snapshot is held: redb cannot reuse a page
//!   freed by a commit while an older reader may still see it, so every
//!   page that writes replace during the copy is new space. A consistent
//!   backup needs that one snapshot (copying table by table under fresh
//!   snapshots would pair rows from different moments), so the window is
//!   kept to the copying of rows: the copy's commit, fsync and compaction
//!   happen after the snapshot is released, and the freed pages are reused
//!   by later commits. With no writes during the copy the live file does
//!   not grow at all; under load it grows by what the writes of those
//!   seconds replaced, not by the size of the database.

use std::path::Path;

use redb::{Database, Durability, Key, ReadableDatabase, TableDefinition, TableHandle, Value};

use super::tables::{for_each_table, TableVisitor};
use super::{Store, StoreError};

/// Backups are built next to the live file under this prefix and unlinked
/// once open; a crash mid-backup can leave one behind.
pub const TEMP_PREFIX: &str = ".backup-";

/// Removes backup files a crash or shutdown left in the data directory.
pub fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TEMP_PREFIX) && name.ends_with(".redb") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = %name, "removed an unfinished backup"),
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "cannot remove an unfinished backup")
                }
            }
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct BackupSummary {
    pub tables: Vec<(String, u64)>,
}

impl BackupSummary {
    pub fn rows(&self, table: &str) -> Option<u64> {
        self.tables
            .iter()
            .find(|(n, _)| n == table)
            .map(|(_, c)| *c)
    }
}

/// Builds a backup beside the live file in `dir`, opens it and unlinks its
/// name at once (a crash then leaves nothing behind), and returns the open
/// file for streaming with what it holds.
pub fn take(
    store: &Store,
    dir: &Path,
    live_cache_bytes: usize,
) -> Result<(BackupSummary, std::fs::File), StoreError> {
    let path = dir.join(format!(
        "{TEMP_PREFIX}{}.redb",
        uuid::Uuid::now_v7().simple()
    ));
    let result = write_backup(store, &path, copy_cache_bytes(live_cache_bytes))
        .and_then(|summary| Ok((summary, std::fs::File::open(&path)?)));
    let _ = std::fs::remove_file(&path);
    result
}

/// The copy's page cache: a quarter of the live file's, so that a backup
/// adds a known, configured amount to the daemon's memory. Rows arrive in
/// key order, so a small cache loses little speed.
pub fn copy_cache_bytes(live_cache_bytes: usize) -> usize {
    (live_cache_bytes / 4).max(4 << 20)
}

/// Writes a consistent, compacted copy of the live database to `dest`, which
/// must not exist yet, with a page cache of `cache_bytes`. Runs alongside
/// the writer: it only reads the live file.
pub fn write_backup(
    store: &Store,
    dest: &Path,
    cache_bytes: usize,
) -> Result<BackupSummary, StoreError> {
    let mut copy = Database::builder()
        .set_cache_size(cache_bytes)
        .create(dest)?;
    let mut summary = BackupSummary::default();
    let mut txn = copy.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        // Held for the copying of rows only (see the module's notes).
        let snapshot = store.database().begin_read()?;
        for_each_table(&mut Copy {
            from: &snapshot,
            into: &txn,
            summary: &mut summary,
        })?;
    }
    txn.commit()?;
    // Compaction is allowed here because nobody else has the copy open.
    copy.compact()?;
    drop(copy);
    std::fs::File::open(dest)?.sync_all()?;
    Ok(summary)
}

/// Copies each table it visits from a snapshot into the new file.
struct Copy<'a> {
    from: &'a redb::ReadTransaction,
    into: &'a redb::WriteTransaction,
    summary: &'a mut BackupSummary,
}

impl TableVisitor for Copy<'_> {
    fn visit<K: Key + 'static, V: Value + 'static>(
        &mut self,
        def: TableDefinition<K, V>,
    ) -> Result<(), StoreError> {
        let source = self.from.open_table(def)?;
        let mut target = self.into.open_table(def)?;
        let mut rows = 0u64;
        for entry in redb::ReadableTable::iter(&source)? {
            let (k, v) = entry?;
            target.insert(k.value(), v.value())?;
            rows += 1;
        }
        self.summary.tables.push((def.name().to_owned(), rows));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    use redb::{ReadableTable, ReadableTableMetadata};

    use super::*;
    use crate::store::tables::META;

    fn meta_u64(table: &impl ReadableTable<&'static str, &'static [u8]>, key: &str) -> Option<u64> {
        let bytes = table.get(key).unwrap()?;
        Some(u64::from_le_bytes(bytes.value().try_into().unwrap()))
    }

    /// Each commit writes a pair of rows and the count of pairs; a copy from
    /// a torn view would hold a count without its pairs, or pairs beyond it.
    #[test]
    fn a_backup_under_concurrent_writes_is_one_consistent_moment() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("live.redb")).unwrap();
        {
            let txn = store.database().begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                for i in 0..20_000u32 {
                    meta.insert(format!("filler.{i:06}").as_str(), [7u8; 64].as_slice())
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let committed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (store, committed, stop) = (store.clone(), committed.clone(), stop.clone());
            std::thread::spawn(move || {
                for n in 1..=1_000_000u64 {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let mut txn = store.database().begin_write().unwrap();
                    txn.set_durability(Durability::None).unwrap();
                    {
                        let mut meta = txn.open_table(META).unwrap();
                        let value = n.to_le_bytes();
                        meta.insert(format!("left.{n}").as_str(), value.as_slice())
                            .unwrap();
                        meta.insert(format!("right.{n}").as_str(), value.as_slice())
                            .unwrap();
                        meta.insert("pairs", value.as_slice()).unwrap();
                    }
                    txn.commit().unwrap();
                    committed.store(n, Ordering::SeqCst);
                }
            })
        };
        let started = std::time::Instant::now();
        while committed.load(Ordering::SeqCst) < 10 {
            assert!(
                started.elapsed().as_secs() < 30,
                "the writer made no progress"
            );
            std::thread::yield_now();
        }
        let before = committed.load(Ordering::SeqCst);
        let dest = dir.path().join("copy.redb");
        let summary = write_backup(&store, &dest, 4 << 20).unwrap();
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        let after = committed.load(Ordering::SeqCst);

        let mut copy = Database::open(&dest).unwrap();
        assert!(copy.check_integrity().unwrap());
        let txn = copy.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let pairs = meta_u64(&meta, "pairs").expect("the count of pairs");
        assert!(
            (before..=after).contains(&pairs),
            "{before} <= {pairs} <= {after}"
        );
        for n in 1..=pairs {
            assert_eq!(meta_u64(&meta, &format!("left.{n}")), Some(n));
            assert_eq!(meta_u64(&meta, &format!("right.{n}")), Some(n));
        }
        assert_eq!(meta_u64(&meta, &format!("left.{}", pairs + 1)), None);
        assert_eq!(summary.rows("meta"), Some(meta.len().unwrap()));
        drop((meta, txn, copy));
        Store::open(&dest).expect("the copy opens as a Herald database");
    }
}
