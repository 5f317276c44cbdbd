//! Operator routes: liveness and readiness probes, the consistent backup
//! that `herald backup` downloads, and what the file holds.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use super::error::ApiError;
use super::http::{json, query_params, FileBody, Resp};
use super::{read, AppState};
use crate::clock;
use crate::store::usage::TableUsage;
use crate::store::{backup, SCHEMA_VERSION};

pub const SCHEMA_HEADER: &str = "x-herald-schema-version";

pub fn healthz() -> Resp {
    json(StatusCode::OK, r#"{"status":"ok"}"#)
}

pub fn readyz(state: &AppState) -> Resp {
    if state.writer.is_alive() && state.store.is_readable() {
        json(StatusCode::OK, r#"{"status":"ready"}"#)
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"unavailable","error":{"code":"not_ready","message":"the store or its writer is not running"}}"#,
        )
    }
}

/// Writes a compacted copy next to the live file, opens it, unlinks its
/// name (so a crash leaves nothing behind) and streams it to the caller.
pub async fn backup(state: Arc<AppState>) -> Result<Resp, ApiError> {
    let Ok(permit) = state.backup_slot.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_in_progress",
            "another backup is being taken; try again when it finishes",
        ));
    };
    let store = state.store.clone();
    let dir = state.config.data_dir.clone();
    let cache_bytes = state.config.cache_bytes;
    let made = tokio::task::spawn_blocking(move || {
        let result = backup::take(&store, &dir, cache_bytes);
        drop(permit);
        result
    })
    .await
    .map_err(|_| ApiError::unavailable("the backup was interrupted"))?;
    let (summary, file) = made.map_err(|e| {
        tracing::error!(error = %e, "backup failed");
        ApiError::unavailable("the backup could not be written; see the server log")
    })?;
    let len = file
        .metadata()
        .map_err(|_| ApiError::unavailable("the backup could not be read back"))?
        .len();
    tracing::info!(
        bytes = len,
        events = summary.rows("events").unwrap_or(0),
        "backup streamed"
    );
    let mut resp = Response::new(FileBody::new(tokio::fs::File::from_std(file)).boxed());
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(SCHEMA_HEADER, HeaderValue::from(SCHEMA_VERSION));
    Ok(resp)
}

/// `GET /v1/admin/storage` on PostgreSQL: the database's size, and each
/// Herald table's rows and bytes with its indexes.
pub async fn storage_postgres(
    app: &super::postgres_state::PostgresApp,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    query_params(req.uri().query(), &[])?;
    let (tables, database_bytes) =
        crate::pg::backlog::table_usage(&app.pool)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "query failed");
                ApiError::unavailable("the query failed; see the server log")
            })?;
    // The database keeps no page bookkeeping per table nor rows in
    // arrival order, so those figures are zero and `oldest` null.
    let tables: Vec<TableUsage> = tables
        .into_iter()
        .map(|t| TableUsage {
            name: t.name,
            rows: t.rows,
            stored_bytes: t.bytes,
            metadata_bytes: 0,
            fragmented_bytes: 0,
            oldest: None,
        })
        .collect();
    Ok(storage_answer(
        database_bytes,
        crate::pg::schema::PG_SCHEMA_VERSION.into(),
        &tables,
    ))
}

/// `GET /v1/admin/storage`: the file's size and, per table, its rows,
/// bytes and oldest row.
pub async fn storage(state: Arc<AppState>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    query_params(req.uri().query(), &[])?;
    let path = state.config.database_path();
    let (file_bytes, tables) = read(&state, move |txn| {
        let tables = txn.table_usage()?;
        // Read after the tables, so the size covers at least what they hold.
        let file_bytes = std::fs::metadata(&path)?.len();
        Ok((file_bytes, tables))
    })
    .await?;
    Ok(storage_answer(file_bytes, SCHEMA_VERSION.into(), &tables))
}

/// The storage answer both backends give: the size on disk and each
/// table's figures.
fn storage_answer(file_bytes: u64, schema_version: i64, tables: &[TableUsage]) -> Resp {
    let stored: u64 = tables.iter().map(|t| t.stored_bytes).sum();
    let list: Vec<serde_json::Value> = tables
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "rows": t.rows,
                "stored_bytes": t.stored_bytes,
                "metadata_bytes": t.metadata_bytes,
                "fragmented_bytes": t.fragmented_bytes,
                "oldest": t.oldest.map(|o| serde_json::json!({
                    "id": o.id,
                    "at": clock::format_rfc3339(o.at_ms),
                })),
            })
        })
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({
            "file_bytes": file_bytes,
            "stored_bytes": stored,
            "schema_version": schema_version,
            "tables": list,
        })
        .to_string(),
    )
}
