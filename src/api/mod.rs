//! The private HTTP API: routing, and the state handlers share; the
//! accept loop is `listener`.

pub mod access;
mod admin;
pub mod auth;
pub mod catalog;
pub mod dashboard;
pub mod error;
pub mod events;
mod feedback;
pub mod http;
pub mod keys;
pub(crate) mod listener;
pub mod mail;
mod metrics;
mod openapi;
pub mod overview;
mod portal;
pub mod postgres;
mod postgres_hooks;
mod postgres_state;
mod public;
pub mod routes;
pub mod sessions;
mod streams;
pub mod tracking;
mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use auth::ApiKeys;
use error::ApiError;
use http::{error_response, Resp};
use routes::{Auth, RouteId};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::mail::dispatch::MailContext;
use crate::portal_link::PortalKey;
use crate::store::{ReadTxn, Store, StoreError, Writer};
use crate::tracking::segment::Call;
use crate::webhooks::dispatch::AttemptContext;

pub struct AppState {
    pub store: Store,
    pub writer: Writer,
    pub config: Arc<Config>,
    pub keys: Arc<ApiKeys>,
    /// What the key routes change the stored keys through.
    pub keys_api: keys::KeysApi,
    /// One backup at a time: each needs as much free disk as the live file.
    pub backup_slot: Arc<Semaphore>,
    /// For attempts the API makes itself (tests, manual retries).
    pub hooks: Arc<AttemptContext>,
    pub mail: Arc<MailContext>,
    /// The event catalog, compiled: what ingest checks events against.
    pub catalog: Arc<Catalog>,
    /// What the catalog routes change it through.
    pub catalog_api: catalog::CatalogApi,
    /// Signs and checks customer portal links; its secret is kept in the
    /// file, so links outlive restarts and restores.
    pub portal_links: PortalKey,
    /// The dashboard's routes and its sessions (in memory).
    pub dashboard: dashboard::DashboardApi,
    /// The file's size and the queues' depth as the dashboard saw them.
    pub history: overview::History,
    /// What the event routes append to and read from.
    pub events: events::EventApi,
    /// What the mail routes queue through and read from.
    pub mail_api: mail::MailApi,
    /// What the tracking routes append to and read from.
    pub tracking: tracking::TrackingApi,
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The whole API, behind API keys.
    Private,
    /// Only what must face the internet (unsubscribe links, ESP webhooks).
    Public,
}

impl AppState {
    /// The state of a daemon serving `store`, with the API keys stored in it.
    pub fn new(
        store: Store,
        writer: Writer,
        config: Arc<Config>,
        hooks: Arc<AttemptContext>,
        mail: Arc<MailContext>,
    ) -> Result<Self, StoreError> {
        let stored_keys = store.read()?.api_keys()?;
        let catalog = Arc::new(Catalog::load(store.read()?.event_types()?));
        let portal_links = PortalKey::new(store.persistent_secret("portal")?);
        let events = events::EventApi {
            log: events::EventLog::Embedded {
                store: store.clone(),
                writer: writer.clone(),
            },
            limits: config.limits,
            body_timeout: config.body_timeout,
            catalog: catalog.clone(),
        };
        let mail_api = mail::MailApi {
            store: mail::MailStore::Embedded {
                store: store.clone(),
                writer: writer.clone(),
            },
            settings: mail.sending.settings.clone(),
            tokens: mail.sending.tokens.clone(),
            // The configuration check already read the CA file the same way.
            sns: mail::sns_fetcher(&config.feedback),
            feedback: config.feedback.clone(),
            body_timeout: config.body_timeout,
            queued: None,
        };
        let keys = Arc::new(ApiKeys::new(&config.keys, &stored_keys));
        let keys_api = keys::KeysApi {
            store: keys::KeyStore::Embedded {
                store: store.clone(),
                writer: writer.clone(),
            },
            live: keys.clone(),
            body_timeout: config.body_timeout,
        };
        let catalog_api = catalog::CatalogApi {
            store: catalog::CatalogStore::Embedded {
                store: store.clone(),
                writer: writer.clone(),
            },
            live: catalog.clone(),
            body_timeout: config.body_timeout,
        };
        let tracking = tracking::TrackingApi {
            store: tracking::TrackingStore::Embedded {
                store: store.clone(),
                writer: writer.clone(),
            },
            settings: config.tracking.clone(),
            body_timeout: config.body_timeout,
        };
        let dashboard = dashboard::DashboardApi {
            keys: keys.clone(),
            sessions: sessions::Sessions::in_memory(config.admin_session_ttl),
            body_timeout: config.body_timeout,
        };
        Ok(AppState {
            catalog_api,
            events,
            mail_api,
            tracking,
            catalog,
            portal_links,
            hooks,
            mail,
            keys,
            keys_api,
            store,
            writer,
            backup_slot: Arc::new(Semaphore::new(1)),
            dashboard,
            history: overview::History::default(),
            config,
        })
    }
}

