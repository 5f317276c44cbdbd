//! A small blocking HTTP/1.1 client of the daemon's own API, for the
//! command line (`herald backup` and the admin commands). Plain HTTP only:
//! the private API listens on loopback or a private network. One
//! connection is kept for every call of a command.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Connecting to a local daemon is quick; longer means it is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole JSON exchange. Longer than the longest webhook timeout (30 s),
/// since `test` and `retry` answer only after their attempt.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest JSON answer read: a page of 1,000 deliveries, each with
/// several attempts and their response excerpts, fits.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// How much of a refusal that is not the API's JSON error is shown.
const MAX_SHOWN_ERROR: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not a URL like http://127.0.0.1:8425")]
    BadUrl(String),
    #[error("cannot reach the daemon at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("the daemon at {addr} did not {what} within {after:?}")]
    Timeout {
        addr: String,
        what: &'static str,
        after: Duration,
    },
    #[error("HTTP exchange with the daemon failed: {0}")]
    Http(String),
    #[error("the daemon's answer is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the daemon answered {status}{}: {message}", spaced(.code))]
    Refused {
        status: u16,
        /// The API's error code (`unauthorized`…); empty when the answer
        /// was not the API's JSON error.
        code: String,
        message: String,
    },
    #[error("the daemon's answer is not JSON: {0}")]
    NotJson(String),
    #[error("the download was cut short: got {got} of {expected} bytes")]
    Truncated { got: u64, expected: u64 },
    #[error("the daemon announced no length for the download")]
    NoLength,
    #[error("cannot write the download: {0}")]
    Write(std::io::Error),
}

fn spaced(code: &str) -> String {
    if code.is_empty() {
        String::new()
    } else {
        format!(" {code}")
    }
}

/// A successful (2xx) answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON; `null` for an empty body (`204`).
    pub fn json(&self) -> Result<Value, ClientError> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| ClientError::NotJson(e.to_string()))
    }

    /// The body as text, exactly as the daemon sent it.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How long a download may take: its answer can start only once the daemon
/// has written the whole copy, then the bytes must keep coming.
#[derive(Debug, Clone, Copy)]
pub struct DownloadTimeouts {
    pub head: Duration,
    pub idle: Duration,
}

pub struct ApiClient {
    authority: String,
    api_key: Option<String>,
    runtime: tokio::runtime::Runtime,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// `http://host:port` → `host:port`.
fn authority(url: &str) -> Result<String, ClientError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::BadUrl(url.to_owned()))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(ClientError::BadUrl(url.to_owned()));
    }
    Ok(authority.to_owned())
}

/// `/v1/endpoints/ep_…/stats?tenant=acme`: each segment percent-encoded
/// (an address or id typed by a user cannot add a segment or a query),
/// absent query values left out.
pub fn api_path(segments: &[&str], query: &[(&str, Option<&str>)]) -> String {
    let mut path = String::new();
    for segment in segments {
        path.push('/');
        for &b in segment.as_bytes() {
            // RFC 3986 unreserved characters, and `@` and `+`, which
            // addresses use and a path segment may hold as they are.
            if b.is_ascii_alphanumeric() || b"-._~@+".contains(&b) {
                path.push(b as char);
            } else {
                path.push_str(&format!("%{b:02X}"));
            }
        }
    }
    let mut pairs = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (name, value) in query {
        if let Some(value) = value {
            pairs.append_pair(name, value);
            any = true;
        }
    }
    if any {
        path.push('?');
        path.push_str(&pairs.finish());
    }
    path
}

