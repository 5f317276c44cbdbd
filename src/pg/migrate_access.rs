//! `herald migrate`'s access part: the API keys created through the API
//! and the event catalog, so the keys that opened the file's install open
//! the cluster and its events are checked against the same types. Both
//! are small; a row is written where it differs, and the version every
//! node follows moves when anything was, so running nodes reload.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};

use super::import::{hold, Halt};
use super::webhooks::id_bytes;
use super::PgError;
use crate::store::codec;
use crate::store::ReadTxn;

const UPSERT_KEYS: &str = "INSERT INTO herald_api_keys (id, record) \
     SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
     ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record \
     WHERE herald_api_keys.record IS DISTINCT FROM EXCLUDED.record";

const UPSERT_TYPES: &str = "INSERT INTO herald_event_types (name, record) \
     SELECT * FROM unnest($1::text[], $2::bytea[]) \
     ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record \
     WHERE herald_event_types.record IS DISTINCT FROM EXCLUDED.record";

/// Copies the stored keys and the catalog of `snapshot`; the rows written.
pub(super) async fn copy_access(
    client: &mut Client,
    snapshot: &ReadTxn,
    expected: Option<u64>,
) -> Result<u64, Halt> {
    let keys = snapshot.api_keys()?;
    let types = snapshot.event_types()?;
    let key_ids: Vec<Vec<u8>> = keys.iter().map(|(id, _)| id_bytes(*id)).collect();
    let key_records: Vec<Vec<u8>> = keys.iter().map(|(_, r)| codec::encode(r)).collect();
    let type_names: Vec<&str> = types.iter().map(|(name, _)| name.as_str()).collect();
    let type_records: Vec<Vec<u8>> = types.iter().map(|(_, r)| codec::encode(r)).collect();

    let txn = client.transaction().await.map_err(PgError::from)?;
    hold(&txn, expected).await?.map_err(Halt::Refused)?;
    let keys_written = upsert_versioned(
        &txn,
        UPSERT_KEYS,
        (Type::BYTEA_ARRAY, &key_ids),
        &key_records,
        "herald_api_keys_version",
    )
    .await?;
    let types_written = upsert_versioned(
        &txn,
        UPSERT_TYPES,
        (Type::TEXT_ARRAY, &type_names),
        &type_records,
        "herald_event_types_version",
    )
    .await?;
    txn.commit().await.map_err(PgError::from)?;
    Ok(keys_written + types_written)
}

/// Runs `upsert` over (ids, records) and moves `version` if it wrote.
async fn upsert_versioned(
    txn: &Transaction<'_>,
    upsert: &str,
    (id_type, ids): (Type, &(dyn ToSql + Sync)),
    records: &Vec<Vec<u8>>,
    version: &str,
) -> Result<u64, PgError> {
    let statement = txn
        .prepare_typed(upsert, &[id_type, Type::BYTEA_ARRAY])
        .await?;
    let written = txn.execute(&statement, &[ids, records]).await?;
    if written > 0 {
        txn.execute(
            &format!("UPDATE {version} SET version = version + 1 WHERE id = 1"),
            &[],
        )
        .await?;
    }
    Ok(written)
}
