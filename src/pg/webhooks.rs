//! Webhook endpoints and deliveries on PostgreSQL: what the API reads and
//! changes, and the fan-out that creates deliveries inside the appending
//! transaction.

use deadpool_postgres::Pool;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, Transaction};

use super::PgError;
use crate::store::attempt_tally::AttemptTally;
use crate::store::codec;
use crate::store::records::{DeliveryRecord, DeliveryStatus, EndpointRecord, EventRecord};
use crate::store::webhooks::{DeliveryCounts, DeliveryFilter};
use crate::webhooks::ledger::RecoverCount;

pub fn id_bytes(id: u128) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

pub fn status_code(status: DeliveryStatus) -> i16 {
    match status {
        DeliveryStatus::Pending => 0,
        DeliveryStatus::Succeeded => 1,
        DeliveryStatus::Failed => 2,
    }
}

/// The API's reads and writes of endpoints and deliveries.
#[derive(Clone)]
pub struct PgHooks {
    pool: Pool,
}

/// A page of deliveries and the id the next page starts after, if any.
pub type DeliveryPage = (Vec<(u64, DeliveryRecord)>, Option<u64>);

impl PgHooks {
    pub fn new(pool: Pool) -> PgHooks {
        PgHooks { pool }
    }

    /// Creates or replaces `record`; fan-out sees it from the next group
    /// commit on, on every node.
    pub async fn put_endpoint(&self, record: &EndpointRecord) -> Result<(), PgError> {
        let mut client = self.pool.get().await?;
        let txn = client.transaction().await?;
        txn.execute(
            "INSERT INTO herald_endpoints (id, tenant, enabled, record) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET tenant = $2, enabled = $3, record = $4",
            &[
                &id_bytes(record.id),
                &record.tenant,
                &record.enabled,
                &codec::encode(record),
            ],
        )
        .await?;
        bump_version(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Applies `change` to endpoint `id` under its row lock, so two nodes'
    /// concurrent updates cannot lose each other's fields. `None`: no such
    /// endpoint, or `visible` refused it.
    pub async fn update_endpoint<E>(
        &self,
        id: u128,
        visible: impl FnOnce(&EndpointRecord) -> bool,
        change: impl FnOnce(EndpointRecord) -> Result<EndpointRecord, E>,
    ) -> Result<Option<Result<EndpointRecord, E>>, PgError> {
        let mut client = self.pool.get().await?;
        let txn = client.transaction().await?;
        let key = id_bytes(id);
        let Some(row) = txn
            .query_opt(
                "SELECT record FROM herald_endpoints WHERE id = $1 FOR UPDATE",
                &[&key],
            )
            .await?
        else {
            return Ok(None);
        };
        let current: EndpointRecord = codec::decode(row.get::<_, &[u8]>(0))?;
        if !visible(&current) {
            return Ok(None);
        }
        let updated = match change(current) {
            Ok(updated) => updated,
            Err(e) => return Ok(Some(Err(e))),
        };
        txn.execute(
            "UPDATE herald_endpoints SET tenant = $2, enabled = $3, record = $4 WHERE id = $1",
            &[
                &key,
                &updated.tenant,
                &updated.enabled,
                &codec::encode(&updated),
            ],
        )
        .await?;
        bump_version(&txn).await?;
        txn.commit().await?;
        Ok(Some(Ok(updated)))
    }

    /// Deletes the endpoint; whether it existed.
    pub async fn delete_endpoint(&self, id: u128) -> Result<bool, PgError> {
        let mut client = self.pool.get().await?;
        let txn = client.transaction().await?;
        let key = id_bytes(id);
        let deleted = txn
            .execute("DELETE FROM herald_endpoints WHERE id = $1", &[&key])
            .await?;
        // As on redb: what was still pending is abandoned as failed, and
        // every delivery stays readable.
        let pending = txn
            .query(
                "SELECT id, record FROM herald_deliveries \
                 WHERE endpoint_id = $1 AND status = 0 FOR UPDATE",
                &[&key],
            )
            .await?;
        for row in pending {
            let id: i64 = row.get(0);
            let mut record: DeliveryRecord = codec::decode(row.get::<_, &[u8]>(1))?;
            record.status = DeliveryStatus::Failed;
            record.next_attempt_ms = None;
            txn.execute(
                "UPDATE herald_deliveries SET status = $1, next_attempt_ms = NULL, \
                 lease_token = NULL, record = $2 WHERE id = $3",
                &[&status_code(record.status), &codec::encode(&record), &id],
            )
            .await?;
        }
        bump_version(&txn).await?;
        txn.commit().await?;
        Ok(deleted > 0)
    }

    pub async fn endpoint(&self, id: u128) -> Result<Option<EndpointRecord>, PgError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT record FROM herald_endpoints WHERE id = $1",
                &[&id_bytes(id)],
            )
            .await?;
        row.map(|r| codec::decode(r.get::<_, &[u8]>(0)).map_err(PgError::from))
            .transpose()
    }

