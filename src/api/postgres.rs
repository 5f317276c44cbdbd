//! The API of a node on PostgreSQL: the event log's routes, webhook
//! endpoints and deliveries, mail and suppressions, tracking, the
//! dashboard and the health probes, with the same keys, sessions, answers
//! and errors as on redb. Routes whose state has not moved to PostgreSQL
//! yet answer 501, after the same key check as everywhere, so a keyless
//! caller still learns nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use tokio::net::TcpListener;

use super::error::ApiError;
use super::events;
use super::http::{json, Resp};
use super::mail;
use super::metrics;
use super::portal;
use super::postgres_hooks as hooks;
pub use super::postgres_state::PostgresApp;
use super::routes::{self, RouteId};
use super::tracking;
use super::{authorize, caller, dashboard, keyed, listener, not_found, overview, respond, Surface};
use crate::tracking::segment::Call;

/// Serves the private API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Arc<PostgresApp>,
    shutdown: impl Future<Output = ()>,
    surface: Surface,
) {
    let limits = listener::Limits {
        max_connections: app.config.max_connections,
        max_idle: app.config.max_idle_connections,
        per_peer: app.config.max_connections_per_peer,
        header_timeout: app.config.header_timeout,
        shutdown_grace: app.config.shutdown_grace,
    };
    listener::serve(listener, limits, shutdown, move |req| {
        let app = app.clone();
        async move {
            let started = Instant::now();
            let mut slot = metrics::RequestSlot::unmatched(req.method());
            let resp = respond(route(&app, req, surface, &mut slot).await);
            slot.observe(resp.status(), started.elapsed());
            resp
        }
    })
    .await;
}

/// One portal webhook route on PostgreSQL.
async fn portal_webhooks(
    app: &PostgresApp,
    call: portal::WebhookCall<'_>,
) -> Result<Resp, ApiError> {
    portal::run_webhook_call!(hooks, app, call)
}

