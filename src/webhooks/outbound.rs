//! One webhook HTTP attempt: vet the destination's addresses, POST over a pooled HTTP/1.1 connection, keep a bounded excerpt of the answer.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

use super::ssrf;

/// The longest any attempt may take, whatever the endpoint asks for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a response body is kept; the rest is never downloaded.
pub const EXCERPT_LIMIT: usize = 4096;
/// Enough to keep a busy endpoint's connections warm without letting one
/// endpoint hold hundreds of idle sockets.
const MAX_IDLE_PER_DESTINATION: usize = 32;
/// Under nginx's 75 s keep-alive; servers that close sooner (Apache and
/// Node.js: 5 s) are covered by the retry on a stale pooled connection.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections of destinations no longer sent to are dropped this
/// often (counted in check-ins), so the pool cannot grow without bound.
const SWEEP_EVERY_CHECK_INS: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// An endpoint URL taken apart for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// Lower-case host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// Starts with `/`.
    pub path_and_query: String,
}

impl Target {
    fn literal_ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// `scheme://host[:port]`: for messages and logs, which should not
    /// repeat a token the endpoint put in its query string.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.authority())
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.path_and_query
        )
    }
}

/// Checks an endpoint URL and takes it apart; the message says what to fix.
pub fn parse_target(url: &str, require_https: bool) -> Result<Target, String> {
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("the URL contains spaces or control characters; percent-encode them".into());
    }
    if !url.is_ascii() {
        return Err(
            "the URL contains non-ASCII characters; percent-encode the path and write the host in its xn-- form"
                .into(),
        );
    }
    if url.contains('\\') {
        // Browsers read `\` as `/` and other parsers do not; refusing it keeps
        // every reader of the URL agreeing on the host.
        return Err("the URL contains a backslash; use `/` or percent-encode it".into());
    }
    let (scheme_text, rest) = url
        .split_once("://")
        .ok_or("the URL must start with https:// or http://")?;
    let scheme = match scheme_text.to_ascii_lowercase().as_str() {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        _ => {
            return Err(format!(
                "`{scheme_text}://` is not supported; use https:// or http://"
            ))
        }
    };
    if require_https && scheme == Scheme::Http {
        return Err("the URL must use https:// (plain http is turned off)".into());
    }
    if rest.contains('#') {
        return Err("the URL must not have a #fragment; it is never sent".into());
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(
            "the URL must not carry credentials (user:password@); send them in a header instead"
                .into(),
        );
    }
    let (host, port) = split_host_port(authority, scheme)?;
    let path_and_query = match path_and_query.chars().next() {
        None => "/".to_owned(),
        Some('?') => format!("/{path_and_query}"),
        Some(_) => path_and_query.to_owned(),
    };
    if Uri::try_from(path_and_query.as_str()).is_err() {
        return Err(format!(
            "the path `{path_and_query}` is not valid in a URL; percent-encode it"
        ));
    }
    Ok(Target {
        scheme,
        host,
        port,
        path_and_query,
    })
}

fn split_host_port(authority: &str, scheme: Scheme) -> Result<(String, u16), String> {
    let (host, port_text) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or("the URL's IPv6 address is missing its closing `]`")?;
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("`[{inside}]` is not an IPv6 address"))?;
        let port_text = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected `{after}` after the IPv6 address"))?,
            ),
        };
        (ip.to_string(), port_text)
    } else {
        let (host, port_text) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if port_text.is_some_and(|p| p.contains(':')) {
            return Err(
                "an IPv6 address in a URL must be written in brackets: http://[::1]/".into(),
            );
        }
        (checked_host_name(host)?, port_text)
    };
    let port = match port_text {
        None => scheme.default_port(),
        Some(text) => text
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0 && text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("`{text}` is not a port number (1-65535)"))?,
    };
    Ok((host, port))
}

fn checked_host_name(host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    let host = host.to_ascii_lowercase();
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(host);
    }
    let labels_text = host.strip_suffix('.').unwrap_or(&host);
    if labels_text.len() > 253 {
        return Err("the host name is longer than 253 characters".into());
    }
    let labels: Vec<&str> = labels_text.split('.').collect();
    for label in &labels {
        let valid = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(format!("`{host}` is not a valid host name"));
        }
    }
    // Resolvers read `127.1`, `2130706433` and `0x7f.1` as IPv4 addresses;
    // only the dotted-quad form is accepted, so the URL means one thing.
    let last = labels.last().copied().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        return Err(format!(
            "`{host}` is not a valid IPv4 address; write all four parts, e.g. 192.0.2.1"
        ));
    }
    Ok(host)
}

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

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// 0 when no HTTP answer was received.
    pub status: u16,
    pub error: Option<String>,
    pub latency: Duration,
    /// At most [`EXCERPT_LIMIT`] bytes of the body, invalid UTF-8 replaced.
    pub response_excerpt: String,
    /// The raw `Retry-After` header, if any.
    pub retry_after: Option<String>,
    pub timed_out: bool,
}

