//! `/v1/endpoints`, `/v1/deliveries`, `/v1/dead-letters`: managing webhook
//! endpoints and inspecting, retrying, recovering and replaying deliveries.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::access::Access;
use super::error::ApiError;
use super::http::{json, page_limit, query_params, read_body, require_json, Resp};
use super::{read, AppState};
use crate::clock;
use crate::events::{self, ID_PREFIX as EVENT_ID_PREFIX};
use crate::ids;
use crate::names;
use crate::store::attempt_tally::AttemptTally;
use crate::store::records::{DeliveryRecord, DeliveryStatus, EndpointRecord, EventSource};
use crate::store::webhooks::DeliveryFilter;
use crate::store::WriteTxn;
use crate::webhooks::dispatch;
use crate::webhooks::endpoint::{self, EndpointInput, ID_PREFIX as ENDPOINT_ID_PREFIX};
use crate::webhooks::ledger::{self, format_delivery_id, parse_delivery_id};
use crate::webhooks::payload;
use crate::webhooks::signing::Secret;

/// Endpoint bodies are small; this bounds what a client can make us parse.
const MAX_BODY: usize = 64 * 1024;
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Deliveries one recover or replay call may create or re-queue; the answer
/// says when there may be more, and calling again continues.
pub(crate) const MAX_REQUEUE: usize = 10_000;
/// The longest grace period during which a rotated secret still signs.
const MAX_GRACE_SECS: u64 = 7 * 24 * 3600;

pub(crate) fn endpoint_not_found(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::not_found(
        "endpoint_not_found",
        format!("no endpoint has id `{shown}`"),
    )
}

pub(crate) fn delivery_not_found(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::not_found(
        "delivery_not_found",
        format!("no delivery has id `{shown}`"),
    )
}

pub(crate) fn parse_endpoint_id(id: &str) -> Result<u128, ApiError> {
    ids::parse(ENDPOINT_ID_PREFIX, id).ok_or_else(|| endpoint_not_found(id))
}

async fn json_body<T: for<'de> Deserialize<'de>>(
    state: &AppState,
    req: Request<Incoming>,
    empty_ok: bool,
) -> Result<T, ApiError> {
    json_body_within(state.config.body_timeout, req, empty_ok).await
}

/// A JSON object body of at most 64 KiB, sent within `body_timeout`; an
/// empty one reads as `{}` where `empty_ok`.
pub(crate) async fn json_body_within<T: for<'de> Deserialize<'de>>(
    body_timeout: std::time::Duration,
    req: Request<Incoming>,
    empty_ok: bool,
) -> Result<T, ApiError> {
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers, MAX_BODY, body_timeout).await?;
    if body.is_empty() && empty_ok {
        return serde_json::from_slice(b"{}").map_err(|e| events::json_error(&e).into());
    }
    require_json(&parts.headers)?;
    Ok(events::from_json_object(&body)?)
}

/// An endpoint as answers show it: no secret, custom header values redacted.
pub(crate) fn endpoint_json(status: StatusCode, record: &EndpointRecord) -> Resp {
    json(status, endpoint::to_json(record).to_string())
}

/// The answers that create or replace the secret carry it: the caller has
/// no other moment to learn it but `GET /v1/endpoints/{id}/secret`.
pub(crate) fn endpoint_json_with_secret(status: StatusCode, record: &EndpointRecord) -> Resp {
    json(status, endpoint::to_json_with_secret(record).to_string())
}

/// The tenant field of an endpoint body as `access` may set it: a tenant
/// key's endpoints are its tenant's, so naming another tenant, or none
/// (`null`), is forbidden. Absent stays absent.
pub(crate) fn scoped_tenant_field(
    access: &Access,
    field: Option<Option<String>>,
) -> Result<Option<Option<String>>, ApiError> {
    match (access.tenant(), field) {
        (None, field) => Ok(field),
        (Some(_), None) => Ok(None),
        (Some(own), Some(None)) => Err(ApiError::forbidden(format!(
            "this key belongs to tenant `{own}`; its endpoints cannot be without a tenant"
        ))
        .with_field("tenant")),
        (Some(_), Some(named)) => Ok(Some(access.tenant_for_write(named)?)),
    }
}

