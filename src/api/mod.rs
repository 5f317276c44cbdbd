//! The private HTTP API: routing, and the state handlers share; the
//! accept loop is `listener`.

mod admin;
pub mod error;
mod events;
pub mod http;
mod listener;
mod mail;
mod public;
mod tracking;
mod webhooks;

use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use error::ApiError;
use http::{error_response, ApiKeys, Resp};

use crate::config::Config;
use crate::mail::dispatch::MailContext;
use crate::store::{ReadTxn, Store, StoreError, Writer};
use crate::tracking::segment::Call;
use crate::webhooks::dispatch::AttemptContext;

pub struct AppState {
    pub store: Store,
    pub writer: Writer,
    pub config: Arc<Config>,
    pub keys: ApiKeys,
    /// One backup at a time: each needs as much free disk as the live file.
    pub backup_slot: Arc<Semaphore>,
    /// For attempts the API makes itself (tests, manual retries).
    pub hooks: Arc<AttemptContext>,
    pub mail: Arc<MailContext>,
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The whole API, behind API keys.
    Private,
    /// Only what must face the internet (unsubscribe links).
    Public,
}

impl AppState {
    pub fn new(
        store: Store,
        writer: Writer,
        config: Arc<Config>,
        hooks: Arc<AttemptContext>,
        mail: Arc<MailContext>,
    ) -> Self {
        AppState {
            hooks,
            mail,
            keys: ApiKeys::new(&config.api_keys),
            store,
            writer,
            config,
            backup_slot: Arc::new(Semaphore::new(1)),
        }
    }
}

/// Runs a query on a read snapshot off the async threads.
pub(crate) async fn read<T, F>(state: &Arc<AppState>, query: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(ReadTxn) -> Result<T, StoreError> + Send + 'static,
{
    let store = state.store.clone();
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
    let routed = match surface {
        Surface::Private => route(state, req).await,
        Surface::Public => route_public(state, req).await,
    };
    match routed {
        Ok(resp) => resp,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(code = e.code, message = %e.message, "request failed");
            }
            error_response(&e)
        }
    }
}

async fn route(state: Arc<AppState>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();

    match segments.as_slice() {
        ["healthz"] => return only(&method, &Method::GET, "GET").map(|()| admin::healthz()),
        ["readyz"] => return only(&method, &Method::GET, "GET").map(|()| admin::readyz(&state)),
        // Unsubscribe links work here too, so the default install (no
        // public listener) can follow its own links locally.
        ["u", token] => return public::unsubscribe(state, token, req).await,
        // Segment-compatible ingestion authenticates with source write keys.
        ["v1", "batch"] => {
            only(&method, &Method::POST, "POST")?;
            return tracking::ingest(state, None, req).await;
        }
        ["v1", name] if Call::parse(name).is_some() => {
            only(&method, &Method::POST, "POST")?;
            return tracking::ingest(state, Call::parse(name), req).await;
        }
        ["v1", ..] => state.keys.check(req.headers())?,
        _ => return Err(not_found(&path)),
    }

    match segments.as_slice() {
        ["v1", "events"] => match method {
            Method::POST => events::create(state, req).await,
            Method::GET => events::list(state, req).await,
            _ => Err(ApiError::method_not_allowed("GET, POST")),
        },
        ["v1", "events", "batch"] => {
            only(&method, &Method::POST, "POST")?;
            events::create_batch(state, req).await
        }
        ["v1", "events", "export"] => {
            only(&method, &Method::GET, "GET")?;
            tracking::export(state, req).await
        }
        ["v1", "users", id] => {
            only(&method, &Method::GET, "GET")?;
            tracking::user(state, id).await
        }
        ["v1", "users", id, "events"] => {
            only(&method, &Method::GET, "GET")?;
            tracking::user_events(state, id, req).await
        }
        ["v1", "stats", "events"] => {
            only(&method, &Method::GET, "GET")?;
            tracking::stats(state, req).await
        }
        ["v1", "funnels"] => {
            only(&method, &Method::GET, "GET")?;
            tracking::funnel(state, req).await
        }
        ["v1", "attribution"] => {
            only(&method, &Method::GET, "GET")?;
            tracking::attribution(state, req).await
        }
        ["v1", "events", id] => {
            only(&method, &Method::GET, "GET")?;
            events::get(state, id).await
        }
        ["v1", "endpoints"] => match method {
            Method::POST => webhooks::create_endpoint(state, req).await,
            Method::GET => webhooks::list_endpoints(state, req).await,
            _ => Err(ApiError::method_not_allowed("GET, POST")),
        },
        ["v1", "endpoints", id] => match method {
            Method::GET => webhooks::get_endpoint(state, id).await,
            Method::PATCH => webhooks::patch_endpoint(state, id, req).await,
            Method::DELETE => webhooks::delete_endpoint(state, id).await,
            _ => Err(ApiError::method_not_allowed("GET, PATCH, DELETE")),
        },
        ["v1", "endpoints", id, "stats"] => {
            only(&method, &Method::GET, "GET")?;
            webhooks::endpoint_stats(state, id).await
        }
        ["v1", "endpoints", id, action] => {
            only(&method, &Method::POST, "POST")?;
            match *action {
                "rotate-secret" => webhooks::rotate_secret(state, id, req).await,
                "test" => webhooks::test_endpoint(state, id).await,
                "enable" => webhooks::set_enabled(state, id, true).await,
                "disable" => webhooks::set_enabled(state, id, false).await,
                "recover" => webhooks::recover(state, id, req).await,
                "replay" => webhooks::replay(state, id, req).await,
                _ => Err(not_found(&path)),
            }
        }
        ["v1", "deliveries"] => {
            only(&method, &Method::GET, "GET")?;
            webhooks::list_deliveries(state, req, false).await
        }
        ["v1", "dead-letters"] => {
            only(&method, &Method::GET, "GET")?;
            webhooks::list_deliveries(state, req, true).await
        }
        ["v1", "deliveries", id] => {
            only(&method, &Method::GET, "GET")?;
            webhooks::get_delivery(state, id).await
        }
        ["v1", "deliveries", id, "retry"] => {
            only(&method, &Method::POST, "POST")?;
            webhooks::retry_delivery(state, id).await
        }
        ["v1", "emails"] => match method {
            Method::POST => mail::send(state, req).await,
            Method::GET => mail::list(state, req).await,
            _ => Err(ApiError::method_not_allowed("GET, POST")),
        },
        ["v1", "emails", id] => {
            only(&method, &Method::GET, "GET")?;
            mail::get(state, id).await
        }
        ["v1", "suppressions"] => {
            only(&method, &Method::GET, "GET")?;
            mail::list_suppressions(state, req).await
        }
        ["v1", "suppressions", address] => match method {
            Method::PUT => mail::put_suppression(state, address, req).await,
            Method::DELETE => mail::delete_suppression(state, address, req).await,
            _ => Err(ApiError::method_not_allowed("PUT, DELETE")),
        },
        ["v1", "admin", "backup"] => {
            only(&method, &Method::GET, "GET")?;
            admin::backup(state).await
        }
        _ => Err(not_found(&path)),
    }
}

async fn route_public(state: Arc<AppState>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["healthz"] => only(req.method(), &Method::GET, "GET").map(|()| admin::healthz()),
        ["u", token] => public::unsubscribe(state, token, req).await,
        _ => Err(not_found(&path)),
    }
}

fn only(method: &Method, expected: &Method, allow: &'static str) -> Result<(), ApiError> {
    if method == expected {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(allow))
    }
}

fn not_found(path: &str) -> ApiError {
    let shown: String = path.chars().take(200).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {shown}"),
    )
}
