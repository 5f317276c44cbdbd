//! `herald migrate`: copies a redb database's event log and webhooks
//! (endpoints, deliveries with their attempts) into PostgreSQL.
//!
//! The copy reads one snapshot of the file and writes it in chunks, each a
//! transaction of its own that also advances the log's head and the row of
//! `herald_import`: a run cut short anywhere resumes after the last chunk
//! that committed, and nothing is copied twice. Events keep their seqs, so
//! their ids and clients' cursors stay valid, and retention's gaps stay gaps.
//!
//! Endpoints and deliveries follow once the events are in, keeping their
//! ids. Unlike events they change after they were copied, so every run goes
//! over all of them again and writes only the rows that differ: a second
//! run brings settled and retried deliveries up to date, and a run cut
//! short and repeated rewrites nothing it already wrote.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::import::{as_i64, hold, Halt};
use super::log::{INSERT_EVENTS, INSERT_EVENTS_TYPES, INSERT_KEYS, INSERT_KEYS_TYPES};
use super::migrate_access::copy_access;
use super::migrate_mail::{copy_link_keys, copy_mail, MailCopied};
use super::migrate_tracking::{copy_tracking, TrackingCopied};
use super::schema::{self, PG_SCHEMA_VERSION};
use super::webhooks::{id_bytes, status_code};
use super::PgError;
use crate::config::store::PostgresSettings;
use crate::store::codec;
use crate::store::log::StoredEvent;
use crate::store::records::{DeliveryRecord, EndpointRecord, EventRecord};
use crate::store::webhooks::DeliveryFilter;
use crate::store::{OpenError, ReadTxn, Store, StoreError};

/// Events per transaction: big enough that a round trip is small beside
/// the rows, small enough that a chunk commits well within the statement
/// timeout and an interrupted run repeats little.
pub const CHUNK_EVENTS: usize = 5_000;

/// Deliveries per transaction: fewer than events, as each carries its
/// attempts with an excerpt of every answer.
pub const CHUNK_DELIVERIES: usize = 2_000;

/// Endpoints per transaction; most installs have all of theirs in one.
pub const CHUNK_ENDPOINTS: usize = 1_000;

/// A chunk inserts thousands of rows in one statement.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "{}: no such file; --from names the herald.redb of a stopped daemon, \
         or a copy made with `herald backup --out FILE`",
        .0.display()
    )]
    NoSource(PathBuf),
    #[error(
        "{}: a running herald has the file open; stop it first, or migrate a copy \
         it makes with `herald backup --out FILE` while it runs, then stop it and \
         migrate the live file again for the events written since",
        .0.display()
    )]
    Locked(PathBuf),
    #[error(transparent)]
    Open(OpenError),
    #[error("{}: {source}", .path.display())]
    Read { path: PathBuf, source: StoreError },
    #[error("{database}: {source}")]
    Postgres { database: String, source: PgError },
    #[error("{database}: refused, nothing copied: {reason}")]
    Refused { database: String, reason: String },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// What a run did.
#[derive(Debug)]
pub struct Summary {
    pub database: String,
    pub events: u64,
    pub keys: u64,
    /// The last seq the database holds from the file, 0 if none.
    pub through_seq: u64,
    /// Endpoints and deliveries this run inserted or changed.
    pub endpoints: u64,
    pub deliveries: u64,
    /// How many of each the file holds.
    pub file_endpoints: u64,
    pub file_deliveries: u64,
    /// Endpoints the database holds that the file does not (deleted there
    /// since an earlier run): left as they are.
    pub endpoints_left: u64,
    pub mail: MailCopied,
    pub tracking: TrackingCopied,
    /// Stored API keys and event types new or changed.
    pub access_rows: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "copied {} events and {} idempotency keys into {}, through seq {}; \
             {} endpoints and {} deliveries new or changed (the file holds {} and {})",
            self.events,
            self.keys,
            self.database,
            self.through_seq,
            self.endpoints,
            self.deliveries,
            self.file_endpoints,
            self.file_deliveries,
        )?;
        let mail = &self.mail;
        write!(
            f,
            "; {} emails, {} suppression entries and {} ESP feedback events new or changed \
             (the file holds {} and {}), {} other mail rows",
            mail.emails,
            mail.suppressions,
            mail.feedback,
            mail.file_emails,
            mail.file_suppressions,
            mail.other_rows,
        )?;
        let tracking = &self.tracking;
        write!(
            f,
            "; {} tracked calls and {} profiles indexed anew or changed (the file holds {} and \
             {}), {} other tracking rows; {} API keys and event types new or changed",
            tracking.calls,
            tracking.profiles,
            tracking.file_calls,
            tracking.file_profiles,
            tracking.other_rows,
            self.access_rows,
        )?;
        if self.endpoints_left > 0 {
            write!(
                f,
                "; {} endpoints the file no longer holds were left in the database",
                self.endpoints_left
            )?;
        }
        write!(f, "; in {:.1} s", self.elapsed.as_secs_f64())
    }
}

