//! `/v1/events`: append one, append a batch, page through the log, get one.

use std::fmt::Write as _;
use std::sync::Arc;

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::access::Access;
use super::error::ApiError;
use super::http::{json, page_limit, query_params, read_body, require_json, Resp};
use super::read_store;
use crate::catalog::Catalog;
use crate::clock;
use crate::config::EventLimits;
use crate::events::{self, AppendBatch, KeyConflict, NewEvent};
use crate::ids;
use crate::names;
use crate::pg::log::{AppendError, AppendOutcome, PgLog};
use crate::store::log::{EventPage, IndexKeys};
use crate::store::records::EventRecord;
use crate::store::{EventCursor, EventFilter, Store, Writer};

/// What the event routes need, whichever backend keeps the log: the
/// handlers below are the same code on both.
pub struct EventApi {
    pub log: EventLog,
    pub limits: EventLimits,
    pub body_timeout: Duration,
    pub catalog: Arc<Catalog>,
}

/// Where the log lives.
pub enum EventLog {
    /// The redb file, appended to by its single writer.
    Embedded { store: Store, writer: Writer },
    /// A PostgreSQL database shared with other nodes.
    Postgres(PgLog),
}

impl EventLog {
    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, ApiError> {
        match self {
            EventLog::Embedded { writer, .. } => {
                Ok(writer.write(move |txn| events::append(txn, batch)).await?)
            }
            EventLog::Postgres(log) => Ok(log.append(batch).await?),
        }
    }

    async fn scan(
        &self,
        filter: EventFilter,
        after: EventCursor,
        limit: usize,
    ) -> Result<EventPage, ApiError> {
        match self {
            EventLog::Embedded { store, .. } => {
                read_store(store, move |txn| txn.scan_events(&filter, after, limit)).await
            }
            EventLog::Postgres(log) => log.scan(&filter, after, limit).await.map_err(query_failed),
        }
    }

    async fn by_id(&self, id: u128) -> Result<Option<(u64, EventRecord)>, ApiError> {
        match self {
            EventLog::Embedded { store, .. } => {
                read_store(store, move |txn| txn.event_by_id(id)).await
            }
            EventLog::Postgres(log) => log.by_id(id).await.map_err(query_failed),
        }
    }
}

fn query_failed(e: crate::pg::PgError) -> ApiError {
    tracing::error!(error = %e, "query failed");
    ApiError::unavailable("the query failed; see the server log")
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Busy => ApiError::overloaded(),
            AppendError::Closed => ApiError::shutting_down(),
            AppendError::Failed(cause) => ApiError::not_acknowledged(&cause),
        }
    }
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn conflict(c: &KeyConflict) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_conflict",
        format!(
            "idempotency key `{}` was already used for a different event; nothing was written",
            c.key
        ),
    )
    .with_field("idempotency_key")
}

/// An event that passed every check but its type's schema: checked here,
/// against the compiled catalog, before anything reaches the writer.
fn check_schema(api: &EventApi, posted: &events::Posted) -> Result<(), ApiError> {
    let event = &posted.event;
    let versions = event
        .older_versions
        .iter()
        .map(|(v, d)| (*v, d.as_str()))
        .chain([(event.data_version, event.data.as_str())]);
    api.catalog.check(&event.event_type, versions).map_err(|m| {
        let pointer = format!("{}{}", posted.data_pointer(m.version), m.path);
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema_mismatch",
            format!(
                "{pointer}: does not match version {} of `{}`'s schema: {}; nothing was written",
                m.version, event.event_type, m.message
            ),
        )
        .with_field(pointer)
    })
}

/// A JSON body of at most `limit` bytes.
async fn json_body(
    api: &EventApi,
    req: Request<Incoming>,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    require_json(req.headers())?;
    let (parts, body) = req.into_parts();
    read_body(body, &parts.headers, limit, api.body_timeout).await
}

/// Puts `event` in the tenant `access` writes for: a tenant key's own
/// unless it names another (forbidden).
fn scope(event: &mut NewEvent, access: &Access) -> Result<(), ApiError> {
    let tenant = access.tenant_for_write(event.tenant.take())?;
    if tenant != event.tenant {
        event.index = IndexKeys::of(&event.event_type, tenant.as_deref());
    }
    event.tenant = tenant;
    Ok(())
}

