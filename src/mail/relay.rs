//! Where a stream's mail goes: an SMTP connection to its relay, or `.eml`
//! files in the outbox when no relay is configured.
//!
//! Connections are opened here rather than by lettre's transport so that
//! Nagle's algorithm can be turned off: lettre writes a message's body and
//! its final `.` separately, and with Nagle on, the second write waits for
//! the relay's delayed ACK of the first, about 40 ms per message on Linux.

use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::settings::{Relay, RelayTls};

/// The relay's answer to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The SMTP reply code; 0 when no answer came (connection, TLS, timeout).
    pub code: u16,
    pub text: String,
    /// Whether the reply concerns this recipient or message (RCPT, DATA and
    /// the end of data). Refusals of the session (greeting, EHLO, STARTTLS,
    /// AUTH) or of our sender (MAIL FROM) say nothing about the recipient
    /// and must never count against the address.
    pub about_recipient: bool,
}

impl Reply {
    fn new(code: u16, text: impl Into<String>, about_recipient: bool) -> Self {
        Reply {
            code,
            text: text.into(),
            about_recipient,
        }
    }

    fn unreachable(text: impl Into<String>) -> Self {
        Reply::new(0, text, false)
    }
}

/// A pooled connection idle longer than this is checked with NOOP first:
/// relays close idle sessions.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(20);

/// TLS settings for one relay, built once and shared by every worker.
#[derive(Clone)]
pub struct RelayTlsConfig {
    /// For STARTTLS, handed to lettre.
    starttls: Option<TlsParameters>,
    /// For implicit TLS, our own connector (TLS before the greeting).
    implicit: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl RelayTlsConfig {
    pub fn new(relay: &Relay) -> Result<Self, String> {
        match relay.tls {
            RelayTls::None => Ok(RelayTlsConfig {
                starttls: None,
                implicit: None,
            }),
            RelayTls::StartTlsRequired => {
                let mut params = TlsParameters::builder(relay.host.clone());
                if let Some(pem) = &relay.ca_pem {
                    let cert = Certificate::from_pem(pem)
                        .map_err(|e| format!("relay_ca_file is not a PEM certificate: {e}"))?;
                    params = params.add_root_certificate(cert);
                }
                let params = params
                    .build_rustls()
                    .map_err(|e| format!("TLS setup for {}: {e}", relay.host))?;
                Ok(RelayTlsConfig {
                    starttls: Some(params),
                    implicit: None,
                })
            }
            RelayTls::Implicit => {
                let mut roots = rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                if let Some(pem) = &relay.ca_pem {
                    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pem) {
                        let cert: rustls::pki_types::CertificateDer<'static> = cert
                            .map_err(|e| format!("relay_ca_file is not a PEM certificate: {e}"))?;
                        roots.add(cert).map_err(|e| format!("relay_ca_file: {e}"))?;
                    }
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS is unavailable: {e}"))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let name =
                    rustls::pki_types::ServerName::try_from(relay.host.clone()).map_err(|e| {
                        format!(
                            "`{}` cannot be checked against a certificate: {e}",
                            relay.host
                        )
                    })?;
                Ok(RelayTlsConfig {
                    starttls: None,
                    implicit: Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name)),
                })
            }
        }
    }
}

/// One worker's connection to one relay, reopened when it breaks.
pub struct RelayClient {
    relay: Relay,
    tls: RelayTlsConfig,
    timeout: Duration,
    hello: ClientId,
    connection: Option<(AsyncSmtpConnection, Instant)>,
}

/// A TLS stream lettre can talk through (implicit TLS).
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

fn describe(e: &lettre::transport::smtp::Error, about_recipient: bool) -> Reply {
    match e.status() {
        Some(code) => Reply::new(
            code.to_string().parse().unwrap_or(0),
            std::error::Error::source(e)
                .map(ToString::to_string)
                .unwrap_or_default(),
            about_recipient,
        ),
        None => Reply::unreachable(e.to_string()),
    }
}

