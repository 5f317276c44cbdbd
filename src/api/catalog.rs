//! `/v1/event-types`: the event catalog. Types are shared by every tenant;
//! a change is applied to the compiled catalog in memory right after it
//! commits, so ingest checks against what is stored. On PostgreSQL the
//! other nodes recompile theirs when they see the catalog's version move.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use super::error::ApiError;
use super::http::{json, query_params, read_body, require_json, Resp};
use super::read_store;
use crate::catalog::definition::{self, Refused};
use crate::catalog::Catalog;
use crate::clock;
use crate::events::{self, Invalid};
use crate::pg::catalog::{PgCatalog, Stored};
use crate::store::records::EventTypeRecord;
use crate::store::{Store, Writer};

/// A definition holds a schema and a sample per version.
const MAX_BODY: usize = 1024 * 1024;
/// Every type stays compiled in memory: this bounds that memory.
const MAX_EVENT_TYPES: u64 = 1000;

/// What the catalog routes need, whichever backend keeps the catalog.
pub struct CatalogApi {
    pub store: CatalogStore,
    /// The compiled catalog ingest checks events against.
    pub live: Arc<Catalog>,
    pub body_timeout: Duration,
}

pub enum CatalogStore {
    Embedded { store: Store, writer: Writer },
    Postgres(PgCatalog),
}

fn query_failed(e: crate::pg::PgError) -> ApiError {
    tracing::error!(error = %e, "query failed");
    ApiError::unavailable("the query failed; see the server log")
}

impl CatalogStore {
    async fn all(&self) -> Result<Vec<(String, EventTypeRecord)>, ApiError> {
        match self {
            CatalogStore::Embedded { store, .. } => {
                read_store(store, |txn| txn.event_types()).await
            }
            CatalogStore::Postgres(pg) => pg.all().await.map(|(_, t)| t).map_err(query_failed),
        }
    }

    async fn get(&self, name: String) -> Result<Option<EventTypeRecord>, ApiError> {
        match self {
            CatalogStore::Embedded { store, .. } => {
                read_store(store, move |txn| txn.event_type(&name)).await
            }
            CatalogStore::Postgres(pg) => pg.get(&name).await.map_err(query_failed),
        }
    }
}

fn type_not_found(name: &str) -> ApiError {
    let shown: String = name.chars().take(140).collect();
    ApiError::not_found(
        "event_type_not_found",
        format!("no event type is named `{shown}`"),
    )
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Invalid(e) => e.into(),
            Refused::Schema { pointer, message } => ApiError::bad_request(
                "invalid_schema",
                format!("{pointer}: not a usable JSON Schema: {message}"),
            )
            .with_field(pointer),
            Refused::Sample { pointer, message } => ApiError::bad_request(
                "sample_mismatch",
                format!("{pointer}: the sample does not match its schema: {message}"),
            )
            .with_field(pointer),
        }
    }
}

pub async fn list(api: &CatalogApi, req: Request<Incoming>) -> Result<Resp, ApiError> {
    query_params(req.uri().query(), &[])?;
    let types = api.store.all().await?;
    let list: Vec<Value> = types
        .iter()
        .map(|(name, record)| definition::to_json(name, record))
        .collect();
    Ok(json(
        StatusCode::OK,
        json!({ "event_types": list }).to_string(),
    ))
}

pub async fn get(api: &CatalogApi, name: &str) -> Result<Resp, ApiError> {
    if events::validate_type_name(name).is_err() {
        return Err(type_not_found(name));
    }
    let record = api
        .store
        .get(name.to_owned())
        .await?
        .ok_or_else(|| type_not_found(name))?;
    Ok(json(
        StatusCode::OK,
        definition::to_json(name, &record).to_string(),
    ))
}

pub async fn put(api: &CatalogApi, name: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
    if let Err(Invalid::Field { message, .. }) = events::validate_type_name(name) {
        return Err(ApiError::invalid_field("name", message));
    }
    require_json(req.headers())?;
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers, MAX_BODY, api.body_timeout).await?;
    // Compiling schemas is CPU work: off the async threads.
    let mut entry = tokio::task::spawn_blocking(move || definition::parse(&body, clock::now_ms()))
        .await
        .map_err(|_| ApiError::unavailable("the definition could not be checked"))??;

    let catalog = api.live.clone();
    let (stored_name, memory_name) = (name.to_owned(), name.to_owned());
    let outcome = match &api.store {
        CatalogStore::Embedded { writer, .. } => {
            writer
                .write_then(
                    move |txn| {
                        let previous = txn.event_type(&stored_name)?;
                        match &previous {
                            Some(previous) => entry.record.created_at_ms = previous.created_at_ms,
                            None if txn.event_type_count()? >= MAX_EVENT_TYPES => return Ok(None),
                            None => {}
                        }
                        txn.put_event_type(&stored_name, &entry.record)?;
                        Ok(Some((previous.is_none(), Arc::new(entry))))
                    },
                    move |outcome| {
                        if let Some((_, entry)) = outcome {
                            catalog.put(&memory_name, entry.clone());
                        }
                    },
                )
                .await?
        }
        CatalogStore::Postgres(pg) => {
            // A task of its own: a client that hangs up after the commit
            // cannot leave this node checking against the old schema.
            let pg = pg.clone();
            tokio::spawn(async move {
                let stored = pg
                    .put(&stored_name, &mut entry.record, MAX_EVENT_TYPES)
                    .await
                    .map_err(|e| ApiError::not_acknowledged(&e))?;
                let (created, version) = match stored {
                    Stored::Full => return Ok(None),
                    Stored::Created(version) => (true, version),
                    Stored::Replaced(version) => (false, version),
                };
                let entry = Arc::new(entry);
                // The version first: a reload of an older catalog under way
                // then cannot undo this change.
                catalog.note_version(version);
                catalog.put(&memory_name, entry.clone());
                Ok::<_, ApiError>(Some((created, entry)))
            })
            .await
            .map_err(|_| ApiError::unavailable("the change to the catalog was interrupted"))??
        }
    };
    let Some((created, entry)) = outcome else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "catalog_full",
            format!("the catalog holds {MAX_EVENT_TYPES} types, its most; delete one first"),
        ));
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(
        status,
        definition::to_json(name, &entry.record).to_string(),
    ))
}

pub async fn delete(api: &CatalogApi, name: &str) -> Result<Resp, ApiError> {
    if events::validate_type_name(name).is_err() {
        return Err(type_not_found(name));
    }
    let catalog = api.live.clone();
    let (stored_name, memory_name) = (name.to_owned(), name.to_owned());
    let removed = match &api.store {
        CatalogStore::Embedded { writer, .. } => {
            writer
                .write_then(
                    move |txn| Ok(txn.remove_event_type(&stored_name)?.is_some()),
                    move |removed| {
                        if *removed {
                            catalog.remove(&memory_name);
                        }
                    },
                )
                .await?
        }
        CatalogStore::Postgres(pg) => {
            let pg = pg.clone();
            tokio::spawn(async move {
                let removed = pg
                    .remove(&stored_name)
                    .await
                    .map_err(|e| ApiError::not_acknowledged(&e))?;
                if let Some(version) = removed {
                    catalog.note_version(version);
                    catalog.remove(&memory_name);
                }
                Ok::<_, ApiError>(removed.is_some())
            })
            .await
            .map_err(|_| ApiError::unavailable("the change to the catalog was interrupted"))??
        }
    };
    if !removed {
        return Err(type_not_found(name));
    }
    Ok(json(StatusCode::NO_CONTENT, ""))
}