/// The file being copied, as the import row records it.
struct Source {
    path: String,
    /// The oldest event's seq and id: a backup and the live file it was
    /// taken from share them, another install's file does not.
    first: Option<(u64, u128)>,
    last_seq: u64,
}

/// Copies everything the redb file at `from` holds into the database of
/// `settings`, printing each chunk's progress on stderr.
pub fn run(from: &Path, settings: &PostgresSettings) -> Result<Summary, MigrateError> {
    let started = Instant::now();
    // Opening creates a missing file: a typo must not look like an empty log.
    if !from.exists() {
        return Err(MigrateError::NoSource(from.to_owned()));
    }
    let path = std::fs::canonicalize(from).unwrap_or_else(|_| from.to_owned());
    let store = Store::open(&path).map_err(|e| match e {
        OpenError::Database {
            source: StoreError::Redb(redb::Error::DatabaseAlreadyOpen),
            ..
        } => MigrateError::Locked(path.clone()),
        other => MigrateError::Open(other),
    })?;
    let read_failed = |source| MigrateError::Read {
        path: path.clone(),
        source,
    };
    // One snapshot for the whole copy: every chunk reads the same moment.
    let snapshot = store.read().map_err(read_failed)?;
    let source = Source {
        path: path.display().to_string(),
        first: snapshot
            .first_event()
            .map_err(read_failed)?
            .map(|(seq, record)| (seq, record.id)),
        last_seq: snapshot.last_event_seq().map_err(read_failed)?.unwrap_or(0),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MigrateError::Runtime)?;
    let mut summary = runtime.block_on(copy(&snapshot, &source, settings, &path))?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Where the database stands towards this file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Its log is empty and no import began.
    Fresh,
    /// An import of this file reached `through`, and nothing else was
    /// appended since.
    Resume { through: u64 },
}

