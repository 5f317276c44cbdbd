//! Deleting what has aged out, a bounded slice per write operation: settled
//! deliveries, log events nothing depends on any more, the bodies of settled
//! messages, and attempt tallies older than stats look back.

use redb::ReadableTable;

use super::codec::encode;
use super::log::{index_key, tenant_hash, type_hash};
use super::records::{DeliveryRecord, DeliveryStatus, EmailRecord, EventRecord};
use super::tables::{EMAILS, META};
use super::webhooks::delivery_status_code;
use super::{StoreError, WriteTxn};

/// How far one slice of a sweep got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sweep {
    /// Rows deleted (or bodies emptied) by this slice.
    pub removed: usize,
    /// Where the next slice continues; `None`: the sweep reached rows too
    /// young to go, or the end.
    pub next_after: Option<u64>,
}

/// `meta` key: every message up to this id is settled and has no body
/// older than the horizon left, so sweeps start after it.
const BODIES_PURGED_TO: &str = "mail_bodies_purged_to";

/// When a settled delivery settled: its last attempt, or its creation when
/// it was never attempted (its endpoint was deleted first).
fn settled_at(record: &DeliveryRecord) -> i64 {
    record
        .attempts
        .last()
        .map_or(record.created_at_ms, |a| a.at_ms)
}

