//! The private HTTP API: routing, and the state handlers share; the
//! accept loop is `listener`.

pub mod access;
mod admin;
pub mod auth;
pub mod error;
mod events;
mod feedback;
pub mod http;
mod keys;
mod listener;
mod mail;
mod public;
mod streams;
mod tracking;
mod webhooks;

use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use auth::ApiKeys;
use error::ApiError;
use http::{error_response, Resp};

use crate::config::Config;
use crate::feedback::sns_fetch::SnsFetcher;
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
    /// Fetches and caches SNS signing certificates; `None` without SES.
    pub sns: Option<Arc<SnsFetcher>>,
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
        // The configuration check already read the CA file the same way.
        let sns = config
            .feedback
            .ses
            .as_ref()
            .and_then(|ses| match SnsFetcher::new(ses) {
                Ok(fetcher) => Some(Arc::new(fetcher)),
                Err(e) => {
                    tracing::error!(error = %e, "SES feedback is off: its certificate fetcher cannot start");
                    None
                }
            });
        Ok(AppState {
            sns,
            hooks,
            mail,
            keys: ApiKeys::new(&config.keys, &stored_keys),
            store,
            writer,
            config,
            backup_slot: Arc::new(Semaphore::new(1)),
        })
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
        // ESP webhooks authenticate by each provider's own scheme.
        ["feedback", provider] => return feedback::receive(state, provider, req).await,
        // Segment-compatible ingestion authenticates with source write keys.
        ["v1", "batch"] => {
            only(&method, &Method::POST, "POST")?;
            return tracking::ingest(state, None, req).await;
        }
        ["v1", name] if Call::parse(name).is_some() => {
            only(&method, &Method::POST, "POST")?;
            return tracking::ingest(state, Call::parse(name), req).await;
        }
        ["v1", ..] => {}
        _ => return Err(not_found(&path)),
    }
    let access = state.keys.check(req.headers())?;
    match segments.as_slice() {
        // Backups hold every tenant's data, and a key manager could mint
        // itself any grant: both need an admin key for every tenant.
        ["v1", "admin", ..] | ["v1", "keys", ..] => access.require_unscoped_admin()?,
        // Streams are shared by every tenant: one tenant's key must not
        // pause another's mail.
        ["v1", "streams", ..] => {
            access.require(access::role_for_method(&method))?;
            if let Some(own) = access.tenant() {
                return Err(ApiError::forbidden(format!(
                    "this key is confined to tenant `{own}`; streams are shared by every tenant"
                )));
            }
        }
        // The secret signs deliveries: whoever reads it can forge them.
        ["v1", "endpoints", _, "secret"] => access.require(access::Role::Write)?,
        _ => access.require(access::role_for_method(&method))?,
    }
    let access = &access;

    match segments.as_slice() {
        ["v1", "events"] => match method {
            Method::POST => events::create(state, access, req).await,
            Method::GET => events::list(state, access, req).await,
            _ => Err(ApiError::method_not_allowed("GET, POST")),
        },
        ["v1", "events", "batch"] => {
            only(&method, &Method::POST, "POST")?;
            events::create_batch(state, access, req).await
        }
        ["v1", "events", "export"] => {
            only(&method, &Method::GET, "GET")?;
            tracking::export(state, access, req).await
        }
        ["v1", "users", id] => {
            only(&method, &Method::GET, "GET")?;
            tracking::user(state, access, id, req).await
        }
        ["v1", "users", id, "events"] => {
            only(&method, &Method::GET, "GET")?;
            tracking::user_events(state, access, id, req).await
        }
        ["v1", "stats", "events"] => {
            only(&method, &Method::GET, "GET")?;
            tracking::stats(state, access, req).await
        }
        ["v1", "funnels"] => {
            only(&method, &Method::GET, "GET")?;
            tracking::funnel(state, access, req).await
        }
        ["v1", "attribution"] => {
            only(&method, &Method::GET, "GET")?;
            tracking::attribution(state, access, req).await
        }
        ["v1", "events", id] => {
            only(&method, &Method::GET, "GET")?;
            events::get(state, access, id).await
        }
        ["v1", "endpoints"] => match method {
            Method::POST => webhooks::create_endpoint(state, access, req).await,
            Method::GET => webhooks::list_endpoints(state, access, req).await,
            _ => Err(ApiError::method_not_allowed("GET, POST")),
        },
        ["v1", "endpoints", id] => match method {
            Method::GET => webhooks::get_endpoint(state, access, id).await,
            Method::PATCH => webhooks::patch_endpoint(state, access, id, req).await,
            Method::DELETE => webhooks::delete_endpoint(state, access, id).await,
            _ => Err(ApiError::method_not_allowed("GET, PATCH, DELETE")),
        },
        // Every route under an endpoint loads it with `webhooks::load_endpoint`
        // or changes it with `webhooks::update_endpoint`, which answer 404
        // for another tenant's endpoint exactly as for a missing one.
        ["v1", "endpoints", id, "stats"] => {
            only(&method, &Method::GET, "GET")?;
            webhooks::endpoint_stats(state, access, id).await
        }
        ["v1", "endpoints", id, "secret"] => {
            only(&method, &Method::GET, "GET")?;
            webhooks::get_secret(state, access, id).await
        }
        ["v1", "endpoints", id, action] => {
            only(&method, &Method::POST, "POST")?;
            match *action {
                "rotate-secret" => webhooks::rotate_secret(state, access, id, req).await,
                "test" => webhooks::test_endpoint(state, access, id).await,
                "enable" => webhooks::set_enabled(state, access, id, true).await,
                "disable" => webhooks::set_enabled(state, access, id, false).await,
                "recover" => webhooks::recover(state, access, id, req).await,
                "replay" => webhooks::replay(state, access, id, req).await,
                _ => Err(not_found(&path)),
            }
        }
        ["v1", "deliveries"] => {
            only(&method, &Method::GET, "GET")?;
            webhooks::list_deliveries(state, access, req, false).await
        }
        ["v1", "dead-letters"] => {
            only(&method, &Method::GET, "GET")?;
            webhooks::list_deliveries(state, access, req, true).await
        }
        ["v1", "deliveries", id] => {
            only(&method, &Method::GET, "GET")?;
            webhooks::get_delivery(state, access, id).await
        }
        ["v1", "deliveries", id, "retry"] => {
            only(&method, &Method::POST, "POST")?;
            webhooks::retry_delivery(state, access, id).await
        }
        ["v1", "emails"] => match method {
            Method::POST => mail::send(state, access, req).await,
            Method::GET => mail::list(state, access, req).await,
            _ => Err(ApiError::method_not_allowed("GET, POST")),
        },
        ["v1", "emails", id] => {
            only(&method, &Method::GET, "GET")?;
            mail::get(state, access, id).await
        }
        ["v1", "suppressions"] => {
            only(&method, &Method::GET, "GET")?;
            mail::list_suppressions(state, access, req).await
        }
        ["v1", "suppressions", address] => match method {
            Method::PUT => mail::put_suppression(state, access, address, req).await,
            Method::DELETE => mail::delete_suppression(state, access, address, req).await,
            _ => Err(ApiError::method_not_allowed("PUT, DELETE")),
        },
        ["v1", "feedback"] => {
            only(&method, &Method::GET, "GET")?;
            feedback::list(state, access, req).await
        }
        ["v1", "streams"] => {
            only(&method, &Method::GET, "GET")?;
            streams::list(state).await
        }
        ["v1", "streams", name, "health"] => {
            only(&method, &Method::GET, "GET")?;
            streams::health(state, name).await
        }
        ["v1", "streams", name, action] => {
            only(&method, &Method::POST, "POST")?;
            match *action {
                "pause" => streams::set_paused(state, name, true).await,
                "resume" => streams::set_paused(state, name, false).await,
                _ => Err(not_found(&path)),
            }
        }
        ["v1", "admin", "backup"] => {
            only(&method, &Method::GET, "GET")?;
            admin::backup(state).await
        }
        ["v1", "admin", "storage"] => {
            only(&method, &Method::GET, "GET")?;
            admin::storage(state, req).await
        }
        ["v1", "keys"] => match method {
            Method::POST => keys::create(state, req).await,
            Method::GET => keys::list(state, req).await,
            _ => Err(ApiError::method_not_allowed("GET, POST")),
        },
        ["v1", "keys", id] => match method {
            Method::DELETE => keys::revoke(state, id).await,
            _ => Err(ApiError::method_not_allowed("DELETE")),
        },
        _ => Err(not_found(&path)),
    }
}

async fn route_public(state: Arc<AppState>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["healthz"] => only(req.method(), &Method::GET, "GET").map(|()| admin::healthz()),
        ["u", token] => public::unsubscribe(state, token, req).await,
        ["feedback", provider] => feedback::receive(state, provider, req).await,
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
