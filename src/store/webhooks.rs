//! Webhook tables: endpoints, deliveries and the durable schedule of due
//! attempts, with fan-out of new events inside the appending transaction.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::codec::{decode, encode, AttemptRecord, DeliveryRecord, DeliveryStatus, EndpointRecord};
use super::{ReadTxn, StoreError, WriteTxn};

/// endpoint id → encoded `EndpointRecord`.
pub(crate) const ENDPOINTS: TableDefinition<u128, &[u8]> = TableDefinition::new("endpoints");
/// delivery id → encoded `DeliveryRecord`. Ids are dense and start at 1.
pub(crate) const DELIVERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("deliveries");
/// (due Unix ms, delivery id) → endpoint id: every pending delivery exactly
/// once. The source of truth for the dispatcher, which rebuilds its queues
/// from it at start. A row stays while its attempt is in flight, so a crash
/// mid-attempt means a retry, never a loss.
pub(crate) const DELIVERIES_DUE: TableDefinition<(u64, u64), u128> =
    TableDefinition::new("deliveries_due");
/// (endpoint id, delivery id) → (): an endpoint's deliveries, oldest first.
pub(crate) const DELIVERIES_BY_ENDPOINT: TableDefinition<(u128, u64), ()> =
    TableDefinition::new("deliveries_by_endpoint");
/// (event seq, delivery id) → (): an event's deliveries.
pub(crate) const DELIVERIES_BY_EVENT: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("deliveries_by_event");

/// A delivery the dispatcher should attempt at `due_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueDelivery {
    pub due_ms: i64,
    pub delivery_id: u64,
    pub endpoint_id: u128,
}

/// What the writer tells the dispatcher after a commit.
#[derive(Debug)]
pub enum HookNote {
    Due(Vec<DueDelivery>),
    EndpointsChanged,
}

/// What the writer keeps in memory for webhooks between commits.
#[derive(Debug, Default)]
pub struct HookState {
    /// Every endpoint, for matching new events without reading the table.
    pub endpoints: Vec<EndpointRecord>,
    pub next_delivery_id: u64,
    /// Deliveries made due by the transaction in progress, handed to the
    /// dispatcher once it committed.
    pub newly_due: Vec<DueDelivery>,
    /// An endpoint changed in the transaction in progress.
    pub endpoints_changed: bool,
    /// Set while appending an operational event about this endpoint, which
    /// it must not receive itself.
    pub fan_out_exclude: Option<u128>,
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
            newly_due: Vec::new(),
            endpoints_changed: false,
            fan_out_exclude: None,
        })
    }
}

/// The webhook tables of one write transaction.
pub struct HookTables<'txn> {
    endpoints: redb::Table<'txn, u128, &'static [u8]>,
    deliveries: redb::Table<'txn, u64, &'static [u8]>,
    due: redb::Table<'txn, (u64, u64), u128>,
    by_endpoint: redb::Table<'txn, (u128, u64), ()>,
    by_event: redb::Table<'txn, (u64, u64), ()>,
}

fn due_key(due_ms: i64, delivery_id: u64) -> (u64, u64) {
    (due_ms.max(0) as u64, delivery_id)
}