pub async fn create_endpoint(
    state: Arc<AppState>,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let mut input: EndpointInput = json_body(&state, req, false).await?;
    if input.url.is_none() {
        return Err(ApiError::bad_request("invalid_body", "missing field `url`").with_field("url"));
    }
    // Left out, the tenant is the key's own (none for an unscoped key).
    input.tenant = match scoped_tenant_field(access, input.tenant.take())? {
        None => access.tenant.clone().map(Some),
        named => named,
    };
    let now = clock::now_ms();
    let record = endpoint::apply(
        endpoint::new_record(now),
        input,
        state.config.webhooks.require_https,
    )?;
    let stored = record.clone();
    state
        .writer
        .write(move |txn| txn.put_endpoint(stored))
        .await?;
    Ok(endpoint_json_with_secret(StatusCode::CREATED, &record))
}

/// The tenant an endpoint listing is limited to: the `tenant` query
/// parameter, within what `access` may see.
pub(crate) fn endpoints_tenant(
    access: &Access,
    query: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let tenant = query_params(query, &["tenant"])?
        .into_iter()
        .find(|(n, _)| n == "tenant")
        .map(|(_, v)| v);
    access.tenant_param(tenant)
}

pub async fn list_endpoints(
    state: Arc<AppState>,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let tenant = endpoints_tenant(access, req.uri().query())?;
    let mut endpoints = read(&state, |txn| txn.endpoints()).await?;
    endpoints.retain(|e| tenant.is_none() || e.tenant == tenant);
    endpoints.sort_by_key(|e| e.id);
    let list: Vec<Value> = endpoints.iter().map(endpoint::to_json).collect();
    Ok(json(
        StatusCode::OK,
        json!({ "endpoints": list }).to_string(),
    ))
}

/// The endpoint `id` if `access` sees it; another tenant's is as missing.
async fn load_endpoint(
    state: &Arc<AppState>,
    access: &Access,
    id: &str,
) -> Result<EndpointRecord, ApiError> {
    let key = parse_endpoint_id(id)?;
    read(state, move |txn| txn.endpoint(key))
        .await?
        .filter(|e| access.sees(e.tenant.as_deref()))
        .ok_or_else(|| endpoint_not_found(id))
}

/// Whether endpoint `id` exists in this transaction and `access` sees it.
fn owns_endpoint(txn: &WriteTxn<'_>, access: &Access, id: u128) -> bool {
    txn.endpoint(id)
        .is_some_and(|e| access.sees(e.tenant.as_deref()))
}

pub async fn get_endpoint(
    state: Arc<AppState>,
    access: &Access,
    id: &str,
) -> Result<Resp, ApiError> {
    Ok(endpoint_json(
        StatusCode::OK,
        &load_endpoint(&state, access, id).await?,
    ))
}

/// `GET /v1/endpoints/{id}/secret`: the one read that shows the secret.
pub async fn get_secret(state: Arc<AppState>, access: &Access, id: &str) -> Result<Resp, ApiError> {
    let record = load_endpoint(&state, access, id).await?;
    Ok(json(
        StatusCode::OK,
        endpoint::secret_json(&record).to_string(),
    ))
}

/// Changes an endpoint inside the writer, so two concurrent updates cannot
/// lose each other's fields. Another tenant's endpoint is as missing.
async fn update_endpoint<F>(
    state: &Arc<AppState>,
    access: &Access,
    id: &str,
    change: F,
) -> Result<EndpointRecord, ApiError>
where
    F: FnOnce(EndpointRecord) -> Result<EndpointRecord, ApiError> + Send + 'static,
{
    let key = parse_endpoint_id(id)?;
    let access = access.clone();
    let outcome = state
        .writer
        .write(move |txn| {
            if !owns_endpoint(txn, &access, key) {
                return Ok(None);
            }
            ledger::update_endpoint(txn, key, change)
        })
        .await?;
    outcome.ok_or_else(|| endpoint_not_found(id))?
}

