//! The dashboard at `/admin`: its page and assets, compiled into the
//! binary so it works offline with nothing to build, and signing in and
//! out with an admin API key. The same handlers serve both backends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION,
    SET_COOKIE,
};
use hyper::{Request, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::auth::{key_hash, ApiKeys};
use super::error::ApiError;
use super::http::{escape_html, guard_page, json, read_body, require_json, typed, Resp};
use super::sessions::{self, Sessions, COOKIE_NAME};
use crate::clock;

/// What the dashboard's routes, and every route's check of a session
/// cookie, need on either backend.
pub struct DashboardApi {
    /// The keys a sign-in is checked against, and that a session's key
    /// must still be among.
    pub keys: Arc<ApiKeys>,
    pub sessions: Sessions,
    pub body_timeout: Duration,
}

/// Scripts only from this origin and never inline, so a value that slipped
/// into the markup still could not run; no frames, no outside fetches.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// A sign-in body holds one key.
const MAX_SIGN_IN_BODY: usize = 4 * 1024;

const APP_HTML: &str = include_str!("dashboard/app.html");
const SIGN_IN_HTML: &str = include_str!("dashboard/signin.html");

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

static ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("dashboard/app.js"),
    },
    Asset {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("dashboard/charts.js"),
    },
    Asset {
        name: "signin.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("dashboard/signin.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("dashboard/app.css"),
    },
];

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = typed(status, content_type, body);
    guard_page(resp.headers_mut(), CSP);
    resp
}

/// Pages carry the CSRF token: never cached.
fn html(status: StatusCode, body: String) -> Resp {
    let mut resp = respond(status, "text/html; charset=utf-8", body);
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `auth` is `session` or `open` (no key exists, nobody signs in).
fn app_page(auth: &str, csrf: &str) -> Resp {
    html(
        StatusCode::OK,
        APP_HTML
            .replace("{{auth}}", auth)
            .replace("{{csrf}}", &escape_html(csrf)),
    )
}

fn sign_in_page(status: StatusCode, error: &str) -> Resp {
    let error = if error.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape_html(error)
        )
    };
    html(status, SIGN_IN_HTML.replace("{{error}}", &error))
}

/// `GET /admin`: the app for a signed-in admin (or anyone while no key
/// exists), the sign-in page otherwise.
pub async fn page(dashboard: &DashboardApi, req: Request<Incoming>) -> Result<Resp, ApiError> {
    if dashboard.keys.is_open() {
        return Ok(app_page("open", ""));
    }
    if let Some(token) = sessions::cookie(req.headers()) {
        if let Some((key, csrf)) = dashboard.sessions.find(token).await? {
            let still_admin = dashboard
                .keys
                .grant_of_hash(&key)
                .is_some_and(|access| access.require_unscoped_admin().is_ok());
            if still_admin {
                return Ok(app_page("session", &csrf));
            }
            dashboard.sessions.end(token).await?;
        }
    }
    Ok(sign_in_page(StatusCode::OK, ""))
}

/// `GET /admin/assets/{name}`: revalidated by its hash, so a new binary's
/// assets are picked up at once and an unchanged one costs a 304.
/// Each asset's ETag, in `ASSETS` order: the bodies are compiled in, so
/// their digests are taken once, not on every request.
static ETAGS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.body.as_bytes());
            let tag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{tag}\"")
        })
        .collect()
});

