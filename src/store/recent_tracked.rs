//! The newest tracked calls' random-keyed index rows (deduplication keys
//! and person rows): appended by sequence number, held in memory, and
//! merged into `track_keys` and `track_by_person` a key range at a time.
//!
//! messageIds are random and people arrive in no order, so inserting each
//! call's rows into those sorted tables dirtied two leaves per call in every
//! group commit: two thirds of batched ingest time went there. Rows sorted
//! together rewrite each leaf once per merge instead.
//!
//! A merge of a whole generation in a transaction of its own held the
//! writer for 150–200 ms, which every request queued behind it waited out.
//! So a full generation is frozen and sorted, and each group commit merges
//! the next slice of its key order inside its own transaction: consecutive
//! keys share leaves, so over the sweep each leaf is still rewritten about
//! once, and no commit pays for more than its share.

use std::collections::HashMap;

use redb::{ReadableDatabase, ReadableTable};

use super::tables::{RECENT_TRACKED, TRACK_BY_PERSON, TRACK_KEYS};
use super::StoreError;

/// Calls held before they are frozen and swept into the sorted tables.
/// A sweep rewrites about every leaf of those tables whatever its size, so
/// a larger generation writes less per call; it costs the writer about 80
/// bytes of memory a call and person lookups a scan of the held table.
pub const GENERATION: usize = if cfg!(test) {
    // Small enough that unit tests sweep several generations quickly.
    2_048
} else {
    65_536
};

/// The least a slice merges, so a sweep under light load still ends.
const MIN_SLICE: usize = 1_024;

/// The writer's copy of `recent_tracked`.
#[derive(Debug, Default)]
pub struct RecentTracked {
    /// Every held key of either generation, for deduplication: a key leaves
    /// once it is in `track_keys` in the transaction in progress.
    keys: HashMap<u128, (u64, i64)>,
    /// Calls appended since the last freeze, in seq order.
    filling: Vec<HeldCall>,
    sweep: Option<Sweep>,
    /// Calls appended since the last slice, which the next one keeps pace with.
    appended: usize,
}

#[derive(Debug, Clone, Copy)]
struct HeldCall {
    seq: u64,
    key: u128,
    person: u64,
    received_ms: i64,
}

/// A frozen generation on its way into the sorted tables.
#[derive(Debug)]
struct Sweep {
    /// Sorted by key, then seq, so a key stored twice ends at its newest.
    keys: Vec<(u128, (u64, i64))>,
    /// Sorted.
    persons: Vec<(u64, u64)>,
    /// The generation's seqs, ascending: its `recent_tracked` rows, deleted
    /// once every key and person row is merged.
    seqs: Vec<u64>,
    keys_merged: usize,
    persons_merged: usize,
    seqs_deleted: usize,
}

impl Sweep {
    fn freeze(calls: Vec<HeldCall>) -> Sweep {
        let mut keys: Vec<_> = calls
            .iter()
            .filter(|c| c.key != 0)
            .map(|c| (c.key, (c.seq, c.received_ms)))
            .collect();
        keys.sort_unstable_by_key(|(key, (seq, _))| (*key, *seq));
        let mut persons: Vec<_> = calls.iter().map(|c| (c.person, c.seq)).collect();
        persons.sort_unstable();
        Sweep {
            keys,
            persons,
            seqs: calls.iter().map(|c| c.seq).collect(),
            keys_merged: 0,
            persons_merged: 0,
            seqs_deleted: 0,
        }
    }

    fn merged(&self) -> bool {
        self.keys_merged == self.keys.len() && self.persons_merged == self.persons.len()
    }
}

impl RecentTracked {
    pub fn load(db: &redb::Database) -> Result<Self, StoreError> {
        let txn = db.begin_read()?;
        let table = txn.open_table(RECENT_TRACKED)?;
        let mut recent = RecentTracked::default();
        // Rows of a sweep cut short by a restart are merged again: inserting
        // a row already in a sorted table changes nothing.
        for row in table.iter()? {
            let (seq, value) = row?;
            let (key, person, received) = value.value();
            recent.remember(seq.value(), key, person, received);
        }
        recent.appended = 0;
        Ok(recent)
    }