impl ApiClient {
    pub fn new(url: &str, api_key: Option<&str>) -> Result<ApiClient, ClientError> {
        let authority = authority(url)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        Ok(ApiClient {
            authority,
            api_key: api_key.map(str::to_owned),
            runtime,
            sender: None,
        })
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `GET path` as JSON.
    pub fn get(&mut self, path: &str) -> Result<Value, ClientError> {
        self.send(Method::GET, path, None)?.json()
    }

    /// One exchange; a non-2xx answer is `ClientError::Refused` with the
    /// API's error message.
    pub fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ClientError> {
        let request = self.request(method, path, body)?;
        let addr = self.authority.clone();
        let runtime = &self.runtime;
        let sender = &mut self.sender;
        let authority = &self.authority;
        let exchange = async move {
            let resp = send_on_kept(sender, authority, request).await?;
            let status = resp.status().as_u16();
            let body = read_limited(resp.into_body(), MAX_ANSWER_BYTES).await?;
            Ok::<_, ClientError>((status, body))
        };
        let (status, body) = runtime
            .block_on(async { tokio::time::timeout(ANSWER_TIMEOUT, exchange).await })
            .map_err(|_| {
                self.sender = None;
                ClientError::Timeout {
                    addr,
                    what: "answer",
                    after: ANSWER_TIMEOUT,
                }
            })??;
        if (200..300).contains(&status) {
            Ok(Answer { status, body })
        } else {
            Err(refusal(status, &body))
        }
    }

    /// `GET path` written to `out`; the daemon must announce the length,
    /// and exactly that many bytes must arrive. Answers the byte count.
    pub fn download(
        &mut self,
        path: &str,
        out: &mut dyn Write,
        timeouts: DownloadTimeouts,
    ) -> Result<u64, ClientError> {
        let request = self.request(Method::GET, path, None)?;
        let addr = self.authority.clone();
        let timeout = |what, after| ClientError::Timeout {
            addr: addr.clone(),
            what,
            after,
        };
        let runtime = &self.runtime;
        let sender = &mut self.sender;
        let authority = &self.authority;
        runtime.block_on(async move {
            let head = send_on_kept(sender, authority, request);
            let resp = tokio::time::timeout(timeouts.head, head)
                .await
                .map_err(|_| timeout("start its answer", timeouts.head))??;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                let body = tokio::time::timeout(
                    ANSWER_TIMEOUT,
                    read_limited(resp.into_body(), MAX_ANSWER_BYTES),
                )
                .await
                .map_err(|_| timeout("answer", ANSWER_TIMEOUT))??;
                return Err(refusal(status, &body));
            }
            let expected = resp
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(ClientError::NoLength)?;
            let mut body = resp.into_body();
            let mut got = 0u64;
            loop {
                let frame = tokio::time::timeout(timeouts.idle, body.frame())
                    .await
                    .map_err(|_| timeout("send more of the download", timeouts.idle))?;
                let Some(frame) = frame else { break };
                let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
                if let Some(data) = frame.data_ref() {
                    got += data.len() as u64;
                    if got > expected {
                        return Err(ClientError::TooLarge {
                            limit: expected as usize,
                        });
                    }
                    out.write_all(data).map_err(ClientError::Write)?;
                }
            }
            if got != expected {
                return Err(ClientError::Truncated { got, expected });
            }
            Ok(got)
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.authority);
        if let Some(key) = &self.api_key {
            req = req.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let body = match body {
            Some(value) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(value.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        req.body(body).map_err(|e| ClientError::Http(e.to_string()))
    }
}

/// Sends on the kept connection. One the daemon closed while it was idle
/// hands the request back unsent: it goes once more on a new connection,
/// which is safe for any method since the daemon never saw it.
async fn send_on_kept(
    slot: &mut Option<SendRequest<Full<Bytes>>>,
    authority: &str,
    request: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
    let sender = ready_sender(slot, authority).await?;
    match sender.try_send_request(request).await {
        Ok(resp) => Ok(resp),
        Err(mut failed) => {
            *slot = None;
            let Some(unsent) = failed.take_message() else {
                return Err(ClientError::Http(failed.into_error().to_string()));
            };
            ready_sender(slot, authority)
                .await?
                .send_request(unsent)
                .await
                .map_err(|e| ClientError::Http(e.to_string()))
        }
    }
}

/// The kept connection if it can take a request, else a new one.
async fn ready_sender<'a>(
    slot: &'a mut Option<SendRequest<Full<Bytes>>>,
    authority: &str,
) -> Result<&'a mut SendRequest<Full<Bytes>>, ClientError> {
    if let Some(sender) = slot.as_mut() {
        if sender.ready().await.is_err() {
            *slot = None;
        }
    }
    if slot.is_none() {
        let connect = tokio::net::TcpStream::connect(authority);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| ClientError::Timeout {
                addr: authority.to_owned(),
                what: "accept the connection",
                after: CONNECT_TIMEOUT,
            })?
            .map_err(|source| ClientError::Connect {
                addr: authority.to_owned(),
                source,
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(conn);
        *slot = Some(sender);
    }
    Ok(slot.as_mut().expect("a connection was just made"))
}

async fn read_limited(mut body: hyper::body::Incoming, limit: usize) -> Result<Bytes, ClientError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > limit {
                return Err(ClientError::TooLarge { limit });
            }
            out.extend_from_slice(data);
        }
    }
    Ok(Bytes::from(out))
}

