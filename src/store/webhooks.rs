//! Webhook tables: endpoints and deliveries (with their attempts), read
//! and written inside transactions. Deliveries are created by the log's
//! fan-out; their schedule rows live in `due`.

use redb::{ReadableDatabase, ReadableTable};

use super::codec::{decode, encode};
use super::due::Queue;
use super::records::{DeliveryRecord, DeliveryStatus, EndpointRecord};
use super::tables::{DELIVERIES, DELIVERIES_BY_ENDPOINT, DELIVERIES_BY_EVENT, ENDPOINTS};
use super::{ReadTxn, StoreError, WriteTxn};

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
    deliveries: redb::Table<'txn, u64, &'static [u8]>,
    by_endpoint: redb::Table<'txn, (u128, u64), ()>,
    by_event: redb::Table<'txn, (u64, u64), ()>,
}

impl<'txn> WriteTxn<'txn> {
    fn tables(&mut self) -> Result<&mut HookTables<'txn>, StoreError> {
        if self.hook_tables.is_none() {
            let txn = self.txn;
            self.hook_tables = Some(HookTables {
                endpoints: txn.open_table(ENDPOINTS)?,
                deliveries: txn.open_table(DELIVERIES)?,
                by_endpoint: txn.open_table(DELIVERIES_BY_ENDPOINT)?,
                by_event: txn.open_table(DELIVERIES_BY_EVENT)?,
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
        Ok(())
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
        self.tables()?
            .deliveries
            .insert(id, encode(record).as_slice())?;
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

    /// Deletes the endpoint; its deliveries stay. False when there was no
    /// such endpoint.
    pub(crate) fn remove_endpoint(&mut self, id: u128) -> Result<bool, StoreError> {
        if self.tables()?.endpoints.remove(id)?.is_none() {
            return Ok(false);
        }
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

    /// Every delivery id of `endpoint_id`, oldest first.
    fn endpoint_delivery_ids(&mut self, endpoint_id: u128) -> Result<Vec<u64>, StoreError> {
        Ok(self
            .tables()?
            .by_endpoint
            .range((endpoint_id, 0)..=(endpoint_id, u64::MAX))?
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?)
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
        let mut out = Vec::new();
        for id in self.endpoint_delivery_ids(endpoint_id)? {
            if let Some(record) = self.delivery(id)? {
                if record.created_at_ms >= since_ms && record.status == status {
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

pub struct DeliveryPage {
    pub deliveries: Vec<(u64, DeliveryRecord)>,
    pub next_after: Option<u64>,
}

/// (attempt time, status code, latency ms) per attempt, and whether the scan
/// was cut short.
pub type AttemptSample = (Vec<(i64, u16, u32)>, bool);

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

    /// (attempt time, status code, latency ms) of the endpoint's attempts made
    /// since `since_ms`, newest deliveries first. Deliveries created before
    /// `created_after_ms` are not examined, nor more than `budget` in all;
    /// the flag says whether the budget cut the scan short.
    pub fn endpoint_attempts(
        &self,
        endpoint_id: u128,
        since_ms: i64,
        created_after_ms: i64,
        budget: usize,
    ) -> Result<AttemptSample, StoreError> {
        let index = self.txn.open_table(DELIVERIES_BY_ENDPOINT)?;
        let deliveries = self.txn.open_table(DELIVERIES)?;
        let mut out = Vec::new();
        let rows = index.range((endpoint_id, 0)..=(endpoint_id, u64::MAX))?;
        for (examined, row) in rows.rev().enumerate() {
            if examined == budget {
                return Ok((out, true));
            }
            let id = row?.0.value().1;
            let Some(bytes) = deliveries.get(id)? else {
                continue;
            };
            let record: DeliveryRecord = decode(bytes.value())?;
            if record.created_at_ms < created_after_ms {
                break;
            }
            out.extend(
                record
                    .attempts
                    .iter()
                    .filter(|a| a.at_ms >= since_ms)
                    .map(|a| (a.at_ms, a.status_code, a.latency_ms)),
            );
        }
        Ok((out, false))
    }

    /// Deliveries after id `after` matching `filter`, oldest first.
    pub fn scan_deliveries(
        &self,
        filter: &DeliveryFilter,
        after: u64,
        limit: usize,
    ) -> Result<DeliveryPage, StoreError> {
        let deliveries = self.txn.open_table(DELIVERIES)?;
        let ids: Box<dyn Iterator<Item = Result<u64, StoreError>>> =
            if let Some(event_id) = filter.event_id {
                let seq = super::log::seq_of_event_id(event_id);
                let index = self.txn.open_table(DELIVERIES_BY_EVENT)?;
                Box::new(
                    index
                        .range((seq, after.saturating_add(1))..=(seq, u64::MAX))?
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
                filter.endpoint_id.is_none_or(|e| e == record.endpoint_id)
                    && filter.event_id.is_none_or(|e| e == record.event_id)
                    && filter.status.is_none_or(|s| s == record.status)
            })?;
        Ok(DeliveryPage {
            deliveries,
            next_after,
        })
    }
}