pub async fn patch_endpoint(
    state: Arc<AppState>,
    access: &Access,
    id: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let mut input: EndpointInput = json_body(&state, req, false).await?;
    input.tenant = scoped_tenant_field(access, input.tenant.take())?;
    let require_https = state.config.webhooks.require_https;
    let updated = update_endpoint(&state, access, id, move |current| {
        // An endpoint's deliveries hold events of its tenant (or of every
        // tenant, without one): moving it would hand them to another tenant.
        if input.tenant.as_ref().is_some_and(|t| *t != current.tenant) {
            return Err(ApiError::invalid_field(
                "tenant",
                "an endpoint's tenant is fixed when it is created; create a new endpoint instead",
            ));
        }
        endpoint::apply(current, input, require_https).map_err(ApiError::from)
    })
    .await?;
    Ok(endpoint_json(StatusCode::OK, &updated))
}

pub async fn delete_endpoint(
    state: Arc<AppState>,
    access: &Access,
    id: &str,
) -> Result<Resp, ApiError> {
    let key = parse_endpoint_id(id)?;
    let access = access.clone();
    let deleted = state
        .writer
        .write(
            move |txn| Ok(owns_endpoint(txn, &access, key) && ledger::delete_endpoint(txn, key)?),
        )
        .await?;
    if !deleted {
        return Err(endpoint_not_found(id));
    }
    Ok(json(StatusCode::NO_CONTENT, ""))
}