    fn remember(&mut self, seq: u64, key: u128, person: u64, received_ms: i64) {
        if key != 0 {
            self.keys.insert(key, (seq, received_ms));
        }
        self.filling.push(HeldCall {
            seq,
            key,
            person,
            received_ms,
        });
        self.appended += 1;
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

    pub fn is_empty(&self) -> bool {
        self.filling.is_empty() && self.sweep.is_none()
    }

    /// Merges the next slice of the sweep into the sorted tables inside
    /// `txn`, freezing the held calls into a new sweep once a generation is
    /// full. Called once per group commit, after its operations: it merges
    /// twice what the group appended (at least `MIN_SLICE`), so a sweep
    /// ends before the next generation is half full. If `txn` does not
    /// commit, the writer reloads this copy from the file.
    pub fn merge_slice(&mut self, txn: &redb::WriteTransaction) -> Result<(), StoreError> {
        let budget = (2 * self.appended).max(MIN_SLICE);
        self.appended = 0;
        if self.sweep.is_none() {
            if self.filling.len() < GENERATION {
                return Ok(());
            }
            self.sweep = Some(Sweep::freeze(std::mem::take(&mut self.filling)));
        }
        let sweep = self.sweep.as_mut().expect("frozen just above");
        if !sweep.merged() {
            let keys = &sweep.keys[sweep.keys_merged..];
            let keys = &keys[..budget.min(keys.len())];
            let mut table = txn.open_table(TRACK_KEYS)?;
            for &(key, value) in keys {
                table.insert(key, value)?;
            }
            sweep.keys_merged += keys.len();
            let persons = &sweep.persons[sweep.persons_merged..];
            let persons = &persons[..budget.min(persons.len())];
            let mut table = txn.open_table(TRACK_BY_PERSON)?;
            for &row in persons {
                table.insert(row, ())?;
            }
            sweep.persons_merged += persons.len();
            if sweep.merged() {
                // Now in `track_keys`; a key stored again since names its
                // newer call and stays.
                for (key, (seq, _)) in &sweep.keys {
                    if self.keys.get(key).is_some_and(|(held, _)| held == seq) {
                        self.keys.remove(key);
                    }
                }
            }
            return Ok(());
        }
        // Every row is merged: the held copies go, a slice at a time too.
        let remaining = &sweep.seqs[sweep.seqs_deleted..];
        let slice = &remaining[..budget.min(remaining.len())];
        if let (Some(&first), Some(&last)) = (slice.first(), slice.last()) {
            txn.open_table(RECENT_TRACKED)?
                .retain_in(first..=last, |_, _| false)?;
        }
        sweep.seqs_deleted += slice.len();
        if sweep.seqs_deleted == sweep.seqs.len() {
            self.sweep = None;
        }
        Ok(())
    }

    /// Merges every held row now, inside `txn`, and empties
    /// `recent_tracked`, for upkeep that needs every row in the sorted
    /// tables. If `txn` does not commit, the writer reloads this copy.
    pub fn merge_all(&mut self, txn: &redb::WriteTransaction) -> Result<(), StoreError> {
        let mut keys = Vec::new();
        let mut persons = Vec::new();
        if let Some(sweep) = self.sweep.take() {
            keys.extend_from_slice(&sweep.keys[sweep.keys_merged..]);
            persons.extend_from_slice(&sweep.persons[sweep.persons_merged..]);
        }
        for call in std::mem::take(&mut self.filling) {
            if call.key != 0 {
                keys.push((call.key, (call.seq, call.received_ms)));
            }
            persons.push((call.person, call.seq));
        }
        keys.sort_unstable_by_key(|(key, (seq, _))| (*key, *seq));
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
            txn.open_table(RECENT_TRACKED)?.retain(|_, _| false)?;
        }
        self.keys.clear();
        self.appended = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tables::RECENT_TRACKED;
    use redb::ReadableTableMetadata;

    fn open(dir: &tempfile::TempDir) -> redb::Database {
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(RECENT_TRACKED).unwrap();
        txn.open_table(TRACK_KEYS).unwrap();
        txn.open_table(TRACK_BY_PERSON).unwrap();
        txn.commit().unwrap();
        db
    }

    /// A call's key, person and arrival time, made up from its seq.
    fn call(seq: u64) -> (u128, u64, i64) {
        let key = u128::from(seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)) + 1;
        (key, seq % 97, seq as i64)
    }

