//! Consistent copies of the live file: one read transaction copies every
//! table into a fresh database, which is then compacted and fsynced. Copying
//! the file itself during writes would not be safe.

use std::path::Path;

use redb::{
    Database, Durability, Key, ReadableDatabase, ReadableTable, TableDefinition, TableHandle, Value,
};

use super::mail;
use super::recent_keys::RECENT_EVENT_KEYS;
use super::tracking;
use super::webhooks::{
    DELIVERIES, DELIVERIES_BY_ENDPOINT, DELIVERIES_BY_EVENT, DELIVERIES_DUE, ENDPOINTS,
};
use super::{Store, StoreError, EVENTS, EVENTS_BY_TENANT, EVENTS_BY_TYPE, EVENT_KEYS, META};

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

/// Every table in the file. A table missing here would silently be left out
/// of backups; a unit test compares this list with the tables of a fresh file.
macro_rules! for_each_table {
    ($f:ident, $($arg:expr),*) => {{
        $f(META, $($arg),*)?;
        $f(EVENTS, $($arg),*)?;
        $f(EVENT_KEYS, $($arg),*)?;
        $f(RECENT_EVENT_KEYS, $($arg),*)?;
        $f(ENDPOINTS, $($arg),*)?;
        $f(DELIVERIES, $($arg),*)?;
        $f(DELIVERIES_DUE, $($arg),*)?;
        $f(DELIVERIES_BY_ENDPOINT, $($arg),*)?;
        $f(DELIVERIES_BY_EVENT, $($arg),*)?;
        $f(EVENTS_BY_TYPE, $($arg),*)?;
        $f(EVENTS_BY_TENANT, $($arg),*)?;
        $f(mail::EMAILS, $($arg),*)?;
        $f(mail::EMAILS_DUE, $($arg),*)?;
        $f(mail::EMAILS_BY_TO, $($arg),*)?;
        $f(mail::EMAIL_KEYS, $($arg),*)?;
        $f(mail::SUPPRESSIONS, $($arg),*)?;
        $f(mail::SOFT_BOUNCES, $($arg),*)?;
        $f(tracking::TRACK_KEYS, $($arg),*)?;
        $f(tracking::TRACKED, $($arg),*)?;
        $f(tracking::TRACK_BY_PERSON, $($arg),*)?;
        $f(tracking::TRACK_BY_EVENT, $($arg),*)?;
        $f(tracking::TOUCHES, $($arg),*)?;
        $f(tracking::PROFILES, $($arg),*)?;
        $f(tracking::PERSON_LINKS, $($arg),*)?;
        $f(tracking::TRACK_META, $($arg),*)?;
        $f(super::recent_tracked::RECENT_TRACKED, $($arg),*)?;
    }};
}

/// Writes a consistent, compacted copy of the live database to `dest`, which
/// must not exist yet. Runs alongside the writer: it only reads the live file.
pub fn write_backup(store: &Store, dest: &Path) -> Result<BackupSummary, StoreError> {
    let snapshot = store.database().begin_read()?;
    let mut copy = Database::builder()
        .create(dest)
        .map_err(redb::Error::from)?;
    let mut summary = BackupSummary::default();
    {
        let mut txn = copy.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| StoreError::Redb(e.into()))?;
        for_each_table!(copy_table, &snapshot, &txn, &mut summary);
        txn.commit()?;
    }
    drop(snapshot);
    // Compaction is allowed here because nobody else has the copy open.
    copy.compact().map_err(redb::Error::from)?;
    drop(copy);
    std::fs::File::open(dest)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::Redb(redb::StorageError::Io(e).into()))?;
    Ok(summary)
}

fn copy_table<K: Key + 'static, V: Value + 'static>(
    def: TableDefinition<K, V>,
    from: &redb::ReadTransaction,
    into: &redb::WriteTransaction,
    summary: &mut BackupSummary,
) -> Result<(), StoreError> {
    let source = from.open_table(def)?;
    let mut target = into.open_table(def)?;
    let mut rows = 0u64;
    for entry in source.iter()? {
        let (k, v) = entry?;
        target.insert(k.value(), v.value())?;
        rows += 1;
    }
    summary.tables.push((def.name().to_owned(), rows));
    Ok(())
}

/// Names of the tables `write_backup` copies.
#[cfg(test)]
fn table_names() -> Vec<String> {
    fn name<K: Key + 'static, V: Value + 'static>(
        def: TableDefinition<K, V>,
        out: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        out.push(def.name().to_owned());
        Ok(())
    }
    let mut out = Vec::new();
    let result: Result<(), StoreError> = (|| {
        for_each_table!(name, &mut out);
        Ok(())
    })();
    result.expect("listing names cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_covers_every_table_of_a_fresh_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("live.redb")).unwrap();
        let txn = store.database().begin_read().unwrap();
        let mut live: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_owned())
            .collect();
        live.sort();
        let mut copied = table_names();
        copied.sort();
        assert_eq!(live, copied);
    }
}
