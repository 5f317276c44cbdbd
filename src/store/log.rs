//! The append-only event log: appending an event inside a write
//! transaction with its index rows and its deliveries (the fan-out to every
//! subscribed endpoint), and point reads and filtered pages inside a read
//! transaction.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use redb::{ReadableDatabase, ReadableTable};

use super::codec::{encode, CodecError};
use super::due::Queue;
use super::records::{DeliveryRecord, DeliveryStatus, EventRecord, EventSource};
use super::tables::{EVENTS, EVENTS_BY_TENANT, EVENTS_BY_TYPE, EVENT_KEYS, RECENT_EVENT_KEYS};
use super::{last_u64_key, ReadTxn, StoreError, WriteTxn, EXAMINE_BUDGET};

/// Counters the writer carries between commits. Restored from the file at
/// start and rolled back when a transaction aborts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogState {
    pub next_seq: u64,
    /// `received_at` never goes backwards along the log, even if the wall
    /// clock does, so time filters can binary-search by sequence number.
    pub last_received_ms: i64,
}

impl LogState {
    pub fn load(db: &redb::Database) -> Result<Self, StoreError> {
        let txn = db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let (next_seq, last_received_ms) = match last_u64_key(&events)? {
            Some(seq) => {
                let rec = read_event(&events, seq)?
                    .map(|r| r.received_at_ms)
                    .unwrap_or(0);
                (seq + 1, rec)
            }
            None => (1, 0),
        };
        Ok(LogState {
            next_seq,
            last_received_ms,
        })
    }
}

pub(super) fn read_event(
    table: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
) -> Result<Option<EventRecord>, StoreError> {
    super::get_record(table, seq)
}

/// Hashes that stand for names in the type and tenant indexes, whose keys
/// are hash << 64 | seq: fixed-width, and still ordered by seq within one
/// name, so inserts append. They are part of the file format: the function
/// must never change within a schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexKeys {
    pub type_hash: u64,
    pub tenant_hash: Option<u64>,
}

const TYPE_DOMAIN: u8 = 1;
const TENANT_DOMAIN: u8 = 2;

fn name_hash(domain: u8, name: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update([domain]);
    h.update(name.as_bytes());
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("sha256 has 32 bytes"))
}

pub fn type_hash(event_type: &str) -> u64 {
    name_hash(TYPE_DOMAIN, event_type)
}

pub fn tenant_hash(tenant: &str) -> u64 {
    name_hash(TENANT_DOMAIN, tenant)
}

impl IndexKeys {
    pub fn of(event_type: &str, tenant: Option<&str>) -> IndexKeys {
        IndexKeys {
            type_hash: type_hash(event_type),
            tenant_hash: tenant.map(tenant_hash),
        }
    }
}

pub(super) fn index_key(name_hash: u64, seq: u64) -> u128 {
    ((name_hash as u128) << 64) | seq as u128
}

/// The fields of a new event that the writer does not assign itself.
#[derive(Debug, Clone)]
pub struct NewEventRow {
    pub event_type: String,
    pub tenant: Option<String>,
    pub idempotency_key: Option<String>,
    pub occurred_at_ms: Option<i64>,
    /// The newest version of the data the event carries.
    pub data: String,
    /// The version `data` is in.
    pub data_version: u32,
    /// Older versions sent alongside: (version, JSON text), ascending.
    pub older_versions: Vec<(u32, String)>,
    /// Who made it; decides which endpoints take it.
    pub source: EventSource,
    /// Hash of what the caller sent, stored with the idempotency key.
    pub fingerprint: u64,
    /// Random bits that make ids unguessable from (time, seq) alone.
    pub nonce: u16,
    /// Computed by the request handler so the writer only compares integers.
    pub index: IndexKeys,
}

impl NewEventRow {
    /// The record stored at `seq`, received at `received_at_ms` (never
    /// earlier than the event before it), with what its index rows and
    /// idempotency key need.
    pub fn into_record(self, seq: u64, received_at_ms: i64) -> (EventRecord, IndexKeys, u64) {
        let record = EventRecord {
            id: event_id(received_at_ms, seq, self.nonce),
            event_type: self.event_type,
            tenant: self.tenant,
            idempotency_key: self.idempotency_key,
            occurred_at_ms: self.occurred_at_ms.unwrap_or(received_at_ms),
            received_at_ms,
            data: self.data,
            source: self.source,
            data_version: self.data_version,
            older_versions: self.older_versions,
        };
        (record, self.index, self.fingerprint)
    }
}

