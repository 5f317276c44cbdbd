//! The customer portal: `POST /v1/portal-links` signs a link to one
//! tenant's portal, and the link's token is the only credential of the
//! portal's page and API. The API runs the very handlers of `/v1/...` with
//! a write access confined to the link's tenant, so what a portal visitor
//! can reach is exactly what that tenant's own write key can.

mod page;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::access::{Access, Role};
use super::catalog::CatalogApi;
use super::error::ApiError;
use super::http::{json, read_body, require_json, Resp};
use super::routes::RouteId;
use super::{respond, webhooks, AppState};
use crate::clock;
use crate::events;
use crate::names::is_valid_tenant;
use crate::portal_link::{PortalKey, Refused};

pub use page::{script, style};

const MIN_TTL_SECS: u64 = 60;
const MAX_TTL_SECS: u64 = 7 * 24 * 3600;
const DEFAULT_TTL_SECS: u64 = 3600;
/// `{"tenant": …, "ttl_secs": …}` is tiny.
const MAX_LINK_BODY: usize = 4 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkInput {
    tenant: String,
    ttl_secs: Option<u64>,
}

/// `POST /v1/portal-links`: a link to `tenant`'s portal until `ttl_secs`
/// from now, under the daemon's public address `base_url`.
pub async fn create_link(
    key: &PortalKey,
    base_url: &str,
    body_timeout: Duration,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let (parts, body) = req.into_parts();
    require_json(&parts.headers)?;
    let body = read_body(body, &parts.headers, MAX_LINK_BODY, body_timeout).await?;
    let input: LinkInput = events::from_json_object(&body)?;
    if !is_valid_tenant(&input.tenant) {
        return Err(ApiError::invalid_field(
            "tenant",
            "must match ^[A-Za-z0-9_.:-]{1,128}$",
        ));
    }
    let ttl = input.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&ttl) {
        return Err(ApiError::invalid_field(
            "ttl_secs",
            format!("must be from {MIN_TTL_SECS} to {MAX_TTL_SECS} seconds"),
        ));
    }
    let expires_at_ms = clock::now_ms() + ttl as i64 * 1000;
    let token = key.mint(&input.tenant, expires_at_ms);
    let base = base_url.trim_end_matches('/');
    Ok(json(
        StatusCode::CREATED,
        json!({
            "url": format!("{base}/portal/{token}"),
            "expires_at": clock::format_rfc3339(expires_at_ms),
        })
        .to_string(),
    ))
}

/// What a portal token lets its holder do at `now_ms`: write as its
/// tenant, and nothing of any other tenant or of no tenant.
fn grant(key: &PortalKey, token: &str, now_ms: i64) -> Result<(Access, i64), Refused> {
    let grant = key.verify(token, now_ms)?;
    let access = Access {
        role: Role::Write,
        tenant: Some(grant.tenant),
    };
    Ok((access, grant.expires_at_ms))
}

/// `GET /portal/{token}`: the page, or a 401 page for a link that is
/// altered or expired. The page itself is the same for every tenant; its
/// script reads the token from the address and asks the portal's API.
pub fn page(key: &PortalKey, token: &str) -> Resp {
    match grant(key, token, clock::now_ms()) {
        Ok(_) => page::app(),
        Err(refused) => {
            tracing::debug!(?refused, "portal link refused");
            page::refused()
        }
    }
}

fn refused_link() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this portal link has expired or is not valid; ask for a new one",
    )
}

/// A portal API request whose token held: the webhook route it asks for,
/// to be run by the backend's `/v1` handler of the same thing with
/// `access`.
pub struct WebhookCall<'a> {
    pub access: Access,
    pub id: RouteId,
    /// The endpoint's or delivery's id, for routes that name one.
    pub object: &'a str,
    pub req: Request<Incoming>,
}

