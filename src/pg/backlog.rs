//! How much work waits in the shared queues, and how big the database is:
//! what a node's `/metrics` reports on PostgreSQL.

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
