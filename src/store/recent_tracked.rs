//! The newest tracked calls' random-keyed index rows (deduplication keys
//! and person rows): appended by sequence number, held in memory, merged
//! into `track_keys` and `track_by_person` in bulk.
//!
//! messageIds are random and people arrive in no order, so inserting each
//! call's rows into those sorted tables dirtied two leaves per call in every
//! group commit: two thirds of batched ingest time went there. A merge of
//! thousands of rows sorted together rewrites each leaf once.

use std::collections::HashMap;

use redb::{ReadableDatabase, ReadableTable};

use super::tables::{RECENT_TRACKED, TRACK_BY_PERSON, TRACK_KEYS};
use super::StoreError;

/// Calls held before a merge: bounds the writer's memory (about 60 bytes a
/// call) and the time one merge takes.
pub const MERGE_THRESHOLD: usize = 32_768;

/// The writer's copy of `recent_tracked`.
#[derive(Debug, Default)]
pub struct RecentTracked {
    keys: HashMap<u128, (u64, i64)>,
    persons: Vec<(u64, u64)>,
}

impl RecentTracked {
    pub fn load(db: &redb::Database) -> Result<Self, StoreError> {
        let txn = db.begin_read()?;
        let table = txn.open_table(RECENT_TRACKED)?;
        let mut recent = RecentTracked::default();
        for row in table.iter()? {
            let (seq, value) = row?;
            let (key, person, received) = value.value();
            recent.remember(seq.value(), key, person, received);
        }
        Ok(recent)
    }

    fn remember(&mut self, seq: u64, key: u128, person: u64, received_ms: i64) {
        if key != 0 {
            self.keys.insert(key, (seq, received_ms));
        }
        self.persons.push((person, seq));
    }

    /// The seq a message key was stored at, if held here and received since
    /// `not_before_ms`.
    pub fn seen(&self, key: u128, not_before_ms: i64) -> Option<u64> {
        self.keys
            .get(&key)
            .filter(|(_, received)| *received >= not_before_ms)
            .map(|(seq, _)| *seq)
    }

    /// Records a call appended by the transaction in progress, with its row.
    pub fn insert(
        &mut self,
        table: &mut redb::Table<'_, u64, (u128, u64, i64)>,
        seq: u64,
        key: u128,
        person: u64,
        received_ms: i64,
    ) -> Result<(), StoreError> {
        table.insert(seq, (key, person, received_ms))?;
        self.remember(seq, key, person, received_ms);
        Ok(())
    }

    pub fn wants_merge(&self) -> bool {
        self.persons.len() >= MERGE_THRESHOLD
    }

    pub fn is_empty(&self) -> bool {
        self.persons.is_empty()
    }

    /// Moves every held row into the sorted tables inside `txn` and empties
    /// `recent_tracked`. The memory copy is cleared by the caller once `txn`
    /// committed (`clear`), or reloaded if it did not.
    pub fn merge_into(&self, txn: &redb::WriteTransaction) -> Result<(), StoreError> {
        let mut keys: Vec<_> = self.keys.iter().map(|(k, v)| (*k, *v)).collect();
        keys.sort_unstable_by_key(|(k, _)| *k);
        let mut persons = self.persons.clone();
        persons.sort_unstable();
        {
            let mut table = txn.open_table(TRACK_KEYS)?;
            for (key, value) in keys {
                table.insert(key, value)?;
            }
            let mut table = txn.open_table(TRACK_BY_PERSON)?;
            for row in persons {
                table.insert(row, ())?;
            }
            let mut recent = txn.open_table(RECENT_TRACKED)?;
            recent.retain(|_, _| false)?;
        }
        Ok(())
    }

    pub fn clear(&mut self) {
        self.keys.clear();
        self.persons.clear();
    }

    /// Merges in a transaction of its own, committed durably.
    pub fn merge(&mut self, db: &redb::Database) -> Result<(), StoreError> {
        let mut txn = db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(|e| StoreError::Redb(e.into()))?;
        self.merge_into(&txn)?;
        txn.commit()?;
        self.clear();
        Ok(())
    }
}
