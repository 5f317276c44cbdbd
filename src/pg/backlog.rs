//! How much work waits in the shared queues and what the database holds:
//! what a node's `/metrics` and `/v1/admin/storage` report on PostgreSQL.

use deadpool_postgres::Pool;
use tokio_postgres::GenericClient;

use super::PgError;
use crate::store::due::{Bounded, DueSummary};

/// The pending webhook deliveries and mail messages, each counted up to
/// `cap`, with the earliest due; and the database's size in bytes.
pub async fn backlogs(pool: &Pool, cap: u64) -> Result<(DueSummary, DueSummary, u64), PgError> {
    let client = pool.get().await?;
    let (webhooks, mail) = queues(&**client, cap).await?;
    Ok((webhooks, mail, database_bytes(&**client).await?))
}

/// The pending webhook deliveries and mail messages, each counted up to
/// `cap`, with the earliest due.
pub async fn queues(
    client: &impl GenericClient,
    cap: u64,
) -> Result<(DueSummary, DueSummary), PgError> {
    let cap = cap as i64;
    let summary = |row: tokio_postgres::Row| {
        let count: i64 = row.get(0);
        DueSummary {
            jobs: Bounded {
                count: count.min(cap) as u64,
                capped: count > cap,
            },
            earliest_due_ms: row.get(1),
        }
    };
    // Counted through a limit: a backlog of millions costs the cap, not
    // the backlog. The earliest due is one seek per endpoint (deleting an
    // endpoint fails its pending deliveries, so every pending one has
    // its endpoint) and one per stream with mail waiting (the streams
    // found by skipping from one to the next in the due index), instead
    // of a walk over every pending row.
    let webhooks = client
        .query_one(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM herald_deliveries WHERE status = 0 \
                     LIMIT $1::bigint + 1) pending), \
                    (SELECT min(due.next_attempt_ms) FROM herald_endpoints e \
                     CROSS JOIN LATERAL (SELECT d.next_attempt_ms FROM herald_deliveries d \
                         WHERE d.endpoint_id = e.id AND d.status = 0 \
                           AND d.next_attempt_ms IS NOT NULL \
                         ORDER BY d.next_attempt_ms LIMIT 1) due)",
            &[&cap],
        )
        .await?;
    let mail = client
        .query_one(
            "WITH RECURSIVE waiting (stream) AS ( \
                 (SELECT stream FROM herald_emails WHERE status IN (1, 2) \
                  ORDER BY stream LIMIT 1) \
                 UNION ALL \
                 SELECT (SELECT e.stream FROM herald_emails e \
                         WHERE e.status IN (1, 2) AND e.stream > w.stream \
                         ORDER BY e.stream LIMIT 1) \
                 FROM waiting w WHERE w.stream IS NOT NULL) \
             SELECT (SELECT count(*) FROM (SELECT 1 FROM herald_emails WHERE status IN (1, 2) \
                     LIMIT $1::bigint + 1) pending), \
                    (SELECT min((SELECT e.next_attempt_ms FROM herald_emails e \
                                 WHERE e.status IN (1, 2) AND e.stream = w.stream \
                                   AND e.next_attempt_ms IS NOT NULL \
                                 ORDER BY e.next_attempt_ms LIMIT 1)) \
                     FROM waiting w WHERE w.stream IS NOT NULL)",
            &[&cap],
        )
        .await?;
    Ok((summary(webhooks), summary(mail)))
}

/// The database's size in bytes: what `/v1/admin/storage`, the overview
/// and `/metrics` report as the file's on PostgreSQL.
pub async fn database_bytes(client: &impl GenericClient) -> Result<u64, PgError> {
    let bytes: i64 = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?
        .get(0);
    Ok(bytes.max(0) as u64)
}

/// One of Herald's tables: its name without the `herald_` prefix, its rows
/// (counted exactly, so bounded by the statement timeout), and its bytes on
/// disk with indexes.
pub struct TableUsage {
    pub name: String,
    pub rows: u64,
    pub bytes: u64,
}

/// Every Herald table, by name, and the database's size in bytes.
pub async fn table_usage(pool: &Pool) -> Result<(Vec<TableUsage>, u64), PgError> {
    let mut client = pool.get().await?;
    let txn = super::snapshot(&mut client).await?;
    let names: Vec<String> = txn
        .query(
            "SELECT tablename FROM pg_tables \
             WHERE schemaname = current_schema() AND tablename LIKE 'herald\\_%' \
             ORDER BY tablename",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        // The name comes from the catalog, quoted as an identifier.
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let row = txn
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {quoted}), \
                            pg_total_relation_size($1::text::regclass)"
                ),
                &[&quoted],
            )
            .await?;
        tables.push(TableUsage {
            name: name.trim_start_matches("herald_").to_owned(),
            rows: row.get::<_, i64>(0).max(0) as u64,
            bytes: row.get::<_, i64>(1).max(0) as u64,
        });
    }
    let bytes = database_bytes(&*txn).await?;
    txn.commit().await?;
    Ok((tables, bytes))
}