pub async fn set_enabled(
    state: Arc<AppState>,
    access: &Access,
    id: &str,
    enabled: bool,
) -> Result<Resp, ApiError> {
    let key = parse_endpoint_id(id)?;
    let access = access.clone();
    // The operator's disabling is news to the owner; a tenant's own key (or
    // portal link) disabling its endpoint is not, and letting it send mail
    // at will would make the owner alert a way to mail any address.
    let alerts = state
        .hooks
        .owner_alerts
        .clone()
        .filter(|_| access.tenant().is_none());
    let updated = state
        .writer
        .write(move |txn| {
            if !owns_endpoint(txn, &access, key) {
                return Ok(None);
            }
            ledger::set_enabled(txn, key, enabled, alerts.as_deref())
        })
        .await?
        .ok_or_else(|| endpoint_not_found(id))?;
    Ok(endpoint_json(StatusCode::OK, &updated))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateInput {
    grace_secs: Option<u64>,
    secret: Option<String>,
}

pub async fn rotate_secret(
    state: Arc<AppState>,
    access: &Access,
    id: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let rotation = secret_rotation(state.config.body_timeout, req).await?;
    let updated = update_endpoint(&state, access, id, rotation).await?;
    Ok(endpoint_json_with_secret(StatusCode::OK, &updated))
}

/// The change `POST /v1/endpoints/{id}/rotate-secret` asks for: a new
/// secret (given or generated), the old one signing on for its grace.
pub(crate) async fn secret_rotation(
    body_timeout: std::time::Duration,
    req: Request<Incoming>,
) -> Result<
    impl FnOnce(EndpointRecord) -> Result<EndpointRecord, ApiError> + Send + 'static,
    ApiError,
> {
    let input: RotateInput = json_body_within(body_timeout, req, true).await?;
    let grace = input.grace_secs.unwrap_or(24 * 3600);
    if grace > MAX_GRACE_SECS {
        return Err(ApiError::invalid_field(
            "grace_secs",
            format!("at most {MAX_GRACE_SECS} seconds"),
        ));
    }
    let new_secret = match input.secret {
        Some(s) => {
            Secret::parse(&s).map_err(|e| ApiError::invalid_field("secret", e.to_string()))?;
            s
        }
        None => Secret::generate().to_string(),
    };
    Ok(move |mut current: EndpointRecord| {
        let now = clock::now_ms();
        let until = now + (grace as i64) * 1000;
        current.old_secrets.retain(|(_, expires)| *expires > now);
        let old = std::mem::replace(&mut current.secret, new_secret);
        if grace > 0 {
            current.old_secrets.insert(0, (old, until));
        }
        // A bounded list: the oldest retired secrets stop signing first.
        current.old_secrets.truncate(4);
        Ok(current)
    })
}

pub async fn test_endpoint(
    state: Arc<AppState>,
    access: &Access,
    id: &str,
) -> Result<Resp, ApiError> {
    let record = load_endpoint(&state, access, id).await?;
    Ok(test_send(
        &state.catalog,
        &state.hooks.client,
        &state.hooks.settings,
        &record,
    )
    .await)
}

/// Sends `record` a test event now, outside its deliveries, and answers
/// what came back.
pub(crate) async fn test_send(
    catalog: &crate::catalog::Catalog,
    client: &crate::webhooks::client::Client,
    settings: &crate::webhooks::settings::WebhookSettings,
    record: &EndpointRecord,
) -> Resp {
    let now = clock::now_ms();
    // The sample of a catalogued type it takes, in the version it would
    // receive, shows a receiver what real deliveries look like. It still
    // says `source: herald`: Herald made it, no client posted it.
    let pins = &record.version_pins;
    let (event_type, data_version, data) = catalog
        .sample_for(record.subscription(), |name, versions| {
            payload::version_for(pins, name, versions)
        })
        .unwrap_or_else(|| {
            let message = json!({"message": "a test event from Herald"});
            ("herald.test".to_owned(), 1, message.to_string())
        });
    let event = crate::store::records::EventRecord {
        id: ids::new_id(),
        event_type,
        tenant: record.tenant.clone(),
        idempotency_key: None,
        occurred_at_ms: now,
        received_at_ms: now,
        data,
        source: EventSource::Herald,
        data_version,
        older_versions: Vec::new(),
    };
    let msg_id = ids::format(EVENT_ID_PREFIX, event.id);
    let body = payload::v1(0, &event, data_version, &event.data);
    let outcome = dispatch::send_with(client, settings, record, &msg_id, body, 1).await;
    json(
        StatusCode::OK,
        json!({
            "event_type": event.event_type,
            "data_version": data_version,
            "status_code": outcome.status,
            "latency_ms": outcome.latency.as_millis() as u64,
            "response": outcome.response_excerpt,
            "error": outcome.error_text(),
            "error_kind": outcome.failure.as_ref().map(|f| f.kind().as_str()),
        })
        .to_string(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SinceInput {
    since: String,
}

pub(crate) fn parse_since(input: &SinceInput) -> Result<i64, ApiError> {
    clock::parse_rfc3339(&input.since)
        .ok_or_else(|| ApiError::invalid_field("since", "not an RFC 3339 timestamp"))
}

/// Re-queues every failed delivery of the endpoint created since T.
pub async fn recover(
    state: Arc<AppState>,
    access: &Access,
    id: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let input: SinceInput = json_body(&state, req, false).await?;
    let since = parse_since(&input)?;
    let key = parse_endpoint_id(id)?;
    let access = access.clone();
    let count = state
        .writer
        .write(move |txn| {
            if !owns_endpoint(txn, &access, key) {
                return Ok(None);
            }
            ledger::recover(txn, key, since, MAX_REQUEUE)
        })
        .await?
        .ok_or_else(|| endpoint_not_found(id))?;
    Ok(recovered_answer(count))
}

/// What a replay to `endpoint` since `since_ms` reads from the log: the
/// endpoint's tenant's events since then, and which of them it takes.
pub(crate) fn replay_pick(
    endpoint: EndpointRecord,
    since_ms: i64,
) -> (
    crate::store::EventFilter,
    impl Fn(&crate::store::records::EventRecord) -> bool + Send + 'static,
) {
    let filter = crate::store::EventFilter {
        since_ms: Some(since_ms),
        tenant: endpoint.tenant.clone(),
        ..Default::default()
    };
    let wanted = move |e: &crate::store::records::EventRecord| {
        names::subscribes(
            endpoint.subscription(),
            &e.event_type,
            e.source,
            e.tenant.as_deref(),
        )
    };
    (filter, wanted)
}

/// Adds the wanted events of a page to `picked`; true once it holds the
/// most one replay makes.
pub(crate) fn pick_replayed(
    picked: &mut Vec<(u64, u128, String)>,
    events: Vec<(u64, crate::store::records::EventRecord)>,
    wanted: &impl Fn(&crate::store::records::EventRecord) -> bool,
) -> bool {
    for (seq, event) in events {
        if wanted(&event) {
            picked.push((seq, event.id, event.event_type));
            if picked.len() == MAX_REQUEUE {
                return true;
            }
        }
    }
    false
}

/// The answer to a replay that made `count` deliveries.
pub(crate) fn replayed_answer(count: usize) -> Resp {
    json(
        StatusCode::ACCEPTED,
        json!({ "replayed": count, "more": count == MAX_REQUEUE }).to_string(),
    )
}

/// The answer to a recover.
pub(crate) fn recovered_answer(count: crate::webhooks::ledger::RecoverCount) -> Resp {
    json(
        StatusCode::ACCEPTED,
        json!({ "requeued": count.requeued, "more": count.examined == MAX_REQUEUE }).to_string(),
    )
}

/// Delivers again every event since T that the endpoint subscribes to,
/// including those that arrived while it was disabled.
pub async fn replay(
    state: Arc<AppState>,
    access: &Access,
    id: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let input: SinceInput = json_body(&state, req, false).await?;
    let since = parse_since(&input)?;
    let record = load_endpoint(&state, access, id).await?;
    let endpoint_id = record.id;
    let (filter, wanted) = replay_pick(record, since);
    let page = read(&state, move |txn| {
        let mut picked = Vec::new();
        let mut after = crate::store::EventCursor::default();
        loop {
            let page = txn.scan_events(&filter, after, 1000)?;
            if pick_replayed(&mut picked, page.events, &wanted) {
                return Ok(picked);
            }
            match page.next {
                Some(next) => after = next,
                None => return Ok(picked),
            }
        }
    })
    .await?;
    let access = access.clone();
    let count = state
        .writer
        .write(move |txn| {
            // The endpoint may have moved to another tenant since it was read.
            if !owns_endpoint(txn, &access, endpoint_id) {
                return Ok(None);
            }
            ledger::replay(txn, endpoint_id, page).map(Some)
        })
        .await?
        .ok_or_else(|| endpoint_not_found(id))?;
    Ok(replayed_answer(count))
}

pub(crate) fn delivery_json(id: u64, record: &DeliveryRecord) -> Value {
    let attempts: Vec<Value> = record
        .attempts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            json!({
                "attempt": i + 1,
                "at": clock::format_rfc3339(a.at_ms),
                "status_code": a.status_code,
                "error": a.error,
                "error_kind": a.failure.map(|f| f.as_str()),
                "latency_ms": a.latency_ms,
                "response": a.response,
                "trigger": if a.manual { "manual" } else { "scheduled" },
            })
        })
        .collect();
    json!({
        "id": format_delivery_id(id),
        "endpoint_id": ids::format(ENDPOINT_ID_PREFIX, record.endpoint_id),
        "event_id": ids::format(EVENT_ID_PREFIX, record.event_id),
        "event_type": record.event_type,
        "status": status_name(record.status),
        "attempts": attempts,
        "next_attempt_at": record.next_attempt_ms.map(clock::format_rfc3339),
        "created_at": clock::format_rfc3339(record.created_at_ms),
    })
}

pub(crate) fn status_name(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Succeeded => "succeeded",
        DeliveryStatus::Failed => "failed",
    }
}

/// A deliveries listing's query: its filter, the id it starts after, and
/// its page size. Dead letters are the failed ones.
pub(crate) fn delivery_query(
    query: Option<&str>,
    dead_letters: bool,
) -> Result<(DeliveryFilter, u64, usize), ApiError> {
    let allowed: &[&str] = if dead_letters {
        &["endpoint", "after", "limit"]
    } else {
        &["endpoint", "event", "status", "after", "limit"]
    };
    let params = query_params(query, allowed)?;
    let mut filter = DeliveryFilter::default();
    if dead_letters {
        filter.status = Some(DeliveryStatus::Failed);
    }
    let mut after = 0u64;
    let mut limit = DEFAULT_PAGE;
    for (name, value) in params {
        let bad = |what: &str| {
            ApiError::bad_request("invalid_query", format!("{name}: {what}"))
                .with_field(name.clone())
        };
        match name.as_str() {
            "endpoint" => {
                filter.endpoint_id = Some(
                    ids::parse(ENDPOINT_ID_PREFIX, &value)
                        .ok_or_else(|| bad("not an endpoint id"))?,
                )
            }
            "event" => {
                filter.event_id = Some(
                    ids::parse(EVENT_ID_PREFIX, &value).ok_or_else(|| bad("not an event id"))?,
                );
            }
            "status" => {
                filter.status = Some(match value.as_str() {
                    "pending" => DeliveryStatus::Pending,
                    "succeeded" => DeliveryStatus::Succeeded,
                    "failed" => DeliveryStatus::Failed,
                    _ => return Err(bad("one of pending, succeeded, failed")),
                })
            }
            "after" => after = parse_delivery_id(&value).ok_or_else(|| bad("not a delivery id"))?,
            "limit" => limit = page_limit(&value, MAX_PAGE)?,
            _ => unreachable!("query_params only yields known names"),
        }
    }
    Ok((filter, after, limit))
}

pub async fn list_deliveries(
    state: Arc<AppState>,
    access: &Access,
    req: Request<Incoming>,
    dead_letters: bool,
) -> Result<Resp, ApiError> {
    let (filter, after, limit) = delivery_query(req.uri().query(), dead_letters)?;
    let tenant = access.tenant.clone();
    let page = read(&state, move |txn| match tenant {
        None => txn.scan_deliveries(&filter, after, limit),
        // A tenant's deliveries are those of its endpoints.
        Some(tenant) => {
            let own: Vec<u128> = txn
                .endpoints()?
                .into_iter()
                .filter(|e| e.tenant.as_deref() == Some(tenant.as_str()))
                .map(|e| e.id)
                .collect();
            txn.scan_deliveries_of_endpoints(&own, &filter, after, limit)
        }
    })
    .await?;
    Ok(deliveries_answer(&page.deliveries, page.next_after))
}

/// A page of deliveries as the listing answers it.
pub(crate) fn deliveries_answer(deliveries: &[(u64, DeliveryRecord)], next: Option<u64>) -> Resp {
    let list: Vec<Value> = deliveries
        .iter()
        .map(|(id, r)| delivery_json(*id, r))
        .collect();
    json(
        StatusCode::OK,
        json!({
            "deliveries": list,
            "next_cursor": next.map(format_delivery_id),
        })
        .to_string(),
    )
}

/// Delivery `key` if `access` sees its endpoint. Those of a deleted
/// endpoint belong to no tenant any more: only unscoped keys see them.
async fn load_delivery(
    state: &Arc<AppState>,
    access: &Access,
    key: u64,
) -> Result<Option<DeliveryRecord>, ApiError> {
    let access = access.clone();
    read(state, move |txn| {
        let Some(delivery) = txn.delivery(key)? else {
            return Ok(None);
        };
        if access.tenant().is_none() {
            return Ok(Some(delivery));
        }
        let tenant = txn.endpoint(delivery.endpoint_id)?.map(|e| e.tenant);
        Ok(tenant
            .is_some_and(|t| access.sees(t.as_deref()))
            .then_some(delivery))
    })
    .await
}

pub async fn get_delivery(
    state: Arc<AppState>,
    access: &Access,
    id: &str,
) -> Result<Resp, ApiError> {
    let key = parse_delivery_id(id).ok_or_else(|| delivery_not_found(id))?;
    let record = load_delivery(&state, access, key)
        .await?
        .ok_or_else(|| delivery_not_found(id))?;
    let endpoint_id = record.endpoint_id;
    let endpoint = read(&state, move |txn| txn.endpoint(endpoint_id)).await?;
    Ok(delivery_detail(key, &record, endpoint.as_ref()))
}

/// One delivery as its own page shows it: each attempt with what it sent.
pub(crate) fn delivery_detail(
    key: u64,
    record: &DeliveryRecord,
    endpoint: Option<&EndpointRecord>,
) -> Resp {
    let mut answer = delivery_json(key, record);
    // One delivery's page shows what each attempt sent; lists stay lean.
    let msg_id = ids::format(EVENT_ID_PREFIX, record.event_id);
    if let Some(attempts) = answer["attempts"].as_array_mut() {
        for (number, (shown, stored)) in (1..).zip(attempts.iter_mut().zip(&record.attempts)) {
            let headers: Vec<Value> =
                dispatch::shown_request_headers(endpoint, &msg_id, stored.at_ms, number)
                    .into_iter()
                    .map(|(name, value)| json!({ "name": name, "value": value }))
                    .collect();
            shown["request_headers"] = Value::Array(headers);
        }
    }
    json(StatusCode::OK, answer.to_string())
}

pub async fn retry_delivery(
    state: Arc<AppState>,
    access: &Access,
    id: &str,
) -> Result<Resp, ApiError> {
    let key = parse_delivery_id(id).ok_or_else(|| delivery_not_found(id))?;
    if load_delivery(&state, access, key).await?.is_none() {
        return Err(delivery_not_found(id));
    }
    match dispatch::run_manual(&state.hooks, key).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(delivery_not_found(id)),
        Err(e) => {
            tracing::error!(error = %e, "manual retry failed");
            return Err(ApiError::unavailable(
                "the attempt's outcome could not be recorded",
            ));
        }
    }
    let record = read(&state, move |txn| txn.delivery(key))
        .await?
        .ok_or_else(|| delivery_not_found(id))?;
    Ok(json(
        StatusCode::ACCEPTED,
        delivery_json(key, &record).to_string(),
    ))
}

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// Counts by outcome and latency percentiles over the last hour and day,
/// counted by the minute, and how many deliveries are in each status.
pub async fn endpoint_stats(
    state: Arc<AppState>,
    access: &Access,
    id: &str,
) -> Result<Resp, ApiError> {
    let key = load_endpoint(&state, access, id).await?.id;
    let now = clock::now_ms();
    let day_from = stats_day_from(now);
    let (tallies, counts) = read(&state, move |txn| {
        Ok((
            txn.endpoint_attempt_tallies(key, day_from)?,
            txn.endpoint_delivery_counts(key)?,
        ))
    })
    .await?;
    Ok(stats_answer(&tallies, counts, now))
}

