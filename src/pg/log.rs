//! The event log on PostgreSQL: each node's group committer, and the
//! queries that page through the log. Every node appends to the same
//! tables; positions come from one locked row, so they are visible in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use super::webhooks::{FanOut, NewDeliveries};
use super::PgError;
use crate::config::store::PostgresSettings;
use crate::events::{AppendBatch, Appended, KeyConflict, Plan};
use crate::store::codec;
use crate::store::log::{seq_of_event_id, EventCursor, EventFilter, EventPage};
use crate::store::records::EventRecord;

/// What an append answers: its events, or the key that refused it.
pub type AppendOutcome = Result<Vec<Appended>, KeyConflict>;

/// Why an append got no answer; nothing of it is acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the write queue is full")]
    Busy,
    #[error("the event log is shutting down")]
    Closed,
    /// The transaction failed or its commit's fate is unknown: the client
    /// retries with the same idempotency key.
    #[error("the commit failed: {0}")]
    Failed(Arc<PgError>),
}

struct Pending {
    batch: AppendBatch,
    answer: oneshot::Sender<Result<AppendOutcome, AppendError>>,
}

/// A node's handle on the shared log: appends go through its committer,
/// reads through the pool.
#[derive(Clone)]
pub struct PgLog {
    queue: mpsc::Sender<Pending>,
    pool: Pool,
}

/// The committer's task; it ends once every `PgLog` clone is dropped and
/// the queued appends are answered.
pub type Committer = tokio::task::JoinHandle<()>;

impl PgLog {
    /// Starts this node's group committer (must run inside the runtime).
    /// `deliveries_due` is told whenever a group created deliveries.
    pub fn start(
        settings: PostgresSettings,
        pool: Pool,
        queue_capacity: usize,
        max_commit_batch: usize,
        deliveries_due: Arc<Notify>,
    ) -> (PgLog, Committer) {
        let (queue, inbox) = mpsc::channel(queue_capacity);
        let committer = tokio::spawn(run_committer(
            settings,
            inbox,
            max_commit_batch,
            deliveries_due,
        ));
        (PgLog { queue, pool }, committer)
    }

    /// Appends `batch` in this node's next group commit; answers once the
    /// commit is durable.
    pub async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, AppendError> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .try_send(Pending { batch, answer })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AppendError::Busy,
                mpsc::error::TrySendError::Closed(_) => AppendError::Closed,
            })?;
        answered.await.map_err(|_| AppendError::Closed)?
    }

    /// One oldest-first page of events after `after` that match `filter`.
    /// Only committed events are seen, and an event at position N commits
    /// before any position above N is handed out, so a cursor never passes
    /// an event that becomes visible later.
    pub async fn scan(
        &self,
        filter: &EventFilter,
        after: EventCursor,
        limit: usize,
    ) -> Result<EventPage, PgError> {
        let mut sql = String::from("SELECT seq, record FROM herald_events WHERE seq > $1");
        let after_seq = after.0.min(i64::MAX as u64) as i64;
        let fetch = limit as i64 + 1;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after_seq];
        // `$?` stands for the condition's own parameter.
        let conditions: [(&str, Option<&(dyn ToSql + Sync)>); 4] = [
            (
                "event_type = $?",
                filter.event_type.as_ref().map(|t| t as &(dyn ToSql + Sync)),
            ),
            (
                "tenant = $?",
                filter.tenant.as_ref().map(|t| t as &(dyn ToSql + Sync)),
            ),
            // received_at never decreases along seq, so a time bound becomes
            // a position bound found in the index: an `until` in the past
            // reads nothing instead of the rest of the log.
            (
                "seq >= coalesce((SELECT seq FROM herald_events WHERE received_at_ms >= $? \
                 ORDER BY received_at_ms, seq LIMIT 1), 9223372036854775807)",
                filter.since_ms.as_ref().map(|t| t as &(dyn ToSql + Sync)),
            ),
            (
                "seq <= coalesce((SELECT seq FROM herald_events WHERE received_at_ms <= $? \
                 ORDER BY received_at_ms DESC, seq DESC LIMIT 1), 0)",
                filter.until_ms.as_ref().map(|t| t as &(dyn ToSql + Sync)),
            ),
        ];
        for (condition, value) in conditions {
            if let Some(value) = value {
                params.push(value);
                let placeholder = format!("${}", params.len());
                sql.push_str(" AND ");
                sql.push_str(&condition.replace("$?", &placeholder));
            }
        }
        params.push(&fetch);
        sql.push_str(&format!(" ORDER BY seq LIMIT ${}", params.len()));

        let client = self.pool.get().await?;
        let statement = client.prepare_cached(&sql).await?;
        let rows = client.query(&statement, &params).await?;
        let more = rows.len() > limit;
        let mut events = Vec::with_capacity(rows.len().min(limit));
        for row in rows.into_iter().take(limit) {
            let seq: i64 = row.get(0);
            let record: EventRecord = codec::decode(row.get::<_, &[u8]>(1))?;
            events.push((seq as u64, record));
        }
        let last = events.last().map_or(after.0, |(seq, _)| *seq);
        Ok(EventPage {
            events,
            next: more.then_some(EventCursor(last)),
            tail: EventCursor(last),
        })
    }

    /// The event with this id; the whole id must match, not only its seq.
    pub async fn by_id(&self, id: u128) -> Result<Option<(u64, EventRecord)>, PgError> {
        let seq = seq_of_event_id(id);
        let Ok(seq_param) = i64::try_from(seq) else {
            return Ok(None);
        };
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached("SELECT record FROM herald_events WHERE seq = $1")
            .await?;
        let Some(row) = client.query_opt(&statement, &[&seq_param]).await? else {
            return Ok(None);
        };
        let record: EventRecord = codec::decode(row.get::<_, &[u8]>(0))?;
        Ok((record.id == id).then_some((seq, record)))
    }

    /// Whether the committer runs and the database answers a trivial
    /// query: the readiness probe.
    pub async fn is_ready(&self) -> bool {
        if self.queue.is_closed() {
            return false;
        }
        match self.pool.get().await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }
}

