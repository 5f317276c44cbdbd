//! The newest idempotency keys: appended in commit order, held in memory,
//! and merged into the sorted `event_keys` table in bulk.
//!
//! Clients send keys in an order of their own (UUIDs, one counter per
//! worker). Inserting each into the sorted table at commit time dirties a
//! leaf per key stream in every group commit, which cut single-event ingest
//! by more than half with 64 interleaved streams. Appending to a table keyed
//! by sequence number touches one leaf; a merge of thousands of keys sorted
//! together then rewrites each leaf of `event_keys` once.

use std::collections::HashMap;

use redb::{ReadableDatabase, ReadableTable};

use super::tables::{EVENT_KEYS, RECENT_EVENT_KEYS};
use super::StoreError;

/// Keys held before a merge. Bounds the writer's memory (about 100 bytes a
/// key) and the time one merge adds to the group commit that follows it.
pub const MERGE_THRESHOLD: usize = 8192;

/// The writer's copy of `recent_event_keys`, for lookups without a B-tree
/// search.
#[derive(Debug, Default)]
pub struct RecentKeys {
    by_key: HashMap<(String, String), (u64, u64)>,
}

impl RecentKeys {
    pub fn load(db: &redb::Database) -> Result<Self, StoreError> {
        let txn = db.begin_read()?;
        let table = txn.open_table(RECENT_EVENT_KEYS)?;
        let mut by_key = HashMap::new();
        for row in table.iter()? {
            let (seq, value) = row?;
            let (tenant, key, fingerprint) = value.value();
            by_key.insert(
                (tenant.to_owned(), key.to_owned()),
                (seq.value(), fingerprint),
            );
        }
        Ok(RecentKeys { by_key })
    }

    pub fn get(&self, tenant: &str, key: &str) -> Option<(u64, u64)> {
        // A borrowed tuple key cannot be looked up in a map of owned tuples
        // without allocating; keys are short, and this runs once per keyed
        // event on the writer thread.
        self.by_key
            .get(&(tenant.to_owned(), key.to_owned()))
            .copied()
    }

    /// Records a key appended by the transaction in progress. The caller
    /// writes the table row; `forget_from` undoes this if the commit fails.
    pub fn insert(&mut self, tenant: &str, key: &str, seq: u64, fingerprint: u64) {
        self.by_key
            .insert((tenant.to_owned(), key.to_owned()), (seq, fingerprint));
    }

    /// Drops keys of events at or after `seq`: a group commit that appended
    /// them failed.
    pub fn forget_from(&mut self, seq: u64) {
        self.by_key.retain(|_, (s, _)| *s < seq);
    }

    pub fn wants_merge(&self) -> bool {
        self.by_key.len() >= MERGE_THRESHOLD
    }

    /// Moves every recent key into `event_keys` in one durable transaction.
    /// The memory copy is cleared only once that committed, so a failed
    /// merge leaves both the file and the lookups as they were.
    pub fn merge(&mut self, db: &redb::Database) -> Result<(), StoreError> {
        let mut sorted: Vec<_> = self.by_key.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(|e| StoreError::Redb(e.into()))?;
        {
            let mut keys = txn.open_table(EVENT_KEYS)?;
            for ((tenant, key), value) in sorted {
                keys.insert((tenant.as_str(), key.as_str()), *value)?;
            }
        }
        // Recreated at once so that readers (backups) always find it.
        txn.delete_table(RECENT_EVENT_KEYS)?;
        txn.open_table(RECENT_EVENT_KEYS)?;
        txn.commit()?;
        self.by_key.clear();
        Ok(())
    }
}