/// A non-2xx answer: the API's `{"error": {"code", "message"}}` when it is
/// one, else the start of the body.
fn refusal(status: u16, body: &[u8]) -> ClientError {
    let parsed: Option<(String, String)> =
        serde_json::from_slice::<Value>(body).ok().and_then(|v| {
            let error = v.get("error")?;
            Some((
                error.get("code")?.as_str()?.to_owned(),
                error.get("message")?.as_str()?.to_owned(),
            ))
        });
    let (code, message) = parsed.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        (String::new(), text.chars().take(MAX_SHOWN_ERROR).collect())
    });
    // Printed to a terminal: whatever answers at the URL must not drive it.
    let printable = |text: String| -> String {
        text.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    ClientError::Refused {
        status,
        code: printable(code),
        message: printable(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_plain_http_authorities() {
        assert_eq!(
            authority("http://127.0.0.1:8425").unwrap(),
            "127.0.0.1:8425"
        );
        assert_eq!(authority("http://localhost:1/").unwrap(), "localhost:1");
        for bad in [
            "https://x:1",
            "127.0.0.1:8425",
            "http://",
            "http://h:1/path",
            "http://h:1?x",
            "http://user@h:1",
        ] {
            assert!(authority(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_encode_each_segment_and_skip_absent_query_values() {
        assert_eq!(
            api_path(&["v1", "suppressions", "a+b@x.com"], &[]),
            "/v1/suppressions/a+b@x.com"
        );
        assert_eq!(
            api_path(&["v1", "endpoints", "../keys?x=1"], &[]),
            "/v1/endpoints/..%2Fkeys%3Fx%3D1"
        );
        assert_eq!(
            api_path(
                &["v1", "dead-letters"],
                &[
                    ("endpoint", None),
                    ("tenant", Some("a&b c")),
                    ("limit", Some("5"))
                ]
            ),
            "/v1/dead-letters?tenant=a%26b+c&limit=5"
        );
    }

    /// Answers one request on each of `connections` connections, then
    /// closes it, as a daemon closing idle kept-alive connections does.
    fn one_answer_per_connection(connections: usize) -> (String, std::sync::mpsc::Receiver<usize>) {
        use std::io::{BufRead, BufReader};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (closed, closed_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for n in 0..connections {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                let body = format!("{{\"connection\": {n}}}");
                let mut stream = stream;
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                drop(stream);
                drop(reader);
                closed.send(n).unwrap();
            }
        });
        (url, closed_rx)
    }

    #[test]
    fn a_connection_closed_while_idle_is_replaced() {
        let (url, closed) = one_answer_per_connection(3);
        let mut client = ApiClient::new(&url, None).unwrap();
        for n in 0..3 {
            assert_eq!(client.get("/x").unwrap()["connection"], n);
            assert_eq!(closed.recv().unwrap(), n as usize);
        }
    }

    #[test]
    fn refusals_carry_the_api_message_or_the_start_of_the_body() {
        let api = br#"{"error":{"code":"unauthorized","message":"send a key"}}"#;
        match refusal(401, api) {
            ClientError::Refused {
                status,
                code,
                message,
            } => assert_eq!(
                (status, code.as_str(), message.as_str()),
                (401, "unauthorized", "send a key")
            ),
            other => panic!("{other:?}"),
        }
        match refusal(400, b"\x1b[2Jgone") {
            ClientError::Refused { message, .. } => assert_eq!(message, " [2Jgone"),
            other => panic!("{other:?}"),
        }
        let long = vec![b'x'; 2000];
        match refusal(502, &long) {
            ClientError::Refused { code, message, .. } => {
                assert!(code.is_empty());
                assert_eq!(message.len(), MAX_SHOWN_ERROR);
            }
            other => panic!("{other:?}"),
        }
    }
}
