//! How much work waits in the shared queues and what the database holds:
//! what a node's `/metrics` and `/v1/admin/storage` report on PostgreSQL.

use deadpool_postgres::Pool;

use super::PgError;
use crate::store::due::{Bounded, DueSummary};

/// The pending webhook deliveries and mail messages, each counted up to
/// `cap`, with the earliest due; and the database's size in bytes.
pub async fn backlogs(pool: &Pool, cap: u64) -> Result<(DueSummary, DueSummary, u64), PgError> {
    let client = pool.get().await?;
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
    // the backlog.
    let webhooks = client
        .query_one(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM herald_deliveries WHERE status = 0 \
                     LIMIT $1::bigint + 1) pending), \
                    (SELECT min(next_attempt_ms) FROM herald_deliveries WHERE status = 0)",
            &[&cap],
        )
        .await?;
    let mail = client
        .query_one(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM herald_emails WHERE status IN (1, 2) \
                     LIMIT $1::bigint + 1) pending), \
                    (SELECT min(next_attempt_ms) FROM herald_emails WHERE status IN (1, 2))",
            &[&cap],
        )
        .await?;
    let bytes: i64 = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?
        .get(0);
    Ok((summary(webhooks), summary(mail), bytes.max(0) as u64))
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
    let bytes: i64 = txn
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?
        .get(0);
    txn.commit().await?;
    Ok((tables, bytes.max(0) as u64))
}
