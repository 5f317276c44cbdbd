//! Segment-compatible ingestion (`/v1/track`, `/v1/batch`…, authenticated
//! by source write keys) and the tracking queries: users, event counts,
//! funnels, attribution and NDJSON export.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use tokio::runtime::Handle;

use super::access::Access;
use super::error::ApiError;
use super::http::{json, page_limit, query_params, read_body, Resp, ResponseBody};
use crate::clock;
use crate::events;
use crate::pg::tracking::{PgTracking, TrackError};
use crate::store::log::IndexKeys;
use crate::store::records::EventRecord;
use crate::store::tracking::{person_hash, tracked_type_key, PersonKind};
use crate::store::{Store, StoreError, SubmitError, Writer};
use crate::tracking::analysis::{self, Model};
use crate::tracking::ingest::{self, Prepared, Refusal, Stored};
use crate::tracking::segment::{parse_time, Call};
use crate::tracking::settings::TrackingSettings;
use crate::tracking::txn::TrackRead;

/// What the tracking routes need, whichever backend keeps the calls: the
/// handlers below are the same code on both.
pub struct TrackingApi {
    pub store: TrackingStore,
    pub settings: TrackingSettings,
    pub body_timeout: Duration,
}

/// Where tracked calls live.
#[derive(Clone)]
pub enum TrackingStore {
    /// The redb file, appended to by its single writer.
    Embedded { store: Store, writer: Writer },
    /// A PostgreSQL database shared with other nodes.
    Postgres(PgTracking),
}

/// Segment clients back off on 429, not on 503.
fn busy() -> ApiError {
    let mut err = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "overloaded",
        "the write queue is full; retry after Retry-After",
    );
    err.retry_after_secs = Some(1);
    err
}

impl TrackingStore {
    /// Appends `calls` (see `ingest::append`); answers once committed.
    async fn append(&self, calls: Vec<Prepared>, window_ms: i64) -> Result<Vec<Stored>, ApiError> {
        match self {
            TrackingStore::Embedded { writer, .. } => writer
                .write(move |txn| {
                    let now = clock::now_ms();
                    ingest::append(txn, calls, now - window_ms, now)
                })
                .await
                .map_err(|e| match e {
                    SubmitError::Busy => busy(),
                    other => ApiError::from(other),
                }),
            TrackingStore::Postgres(pg) => pg.append(calls, window_ms).await.map_err(|e| match e {
                TrackError::Busy => busy(),
                TrackError::Failed(cause) => ApiError::not_acknowledged(&cause),
            }),
        }
    }

    /// Runs `query` on one snapshot; call it on a blocking thread.
    fn read_blocking<T>(
        &self,
        handle: &Handle,
        query: impl FnOnce(&dyn TrackRead) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self {
            TrackingStore::Embedded { store, .. } => query(&store.read()?),
            TrackingStore::Postgres(pg) => pg.read(handle, query),
        }
    }

    /// Runs `query` on one snapshot, off the async threads.
    async fn read<T, F>(&self, query: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn TrackRead) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        let handle = Handle::current();
        tokio::task::spawn_blocking(move || store.read_blocking(&handle, query))
            .await
            .map_err(|_| ApiError::unavailable("the query was interrupted"))?
            .map_err(|e| {
                tracing::error!(error = %e, "query failed");
                ApiError::unavailable("the query failed; see the server log")
            })
    }
}

const DAY_MS: i64 = 24 * 3600 * 1000;
const MAX_BUCKETS: i64 = 10_000;
const MAX_FUNNEL_STEPS: usize = 10;
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn refusal(r: Refusal) -> ApiError {
    match r {
        Refusal::Unauthorized => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown or missing write key",
        ),
        Refusal::TooLarge(m) => ApiError::too_large(m),
        Refusal::Invalid { field, message } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_call",
            format!("{field}: {message}"),
        )
        .with_field(field),
    }
}