/// Runs a query on a read snapshot off the async threads.
pub(crate) async fn read<T, F>(state: &Arc<AppState>, query: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(ReadTxn) -> Result<T, StoreError> + Send + 'static,
{
    read_store(&state.store, query).await
}

/// As `read`, on any store.
pub(crate) async fn read_store<T, F>(store: &Store, query: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(ReadTxn) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || query(store.read()?))
        .await
        .map_err(|_| ApiError::unavailable("the query was interrupted"))?
        .map_err(|e| {
            tracing::error!(error = %e, "query failed");
            ApiError::unavailable("the query failed; see the server log")
        })
}

/// Serves `surface` on `listener` until `shutdown` resolves (see
/// `listener::serve`).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
    surface: Surface,
) {
    let limits = listener::Limits {
        max_connections: state.config.max_connections,
        max_idle: state.config.max_idle_connections,
        per_peer: state.config.max_connections_per_peer,
        header_timeout: state.config.header_timeout,
        shutdown_grace: state.config.shutdown_grace,
    };
    listener::serve(listener, limits, shutdown, move |req| {
        handle(state.clone(), req, surface)
    })
    .await;
}

async fn handle(state: Arc<AppState>, req: Request<Incoming>, surface: Surface) -> Resp {
    let started = Instant::now();
    let mut slot = metrics::RequestSlot::unmatched(req.method());
    let resp = respond(route(state, req, surface, &mut slot).await);
    slot.observe(resp.status(), started.elapsed());
    resp
}

/// A handler's outcome as the client gets it; server-side failures are logged.
pub(crate) fn respond(outcome: Result<Resp, ApiError>) -> Resp {
    match outcome {
        Ok(resp) => resp,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(code = e.code, message = %e.message, "request failed");
            }
            error_response(&e)
        }
    }
}

/// Whom a request speaks for: its bearer key, or else its dashboard
/// session cookie, which counts only with the session's CSRF header.
/// Both backends' routers check keys through this.
pub(crate) async fn caller(
    dashboard: &dashboard::DashboardApi,
    headers: &hyper::HeaderMap,
) -> Result<access::Access, ApiError> {
    let keys = &dashboard.keys;
    if !keys.is_open() && http::bearer(headers).is_none() {
        if let Some(token) = sessions::cookie(headers) {
            let key = dashboard.sessions.verify(token, headers).await?;
            // A revoked key ends its sessions with it.
            return keys.grant_of_hash(&key).ok_or_else(ApiError::unauthorized);
        }
    }
    keys.check(headers)
}

/// What `auth` lets the caller do (see `caller`); `None` for routes with
/// their own scheme, which are not asked for a key at all.
pub(crate) async fn authorize(
    dashboard: &dashboard::DashboardApi,
    method: &hyper::Method,
    headers: &hyper::HeaderMap,
    auth: Auth,
) -> Result<Option<access::Access>, ApiError> {
    if auth == Auth::Own {
        return Ok(None);
    }
    let access = caller(dashboard, headers).await?;
    match auth {
        Auth::Own => {}
        Auth::ByMethod => access.require(access::role_for_method(method))?,
        Auth::Write => access.require(access::Role::Write)?,
        Auth::Untenanted => {
            access.require(access::role_for_method(method))?;
            if let Some(own) = access.tenant() {
                return Err(ApiError::forbidden(format!(
                    "this key is confined to tenant `{own}`; streams are shared by every tenant"
                )));
            }
        }
        Auth::UnscopedAdmin => access.require_unscoped_admin()?,
        Auth::SharedByTenants => {
            let role = access::role_for_method(method);
            access.require(role)?;
            if let Some(own) = access.tenant().filter(|_| role != access::Role::Read) {
                return Err(ApiError::forbidden(format!(
                    "this key is confined to tenant `{own}`; event types are shared by every \
                     tenant, so only a key without a tenant may change them"
                )));
            }
        }
    }
    Ok(Some(access))
}