    /// Every endpoint, or a tenant's, in id order.
    pub async fn endpoints(&self, tenant: Option<&str>) -> Result<Vec<EndpointRecord>, PgError> {
        let client = self.pool.get().await?;
        let rows = match tenant {
            Some(t) => {
                client
                    .query(
                        "SELECT record FROM herald_endpoints WHERE tenant = $1 ORDER BY id",
                        &[&t],
                    )
                    .await?
            }
            None => {
                client
                    .query("SELECT record FROM herald_endpoints ORDER BY id", &[])
                    .await?
            }
        };
        rows.iter()
            .map(|r| codec::decode(r.get::<_, &[u8]>(0)).map_err(PgError::from))
            .collect()
    }

    pub async fn delivery(&self, id: u64) -> Result<Option<DeliveryRecord>, PgError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT record FROM herald_deliveries WHERE id = $1", &[&id])
            .await?;
        row.map(|r| codec::decode(r.get::<_, &[u8]>(0)).map_err(PgError::from))
            .transpose()
    }

    /// Deliveries after `after` in id order passing `filter`, limited to
    /// the endpoints of `tenant` when given.
    pub async fn deliveries(
        &self,
        filter: &DeliveryFilter,
        tenant: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<DeliveryPage, PgError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let fetch = limit as i64 + 1;
        let endpoint = filter.endpoint_id.map(id_bytes);
        let status = filter.status.map(status_code);
        let event_seq = filter
            .event_id
            .map(|id| crate::store::log::seq_of_event_id(id) as i64);
        let mut sql = String::from("SELECT d.id, d.record FROM herald_deliveries d");
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after];
        let mut conditions = vec!["d.id > $1".to_owned()];
        if let Some(t) = tenant.as_ref() {
            sql.push_str(" JOIN herald_endpoints e ON e.id = d.endpoint_id");
            params.push(t);
            conditions.push(format!("e.tenant = ${}", params.len()));
        }
        for (column, value) in [
            (
                "d.endpoint_id",
                endpoint.as_ref().map(|v| v as &(dyn ToSql + Sync)),
            ),
            (
                "d.status",
                status.as_ref().map(|v| v as &(dyn ToSql + Sync)),
            ),
            (
                "d.event_seq",
                event_seq.as_ref().map(|v| v as &(dyn ToSql + Sync)),
            ),
        ] {
            if let Some(value) = value {
                params.push(value);
                conditions.push(format!("{column} = ${}", params.len()));
            }
        }
        params.push(&fetch);
        sql.push_str(&format!(
            " WHERE {} ORDER BY d.id LIMIT ${}",
            conditions.join(" AND "),
            params.len()
        ));
        let client = self.pool.get().await?;
        let rows = client.query(&sql, &params).await?;
        let more = rows.len() > limit;
        let mut page = Vec::with_capacity(rows.len().min(limit));
        for row in rows.iter().take(limit) {
            let id: i64 = row.get(0);
            let record: DeliveryRecord = codec::decode(row.get::<_, &[u8]>(1))?;
            // The event id must match whole, not only by its seq.
            if filter.event_id.is_some_and(|e| e != record.event_id) {
                continue;
            }
            page.push((id as u64, record));
        }
        let next = more.then(|| page.last().map_or(after as u64, |(id, _)| *id));
        Ok((page, next))
    }
}

pub(super) async fn bump_version(txn: &Transaction<'_>) -> Result<(), PgError> {
    txn.execute(
        "UPDATE herald_endpoints_version SET version = version + 1 WHERE id = 1",
        &[],
    )
    .await?;
    Ok(())
}

/// The enabled endpoints as a group committer fans out to them, reloaded
/// only when an endpoint changed since the last load.
#[derive(Default)]
pub struct FanOut {
    version: Option<i64>,
    endpoints: Vec<EndpointRecord>,
}

impl FanOut {
    /// Brings the endpoints up to `version` (read in the same transaction).
    pub async fn refresh(
        &mut self,
        client: &impl GenericClient,
        version: i64,
    ) -> Result<(), PgError> {
        if self.version == Some(version) {
            return Ok(());
        }
        let rows = client
            .query(
                "SELECT record FROM herald_endpoints WHERE enabled ORDER BY id",
                &[],
            )
            .await?;
        self.endpoints = rows
            .iter()
            .map(|r| codec::decode(r.get::<_, &[u8]>(0)))
            .collect::<Result<_, _>>()?;
        self.version = Some(version);
        Ok(())
    }

