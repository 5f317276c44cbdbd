//! The event catalog on PostgreSQL: changed one type at a time under the
//! version row's lock, and recompiled by every node when the version moved.

use deadpool_postgres::Pool;

use super::PgError;
use crate::store::codec;
use crate::store::records::EventTypeRecord;

#[derive(Clone)]
pub struct PgCatalog {
    pool: Pool,
}

/// What storing a type did, with the catalog's version it made.
pub enum Stored {
    Created(i64),
    Replaced(i64),
    /// The catalog holds its most types already; nothing was stored.
    Full,
}

impl PgCatalog {
    pub fn new(pool: Pool) -> PgCatalog {
        PgCatalog { pool }
    }

    /// Every type by name, with the version they are at.
    pub async fn all(&self) -> Result<(i64, Vec<(String, EventTypeRecord)>), PgError> {
        let mut client = self.pool.get().await?;
        let txn = super::snapshot(&mut client).await?;
        let version: i64 = txn
            .query_one(
                "SELECT version FROM herald_event_types_version WHERE id = 1",
                &[],
            )
            .await?
            .get(0);
        let rows = txn
            .query(
                "SELECT name, record FROM herald_event_types ORDER BY name",
                &[],
            )
            .await?;
        let mut types = Vec::with_capacity(rows.len());
        for row in rows {
            types.push((row.get(0), codec::decode(row.get::<_, &[u8]>(1))?));
        }
        txn.commit().await?;
        Ok((version, types))
    }

    pub async fn version(&self) -> Result<i64, PgError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_one(
                "SELECT version FROM herald_event_types_version WHERE id = 1",
                &[],
            )
            .await?
            .get(0))
    }

    pub async fn get(&self, name: &str) -> Result<Option<EventTypeRecord>, PgError> {
        let client = self.pool.get().await?;
        match client
            .query_opt(
                "SELECT record FROM herald_event_types WHERE name = $1",
                &[&name],
            )
            .await?
        {
            Some(row) => Ok(Some(codec::decode(row.get::<_, &[u8]>(0))?)),
            None => Ok(None),
        }
    }

    /// Stores `record` as type `name`, keeping its creation time when it
    /// replaces one, unless a new type would make more than `max_types`.
    pub async fn put(
        &self,
        name: &str,
        record: &mut EventTypeRecord,
        max_types: u64,
    ) -> Result<Stored, PgError> {
        let mut client = self.pool.get().await?;
        let txn = client.transaction().await?;
        lock_version(&txn).await?;
        let previous = txn
            .query_opt(
                "SELECT record FROM herald_event_types WHERE name = $1",
                &[&name],
            )
            .await?;
        let stored = match previous {
            Some(row) => {
                let previous: EventTypeRecord = codec::decode(row.get::<_, &[u8]>(0))?;
                record.created_at_ms = previous.created_at_ms;
                Stored::Replaced(0)
            }
            None => {
                let count: i64 = txn
                    .query_one("SELECT count(*) FROM herald_event_types", &[])
                    .await?
                    .get(0);
                if count as u64 >= max_types {
                    return Ok(Stored::Full);
                }
                Stored::Created(0)
            }
        };
        txn.execute(
            "INSERT INTO herald_event_types (name, record) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET record = $2",
            &[&name, &codec::encode(&*record)],
        )
        .await?;
        let version = bump_version(&txn).await?;
        txn.commit().await?;
        Ok(match stored {
            Stored::Created(_) => Stored::Created(version),
            Stored::Replaced(_) => Stored::Replaced(version),
            Stored::Full => Stored::Full,
        })
    }

    /// Deletes type `name`; the catalog's version it made, `None` if there
    /// was no such type.
    pub async fn remove(&self, name: &str) -> Result<Option<i64>, PgError> {
        let mut client = self.pool.get().await?;
        let txn = client.transaction().await?;
        lock_version(&txn).await?;
        let removed = txn
            .execute("DELETE FROM herald_event_types WHERE name = $1", &[&name])
            .await?
            > 0;
        let version = match removed {
            true => Some(bump_version(&txn).await?),
            false => None,
        };
        txn.commit().await?;
        Ok(version)
    }
}

async fn lock_version(txn: &tokio_postgres::Transaction<'_>) -> Result<(), PgError> {
    txn.query_one(
        "SELECT version FROM herald_event_types_version WHERE id = 1 FOR UPDATE",
        &[],
    )
    .await?;
    Ok(())
}

async fn bump_version(txn: &tokio_postgres::Transaction<'_>) -> Result<i64, PgError> {
    Ok(txn
        .query_one(
            "UPDATE herald_event_types_version SET version = version + 1 WHERE id = 1 \
             RETURNING version",
            &[],
        )
        .await?
        .get(0))
}
