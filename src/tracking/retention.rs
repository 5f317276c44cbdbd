//! Background upkeep of tracked calls: expiring `messageId` keys older than
//! the deduplication window, and deleting calls older than the retention
//! age. Both work in small writer operations so ingestion keeps flowing.

use std::time::{Duration, Instant};

use super::segment::stored_person;
use super::settings::TrackingSettings;
use crate::clock;
use crate::store::log::IndexKeys;
use crate::store::{StoreError, WriteTxn, Writer};
use crate::worker::{Step, Worker};

/// Calls handled per writer operation: a few milliseconds of work.
const BATCH: usize = 500;
/// Pause between batches, so a large backlog shares the writer.
const BREATHER: Duration = Duration::from_millis(20);
const DEDUP_CURSOR: &str = "dedup_expired_to";

/// The upkeep of tracked calls, run every `prune_interval` as a worker.
pub struct Upkeep {
    writer: Writer,
    settings: TrackingSettings,
    phase: Phase,
}

/// Where a pass is: expiring keys first, then deleting old calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ExpireKeys,
    RemoveOld,
}

impl Upkeep {
    pub fn new(writer: Writer, settings: TrackingSettings) -> Self {
        Upkeep {
            writer,
            settings,
            phase: Phase::ExpireKeys,
        }
    }

    /// The pass is over: the next begins after the interval.
    fn rest(&mut self) -> Step {
        self.phase = Phase::ExpireKeys;
        Step::Idle(Some(Instant::now() + self.settings.prune_interval))
    }
}

impl Worker for Upkeep {
    fn name(&self) -> String {
        "tracking-upkeep".into()
    }

    /// One batch of the pass.
    fn work(&mut self) -> Step {
        let now = clock::now_ms();
        let done = match self.phase {
            Phase::ExpireKeys => {
                let before = now - self.settings.dedup_window.as_millis() as i64;
                self.writer
                    .write_blocking(move |txn| expire_keys(txn, before))
                    .map(|expired| (expired, expired < BATCH))
            }
            Phase::RemoveOld => {
                let Some(retention) = self.settings.retention else {
                    return self.rest();
                };
                let before = now - retention.as_millis() as i64;
                self.writer
                    .write_blocking(move |txn| remove_old(txn, before))
                    .map(|removed| {
                        if removed > 0 {
                            tracing::info!(removed, "pruned tracked calls past retention");
                        }
                        (removed, removed < BATCH - 1)
                    })
            }
        };
        match done {
            Ok((_, false)) => Step::Idle(Some(Instant::now() + BREATHER)),
            Ok((_, true)) if self.phase == Phase::ExpireKeys => {
                self.phase = Phase::RemoveOld;
                Step::Busy
            }
            Ok((_, true)) => self.rest(),
            Err(e) => {
                tracing::warn!(error = %e, "tracking upkeep failed; retrying at the next interval");
                self.rest()
            }
        }
    }
}

fn expire_keys(txn: &mut WriteTxn<'_>, before_ms: i64) -> Result<usize, StoreError> {
    let cursor = txn.track_cursor(DEDUP_CURSOR)?;
    let entries = txn.tracked_before(cursor, before_ms, BATCH)?;
    if entries.is_empty() {
        return Ok(0);
    }
    txn.flush_recent_tracked()?;
    for entry in &entries {
        txn.expire_track_key(entry.message_key, entry.seq)?;
    }
    if let Some(last) = entries.last() {
        txn.set_track_cursor(DEDUP_CURSOR, (last.received_ms, last.seq))?;
    }
    Ok(entries.len())
}

fn remove_old(txn: &mut WriteTxn<'_>, before_ms: i64) -> Result<usize, StoreError> {
    let entries = txn.tracked_before(None, before_ms, BATCH)?;
    if entries.is_empty() {
        return Ok(0);
    }
    txn.flush_recent_tracked()?;
    let mut removed = 0;
    for entry in &entries {
        if txn.is_last_event(entry.seq) {
            continue;
        }
        let Some(event) = txn.event_at(entry.seq)? else {
            continue;
        };
        let person = stored_person(&event.data);
        let type_hash = IndexKeys::of(&event.event_type, None).type_hash;
        txn.remove_tracked(entry, person, type_hash, event.occurred_at_ms)?;
        removed += 1;
    }
    Ok(removed)
}