/// Sets `slot` to the row that serves the request, if one does.
async fn route(
    state: Arc<AppState>,
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
        // Whoever may not use a route does not learn which methods it has,
        // and a keyless caller learns nothing of the API's paths.
        routes::Resolved::MethodNotAllowed { allow, auth } => {
            authorize(&state.dashboard, req.method(), req.headers(), auth).await?;
            return Err(ApiError::method_not_allowed_list(allow));
        }
        routes::Resolved::NotFound if path.starts_with("/v1/") && surface == Surface::Private => {
            caller(&state.dashboard, req.headers()).await?;
            return Err(not_found(&path));
        }
        routes::Resolved::NotFound => return Err(not_found(&path)),
    };
    let access = authorize(&state.dashboard, req.method(), req.headers(), route.auth).await?;
    dispatch(state, access, route.id, &params, req).await
}

/// Runs the row's handler. `access` is the key's grant (`None` for rows
/// that authenticate by their own scheme); `params` are the values of the
/// template's `{…}` segments, in order. Every `{id}`-taking route loads
/// its object with a tenant check (`webhooks::load_endpoint`, …) that
/// answers 404 for another tenant's object exactly as for a missing one.
async fn dispatch(
    state: Arc<AppState>,
    access: Option<access::Access>,
    id: RouteId,
    params: &[&str],
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    use RouteId::*;
    let param = params.first().copied().unwrap_or_default();
    match id {
        EventsCreate => events::create(&state.events, keyed(&access)?, req).await,
        EventsList => events::list(&state.events, keyed(&access)?, req).await,
        EventsBatch => events::create_batch(&state.events, keyed(&access)?, req).await,
        EventsExport => tracking::export(&state.tracking, keyed(&access)?, req).await,
        EventGet => events::get(&state.events, keyed(&access)?, param).await,
        UserGet => tracking::user(&state.tracking, keyed(&access)?, param, req).await,
        UserEvents => tracking::user_events(&state.tracking, keyed(&access)?, param, req).await,
        EventStats => tracking::stats(&state.tracking, keyed(&access)?, req).await,
        Funnel => tracking::funnel(&state.tracking, keyed(&access)?, req).await,
        Attribution => tracking::attribution(&state.tracking, keyed(&access)?, req).await,
        EndpointsCreate => webhooks::create_endpoint(state, keyed(&access)?, req).await,
        EndpointsList => webhooks::list_endpoints(state, keyed(&access)?, req).await,
        EndpointGet => webhooks::get_endpoint(state, keyed(&access)?, param).await,
        EndpointPatch => webhooks::patch_endpoint(state, keyed(&access)?, param, req).await,
        EndpointDelete => webhooks::delete_endpoint(state, keyed(&access)?, param).await,
        EndpointStats => webhooks::endpoint_stats(state, keyed(&access)?, param).await,
        EndpointSecret => webhooks::get_secret(state, keyed(&access)?, param).await,
        EndpointRotateSecret => webhooks::rotate_secret(state, keyed(&access)?, param, req).await,
        EndpointTest => webhooks::test_endpoint(state, keyed(&access)?, param).await,
        EndpointEnable => webhooks::set_enabled(state, keyed(&access)?, param, true).await,
        EndpointDisable => webhooks::set_enabled(state, keyed(&access)?, param, false).await,
        EndpointRecover => webhooks::recover(state, keyed(&access)?, param, req).await,
        EndpointReplay => webhooks::replay(state, keyed(&access)?, param, req).await,
        DeliveriesList => webhooks::list_deliveries(state, keyed(&access)?, req, false).await,
        DeadLettersList => webhooks::list_deliveries(state, keyed(&access)?, req, true).await,
        DeliveryGet => webhooks::get_delivery(state, keyed(&access)?, param).await,
        DeliveryRetry => webhooks::retry_delivery(state, keyed(&access)?, param).await,
        EmailsSend => mail::send(&state.mail_api, keyed(&access)?, req).await,
        EmailsList => mail::list(&state.mail_api, keyed(&access)?, req).await,
        EmailGet => mail::get(&state.mail_api, keyed(&access)?, param).await,
        SuppressionsList => mail::list_suppressions(&state.mail_api, keyed(&access)?, req).await,
        SuppressionPut => mail::put_suppression(&state.mail_api, keyed(&access)?, param, req).await,
        SuppressionDelete => {
            mail::delete_suppression(&state.mail_api, keyed(&access)?, param, req).await
        }
        FeedbackList => feedback::list(&state.mail_api, keyed(&access)?, req).await,
        StreamsList => streams::list(&state.mail_api).await,
        StreamHealth => streams::health(&state.mail_api, param).await,
        StreamPause => streams::set_paused(&state.mail_api, param, true).await,
        StreamResume => streams::set_paused(&state.mail_api, param, false).await,
        AdminBackup => admin::backup(state).await,
        AdminStorage => admin::storage(state, req).await,
        KeysCreate => keys::create(&state.keys_api, req).await,
        KeysList => keys::list(&state.keys_api, req).await,
        KeyRevoke => keys::revoke(&state.keys_api, param).await,
        PortalLinksCreate => {
            let base_url = &state.mail.sending.public.url;
            portal::create_link(
                &state.portal_links,
                base_url,
                state.config.body_timeout,
                req,
            )
            .await
        }
        AdminOverview => overview::overview(state, req).await,
        Metrics => metrics::scrape(state, req).await,
        OpenApi => openapi::serve(req),
        EventTypesList => catalog::list(&state.catalog_api, req).await,
        EventTypeGet => catalog::get(&state.catalog_api, param).await,
        EventTypePut => catalog::put(&state.catalog_api, param, req).await,
        EventTypeDelete => catalog::delete(&state.catalog_api, param).await,
        Healthz => Ok(admin::healthz()),
        Readyz => Ok(admin::readyz(&state)),
        // Unsubscribe links work on the private listener too, so the
        // default install (no public listener) can follow its own links.
        UnsubscribePage | UnsubscribeOneClick => {
            public::unsubscribe(&state.mail_api, param, req).await
        }
        FeedbackReceive => feedback::receive(&state.mail_api, param, req).await,
        DashboardPage => dashboard::page(&state.dashboard, req).await,
        DashboardAsset => dashboard::asset(param, &req),
        DashboardSignIn => dashboard::sign_in(&state.dashboard, req).await,
        DashboardSignOut => dashboard::sign_out(&state.dashboard, req).await,
        SegmentBatch => tracking::ingest(&state.tracking, None, req).await,
        SegmentCall => {
            let name = req.uri().path().trim_start_matches("/v1/").to_owned();
            tracking::ingest(&state.tracking, Call::parse(&name), req).await
        }
        PortalPage => Ok(portal::page(&state.portal_links, param)),
        PortalScript => Ok(portal::script()),
        PortalStyle => Ok(portal::style()),
        PortalSession
        | PortalEndpointsList
        | PortalEndpointsCreate
        | PortalEndpointGet
        | PortalEndpointPatch
        | PortalEndpointStats
        | PortalEndpointSecret
        | PortalEndpointRotateSecret
        | PortalEndpointTest
        | PortalEndpointEnable
        | PortalEndpointDisable
        | PortalDeliveriesList
        | PortalDeliveryGet
        | PortalDeliveryRetry
        | PortalEventTypes => {
            let redb = state.clone();
            Ok(portal::api(
                &state.portal_links,
                &state.catalog_api,
                id,
                params,
                req,
                |call| portal::run_on_redb(redb, call),
            )
            .await)
        }
    }
}

/// The grant a keyed row's handler needs; `authorize` gave one to every
/// row that is not `Auth::Own`.
pub(crate) fn keyed(access: &Option<access::Access>) -> Result<&access::Access, ApiError> {
    access.as_ref().ok_or_else(|| {
        tracing::error!("a keyed route was reached without a key's grant");
        ApiError::unavailable("route misconfigured")
    })
}

pub(crate) fn not_found(path: &str) -> ApiError {
    let shown: String = path.chars().take(200).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {shown}"),
    )
}
