//! Bounded reads behind the operator's overview: arrivals per minute found
//! by searching the log instead of scanning it, the schedule counted up
//! to a cap, and its oldest job found by one seek per key.

use std::collections::BTreeMap;

use redb::ReadableTable;

use super::attempt_tally::AttemptTally;
use super::due::{count_up_to, Bounded, DueSummary, Queue};
use super::mail::email_status_code;
use super::records::{EmailStatus, EventRecord, StreamStateRecord};
use super::streams::Windows;
use super::tables::{EMAILS_BY_STREAM_STATUS, EVENTS};
use super::{get_record, ReadTxn, StoreError};

/// What the overview shows of the hour up to now, as either backend reads
/// it from one snapshot (this file on redb, `pg::overview` on PostgreSQL),
/// so one piece of code turns it into the answer.
pub struct OverviewReading {
    /// For each minute boundary, the log position reached by then (see
    /// `ReadTxn::log_positions_at`).
    pub log_positions: Vec<u64>,
    /// Every endpoint's attempt tallies added up, by minute.
    pub per_minute: BTreeMap<i64, AttemptTally>,
    pub webhooks: DueSummary,
    pub mail: DueSummary,
    /// The configured streams, in the order asked for.
    pub streams: Vec<StreamNow>,
}

/// A mail stream now: its guard's state and windows, and its messages
/// waiting, each counted up to a cap.
pub struct StreamNow {
    pub name: String,
    pub state: StreamStateRecord,
    pub windows: Windows,
    pub queued: Bounded,
    pub deferred: Bounded,
}

/// What the overview asks for: `minutes` whole minutes from
/// `first_minute` (Unix minutes), the streams by name, now, and where
/// counting stops.
#[derive(Clone)]
pub struct OverviewRequest {
    pub first_minute: i64,
    pub minutes: i64,
    pub streams: Vec<String>,
    pub now_ms: i64,
    pub count_cap: u64,
}

impl OverviewRequest {
    /// The minutes' boundaries, in Unix ms: the start of each and the end
    /// of the last.
    pub fn boundaries(&self) -> Vec<i64> {
        (0..=self.minutes)
            .map(|i| (self.first_minute + i) * MINUTE_MS)
            .collect()
    }
}

const MINUTE_MS: i64 = 60_000;

impl ReadTxn {
    /// The overview's reading, with bounded reads: a binary search of the
    /// log per boundary, the tallies of the hour per endpoint, the exact
    /// pending count every endpoint keeps, and each stream's mail counted
    /// up to the cap.
    pub fn overview(&self, asked: &OverviewRequest) -> Result<OverviewReading, StoreError> {
        let log_positions = self.log_positions_at(&asked.boundaries())?;
        let mut per_minute: BTreeMap<i64, AttemptTally> = BTreeMap::new();
        // The exact counts every status change keeps, so a backlog of
        // millions costs one row per endpoint.
        let mut pending = 0;
        for endpoint in self.endpoints()? {
            for (minute, tally) in self.endpoint_attempt_tallies(endpoint.id, asked.first_minute)? {
                per_minute.entry(minute).or_default().merge(&tally);
            }
            pending += self.endpoint_delivery_counts(endpoint.id)?.pending;
        }
        let mut streams = Vec::with_capacity(asked.streams.len());
        for name in &asked.streams {
            streams.push(StreamNow {
                state: self.stream_state(name)?,
                windows: self.stream_windows(name, asked.now_ms)?,
                queued: self.stream_status_count(name, EmailStatus::Queued, asked.count_cap)?,
                deferred: self.stream_status_count(name, EmailStatus::Deferred, asked.count_cap)?,
                name: name.clone(),
            });
        }
        Ok(OverviewReading {
            log_positions,
            per_minute,
            webhooks: DueSummary {
                jobs: Bounded {
                    count: pending,
                    capped: false,
                },
                // The count is exact from the per-endpoint counts: no need
                // to count the schedule's rows.
                earliest_due_ms: self.due_summary(Queue::Webhooks, 0)?.earliest_due_ms,
            },
            mail: self.due_summary(Queue::Mail, asked.count_cap)?,
            streams,
        })
    }

