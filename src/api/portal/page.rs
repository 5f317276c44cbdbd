//! The portal's page and assets, compiled into the binary, and the headers
//! every portal answer carries: the token is in the address, so nothing may
//! leak it (referrers, caches, frames), and no script runs but ours.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Response, StatusCode};

use super::super::http::Resp;

const APP_HTML: &str = include_str!("assets/portal.html");
const REFUSED_HTML: &str = include_str!("assets/refused.html");
const SCRIPT: &str = include_str!("assets/portal.js");
const STYLE: &str = include_str!("assets/portal.css");

/// Only the daemon's own script, styles and API: no inline script or
/// style, no other origin, no framing, no form posted anywhere.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const GUARDS: [(HeaderName, &str); 5] = [
    (CONTENT_SECURITY_POLICY, POLICY),
    // The token is in the page's address: a link followed from the page
    // must not carry it to another site.
    (REFERRER_POLICY, "no-referrer"),
    (CACHE_CONTROL, "no-store"),
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (X_FRAME_OPTIONS, "DENY"),
];

/// Adds the portal's headers to an answer.
pub fn protect(resp: &mut Resp) {
    let headers = resp.headers_mut();
    for (name, value) in GUARDS {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn asset(status: StatusCode, content_type: &'static str, text: &'static str) -> Resp {
    let body = Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    protect(&mut resp);
    resp
}

pub fn app() -> Resp {
    asset(StatusCode::OK, "text/html; charset=utf-8", APP_HTML)
}

/// One page for an altered and an expired link: neither grants anything,
/// and the visitor's remedy is the same.
pub fn refused() -> Resp {
    asset(
        StatusCode::UNAUTHORIZED,
        "text/html; charset=utf-8",
        REFUSED_HTML,
    )
}

pub fn script() -> Resp {
    asset(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT)
}

pub fn style() -> Resp {
    asset(StatusCode::OK, "text/css; charset=utf-8", STYLE)
}