/// An event id is (received ms: 48 bits, seq: 64 bits, nonce: 16 bits), so
/// ids sort by time, need no index to be found, and still differ when a
/// restored backup hands out a sequence number again (time has moved on).
pub fn event_id(received_at_ms: i64, seq: u64, nonce: u16) -> u128 {
    let ms = (received_at_ms.max(0) as u128) & ((1 << 48) - 1);
    (ms << 80) | ((seq as u128) << 16) | nonce as u128
}

pub fn seq_of_event_id(id: u128) -> u64 {
    (id >> 16) as u64
}

impl WriteTxn<'_> {
    /// The event an idempotency key already names: (seq, request fingerprint).
    pub fn idempotency_key(
        &self,
        tenant: Option<&str>,
        key: &str,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let tenant = tenant.unwrap_or("");
        if let Some(found) = self.memory.recent_keys.get(tenant, key) {
            return Ok(Some(found));
        }
        Ok(self.event_keys.get((tenant, key))?.map(|v| v.value()))
    }

    pub fn event_at(&self, seq: u64) -> Result<Option<EventRecord>, StoreError> {
        read_event(&self.events, seq)
    }

    /// The event an idempotency key named: it must exist, so its absence
    /// is damage, reported as such.
    pub fn keyed_event(&self, seq: u64) -> Result<EventRecord, StoreError> {
        self.event_at(seq)?.ok_or_else(|| {
            StoreError::Codec(CodecError::Corrupt {
                record: "event",
                detail: format!("idempotency key points at missing seq {seq}"),
            })
        })
    }

    /// Whether `seq` is the last event of the log. It is never deleted:
    /// sequence numbers resume from it after a restart and must never be
    /// handed out twice.
    pub(crate) fn is_last_event(&self, seq: u64) -> bool {
        seq + 1 >= self.memory.log.next_seq
    }

    /// Appends one event at the next sequence number, with its indexes
    /// and its deliveries.
    pub fn append_event(
        &mut self,
        row: NewEventRow,
        now_ms: i64,
    ) -> Result<(u64, EventRecord), StoreError> {
        self.append(row, now_ms, None)
    }

    /// Appends an event Herald itself produced; `exclude` names an endpoint
    /// that must not receive it.
    pub(crate) fn append_system_event(
        &mut self,
        row: NewEventRow,
        now_ms: i64,
        exclude: Option<u128>,
    ) -> Result<u64, StoreError> {
        // Receivers trust these names to come from Herald, so the list that
        // reserves them must know every one: an unlisted name fails the tests.
        debug_assert!(
            row.source == EventSource::Herald
                && crate::names::is_herald_event_type(&row.event_type),
            "`{}` is not listed in names::HERALD_EVENT_TYPES",
            row.event_type
        );
        self.append(row, now_ms, exclude).map(|(seq, _)| seq)
    }

    fn append(
        &mut self,
        row: NewEventRow,
        now_ms: i64,
        exclude: Option<u128>,
    ) -> Result<(u64, EventRecord), StoreError> {
        let seq = self.memory.log.next_seq;
        let received_at_ms = now_ms.max(self.memory.log.last_received_ms);
        let (record, index, fingerprint) = row.into_record(seq, received_at_ms);
        self.events.insert(seq, encode(&record).as_slice())?;
        if let Some(key) = record.idempotency_key.as_deref() {
            let tenant = record.tenant.as_deref().unwrap_or("");
            self.recent_event_keys
                .insert(seq, (tenant, key, fingerprint))?;
            self.memory
                .recent_keys
                .insert(tenant, key, seq, fingerprint);
        }
        self.events_by_type
            .insert(index_key(index.type_hash, seq), ())?;
        if let Some(tenant_hash) = index.tenant_hash {
            self.events_by_tenant
                .insert(index_key(tenant_hash, seq), ())?;
        }
        self.memory.log.next_seq = seq + 1;
        self.memory.log.last_received_ms = received_at_ms;
        self.fan_out(seq, &record, exclude)?;
        Ok((seq, record))
    }
}

