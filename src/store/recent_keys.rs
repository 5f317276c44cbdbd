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
//! held every request queued behind it for 25–70 ms. Now a sweep takes a
//! snapshot of the held keys, has it sorted on a thread of its own, and
//! then each group commit moves the next slice of that sorted run, sized by
//! the keys the group itself added, inside the group's own transaction.
//! Consecutive slices are contiguous key ranges, so each leaf is still
//! rewritten about once a sweep, and no group pays for more than about
//! twice its own keys. Then the journal's oldest rows (the keys held when
//! the sweep began, all moved by then) are dropped, slice by slice, in
//! sequence order. Lookups stay in a hash map: a sorted map of the held
//! keys cost the writer three times as much, comparing long keys that
//! share their first bytes.

use std::collections::HashMap;
use std::sync::Arc;

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

/// Held keys in the order `event_keys` keeps them.
type SortedKeys = Vec<(Arc<HeldKey>, (u64, u64))>;

/// The writer's copy of `recent_event_keys`, for lookups without a B-tree
/// search, and the sweep in progress.
#[derive(Debug, Default)]
pub struct RecentKeys {
    /// Shared with a sweep's snapshot, so taking one copies no string.
    by_key: HashMap<Arc<HeldKey>, (u64, u64)>,
    /// Keys held by the transaction in progress: the next slice's size.
    added: usize,
    sweep: Sweep,
}

#[derive(Debug, Default)]
enum Sweep {
    #[default]
    Idle,
    /// The keys held as the sweep began are being sorted elsewhere:
    /// sorting 32,768 keys takes the writer's time for a whole group.
    Sorting {
        sorted: crossbeam_channel::Receiver<SortedKeys>,
        /// Every journal row below this seq is a key of the snapshot.
        below: u64,
    },
    /// Keys of `sorted` before `next` are in `event_keys` already, and
    /// still held, so lookups and retention see them as before.
    Moving {
        sorted: SortedKeys,
        next: usize,
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
        let mut by_key = HashMap::new();
        for row in table.iter()? {
            let (seq, value) = row?;
            let (tenant, key, fingerprint) = value.value();
            by_key.insert(
                Arc::new((tenant.to_owned(), key.to_owned())),
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
        self.by_key.insert(
            Arc::new((tenant.to_owned(), key.to_owned())),
            (seq, fingerprint),
        );
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
            let snapshot: SortedKeys = self
                .by_key
                .iter()
                .map(|(key, value)| (key.clone(), *value))
                .collect();
            self.sweep = Sweep::Sorting {
                sorted: sort_elsewhere(snapshot),
                below: next_seq,
            };
        }
        if let Sweep::Sorting { sorted, below } = &self.sweep {
            match sorted.try_recv() {
                Ok(sorted) => {
                    self.sweep = Sweep::Moving {
                        sorted,
                        next: 0,
                        below: *below,
                    }
                }
                Err(crossbeam_channel::TryRecvError::Empty) => return Ok(()),
                // The sorting thread died: begin again at the next group.
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    self.sweep = Sweep::Idle;
                    return Ok(());
                }
            }
        }
        match &mut self.sweep {
            Sweep::Idle | Sweep::Sorting { .. } => {}
            Sweep::Moving {
                sorted,
                next,
                below,
            } => {
                let end = (*next + budget).min(sorted.len());
                for (held, value) in &sorted[*next..end] {
                    let (tenant, key) = &**held;
                    tables
                        .event_keys
                        .insert((tenant.as_str(), key.as_str()), *value)?;
                }
                *next = end;
                if end == sorted.len() {
                    self.sweep = Sweep::Dropping { below: *below };
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

/// `snapshot`, sorted in key order on a thread of its own. Should no thread
/// start, the channel closes empty and the next group begins the sweep again.
fn sort_elsewhere(mut snapshot: SortedKeys) -> crossbeam_channel::Receiver<SortedKeys> {
    let (sender, sorted) = crossbeam_channel::bounded(1);
    let spawned = std::thread::Builder::new()
        .name("herald-key-sort".into())
        .spawn(move || {
            snapshot.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let _ = sender.send(snapshot);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread to sort held idempotency keys; the sweep waits");
    }
    sorted
}
