//! Versioned schema migrations: each version's SQL runs once, in order, in
//! one transaction under an advisory lock, so nodes starting together
//! neither race nor see half a schema.

use tokio_postgres::Client;

use super::PgError;

/// Each version and the SQL that brings the schema to it from the one before.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_event_log.sql")),
    (2, include_str!("migrations/0002_webhooks.sql")),
    (3, include_str!("migrations/0003_import.sql")),
    (4, include_str!("migrations/0004_import_webhooks.sql")),
    (5, include_str!("migrations/0005_mail.sql")),
    (6, include_str!("migrations/0006_tracking.sql")),
    (7, include_str!("migrations/0007_keys_and_catalog.sql")),
    (8, include_str!("migrations/0008_webhook_history.sql")),
    (9, include_str!("migrations/0009_sessions.sql")),
    (10, include_str!("migrations/0010_retention.sql")),
    (11, include_str!("migrations/0011_owner_alerts.sql")),
];

/// The newest schema this binary understands.
pub const PG_SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Any constant no other tool on the database is likely to use.
const MIGRATION_LOCK: i64 = 0x6865_7261_6c64_0001;

/// Brings the schema to `PG_SCHEMA_VERSION`; returns the version found
/// before. A schema newer than this binary is refused untouched.
pub async fn migrate(client: &mut Client) -> Result<i32, PgError> {
    let encoding: String = client
        .query_one("SELECT current_setting('server_encoding')", &[])
        .await?
        .get(0);
    if encoding != "UTF8" {
        // Keys and names are any Unicode: one outside the database's
        // encoding would fail a whole group commit.
        return Err(PgError::Damaged(format!(
            "the database's encoding is {encoding}; Herald needs a UTF8 database \
             (CREATE DATABASE … ENCODING 'UTF8')"
        )));
    }
    let txn = client.transaction().await?;
    // A migration may build an index over a big table: the session's
    // statement timeout is for requests, not for this.
    txn.batch_execute("SET LOCAL statement_timeout = 0").await?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS herald_schema (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: i32 = txn
        .query_one("SELECT coalesce(max(version), 0) FROM herald_schema", &[])
        .await?
        .get(0);
    if found > PG_SCHEMA_VERSION {
        return Err(PgError::NewerSchema {
            found,
            supported: PG_SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        txn.batch_execute(sql).await?;
        txn.execute(
            "INSERT INTO herald_schema (version) VALUES ($1)",
            &[version],
        )
        .await?;
        tracing::info!(version, "postgres schema migrated");
    }
    txn.commit().await?;
    Ok(found)
}

/// The schema version a database holds (0 for one Herald never touched),
/// without changing anything.
pub async fn version(client: &Client) -> Result<i32, PgError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('herald_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one("SELECT coalesce(max(version), 0) FROM herald_schema", &[])
        .await?
        .get(0))
}
