//! The file's schema version: checked when the file opens, every table of
//! the current layout created, and older layouts migrated in that same
//! transaction, so a file is either wholly old or wholly new.

use redb::{Database, Key, ReadableTable, TableDefinition, Value};

use super::codec::{decode, encode};
use super::due::{stream_key, Queue};
use super::records::{DeliveryRecord, EmailRecord, EventRecord, EventSource};
use super::tables::{
    for_each_table, TableVisitor, DELIVERIES, DELIVERIES_BY_ENDPOINT_STATUS, DELIVERIES_BY_STATUS,
    DUE, EMAILS, ENDPOINT_ATTEMPTS, ENDPOINT_DELIVERY_COUNTS, EVENTS, META, RECENT_TRACKED,
    TRACKED,
};
use super::webhooks::{tally_attempts, StatusIndex};
use super::StoreError;

/// Bumped when a table's key or value layout changes. A file whose version is
/// newer than this binary's is refused instead of misread.
///
/// 1: the first layout. 2: one `due` table keyed by (queue, key, due, id)
/// replaces `deliveries_due` and `emails_due`. 3: tracked calls in `events`
/// say that they are tracked (`source`); deliveries and messages indexed by
/// status, and each endpoint's delivery counts and attempt tallies. 4:
/// soft bounces kept as the days they happened on (`soft_bounce_days`)
/// instead of a count in a row (`soft_bounces`).
pub const SCHEMA_VERSION: u32 = 4;

const SCHEMA_KEY: &str = "schema_version";

pub(super) enum PrepareError {
    Newer(u32),
    Damaged(String),
    Store(StoreError),
}

impl<E: Into<StoreError>> From<E> for PrepareError {
    fn from(e: E) -> Self {
        PrepareError::Store(e.into())
    }
}

/// Checks the version, migrates an older layout and creates every table.
pub(super) fn prepare(db: &Database) -> Result<(), PrepareError> {
    let txn = db.begin_write()?;
    let found = {
        let meta = txn.open_table(META)?;
        let found = meta.get(SCHEMA_KEY)?.map(|v| v.value().to_vec());
        found
    };
    let found = match found {
        None => None,
        Some(bytes) => {
            let bytes: [u8; 4] = bytes.as_slice().try_into().map_err(|_| {
                PrepareError::Damaged(format!(
                    "meta.{SCHEMA_KEY} holds {} bytes, expected 4",
                    bytes.len()
                ))
            })?;
            Some(u32::from_le_bytes(bytes))
        }
    };
    match found {
        Some(version) if version > SCHEMA_VERSION => return Err(PrepareError::Newer(version)),
        Some(1) => {
            migrate_v1(&txn)?;
            migrate_v2(&txn)?;
            migrate_v3(&txn)?;
        }
        Some(2) => {
            migrate_v2(&txn)?;
            migrate_v3(&txn)?;
        }
        Some(3) => migrate_v3(&txn)?,
        _ => {}
    }
    if found != Some(SCHEMA_VERSION) {
        txn.open_table(META)?
            .insert(SCHEMA_KEY, SCHEMA_VERSION.to_le_bytes().as_slice())?;
    }
    // Creating every table up front lets readers open them without racing
    // the first write.
    struct Create<'a>(&'a redb::WriteTransaction);
    impl TableVisitor for Create<'_> {
        fn visit<K: Key + 'static, V: Value + 'static>(
            &mut self,
            table: TableDefinition<K, V>,
        ) -> Result<(), StoreError> {
            self.0.open_table(table)?;
            Ok(())
        }
    }
    for_each_table(&mut Create(&txn))?;
    txn.commit()?;
    Ok(())
}

/// Version 1's webhook schedule: (due ms, delivery id) → endpoint id.
const DELIVERIES_DUE_V1: TableDefinition<(u64, u64), u128> = TableDefinition::new("deliveries_due");
/// Version 1's mail schedule: (due ms, message id) → stream.
const EMAILS_DUE_V1: TableDefinition<(u64, u64), &str> = TableDefinition::new("emails_due");

/// Moves both schedules into `due`, keyed so that each endpoint's and each
/// stream's jobs can be read in due order on their own.
fn migrate_v1(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut due = txn.open_table(DUE)?;
    {
        let deliveries = txn.open_table(DELIVERIES_DUE_V1)?;
        for row in deliveries.iter()? {
            let (key, endpoint) = row?;
            let (due_ms, id) = key.value();
            due.insert((Queue::Webhooks.code(), endpoint.value(), due_ms, id), ())?;
        }
        let emails = txn.open_table(EMAILS_DUE_V1)?;
        for row in emails.iter()? {
            let (key, stream) = row?;
            let (due_ms, id) = key.value();
            due.insert(
                (Queue::Mail.code(), stream_key(stream.value()), due_ms, id),
                (),
            )?;
        }
    }
    txn.delete_table(DELIVERIES_DUE_V1)?;
    txn.delete_table(EMAILS_DUE_V1)?;
    Ok(())
}