    /// For each of `boundaries` (ascending Unix ms), the seq the log had
    /// reached by then: the first event received at or after it, or one past
    /// the last. Differences of neighbours are the events received between
    /// them, deleted ones included. Each boundary costs a binary search.
    pub fn log_positions_at(&self, boundaries: &[i64]) -> Result<Vec<u64>, StoreError> {
        let events = self.txn.open_table(EVENTS)?;
        let (Some(first), Some(last)) = (events.first()?, events.last()?) else {
            return Ok(vec![1; boundaries.len()]);
        };
        let (first, last) = (first.0.value(), last.0.value());
        // Retention leaves holes: a probe lands on the next stored event.
        let at_or_after = |seq: u64| -> Result<Option<(u64, EventRecord)>, StoreError> {
            let Some(row) = events.range(seq..)?.next() else {
                return Ok(None);
            };
            let found = row?.0.value();
            Ok(get_record::<u64, EventRecord>(&events, found)?.map(|r| (found, r)))
        };
        let mut out = Vec::with_capacity(boundaries.len());
        let mut lo = first;
        for &boundary in boundaries {
            let mut hi = last + 1;
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match at_or_after(mid)? {
                    Some((seq, r)) if r.received_at_ms < boundary => lo = seq + 1,
                    _ => hi = mid,
                }
            }
            out.push(lo);
        }
        Ok(out)
    }

    /// The messages of `stream` now in `status`, counted up to `cap`.
    pub fn stream_status_count(
        &self,
        stream: &str,
        status: EmailStatus,
        cap: u64,
    ) -> Result<Bounded, StoreError> {
        let code = email_status_code(status);
        let table = self.txn.open_table(EMAILS_BY_STREAM_STATUS)?;
        count_up_to(
            table.range((stream, code, 0)..=(stream, code, u64::MAX))?,
            cap,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::log::{IndexKeys, NewEventRow};
    use crate::store::records::EventSource;
    use crate::store::writer::Listeners;
    use crate::store::{Queue, Store, Writer};

    fn row() -> NewEventRow {
        NewEventRow {
            event_type: "a".into(),
            tenant: None,
            idempotency_key: None,
            occurred_at_ms: None,
            data: "{}".into(),
            data_version: 1,
            older_versions: Vec::new(),
            source: EventSource::Api,
            fingerprint: 0,
            nonce: 0,
            index: IndexKeys::of("a", None),
        }
    }

    #[test]
    fn log_positions_count_arrivals_between_boundaries_across_holes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.redb")).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        writer
            .write_blocking(|txn| {
                for at in [1_000, 1_000, 61_000, 125_000, 125_000, 125_500] {
                    txn.append_event(row(), at)?;
                }
                // Retention took the first event of the third minute.
                txn.remove_event(4, IndexKeys::of("a", None))?;
                for (endpoint, due) in [(7u128, 500), (7, 300), (9, 900)] {
                    txn.create_delivery(endpoint, 1, 1, "a", due)?;
                }
                Ok(())
            })
            .unwrap();
        thread.stop();
        let txn = store.read().unwrap();
        assert_eq!(
            txn.log_positions_at(&[0, 60_000, 120_000, 180_000])
                .unwrap(),
            [1, 3, 4, 7]
        );
        assert_eq!(txn.log_positions_at(&[200_000]).unwrap(), [7]);

        assert_eq!(
            txn.due_summary(Queue::Webhooks, 10).unwrap().jobs,
            Bounded {
                count: 3,
                capped: false
            }
        );
        assert_eq!(
            txn.due_summary(Queue::Webhooks, 2).unwrap().jobs,
            Bounded {
                count: 2,
                capped: true
            }
        );
        assert_eq!(
            txn.due_summary(Queue::Webhooks, 0).unwrap().earliest_due_ms,
            Some(300)
        );
        assert_eq!(txn.due_summary(Queue::Mail, 10).unwrap().jobs.count, 0);
        assert_eq!(
            txn.due_summary(Queue::Mail, 10).unwrap().earliest_due_ms,
            None
        );
    }
}