impl Outcome {
    /// An attempt that got no HTTP answer, for the reason given.
    pub fn refused(reason: impl Into<String>) -> Outcome {
        Outcome {
            status: 0,
            error: Some(reason.into()),
            latency: Duration::ZERO,
            response_excerpt: String::new(),
            retry_after: None,
            timed_out: false,
        }
    }

    fn timed_out(limit: Duration) -> Outcome {
        Outcome {
            timed_out: true,
            ..Outcome::refused(format!(
                "no response within {}",
                humantime::format_duration(limit)
            ))
        }
    }
}

/// Sends webhook attempts, keeping idle connections for reuse.
pub struct Client {
    policy: ssrf::Policy,
    /// An error only if the TLS library refuses its own defaults; then
    /// https attempts fail with that message instead of the daemon failing.
    tls: Result<TlsConnector, String>,
    idle: Mutex<IdlePool>,
}

/// A pooled connection is only reused for the same host name *and* the same
/// vetted address, so an address vetted for one name never serves another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Destination {
    scheme: Scheme,
    host: String,
    port: u16,
    address: SocketAddr,
}

struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// The task driving the socket; aborting it closes the socket.
    driver: AbortHandle,
}

/// Dropping a connection closes it at once: a response body that was not
/// read to its end must not go on downloading in the background.
impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

struct IdleConnection {
    connection: Connection,
    since: Instant,
}

impl IdleConnection {
    fn is_usable(&self) -> bool {
        !self.connection.sender.is_closed() && self.since.elapsed() < IDLE_TIMEOUT
    }
}