/// Every step from version 2 to version 3.
fn migrate_v2(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    mark_tracked_events(txn)?;
    index_deliveries_and_emails(txn)
}

/// Version 3's soft-bounce counts: address → failures in a row.
const SOFT_BOUNCES_V3: TableDefinition<&str, u32> = TableDefinition::new("soft_bounces");

/// Every step from version 3 to version 4: the counts in a row cannot say
/// on which days the failures were, so they are dropped. An address then
/// needs its full number of bad days again before it is suppressed: the
/// mistake this can make is sending once more, never losing an address.
fn migrate_v3(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.delete_table(SOFT_BOUNCES_V3)?;
    Ok(())
}

/// Rewrites every tracked call in the log with source `tracking`. Version 1
/// event records carry no source and decode as `api` or `herald` by their
/// type; only the tracking tables know which seqs were Segment calls.
fn mark_tracked_events(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut seqs: Vec<u64> = Vec::new();
    {
        let tracked = txn.open_table(TRACKED)?;
        for row in tracked.iter()? {
            seqs.push(row?.0.value().1);
        }
        // Every call has its `tracked` row; the held rows are read too so a
        // call is marked whichever table still names it.
        let recent = txn.open_table(RECENT_TRACKED)?;
        for row in recent.iter()? {
            seqs.push(row?.0.value());
        }
    }
    seqs.sort_unstable();
    seqs.dedup();
    let mut events = txn.open_table(EVENTS)?;
    for seq in seqs {
        let found = events.get(seq)?.map(|v| decode::<EventRecord>(v.value()));
        let Some(record) = found else {
            continue;
        };
        let mut record = record?;
        record.source = EventSource::Tracking;
        events.insert(seq, encode(&record).as_slice())?;
    }
    Ok(())
}

