//! One webhook HTTP attempt: vet the destination's addresses, POST over a
//! pooled HTTP/1.1 connection, keep a bounded excerpt of the answer, and
//! say precisely what went wrong when no answer came.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

use super::pool::{Connection, Destination, Pool};
use super::ssrf;
use super::target::{Scheme, Target};

/// The longest any attempt may take, whatever the endpoint asks for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a response body is kept; the rest is never downloaded.
pub const EXCERPT_LIMIT: usize = 4096;

/// One POST to send.
pub struct Attempt<'a> {
    pub target: &'a Target,
    /// Sent as given, except `host`, `content-length` and the hop-by-hop
    /// headers, which describe the connection and are the client's to set.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Capped at [`MAX_TIMEOUT`]; covers resolving, connecting and the whole
    /// exchange.
    pub timeout: Duration,
}

/// Why an attempt went wrong, told apart so the attempt log and the retry
/// policy can treat each as what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Never sent: the destination is not a permitted address.
    Refused(String),
    /// Never sent: the request could not be built (a header, the path).
    InvalidRequest(String),
    /// The host name did not resolve.
    Dns(String),
    /// No TCP connection could be made.
    Connect(String),
    /// The TLS handshake failed (certificate, protocol).
    Tls(String),
    /// No answer within the timeout.
    Timeout(Duration),
    /// The connection broke during the exchange (reset, closed early).
    Connection(String),
    /// An answer arrived but its body broke off or came too slowly.
    Body(String),
}

impl Failure {
    /// The stable name shown in the attempt log.
    pub fn kind(&self) -> FailureKind {
        match self {
            Failure::Refused(_) => FailureKind::Refused,
            Failure::InvalidRequest(_) => FailureKind::InvalidRequest,
            Failure::Dns(_) => FailureKind::Dns,
            Failure::Connect(_) => FailureKind::Connect,
            Failure::Tls(_) => FailureKind::Tls,
            Failure::Timeout(_) => FailureKind::Timeout,
            Failure::Connection(_) => FailureKind::Connection,
            Failure::Body(_) => FailureKind::Body,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout(limit) => write!(
                f,
                "no response within {}",
                humantime::format_duration(*limit)
            ),
            Failure::Refused(m)
            | Failure::InvalidRequest(m)
            | Failure::Dns(m)
            | Failure::Connect(m)
            | Failure::Tls(m)
            | Failure::Connection(m)
            | Failure::Body(m) => f.write_str(m),
        }
    }
}

pub use crate::store::records::FailureKind;

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// 0 when no HTTP answer was received.
    pub status: u16,
    pub failure: Option<Failure>,
    pub latency: Duration,
    /// At most [`EXCERPT_LIMIT`] bytes of the body, invalid UTF-8 replaced.
    pub response_excerpt: String,
    /// The raw `Retry-After` header, if any.
    pub retry_after: Option<String>,
}

impl Outcome {
    /// An attempt that got no HTTP answer.
    pub fn failed(failure: Failure) -> Outcome {
        Outcome {
            status: 0,
            failure: Some(failure),
            latency: Duration::ZERO,
            response_excerpt: String::new(),
            retry_after: None,
        }
    }

    /// A 2xx answer, which is what a receiver's success is.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn error_text(&self) -> Option<String> {
        self.failure.as_ref().map(ToString::to_string)
    }
}

/// Sends webhook attempts, keeping idle connections for reuse.
pub struct Client {
    policy: ssrf::Policy,
    /// An error only if the TLS library refuses its own defaults; then
    /// https attempts fail with that message instead of the daemon failing.
    tls: Result<TlsConnector, String>,
    pool: Pool,
}

enum BodyEnd {
    Complete,
    Truncated,
    Broken(String),
    TimedOut,
}

impl Client {
    pub fn new(policy: ssrf::Policy) -> Client {
        Client {
            policy,
            tls: crate::tls::https_connector(Vec::new()),
            pool: Pool::default(),
        }
    }

    /// Makes the attempt; every failure is reported in the outcome, never
    /// raised. Redirects are not followed: a 3xx is the outcome.
    pub async fn send(&self, attempt: Attempt<'_>) -> Outcome {
        let started = Instant::now();
        let limit = attempt.timeout.min(MAX_TIMEOUT);
        let deadline = started + limit;
        let mut outcome = match timeout_at(deadline, self.exchange(&attempt, deadline)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::failed(Failure::Timeout(limit)),
        };
        outcome.latency = started.elapsed();
        outcome
    }

