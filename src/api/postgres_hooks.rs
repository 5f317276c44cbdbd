//! `/v1/endpoints` and `/v1/deliveries` on a node on PostgreSQL: the same
//! checks and answers as on redb (`api::webhooks`), over tables every node
//! shares.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use super::access::Access;
use super::error::ApiError;
use super::http::{json, Resp};
use super::postgres_state::PostgresApp;
use super::webhooks::{
    deliveries_answer, delivery_detail, delivery_json, delivery_not_found, delivery_query,
    endpoint_json, endpoint_json_with_secret, endpoint_not_found, endpoints_tenant,
    json_body_within, parse_endpoint_id, parse_since, pick_replayed, recovered_answer, replay_pick,
    replayed_answer, scoped_tenant_field, secret_rotation, stats_answer, stats_day_from, test_send,
    SinceInput, MAX_REQUEUE,
};
use crate::clock;
use crate::pg::endpoint_switch;
use crate::pg::PgError;
use crate::store::records::{DeliveryRecord, EndpointRecord};
use crate::store::EventCursor;
use crate::webhooks::endpoint::{self, EndpointInput};
use crate::webhooks::ledger::parse_delivery_id;

fn failed(e: PgError) -> ApiError {
    tracing::error!(error = %e, "webhook query failed");
    ApiError::unavailable("the query failed; see the server log")
}

pub async fn create_endpoint(
    app: &PostgresApp,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let mut input: EndpointInput = json_body_within(app.config.body_timeout, req, false).await?;
    if input.url.is_none() {
        return Err(ApiError::bad_request("invalid_body", "missing field `url`").with_field("url"));
    }
    input.tenant = match scoped_tenant_field(access, input.tenant.take())? {
        None => access.tenant.clone().map(Some),
        named => named,
    };
    let record = endpoint::apply(
        endpoint::new_record(clock::now_ms()),
        input,
        app.config.webhooks.require_https,
    )?;
    app.hooks.put_endpoint(&record).await.map_err(failed)?;
    Ok(endpoint_json_with_secret(StatusCode::CREATED, &record))
}

pub async fn list_endpoints(
    app: &PostgresApp,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let tenant = endpoints_tenant(access, req.uri().query())?;
    let endpoints = app
        .hooks
        .endpoints(tenant.as_deref())
        .await
        .map_err(failed)?;
    let list: Vec<Value> = endpoints.iter().map(endpoint::to_json).collect();
    Ok(json(
        StatusCode::OK,
        json!({ "endpoints": list }).to_string(),
    ))
}

async fn load_endpoint(
    app: &PostgresApp,
    access: &Access,
    id: &str,
) -> Result<EndpointRecord, ApiError> {
    let key = parse_endpoint_id(id)?;
    app.hooks
        .endpoint(key)
        .await
        .map_err(failed)?
        .filter(|e| access.sees(e.tenant.as_deref()))
        .ok_or_else(|| endpoint_not_found(id))
}

pub async fn get_endpoint(app: &PostgresApp, access: &Access, id: &str) -> Result<Resp, ApiError> {
    Ok(endpoint_json(
        StatusCode::OK,
        &load_endpoint(app, access, id).await?,
    ))
}

pub async fn get_secret(app: &PostgresApp, access: &Access, id: &str) -> Result<Resp, ApiError> {
    let record = load_endpoint(app, access, id).await?;
    Ok(json(
        StatusCode::OK,
        endpoint::secret_json(&record).to_string(),
    ))
}

async fn update_endpoint(
    app: &PostgresApp,
    access: &Access,
    id: &str,
    change: impl FnOnce(EndpointRecord) -> Result<EndpointRecord, ApiError>,
) -> Result<EndpointRecord, ApiError> {
    let key = parse_endpoint_id(id)?;
    app.hooks
        .update_endpoint(key, |e| access.sees(e.tenant.as_deref()), change)
        .await
        .map_err(failed)?
        .ok_or_else(|| endpoint_not_found(id))?
}