/// Fills the status indexes, endpoint counts and attempt tallies that
/// version 3 keeps up to date, from the deliveries and messages already
/// stored. Attempts older than a day are not tallied: stats never look
/// further back.
fn index_deliveries_and_emails(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let tally_from = crate::clock::now_ms() - 24 * 3_600_000 - 60_000;
    {
        let deliveries = txn.open_table(DELIVERIES)?;
        let mut by_status = txn.open_table(DELIVERIES_BY_STATUS)?;
        let mut by_endpoint_status = txn.open_table(DELIVERIES_BY_ENDPOINT_STATUS)?;
        let mut counts = txn.open_table(ENDPOINT_DELIVERY_COUNTS)?;
        let mut attempts = txn.open_table(ENDPOINT_ATTEMPTS)?;
        let mut index = StatusIndex {
            by_status: &mut by_status,
            by_endpoint_status: &mut by_endpoint_status,
            counts: &mut counts,
        };
        for row in deliveries.iter()? {
            let (id, bytes) = row?;
            let record: DeliveryRecord = decode(bytes.value())?;
            index.add(record.endpoint_id, id.value(), record.status)?;
            let recent: Vec<_> = record
                .attempts
                .into_iter()
                .filter(|a| a.at_ms >= tally_from)
                .collect();
            tally_attempts(&mut attempts, record.endpoint_id, &recent)?;
        }
    }
    let emails = txn.open_table(EMAILS)?;
    for row in emails.iter()? {
        let (id, bytes) = row?;
        let record: EmailRecord = decode(bytes.value())?;
        super::mail::index_email_status(txn, &record.stream, id.value(), None, record.status)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::{AttemptRecord, DeliveryStatus, EmailStatus};
    use crate::store::{OpenError, Store};

    /// Writes a file that says it is at `version`, with what `fill` adds.
    fn file_at_version(
        path: &std::path::Path,
        version: u32,
        fill: impl FnOnce(&redb::WriteTransaction),
    ) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_KEY, version.to_le_bytes().as_slice())
            .unwrap();
        fill(&txn);
        txn.commit().unwrap();
    }

    /// A version 1 file with one pending delivery and one queued message
    /// opens as version 2 with both in the new schedule.
    #[test]
    fn a_version_1_file_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.redb");
        file_at_version(&path, 1, |txn| {
            txn.open_table(DELIVERIES_DUE_V1)
                .unwrap()
                .insert((1_000, 7), 42u128)
                .unwrap();
            txn.open_table(EMAILS_DUE_V1)
                .unwrap()
                .insert((2_000, 9), "marketing")
                .unwrap();
        });
        let store = Store::open(&path).unwrap();
        let read = store.read().unwrap();
        assert_eq!(read.due_keys(Queue::Webhooks).unwrap(), vec![42]);
        assert_eq!(
            read.due_after(Queue::Webhooks, 42, None, 10).unwrap(),
            vec![(1_000, 7)]
        );
        let stream = stream_key("marketing");
        assert_eq!(read.due_keys(Queue::Mail).unwrap(), vec![stream]);
        assert_eq!(
            read.due_after(Queue::Mail, stream, None, 10).unwrap(),
            vec![(2_000, 9)]
        );
        let names: Vec<String> = read.table_names().unwrap();
        assert!(!names
            .iter()
            .any(|n| n == "deliveries_due" || n == "emails_due"));
        drop((read, store));
        // Opening again finds version 2 and changes nothing.
        assert!(Store::open(&path).is_ok());
    }

    fn v1_event(event_type: &str, seq: u64) -> Vec<u8> {
        crate::store::codec::encode_old(
            1,
            &crate::store::records::v1::EventRecord {
                id: crate::store::log::event_id(1_700_000_000_000, seq, 0),
                event_type: event_type.into(),
                tenant: None,
                idempotency_key: None,
                occurred_at_ms: 1_700_000_000_000,
                received_at_ms: 1_700_000_000_000,
                data: "{}".into(),
            },
        )
    }

    /// A version 2 file (events without a source) opens as version 3:
    /// tracked calls, listed in `tracked` or only in `recent_tracked`, say
    /// so, whatever their name; other events are `herald` by Herald's own
    /// names and `api` otherwise.
    #[test]
    fn a_version_2_file_marks_its_tracked_calls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.redb");
        let events = [
            (1, "invoice.paid"),
            (2, "Signed Up"),
            (3, "email.bounced"),
            (4, "email.bounced"),
            (5, "endpoint.disabled"),
            (6, "email.custom"),
        ];
        file_at_version(&path, 2, |txn| {
            let mut table = txn.open_table(EVENTS).unwrap();
            for (seq, event_type) in events {
                table
                    .insert(seq, v1_event(event_type, seq).as_slice())
                    .unwrap();
            }
            txn.open_table(TRACKED)
                .unwrap()
                .insert((1_700_000_000_000, 2), 0u128)
                .unwrap();
            txn.open_table(RECENT_TRACKED)
                .unwrap()
                .insert(3, (0u128, 9u64, 1_700_000_000_000))
                .unwrap();
        });
        let store = Store::open(&path).unwrap();
        let read = store.read().unwrap();
        let source = |seq| read.event_at_seq(seq).unwrap().unwrap().source;
        assert_eq!(source(1), EventSource::Api);
        assert_eq!(source(2), EventSource::Tracking);
        assert_eq!(source(3), EventSource::Tracking);
        assert_eq!(source(4), EventSource::Herald);
        assert_eq!(source(5), EventSource::Herald);
        assert_eq!(source(6), EventSource::Api);
        let event = read.event_at_seq(2).unwrap().unwrap();
        assert_eq!(event.event_type, "Signed Up");
        assert_eq!(event.data, "{}");
        drop((read, store));
        // Opening again finds version 3 and changes nothing.
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store
                .read()
                .unwrap()
                .event_at_seq(2)
                .unwrap()
                .unwrap()
                .source,
            EventSource::Tracking
        );
    }

    fn delivery(endpoint_id: u128, status: DeliveryStatus, attempts_at: &[i64]) -> DeliveryRecord {
        DeliveryRecord {
            endpoint_id,
            event_seq: 1,
            event_id: 1 << 16,
            event_type: "a".into(),
            status,
            attempts: attempts_at
                .iter()
                .map(|&at_ms| AttemptRecord {
                    at_ms,
                    status_code: 500,
                    error: None,
                    failure: None,
                    latency_ms: 7,
                    response: String::new(),
                    manual: false,
                })
                .collect(),
            next_attempt_ms: (status == DeliveryStatus::Pending).then_some(0),
            created_at_ms: 0,
            schedule_from: 0,
        }
    }

    fn email(stream: &str, status: EmailStatus) -> EmailRecord {
        EmailRecord {
            stream: stream.into(),
            from: "a@example.com".into(),
            to: "b@example.net".into(),
            reply_to: None,
            subject: "s".into(),
            text: "t".into(),
            html: None,
            headers: Vec::new(),
            tags: Vec::new(),
            message_id: "<m@example.com>".into(),
            created_at_ms: 0,
            status,
            attempts: Vec::new(),
            next_attempt_ms: None,
            smtp_response: None,
            flagged: false,
            tenant: None,
        }
    }

    /// A version 2 file's deliveries and messages are indexed by status,
    /// and its endpoints' counts and recent attempts tallied, at open.
    #[test]
    fn a_version_2_file_gets_status_indexes_counts_and_tallies() {
        use crate::store::codec::encode;
        use crate::store::mail::EmailFilter;
        use crate::store::webhooks::{DeliveryCounts, DeliveryFilter};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.redb");
        let now = crate::clock::now_ms();
        let old = now - 3 * 24 * 3_600_000;
        file_at_version(&path, 2, |txn| {
            let mut deliveries = txn.open_table(DELIVERIES).unwrap();
            let rows = [
                delivery(7, DeliveryStatus::Failed, &[old]),
                delivery(7, DeliveryStatus::Pending, &[now, now]),
                delivery(8, DeliveryStatus::Succeeded, &[]),
                delivery(7, DeliveryStatus::Failed, &[now]),
            ];
            for (id, row) in (1u64..).zip(rows) {
                deliveries.insert(id, encode(&row).as_slice()).unwrap();
            }
            let mut emails = txn.open_table(EMAILS).unwrap();
            let rows = [
                email("transactional", EmailStatus::Sent),
                email("marketing", EmailStatus::Sent),
                email("marketing", EmailStatus::Queued),
            ];
            for (id, row) in (1u64..).zip(rows) {
                emails.insert(id, encode(&row).as_slice()).unwrap();
            }
        });
        let store = Store::open(&path).unwrap();
        let read = store.read().unwrap();
        let ids = |filter: DeliveryFilter| -> Vec<u64> {
            let page = read.scan_deliveries(&filter, 0, 10).unwrap();
            assert_eq!(page.next_after, None);
            page.deliveries.into_iter().map(|(id, _)| id).collect()
        };
        let failed = DeliveryFilter {
            status: Some(DeliveryStatus::Failed),
            ..Default::default()
        };
        assert_eq!(ids(failed.clone()), vec![1, 4]);
        let failed_of_8 = DeliveryFilter {
            endpoint_id: Some(8),
            ..failed
        };
        assert_eq!(ids(failed_of_8), Vec::<u64>::new());
        assert_eq!(
            read.endpoint_delivery_counts(7).unwrap(),
            DeliveryCounts {
                pending: 1,
                succeeded: 0,
                failed: 2
            }
        );
        let tallied: u64 = read
            .endpoint_attempt_tallies(7, i64::MIN)
            .unwrap()
            .iter()
            .map(|(_, t)| t.attempts)
            .sum();
        assert_eq!(tallied, 3, "the attempt of three days ago is not tallied");
        let emails = |filter: EmailFilter| -> Vec<u64> {
            let page = read.scan_emails(&filter, 0, 10).unwrap();
            page.emails.into_iter().map(|(id, _)| id).collect()
        };
        let sent = EmailFilter {
            status: Some(EmailStatus::Sent),
            ..Default::default()
        };
        assert_eq!(emails(sent.clone()), vec![1, 2]);
        let marketing = EmailFilter {
            stream: Some("marketing".into()),
            ..Default::default()
        };
        assert_eq!(emails(marketing.clone()), vec![2, 3]);
        let marketing_sent = EmailFilter {
            status: Some(EmailStatus::Sent),
            ..marketing
        };
        assert_eq!(emails(marketing_sent), vec![2]);
        drop((read, store));
        assert!(Store::open(&path).is_ok());
    }

    /// A version 3 file's soft-bounce counts go: they cannot say which days
    /// the failures were on.
    #[test]
    fn a_version_3_file_drops_its_soft_bounce_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.redb");
        file_at_version(&path, 3, |txn| {
            txn.open_table(SOFT_BOUNCES_V3)
                .unwrap()
                .insert("bob@example.com", 4u32)
                .unwrap();
        });
        let store = Store::open(&path).unwrap();
        let names = store.read().unwrap().table_names().unwrap();
        assert!(!names.iter().any(|n| n == "soft_bounces"), "{names:?}");
        assert!(names.iter().any(|n| n == "soft_bounce_days"));
    }

    #[test]
    fn a_newer_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v9.redb");
        file_at_version(&path, 9, |_| {});
        assert!(matches!(
            Store::open(&path),
            Err(OpenError::NewerSchema { found: 9, .. })
        ));
    }

    /// Every table the file has is in the one list, so backups copy it.
    #[test]
    fn a_fresh_file_has_exactly_the_listed_tables() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("fresh.redb")).unwrap();
        let mut live = store.read().unwrap().table_names().unwrap();
        live.sort();
        let mut listed = crate::store::tables::table_names();
        listed.sort();
        assert_eq!(live, listed);
    }
}