/// Drains the queue into groups: one transaction and one commit for as
/// many appends as are waiting, up to `max_commit_batch` events.
async fn run_committer(
    settings: PostgresSettings,
    mut inbox: mpsc::Receiver<Pending>,
    max_commit_batch: usize,
    deliveries_due: Arc<Notify>,
) {
    let mut session: Option<(Client, Statements)> = None;
    let mut fan_out = FanOut::default();
    let group_deadline = group_deadline(&settings);
    while let Some(first) = inbox.recv().await {
        let mut events = first.batch.len();
        let mut group = vec![first];
        while events < max_commit_batch {
            match inbox.try_recv() {
                Ok(next) => {
                    events += next.batch.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        if session
            .as_ref()
            .is_none_or(|(client, _)| client.is_closed())
        {
            session = match open_session(&settings).await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "cannot connect the event log's committer");
                    fail_all(group, e);
                    continue;
                }
            };
        }
        let Some((client, statements)) = session.as_mut() else {
            continue;
        };
        let batches: Vec<&AppendBatch> = group.iter().map(|p| &p.batch).collect();
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(
            group_deadline,
            commit_group(client, statements, &mut fan_out, &batches),
        )
        .await;
        drop(batches);
        let committed = matches!(outcome, Ok(Ok(_)));
        crate::metrics::WRITER.committed(group.len(), started.elapsed(), committed);
        if !committed {
            fan_out.forget();
        }
        match outcome {
            Ok(Ok((outcomes, created_deliveries))) => {
                if created_deliveries {
                    deliveries_due.notify_one();
                }
                for (pending, outcome) in group.into_iter().zip(outcomes) {
                    let _ = pending.answer.send(Ok(outcome));
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, appends = group.len(), "group commit failed");
                fail_all(group, e);
            }
            Err(_) => {
                tracing::error!(appends = group.len(), "group commit timed out");
                // The connection may still be inside the transaction.
                session = None;
                fail_all(group, PgError::Timeout(group_deadline));
            }
        }
    }
}

fn fail_all(group: Vec<Pending>, cause: PgError) {
    let cause = Arc::new(cause);
    for pending in group {
        let _ = pending.answer.send(Err(AppendError::Failed(cause.clone())));
    }
}

/// The head row, locked until the transaction ends, and the database's
/// clock in ms: every append, a group's or Herald's own, starts here.
pub(super) const LOCK_HEAD: &str = "SELECT next_seq, last_received_ms, \
     (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
     FROM herald_log_head WHERE id = 1 FOR UPDATE";

