//! Consistent copies of the live file: one read transaction copies every
//! table into a fresh database, which is then compacted and fsynced. Copying
//! the file itself during writes would not be safe.

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
pub fn take(store: &Store, dir: &Path) -> Result<(BackupSummary, std::fs::File), StoreError> {
    let path = dir.join(format!(
        "{TEMP_PREFIX}{}.redb",
        uuid::Uuid::now_v7().simple()
    ));
    let result =
        write_backup(store, &path).and_then(|summary| Ok((summary, std::fs::File::open(&path)?)));
    let _ = std::fs::remove_file(&path);
    result
}

/// Writes a consistent, compacted copy of the live database to `dest`, which
/// must not exist yet. Runs alongside the writer: it only reads the live file.
pub fn write_backup(store: &Store, dest: &Path) -> Result<BackupSummary, StoreError> {
    let snapshot = store.database().begin_read()?;
    let mut copy = Database::builder().create(dest)?;
    let mut summary = BackupSummary::default();
    {
        let mut txn = copy.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        for_each_table(&mut Copy {
            from: &snapshot,
            into: &txn,
            summary: &mut summary,
        })?;
        txn.commit()?;
    }
    drop(snapshot);
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