pub async fn create(
    api: &EventApi,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let body = json_body(api, req, api.limits.max_event_bytes).await?;
    let posted = events::parse_posted(&body)?;
    check_schema(api, &posted)?;
    let mut event = posted.event;
    scope(&mut event, access)?;
    let outcome = api.log.append(AppendBatch::one(event)).await?;
    let appended = outcome.map_err(|c| conflict(&c))?;
    let first = &appended[0];
    let status = if first.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, events::to_json(first.seq, &first.record)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchInput<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

pub async fn create_batch(
    api: &EventApi,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let limits = api.limits;
    let body = json_body(api, req, limits.max_request_bytes).await?;
    let input: BatchInput = events::from_json_object(&body)?;
    if input.events.is_empty() || input.events.len() > limits.max_batch_events {
        return Err(ApiError::invalid_field(
            "events",
            format!("must hold 1 to {} events", limits.max_batch_events),
        ));
    }
    let mut batch: Vec<NewEvent> = Vec::with_capacity(input.events.len());
    for (index, raw) in input.events.iter().enumerate() {
        if raw.get().len() > limits.max_event_bytes {
            return Err(ApiError::too_large(format!(
                "events[{index}] exceeds {} bytes",
                limits.max_event_bytes
            )));
        }
        let posted = events::parse_posted(raw.get().as_bytes())
            .map_err(|e| ApiError::from(e).in_item("events", index))?;
        check_schema(api, &posted).map_err(|e| e.in_item("events", index))?;
        let mut event = posted.event;
        scope(&mut event, access).map_err(|e| e.in_item("events", index))?;
        batch.push(event);
    }
    drop(input);
    let batch = AppendBatch::new(batch).map_err(|c| conflict(&c).in_item("events", c.index))?;
    let outcome = api.log.append(batch).await?;
    let appended = outcome.map_err(|c| conflict(&c).in_item("events", c.index))?;

    let mut out = String::with_capacity(32 + appended.len() * 120);
    out.push_str(r#"{"results":["#);
    for (i, a) in appended.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"result":"{}","id":"{}","seq":{},"received_at":""#,
            if a.created { "created" } else { "duplicate" },
            ids::format(events::ID_PREFIX, a.record.id),
            a.seq,
        );
        clock::write_rfc3339(&mut out, a.record.received_at_ms);
        out.push_str("\"}");
    }
    out.push_str("]}");
    Ok(json(StatusCode::OK, out))
}

pub async fn list(
    api: &EventApi,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let params = query_params(
        req.uri().query(),
        &["after", "type", "tenant", "since", "until", "limit"],
    )?;
    let mut filter = EventFilter::default();
    let mut after = EventCursor::default();
    let mut limit = DEFAULT_PAGE;
    for (name, value) in params {
        let bad = |what: &str| {
            ApiError::bad_request("invalid_query", format!("{name}: {what}"))
                .with_field(name.clone())
        };
        match name.as_str() {
            "after" => {
                after = EventCursor::parse(&value)
                    .ok_or_else(|| bad("not a cursor returned by this API"))?
            }
            "type" if names::is_tracked_event_name(&value) => filter.event_type = Some(value),
            "tenant" if names::is_valid_tenant(&value) => filter.tenant = Some(value),
            "type" | "tenant" => return Err(bad("not a valid name")),
            "since" => {
                filter.since_ms = Some(
                    clock::parse_rfc3339(&value).ok_or_else(|| bad("not an RFC 3339 timestamp"))?,
                )
            }
            "until" => {
                filter.until_ms = Some(
                    clock::parse_rfc3339(&value).ok_or_else(|| bad("not an RFC 3339 timestamp"))?,
                )
            }
            "limit" => limit = page_limit(&value, MAX_PAGE)?,
            _ => unreachable!("query_params only yields known names"),
        }
    }
    filter.tenant = access.tenant_param(filter.tenant)?;

    let page = api.log.scan(filter, after, limit).await?;

    let mut out = String::with_capacity(64 + page.events.len() * 300);
    out.push_str(r#"{"events":["#);
    for (i, (seq, record)) in page.events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        events::write_json(&mut out, *seq, record);
    }
    out.push_str(r#"],"next_cursor":"#);
    match page.next {
        Some(c) => out.push_str(&format!("\"{}\"", c.encode())),
        None => out.push_str("null"),
    }
    out.push_str(&format!(r#","tail_cursor":"{}"}}"#, page.tail.encode()));
    Ok(json(StatusCode::OK, out))
}

pub async fn get(api: &EventApi, access: &Access, id: &str) -> Result<Resp, ApiError> {
    let not_found = || ApiError::not_found("event_not_found", format!("no event has id `{id}`"));
    let id = ids::parse(events::ID_PREFIX, id).ok_or_else(not_found)?;
    let (seq, record) = api
        .log
        .by_id(id)
        .await?
        .filter(|(_, record)| access.sees(record.tenant.as_deref()))
        .ok_or_else(not_found)?;
    Ok(json(StatusCode::OK, events::to_json(seq, &record)))
}
