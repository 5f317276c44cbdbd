//! API keys created through the API, on PostgreSQL: changed one at a time
//! under the version row's lock, and reloaded by every node when the
//! version moved, so a key revoked on one node stops working on all.

use deadpool_postgres::Pool;

use super::webhooks::id_bytes;
use super::PgError;
use crate::store::codec;
use crate::store::keys::KeyChange;
use crate::store::records::ApiKeyRecord;

async fn stored_keys(
    txn: &tokio_postgres::Transaction<'_>,
) -> Result<Vec<(u128, ApiKeyRecord)>, PgError> {
    let rows = txn
        .query("SELECT id, record FROM herald_api_keys ORDER BY id", &[])
        .await?;
    let mut keys = Vec::with_capacity(rows.len());
    for row in rows {
        let id = <[u8; 16]>::try_from(row.get::<_, &[u8]>(0))
            .map_err(|_| PgError::Damaged("an API key id is not 16 bytes".into()))?;
        keys.push((
            u128::from_be_bytes(id),
            codec::decode(row.get::<_, &[u8]>(1))?,
        ));
    }
    Ok(keys)
}

#[derive(Clone)]
pub struct PgKeys {
    pool: Pool,
}

impl PgKeys {
    pub fn new(pool: Pool) -> PgKeys {
        PgKeys { pool }
    }

    /// Every stored key, oldest id first, with the version they are at.
    pub async fn all(&self) -> Result<(i64, Vec<(u128, ApiKeyRecord)>), PgError> {
        let mut client = self.pool.get().await?;
        let txn = super::snapshot(&mut client).await?;
        let version: i64 = txn
            .query_one(
                "SELECT version FROM herald_api_keys_version WHERE id = 1",
                &[],
            )
            .await?
            .get(0);
        let keys = stored_keys(&txn).await?;
        txn.commit().await?;
        Ok((version, keys))
    }

    pub async fn version(&self) -> Result<i64, PgError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_one(
                "SELECT version FROM herald_api_keys_version WHERE id = 1",
                &[],
            )
            .await?
            .get(0))
    }

    /// Runs `decide` over every stored key, under the version row's lock,
    /// and applies the change it returns, with the version it made; a
    /// refusal changes nothing.
    pub async fn change<E>(
        &self,
        decide: impl FnOnce(&[(u128, ApiKeyRecord)]) -> Result<KeyChange, E>,
    ) -> Result<Result<(KeyChange, i64), E>, PgError> {
        let mut client = self.pool.get().await?;
        let txn = client.transaction().await?;
        txn.query_one(
            "SELECT version FROM herald_api_keys_version WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await?;
        let keys = stored_keys(&txn).await?;
        let change = match decide(&keys) {
            Ok(change) => change,
            Err(refusal) => return Ok(Err(refusal)),
        };
        match &change {
            KeyChange::Put(id, record) => {
                txn.execute(
                    "INSERT INTO herald_api_keys (id, record) VALUES ($1, $2)",
                    &[&id_bytes(*id), &codec::encode(record)],
                )
                .await?;
            }
            KeyChange::Remove(id, _) => {
                txn.execute(
                    "DELETE FROM herald_api_keys WHERE id = $1",
                    &[&id_bytes(*id)],
                )
                .await?;
            }
        }
        let version: i64 = txn
            .query_one(
                "UPDATE herald_api_keys_version SET version = version + 1 WHERE id = 1 \
                 RETURNING version",
                &[],
            )
            .await?
            .get(0);
        txn.commit().await?;
        Ok(Ok((change, version)))
    }
}