/// The first minute an endpoint's stats at `now_ms` count.
pub(crate) fn stats_day_from(now_ms: i64) -> i64 {
    (now_ms - 24 * HOUR_MS).div_euclid(MINUTE_MS)
}

/// An endpoint's stats from its minutes' tallies (from `stats_day_from`
/// on) and its deliveries' counts.
pub(crate) fn stats_answer(
    tallies: &[(i64, AttemptTally)],
    counts: crate::store::webhooks::DeliveryCounts,
    now: i64,
) -> Resp {
    let day_from = stats_day_from(now);
    let hour_from = (now - HOUR_MS).div_euclid(MINUTE_MS);
    let window = |from_minute: i64| {
        let mut sum = AttemptTally::default();
        for (_, tally) in tallies.iter().filter(|(m, _)| *m >= from_minute) {
            sum.merge(tally);
        }
        json!({
            "attempts": sum.attempts,
            "succeeded": sum.succeeded,
            "failed": sum.failed,
            "network_errors": sum.network_errors,
            "latency_ms": {
                "p50": sum.latency_quantile(0.50),
                "p95": sum.latency_quantile(0.95),
                "p99": sum.latency_quantile(0.99),
            },
        })
    };
    json(
        StatusCode::OK,
        json!({
            "last_hour": window(hour_from),
            "last_day": window(day_from),
            "deliveries": {
                "pending": counts.pending,
                "succeeded": counts.succeeded,
                "failed": counts.failed,
            },
            "sampled": false,
        })
        .to_string(),
    )
}