impl WriteTxn<'_> {
    /// Creates one pending delivery per enabled endpoint that subscribes to
    /// the event at `seq`, due at its receipt, except `exclude`: a 2xx for
    /// the event means its deliveries are durable too.
    fn fan_out(
        &mut self,
        seq: u64,
        event: &EventRecord,
        exclude: Option<u128>,
    ) -> Result<(), StoreError> {
        let hooks = &self.memory.hooks;
        if hooks.endpoints.is_empty() {
            return Ok(());
        }
        let subscribed: Vec<u128> = hooks
            .endpoints
            .iter()
            .filter(|endpoint| {
                endpoint.enabled
                    && exclude != Some(endpoint.id)
                    && crate::names::subscribes(
                        endpoint.subscription(),
                        &event.event_type,
                        event.source,
                        event.tenant.as_deref(),
                    )
            })
            .map(|endpoint| endpoint.id)
            .collect();
        for endpoint_id in subscribed {
            self.create_delivery(
                endpoint_id,
                seq,
                event.id,
                &event.event_type,
                event.received_at_ms,
            )?;
        }
        Ok(())
    }

    /// A pending delivery of the event at `event_seq` to `endpoint_id`, due
    /// now.
    pub(crate) fn create_delivery(
        &mut self,
        endpoint_id: u128,
        event_seq: u64,
        event_id: u128,
        event_type: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let id = self.memory.hooks.next_delivery_id;
        let record = DeliveryRecord {
            endpoint_id,
            event_seq,
            event_id,
            event_type: event_type.to_owned(),
            status: DeliveryStatus::Pending,
            attempts: Vec::new(),
            next_attempt_ms: Some(now_ms),
            created_at_ms: now_ms,
            schedule_from: 0,
        };
        self.insert_delivery(id, &record)?;
        self.reschedule(Queue::Webhooks, endpoint_id, id, None, Some(now_ms))?;
        self.memory.hooks.next_delivery_id = id + 1;
        Ok(id)
    }

    /// Deletes an event and its index rows (retention of tracked calls).
    pub(crate) fn remove_event(&mut self, seq: u64, index: IndexKeys) -> Result<(), StoreError> {
        self.events.remove(seq)?;
        self.events_by_type
            .remove(index_key(index.type_hash, seq))?;
        if let Some(tenant_hash) = index.tenant_hash {
            self.events_by_tenant.remove(index_key(tenant_hash, seq))?;
        }
        Ok(())
    }
}

/// A position in the log: every page continues strictly after it. Encoded as
/// an opaque string so its form can change without breaking clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventCursor(pub u64);

const CURSOR_VERSION: u8 = 1;

