//! The two HTTPS GETs SNS asks of a subscriber: its signing certificate
//! (cached by URL) and a subscription's confirmation link. Only to hosts
//! the SES settings allow, bounded in time and size.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::common::unauthenticated;
use super::settings::SesSettings;
use super::{keys, ses, FeedbackError};

/// For the whole exchange: resolving, connecting, TLS, request and body.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A certificate is about 2 KiB and a confirmation answer less; anything
/// bigger is not what SNS sends.
pub const BODY_LIMIT: usize = 64 * 1024;
/// SNS rotates its certificate rarely and uses one per region: a handful
/// of entries is plenty, and the bound keeps forged URLs from growing it.
pub const CACHE_ENTRIES: usize = 64;
/// Fetches under way at once: anyone who knows an allowed topic can make
/// Herald fetch, so a burst of forged envelopes must not open sockets
/// without bound.
pub const CONCURRENT_FETCHES: usize = 4;

pub struct SnsFetcher {
    settings: SesSettings,
    tls: TlsConnector,
    cache: Mutex<Cache>,
    timeout: Duration,
    fetches: tokio::sync::Semaphore,
}

#[derive(Default)]
struct Cache {
    certificates: HashMap<String, Arc<Vec<u8>>>,
    /// Insertion order: the oldest entry goes first when full.
    order: VecDeque<String>,
}

impl Cache {
    fn insert(&mut self, url: String, certificate: Arc<Vec<u8>>) {
        if self.certificates.insert(url.clone(), certificate).is_none() {
            self.order.push_back(url);
        }
        while self.order.len() > CACHE_ENTRIES {
            if let Some(oldest) = self.order.pop_front() {
                self.certificates.remove(&oldest);
            }
        }
    }
}

impl SnsFetcher {
    /// Trusts Mozilla's roots plus the settings' extra CA certificates.
    pub fn new(settings: &SesSettings) -> Result<SnsFetcher, String> {
        let roots = crate::tls::ca_certificates(settings.ca_pem.as_deref().unwrap_or_default())?;
        let tls = crate::tls::https_connector(roots)?;
        Ok(SnsFetcher {
            settings: settings.clone(),
            tls,
            cache: Mutex::new(Cache::default()),
            timeout: FETCH_TIMEOUT,
            fetches: tokio::sync::Semaphore::new(CONCURRENT_FETCHES),
        })
    }

    /// The certificate at `url` (PEM as SNS serves it), from the cache
    /// when it was fetched before. Only a certificate with an RSA key is
    /// kept. A URL not allowed or a body that is no usable certificate
    /// refuses the message; a fetch that failed (network, TLS, an error
    /// status) leaves it to be retried.
    pub async fn certificate(&self, url: &str) -> Result<Arc<Vec<u8>>, FeedbackError> {
        if let Some(hit) = self.cached(url) {
            return Ok(hit);
        }
        let body = self.get(url).await.map_err(|e| match e {
            Fetch::NotAllowed(e) => unauthenticated(format!("the SNS signing certificate: {e}")),
            Fetch::Failed(e) => {
                FeedbackError::Unavailable(format!("the SNS signing certificate: {e}"))
            }
        })?;
        keys::certificate_rsa_key(&body)
            .map_err(|e| unauthenticated(format!("the SNS signing certificate at {url}: {e}")))?;
        let certificate = Arc::new(body);
        self.lock_cache()
            .insert(url.to_owned(), certificate.clone());
        Ok(certificate)
    }

    /// Visits a subscription's confirmation link; a 2xx answer confirms.
    pub async fn confirm(&self, subscribe_url: &str) -> Result<(), String> {
        self.get(subscribe_url).await.map(drop).map_err(|e| {
            let (Fetch::NotAllowed(e) | Fetch::Failed(e)) = e;
            format!("confirming the subscription: {e}")
        })
    }