#[derive(Default)]
struct IdlePool {
    by_destination: HashMap<Destination, Vec<IdleConnection>>,
    check_ins: u64,
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
            tls: tls_connector(),
            idle: Mutex::new(IdlePool::default()),
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
            Err(_) => Outcome::timed_out(limit),
        };
        outcome.latency = started.elapsed();
        outcome
    }

    async fn exchange(&self, attempt: &Attempt<'_>, deadline: Instant) -> Outcome {
        let target = attempt.target;
        // Built once up front so that bad headers are refused before any
        // connection is made.
        if let Err(reason) = build_request(attempt) {
            return Outcome::refused(reason);
        }
        let addresses = match self.vetted_addresses(target).await {
            Ok(addresses) => addresses,
            Err(reason) => return Outcome::refused(reason),
        };
        let (response, destination, connection) = match self.request(attempt, &addresses).await {
            Ok(answer) => answer,
            Err(reason) => return Outcome::refused(reason),
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
        let error = match &end {
            BodyEnd::Complete | BodyEnd::Truncated => None,
            BodyEnd::Broken(reason) => Some(format!("the response body broke off: {reason}")),
            BodyEnd::TimedOut => Some("the response body did not arrive in time".to_owned()),
        };
        if matches!(end, BodyEnd::Complete) && !server_closes {
            self.check_in(destination, connection);
        }
        Outcome {
            status,
            error,
            latency: Duration::ZERO,
            response_excerpt: excerpt_text(&excerpt, matches!(end, BodyEnd::Truncated)),
            retry_after,
            timed_out: false,
        }
    }

    /// Every address the host resolves to, or a refusal if any of them is
    /// not permitted: a name that also points inward is refused outright
    /// rather than tried until an allowed address answers.
    async fn vetted_addresses(&self, target: &Target) -> Result<Vec<SocketAddr>, String> {
        let host = target.host.as_str();
        let addresses: Vec<SocketAddr> = match target.literal_ip() {
            Some(ip) => vec![SocketAddr::new(ip, target.port)],
            None => tokio::net::lookup_host((host, target.port))
                .await
                .map_err(|e| format!("could not resolve {host}: {e}"))?
                .collect(),
        };
        if addresses.is_empty() {
            return Err(format!("{host} resolves to no address"));
        }
        if let Some(refused) = addresses.iter().find(|a| !self.policy.permits(a.ip())) {
            let ip = refused.ip();
            let which = if target.literal_ip().is_some() {
                format!("destination {ip}")
            } else {
                format!("destination {host} ({ip})")
            };
            return Err(format!(
                "{which} is not a public address; add its network to the webhook allow-list to send there"
            ));
        }
        Ok(addresses)
    }

    async fn request(
        &self,
        attempt: &Attempt<'_>,
        addresses: &[SocketAddr],
    ) -> Result<(Response<Incoming>, Destination, Connection), String> {
        let target = attempt.target;
        if let Some((destination, mut connection)) = self.check_out(target, addresses).await {
            let request = build_request(attempt)?;
            match connection.sender.send_request(request).await {
                Ok(response) => return Ok((response, destination, connection)),
                // The server may have closed the idle connection as the
                // request went out; one more try on a fresh connection.
                // Receivers deduplicate on webhook-id, so a request that did
                // arrive before the close is harmless to repeat.
                Err(e) => tracing::debug!(
                    origin = %target.origin(),
                    error = %error_chain(&e),
                    "a pooled webhook connection failed; retrying on a new one"
                ),
            }
        }
        let (destination, mut connection) = self.connect(target, addresses).await?;
        let request = build_request(attempt)?;
        let response = connection.sender.send_request(request).await.map_err(|e| {
            format!(
                "the HTTP exchange with {} failed: {}",
                target.origin(),
                error_chain(&e)
            )
        })?;
        Ok((response, destination, connection))
    }

    async fn connect(
        &self,
        target: &Target,
        addresses: &[SocketAddr],
    ) -> Result<(Destination, Connection), String> {
        let mut last_error = String::new();
        for address in addresses {
            // The vetted address itself, never the name again: a second
            // lookup could answer differently (DNS rebinding).
            let tcp = match TcpStream::connect(address).await {
                Ok(tcp) => tcp,
                Err(e) => {
                    last_error = format!("could not connect to {address}: {e}");
                    continue;
                }
            };
            // Webhook requests are small and latency-bound.
            let _ = tcp.set_nodelay(true);
            let connection = match target.scheme {
                Scheme::Http => handshake(tcp).await,
                Scheme::Https => {
                    let tls = self.tls.as_ref().map_err(Clone::clone)?;
                    let server_name = rustls::pki_types::ServerName::try_from(target.host.clone())
                        .map_err(|_| {
                            format!("`{}` cannot be used as a TLS server name", target.host)
                        })?;
                    let stream = tls.connect(server_name, tcp).await.map_err(|e| {
                        format!("the TLS handshake with {} failed: {e}", target.origin())
                    })?;
                    handshake(stream).await
                }
            }
            .map_err(|e| {
                format!(
                    "the HTTP handshake with {} failed: {}",
                    target.origin(),
                    error_chain(&e)
                )
            })?;
            let destination = Destination {
                scheme: target.scheme,
                host: target.host.clone(),
                port: target.port,
                address: *address,
            };
            return Ok((destination, connection));
        }
        Err(last_error)
    }

    fn pool(&self) -> MutexGuard<'_, IdlePool> {
        // The pool holds no invariant a panicking holder could break.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn check_out(
        &self,
        target: &Target,
        addresses: &[SocketAddr],
    ) -> Option<(Destination, Connection)> {
        loop {
            let found = {
                let mut pool = self.pool();
                addresses.iter().find_map(|address| {
                    let destination = Destination {
                        scheme: target.scheme,
                        host: target.host.clone(),
                        port: target.port,
                        address: *address,
                    };
                    let idle = pool.by_destination.get_mut(&destination)?;
                    while let Some(candidate) = idle.pop() {
                        if candidate.is_usable() {
                            return Some((destination, candidate.connection));
                        }
                    }
                    None
                })
            };
            let (destination, mut connection) = found?;
            if connection.sender.ready().await.is_ok() {
                return Some((destination, connection));
            }
        }
    }

    fn check_in(&self, destination: Destination, connection: Connection) {
        if connection.sender.is_closed() {
            return;
        }
        let mut pool = self.pool();
        pool.check_ins = pool.check_ins.wrapping_add(1);
        if pool.check_ins % SWEEP_EVERY_CHECK_INS == 0 {
            pool.by_destination.retain(|_, idle| {
                idle.retain(IdleConnection::is_usable);
                !idle.is_empty()
            });
        }
        let idle = pool.by_destination.entry(destination).or_default();
        if idle.len() < MAX_IDLE_PER_DESTINATION {
            idle.push(IdleConnection {
                connection,
                since: Instant::now(),
            });
        }
    }
}