pub async fn patch_endpoint(
    app: &PostgresApp,
    access: &Access,
    id: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let mut input: EndpointInput = json_body_within(app.config.body_timeout, req, false).await?;
    input.tenant = scoped_tenant_field(access, input.tenant.take())?;
    let require_https = app.config.webhooks.require_https;
    let updated = update_endpoint(app, access, id, move |current| {
        if input.tenant.as_ref().is_some_and(|t| *t != current.tenant) {
            return Err(ApiError::invalid_field(
                "tenant",
                "an endpoint's tenant is fixed when it is created; create a new endpoint instead",
            ));
        }
        let mut updated = endpoint::apply(current, input, require_https).map_err(ApiError::from)?;
        updated.updated_at_ms = clock::now_ms();
        Ok(updated)
    })
    .await?;
    Ok(endpoint_json(StatusCode::OK, &updated))
}

pub async fn set_enabled(
    app: &PostgresApp,
    access: &Access,
    id: &str,
    enabled: bool,
) -> Result<Resp, ApiError> {
    let key = parse_endpoint_id(id)?;
    // As on redb: only the operator's disabling is news to the owner.
    let alerts = app
        .dispatcher
        .owner_alerts()
        .filter(|_| access.tenant().is_none());
    let visible = |e: &EndpointRecord| access.sees(e.tenant.as_deref());
    let alerts = alerts.map(|a| &**a);
    let updated = endpoint_switch::set_enabled(&app.pool, key, visible, enabled, alerts)
        .await
        .map_err(failed)?
        .ok_or_else(|| endpoint_not_found(id))?;
    Ok(endpoint_json(StatusCode::OK, &updated))
}

pub async fn test_endpoint(app: &PostgresApp, access: &Access, id: &str) -> Result<Resp, ApiError> {
    let record = load_endpoint(app, access, id).await?;
    Ok(test_send(
        &app.events.catalog,
        app.dispatcher.client(),
        app.dispatcher.settings(),
        &record,
    )
    .await)
}

pub async fn rotate_secret(
    app: &PostgresApp,
    access: &Access,
    id: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let rotation = secret_rotation(app.config.body_timeout, req).await?;
    let updated = update_endpoint(app, access, id, rotation).await?;
    Ok(endpoint_json_with_secret(StatusCode::OK, &updated))
}

pub async fn delete_endpoint(
    app: &PostgresApp,
    access: &Access,
    id: &str,
) -> Result<Resp, ApiError> {
    let record = load_endpoint(app, access, id).await?;
    if !app.hooks.delete_endpoint(record.id).await.map_err(failed)? {
        return Err(endpoint_not_found(id));
    }
    Ok(json(StatusCode::NO_CONTENT, ""))
}

pub async fn list_deliveries(
    app: &PostgresApp,
    access: &Access,
    req: Request<Incoming>,
    dead_letters: bool,
) -> Result<Resp, ApiError> {
    let (filter, after, limit) = delivery_query(req.uri().query(), dead_letters)?;
    let (page, next) = app
        .hooks
        .deliveries(&filter, access.tenant(), after, limit)
        .await
        .map_err(failed)?;
    Ok(deliveries_answer(&page, next))
}

pub async fn retry_delivery(
    app: &PostgresApp,
    access: &Access,
    id: &str,
) -> Result<Resp, ApiError> {
    let (key, _, _) = load_delivery(app, access, id).await?;
    let retried = app
        .dispatcher
        .retry_now(key)
        .await
        .map_err(failed)?
        .ok_or_else(|| delivery_not_found(id))?;
    Ok(json(
        StatusCode::ACCEPTED,
        delivery_json(key, &retried).to_string(),
    ))
}

