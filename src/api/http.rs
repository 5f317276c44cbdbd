//! Request and response plumbing shared by every handler: bounded body
//! reads, content types, the bearer header, JSON answers and query strings.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use hyper::{Response, StatusCode};
use tokio::io::{AsyncRead, ReadBuf};

use super::error::ApiError;

pub type ResponseBody = BoxBody<Bytes, std::io::Error>;
pub type Resp = Response<ResponseBody>;

fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    typed(status, "application/json", body)
}

/// An answer of any media type.
pub fn typed(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The headers every page Herald serves carries (dashboard and portal):
/// its own content policy, no framing, no sniffing, and no referrer, so an
/// address holding a token never reaches another site.
pub fn guard_page(headers: &mut HeaderMap, content_policy: &'static str) {
    use hyper::header::{
        CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
    };
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(content_policy),
    );
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

/// `text` made safe inside HTML text and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub fn error_response(e: &ApiError) -> Resp {
    let mut resp = json(e.status, e.body());
    let headers = resp.headers_mut();
    if let Some(secs) = e.retry_after_secs {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(allow) = e
        .allow
        .as_deref()
        .and_then(|a| HeaderValue::from_str(a).ok())
    {
        headers.insert(ALLOW, allow);
    }
    if e.status == StatusCode::UNAUTHORIZED {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

/// POST bodies must be JSON; anything else is refused before reading it.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ))
    }
}

/// Reads a whole body, refusing more than `limit` bytes (413) or a sender
/// slower than `timeout` (408).
pub async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || ApiError::too_large(format!("the body exceeds {limit} bytes"));
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the body did not arrive in time",
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(_)) => Err(ApiError::bad_request(
            "body_read_failed",
            "the body could not be read",
        )),
    }
}

/// The key of an `Authorization: Bearer KEY` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Query parameters, refusing names the endpoint does not know so a typo
/// is an error rather than a silently ignored filter.
pub fn query_params(
    query: Option<&str>,
    known: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !known.contains(&name.as_ref()) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "unknown query parameter `{name}`; known: {}",
                    known.join(", ")
                ),
            ));
        }
        if out.iter().any(|(n, _): &(String, String)| *n == name) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("query parameter `{name}` given twice"),
            ));
        }
        out.push((name.into_owned(), value.into_owned()));
    }
    Ok(out)
}

/// A page size from `limit=`: 1 to `max`.
pub fn page_limit(value: &str, max: usize) -> Result<usize, ApiError> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::invalid_query("limit", format!("must be a number from 1 to {max}"))
        })
}

/// A response body streamed from an open file.
pub struct FileBody {
    file: tokio::fs::File,
    buf: Box<[u8]>,
}

impl FileBody {
    pub fn new(file: tokio::fs::File) -> Self {
        FileBody {
            file,
            buf: vec![0; 256 * 1024].into_boxed_slice(),
        }
    }

    pub fn boxed(self) -> ResponseBody {
        BodyExt::boxed(self)
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        let mut read = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => {
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(read.filled())))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_refuse_unknown_and_repeated_names() {
        let got = query_params(Some("a=1&b=x%20y"), &["a", "b"]).unwrap();
        assert_eq!(
            got,
            vec![("a".into(), "1".into()), ("b".into(), "x y".into())]
        );
        assert!(query_params(Some("c=1"), &["a"]).is_err());
        assert!(query_params(Some("a=1&a=2"), &["a"]).is_err());
        assert!(query_params(None, &["a"]).unwrap().is_empty());
    }

    #[test]
    fn only_json_bodies_are_accepted() {
        let mut h = HeaderMap::new();
        assert!(require_json(&h).is_err());
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/JSON; charset=utf-8"),
        );
        assert!(require_json(&h).is_ok());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(require_json(&h).is_err());
    }
}