    fn cached(&self, url: &str) -> Option<Arc<Vec<u8>>> {
        self.lock_cache().certificates.get(url).cloned()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache holds only whole entries: one left by a panicking
        // holder is still sound.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The body of a 2xx answer to a GET of `url`.
    async fn get(&self, url: &str) -> Result<Vec<u8>, Fetch> {
        if !ses::url_allowed(&self.settings, url) {
            return Err(Fetch::NotAllowed(format!(
                "{url} is not HTTPS on an allowed host"
            )));
        }
        let uri: Uri = url
            .parse()
            .map_err(|_| Fetch::NotAllowed(format!("{url} is not a URL")))?;
        let fetch = async {
            let _slot = self.fetches.acquire().await;
            self.exchange(&uri).await
        };
        match tokio::time::timeout(self.timeout, fetch).await {
            Ok(answer) => answer.map_err(|e| Fetch::Failed(format!("GET {url}: {e}"))),
            Err(_) => Err(Fetch::Failed(format!(
                "GET {url}: no answer within {}",
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    async fn exchange(&self, uri: &Uri) -> Result<Vec<u8>, String> {
        let authority = uri.authority().ok_or("the URL has no host")?;
        let host = authority.host();
        let port = authority.port_u16().unwrap_or(443);
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("could not connect: {e}"))?;
        let server_name = ServerName::try_from(host.to_owned())
            .map_err(|_| format!("{host} is not a valid TLS server name"))?;
        let tls = self
            .tls
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("the TLS handshake failed: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("the HTTP handshake failed: {e}"))?;
        // Dropped with this future (a timeout included), so the connection
        // never outlives the exchange.
        let driver = AbortOnDrop(tokio::spawn(connection));
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = Request::get(path)
            .header(HOST, authority.as_str())
            .header(USER_AGENT, concat!("herald/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("the request could not be built: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("the exchange failed: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the answer was {status}"));
        }
        let body = Limited::new(response.into_body(), BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("the answer is over {} KiB", BODY_LIMIT / 1024)
                } else {
                    format!("the answer broke off: {e}")
                }
            })?
            .to_bytes();
        drop(driver);
        Ok(body.to_vec())
    }
}

/// Why a GET gave no body.
enum Fetch {
    /// The URL may not be fetched at all.
    NotAllowed(String),
    /// It was tried and failed; a later try may work.
    Failed(String),
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::test_support::{
        SNS_CERT_PEM, TLS_CA_PEM, TLS_LOCALHOST_CERT_PEM, TLS_LOCALHOST_KEY_PEM,
    };
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper::{Response, StatusCode};
    use std::convert::Infallible;
    use tokio::net::TcpListener;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::TlsAcceptor;

    /// An HTTPS server on 127.0.0.1 with the test CA's localhost
    /// certificate; its answer depends on the path.
    struct CertServer {
        port: u16,
        paths: Arc<Mutex<Vec<String>>>,
    }

    impl CertServer {
        async fn start() -> CertServer {
            let certificates = CertificateDer::pem_slice_iter(TLS_LOCALHOST_CERT_PEM)
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(TLS_LOCALHOST_KEY_PEM).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certificates, key)
                .unwrap();
            let acceptor = TlsAcceptor::from(Arc::new(config));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let paths = Arc::new(Mutex::new(Vec::new()));
            let seen = paths.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, seen) = (acceptor.clone(), seen.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                let path = request.uri().to_string();
                                seen.lock().unwrap().push(path.clone());
                                Ok::<_, Infallible>(answer(&path).await)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
            CertServer { port, paths }
        }

        fn url(&self, path: &str) -> String {
            format!("https://localhost:{}{path}", self.port)
        }

        fn requests(&self) -> Vec<String> {
            self.paths.lock().unwrap().clone()
        }
    }

    async fn answer(path: &str) -> Response<Full<Bytes>> {
        let (status, body): (StatusCode, Vec<u8>) = match path {
            "/cert.pem" | "/other.pem" => (StatusCode::OK, SNS_CERT_PEM.to_vec()),
            "/big.pem" => (StatusCode::OK, vec![b'x'; BODY_LIMIT + 1]),
            "/not-a-cert.pem" => (StatusCode::OK, b"hello".to_vec()),
            "/redirect.pem" => (StatusCode::FOUND, Vec::new()),
            "/slow.pem" => {
                std::future::pending::<()>().await;
                unreachable!()
            }
            p if p.starts_with("/?Action=ConfirmSubscription") => (
                StatusCode::OK,
                b"<ConfirmSubscriptionResponse><ConfirmSubscriptionResult><SubscriptionArn>arn:aws:sns:us-east-1:123456789012:herald-feedback:1</SubscriptionArn></ConfirmSubscriptionResult></ConfirmSubscriptionResponse>".to_vec(),
            ),
            _ => (StatusCode::NOT_FOUND, b"no".to_vec()),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    }

    fn settings(ca_pem: Option<&[u8]>) -> SesSettings {
        SesSettings {
            topic_arns: vec!["arn:aws:sns:us-east-1:123456789012:herald-feedback".into()],
            cert_hosts: vec!["localhost".into()],
            ca_pem: ca_pem.map(<[u8]>::to_vec),
            auto_confirm: true,
        }
    }

    fn fetcher() -> SnsFetcher {
        SnsFetcher::new(&settings(Some(TLS_CA_PEM))).unwrap()
    }

    fn reason(result: Result<Arc<Vec<u8>>, FeedbackError>) -> String {
        match result {
            Err(FeedbackError::Unauthenticated(reason) | FeedbackError::Unavailable(reason)) => {
                reason
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_certificate_is_fetched_once_then_served_from_the_cache() {
        let server = CertServer::start().await;
        let fetcher = fetcher();
        let first = fetcher.certificate(&server.url("/cert.pem")).await.unwrap();
        assert_eq!(first.as_slice(), SNS_CERT_PEM);
        let second = fetcher.certificate(&server.url("/cert.pem")).await.unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(server.requests(), ["/cert.pem"]);
        fetcher
            .certificate(&server.url("/other.pem"))
            .await
            .unwrap();
        assert_eq!(server.requests(), ["/cert.pem", "/other.pem"]);
    }

    #[tokio::test]
    async fn failures_are_refusals_and_are_not_cached() {
        let server = CertServer::start().await;
        let fetcher = fetcher();
        let missing = reason(fetcher.certificate(&server.url("/missing.pem")).await);
        assert!(missing.contains("404"), "{missing}");
        let redirect = reason(fetcher.certificate(&server.url("/redirect.pem")).await);
        assert!(redirect.contains("302"), "{redirect}");
        let big = reason(fetcher.certificate(&server.url("/big.pem")).await);
        assert!(big.contains("over 64 KiB"), "{big}");
        let garbage = reason(fetcher.certificate(&server.url("/not-a-cert.pem")).await);
        assert!(garbage.contains("certificate"), "{garbage}");
        let _ = reason(fetcher.certificate(&server.url("/not-a-cert.pem")).await);
        assert_eq!(
            server
                .requests()
                .iter()
                .filter(|p| *p == "/not-a-cert.pem")
                .count(),
            2
        );
    }

    #[tokio::test]
    async fn a_disallowed_url_is_never_requested() {
        let server = CertServer::start().await;
        let fetcher = fetcher();
        for url in [
            format!("http://localhost:{}/cert.pem", server.port),
            format!("https://127.0.0.1:{}/cert.pem", server.port),
            format!("https://user@localhost:{}/cert.pem", server.port),
        ] {
            let refused = reason(fetcher.certificate(&url).await);
            assert!(
                refused.contains("not HTTPS on an allowed host"),
                "{refused}"
            );
        }
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn a_server_outside_the_trusted_roots_fails_the_handshake() {
        let server = CertServer::start().await;
        let untrusting = SnsFetcher::new(&settings(None)).unwrap();
        let refused = reason(untrusting.certificate(&server.url("/cert.pem")).await);
        assert!(refused.contains("TLS handshake"), "{refused}");
        assert!(server.requests().is_empty());
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let server = CertServer::start().await;
        let mut fetcher = fetcher();
        fetcher.timeout = Duration::from_millis(300);
        let refused = reason(fetcher.certificate(&server.url("/slow.pem")).await);
        assert!(refused.contains("no answer within 300ms"), "{refused}");
    }

    #[tokio::test]
    async fn confirm_needs_a_2xx_from_an_allowed_host() {
        let server = CertServer::start().await;
        let fetcher = fetcher();
        let link = server.url(
            "/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:123456789012:herald-feedback&Token=2336412f",
        );
        fetcher.confirm(&link).await.unwrap();
        assert!(server.requests()[0].starts_with("/?Action=ConfirmSubscription&TopicArn="));
        let error = fetcher
            .confirm(&server.url("/elsewhere"))
            .await
            .unwrap_err();
        assert!(error.contains("404"), "{error}");
        let error = fetcher
            .confirm("https://evil.example/?Action=ConfirmSubscription")
            .await
            .unwrap_err();
        assert!(error.contains("not HTTPS on an allowed host"), "{error}");
        assert_eq!(server.requests().len(), 2);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        assert!(SnsFetcher::new(&settings(Some(b"junk"))).is_err());
    }

    #[test]
    fn the_cache_keeps_the_newest_entries() {
        let mut cache = Cache::default();
        for n in 0..CACHE_ENTRIES + 3 {
            cache.insert(format!("u{n}"), Arc::new(vec![n as u8]));
        }
        assert_eq!(cache.certificates.len(), CACHE_ENTRIES);
        assert!(!cache.certificates.contains_key("u2"));
        assert!(cache.certificates.contains_key("u3"));
        assert!(cache
            .certificates
            .contains_key(&format!("u{}", CACHE_ENTRIES + 2)));
    }
}
