//! The newest idempotency keys: appended in commit order, held in memory,
//! and moved into the sorted `event_keys` table by a sweep that each group
//! commit advances a slice at a time.
//!
//! Clients send keys in an order of their own (UUIDs, one counter per
//! worker). Inserting each into the sorted table at commit time dirties a
//! leaf per key stream in every group commit, which cut single-event ingest
//! by more than half with 64 interleaved streams. Appending to a table keyed
//! by sequence number touches one leaf; moving thousands of held keys sorted
//! together then rewrites each leaf of `event_keys` about once.
//!
//! The move used to be one transaction of its own between two groups, which
//! held every request queued behind it for 25–70 ms. Now the held keys are
//! kept sorted, and a sweep walks them in key order: each group commit moves
//! the next slice, sized by the keys the group itself added, inside the
//! group's own transaction. Consecutive slices are contiguous key ranges, so
//! each leaf is still rewritten about once a sweep, and no group pays for
//! more than about twice its own keys. Then the journal's oldest rows (the
//! keys held when the sweep began, all moved by then) are dropped, slice by
//! slice, in sequence order.

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::{ReadableDatabase, ReadableTable};

use super::tables::RECENT_EVENT_KEYS;
use super::StoreError;

/// Keys held before a sweep starts. Bounds the writer's memory (about 100
/// bytes a key) and sets how many keys a sweep moves together: the more,
/// the more of them share a leaf when keys come in runs (one counter per
/// client, time-ordered ids).
/// Unit tests sweep a smaller set: the walk is the same, and a debug build
/// appends a hundred thousand keys slowly.
pub const MERGE_THRESHOLD: usize = if cfg!(test) { 4096 } else { 32_768 };

/// The smallest slice a group moves while a sweep is under way, so that a
/// trickle of single events still finishes a sweep in a few hundred commits.
const MIN_SLICE: usize = 512;

type HeldKey = (String, String);

/// The writer's copy of `recent_event_keys`, for lookups without a B-tree
/// search, and the sweep in progress.
#[derive(Debug, Default)]
pub struct RecentKeys {
    by_key: BTreeMap<HeldKey, (u64, u64)>,
    /// Keys held by the transaction in progress: the next slice's size.
    added: usize,
    sweep: Sweep,
}

#[derive(Debug, Default)]
enum Sweep {
    #[default]
    Idle,
    /// Held keys up to `moved` are in `event_keys` already, and still
    /// held, so lookups and retention see them as before. A key added
    /// behind the cursor waits for the next sweep.
    Moving {
        moved: Option<HeldKey>,
        /// Every journal row below this seq was held when the sweep began,
        /// so the sweep's walk passes it.
        below: u64,
    },
    /// Every key of the journal below `below` is in `event_keys`: drop
    /// those rows and forget the keys, oldest first.
    Dropping { below: u64 },
}

/// The tables a sweep step writes, as the group transaction opened them.
pub struct SweepTables<'a, 't> {
    pub event_keys: &'a mut redb::Table<'t, (&'static str, &'static str), (u64, u64)>,
    pub journal: &'a mut redb::Table<'t, u64, (&'static str, &'static str, u64)>,
}

impl RecentKeys {
    pub fn load(db: &redb::Database) -> Result<Self, StoreError> {
        let txn = db.begin_read()?;
        let table = txn.open_table(RECENT_EVENT_KEYS)?;
        let mut by_key = BTreeMap::new();
        for row in table.iter()? {
            let (seq, value) = row?;
            let (tenant, key, fingerprint) = value.value();
            by_key.insert(
                (tenant.to_owned(), key.to_owned()),
                (seq.value(), fingerprint),
            );
        }
        // A sweep cut short by a restart begins again: moving a key twice
        // writes the same row twice.
        Ok(RecentKeys {
            by_key,
            added: 0,
            sweep: Sweep::Idle,
        })
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
    /// writes the journal row; if the commit fails the writer reloads this
    /// copy from the file.
    pub fn insert(&mut self, tenant: &str, key: &str, seq: u64, fingerprint: u64) {
        self.by_key
            .insert((tenant.to_owned(), key.to_owned()), (seq, fingerprint));
        self.added += 1;
    }

    /// Advances the sweep by one slice inside the group transaction, after
    /// the group's own operations: `next_seq` is where the log continues.
    /// Everything it changes in memory is undone by reloading from the file
    /// should the group not commit.
    pub fn sweep_step(
        &mut self,
        tables: SweepTables<'_, '_>,
        next_seq: u64,
    ) -> Result<(), StoreError> {
        let budget = (2 * std::mem::take(&mut self.added)).max(MIN_SLICE);
        if matches!(self.sweep, Sweep::Idle) && self.by_key.len() >= MERGE_THRESHOLD {
            self.sweep = Sweep::Moving {
                moved: None,
                below: next_seq,
            };
        }
        match &mut self.sweep {
            Sweep::Idle => {}
            Sweep::Moving { moved, below } => {
                let after = moved.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
                let mut count = 0;
                let mut last = None;
                for (held, value) in self.by_key.range((after, Bound::Unbounded)).take(budget) {
                    let (tenant, key) = held;
                    tables
                        .event_keys
                        .insert((tenant.as_str(), key.as_str()), *value)?;
                    count += 1;
                    last = Some(held);
                }
                if count < budget {
                    self.sweep = Sweep::Dropping { below: *below };
                } else {
                    *moved = last.cloned();
                }
            }
            Sweep::Dropping { below } => {
                let below = *below;
                let mut dropped = Vec::with_capacity(budget.min(self.by_key.len()));
                for row in tables
                    .journal
                    .extract_from_if(..below, |_, _| true)?
                    .take(budget)
                {
                    let (seq, row) = row?;
                    let (tenant, key, _) = row.value();
                    dropped.push((seq.value(), (tenant.to_owned(), key.to_owned())));
                }
                if dropped.len() < budget {
                    self.sweep = Sweep::Idle;
                }
                for (seq, held) in dropped {
                    if self.by_key.get(&held).is_some_and(|(s, _)| *s == seq) {
                        self.by_key.remove(&held);
                    }
                }
            }
        }
        Ok(())
    }
}