impl<'txn> WriteTxn<'txn> {
    fn tables(&mut self) -> Result<&mut HookTables<'txn>, StoreError> {
        if self.hook_tables.is_none() {
            let txn = self.txn;
            self.hook_tables = Some(HookTables {
                endpoints: txn.open_table(ENDPOINTS)?,
                deliveries: txn.open_table(DELIVERIES)?,
                due: txn.open_table(DELIVERIES_DUE)?,
                by_endpoint: txn.open_table(DELIVERIES_BY_ENDPOINT)?,
                by_event: txn.open_table(DELIVERIES_BY_EVENT)?,
            });
        }
        Ok(self.hook_tables.as_mut().expect("opened just above"))
    }

    /// Creates one pending delivery per enabled endpoint that wants the event
    /// at `seq`, due now.
    pub(crate) fn fan_out(
        &mut self,
        seq: u64,
        event_id: u128,
        event_type: &str,
        tenant: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if self.hooks.endpoints.is_empty() {
            return Ok(());
        }
        let mut matched = Vec::new();
        for endpoint in &self.hooks.endpoints {
            if endpoint.enabled
                && self.hooks.fan_out_exclude != Some(endpoint.id)
                && crate::names::subscribes(
                    &endpoint.event_types,
                    endpoint.tenant.as_deref(),
                    event_type,
                    tenant,
                )
            {
                matched.push(endpoint.id);
            }
        }
        for endpoint_id in matched {
            self.create_delivery(endpoint_id, seq, event_id, event_type, now_ms)?;
        }
        Ok(())
    }

    pub(crate) fn create_delivery(
        &mut self,
        endpoint_id: u128,
        event_seq: u64,
        event_id: u128,
        event_type: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let id = self.hooks.next_delivery_id;
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
        let tables = self.tables()?;
        tables.deliveries.insert(id, encode(&record).as_slice())?;
        tables.due.insert(due_key(now_ms, id), endpoint_id)?;
        tables.by_endpoint.insert((endpoint_id, id), ())?;
        tables.by_event.insert((event_seq, id), ())?;
        self.hooks.next_delivery_id = id + 1;
        self.hooks.newly_due.push(DueDelivery {
            due_ms: now_ms,
            delivery_id: id,
            endpoint_id,
        });
        Ok(id)
    }

    /// Appends an event Herald itself produced; `exclude` names an endpoint
    /// that must not receive it.
    pub(crate) fn append_system_event(
        &mut self,
        row: super::event_log::NewEventRow,
        now_ms: i64,
        exclude: Option<u128>,
    ) -> Result<u64, StoreError> {
        self.hooks.fan_out_exclude = exclude;
        let appended = self.append_event(row, now_ms);
        self.hooks.fan_out_exclude = None;
        appended.map(|(seq, _)| seq)
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
        let tables = self.tables()?;
        if let Some(due) = previous_due {
            tables.due.remove(due_key(due, id))?;
        }
        if let Some(due) = record.next_attempt_ms {
            tables.due.insert(due_key(due, id), record.endpoint_id)?;
            self.hooks.newly_due.push(DueDelivery {
                due_ms: due,
                delivery_id: id,
                endpoint_id: record.endpoint_id,
            });
        }
        self.tables()?
            .deliveries
            .insert(id, encode(record).as_slice())?;
        Ok(())
    }

    pub(crate) fn endpoint(&self, id: u128) -> Option<&EndpointRecord> {
        self.hooks.endpoints.iter().find(|e| e.id == id)
    }

    pub(crate) fn put_endpoint(&mut self, record: EndpointRecord) -> Result<(), StoreError> {
        self.tables()?
            .endpoints
            .insert(record.id, encode(&record).as_slice())?;
        match self.hooks.endpoints.iter_mut().find(|e| e.id == record.id) {
            Some(slot) => *slot = record,
            None => self.hooks.endpoints.push(record),
        }
        self.hooks.endpoints_changed = true;
        Ok(())
    }

    /// Deletes the endpoint and cancels its pending deliveries; their
    /// history stays readable.
    pub(crate) fn delete_endpoint(&mut self, id: u128) -> Result<bool, StoreError> {
        if self.tables()?.endpoints.remove(id)?.is_none() {
            return Ok(false);
        }
        self.hooks.endpoints.retain(|e| e.id != id);
        self.hooks.endpoints_changed = true;
        let pending = self.endpoint_delivery_ids(id)?;
        for delivery_id in pending {
            let Some(mut record) = self.delivery(delivery_id)? else {
                continue;
            };
            if record.status == DeliveryStatus::Pending {
                let due = record.next_attempt_ms.take();
                record.status = DeliveryStatus::Failed;
                self.put_delivery(delivery_id, &record, due)?;
            }
        }
        Ok(true)
    }

    /// Deliveries of `endpoint_id` created at or after `since_ms` whose status
    /// is `status`, oldest first, at most `limit`.
    fn endpoint_delivery_ids(&mut self, endpoint_id: u128) -> Result<Vec<u64>, StoreError> {
        Ok(self
            .tables()?
            .by_endpoint
            .range((endpoint_id, 0)..=(endpoint_id, u64::MAX))?
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?)
    }

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

    /// Every pending delivery in due order: what the dispatcher starts from.
    pub fn due_deliveries(&self) -> Result<Vec<super::webhooks::DueDelivery>, StoreError> {
        let table = self.txn.open_table(DELIVERIES_DUE)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (key, endpoint) = row?;
            let (due, delivery_id) = key.value();
            out.push(DueDelivery {
                due_ms: due as i64,
                delivery_id,
                endpoint_id: endpoint.value(),
            });
        }
        Ok(out)
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
                let seq = super::event_log::seq_of_event_id(event_id);
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

/// Appends `attempt` and decides what happens next; returns the schedule
/// row the delivery had before, for `put_delivery`.
pub fn record_attempt(
    record: &mut DeliveryRecord,
    attempt: AttemptRecord,
    next_attempt_ms: Option<i64>,
    succeeded: bool,
) -> Option<i64> {
    let previous = record.next_attempt_ms;
    record.attempts.push(attempt);
    if succeeded {
        record.status = DeliveryStatus::Succeeded;
        record.next_attempt_ms = None;
    } else if let Some(next) = next_attempt_ms {
        record.status = DeliveryStatus::Pending;
        record.next_attempt_ms = Some(next);
    } else {
        record.status = DeliveryStatus::Failed;
        record.next_attempt_ms = None;
    }
    previous
}