impl RelayClient {
    pub fn new(relay: Relay, tls: RelayTlsConfig, timeout: Duration) -> Self {
        RelayClient {
            relay,
            tls,
            timeout,
            hello: ClientId::default(),
            connection: None,
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, Reply> {
        let addr = (self.relay.host.as_str(), self.relay.port);
        let tcp = TcpStream::connect(addr).await.map_err(|e| {
            Reply::unreachable(format!(
                "cannot connect to {}:{}: {e}",
                self.relay.host, self.relay.port
            ))
        })?;
        tcp.set_nodelay(true)
            .map_err(|e| Reply::unreachable(format!("cannot configure the socket: {e}")))?;
        let stream: Box<dyn AsyncTokioStream> = match &self.tls.implicit {
            Some((connector, name)) => Box::new(ImplicitTls(
                connector.connect(name.clone(), tcp).await.map_err(|e| {
                    Reply::unreachable(format!("TLS with {}: {e}", self.relay.host))
                })?,
            )),
            None => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(|e| describe(&e, false))?;
        if let Some(params) = &self.tls.starttls {
            if !conn.can_starttls() {
                return Err(Reply::unreachable(format!(
                    "{} does not offer STARTTLS, which is required",
                    self.relay.host
                )));
            }
            conn.starttls(params.clone(), &self.hello)
                .await
                .map_err(|e| describe(&e, false))?;
        }
        if let Some((user, pass)) = &self.relay.credentials {
            let credentials = Credentials::new(user.clone(), pass.clone());
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
                .await
                .map_err(|e| describe(&e, false))?;
        }
        Ok(conn)
    }

    /// MAIL, RCPT, DATA and the message, each refusal attributed to its
    /// step.
    async fn deliver(
        conn: &mut AsyncSmtpConnection,
        envelope: &Envelope,
        bytes: &[u8],
    ) -> Result<Reply, Reply> {
        let mut params = Vec::new();
        if !bytes.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        conn.command(Mail::new(envelope.from().cloned(), params))
            .await
            .map_err(|e| describe(&e, false))?;
        for to in envelope.to() {
            conn.command(Rcpt::new(to.clone(), Vec::new()))
                .await
                .map_err(|e| describe(&e, true))?;
        }
        conn.command(Data).await.map_err(|e| describe(&e, true))?;
        let response = conn.message(bytes).await.map_err(|e| describe(&e, true))?;
        Ok(Reply::new(
            response.code().to_string().parse().unwrap_or(250),
            response.message().collect::<Vec<_>>().join(" "),
            true,
        ))
    }

    async fn transact(&mut self, envelope: &Envelope, bytes: &[u8]) -> Reply {
        let reusable = match self.connection.take() {
            Some((mut conn, used)) if !conn.has_broken() => {
                if used.elapsed() < CHECK_AFTER_IDLE || conn.test_connected().await {
                    Some(conn)
                } else {
                    None
                }
            }
            _ => None,
        };
        let mut conn = match reusable {
            Some(conn) => conn,
            None => match self.connect().await {
                Ok(conn) => conn,
                Err(reply) => return reply,
            },
        };
        match Self::deliver(&mut conn, envelope, bytes).await {
            Ok(reply) => {
                self.connection = Some((conn, Instant::now()));
                reply
            }
            Err(reply) => {
                // After a refusal the session is reusable once reset; after
                // anything else its state is unknown.
                if reply.code != 0 && !conn.has_broken() && conn.command(Rset).await.is_ok() {
                    self.connection = Some((conn, Instant::now()));
                }
                reply
            }
        }
    }

    /// Relays one message, within the configured timeout.
    pub async fn send(&mut self, envelope: &Envelope, bytes: &[u8]) -> Reply {
        match tokio::time::timeout(self.timeout, self.transact(envelope, bytes)).await {
            Ok(reply) => reply,
            Err(_) => {
                self.connection = None;
                Reply::unreachable(format!(
                    "no answer from {} within {:?}",
                    self.relay.host, self.timeout
                ))
            }
        }
    }
}

/// A worker's way of delivering one stream's mail.
pub enum Destination {
    Smtp(Box<RelayClient>),
    Outbox(PathBuf),
}

impl Destination {
    /// Hands one message to the destination. `runtime` drives the SMTP
    /// conversation on the worker's own thread.
    pub fn send(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        name: &str,
        envelope: &Envelope,
        bytes: &[u8],
    ) -> Reply {
        match self {
            Destination::Smtp(client) => runtime.block_on(client.send(envelope, bytes)),
            Destination::Outbox(dir) => match write_eml(dir, name, bytes) {
                Ok(path) => Reply::new(250, format!("2.0.0 written to {}", path.display()), true),
                Err(e) => {
                    Reply::unreachable(format!("cannot write to the outbox {}: {e}", dir.display()))
                }
            },
        }
    }
}

/// Writes `name.eml` whole or not at all: a temporary file, fsync, rename.
fn write_eml(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.eml"));
    let partial = dir.join(format!(".{name}.eml.partial"));
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}
