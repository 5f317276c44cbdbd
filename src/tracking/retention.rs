//! Background upkeep of tracked calls: expiring `messageId` keys older than
//! the deduplication window, and deleting calls older than the retention
//! age. Both work in small writer operations so ingestion keeps flowing.

use std::time::Duration;

use super::segment::stored_person;
use crate::clock;
use crate::config::tracking::TrackingSettings;
use crate::store::event_log::IndexKeys;
use crate::store::{StoreError, WriteTxn, Writer};

/// Calls handled per writer operation: a few milliseconds of work.
const BATCH: usize = 500;
/// Pause between batches, so a large backlog shares the writer.
const BREATHER: Duration = Duration::from_millis(20);
const DEDUP_CURSOR: &str = "dedup_expired_to";

pub async fn run(writer: Writer, settings: TrackingSettings) {
    let window_ms = settings.dedup_window.as_millis() as i64;
    let retention_ms = settings.retention.map(|r| r.as_millis() as i64);
    loop {
        if let Err(e) = pass(&writer, window_ms, retention_ms).await {
            tracing::warn!(error = %e, "tracking upkeep failed; retrying at the next interval");
        }
        tokio::time::sleep(settings.prune_interval).await;
    }
}

/// One full pass: both jobs until nothing older is left.
pub async fn pass(
    writer: &Writer,
    window_ms: i64,
    retention_ms: Option<i64>,
) -> Result<(), crate::store::SubmitError> {
    loop {
        let now = clock::now_ms();
        let done = writer
            .write(move |txn| expire_keys(txn, now - window_ms))
            .await?;
        if done < BATCH {
            break;
        }
        tokio::time::sleep(BREATHER).await;
    }
    let Some(retention_ms) = retention_ms else {
        return Ok(());
    };
    loop {
        let now = clock::now_ms();
        let removed = writer
            .write(move |txn| remove_old(txn, now - retention_ms))
            .await?;
        if removed > 0 {
            tracing::info!(removed, "pruned tracked calls past retention");
        }
        if removed < BATCH - 1 {
            return Ok(());
        }
        tokio::time::sleep(BREATHER).await;
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
        // The log's last event stays: sequence numbers resume from it after
        // a restart and must never be handed out twice.
        if entry.seq + 1 >= txn.log.next_seq {
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