    /// Appends `seqs` in one committed transaction, then merges a slice in
    /// another, as the writer does at each group commit.
    fn commit_group(db: &redb::Database, recent: &mut RecentTracked, seqs: std::ops::Range<u64>) {
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(RECENT_TRACKED).unwrap();
            for seq in seqs {
                let (key, person, received) = call(seq);
                recent
                    .insert(&mut table, seq, key, person, received)
                    .unwrap();
            }
        }
        recent.merge_slice(&txn).unwrap();
        txn.commit().unwrap();
    }

    fn count<K: redb::Key + 'static, V: redb::Value + 'static>(
        db: &redb::Database,
        table: redb::TableDefinition<K, V>,
    ) -> u64 {
        let txn = db.begin_read().unwrap();
        txn.open_table(table).unwrap().len().unwrap()
    }

    #[test]
    fn each_commit_merges_a_slice_and_every_key_stays_findable() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        let mut recent = RecentTracked::default();
        let per_group = 300u64;
        let groups = 3 * GENERATION as u64 / per_group;
        let mut largest_slice = 0;
        for group in 0..groups {
            let before = count(&db, TRACK_KEYS);
            let start = 1 + group * per_group;
            commit_group(&db, &mut recent, start..start + per_group);
            largest_slice = largest_slice.max(count(&db, TRACK_KEYS) - before);
            let read = db.begin_read().unwrap();
            let merged = read.open_table(TRACK_KEYS).unwrap();
            for seq in 1..start + per_group {
                let (key, _, received) = call(seq);
                let held = recent.seen(key, 0);
                let merged = merged.get(key).unwrap().map(|v| v.value());
                assert!(
                    held == Some(seq) || merged == Some((seq, received)),
                    "call {seq} lost after group {group}"
                );
            }
        }
        assert!(
            count(&db, TRACK_KEYS) >= GENERATION as u64,
            "a generation was swept"
        );
        assert!(
            largest_slice <= (2 * per_group as usize).max(MIN_SLICE) as u64,
            "no commit merged more than its slice: {largest_slice}"
        );
        // Held rows are those not yet swept out of `recent_tracked`.
        let held = count(&db, RECENT_TRACKED);
        assert!(held < 2 * GENERATION as u64, "{held} held");
        let merged_and_held = count(&db, TRACK_BY_PERSON) + held;
        assert!(merged_and_held >= groups * per_group);
    }

    #[test]
    fn a_restart_mid_sweep_merges_the_rest_and_finds_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        let mut recent = RecentTracked::default();
        let mut next = 1u64;
        // Small groups until a sweep has begun: part merged, the rest held.
        while count(&db, TRACK_KEYS) == 0 {
            commit_group(&db, &mut recent, next..next + 100);
            next += 100;
        }
        assert!(count(&db, TRACK_KEYS) < GENERATION as u64);
        drop(recent);

        let mut recent = RecentTracked::load(&db).unwrap();
        for seq in 1..next {
            assert_eq!(recent.seen(call(seq).0, 0), Some(seq));
        }
        for _ in 0..4 * GENERATION / MIN_SLICE {
            let txn = db.begin_write().unwrap();
            recent.merge_slice(&txn).unwrap();
            txn.commit().unwrap();
        }
        assert_eq!(count(&db, TRACK_KEYS), next - 1);
        assert_eq!(count(&db, TRACK_BY_PERSON), next - 1);
        assert_eq!(count(&db, RECENT_TRACKED), 0);
        assert!(recent.is_empty());
        assert_eq!(recent.seen(call(1).0, 0), None);
    }

    #[test]
    fn merge_all_leaves_nothing_held() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        let mut recent = RecentTracked::default();
        let total = GENERATION as u64 + 700;
        commit_group(&db, &mut recent, 1..total);
        commit_group(&db, &mut recent, total..total + 10);
        let txn = db.begin_write().unwrap();
        recent.merge_all(&txn).unwrap();
        txn.commit().unwrap();
        assert!(recent.is_empty());
        assert_eq!(count(&db, RECENT_TRACKED), 0);
        assert_eq!(count(&db, TRACK_KEYS), total + 9);
        assert_eq!(count(&db, TRACK_BY_PERSON), total + 9);
        assert_eq!(recent.seen(call(1).0, 0), None);
    }
}