/// `POST /v1/{identify,track,page,screen,group,alias}` (`call`) and
/// `/v1/batch` (`None`). 200 only once every call is durable.
pub async fn ingest(
    api: &TrackingApi,
    call: Option<Call>,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let settings = &api.settings;
    let (parts, body) = req.into_parts();
    let header_key = ingest::header_key(&parts.headers);
    if let Some(key) = &header_key {
        if settings.source_for(key).is_none() {
            return Err(refusal(Refusal::Unauthorized));
        }
    }
    let limit = match call {
        Some(_) => settings.max_event_bytes,
        None => settings.max_batch_bytes,
    };
    let raw = read_body(body, &parts.headers, limit, api.body_timeout).await?;
    let settings = api.settings.clone();
    let received_at = clock::now_ms();
    let prepared = tokio::task::spawn_blocking(move || {
        let body = ingest::decode_body(&parts.headers, &raw, limit)?;
        let parsed = ingest::parse(call, &body, &settings)?;
        let key = header_key.or_else(|| parsed.body_key.clone());
        let source = key
            .as_deref()
            .and_then(|k| settings.source_for(k))
            .ok_or(Refusal::Unauthorized)?;
        let tenant = source.tenant.as_deref();
        ingest::prepare(call, parsed, &source.name, tenant, received_at)
    })
    .await
    .map_err(|_| ApiError::unavailable("the request was interrupted"))?
    .map_err(refusal)?;
    let message_ids: Vec<String> = prepared
        .iter()
        .map(|p| p.tracked.message_id.clone())
        .collect();
    let window_ms = api.settings.dedup_window.as_millis() as i64;
    let stored = api.store.append(prepared, window_ms).await?;
    let results: Vec<Value> = stored
        .iter()
        .zip(&message_ids)
        .map(|(s, id)| {
            json!({"messageId": id, "seq": s.seq,
                   "status": if s.duplicate { "duplicate" } else { "stored" }})
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        json!({"success": true, "results": results}).to_string(),
    ))
}

fn time_param(name: &str, value: &str) -> Result<i64, ApiError> {
    parse_time(value).ok_or_else(|| ApiError::invalid_query(name, "not an RFC 3339 timestamp"))
}

fn user_not_found(id: &str) -> ApiError {
    let shown: String = id.chars().take(100).collect();
    ApiError::not_found(
        "user_not_found",
        format!("nothing is known about user `{shown}`"),
    )
}

/// A user id from the path; one that cannot be decoded names nobody.
fn path_user_id(raw: &str) -> Result<String, ApiError> {
    crate::percent::decode(raw).ok_or_else(|| user_not_found(raw))
}

/// `GET /v1/users/{id}?tenant=`: traits, linked ids, first and last seen.
pub async fn user(
    api: &TrackingApi,
    access: &Access,
    raw_id: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let user_id = path_user_id(raw_id)?;
    let tenant = users_of(access, &params_map(&req, &["tenant"])?)?;
    let id = user_id.clone();
    let found = api
        .store
        .read(move |txn| {
            let tenant = tenant.as_deref();
            let profile = txn.profile(tenant, &id)?;
            let persons = txn.persons_of(person_hash(tenant, PersonKind::User, &id))?;
            let (count, first, last) = txn.person_span(&persons)?;
            Ok((profile, first, last, count))
        })
        .await?;
    let (profile, first, last, count) = found;
    if profile.is_none() && count == 0 {
        return Err(user_not_found(&user_id));
    }
    let traits: Value = profile
        .as_ref()
        .and_then(|p| serde_json::from_str(&p.traits).ok())
        .unwrap_or_else(|| json!({}));
    let linked: Vec<String> = profile.map(|p| p.linked_ids).unwrap_or_default();
    let body = json!({
        "user_id": user_id,
        "traits": traits,
        "linked_ids": linked,
        "first_seen": first.map(|(t, _)| clock::format_rfc3339(t)),
        "last_seen": last.map(|(t, _)| clock::format_rfc3339(t)),
        "event_count": count,
    });
    Ok(json(StatusCode::OK, body.to_string()))
}