fn tls_connector() -> Result<TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS is unavailable: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn handshake<S>(stream: S) -> Result<Connection, hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        // Its errors surface to the request that was in flight.
        let _ = driver.await;
    });
    Ok(Connection {
        sender,
        driver: driver.abort_handle(),
    })
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

fn build_request(attempt: &Attempt<'_>) -> Result<Request<Full<Bytes>>, String> {
    let target = attempt.target;
    let mut request = Request::new(Full::new(attempt.body.clone()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::try_from(target.path_and_query.as_str())
        .map_err(|_| format!("the path `{}` is not valid", target.path_and_query))?;
    let headers = request.headers_mut();
    for (name, value) in &attempt.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
        if is_reserved_header(&name) {
            continue;
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header `{name}` is not valid in HTTP"))?;
        headers.append(name, value);
    }
    let authority = target.authority();
    let host = HeaderValue::from_str(&authority)
        .map_err(|_| format!("`{authority}` is not a valid Host header"))?;
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
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const BIG_BODY: usize = 1 << 20;

    /// A raw HTTP/1.1 server on 127.0.0.1 whose answer depends on the path.
    struct TestServer {
        port: u16,
        connections: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<String>>>,
    }

    impl TestServer {
        async fn start() -> TestServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let connections = Arc::new(AtomicUsize::new(0));
            let requests = Arc::new(Mutex::new(Vec::new()));
            let (counted, recorded) = (connections.clone(), requests.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    counted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve_connection(stream, recorded.clone()));
                }
            });
            TestServer {
                port,
                connections,
                requests,
            }
        }

        fn target(&self, path: &str) -> Target {
            parse_target(&format!("http://127.0.0.1:{}{path}", self.port), false).unwrap()
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }

        fn last_request(&self) -> String {
            self.requests
                .lock()
                .unwrap()
                .last()
                .cloned()
                .unwrap_or_default()
        }
    }

    async fn serve_connection(mut stream: TcpStream, requests: Arc<Mutex<Vec<String>>>) {
        let mut buffer = Vec::new();
        loop {
            let head_end = loop {
                if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
            let content_length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buffer.len() < head_end + content_length {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            }
            let body =
                String::from_utf8_lossy(&buffer[head_end..head_end + content_length]).into_owned();
            buffer.drain(..head_end + content_length);
            let path = head
                .split_whitespace()
                .nth(1)
                .and_then(|target| target.split('?').next())
                .unwrap_or("/")
                .to_owned();
            requests.lock().unwrap().push(format!("{head}{body}"));
            let written = match path.as_str() {
                "/ok" => {
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                        .await
                }
                "/fail" => {
                    stream
                        .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nboom")
                        .await
                }
                "/redirect" => {
                    stream
                        .write_all(b"HTTP/1.1 302 Found\r\nlocation: /ok\r\ncontent-length: 0\r\n\r\n")
                        .await
                }
                "/throttle" => {
                    stream
                        .write_all(b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 120\r\ncontent-length: 0\r\n\r\n")
                        .await
                }
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                }
                "/big" => {
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG_BODY}\r\n\r\n");
                    let mut result = stream.write_all(head.as_bytes()).await;
                    let chunk = vec![b'x'; 64 * 1024];
                    for _ in 0..BIG_BODY / chunk.len() {
                        if result.is_err() {
                            break;
                        }
                        result = stream.write_all(&chunk).await;
                    }
                    result
                }
                _ => {
                    stream
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                        .await
                }
            };
            if written.is_err() {
                return;
            }
        }
    }

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
        assert_eq!(outcome.error, None);
        assert!(!outcome.timed_out);
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
        assert_eq!(outcome.error, None);
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
        assert_eq!(outcome.status, 0);
        assert!(outcome.timed_out);
        assert!(
            outcome
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("300ms"),
            "{outcome:?}"
        );
        assert!(outcome.latency >= Duration::from_millis(300));
        assert!(outcome.latency < Duration::from_secs(5));
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
        assert_eq!(outcome.error, None);
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
        for idle in client.pool().by_destination.values_mut() {
            for connection in idle.iter() {
                connection.connection.driver.abort();
            }
        }
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
        assert!(!outcome.timed_out);
        let error = outcome.error.unwrap_or_default();
        assert!(error.contains("127.0.0.1"), "{error}");
        assert!(error.contains("not a public address"), "{error}");
        assert!(server.requests.lock().unwrap().is_empty());
        assert_eq!(server.connections(), 0);
    }

    #[tokio::test]
    async fn a_host_name_resolving_to_loopback_is_refused_unless_allowed() {
        let server = TestServer::start().await;
        let target = parse_target(&format!("http://localhost:{}/ok", server.port), false).unwrap();
        let refused = Client::new(ssrf::Policy::default())
            .send(attempt(&target))
            .await;
        assert_eq!(refused.status, 0);
        let error = refused.error.unwrap_or_default();
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
        let target = parse_target("http://[::ffff:127.0.0.1]:9/", false).unwrap();
        let outcome = Client::new(ssrf::Policy::default())
            .send(attempt(&target))
            .await;
        assert!(outcome
            .error
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
        assert!(outcome.error.unwrap_or_default().contains("x-bad"));
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
        let target = parse_target(&format!("http://127.0.0.1:{port}/"), false).unwrap();
        let outcome = loopback_allowed().send(attempt(&target)).await;
        assert_eq!(outcome.status, 0);
        assert!(!outcome.timed_out);
        assert!(outcome
            .error
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
        let target = parse_target(&format!("https://127.0.0.1:{port}/ok"), true).unwrap();
        let outcome = loopback_allowed().send(attempt(&target)).await;
        assert_eq!(outcome.status, 0);
        assert!(!outcome.timed_out);
        let error = outcome.error.unwrap_or_default();
        assert!(error.contains("TLS handshake"), "{error}");
    }

    #[test]
    fn targets_are_taken_apart() {
        let t = parse_target("HTTPS://Hooks.Example.COM/in?x=1&y=2", true).unwrap();
        assert_eq!(t.scheme, Scheme::Https);
        assert_eq!(t.host, "hooks.example.com");
        assert_eq!(t.port, 443);
        assert_eq!(t.path_and_query, "/in?x=1&y=2");
        assert_eq!(t.authority(), "hooks.example.com");
        assert_eq!(t.to_string(), "https://hooks.example.com/in?x=1&y=2");

        let t = parse_target("http://example.com", false).unwrap();
        assert_eq!((t.port, t.path_and_query.as_str()), (80, "/"));
        let t = parse_target("http://example.com?q", false).unwrap();
        assert_eq!(t.path_and_query, "/?q");
        let t = parse_target("http://[::1]:8080/a", false).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert_eq!(t.authority(), "[::1]:8080");
        let t = parse_target("http://127.0.0.1:3000/h", false).unwrap();
        assert_eq!(t.authority(), "127.0.0.1:3000");
        let t = parse_target("https://example.com:443/", false).unwrap();
        assert_eq!(t.authority(), "example.com");
        let t = parse_target("http://my_host.internal./", false).unwrap();
        assert_eq!(t.host, "my_host.internal.");
    }

    #[test]
    fn bad_targets_are_refused_with_a_reason() {
        let cases = [
            ("ftp://example.com/", "not supported"),
            ("example.com/hook", "must start with https://"),
            ("https://user:pass@example.com/", "credentials"),
            ("https://token@example.com/", "credentials"),
            ("http://example.com/", "must use https://"),
            ("https://example.com/#top", "fragment"),
            ("https:///path", "no host"),
            ("https://:443/", "no host"),
            ("https://exa mple.com/", "spaces"),
            ("https://example.com/\n", "control"),
            ("https://exämple.com/", "non-ASCII"),
            ("https://example.com\\@evil.com/", "backslash"),
            ("https://example.com:0/", "not a port"),
            ("https://example.com:65536/", "not a port"),
            ("https://example.com:+80/", "not a port"),
            ("https://example.com:/", "not a port"),
            ("https://::1/", "brackets"),
            ("https://[::1/", "closing"),
            ("https://[nope]/", "not an IPv6 address"),
            ("https://[::1]x/", "unexpected"),
            ("https://127.1/", "IPv4"),
            ("https://2130706433/", "IPv4"),
            ("https://0x7f000001/", "IPv4"),
            ("https://a..b/", "not a valid host name"),
            ("https://-bad!.com/", "not a valid host name"),
        ];
        for (url, reason) in cases {
            let error = parse_target(url, true).unwrap_err();
            assert!(error.contains(reason), "{url}: {error}");
        }
        assert!(parse_target("http://example.com/", false).is_ok());
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
