//! Webhook tables: endpoints and deliveries (with their attempts), read
//! and written inside transactions. Deliveries are created by the log's
//! fan-out; their schedule rows live in `due`.

use redb::{ReadableDatabase, ReadableTable};

use super::attempt_tally::{minute_of, AttemptTally};
use super::codec::{decode, encode};
use super::due::Queue;
use super::records::{
    AttemptRecord, DeliveryRecord, DeliveryStatus, EndpointRecord, EndpointStreakRecord,
};
use super::tables::{
    DELIVERIES, DELIVERIES_BY_ENDPOINT, DELIVERIES_BY_ENDPOINT_STATUS, DELIVERIES_BY_EVENT,
    DELIVERIES_BY_STATUS, ENDPOINTS, ENDPOINT_ATTEMPTS, ENDPOINT_DELIVERY_COUNTS, ENDPOINT_STREAKS,
};
use super::{ReadTxn, StoreError, WriteTxn};

/// A delivery status's byte in index keys: part of the file format.
pub(crate) fn delivery_status_code(status: DeliveryStatus) -> u8 {
    match status {
        DeliveryStatus::Pending => 1,
        DeliveryStatus::Succeeded => 2,
        DeliveryStatus::Failed => 3,
    }
}

/// The status-dependent rows of one delivery: its place in the status
/// indexes and in its endpoint's counts. Every change of a delivery's status
/// moves them in the transaction that changes the delivery.
pub(super) struct StatusIndex<'a, 'txn> {
    pub by_status: &'a mut redb::Table<'txn, (u8, u64), ()>,
    pub by_endpoint_status: &'a mut redb::Table<'txn, (u128, u8, u64), ()>,
    pub counts: &'a mut redb::Table<'txn, (u128, u8), u64>,
}

impl StatusIndex<'_, '_> {
    pub(super) fn add(
        &mut self,
        endpoint: u128,
        id: u64,
        status: DeliveryStatus,
    ) -> Result<(), StoreError> {
        let code = delivery_status_code(status);
        self.by_status.insert((code, id), ())?;
        self.by_endpoint_status.insert((endpoint, code, id), ())?;
        let count = self.counts.get((endpoint, code))?.map_or(0, |v| v.value());
        self.counts.insert((endpoint, code), count + 1)?;
        Ok(())
    }

    fn remove(
        &mut self,
        endpoint: u128,
        id: u64,
        status: DeliveryStatus,
    ) -> Result<(), StoreError> {
        let code = delivery_status_code(status);
        self.by_status.remove((code, id))?;
        self.by_endpoint_status.remove((endpoint, code, id))?;
        let count = self.counts.get((endpoint, code))?.map_or(0, |v| v.value());
        if count <= 1 {
            self.counts.remove((endpoint, code))?;
        } else {
            self.counts.insert((endpoint, code), count - 1)?;
        }
        Ok(())
    }
}

/// Adds `attempts` of `endpoint` to their minutes' tallies.
pub(super) fn tally_attempts(
    table: &mut redb::Table<'_, (u128, i64), &'static [u8]>,
    endpoint: u128,
    attempts: &[AttemptRecord],
) -> Result<(), StoreError> {
    let mut by_minute: std::collections::BTreeMap<i64, Vec<&AttemptRecord>> = Default::default();
    for attempt in attempts {
        by_minute
            .entry(minute_of(attempt.at_ms))
            .or_default()
            .push(attempt);
    }
    for (minute, attempts) in by_minute {
        let mut tally = match table.get((endpoint, minute))? {
            Some(bytes) => AttemptTally::decode(bytes.value())?,
            None => AttemptTally::default(),
        };
        for attempt in attempts {
            tally.add(attempt.status_code, attempt.latency_ms);
        }
        table.insert((endpoint, minute), tally.encode().as_slice())?;
    }
    Ok(())
}

/// What the writer keeps in memory for webhooks between commits.
#[derive(Debug, Default)]
pub struct HookState {
    /// Every endpoint, for matching new events without reading the table.
    pub endpoints: Vec<EndpointRecord>,
    /// The id the next delivery gets: ids are dense and start at 1.
    pub next_delivery_id: u64,
}

impl HookState {
    pub fn load(db: &redb::Database) -> Result<Self, StoreError> {
        let txn = db.begin_read()?;
        let table = txn.open_table(ENDPOINTS)?;
        let mut endpoints = Vec::new();
        for row in table.iter()? {
            let (_, bytes) = row?;
            endpoints.push(decode::<EndpointRecord>(bytes.value())?);
        }
        let deliveries = txn.open_table(DELIVERIES)?;
        let next_delivery_id = deliveries.last()?.map_or(1, |(k, _)| k.value() + 1);
        Ok(HookState {
            endpoints,
            next_delivery_id,
        })
    }
}