    /// Forgets what was loaded: after a failed transaction the version read
    /// in it proves nothing.
    pub fn forget(&mut self) {
        self.version = None;
    }

    /// Adds the deliveries of the event at `seq` to `rows`, none to
    /// `exclude`.
    pub fn deliveries_of(
        &self,
        seq: u64,
        event: &EventRecord,
        exclude: Option<u128>,
        rows: &mut NewDeliveries,
    ) {
        for endpoint in &self.endpoints {
            if exclude == Some(endpoint.id) {
                continue;
            }
            if !crate::names::subscribes(
                endpoint.subscription(),
                &event.event_type,
                event.source,
                event.tenant.as_deref(),
            ) {
                continue;
            }
            rows.push(
                endpoint.id,
                seq,
                event.id,
                event.event_type.clone(),
                event.received_at_ms,
            );
        }
    }
}

/// Deliveries one group creates, column by column.
#[derive(Default)]
pub struct NewDeliveries {
    endpoint_ids: Vec<Vec<u8>>,
    event_seqs: Vec<i64>,
    due_ms: Vec<i64>,
    records: Vec<Vec<u8>>,
}

impl NewDeliveries {
    pub fn is_empty(&self) -> bool {
        self.event_seqs.is_empty()
    }

    /// Inserts them in the group's transaction: a 2xx for the events means
    /// their deliveries are committed too.
    pub async fn insert(&self, txn: &Transaction<'_>) -> Result<u64, PgError> {
        if self.is_empty() {
            return Ok(0);
        }
        let statement = txn
            .prepare_typed(
                "INSERT INTO herald_deliveries (endpoint_id, event_seq, status, next_attempt_ms, record) \
                 SELECT e, s, 0, d, r FROM unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::bytea[]) \
                 AS t(e, s, d, r)",
                &[Type::BYTEA_ARRAY, Type::INT8_ARRAY, Type::INT8_ARRAY, Type::BYTEA_ARRAY],
            )
            .await?;
        Ok(txn
            .execute(
                &statement,
                &[
                    &self.endpoint_ids,
                    &self.event_seqs,
                    &self.due_ms,
                    &self.records,
                ],
            )
            .await?)
    }
}

impl NewDeliveries {
    /// A new delivery of the event at `seq` to `endpoint_id`, made and due
    /// at `now_ms`.
    pub fn push(
        &mut self,
        endpoint_id: u128,
        seq: u64,
        event_id: u128,
        event_type: String,
        now_ms: i64,
    ) {
        let record = DeliveryRecord {
            endpoint_id,
            event_seq: seq,
            event_id,
            event_type,
            status: DeliveryStatus::Pending,
            attempts: Vec::new(),
            next_attempt_ms: Some(now_ms),
            created_at_ms: now_ms,
            schedule_from: 0,
        };
        self.endpoint_ids.push(id_bytes(endpoint_id));
        self.event_seqs.push(seq as i64);
        self.due_ms.push(now_ms);
        self.records.push(codec::encode(&record));
    }
}

