//! Background upkeep of tracked calls: expiring `messageId` keys older than
//! the deduplication window, and deleting calls older than the retention
//! age. Both work in small writer operations so ingestion keeps flowing.

use std::time::{Duration, Instant};

use super::segment::stored_person;
use super::settings::TrackingSettings;
use crate::clock;
use crate::store::log::IndexKeys;
use crate::store::tracking::tracked_type_key;
use crate::store::{StoreError, WriteTxn, Writer};
use crate::worker::{Step, Worker};

/// Calls handled per writer operation: a few milliseconds of work.
pub(crate) const BATCH: usize = 500;
/// Pause between batches, so a large backlog shares the writer.
pub(crate) const BREATHER: Duration = Duration::from_millis(20);
/// Where key expiry got to: the (received ms, seq) of the last call whose
/// key it expired.
pub(crate) const DEDUP_CURSOR: &str = "dedup_expired_to";

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
        // Whether this phase has nothing older left.
        let finished = match self.phase {
            Phase::ExpireKeys => {
                let before = now - self.settings.dedup_window.as_millis() as i64;
                self.writer
                    .write_blocking(move |txn| expire_keys(txn, before))
                    .map(|expired| expired < BATCH)
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
                        removed < BATCH - 1
                    })
            }
        };
        match finished {
            Ok(false) => Step::Idle(Some(Instant::now() + BREATHER)),
            Ok(true) if self.phase == Phase::ExpireKeys => {
                self.phase = Phase::RemoveOld;
                Step::Busy
            }
            Ok(true) => self.rest(),
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
        let tenant = event.tenant.as_deref();
        let person = stored_person(tenant, &event.data);
        let index = IndexKeys::of(&event.event_type, tenant);
        let type_key = tracked_type_key(tenant, index.type_hash);
        txn.remove_tracked(entry, person, index, type_key, event.occurred_at_ms)?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tracking::{validate_tracking, TrackingSection};
    use crate::events::{self, AppendBatch};
    use crate::store::writer::WriteOp;
    use crate::store::Store;
    use crate::tracking::ingest;

    /// Prepared `track` calls with fresh message ids.
    fn calls(prefix: &str, n: usize) -> Vec<ingest::Prepared> {
        tenant_calls(None, prefix, n)
    }

    /// As `calls`, from a source bound to `tenant`.
    fn tenant_calls(tenant: Option<&str>, prefix: &str, n: usize) -> Vec<ingest::Prepared> {
        let settings = validate_tracking(TrackingSection::default()).unwrap();
        let items: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                serde_json::json!({"type": "track", "userId": format!("u{i}"), "event": "e",
                                   "messageId": format!("{prefix}{i}")})
            })
            .collect();
        let body = serde_json::json!({ "batch": items }).to_string();
        let parsed = ingest::parse(None, body.as_bytes(), &settings).unwrap();
        ingest::prepare(None, parsed, "src", tenant, clock::now_ms()).unwrap()
    }

    /// A tenant's calls are indexed under keys of the tenant; retention
    /// finds and removes them all the same.
    #[test]
    fn retention_removes_a_tenants_calls_from_every_index() {
        use crate::store::log::type_hash;
        use crate::store::tracking::{person_hash, PersonKind};

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("herald.redb")).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Default::default()).unwrap();
        let acme = tenant_calls(Some("acme"), "a", 3);
        writer
            .write_blocking(move |txn| ingest::append(txn, acme, 0, clock::now_ms()))
            .unwrap();
        let type_key = tracked_type_key(Some("acme"), type_hash("e"));
        let person = person_hash(Some("acme"), PersonKind::User, "u0");
        let hits = |store: &Store| {
            let read = store.read().unwrap();
            (
                read.event_hits(type_key, i64::MIN, i64::MAX).unwrap().len(),
                read.person_seqs(person, 0, usize::MAX).unwrap().len(),
            )
        };
        assert_eq!(hits(&store), (3, 1));
        // The last event of the log stays (its seq must never be reused).
        let later = clock::now_ms() + 3_600_000;
        let removed = writer
            .write_blocking(move |txn| remove_old(txn, later))
            .unwrap();
        assert_eq!(removed, 2);
        let (left, _) = hits(&store);
        assert_eq!(left, 1);
        assert_eq!(
            store
                .read()
                .unwrap()
                .person_seqs(person, 0, usize::MAX)
                .unwrap(),
            Vec::<u64>::new()
        );
        thread.stop();
    }

    /// Operations of every kind may meet in one group commit, in any
    /// order: none may trip over a table another left open (redb opens a
    /// table once at a time per transaction, and the store caches some).
    #[test]
    fn upkeep_ingest_and_fan_out_share_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("herald.redb")).unwrap();
        let (writer, thread) = Writer::start(&store, 64, 64, Default::default()).unwrap();
        // The first operation holds the writer until the rest are queued,
        // so the rest commit together in the next group.
        let (release, held) = crossbeam_channel::bounded::<()>(0);
        writer.submit(
            move |_| {
                let _ = held.recv();
                Ok(())
            },
            |_| {},
        );
        let (done_tx, done) = crossbeam_channel::unbounded();
        let later = clock::now_ms() + 3_600_000;
        let submit = |op: WriteOp| {
            let done_tx = done_tx.clone();
            writer.submit(op, move |committed| {
                let _ = done_tx.send(committed);
            });
        };
        let first = calls("a", 10);
        submit(Box::new(move |txn| {
            ingest::append(txn, first, 0, clock::now_ms()).map(drop)
        }));
        submit(Box::new(move |txn| expire_keys(txn, later).map(drop)));
        let second = calls("b", 10);
        submit(Box::new(move |txn| {
            ingest::append(txn, second, 0, clock::now_ms()).map(drop)
        }));
        submit(Box::new(move |txn| remove_old(txn, later).map(drop)));
        let mut endpoint = crate::webhooks::endpoint::new_record(clock::now_ms());
        endpoint.url = "https://example.com/hook".into();
        submit(Box::new(move |txn| txn.put_endpoint(endpoint)));
        let event = events::parse_event(br#"{"type":"invoice.paid"}"#).unwrap();
        submit(Box::new(move |txn| {
            events::append(txn, AppendBatch::one(event)).map(drop)
        }));
        let third = calls("c", 10);
        submit(Box::new(move |txn| {
            ingest::append(txn, third, 0, clock::now_ms()).map(drop)
        }));
        drop(release);
        for n in 0..7 {
            let committed = done
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("every operation hears back");
            assert!(committed, "operation {n} of the group was not committed");
        }
        thread.stop();
    }
}