impl WriteTxn<'_> {
    /// Deletes deliveries in `status` (succeeded or failed) that settled
    /// before `before_ms`, examining at most `budget` after id `after`. The
    /// newest delivery stays whatever its age: ids resume from it.
    pub(crate) fn sweep_settled_deliveries(
        &mut self,
        status: DeliveryStatus,
        before_ms: i64,
        after: u64,
        budget: usize,
    ) -> Result<Sweep, StoreError> {
        if status == DeliveryStatus::Pending {
            return Ok(Sweep::default());
        }
        let code = delivery_status_code(status);
        let last_id = self.memory.hooks.next_delivery_id.saturating_sub(1);
        let tables = self.tables()?;
        let ids: Vec<u64> = tables
            .by_status
            .range((code, after.saturating_add(1))..=(code, u64::MAX))?
            .take(budget)
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        let mut sweep = Sweep::default();
        for &id in &ids {
            let tables = self.tables()?;
            let Some(record) = super::get_record::<u64, DeliveryRecord>(&tables.deliveries, id)?
            else {
                continue;
            };
            // Ids follow creation: from here on nothing settled early enough.
            if record.created_at_ms >= before_ms {
                return Ok(sweep);
            }
            if id != last_id
                && settled_at(&record) < before_ms
                && self.remove_settled_delivery(id)?.is_some()
            {
                sweep.removed += 1;
            }
        }
        if ids.len() == budget {
            sweep.next_after = ids.last().copied();
        }
        Ok(sweep)
    }

    /// Deletes log events received before `before_ms` with their index rows
    /// and idempotency keys, examining at most `budget` after seq `after`.
    /// An event stays while anything may still need it: a delivery pending
    /// or failed (a dead letter can be retried), a tracked call (tracking
    /// retention owns those), a key not yet merged, or the log's last seq.
    pub(crate) fn sweep_events(
        &mut self,
        before_ms: i64,
        after: u64,
        budget: usize,
    ) -> Result<Sweep, StoreError> {
        let mut rows: Vec<(u64, EventRecord)> = Vec::new();
        for row in self.events.range(after.saturating_add(1)..)?.take(budget) {
            let (seq, bytes) = row?;
            rows.push((seq.value(), super::codec::decode(bytes.value())?));
        }
        let mut sweep = Sweep::default();
        for (seq, event) in &rows {
            let seq = *seq;
            // received_at never goes backwards along the log.
            if event.received_at_ms >= before_ms {
                return Ok(sweep);
            }
            if self.is_last_event(seq)
                || self.is_tracked_call(event.received_at_ms, seq)?
                || self.has_unsettled_delivery(seq)?
            {
                continue;
            }
            let tenant = event.tenant.as_deref().unwrap_or("");
            if let Some(key) = event.idempotency_key.as_deref() {
                // A held key is forgotten only by its merge; deleting its
                // event first would leave it naming nothing.
                if self.memory.recent_keys.get(tenant, key).is_some() {
                    continue;
                }
                let names_this = self
                    .event_keys
                    .get((tenant, key))?
                    .is_some_and(|v| v.value().0 == seq);
                if names_this {
                    self.event_keys.remove((tenant, key))?;
                }
            }
            self.events.remove(seq)?;
            self.events_by_type
                .remove(index_key(type_hash(&event.event_type), seq))?;
            if let Some(tenant) = event.tenant.as_deref() {
                self.events_by_tenant
                    .remove(index_key(tenant_hash(tenant), seq))?;
            }
            sweep.removed += 1;
        }
        if rows.len() == budget {
            sweep.next_after = rows.last().map(|(seq, _)| *seq);
        }
        Ok(sweep)
    }

    /// Whether a delivery of the event at `seq` is pending or failed.
    fn has_unsettled_delivery(&mut self, seq: u64) -> Result<bool, StoreError> {
        let tables = self.tables()?;
        for row in tables.by_event.range((seq, 0)..=(seq, u64::MAX))? {
            let id = row?.0.value().1;
            let status =
                super::get_record::<u64, DeliveryRecord>(&tables.deliveries, id)?.map(|d| d.status);
            if status.is_some_and(|s| s != DeliveryStatus::Succeeded) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Empties the text and HTML of settled messages queued before
    /// `before_ms`, examining at most `budget` after id `after` (or after
    /// where earlier sweeps left every message settled and purged).
    pub(crate) fn sweep_mail_bodies(
        &mut self,
        before_ms: i64,
        after: u64,
        budget: usize,
    ) -> Result<Sweep, StoreError> {
        let mut meta = self.txn.open_table(META)?;
        let purged_to = meta
            .get(BODIES_PURGED_TO)?
            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
            .map_or(0, u64::from_le_bytes);
        let mut emails = self.txn.open_table(EMAILS)?;
        let mut rows: Vec<(u64, EmailRecord)> = Vec::new();
        for row in emails
            .range(after.max(purged_to).saturating_add(1)..)?
            .take(budget)
        {
            let (id, bytes) = row?;
            rows.push((id.value(), super::codec::decode(bytes.value())?));
        }
        let mut sweep = Sweep::default();
        let mut settled_to = purged_to;
        let mut settled_so_far = after <= purged_to;
        let mut reached_young = false;
        for (id, mut record) in rows.iter().cloned() {
            if record.created_at_ms >= before_ms {
                reached_young = true;
                break;
            }
            if record.next_attempt_ms.is_some() {
                settled_so_far = false;
                continue;
            }
            if !record.text.is_empty() || record.html.is_some() {
                record.text = String::new();
                record.html = None;
                emails.insert(id, encode(&record).as_slice())?;
                sweep.removed += 1;
            }
            if settled_so_far {
                settled_to = id;
            }
        }
        if settled_to > purged_to {
            meta.insert(BODIES_PURGED_TO, settled_to.to_le_bytes().as_slice())?;
        }
        if !reached_young && rows.len() == budget {
            sweep.next_after = rows.last().map(|(id, _)| *id);
        }
        Ok(sweep)
    }

    /// Deletes attempt tallies of minutes before `before_minute`, at most
    /// `budget` rows, seeking endpoint by endpoint from `from_endpoint`.
    /// Answers the rows deleted and the endpoint to go on from, if any.
    pub(crate) fn sweep_attempt_tallies(
        &mut self,
        before_minute: i64,
        from_endpoint: u128,
        budget: usize,
    ) -> Result<(usize, Option<u128>), StoreError> {
        let tables = self.tables()?;
        let mut removed = 0;
        let mut from = from_endpoint;
        loop {
            let first = tables
                .attempts
                .range((from, i64::MIN)..)?
                .next()
                .transpose()?
                .map(|(k, _)| k.value());
            let Some((endpoint, _)) = first else {
                return Ok((removed, None));
            };
            let old: Vec<(u128, i64)> = tables
                .attempts
                .range((endpoint, i64::MIN)..(endpoint, before_minute))?
                .take(budget - removed)
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            for key in &old {
                tables.attempts.remove(*key)?;
            }
            removed += old.len();
            if removed == budget {
                return Ok((removed, Some(endpoint)));
            }
            match endpoint.checked_add(1) {
                Some(next) => from = next,
                None => return Ok((removed, None)),
            }
        }
    }
}