/// The webhook tables of one write transaction.
pub struct HookTables<'txn> {
    endpoints: redb::Table<'txn, u128, &'static [u8]>,
    pub(super) deliveries: redb::Table<'txn, u64, &'static [u8]>,
    by_endpoint: redb::Table<'txn, (u128, u64), ()>,
    pub(super) by_event: redb::Table<'txn, (u64, u64), ()>,
    pub(super) by_status: redb::Table<'txn, (u8, u64), ()>,
    by_endpoint_status: redb::Table<'txn, (u128, u8, u64), ()>,
    counts: redb::Table<'txn, (u128, u8), u64>,
    pub(super) attempts: redb::Table<'txn, (u128, i64), &'static [u8]>,
    streaks: redb::Table<'txn, u128, &'static [u8]>,
}

impl<'txn> HookTables<'txn> {
    fn status_index(&mut self) -> StatusIndex<'_, 'txn> {
        StatusIndex {
            by_status: &mut self.by_status,
            by_endpoint_status: &mut self.by_endpoint_status,
            counts: &mut self.counts,
        }
    }
}

impl<'txn> WriteTxn<'txn> {
    pub(super) fn tables(&mut self) -> Result<&mut HookTables<'txn>, StoreError> {
        if self.hook_tables.is_none() {
            let txn = self.txn;
            self.hook_tables = Some(HookTables {
                endpoints: txn.open_table(ENDPOINTS)?,
                deliveries: txn.open_table(DELIVERIES)?,
                by_endpoint: txn.open_table(DELIVERIES_BY_ENDPOINT)?,
                by_event: txn.open_table(DELIVERIES_BY_EVENT)?,
                by_status: txn.open_table(DELIVERIES_BY_STATUS)?,
                by_endpoint_status: txn.open_table(DELIVERIES_BY_ENDPOINT_STATUS)?,
                counts: txn.open_table(ENDPOINT_DELIVERY_COUNTS)?,
                attempts: txn.open_table(ENDPOINT_ATTEMPTS)?,
                streaks: txn.open_table(ENDPOINT_STREAKS)?,
            });
        }
        Ok(self.hook_tables.as_mut().expect("opened just above"))
    }

    /// Writes a new delivery with its index rows; its schedule row is the
    /// caller's.
    pub(crate) fn insert_delivery(
        &mut self,
        id: u64,
        record: &DeliveryRecord,
    ) -> Result<(), StoreError> {
        let tables = self.tables()?;
        tables.deliveries.insert(id, encode(record).as_slice())?;
        tables.by_endpoint.insert((record.endpoint_id, id), ())?;
        tables.by_event.insert((record.event_seq, id), ())?;
        tables
            .status_index()
            .add(record.endpoint_id, id, record.status)?;
        tally_attempts(&mut tables.attempts, record.endpoint_id, &record.attempts)?;
        Ok(())
    }

    /// Deletes a settled delivery with its index rows; its attempts stay
    /// counted in the endpoint's stats. `None` when there was no such
    /// delivery, or it is still scheduled (then it stays).
    pub(crate) fn remove_settled_delivery(
        &mut self,
        id: u64,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let tables = self.tables()?;
        let Some(record) = super::get_record::<u64, DeliveryRecord>(&tables.deliveries, id)? else {
            return Ok(None);
        };
        if record.next_attempt_ms.is_some() || record.status == DeliveryStatus::Pending {
            return Ok(None);
        }
        tables.deliveries.remove(id)?;
        tables.by_endpoint.remove((record.endpoint_id, id))?;
        tables.by_event.remove((record.event_seq, id))?;
        tables
            .status_index()
            .remove(record.endpoint_id, id, record.status)?;
        Ok(Some(record))
    }

    pub(crate) fn delivery(&mut self, id: u64) -> Result<Option<DeliveryRecord>, StoreError> {
        super::get_record(&self.tables()?.deliveries, id)
    }

    /// Stores `record` for delivery `id`, moving its row in the schedule from
    /// `previous_due` to its new `next_attempt_ms`.
    pub(crate) fn put_delivery(
        &mut self,
        id: u64,
        record: &DeliveryRecord,
        previous_due: Option<i64>,
    ) -> Result<(), StoreError> {
        self.reschedule(
            Queue::Webhooks,
            record.endpoint_id,
            id,
            previous_due,
            record.next_attempt_ms,
        )?;
        let tables = self.tables()?;
        let previous: Option<DeliveryRecord> =
            match tables.deliveries.insert(id, encode(record).as_slice())? {
                Some(old) => Some(decode(old.value())?),
                None => None,
            };
        let previous_status = previous.as_ref().map(|p| p.status);
        if previous_status != Some(record.status) {
            let mut index = tables.status_index();
            if let Some(status) = previous_status {
                index.remove(record.endpoint_id, id, status)?;
            }
            index.add(record.endpoint_id, id, record.status)?;
        }
        let counted = previous.map_or(0, |p| p.attempts.len());
        let new_attempts = record.attempts.get(counted..).unwrap_or_default();
        tally_attempts(&mut tables.attempts, record.endpoint_id, new_attempts)?;
        Ok(())
    }

    pub(crate) fn endpoint(&self, id: u128) -> Option<&EndpointRecord> {
        self.memory.hooks.endpoints.iter().find(|e| e.id == id)
    }

    pub(crate) fn put_endpoint(&mut self, record: EndpointRecord) -> Result<(), StoreError> {
        self.tables()?
            .endpoints
            .insert(record.id, encode(&record).as_slice())?;
        let endpoints = &mut self.memory.hooks.endpoints;
        match endpoints.iter_mut().find(|e| e.id == record.id) {
            Some(slot) => *slot = record,
            None => endpoints.push(record),
        }
        self.keys_changed(Queue::Webhooks);
        Ok(())
    }

    /// The endpoint's failing streak; the default when it has none.
    pub(crate) fn endpoint_streak(&mut self, id: u128) -> Result<EndpointStreakRecord, StoreError> {
        Ok(super::get_record(&self.tables()?.streaks, id)?.unwrap_or_default())
    }

    /// Stores the endpoint's streak; one with nothing to remember is removed.
    pub(crate) fn put_endpoint_streak(
        &mut self,
        id: u128,
        record: &EndpointStreakRecord,
    ) -> Result<(), StoreError> {
        let streaks = &mut self.tables()?.streaks;
        if *record == EndpointStreakRecord::default() {
            streaks.remove(id)?;
        } else {
            streaks.insert(id, encode(record).as_slice())?;
        }
        Ok(())
    }

    /// Deletes the endpoint and its streak; its deliveries stay. False when
    /// there was no such endpoint.
    pub(crate) fn remove_endpoint(&mut self, id: u128) -> Result<bool, StoreError> {
        let tables = self.tables()?;
        if tables.endpoints.remove(id)?.is_none() {
            return Ok(false);
        }
        tables.streaks.remove(id)?;
        self.memory.hooks.endpoints.retain(|e| e.id != id);
        self.keys_changed(Queue::Webhooks);
        Ok(true)
    }

    /// Every delivery of `endpoint_id` whose status is `status`, oldest
    /// first.
    pub(crate) fn endpoint_deliveries(
        &mut self,
        endpoint_id: u128,
        status: DeliveryStatus,
    ) -> Result<Vec<(u64, DeliveryRecord)>, StoreError> {
        self.endpoint_deliveries_since(endpoint_id, i64::MIN, status, usize::MAX)
    }

    /// Deliveries of `endpoint_id` created at or after `since_ms` whose status
    /// is `status`, oldest first, at most `limit`.
    pub(crate) fn endpoint_deliveries_since(
        &mut self,
        endpoint_id: u128,
        since_ms: i64,
        status: DeliveryStatus,
        limit: usize,
    ) -> Result<Vec<(u64, DeliveryRecord)>, StoreError> {
        let code = delivery_status_code(status);
        let tables = self.tables()?;
        let ids: Vec<u64> = tables
            .by_endpoint_status
            .range((endpoint_id, code, 0)..=(endpoint_id, code, u64::MAX))?
            .map(|r| r.map(|(k, _)| k.value().2))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(record) = super::get_record::<u64, DeliveryRecord>(&tables.deliveries, id)?
            {
                if record.created_at_ms >= since_ms {
                    out.push((id, record));
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Which deliveries a listing wants.
#[derive(Debug, Default, Clone)]
pub struct DeliveryFilter {
    pub endpoint_id: Option<u128>,
    pub event_id: Option<u128>,
    pub status: Option<DeliveryStatus>,
}

impl DeliveryFilter {
    /// Whether `record` passes every condition the filter sets; an index
    /// may have chosen the candidates by one of them already.
    pub(super) fn matches(&self, record: &DeliveryRecord) -> bool {
        self.endpoint_id.is_none_or(|e| e == record.endpoint_id)
            && self.event_id.is_none_or(|e| e == record.event_id)
            && self.status.is_none_or(|s| s == record.status)
    }
}

pub struct DeliveryPage {
    pub deliveries: Vec<(u64, DeliveryRecord)>,
    pub next_after: Option<u64>,
}

/// How many of an endpoint's deliveries are in each status.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub pending: u64,
    pub succeeded: u64,
    pub failed: u64,
}

impl ReadTxn {
    pub fn endpoints(&self) -> Result<Vec<EndpointRecord>, StoreError> {
        let table = self.txn.open_table(ENDPOINTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(decode::<EndpointRecord>(row?.1.value())?);
        }
        Ok(out)
    }

    pub fn endpoint(&self, id: u128) -> Result<Option<EndpointRecord>, StoreError> {
        super::get_record(&self.txn.open_table(ENDPOINTS)?, id)
    }

    pub fn delivery(&self, id: u64) -> Result<Option<DeliveryRecord>, StoreError> {
        super::get_record(&self.txn.open_table(DELIVERIES)?, id)
    }

    /// How many of the endpoint's deliveries are in each status, exactly.
    pub fn endpoint_delivery_counts(
        &self,
        endpoint_id: u128,
    ) -> Result<DeliveryCounts, StoreError> {
        let table = self.txn.open_table(ENDPOINT_DELIVERY_COUNTS)?;
        let count = |status| -> Result<u64, StoreError> {
            let code = delivery_status_code(status);
            Ok(table.get((endpoint_id, code))?.map_or(0, |v| v.value()))
        };
        Ok(DeliveryCounts {
            pending: count(DeliveryStatus::Pending)?,
            succeeded: count(DeliveryStatus::Succeeded)?,
            failed: count(DeliveryStatus::Failed)?,
        })
    }

    /// The endpoint's attempt tallies from minute `from_minute` on, by minute.
    pub fn endpoint_attempt_tallies(
        &self,
        endpoint_id: u128,
        from_minute: i64,
    ) -> Result<Vec<(i64, AttemptTally)>, StoreError> {
        let table = self.txn.open_table(ENDPOINT_ATTEMPTS)?;
        let mut out = Vec::new();
        for row in table.range((endpoint_id, from_minute)..=(endpoint_id, i64::MAX))? {
            let (key, value) = row?;
            out.push((key.value().1, AttemptTally::decode(value.value())?));
        }
        Ok(out)
    }

    /// Deliveries after id `after` matching `filter`, oldest first. An index
    /// drives every filter but the event's (an event has one delivery per
    /// endpoint), so a page is full unless nothing more matches.
    pub fn scan_deliveries(
        &self,
        filter: &DeliveryFilter,
        after: u64,
        limit: usize,
    ) -> Result<DeliveryPage, StoreError> {
        let deliveries = self.txn.open_table(DELIVERIES)?;
        let ids: Box<dyn Iterator<Item = Result<u64, StoreError>>> = if let Some(event_id) =
            filter.event_id
        {
            let seq = super::log::seq_of_event_id(event_id);
            let index = self.txn.open_table(DELIVERIES_BY_EVENT)?;
            Box::new(
                index
                    .range((seq, after.saturating_add(1))..=(seq, u64::MAX))?
                    .map(|r| r.map(|(k, _)| k.value().1).map_err(StoreError::from)),
            )
        } else if let (Some(endpoint), Some(status)) = (filter.endpoint_id, filter.status) {
            let code = delivery_status_code(status);
            let index = self.txn.open_table(DELIVERIES_BY_ENDPOINT_STATUS)?;
            Box::new(
                index
                    .range((endpoint, code, after.saturating_add(1))..=(endpoint, code, u64::MAX))?
                    .map(|r| r.map(|(k, _)| k.value().2).map_err(StoreError::from)),
            )
        } else if let Some(status) = filter.status {
            let code = delivery_status_code(status);
            let index = self.txn.open_table(DELIVERIES_BY_STATUS)?;
            Box::new(
                index
                    .range((code, after.saturating_add(1))..=(code, u64::MAX))?
                    .map(|r| r.map(|(k, _)| k.value().1).map_err(StoreError::from)),
            )
        } else if let Some(endpoint) = filter.endpoint_id {
            let index = self.txn.open_table(DELIVERIES_BY_ENDPOINT)?;
            Box::new(
                index
                    .range((endpoint, after.saturating_add(1))..=(endpoint, u64::MAX))?
                    .map(|r| r.map(|(k, _)| k.value().1).map_err(StoreError::from)),
            )
        } else {
            Box::new(
                deliveries
                    .range(after.saturating_add(1)..)?
                    .map(|r| r.map(|(k, _)| k.value()).map_err(StoreError::from)),
            )
        };
        let (deliveries, next_after) =
            super::page_by_ids(ids, &deliveries, after, limit, |record: &DeliveryRecord| {
                filter.matches(record)
            })?;
        Ok(DeliveryPage {
            deliveries,
            next_after,
        })
    }
}