async fn copy(
    snapshot: &ReadTxn,
    source: &Source,
    settings: &PostgresSettings,
    path: &Path,
) -> Result<Summary, MigrateError> {
    let database = settings.describe();
    let pg = |source: PgError| MigrateError::Postgres {
        database: database.clone(),
        source,
    };
    let mut client = super::connect(settings).await.map_err(&pg)?;
    // Decided before the schema is touched, so a refusal writes nothing.
    let start = match where_it_stands(&client, source).await.map_err(&pg)? {
        Ok(start) => start,
        Err(reason) => {
            return Err(MigrateError::Refused {
                database: database.clone(),
                reason,
            })
        }
    };
    let mut summary = Summary {
        database: database.clone(),
        events: 0,
        keys: 0,
        through_seq: match start {
            Start::Fresh => 0,
            Start::Resume { through } => through,
        },
        endpoints: 0,
        deliveries: 0,
        file_endpoints: 0,
        file_deliveries: 0,
        endpoints_left: 0,
        mail: MailCopied::default(),
        tracking: TrackingCopied::default(),
        access_rows: 0,
        elapsed: Duration::ZERO,
    };
    let read_failed = |source: StoreError| MigrateError::Read {
        path: path.to_owned(),
        source,
    };
    let endpoints = snapshot.endpoints().map_err(read_failed)?;
    if source.first.is_none() {
        eprintln!("herald migrate: the file holds no events");
        // Retention may have emptied the log of an install whose endpoints
        // and pending deliveries still matter.
        let no_deliveries = snapshot
            .scan_deliveries(&DeliveryFilter::default(), 0, 1)
            .map_err(read_failed)?
            .deliveries
            .is_empty();
        if endpoints.is_empty() && no_deliveries {
            return Ok(summary);
        }
    }
    schema::migrate(&mut client).await.map_err(&pg)?;

    let mut expected = match start {
        Start::Fresh => None,
        Start::Resume { through } => Some(through),
    };
    let mut after = expected.unwrap_or(0);
    loop {
        let chunk = snapshot
            .stored_events(after, CHUNK_EVENTS)
            .map_err(read_failed)?;
        let Some(last) = chunk.last().map(|e| e.seq) else {
            break;
        };
        let copied = match copy_chunk(&mut client, source, expected, chunk)
            .await
            .map_err(&pg)?
        {
            Ok(copied) => copied,
            Err(reason) => {
                return Err(MigrateError::Refused {
                    database: database.clone(),
                    reason,
                })
            }
        };
        summary.events += copied.events;
        summary.keys += copied.keys;
        if copied.keys_missing > 0 {
            eprintln!(
                "herald migrate: warning: {} keyed events up to seq {last} have no key row \
                 in the file; they were copied without their key",
                copied.keys_missing
            );
        }
        summary.through_seq = last;
        expected = Some(last);
        after = last;
        eprintln!(
            "herald migrate: through seq {last} of {}: {} events, {} keys copied",
            source.last_seq, summary.events, summary.keys
        );
    }
    // After the events: a delivery names its event, and the database's
    // deliveries should not get ahead of its log.
    let halted = |e: Halt| match e {
        Halt::Pg(source) => pg(source),
        Halt::Read(source) => read_failed(source),
        Halt::Refused(reason) => MigrateError::Refused {
            database: database.clone(),
            reason,
        },
    };
    copy_webhooks(
        &mut client,
        snapshot,
        &endpoints,
        expected,
        &database,
        &mut summary,
    )
    .await
    .map_err(halted)?;
    summary.mail = copy_mail(&mut client, snapshot, expected)
        .await
        .map_err(halted)?;
    summary.tracking = copy_tracking(&mut client, snapshot, expected)
        .await
        .map_err(halted)?;
    summary.access_rows = copy_access(&mut client, snapshot, expected)
        .await
        .map_err(halted)?;
    copy_link_keys(&client, snapshot).await.map_err(halted)?;
    if let Some(through) = expected {
        let through = as_i64(through).map_err(&pg)?;
        client
            .execute(
                "UPDATE herald_import SET finished_at = now() \
                 WHERE id = 1 AND copied_through_seq = $1",
                &[&through],
            )
            .await
            .map_err(|e| pg(e.into()))?;
    }
    Ok(summary)
}

/// Copies every endpoint, then every delivery, of the snapshot: a chunk at
/// a time, each in a transaction that first checks the import still stands
/// at `expected`.
async fn copy_webhooks(
    client: &mut Client,
    snapshot: &ReadTxn,
    endpoints: &[EndpointRecord],
    expected: Option<u64>,
    database: &str,
    summary: &mut Summary,
) -> Result<(), Halt> {
    summary.file_endpoints = endpoints.len() as u64;
    for chunk in endpoints.chunks(CHUNK_ENDPOINTS) {
        summary.endpoints += copy_endpoints(client, expected, chunk)
            .await?
            .map_err(Halt::Refused)?;
    }
    if !endpoints.is_empty() {
        eprintln!(
            "herald migrate: {} endpoints: {} new or changed",
            endpoints.len(),
            summary.endpoints
        );
    }
    let kept: std::collections::HashSet<Vec<u8>> =
        endpoints.iter().map(|e| id_bytes(e.id)).collect();
    let left: Vec<String> = client
        .query("SELECT id FROM herald_endpoints ORDER BY id", &[])
        .await
        .map_err(PgError::from)?
        .iter()
        .map(|row| row.get::<_, Vec<u8>>(0))
        .filter(|id| !kept.contains(id))
        .map(|id| {
            let id = <[u8; 16]>::try_from(id.as_slice()).map_or(0, u128::from_be_bytes);
            crate::ids::format(crate::webhooks::endpoint::ID_PREFIX, id)
        })
        .collect();
    summary.endpoints_left = left.len() as u64;
    if !left.is_empty() {
        // Deleting them here could delete one a node made: the operator
        // decides, through the API.
        eprintln!(
            "herald migrate: warning: {database} holds {} endpoints the file does not \
             (deleted since an earlier run?); they were left, delete them through the \
             API if they should go: {}",
            left.len(),
            left.join(", ")
        );
    }

    let mut after = 0;
    loop {
        let page = snapshot.scan_deliveries(&DeliveryFilter::default(), after, CHUNK_DELIVERIES)?;
        let Some(&(last, _)) = page.deliveries.last() else {
            break;
        };
        summary.file_deliveries += page.deliveries.len() as u64;
        summary.deliveries += copy_deliveries(client, expected, &page.deliveries)
            .await?
            .map_err(Halt::Refused)?;
        after = last;
        eprintln!(
            "herald migrate: deliveries through id {last}: {} read, {} new or changed",
            summary.file_deliveries, summary.deliveries
        );
    }
    Ok(())
}