/// The portal's API routes: `params` are the token, then the object id of
/// routes that name one. The session and the event types are answered
/// here; the webhook routes by `webhooks`, the backend's handlers.
pub async fn api<'a, F, Fut>(
    key: &PortalKey,
    catalog: &CatalogApi,
    id: RouteId,
    params: &[&'a str],
    req: Request<Incoming>,
    webhooks: F,
) -> Resp
where
    F: FnOnce(WebhookCall<'a>) -> Fut,
    Fut: Future<Output = Result<Resp, ApiError>>,
{
    let token = params.first().copied().unwrap_or_default();
    let object = params.get(1).copied().unwrap_or_default();
    let outcome = match grant(key, token, clock::now_ms()) {
        Ok((access, expires_at_ms)) => match id {
            RouteId::PortalSession => Ok(json(
                StatusCode::OK,
                json!({
                    "tenant": access.tenant(),
                    "expires_at": clock::format_rfc3339(expires_at_ms),
                })
                .to_string(),
            )),
            // The catalog is shared by every tenant and holds no tenant's data.
            RouteId::PortalEventTypes => super::catalog::list(catalog, req).await,
            _ => {
                webhooks(WebhookCall {
                    access,
                    id,
                    object,
                    req,
                })
                .await
            }
        },
        Err(_) => Err(refused_link()),
    };
    let mut resp = respond(outcome);
    page::protect(&mut resp);
    resp
}

/// A route that reached the portal but is none of the portal's.
pub fn not_a_portal_route(id: RouteId) -> ApiError {
    tracing::error!(route = ?id, "a route reached the portal that is not the portal's");
    ApiError::unavailable("route misconfigured")
}

/// Runs a portal webhook route (`$call`, a `WebhookCall`) by the `/v1`
/// handler of module `$hooks` that serves the same thing, `$state` being
/// what that backend's handlers take: one list for both backends, so a
/// portal route cannot reach one and miss the other.
macro_rules! run_webhook_call {
    ($hooks:ident, $state:expr, $call:expr) => {{
        use $crate::api::routes::RouteId::*;
        let $crate::api::portal::WebhookCall {
            access,
            id,
            object,
            req,
        } = $call;
        let access = &access;
        match id {
            PortalEndpointsList => $hooks::list_endpoints($state, access, req).await,
            PortalEndpointsCreate => $hooks::create_endpoint($state, access, req).await,
            PortalEndpointGet => $hooks::get_endpoint($state, access, object).await,
            PortalEndpointPatch => $hooks::patch_endpoint($state, access, object, req).await,
            PortalEndpointStats => $hooks::endpoint_stats($state, access, object).await,
            PortalEndpointSecret => $hooks::get_secret($state, access, object).await,
            PortalEndpointRotateSecret => $hooks::rotate_secret($state, access, object, req).await,
            PortalEndpointTest => $hooks::test_endpoint($state, access, object).await,
            PortalEndpointEnable => $hooks::set_enabled($state, access, object, true).await,
            PortalEndpointDisable => $hooks::set_enabled($state, access, object, false).await,
            PortalDeliveriesList => $hooks::list_deliveries($state, access, req, false).await,
            PortalDeliveryGet => $hooks::get_delivery($state, access, object).await,
            PortalDeliveryRetry => $hooks::retry_delivery($state, access, object).await,
            other => Err($crate::api::portal::not_a_portal_route(other)),
        }
    }};
}
pub(crate) use run_webhook_call;

/// One portal webhook route on redb.
pub async fn run_on_redb(state: Arc<AppState>, call: WebhookCall<'_>) -> Result<Resp, ApiError> {
    run_webhook_call!(webhooks, state, call)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_grants_a_write_access_confined_to_its_tenant_until_it_expires() {
        let key = PortalKey::new([7; 32]);
        let minted_at = 1_700_000_000_000;
        let expires = minted_at + 60_000;
        let token = key.mint("acme", expires);
        let (access, until) = grant(&key, &token, minted_at).unwrap();
        assert_eq!(until, expires);
        assert_eq!(
            access,
            Access {
                role: Role::Write,
                tenant: Some("acme".into())
            }
        );
        // Everything the handlers decide with it stays inside the tenant.
        assert!(access.sees(Some("acme")));
        assert!(!access.sees(Some("globex")));
        assert!(!access.sees(None));
        assert!(access.tenant_for_write(Some("globex".into())).is_err());
        assert!(access.require_unscoped_admin().is_err());

        assert!(grant(&key, &token, expires - 1).is_ok());
        assert_eq!(grant(&key, &token, expires), Err(Refused::Expired));
        assert_eq!(
            grant(&key, &token, expires + 86_400_000),
            Err(Refused::Expired)
        );
        assert_eq!(
            grant(&PortalKey::new([8; 32]), &token, minted_at),
            Err(Refused::Invalid)
        );
    }
}