impl PgHooks {
    /// Puts the endpoint's failed deliveries created since `since_ms` (at
    /// most `limit` looked at) back on the schedule, from the next attempt
    /// on, except those of events from a source it no longer takes. `None`:
    /// no such endpoint, or `visible` refuses it now.
    pub async fn recover(
        &self,
        endpoint_id: u128,
        visible: impl FnOnce(&EndpointRecord) -> bool,
        since_ms: i64,
        limit: usize,
        now_ms: i64,
    ) -> Result<Option<RecoverCount>, PgError> {
        let mut client = self.pool.get().await?;
        let txn = client.transaction().await?;
        let key = id_bytes(endpoint_id);
        // The endpoint first, as every transaction that changes its
        // deliveries locks it.
        let Some(row) = txn
            .query_opt(
                "SELECT record FROM herald_endpoints WHERE id = $1 FOR UPDATE",
                &[&key],
            )
            .await?
        else {
            return Ok(None);
        };
        let endpoint: EndpointRecord = codec::decode(row.get::<_, &[u8]>(0))?;
        if !visible(&endpoint) {
            return Ok(None);
        }
        let mut count = RecoverCount {
            examined: 0,
            requeued: 0,
        };
        // A page at a time: an endpoint with millions of dead letters is
        // read, and locked, only as far as `limit` takes it.
        let mut after: i64 = 0;
        'pages: loop {
            let failed = txn
                .query(
                    "SELECT d.id, d.record, e.record FROM herald_deliveries d \
                     LEFT JOIN herald_events e ON e.seq = d.event_seq \
                     WHERE d.endpoint_id = $1 AND d.status = $2 AND d.id > $3 \
                     ORDER BY d.id LIMIT 500 FOR UPDATE OF d",
                    &[&key, &status_code(DeliveryStatus::Failed), &after],
                )
                .await?;
            let Some(last) = failed.last().map(|row| row.get::<_, i64>(0)) else {
                break;
            };
            after = last;
            for row in &failed {
                let mut delivery: DeliveryRecord = codec::decode(row.get::<_, &[u8]>(1))?;
                if delivery.created_at_ms < since_ms {
                    continue;
                }
                count.examined += 1;
                let source = row
                    .get::<_, Option<&[u8]>>(2)
                    .map(codec::decode::<EventRecord>)
                    .transpose()?
                    .map(|e| e.source);
                if source.is_none_or(|s| endpoint.sources.contains(&s)) {
                    count.requeued += 1;
                    delivery.status = DeliveryStatus::Pending;
                    delivery.next_attempt_ms = Some(now_ms);
                    delivery.schedule_from = delivery.attempts.len() as u32;
                    txn.execute(
                        "UPDATE herald_deliveries SET status = $1, next_attempt_ms = $2, \
                         record = $3 WHERE id = $4",
                        &[
                            &status_code(delivery.status),
                            &delivery.next_attempt_ms,
                            &codec::encode(&delivery),
                            &row.get::<_, i64>(0),
                        ],
                    )
                    .await?;
                }
                if count.examined == limit {
                    break 'pages;
                }
            }
        }
        txn.commit().await?;
        Ok(Some(count))
    }

    /// A new delivery of each (seq, event id, type) still in the log to the
    /// endpoint, due now; answers how many. `None` when the endpoint is
    /// gone or `visible` refuses it now.
    pub async fn replay(
        &self,
        endpoint_id: u128,
        visible: impl FnOnce(&EndpointRecord) -> bool,
        events: Vec<(u64, u128, String)>,
        now_ms: i64,
    ) -> Result<Option<usize>, PgError> {
        let mut client = self.pool.get().await?;
        let txn = client.transaction().await?;
        let Some(row) = txn
            .query_opt(
                "SELECT record FROM herald_endpoints WHERE id = $1 FOR UPDATE",
                &[&id_bytes(endpoint_id)],
            )
            .await?
        else {
            return Ok(None);
        };
        if !visible(&codec::decode(row.get::<_, &[u8]>(0))?) {
            return Ok(None);
        }
        // Each event is held until the commit (`FOR KEY SHARE`): the
        // retention pass deletes only events it holds and no pending
        // delivery names, so a new delivery never names an event it has
        // just deleted. One it deleted before is not delivered again.
        let seqs: Vec<i64> = events.iter().map(|(seq, _, _)| *seq as i64).collect();
        let present: std::collections::HashSet<i64> = txn
            .query(
                "SELECT seq FROM herald_events WHERE seq = ANY($1) ORDER BY seq FOR KEY SHARE",
                &[&seqs],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut rows = NewDeliveries::default();
        let mut count = 0;
        for (seq, event_id, event_type) in events {
            if present.contains(&(seq as i64)) {
                rows.push(endpoint_id, seq, event_id, event_type, now_ms);
                count += 1;
            }
        }
        rows.insert(&txn).await?;
        txn.commit().await?;
        Ok(Some(count))
    }

    /// The endpoint's attempt tallies from minute `from_minute` on, by
    /// minute, and how many of its deliveries are in each status.
    pub async fn stats(
        &self,
        endpoint_id: u128,
        from_minute: i64,
    ) -> Result<(Vec<(i64, AttemptTally)>, DeliveryCounts), PgError> {
        let client = self.pool.get().await?;
        let key = id_bytes(endpoint_id);
        let mut tallies: Vec<(i64, AttemptTally)> = Vec::new();
        for row in client
            .query(
                "SELECT minute, tally FROM herald_attempt_tally \
                 WHERE endpoint_id = $1 AND minute >= $2 ORDER BY minute",
                &[&key, &from_minute],
            )
            .await?
        {
            let minute: i64 = row.get(0);
            let tally = AttemptTally::decode(row.get::<_, &[u8]>(1))?;
            match tallies.last_mut() {
                Some((m, sum)) if *m == minute => sum.merge(&tally),
                _ => tallies.push((minute, tally)),
            }
        }
        let mut counts = DeliveryCounts::default();
        for row in client
            .query(
                "SELECT status, count(*) FROM herald_deliveries WHERE endpoint_id = $1 \
                 GROUP BY status",
                &[&key],
            )
            .await?
        {
            let n = row.get::<_, i64>(1) as u64;
            match row.get::<_, i16>(0) {
                0 => counts.pending = n,
                1 => counts.succeeded = n,
                _ => counts.failed = n,
            }
        }
        Ok((tallies, counts))
    }
}