/// Inserts endpoints, or replaces those whose record differs; an
/// endpoint's failing streak, breaker state and the day its owner was last
/// alerted start afresh (an owner may hear twice on the day of the move).
const UPSERT_ENDPOINTS: &str = "INSERT INTO herald_endpoints (id, tenant, enabled, record) \
     SELECT i, t, e, r FROM unnest($1::bytea[], $2::text[], $3::boolean[], $4::bytea[]) \
       AS u(i, t, e, r) \
     ON CONFLICT (id) DO UPDATE SET tenant = EXCLUDED.tenant, enabled = EXCLUDED.enabled, \
       record = EXCLUDED.record \
     WHERE herald_endpoints.record IS DISTINCT FROM EXCLUDED.record";

/// Inserts deliveries under their ids from the file (API ids and cursors
/// name them), or replaces those whose record differs.
const UPSERT_DELIVERIES: &str = "INSERT INTO herald_deliveries \
       (id, endpoint_id, event_seq, status, next_attempt_ms, record) OVERRIDING SYSTEM VALUE \
     SELECT i, e, s, st, n, r FROM unnest($1::bigint[], $2::bytea[], $3::bigint[], \
       $4::smallint[], $5::bigint[], $6::bytea[]) AS u(i, e, s, st, n, r) \
     ON CONFLICT (id) DO UPDATE SET endpoint_id = EXCLUDED.endpoint_id, \
       event_seq = EXCLUDED.event_seq, status = EXCLUDED.status, \
       next_attempt_ms = EXCLUDED.next_attempt_ms, lease_token = NULL, lease_until_ms = 0, \
       record = EXCLUDED.record \
     WHERE herald_deliveries.record IS DISTINCT FROM EXCLUDED.record";

/// One chunk of endpoints in one transaction; how many rows it wrote, or
/// `Err(reason)` with nothing written.
async fn copy_endpoints(
    client: &mut Client,
    expected: Option<u64>,
    chunk: &[EndpointRecord],
) -> Result<Result<u64, String>, PgError> {
    let txn = client.transaction().await?;
    let held = match hold(&txn, expected).await? {
        Ok(held) => held,
        Err(reason) => return Ok(Err(reason)),
    };
    let ids: Vec<Vec<u8>> = chunk.iter().map(|e| id_bytes(e.id)).collect();
    let tenants: Vec<Option<&str>> = chunk.iter().map(|e| e.tenant.as_deref()).collect();
    let enabled: Vec<bool> = chunk.iter().map(|e| e.enabled).collect();
    let records: Vec<Vec<u8>> = chunk.iter().map(codec::encode).collect();
    let upsert = txn
        .prepare_typed(
            UPSERT_ENDPOINTS,
            &[
                Type::BYTEA_ARRAY,
                Type::TEXT_ARRAY,
                Type::BOOL_ARRAY,
                Type::BYTEA_ARRAY,
            ],
        )
        .await?;
    let written = txn
        .execute(&upsert, &[&ids, &tenants, &enabled, &records])
        .await?;
    if written > 0 {
        // Every node's fan-out reloads its endpoints at its next group.
        txn.execute(
            "UPDATE herald_endpoints_version SET version = version + 1 WHERE id = 1",
            &[],
        )
        .await?;
        if held.imported {
            txn.execute(
                "UPDATE herald_import SET endpoints_copied = endpoints_copied + $1, \
                 finished_at = NULL WHERE id = 1",
                &[&(written as i64)],
            )
            .await?;
        }
    }
    txn.commit().await?;
    Ok(Ok(written))
}