async fn route(
    app: &PostgresApp,
    req: Request<Incoming>,
    surface: Surface,
    slot: &mut metrics::RequestSlot,
) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_owned();
    let (route, params) = match routes::resolve(surface, req.method(), &path) {
        routes::Resolved::Found {
            route,
            index,
            params,
        } => {
            *slot = metrics::RequestSlot::row(index);
            (route, params)
        }
        routes::Resolved::MethodNotAllowed { allow, auth } => {
            authorize(&app.dashboard, req.method(), req.headers(), auth).await?;
            return Err(ApiError::method_not_allowed_list(allow));
        }
        routes::Resolved::NotFound if path.starts_with("/v1/") && surface == Surface::Private => {
            caller(&app.dashboard, req.headers()).await?;
            return Err(not_found(&path));
        }
        routes::Resolved::NotFound => return Err(not_found(&path)),
    };
    let access = authorize(&app.dashboard, req.method(), req.headers(), route.auth).await?;
    let param = params.first().copied().unwrap_or_default();
    match route.id {
        RouteId::EventsCreate => events::create(&app.events, keyed(&access)?, req).await,
        RouteId::EventsBatch => events::create_batch(&app.events, keyed(&access)?, req).await,
        RouteId::EventsList => events::list(&app.events, keyed(&access)?, req).await,
        RouteId::EventGet => events::get(&app.events, keyed(&access)?, param).await,
        RouteId::EndpointsCreate => hooks::create_endpoint(app, keyed(&access)?, req).await,
        RouteId::EndpointsList => hooks::list_endpoints(app, keyed(&access)?, req).await,
        RouteId::EndpointGet => hooks::get_endpoint(app, keyed(&access)?, param).await,
        RouteId::EndpointPatch => hooks::patch_endpoint(app, keyed(&access)?, param, req).await,
        RouteId::EndpointDelete => hooks::delete_endpoint(app, keyed(&access)?, param).await,
        RouteId::EndpointSecret => hooks::get_secret(app, keyed(&access)?, param).await,
        RouteId::EndpointTest => hooks::test_endpoint(app, keyed(&access)?, param).await,
        RouteId::EndpointRotateSecret => {
            hooks::rotate_secret(app, keyed(&access)?, param, req).await
        }
        RouteId::EndpointEnable => hooks::set_enabled(app, keyed(&access)?, param, true).await,
        RouteId::EndpointDisable => hooks::set_enabled(app, keyed(&access)?, param, false).await,
        RouteId::EndpointStats => hooks::endpoint_stats(app, keyed(&access)?, param).await,
        RouteId::EndpointRecover => hooks::recover(app, keyed(&access)?, param, req).await,
        RouteId::EndpointReplay => hooks::replay(app, keyed(&access)?, param, req).await,
        RouteId::DeliveriesList => hooks::list_deliveries(app, keyed(&access)?, req, false).await,
        RouteId::DeadLettersList => hooks::list_deliveries(app, keyed(&access)?, req, true).await,
        RouteId::DeliveryGet => hooks::get_delivery(app, keyed(&access)?, param).await,
        RouteId::DeliveryRetry => hooks::retry_delivery(app, keyed(&access)?, param).await,
        RouteId::EmailsSend => mail::send(&app.mail, keyed(&access)?, req).await,
        RouteId::EmailsList => mail::list(&app.mail, keyed(&access)?, req).await,
        RouteId::EmailGet => mail::get(&app.mail, keyed(&access)?, param).await,
        RouteId::SuppressionsList => mail::list_suppressions(&app.mail, keyed(&access)?, req).await,
        RouteId::SuppressionPut => {
            mail::put_suppression(&app.mail, keyed(&access)?, param, req).await
        }
        RouteId::SuppressionDelete => {
            mail::delete_suppression(&app.mail, keyed(&access)?, param, req).await
        }
        RouteId::Metrics => super::metrics::scrape_postgres(app, req).await,
        RouteId::OpenApi => super::openapi::serve(req),
        RouteId::AdminStorage => super::admin::storage_postgres(app, req).await,
        RouteId::AdminOverview => {
            overview::overview_postgres(&app.pool, &app.config, &app.history, req).await
        }
        RouteId::DashboardPage => dashboard::page(&app.dashboard, req).await,
        RouteId::DashboardAsset => dashboard::asset(param, &req),
        RouteId::DashboardSignIn => dashboard::sign_in(&app.dashboard, req).await,
        RouteId::DashboardSignOut => dashboard::sign_out(&app.dashboard, req).await,
        RouteId::EventTypesList => super::catalog::list(&app.catalog_api, req).await,
        RouteId::EventTypeGet => super::catalog::get(&app.catalog_api, param).await,
        RouteId::EventTypePut => super::catalog::put(&app.catalog_api, param, req).await,
        RouteId::EventTypeDelete => super::catalog::delete(&app.catalog_api, param).await,
        RouteId::KeysCreate => super::keys::create(&app.keys_api, req).await,
        RouteId::KeysList => super::keys::list(&app.keys_api, req).await,
        RouteId::KeyRevoke => super::keys::revoke(&app.keys_api, param).await,
        RouteId::StreamsList => super::streams::list(&app.mail).await,
        RouteId::StreamHealth => super::streams::health(&app.mail, param).await,
        RouteId::StreamPause => super::streams::set_paused(&app.mail, param, true).await,
        RouteId::StreamResume => super::streams::set_paused(&app.mail, param, false).await,
        RouteId::FeedbackList => super::feedback::list(&app.mail, keyed(&access)?, req).await,
        RouteId::FeedbackReceive => super::feedback::receive(&app.mail, param, req).await,
        RouteId::UnsubscribePage | RouteId::UnsubscribeOneClick => {
            super::public::unsubscribe(&app.mail, param, req).await
        }
        RouteId::SegmentBatch => tracking::ingest(&app.tracking, None, req).await,
        RouteId::SegmentCall => {
            let name = path.trim_start_matches("/v1/");
            tracking::ingest(&app.tracking, Call::parse(name), req).await
        }
        RouteId::UserGet => tracking::user(&app.tracking, keyed(&access)?, param, req).await,
        RouteId::UserEvents => {
            tracking::user_events(&app.tracking, keyed(&access)?, param, req).await
        }
        RouteId::EventStats => tracking::stats(&app.tracking, keyed(&access)?, req).await,
        RouteId::Funnel => tracking::funnel(&app.tracking, keyed(&access)?, req).await,
        RouteId::Attribution => tracking::attribution(&app.tracking, keyed(&access)?, req).await,
        RouteId::EventsExport => tracking::export(&app.tracking, keyed(&access)?, req).await,
        RouteId::PortalLinksCreate => {
            let timeout = app.config.body_timeout;
            portal::create_link(&app.portal_links, &app.public_url, timeout, req).await
        }
        RouteId::PortalPage => Ok(portal::page(&app.portal_links, param)),
        RouteId::PortalScript => Ok(portal::script()),
        RouteId::PortalStyle => Ok(portal::style()),
        RouteId::PortalSession
        | RouteId::PortalEndpointsList
        | RouteId::PortalEndpointsCreate
        | RouteId::PortalEndpointGet
        | RouteId::PortalEndpointPatch
        | RouteId::PortalEndpointStats
        | RouteId::PortalEndpointSecret
        | RouteId::PortalEndpointRotateSecret
        | RouteId::PortalEndpointTest
        | RouteId::PortalEndpointEnable
        | RouteId::PortalEndpointDisable
        | RouteId::PortalDeliveriesList
        | RouteId::PortalDeliveryGet
        | RouteId::PortalDeliveryRetry
        | RouteId::PortalEventTypes => Ok(portal::api(
            &app.portal_links,
            &app.catalog_api,
            route.id,
            &params,
            req,
            |call| portal_webhooks(app, call),
        )
        .await),
        RouteId::Healthz => Ok(super::admin::healthz()),
        RouteId::Readyz => Ok(if app.log.is_ready().await {
            json(StatusCode::OK, r#"{"status":"ready"}"#)
        } else {
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"unavailable","error":{"code":"not_ready","message":"the database does not answer"}}"#,
            )
        }),
        _ => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_on_this_backend",
            format!(
                "{} {} is not served with store.backend = \"postgres\" in this release: \
                 the event log, the catalog, tracking, webhooks, mail, suppressions, ESP \
                 feedback, streams, API keys, the customer portal, the dashboard, metrics, \
                 storage and the health probes are; file backups need store.backend = \"redb\"",
                route.method, route.path
            ),
        )),
    }
}