impl EventCursor {
    pub fn encode(self) -> String {
        let mut raw = [0u8; 9];
        raw[0] = CURSOR_VERSION;
        raw[1..].copy_from_slice(&self.0.to_be_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn parse(text: &str) -> Option<EventCursor> {
        if text.len() > 64 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(text).ok()?;
        match raw.split_first() {
            Some((&CURSOR_VERSION, rest)) => {
                Some(EventCursor(u64::from_be_bytes(rest.try_into().ok()?)))
            }
            _ => None,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub tenant: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

pub struct EventPage {
    pub events: Vec<(u64, EventRecord)>,
    /// Where the next page starts; `None` when nothing more matched at the
    /// time of the read.
    pub next: Option<EventCursor>,
    /// Where to resume polling for events appended later.
    pub tail: EventCursor,
}

impl ReadTxn {
    pub fn event_at_seq(&self, seq: u64) -> Result<Option<EventRecord>, StoreError> {
        let table = self.txn.open_table(EVENTS)?;
        read_event(&table, seq)
    }

    pub fn event_by_id(&self, id: u128) -> Result<Option<(u64, EventRecord)>, StoreError> {
        let seq = seq_of_event_id(id);
        let events = self.txn.open_table(EVENTS)?;
        // The full id must match: the seq alone would let a guessed id through.
        Ok(read_event(&events, seq)?
            .filter(|r| r.id == id)
            .map(|r| (seq, r)))
    }

    pub fn event_count(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        Ok(self.txn.open_table(EVENTS)?.len()?)
    }

    /// One oldest-first page of events after `after` that match `filter`.
    pub fn scan_events(
        &self,
        filter: &EventFilter,
        after: EventCursor,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        let events = self.txn.open_table(EVENTS)?;
        let mut from = after.0.saturating_add(1);
        if let Some(since) = filter.since_ms {
            from = from.max(first_seq_received_at_or_after(&events, since)?);
        }

        // The most selective index available drives the scan; the remaining
        // conditions are checked per row.
        let seqs: Box<dyn Iterator<Item = Result<u64, StoreError>>> =
            if let Some(t) = filter.event_type.as_deref() {
                let index = self.txn.open_table(EVENTS_BY_TYPE)?;
                Box::new(index_seqs(index, type_hash(t), from)?)
            } else if let Some(t) = filter.tenant.as_deref() {
                let index = self.txn.open_table(EVENTS_BY_TENANT)?;
                Box::new(index_seqs(index, tenant_hash(t), from)?)
            } else {
                Box::new(
                    events
                        .range(from..)?
                        .map(|r| r.map(|(k, _)| k.value()).map_err(StoreError::from)),
                )
            };

        let mut page = Vec::new();
        let mut last_examined = after.0;
        let mut examined = 0usize;
        let mut more = false;
        for seq in seqs {
            let seq = seq?;
            if examined == limit + EXAMINE_BUDGET {
                more = true;
                break;
            }
            let Some(record) = read_event(&events, seq)? else {
                continue;
            };
            if filter
                .until_ms
                .is_some_and(|until| record.received_at_ms > until)
            {
                // received_at is monotonic along the log: nothing later matches.
                break;
            }
            examined += 1;
            if filter
                .tenant
                .as_deref()
                .is_some_and(|t| record.tenant.as_deref() != Some(t))
            {
                last_examined = seq;
                continue;
            }
            if page.len() == limit {
                // One match beyond the page proves there is a next page, so a
                // full last page ends with a null cursor instead of an empty
                // page. The next page starts at this match.
                more = true;
                break;
            }
            last_examined = seq;
            page.push((seq, record));
        }
        let tail = EventCursor(last_examined.max(from.saturating_sub(1)));
        Ok(EventPage {
            events: page,
            next: more.then_some(EventCursor(last_examined)),
            tail,
        })
    }
}

/// An event as the file holds it, for copying into another store.
#[derive(Debug)]
pub struct StoredEvent {
    pub seq: u64,
    /// The table's value untouched: the copy must decode exactly as this does.
    pub encoded: Vec<u8>,
    pub record: EventRecord,
    /// The request fingerprint stored with the event's idempotency key;
    /// `None` when it has no key, or when no key row names it (which only
    /// damage would cause).
    pub key_fingerprint: Option<u64>,
}

impl ReadTxn {
    /// The oldest event the log still holds.
    pub fn first_event(&self) -> Result<Option<(u64, EventRecord)>, StoreError> {
        let events = self.txn.open_table(EVENTS)?;
        let Some((seq, bytes)) = events.first()? else {
            return Ok(None);
        };
        Ok(Some((seq.value(), super::codec::decode(bytes.value())?)))
    }

    /// The newest seq the log holds; it is never deleted while the file lives.
    pub fn last_event_seq(&self) -> Result<Option<u64>, StoreError> {
        last_u64_key(&self.txn.open_table(EVENTS)?)
    }

    /// Up to `limit` events after seq `after`, oldest first, each with its
    /// idempotency key's fingerprint. The fingerprint is not in the event:
    /// a key lives in `event_keys` once merged and in the journal of
    /// recent keys until then (in both while a sweep moves it).
    pub fn stored_events(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let events = self.txn.open_table(EVENTS)?;
        let merged = self.txn.open_table(EVENT_KEYS)?;
        let journal = self.txn.open_table(RECENT_EVENT_KEYS)?;
        let mut out = Vec::with_capacity(limit.min(16_384));
        for row in events.range(after.saturating_add(1)..)?.take(limit) {
            let (seq, bytes) = row?;
            let seq = seq.value();
            let encoded = bytes.value().to_vec();
            let record: EventRecord = super::codec::decode(&encoded)?;
            let key_fingerprint = match record.idempotency_key.as_deref() {
                None => None,
                Some(key) => {
                    let tenant = record.tenant.as_deref().unwrap_or("");
                    match merged.get((tenant, key))?.map(|v| v.value()) {
                        Some((named, fingerprint)) if named == seq => Some(fingerprint),
                        _ => journal.get(seq)?.and_then(|v| {
                            let (t, k, fingerprint) = v.value();
                            (t == tenant && k == key).then_some(fingerprint)
                        }),
                    }
                }
            };
            out.push(StoredEvent {
                seq,
                encoded,
                record,
                key_fingerprint,
            });
        }
        Ok(out)
    }
}

fn index_seqs(
    index: redb::ReadOnlyTable<u128, ()>,
    name_hash: u64,
    from: u64,
) -> Result<impl Iterator<Item = Result<u64, StoreError>>, StoreError> {
    let range = index.range(index_key(name_hash, from)..=index_key(name_hash, u64::MAX))?;
    Ok(range.map(|r| r.map(|(k, _)| k.value() as u64).map_err(StoreError::from)))
}

/// Binary search over the dense sequence range, relying on `received_at`
/// being non-decreasing along the log.
fn first_seq_received_at_or_after(
    events: &redb::ReadOnlyTable<u64, &'static [u8]>,
    since_ms: i64,
) -> Result<u64, StoreError> {
    let (Some(first), Some(last)) = (events.first()?, events.last()?) else {
        return Ok(1);
    };
    let (mut lo, mut hi) = (first.0.value(), last.0.value() + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match read_event(events, mid)? {
            Some(r) if r.received_at_ms < since_ms => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hashes are part of the file format: these values must never change.
    #[test]
    fn index_hashes_are_stable() {
        assert_eq!(type_hash("invoice.paid"), GOLDEN_TYPE_HASH);
        assert_ne!(type_hash("a"), tenant_hash("a"));
    }

    const GOLDEN_TYPE_HASH: u64 = 1_973_491_613_522_821_471;

    fn keyed_row(n: u64) -> NewEventRow {
        NewEventRow {
            event_type: "a".into(),
            tenant: (n % 2 == 0).then(|| "t".to_owned()),
            idempotency_key: (n % 3 != 0).then(|| format!("k{n}")),
            occurred_at_ms: None,
            data: "{}".into(),
            data_version: 1,
            older_versions: Vec::new(),
            source: EventSource::Api,
            fingerprint: n * 7,
            nonce: 0,
            index: IndexKeys::of("a", (n % 2 == 0).then_some("t")),
        }
    }

    /// Enough keys for a sweep to move some into `event_keys` and drop
    /// them from the journal while the newest stay held: every fingerprint
    /// is found, wherever its key is.
    #[test]
    fn stored_events_carry_each_key_fingerprint_merged_or_held() {
        use crate::store::writer::Listeners;
        use crate::store::{Store, Writer};
        use redb::ReadableTableMetadata;

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.redb")).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        let total = 3 * crate::store::recent_keys::MERGE_THRESHOLD as u64;
        for group in 0..total / 100 {
            writer
                .write_blocking(move |txn| {
                    for n in group * 100 + 1..=group * 100 + 100 {
                        txn.append_event(keyed_row(n), 1_000)?;
                    }
                    Ok(())
                })
                .unwrap();
        }
        thread.stop();

        let txn = store.read().unwrap();
        let merged = txn.txn.open_table(EVENT_KEYS).unwrap().len().unwrap();
        let held = txn
            .txn
            .open_table(RECENT_EVENT_KEYS)
            .unwrap()
            .len()
            .unwrap();
        assert!(merged > 0 && held > 0, "merged {merged}, held {held}");

        assert_eq!(txn.first_event().unwrap().unwrap().0, 1);
        assert_eq!(txn.last_event_seq().unwrap(), Some(total / 100 * 100));
        let mut after = 0;
        let mut seen = 0;
        loop {
            let chunk = txn.stored_events(after, 1000).unwrap();
            let Some(last) = chunk.last() else { break };
            after = last.seq;
            for event in chunk {
                seen += 1;
                assert_eq!(event.seq, seen);
                assert_eq!(event.encoded, encode(&event.record));
                let want = (seen % 3 != 0).then_some(seen * 7);
                assert_eq!(event.key_fingerprint, want, "seq {seen}");
            }
        }
        assert_eq!(seen, total / 100 * 100);
    }

    #[test]
    fn event_ids_carry_their_seq_and_sort_by_time() {
        let id = event_id(1_700_000_000_000, 42, 0xbeef);
        assert_eq!(seq_of_event_id(id), 42);
        assert!(event_id(1_700_000_000_001, 1, 0) > id);
        assert_ne!(event_id(5, 42, 1), event_id(5, 42, 2));
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        for seq in [0, 1, 42, u64::MAX] {
            let c = EventCursor(seq);
            assert_eq!(EventCursor::parse(&c.encode()), Some(c));
        }
        for bad in ["", "x", "!!!!", "AAAAAAAAAAAA", &"A".repeat(100)] {
            assert_eq!(EventCursor::parse(bad), None, "{bad}");
        }
    }
}