/// One chunk of deliveries (in id order) in one transaction; how many rows
/// it wrote, or `Err(reason)` with nothing written.
async fn copy_deliveries(
    client: &mut Client,
    expected: Option<u64>,
    chunk: &[(u64, DeliveryRecord)],
) -> Result<Result<u64, String>, PgError> {
    let txn = client.transaction().await?;
    let held = match hold(&txn, expected).await? {
        Ok(held) => held,
        Err(reason) => return Ok(Err(reason)),
    };
    let mut ids = Vec::with_capacity(chunk.len());
    let mut endpoints = Vec::with_capacity(chunk.len());
    let mut seqs = Vec::with_capacity(chunk.len());
    let mut statuses = Vec::with_capacity(chunk.len());
    let mut due = Vec::with_capacity(chunk.len());
    let mut records = Vec::with_capacity(chunk.len());
    for (id, delivery) in chunk {
        ids.push(as_i64(*id)?);
        endpoints.push(id_bytes(delivery.endpoint_id));
        seqs.push(as_i64(delivery.event_seq)?);
        statuses.push(status_code(delivery.status));
        due.push(delivery.next_attempt_ms);
        records.push(codec::encode(delivery));
    }
    let last = *ids.last().unwrap_or(&0);
    let upsert = txn
        .prepare_typed(
            UPSERT_DELIVERIES,
            &[
                Type::INT8_ARRAY,
                Type::BYTEA_ARRAY,
                Type::INT8_ARRAY,
                Type::INT2_ARRAY,
                Type::INT8_ARRAY,
                Type::BYTEA_ARRAY,
            ],
        )
        .await?;
    let written = txn
        .execute(
            &upsert,
            &[&ids, &endpoints, &seqs, &statuses, &due, &records],
        )
        .await?;
    // The ids were given, not drawn: deliveries the nodes create must
    // continue after them.
    txn.execute(
        "SELECT setval(pg_get_serial_sequence('herald_deliveries', 'id'), max(id)) \
         FROM herald_deliveries",
        &[],
    )
    .await?;
    if held.imported {
        txn.execute(
            "UPDATE herald_import SET deliveries_copied = deliveries_copied + $1, \
             deliveries_through = $2, finished_at = NULL WHERE id = 1",
            &[&(written as i64), &last],
        )
        .await?;
    }
    txn.commit().await?;
    Ok(Ok(written))
}

/// Whether this file may be copied into the database, and from where:
/// `Err(reason)` when not. Reads only.
async fn where_it_stands(
    client: &Client,
    source: &Source,
) -> Result<Result<Start, String>, PgError> {
    let version = schema::version(client).await?;
    if version > PG_SCHEMA_VERSION {
        return Err(PgError::NewerSchema {
            found: version,
            supported: PG_SCHEMA_VERSION,
        });
    }
    if version == 0 {
        return Ok(Ok(Start::Fresh));
    }
    let next_seq: i64 = client
        .query_one("SELECT next_seq FROM herald_log_head WHERE id = 1", &[])
        .await?
        .get(0);
    // A schema before version 3 has no import table to ask.
    let import = if version >= 3 {
        client
            .query_opt(
                "SELECT first_seq, first_event_id, copied_through_seq FROM herald_import \
                 WHERE id = 1",
                &[],
            )
            .await?
    } else {
        None
    };
    let Some(import) = import else {
        if next_seq > 1 {
            return Ok(Err(format!(
                "its event log already holds events (seqs below {next_seq}) that no \
                 `herald migrate` wrote; migrate into an empty database"
            )));
        }
        return Ok(Ok(Start::Fresh));
    };
    let imported_first = (import.get::<_, i64>(0) as u64, import.get::<_, String>(1));
    let through = import.get::<_, i64>(2) as u64;
    let Some((first_seq, first_id)) = source.first else {
        return Ok(Err(format!(
            "it holds an import of another file (first event seq {}, {}), and this file \
             holds no events",
            imported_first.0, imported_first.1
        )));
    };
    let same_first = imported_first == (first_seq, event_id(first_id));
    // Retention may have deleted the first events from the file since the
    // last run: then its oldest event must be one the import copied.
    let copied_since = !same_first
        && first_seq <= through
        && copied_id(client, first_seq).await? == Some(first_id);
    if !same_first && !copied_since {
        return Ok(Err(format!(
            "it holds an import of another file (first event seq {}, {}; this file's is \
             seq {first_seq}, {})",
            imported_first.0,
            imported_first.1,
            event_id(first_id)
        )));
    }
    if next_seq as u64 != through + 1 {
        return Ok(Err(format!(
            "nodes on PostgreSQL have appended to the log since the import (it continues \
             at seq {next_seq}, the import reached seq {through}); the file's newer events \
             would take seqs the log has given out"
        )));
    }
    Ok(Ok(Start::Resume { through }))
}