/// Appends Herald's own events (a delivery given up, an endpoint disabled)
/// inside `txn`, the transaction that records their cause, with their
/// deliveries, none to `exclude`. It takes the head lock as a group does,
/// so the log's order holds for them too.
pub(super) async fn append_own_events(
    txn: &tokio_postgres::Transaction<'_>,
    rows: Vec<crate::events::NewEvent>,
    exclude: Option<u128>,
) -> Result<(), PgError> {
    if rows.is_empty() {
        return Ok(());
    }
    let head = txn.query_one(LOCK_HEAD, &[]).await?;
    let mut next_seq: i64 = head.get(0);
    let received_at_ms = head.get::<_, i64>(2).max(head.get(1));
    let version: i64 = txn
        .query_one(
            "SELECT version FROM herald_endpoints_version WHERE id = 1",
            &[],
        )
        .await?
        .get(0);
    let mut fan_out = FanOut::default();
    fan_out.refresh(txn, version).await?;
    let mut columns = NewRows::default();
    let mut deliveries = NewDeliveries::default();
    for row in rows {
        let seq = next_seq as u64;
        next_seq += 1;
        let (record, _, _) = row.into_record(seq, received_at_ms);
        fan_out.deliveries_of(seq, &record, exclude, &mut deliveries);
        columns.seqs.push(seq as i64);
        columns.types.push(record.event_type.clone());
        columns.tenants.push(record.tenant.clone());
        columns.received.push(received_at_ms);
        columns.records.push(codec::encode(&record));
    }
    let insert = txn
        .prepare_typed(INSERT_EVENTS, &INSERT_EVENTS_TYPES)
        .await?;
    txn.execute(
        &insert,
        &[
            &columns.seqs,
            &columns.types,
            &columns.tenants,
            &columns.received,
            &columns.records,
        ],
    )
    .await?;
    deliveries.insert(txn).await?;
    txn.execute(
        "UPDATE herald_log_head SET next_seq = $1, last_received_ms = $2 WHERE id = 1",
        &[&next_seq, &received_at_ms],
    )
    .await?;
    Ok(())
}

/// Events, one array per column (seq, type, tenant, received ms, record):
/// one statement for a whole group, shared with `herald migrate`.
pub(super) const INSERT_EVENTS: &str =
    "INSERT INTO herald_events (seq, event_type, tenant, received_at_ms, record) \
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bytea[])";
pub(super) const INSERT_EVENTS_TYPES: [Type; 5] = [
    Type::INT8_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
    Type::BYTEA_ARRAY,
];

/// Idempotency keys, one array per column (tenant or '', key, seq,
/// fingerprint as the i64 of its bits).
pub(super) const INSERT_KEYS: &str =
    "INSERT INTO herald_event_keys (tenant, key, seq, fingerprint) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])";
pub(super) const INSERT_KEYS_TYPES: [Type; 4] = [
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
];

/// The committer's statements, prepared once per connection.
struct Statements {
    lock_head: Statement,
    endpoints_version: Statement,
    find_keys: Statement,
    records_at: Statement,
    insert_events: Statement,
    insert_keys: Statement,
    advance_head: Statement,
}

async fn open_session(settings: &PostgresSettings) -> Result<(Client, Statements), PgError> {
    let client = super::connect(settings).await?;
    let statements = Statements {
        lock_head: client.prepare(LOCK_HEAD).await?,
        endpoints_version: client
            .prepare("SELECT version FROM herald_endpoints_version WHERE id = 1")
            .await?,
        find_keys: client
            .prepare_typed(
                "SELECT k.tenant, k.key, k.seq, k.fingerprint FROM herald_event_keys k \
                 JOIN unnest($1::text[], $2::text[]) AS w(tenant, key) \
                 ON k.tenant = w.tenant AND k.key = w.key",
                &[Type::TEXT_ARRAY, Type::TEXT_ARRAY],
            )
            .await?,
        records_at: client
            .prepare_typed(
                "SELECT seq, record FROM herald_events WHERE seq = ANY($1)",
                &[Type::INT8_ARRAY],
            )
            .await?,
        insert_events: client
            .prepare_typed(INSERT_EVENTS, &INSERT_EVENTS_TYPES)
            .await?,
        insert_keys: client
            .prepare_typed(INSERT_KEYS, &INSERT_KEYS_TYPES)
            .await?,
        advance_head: client
            .prepare_typed(
                "UPDATE herald_log_head SET next_seq = $1, last_received_ms = $2 WHERE id = 1",
                &[Type::INT8, Type::INT8],
            )
            .await?,
    };
    Ok((client, statements))
}