    async fn exchange(&self, attempt: &Attempt<'_>, deadline: Instant) -> Outcome {
        // Built up front so that bad headers are refused before any
        // connection is made.
        let request = match build_request(attempt) {
            Ok(request) => request,
            Err(failure) => return Outcome::failed(failure),
        };
        let answer = match self.vetted_addresses(attempt.target).await {
            Ok(addresses) => self.request(attempt, request, &addresses).await,
            Err(failure) => Err(failure),
        };
        let (response, destination, connection) = match answer {
            Ok(answer) => answer,
            Err(failure) => return Outcome::failed(failure),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let server_closes = response
            .headers()
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let mut body = response.into_body();
        let (excerpt, end) = read_excerpt(&mut body, deadline).await;
        let failure = match &end {
            BodyEnd::Complete | BodyEnd::Truncated => None,
            BodyEnd::Broken(reason) => Some(Failure::Body(format!(
                "the response body broke off: {reason}"
            ))),
            BodyEnd::TimedOut => Some(Failure::Body(
                "the response body did not arrive in time".to_owned(),
            )),
        };
        if matches!(end, BodyEnd::Complete) && !server_closes {
            self.pool.check_in(destination, connection);
        }
        Outcome {
            status,
            failure,
            latency: Duration::ZERO,
            response_excerpt: excerpt_text(&excerpt, matches!(end, BodyEnd::Truncated)),
            retry_after,
        }
    }

    /// Every address the host resolves to, or a refusal if any of them is
    /// not permitted: a name that also points inward is refused outright
    /// rather than tried until an allowed address answers.
    async fn vetted_addresses(&self, target: &Target) -> Result<Vec<SocketAddr>, Failure> {
        let host = target.host.as_str();
        let addresses: Vec<SocketAddr> = match target.literal_ip() {
            Some(ip) => vec![SocketAddr::new(ip, target.port)],
            None => tokio::net::lookup_host((host, target.port))
                .await
                .map_err(|e| Failure::Dns(format!("could not resolve {host}: {e}")))?
                .collect(),
        };
        if addresses.is_empty() {
            return Err(Failure::Dns(format!("{host} resolves to no address")));
        }
        if let Some(refused) = addresses.iter().find(|a| !self.policy.permits(a.ip())) {
            let ip = refused.ip();
            let which = if target.literal_ip().is_some() {
                format!("destination {ip}")
            } else {
                format!("destination {host} ({ip})")
            };
            return Err(Failure::Refused(format!(
                "{which} is not a public address; add its network to the webhook allow-list to send there"
            )));
        }
        Ok(addresses)
    }

    /// Sends `request`, built from `attempt`, which builds it again if a
    /// pooled connection fails under it.
    async fn request(
        &self,
        attempt: &Attempt<'_>,
        request: Request<Full<Bytes>>,
        addresses: &[SocketAddr],
    ) -> Result<(Response<Incoming>, Destination, Connection), Failure> {
        let target = attempt.target;
        let request = match self.pool.check_out(target, addresses).await {
            Some((destination, mut connection)) => {
                match connection.sender.send_request(request).await {
                    Ok(response) => return Ok((response, destination, connection)),
                    // The server may have closed the idle connection as the
                    // request went out; one more try on a fresh connection.
                    // Receivers deduplicate on webhook-id, so a request that
                    // did arrive before the close is harmless to repeat.
                    Err(e) => {
                        tracing::debug!(
                            origin = %target.origin(),
                            error = %error_chain(&e),
                            "a pooled webhook connection failed; retrying on a new one"
                        );
                        build_request(attempt)?
                    }
                }
            }
            None => request,
        };
        let (destination, mut connection) = self.connect(target, addresses).await?;
        let response = connection.sender.send_request(request).await.map_err(|e| {
            Failure::Connection(format!(
                "the HTTP exchange with {} failed: {}",
                target.origin(),
                error_chain(&e)
            ))
        })?;
        Ok((response, destination, connection))
    }

    async fn connect(
        &self,
        target: &Target,
        addresses: &[SocketAddr],
    ) -> Result<(Destination, Connection), Failure> {
        let mut last_error = Failure::Connect(format!("{} has no address", target.origin()));
        for address in addresses {
            // The vetted address itself, never the name again: a second
            // lookup could answer differently (DNS rebinding).
            let tcp = match TcpStream::connect(address).await {
                Ok(tcp) => tcp,
                Err(e) => {
                    last_error = Failure::Connect(format!("could not connect to {address}: {e}"));
                    continue;
                }
            };
            // Webhook requests are small and latency-bound.
            let _ = tcp.set_nodelay(true);
            let handshake_failed = |e: hyper::Error| {
                Failure::Connection(format!(
                    "the HTTP handshake with {} failed: {}",
                    target.origin(),
                    error_chain(&e)
                ))
            };
            let connection = match target.scheme {
                Scheme::Http => Connection::handshake(tcp).await.map_err(handshake_failed)?,
                Scheme::Https => {
                    let tls = self.tls.as_ref().map_err(|e| Failure::Tls(e.clone()))?;
                    let server_name = rustls::pki_types::ServerName::try_from(target.host.clone())
                        .map_err(|_| {
                            Failure::Tls(format!(
                                "`{}` cannot be used as a TLS server name",
                                target.host
                            ))
                        })?;
                    let stream = tls.connect(server_name, tcp).await.map_err(|e| {
                        Failure::Tls(format!(
                            "the TLS handshake with {} failed: {e}",
                            target.origin()
                        ))
                    })?;
                    Connection::handshake(stream)
                        .await
                        .map_err(handshake_failed)?
                }
            };
            return Ok((Destination::new(target, *address), connection));
        }
        Err(last_error)
    }
}

/// Headers that describe the connection or the framing, which only the
/// client may decide.
fn is_reserved_header(name: &HeaderName) -> bool {
    [
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

fn build_request(attempt: &Attempt<'_>) -> Result<Request<Full<Bytes>>, Failure> {
    let invalid = |m: String| Failure::InvalidRequest(m);
    let target = attempt.target;
    let mut request = Request::new(Full::new(attempt.body.clone()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::try_from(target.path_and_query.as_str())
        .map_err(|_| invalid(format!("the path `{}` is not valid", target.path_and_query)))?;
    let headers = request.headers_mut();
    for (name, value) in &attempt.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("`{name}` is not a valid HTTP header name")))?;
        if is_reserved_header(&name) {
            continue;
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| invalid(format!("the value of header `{name}` is not valid in HTTP")))?;
        headers.append(name, value);
    }
    let authority = target.authority();
    let host = HeaderValue::from_str(&authority)
        .map_err(|_| invalid(format!("`{authority}` is not a valid Host header")))?;
    headers.insert(header::HOST, host);
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(attempt.body.len()),
    );
    Ok(request)
}

async fn read_excerpt(body: &mut Incoming, deadline: Instant) -> (Vec<u8>, BodyEnd) {
    let mut excerpt = Vec::new();
    loop {
        if excerpt.len() >= EXCERPT_LIMIT {
            let end = if body.is_end_stream() {
                BodyEnd::Complete
            } else {
                BodyEnd::Truncated
            };
            return (excerpt, end);
        }
        let frame = match timeout_at(deadline, body.frame()).await {
            Err(_) => return (excerpt, BodyEnd::TimedOut),
            Ok(None) => return (excerpt, BodyEnd::Complete),
            Ok(Some(Err(e))) => return (excerpt, BodyEnd::Broken(error_chain(&e))),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers carry nothing worth keeping here.
        if let Ok(data) = frame.into_data() {
            let room = EXCERPT_LIMIT - excerpt.len();
            if data.len() > room {
                excerpt.extend_from_slice(&data[..room]);
                return (excerpt, BodyEnd::Truncated);
            }
            excerpt.extend_from_slice(&data);
        }
    }
}

/// Lossy UTF-8, minus a character that the cut at the limit split in two.
fn excerpt_text(bytes: &[u8], truncated: bool) -> String {
    let mut end = bytes.len();
    if truncated {
        if let Err(e) = std::str::from_utf8(bytes) {
            if e.error_len().is_none() {
                end = e.valid_up_to();
            }
        }
    }
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// hyper's own messages are terse ("connection error"); the causes say
/// what actually happened.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::super::target::parse;
    use super::super::test_server::TestServer;
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn loopback_allowed() -> Client {
        Client::new(ssrf::Policy {
            allow: vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()],
        })
    }

    fn attempt(target: &Target) -> Attempt<'_> {
        Attempt {
            target,
            headers: vec![("webhook-id".into(), "msg_1".into())],
            body: Bytes::from_static(b"{\"a\":1}"),
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn a_200_returns_status_and_body_and_sends_the_request_as_given() {
        let server = TestServer::start().await;
        let target = server.target("/ok?x=1");
        let mut request = attempt(&target);
        request.headers.push(("host".into(), "evil.example".into()));
        request.headers.push(("content-length".into(), "1".into()));
        let outcome = loopback_allowed().send(request).await;
        assert_eq!(outcome.status, 200, "{outcome:?}");
        assert_eq!(outcome.response_excerpt, "hello");
        assert_eq!(outcome.error_text(), None);
        assert!(!matches!(outcome.failure, Some(Failure::Timeout(_))));
        assert!(outcome.latency > Duration::ZERO);
        let seen = server.last_request().to_ascii_lowercase();
        assert!(seen.starts_with("post /ok?x=1 http/1.1\r\n"), "{seen}");
        assert!(seen.contains("webhook-id: msg_1\r\n"), "{seen}");
        assert!(
            seen.contains(&format!("host: 127.0.0.1:{}\r\n", server.port)),
            "{seen}"
        );
        assert!(seen.contains("content-length: 7\r\n"), "{seen}");
        assert!(!seen.contains("evil.example"), "{seen}");
        assert!(seen.ends_with("\r\n\r\n{\"a\":1}"), "{seen}");
    }

    #[tokio::test]
    async fn a_500_is_returned_with_its_body() {
        let server = TestServer::start().await;
        let target = server.target("/fail");
        let outcome = loopback_allowed().send(attempt(&target)).await;
        assert_eq!(outcome.status, 500);
        assert_eq!(outcome.response_excerpt, "boom");
        assert_eq!(outcome.error_text(), None);
    }

    #[tokio::test]
    async fn a_redirect_is_returned_not_followed() {
        let server = TestServer::start().await;
        let target = server.target("/redirect");
        let outcome = loopback_allowed().send(attempt(&target)).await;
        assert_eq!(outcome.status, 302);
        assert_eq!(server.requests.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn retry_after_is_passed_on() {
        let server = TestServer::start().await;
        let target = server.target("/throttle");
        let outcome = loopback_allowed().send(attempt(&target)).await;
        assert_eq!(outcome.status, 429);
        assert_eq!(outcome.retry_after.as_deref(), Some("120"));
    }

    #[tokio::test]
    async fn a_slow_server_times_out_with_no_status() {
        let server = TestServer::start().await;
        let target = server.target("/slow");
        let mut request = attempt(&target);
        request.timeout = Duration::from_millis(300);
        let outcome = loopback_allowed().send(request).await;
        // The server answers 200 after 10 s: no status and this limit as
        // the failure mean the timeout, not the answer, ended the attempt.
        assert_eq!(outcome.status, 0);
        assert_eq!(
            outcome.failure,
            Some(Failure::Timeout(Duration::from_millis(300)))
        );
        assert!(
            outcome
                .error_text()
                .as_deref()
                .unwrap_or_default()
                .contains("300ms"),
            "{outcome:?}"
        );
        assert!(outcome.latency >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn an_oversized_body_yields_a_bounded_excerpt_and_a_fresh_connection_next() {
        let server = TestServer::start().await;
        let client = loopback_allowed();
        let target = server.target("/big");
        let outcome = client.send(attempt(&target)).await;
        assert_eq!(outcome.status, 200);
        assert_eq!(outcome.response_excerpt.len(), EXCERPT_LIMIT);
        assert!(outcome.response_excerpt.bytes().all(|b| b == b'x'));
        assert_eq!(outcome.error_text(), None);
        let target = server.target("/ok");
        assert_eq!(client.send(attempt(&target)).await.status, 200);
        assert_eq!(server.connections(), 2);
    }

    #[tokio::test]
    async fn connections_are_kept_alive_and_reused() {
        let server = TestServer::start().await;
        let client = loopback_allowed();
        let target = server.target("/ok");
        for _ in 0..3 {
            assert_eq!(client.send(attempt(&target)).await.status, 200);
        }
        let target = server.target("/fail");
        assert_eq!(client.send(attempt(&target)).await.status, 500);
        assert_eq!(server.connections(), 1);
    }

    #[tokio::test]
    async fn a_closed_pooled_connection_is_replaced() {
        let server = TestServer::start().await;
        let client = loopback_allowed();
        let target = server.target("/ok");
        assert_eq!(client.send(attempt(&target)).await.status, 200);
        // Simulates the server closing the idle connection.
        client.pool.close_all();
        tokio::task::yield_now().await;
        assert_eq!(client.send(attempt(&target)).await.status, 200);
        assert_eq!(server.connections(), 2);
    }

    #[tokio::test]
    async fn loopback_is_refused_without_the_allow_list() {
        let server = TestServer::start().await;
        let target = server.target("/ok");
        let outcome = Client::new(ssrf::Policy::default())
            .send(attempt(&target))
            .await;
        assert_eq!(outcome.status, 0);
        assert_eq!(
            outcome.failure.as_ref().map(Failure::kind),
            Some(FailureKind::Refused)
        );
        let error = outcome.error_text().unwrap_or_default();
        assert!(error.contains("127.0.0.1"), "{error}");
        assert!(error.contains("not a public address"), "{error}");
        assert!(server.requests.lock().unwrap().is_empty());
        assert_eq!(server.connections(), 0);
    }

    #[tokio::test]
    async fn a_host_name_resolving_to_loopback_is_refused_unless_allowed() {
        let server = TestServer::start().await;
        let target = parse(&format!("http://localhost:{}/ok", server.port), false).unwrap();
        let refused = Client::new(ssrf::Policy::default())
            .send(attempt(&target))
            .await;
        assert_eq!(refused.status, 0);
        let error = refused.error_text().unwrap_or_default();
        assert!(
            error.contains("localhost") && error.contains("not a public address"),
            "{error}"
        );
        assert_eq!(server.connections(), 0);
        let allowed = loopback_allowed().send(attempt(&target)).await;
        assert_eq!(allowed.status, 200, "{allowed:?}");
    }

    #[tokio::test]
    async fn mapped_loopback_is_refused() {
        let target = parse("http://[::ffff:127.0.0.1]:9/", false).unwrap();
        let outcome = Client::new(ssrf::Policy::default())
            .send(attempt(&target))
            .await;
        assert!(outcome
            .error_text()
            .unwrap_or_default()
            .contains("not a public address"));
    }

    #[tokio::test]
    async fn invalid_headers_are_refused_before_connecting() {
        let server = TestServer::start().await;
        let target = server.target("/ok");
        let mut request = attempt(&target);
        request
            .headers
            .push(("x-bad".into(), "line\r\nbreak".into()));
        let outcome = loopback_allowed().send(request).await;
        assert_eq!(outcome.status, 0);
        assert_eq!(
            outcome.failure.as_ref().map(Failure::kind),
            Some(FailureKind::InvalidRequest)
        );
        assert!(outcome.error_text().unwrap_or_default().contains("x-bad"));
        let mut request = attempt(&target);
        request.headers.push(("bad name".into(), "v".into()));
        assert_eq!(loopback_allowed().send(request).await.status, 0);
        assert_eq!(server.connections(), 0);
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error_not_a_hang() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let target = parse(&format!("http://127.0.0.1:{port}/"), false).unwrap();
        let outcome = loopback_allowed().send(attempt(&target)).await;
        assert_eq!(outcome.status, 0);
        assert_eq!(
            outcome.failure.as_ref().map(Failure::kind),
            Some(FailureKind::Connect)
        );
        assert!(outcome
            .error_text()
            .unwrap_or_default()
            .contains("could not connect"));
    }

    #[tokio::test]
    async fn https_to_a_plain_http_server_fails_in_the_tls_handshake() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let target = parse(&format!("https://127.0.0.1:{port}/ok"), true).unwrap();
        let outcome = loopback_allowed().send(attempt(&target)).await;
        assert_eq!(outcome.status, 0);
        assert_eq!(
            outcome.failure.as_ref().map(Failure::kind),
            Some(FailureKind::Tls)
        );
        let error = outcome.error_text().unwrap_or_default();
        assert!(error.contains("TLS handshake"), "{error}");
    }

    #[test]
    fn a_cut_through_a_character_drops_the_partial_character() {
        let text = "é".repeat(EXCERPT_LIMIT);
        let cut = &text.as_bytes()[..EXCERPT_LIMIT - 1];
        let excerpt = excerpt_text(cut, true);
        assert_eq!(excerpt.len(), EXCERPT_LIMIT - 2);
        assert!(!excerpt.contains('\u{fffd}'));
        assert_eq!(excerpt_text(b"ok\xff", false), "ok\u{fffd}");
    }
}