/// The id of the event the database holds at `seq`, if any.
async fn copied_id(client: &Client, seq: u64) -> Result<Option<u128>, PgError> {
    let row = client
        .query_opt(
            "SELECT record FROM herald_events WHERE seq = $1",
            &[&as_i64(seq)?],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let record: EventRecord = codec::decode(row.get::<_, &[u8]>(0))?;
    Ok(Some(record.id))
}

fn event_id(id: u128) -> String {
    crate::ids::format(crate::events::ID_PREFIX, id)
}

struct Copied {
    events: u64,
    keys: u64,
    keys_missing: u64,
}

/// One chunk in one transaction: its events and keys, the log's head and
/// the import's row. `expected` is where the import stood after the
/// previous chunk (`None`: no import began); `Err(reason)` if another run
/// or a node changed the database since, with nothing of the chunk written.
async fn copy_chunk(
    client: &mut Client,
    source: &Source,
    expected: Option<u64>,
    chunk: Vec<StoredEvent>,
) -> Result<Result<Copied, String>, PgError> {
    let txn = client.transaction().await?;
    let held = match hold(&txn, expected).await? {
        Ok(held) => held,
        Err(reason) => return Ok(Err(reason)),
    };
    let expected_next = as_i64(expected.unwrap_or(0))? + 1;

    let mut copied = Copied {
        events: chunk.len() as u64,
        keys: 0,
        keys_missing: 0,
    };
    let mut seqs = Vec::with_capacity(chunk.len());
    let mut types = Vec::with_capacity(chunk.len());
    let mut tenants = Vec::with_capacity(chunk.len());
    let mut received = Vec::with_capacity(chunk.len());
    let mut records = Vec::with_capacity(chunk.len());
    let (mut key_tenants, mut keys, mut key_seqs, mut fingerprints) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut newest_received = held.last_received_ms;
    for event in chunk {
        let seq = as_i64(event.seq)?;
        let record = event.record;
        if let Some(key) = record.idempotency_key {
            match event.key_fingerprint {
                Some(fingerprint) => {
                    key_tenants.push(record.tenant.clone().unwrap_or_default());
                    keys.push(key);
                    key_seqs.push(seq);
                    // The column holds the u64's bits, as the nodes write it.
                    fingerprints.push(fingerprint as i64);
                }
                None => copied.keys_missing += 1,
            }
        }
        newest_received = newest_received.max(record.received_at_ms);
        seqs.push(seq);
        types.push(record.event_type);
        tenants.push(record.tenant);
        received.push(record.received_at_ms);
        records.push(event.encoded);
    }
    copied.keys = keys.len() as u64;
    let last_seq = *seqs.last().unwrap_or(&(expected_next - 1));

    let insert_events = txn
        .prepare_typed(INSERT_EVENTS, &INSERT_EVENTS_TYPES)
        .await?;
    txn.execute(
        &insert_events,
        &[&seqs, &types, &tenants, &received, &records],
    )
    .await?;
    if !keys.is_empty() {
        let insert_keys = txn.prepare_typed(INSERT_KEYS, &INSERT_KEYS_TYPES).await?;
        txn.execute(
            &insert_keys,
            &[&key_tenants, &keys, &key_seqs, &fingerprints],
        )
        .await?;
    }
    txn.execute(
        "UPDATE herald_log_head SET next_seq = $1, last_received_ms = $2 WHERE id = 1",
        &[&(last_seq + 1), &newest_received],
    )
    .await?;
    let (events, key_count) = (copied.events as i64, copied.keys as i64);
    if held.imported {
        txn.execute(
            "UPDATE herald_import SET copied_through_seq = $1, \
             events_copied = events_copied + $2, keys_copied = keys_copied + $3, \
             source_path = $4, finished_at = NULL WHERE id = 1",
            &[&last_seq, &events, &key_count, &source.path],
        )
        .await?;
    } else {
        let (first_seq, first_id) = source
            .first
            .ok_or_else(|| PgError::Damaged("a chunk from a file without events".into()))?;
        txn.execute(
            "INSERT INTO herald_import (id, source_path, first_seq, first_event_id, \
             copied_through_seq, events_copied, keys_copied) \
             VALUES (1, $1, $2, $3, $4, $5, $6)",
            &[
                &source.path,
                &as_i64(first_seq)?,
                &event_id(first_id),
                &last_seq,
                &events,
                &key_count,
            ],
        )
        .await?;
    }
    txn.commit().await?;
    Ok(Ok(copied))
}