pub fn asset(name: &str, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let at = ASSETS
        .iter()
        .position(|a| a.name == name)
        .ok_or_else(|| ApiError::not_found("not_found", "no such dashboard asset".to_owned()))?;
    let asset = &ASSETS[at];
    let etag = &ETAGS[at];
    let fresh = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag.as_str()));
    let mut resp = if fresh {
        respond(StatusCode::NOT_MODIFIED, asset.content_type, Bytes::new())
    } else {
        respond(StatusCode::OK, asset.content_type, asset.body)
    };
    let headers = resp.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(ETAG, value);
    }
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    key: String,
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The session cookie. `Secure` only when a TLS proxy says the browser
/// spoke https: this listener itself speaks plain HTTP, and a browser
/// keeps no `Secure` cookie set over http (loopback aside).
fn session_cookie(headers: &HeaderMap, value: &str, max_age_secs: u64) -> HeaderValue {
    let https = headers
        .get(HeaderName::from_static("x-forwarded-proto"))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let secure = if https { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE_NAME}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}{secure}"
    );
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `POST /admin/session` with `{"key": "…"}` (JSON, from the page's
/// script) or `key=…` (a form, without script): an admin key for every
/// tenant starts a session. JSON callers get the CSRF token in the answer,
/// form callers are sent to `/admin`, whose page carries it.
pub async fn sign_in(dashboard: &DashboardApi, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (parts, body) = req.into_parts();
    let form = is_form(&parts.headers);
    if !form {
        require_json(&parts.headers)?;
    }
    let bytes = read_body(
        body,
        &parts.headers,
        MAX_SIGN_IN_BODY,
        dashboard.body_timeout,
    )
    .await?;
    let key = if form {
        form_urlencoded::parse(&bytes)
            .find(|(name, _)| name == "key")
            .map(|(_, value)| value.into_owned())
    } else {
        let parsed: SignIn = serde_json::from_slice(&bytes).map_err(|e| {
            if e.is_data() {
                ApiError::bad_request("invalid_body", "send {\"key\": \"<admin API key>\"}")
                    .with_field("key")
            } else {
                ApiError::bad_request("invalid_json", "the body is not valid JSON")
            }
        })?;
        Some(parsed.key)
    };
    let refuse = |e: ApiError| -> Result<Resp, ApiError> {
        if form {
            Ok(sign_in_page(e.status, &e.message))
        } else {
            Err(e)
        }
    };
    if dashboard.keys.is_open() {
        return refuse(ApiError::new(
            StatusCode::CONFLICT,
            "sign_in_not_needed",
            "no API key exists, so the dashboard needs no sign-in",
        ));
    }
    let Some(key) = key.map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()) else {
        return refuse(
            ApiError::bad_request("invalid_body", "enter an admin API key").with_field("key"),
        );
    };
    let hash = key_hash(&key);
    let access = match dashboard.keys.grant_of_hash(&hash) {
        Some(access) => access,
        None => {
            let mut e = ApiError::unauthorized();
            e.message = "that key is not valid".into();
            return refuse(e);
        }
    };
    if access.require_unscoped_admin().is_err() {
        return refuse(ApiError::forbidden(
            "the dashboard needs an admin key that is not confined to a tenant",
        ));
    }
    let started = dashboard.sessions.start(hash).await?;
    let ttl = dashboard.sessions.ttl();
    let cookie = session_cookie(&parts.headers, &started.token, ttl.as_secs());
    let mut resp = if form {
        let mut resp = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
        resp.headers_mut()
            .insert(LOCATION, HeaderValue::from_static("/admin"));
        resp
    } else {
        let expires_ms = clock::now_ms().saturating_add(ttl.as_millis() as i64);
        let mut resp = json(
            StatusCode::OK,
            serde_json::json!({
                "csrf_token": started.csrf,
                "expires_at": clock::format_rfc3339(expires_ms),
            })
            .to_string(),
        );
        guard_page(resp.headers_mut(), CSP);
        resp
    };
    let headers = resp.headers_mut();
    headers.insert(SET_COOKIE, cookie);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `POST /admin/logout`: ends the session (which needs its CSRF token, so
/// no other site can sign an admin out) and clears the cookie.
pub async fn sign_out(dashboard: &DashboardApi, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (parts, body) = req.into_parts();
    read_body(
        body,
        &parts.headers,
        MAX_SIGN_IN_BODY,
        dashboard.body_timeout,
    )
    .await?;
    if let Some(token) = sessions::cookie(&parts.headers) {
        match dashboard.sessions.verify(token, &parts.headers).await {
            Ok(_) => {
                dashboard.sessions.end(token).await?;
            }
            // Already over: there is nothing to end but the cookie.
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {}
            // A missing CSRF header, or a store that did not answer: the
            // session may still be live, so the cookie stays too.
            Err(e) => return Err(e),
        }
    }
    let mut resp = respond(StatusCode::NO_CONTENT, "text/plain; charset=utf-8", "");
    let headers = resp.headers_mut();
    headers.insert(SET_COOKIE, session_cookie(&parts.headers, "", 0));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