/// `GET /v1/users/{id}/events?after=SEQ&limit=&tenant=`: the user's calls,
/// including those made anonymously before the link, in log order.
pub async fn user_events(
    api: &TrackingApi,
    access: &Access,
    raw_id: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let user_id = path_user_id(raw_id)?;
    let mut after = 0u64;
    let mut limit = DEFAULT_PAGE;
    let mut tenant = None;
    for (name, value) in query_params(req.uri().query(), &["after", "limit", "tenant"])? {
        match name.as_str() {
            "tenant" => tenant = Some(value),
            "after" => {
                after = value
                    .parse()
                    .map_err(|_| ApiError::invalid_query("after", "not a seq"))?
            }
            _ => limit = page_limit(&value, MAX_PAGE)?,
        }
    }
    let tenant = access.tenant_param(tenant)?;
    let id = user_id.clone();
    let (lines, more) = api
        .store
        .read(move |txn| {
            let mut seqs = Vec::new();
            let user = person_hash(tenant.as_deref(), PersonKind::User, &id);
            for person in txn.persons_of(user)? {
                seqs.extend(txn.person_seqs(person, after, limit + 1)?);
            }
            seqs.sort_unstable();
            seqs.dedup();
            let more = seqs.len() > limit;
            seqs.truncate(limit);
            let mut lines = Vec::with_capacity(seqs.len());
            for (seq, event) in txn.events_at(&seqs)? {
                if let Some(event) = event {
                    lines.push((seq, events::to_json(seq, &event)));
                }
            }
            Ok((lines, more))
        })
        .await?;
    let next = if more {
        lines.last().map(|(s, _)| *s)
    } else {
        None
    };
    let mut body = String::from("{\"events\":[");
    for (i, (_, line)) in lines.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(line);
    }
    body.push_str(&format!(
        "],\"user_id\":{},\"next_cursor\":{}}}",
        Value::from(user_id),
        next.map_or("null".to_owned(), |s| format!("\"{s}\""))
    ));
    Ok(json(StatusCode::OK, body))
}

/// since/until query values, defaulting to the `default_span` before now.
fn range(params: &HashMap<String, String>, default_span: i64) -> Result<(i64, i64), ApiError> {
    let until = match params.get("until") {
        Some(v) => time_param("until", v)?,
        None => clock::now_ms() + 1,
    };
    let since = match params.get("since") {
        Some(v) => time_param("since", v)?,
        None => until - default_span,
    };
    if since >= until {
        return Err(ApiError::invalid_query("since", "must be before until"));
    }
    Ok((since, until))
}

/// Whose tracked users a query is about: `?tenant=` for an unscoped key
/// (none: users of sources bound to no tenant), always its own for a
/// tenant key. People are hashed with their tenant, so no query can reach
/// across.
fn users_of(access: &Access, params: &HashMap<String, String>) -> Result<Option<String>, ApiError> {
    access.tenant_param(params.get("tenant").cloned())
}

fn params_map(
    req: &Request<Incoming>,
    known: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    Ok(query_params(req.uri().query(), known)?
        .into_iter()
        .collect())
}

/// `GET /v1/stats/events?event=&interval=hour|day&since=&until=&tenant=`
pub async fn stats(
    api: &TrackingApi,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let p = params_map(&req, &["event", "interval", "since", "until", "tenant"])?;
    let tenant = users_of(access, &p)?;
    let event = p
        .get("event")
        .cloned()
        .ok_or_else(|| ApiError::invalid_query("event", "is required"))?;
    let bucket_ms = match p.get("interval").map(String::as_str) {
        None | Some("day") => DAY_MS,
        Some("hour") => DAY_MS / 24,
        Some(_) => return Err(ApiError::invalid_query("interval", "hour or day")),
    };
    let (since, until) = range(&p, 7 * DAY_MS)?;
    // Buckets start on whole UTC hours or days.
    let since = since.div_euclid(bucket_ms) * bucket_ms;
    if (until - since) / bucket_ms > MAX_BUCKETS {
        return Err(ApiError::invalid_query(
            "since",
            format!("at most {MAX_BUCKETS} intervals"),
        ));
    }
    let key = tracked_type_key(tenant.as_deref(), IndexKeys::of(&event, None).type_hash);
    let counts = api
        .store
        .read(move |txn| txn.event_counts(key, since, until, bucket_ms))
        .await?;
    let total: u64 = counts.iter().sum();
    let series: Vec<Value> = counts
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"start": clock::format_rfc3339(since + i as i64 * bucket_ms), "count": c}))
        .collect();
    let body = json!({"event": event, "interval": if bucket_ms == DAY_MS { "day" } else { "hour" },
                      "since": clock::format_rfc3339(since), "until": clock::format_rfc3339(until),
                      "total": total, "series": series});
    Ok(json(StatusCode::OK, body.to_string()))
}

