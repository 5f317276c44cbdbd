//! The public listener's routes: only what must face the internet. Today
//! that is one-click unsubscribe (RFC 8058); ESP webhooks are `feedback`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::error::ApiError;
use super::http::{escape_html, read_body, Resp};
use super::mail::MailApi;
use crate::clock;
use crate::mail::ledger;
use crate::mail::unsubscribe::Unsubscription;

/// Mailbox providers send `List-Unsubscribe=One-Click`; nothing bigger is
/// worth reading.
const MAX_BODY: usize = 8 * 1024;

fn page(status: StatusCode, html: String) -> Resp {
    let body = Full::new(Bytes::from(html))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    resp
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:32em;margin:4em auto\">{body}</body></html>"
    )
}

fn invalid_link() -> Resp {
    page(
        StatusCode::NOT_FOUND,
        layout(
            "Link not valid",
            "<h1>This unsubscribe link is not valid</h1><p>It may have been altered or cut short.</p>",
        ),
    )
}

pub async fn unsubscribe(
    mail: &MailApi,
    token: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let Some(Unsubscription {
        stream,
        address,
        tenant,
    }) = mail.tokens.verify(token)
    else {
        return Ok(invalid_link());
    };
    let shown = escape_html(&address);
    match *req.method() {
        // Link scanners and previews fetch with GET: it must change nothing.
        Method::GET | Method::HEAD => Ok(page(
            StatusCode::OK,
            layout(
                "Unsubscribe",
                &format!(
                    "<h1>Unsubscribe</h1><p>Stop {} mail to <b>{shown}</b>?</p>\
                     <form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" \
                     value=\"One-Click\"><button type=\"submit\">Unsubscribe</button></form>",
                    escape_html(&stream)
                ),
            ),
        )),
        Method::POST => {
            // The body (`List-Unsubscribe=One-Click`, urlencoded or
            // multipart) carries nothing the token does not; it is read
            // only to bound and drain it.
            let (parts, body) = req.into_parts();
            read_body(body, &parts.headers, MAX_BODY, mail.body_timeout).await?;
            let now = clock::now_ms();
            mail.store
                .write(move |txn| {
                    ledger::unsubscribe(txn, tenant.as_deref(), &address, &stream, now)
                })
                .await?;
            Ok(page(
                StatusCode::OK,
                layout(
                    "Unsubscribed",
                    &format!(
                        "<h1>Unsubscribed</h1><p><b>{shown}</b> will get no more of this mail.</p>"
                    ),
                ),
            ))
        }
        _ => Err(ApiError::method_not_allowed("GET, POST")),
    }
}
