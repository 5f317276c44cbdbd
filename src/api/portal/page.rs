//! The portal's page and assets, compiled into the binary, and the headers
//! every portal answer carries: the token is in the address, so nothing may
//! leak it (referrers, caches, frames), and no script runs but ours.

use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL};
use hyper::StatusCode;

use super::super::http::{guard_page, typed, Resp};

const APP_HTML: &str = include_str!("assets/portal.html");
const REFUSED_HTML: &str = include_str!("assets/refused.html");
const SCRIPT: &str = include_str!("assets/portal.js");
const STYLE: &str = include_str!("assets/portal.css");

/// Only the daemon's own script, styles and API: no inline script or
/// style, no other origin, no framing, no form posted anywhere.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Adds the portal's headers to an answer: the token is in the page's
/// address, so nothing may cache it either.
pub fn protect(resp: &mut Resp) {
    let headers = resp.headers_mut();
    guard_page(headers, POLICY);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn asset(status: StatusCode, content_type: &'static str, text: &'static str) -> Resp {
    let mut resp = typed(status, content_type, Bytes::from_static(text.as_bytes()));
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