/// `GET /v1/funnels?steps=A,B,C&within=14d&since=&until=&tenant=`
pub async fn funnel(
    api: &TrackingApi,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let p = params_map(&req, &["steps", "within", "since", "until", "tenant"])?;
    let tenant = users_of(access, &p)?;
    let steps: Vec<String> = p
        .get("steps")
        .ok_or_else(|| {
            ApiError::invalid_query("steps", "is required, e.g. steps=Signed Up,Subscribed")
        })?
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    if steps.len() < 2 || steps.len() > MAX_FUNNEL_STEPS || steps.iter().any(String::is_empty) {
        return Err(ApiError::invalid_query(
            "steps",
            format!("2 to {MAX_FUNNEL_STEPS} event names"),
        ));
    }
    let within = match p.get("within") {
        Some(v) => humantime::parse_duration(v)
            .map_err(|_| ApiError::invalid_query("within", "a duration such as 14d"))?,
        None => Duration::from_secs(14 * 24 * 3600),
    };
    let within_ms = within.as_millis().min(i64::MAX as u128) as i64;
    let (since, until) = range(&p, 30 * DAY_MS)?;
    let names = steps.clone();
    let started = std::time::Instant::now();
    let counts = api
        .store
        .read(move |txn| {
            let mut hits = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                let key = tracked_type_key(tenant.as_deref(), IndexKeys::of(name, None).type_hash);
                let end = if i == 0 {
                    until
                } else {
                    until.saturating_add(within_ms)
                };
                hits.push(txn.event_hits(key, since, end)?);
            }
            let mut persons: Vec<u64> = hits.iter().flatten().map(|(_, p)| *p).collect();
            persons.sort_unstable();
            persons.dedup();
            let resolver = txn.resolver_for(&persons, false)?;
            Ok(analysis::funnel(&hits, within_ms, &resolver))
        })
        .await?;
    let first = counts.first().copied().unwrap_or(0);
    let out: Vec<Value> = steps
        .iter()
        .zip(&counts)
        .enumerate()
        .map(|(i, (name, count))| {
            let previous = if i == 0 { *count } else { counts[i - 1] };
            let rate = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
            json!({"event": name, "count": count,
                   "conversion_from_previous": rate(*count, previous),
                   "conversion_from_first": rate(*count, first)})
        })
        .collect();
    let body = json!({"steps": out, "within": humantime::format_duration(within).to_string(),
                      "since": clock::format_rfc3339(since), "until": clock::format_rfc3339(until),
                      "took_ms": started.elapsed().as_millis() as u64});
    Ok(json(StatusCode::OK, body.to_string()))
}