pub async fn get_delivery(app: &PostgresApp, access: &Access, id: &str) -> Result<Resp, ApiError> {
    let (key, record, endpoint) = load_delivery(app, access, id).await?;
    Ok(delivery_detail(key, &record, endpoint.as_ref()))
}

/// Delivery `id` with its endpoint, if `access` sees it. A deleted
/// endpoint's deliveries belong to no tenant any more: only unscoped keys
/// see them.
async fn load_delivery(
    app: &PostgresApp,
    access: &Access,
    id: &str,
) -> Result<(u64, DeliveryRecord, Option<EndpointRecord>), ApiError> {
    let key = parse_delivery_id(id).ok_or_else(|| delivery_not_found(id))?;
    let record = app
        .hooks
        .delivery(key)
        .await
        .map_err(failed)?
        .ok_or_else(|| delivery_not_found(id))?;
    let endpoint = app
        .hooks
        .endpoint(record.endpoint_id)
        .await
        .map_err(failed)?;
    let visible = access.tenant().is_none()
        || endpoint
            .as_ref()
            .is_some_and(|e| access.sees(e.tenant.as_deref()));
    if !visible {
        return Err(delivery_not_found(id));
    }
    Ok((key, record, endpoint))
}

/// The `{"since": T}` of a recover or replay, and the endpoint it names.
async fn since_and_endpoint(
    app: &PostgresApp,
    access: &Access,
    id: &str,
    req: Request<Incoming>,
) -> Result<(i64, EndpointRecord), ApiError> {
    let input: SinceInput = json_body_within(app.config.body_timeout, req, false).await?;
    let since = parse_since(&input)?;
    Ok((since, load_endpoint(app, access, id).await?))
}

/// Re-queues every failed delivery of the endpoint created since T.
pub async fn recover(
    app: &PostgresApp,
    access: &Access,
    id: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let (since, endpoint) = since_and_endpoint(app, access, id, req).await?;
    // The endpoint may have moved to another tenant since it was read.
    let access = access.clone();
    let count = app
        .hooks
        .recover(
            endpoint.id,
            move |e| access.sees(e.tenant.as_deref()),
            since,
            MAX_REQUEUE,
            clock::now_ms(),
        )
        .await
        .map_err(failed)?
        .ok_or_else(|| endpoint_not_found(id))?;
    Ok(recovered_answer(count))
}

/// Delivers again every event since T that the endpoint subscribes to,
/// including those that arrived while it was disabled.
pub async fn replay(
    app: &PostgresApp,
    access: &Access,
    id: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let (since, endpoint) = since_and_endpoint(app, access, id, req).await?;
    let endpoint_id = endpoint.id;
    let (filter, wanted) = replay_pick(endpoint, since);
    let mut picked = Vec::new();
    let mut after = EventCursor::default();
    loop {
        let page = app.log.scan(&filter, after, 1000).await.map_err(failed)?;
        if pick_replayed(&mut picked, page.events, &wanted) {
            break;
        }
        match page.next {
            Some(next) => after = next,
            None => break,
        }
    }
    // The endpoint may have moved to another tenant since it was read.
    let access = access.clone();
    let count = app
        .hooks
        .replay(
            endpoint_id,
            move |e| access.sees(e.tenant.as_deref()),
            picked,
            clock::now_ms(),
        )
        .await
        .map_err(failed)?
        .ok_or_else(|| endpoint_not_found(id))?;
    Ok(replayed_answer(count))
}

/// Counts by outcome and latency percentiles over the last hour and day,
/// and how many deliveries are in each status.
pub async fn endpoint_stats(
    app: &PostgresApp,
    access: &Access,
    id: &str,
) -> Result<Resp, ApiError> {
    let key = load_endpoint(app, access, id).await?.id;
    let now = clock::now_ms();
    let (tallies, counts) = app
        .hooks
        .stats(key, stats_day_from(now))
        .await
        .map_err(failed)?;
    Ok(stats_answer(&tallies, counts, now))
}