/// An event's plan, and the seq it was given or names (`None` for a repeat
/// of an earlier event of its batch, answered from that one).
type PlannedEvent = (Plan, Option<u64>);

/// The rows one group adds, column by column, as `unnest` takes them.
#[derive(Default)]
struct NewRows {
    seqs: Vec<i64>,
    types: Vec<String>,
    tenants: Vec<Option<String>>,
    received: Vec<i64>,
    records: Vec<Vec<u8>>,
    key_tenants: Vec<String>,
    keys: Vec<String>,
    key_seqs: Vec<i64>,
    fingerprints: Vec<i64>,
}

/// One group's transaction. The head row is locked first and held until
/// the commit: appends from every node are serialized, which is what makes
/// positions visible in order and lets the key lookup below see every
/// committed key. The primary key of `herald_event_keys` still decides in
/// the end: a key written twice fails the transaction instead of naming
/// two events.
/// Answers each append's outcome, and whether the group created deliveries.
async fn commit_group(
    client: &mut Client,
    statements: &Statements,
    fan_out: &mut FanOut,
    group: &[&AppendBatch],
) -> Result<(Vec<AppendOutcome>, bool), PgError> {
    let txn = client.transaction().await?;
    let (want_tenants, want_keys): (Vec<&str>, Vec<&str>) =
        group.iter().flat_map(|batch| batch.keys()).unzip();
    let head = txn.query_one(&statements.lock_head, &[]);
    let found = async {
        if want_keys.is_empty() {
            Ok(Vec::new())
        } else {
            txn.query(&statements.find_keys, &[&want_tenants, &want_keys])
                .await
        }
    };
    let version = txn.query_one(&statements.endpoints_version, &[]);
    // `biased`: the head's lock must be requested first. The lookups run
    // after it on the same connection, so they see every key and endpoint
    // committed before this group's turn; merged into one statement they
    // would see a snapshot taken before the lock was granted.
    let (head, found, version) = tokio::try_join!(biased; head, found, version)?;
    // Read under the head lock, like the appends: an endpoint committed
    // before this group's events receives them.
    fan_out.refresh(&txn, version.get(0)).await?;
    let mut deliveries = NewDeliveries::default();
    let mut next_seq: i64 = head.get(0);
    let last_received_ms: i64 = head.get(1);
    let mut known: HashMap<(String, String), (u64, u64)> = found
        .iter()
        .map(|row| {
            let seq: i64 = row.get(2);
            let fingerprint: i64 = row.get(3);
            (
                (row.get::<_, String>(0), row.get::<_, String>(1)),
                (seq as u64, fingerprint as u64),
            )
        })
        .collect();

    // The database's clock, not this node's: one node's clock running
    // ahead would otherwise stamp every node's events with its time.
    let database_now_ms: i64 = head.get(2);
    let received_at_ms = database_now_ms.max(last_received_ms);
    let mut rows = NewRows::default();
    // Created in this group, by seq: a later append with the same key is
    // answered from here, not from a query that cannot see them yet.
    let mut created: HashMap<u64, EventRecord> = HashMap::new();
    let mut planned: Vec<Result<Vec<PlannedEvent>, KeyConflict>> = Vec::new();
    for batch in group {
        let plans = batch.plan(|tenant, key| {
            Ok::<_, PgError>(
                known
                    .get(&(tenant.unwrap_or("").to_owned(), key.to_owned()))
                    .copied(),
            )
        })?;
        let plans = match plans {
            Ok(plans) => plans,
            Err(conflict) => {
                planned.push(Err(conflict));
                continue;
            }
        };
        let mut with_seqs = Vec::with_capacity(plans.len());
        for (plan, event) in plans.into_iter().zip(batch.events()) {
            let seq = match plan {
                Plan::Create => {
                    let seq = next_seq as u64;
                    next_seq += 1;
                    let (record, _, fingerprint) = event.clone().into_record(seq, received_at_ms);
                    if let Some(key) = record.idempotency_key.as_deref() {
                        let tenant = record.tenant.as_deref().unwrap_or("");
                        known.insert((tenant.to_owned(), key.to_owned()), (seq, fingerprint));
                        rows.key_tenants.push(tenant.to_owned());
                        rows.keys.push(key.to_owned());
                        rows.key_seqs.push(seq as i64);
                        rows.fingerprints.push(fingerprint as i64);
                    }
                    rows.seqs.push(seq as i64);
                    rows.types.push(record.event_type.clone());
                    rows.tenants.push(record.tenant.clone());
                    rows.received.push(received_at_ms);
                    rows.records.push(codec::encode(&record));
                    fan_out.deliveries_of(seq, &record, None, &mut deliveries);
                    created.insert(seq, record);
                    Some(seq)
                }
                Plan::Stored(seq) => Some(seq),
                Plan::EarlierInBatch(_) => None,
            };
            with_seqs.push((plan, seq));
        }
        planned.push(Ok(with_seqs));
    }

    let stored_wanted: Vec<i64> = planned
        .iter()
        .flatten()
        .flatten()
        .filter_map(|(plan, seq)| match (plan, seq) {
            (Plan::Stored(_), Some(seq)) if !created.contains_key(seq) => Some(*seq as i64),
            _ => None,
        })
        .collect();
    let mut stored: HashMap<u64, EventRecord> = HashMap::new();
    if !stored_wanted.is_empty() {
        for row in txn.query(&statements.records_at, &[&stored_wanted]).await? {
            let seq: i64 = row.get(0);
            stored.insert(seq as u64, codec::decode(row.get::<_, &[u8]>(1))?);
        }
    }

    if !rows.seqs.is_empty() {
        let event_columns: [&(dyn ToSql + Sync); 5] = [
            &rows.seqs,
            &rows.types,
            &rows.tenants,
            &rows.received,
            &rows.records,
        ];
        let head_columns: [&(dyn ToSql + Sync); 2] = [&next_seq, &received_at_ms];
        let events = txn.execute(&statements.insert_events, &event_columns);
        let keys = async {
            if rows.keys.is_empty() {
                Ok(0)
            } else {
                txn.execute(
                    &statements.insert_keys,
                    &[
                        &rows.key_tenants,
                        &rows.keys,
                        &rows.key_seqs,
                        &rows.fingerprints,
                    ],
                )
                .await
            }
        };
        let head = txn.execute(&statements.advance_head, &head_columns);
        let fanned = deliveries.insert(&txn);
        let (events, keys, head, fanned) = tokio::join!(events, keys, head, fanned);
        events?;
        keys?;
        head?;
        fanned?;
    }
    txn.commit().await?;

    let mut outcomes = Vec::with_capacity(planned.len());
    for plans in planned {
        let plans = match plans {
            Ok(plans) => plans,
            Err(conflict) => {
                outcomes.push(Err(conflict));
                continue;
            }
        };
        let mut appended: Vec<Appended> = Vec::with_capacity(plans.len());
        for (plan, seq) in plans {
            let answer = match (plan, seq) {
                (Plan::Create, Some(seq)) => Appended {
                    created: true,
                    seq,
                    record: created
                        .get(&seq)
                        .cloned()
                        .ok_or_else(|| PgError::Damaged(format!("seq {seq} was not planned")))?,
                },
                (Plan::Stored(_), Some(seq)) => Appended {
                    created: false,
                    seq,
                    record: stored
                        .get(&seq)
                        .or_else(|| created.get(&seq))
                        .cloned()
                        .ok_or_else(|| {
                            PgError::Damaged(format!("idempotency key points at missing seq {seq}"))
                        })?,
                },
                (Plan::EarlierInBatch(i), _) => Appended {
                    created: false,
                    ..appended[i].clone()
                },
                (_, None) => return Err(PgError::Damaged("a planned event has no seq".into())),
            };
            appended.push(answer);
        }
        outcomes.push(Ok(appended));
    }
    Ok((outcomes, !deliveries.is_empty()))
}

/// A stuck server must not hold a group forever: past this the commit's
/// fate is unknown and the group is answered as failed.
fn group_deadline(settings: &PostgresSettings) -> Duration {
    settings.statement_timeout * 2 + settings.connect_timeout
}