/// `GET /v1/attribution?event=&model=first_touch|last_touch&since=&until=&tenant=`
pub async fn attribution(
    api: &TrackingApi,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let p = params_map(&req, &["event", "model", "since", "until", "tenant"])?;
    let tenant = users_of(access, &p)?;
    let event = p
        .get("event")
        .cloned()
        .ok_or_else(|| ApiError::invalid_query("event", "is required"))?;
    let model = match p.get("model").map(String::as_str) {
        None | Some("first_touch") => Model::FirstTouch,
        Some("last_touch") => Model::LastTouch,
        Some(_) => {
            return Err(ApiError::invalid_query(
                "model",
                "first_touch or last_touch",
            ))
        }
    };
    let (since, until) = range(&p, 30 * DAY_MS)?;
    let key = tracked_type_key(tenant.as_deref(), IndexKeys::of(&event, None).type_hash);
    let (groups, total) =
        api.store
            .read(move |txn| {
                let conversions = txn.event_hits(key, since, until)?;
                let mut persons: Vec<u64> = conversions.iter().map(|(_, p)| *p).collect();
                persons.sort_unstable();
                persons.dedup();
                let mut resolver = txn.resolver_for(&persons, true)?;
                let mut failure = None;
                let groups = analysis::attribute(&conversions, model, &mut resolver, |person| {
                    match txn.touches(person, until) {
                        Ok(list) => list
                            .into_iter()
                            .map(|(t, s, m, n)| (t, (s, m, n)))
                            .collect(),
                        Err(e) => {
                            failure = Some(e);
                            Vec::new()
                        }
                    }
                });
                match failure {
                    Some(e) => Err(e),
                    None => Ok((groups, conversions.len())),
                }
            })
            .await?;
    let mut rows: Vec<(Value, u64)> = groups
        .into_iter()
        .map(|(campaign, count)| {
            let c = match campaign {
                Some((source, medium, name)) => {
                    json!({"source": source, "medium": medium, "name": name})
                }
                None => Value::Null,
            };
            (c, count)
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    let list: Vec<Value> = rows
        .into_iter()
        .map(|(campaign, count)| json!({"campaign": campaign, "conversions": count}))
        .collect();
    let body = json!({"event": event,
                      "model": if model == Model::FirstTouch { "first_touch" } else { "last_touch" },
                      "since": clock::format_rfc3339(since), "until": clock::format_rfc3339(until),
                      "conversions": total, "by_campaign": list});
    Ok(json(StatusCode::OK, body.to_string()))
}

/// A response body fed from a channel by a producer thread.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}

const EXPORT_CHUNK: usize = 64 * 1024;
const EXPORT_PAGE: usize = 1000;
/// A client that reads nothing for this long ends its export.
const EXPORT_STALL: Duration = Duration::from_secs(60);

/// Hands a chunk to the response; false when the client is gone or stalled.
fn send_chunk(
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    chunk: Result<Bytes, std::io::Error>,
) -> bool {
    let deadline = std::time::Instant::now() + EXPORT_STALL;
    let mut pending = chunk;
    loop {
        match tx.try_send(pending) {
            Ok(()) => return true,
            Err(tokio::sync::mpsc::error::TrySendError::Full(back)) => {
                if std::time::Instant::now() >= deadline {
                    return false;
                }
                pending = back;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return false,
        }
    }
}

/// `GET /v1/events/export?since=&until=&tenant=`: tracked calls received
/// in the range, one JSON event per line, streamed as they are read. A
/// tenant key (or `?tenant=`) gets that tenant's calls only; an unscoped
/// key without it gets every call, as lists do.
pub async fn export(
    api: &TrackingApi,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let p = params_map(&req, &["since", "until", "tenant"])?;
    let tenant = access.tenant_param(p.get("tenant").cloned())?;
    let (since, until) = range(&p, DAY_MS)?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let store = api.store.clone();
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut after = None;
        let mut chunk = String::with_capacity(EXPORT_CHUNK * 2);
        loop {
            // A snapshot per page: a slow reader must not pin old pages of
            // the file for the whole export.
            let page = store.read_blocking(&handle, |snapshot| {
                let page = snapshot.tracked_seqs(since, until, after, EXPORT_PAGE)?;
                let seqs: Vec<u64> = page.iter().map(|(_, seq)| *seq).collect();
                let events = snapshot.events_at(&seqs)?;
                Ok(page
                    .into_iter()
                    .zip(events)
                    .map(|(at, (_, event))| (at, event))
                    .collect::<Vec<_>>())
            });
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    send_chunk(&tx, Err(std::io::Error::other(e.to_string())));
                    return;
                }
            };
            let Some(&(last, _)) = page.last() else { break };
            for ((_, seq), event) in &page {
                let wanted = |e: &&EventRecord| tenant.is_none() || e.tenant == tenant;
                if let Some(event) = event.as_ref().filter(wanted) {
                    events::write_json(&mut chunk, *seq, event);
                    chunk.push('\n');
                }
                if chunk.len() >= EXPORT_CHUNK {
                    let full =
                        std::mem::replace(&mut chunk, String::with_capacity(EXPORT_CHUNK * 2));
                    if !send_chunk(&tx, Ok(Bytes::from(full))) {
                        return;
                    }
                }
            }
            after = Some(last);
        }
        if !chunk.is_empty() {
            send_chunk(&tx, Ok(Bytes::from(chunk)));
        }
    });
    let body: ResponseBody = http_body_util::BodyExt::boxed(ChannelBody(rx));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}
