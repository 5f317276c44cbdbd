//! Mail settings as the daemon uses them, after `config::mail` checked
//! the file: streams with their relay, DKIM key and unsubscribe policy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Providers whose metadata header carries our message id, so their
/// feedback (bounces, complaints) can be matched back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Esp {
    /// Amazon SES: a `herald_id` tag in `X-SES-MESSAGE-TAGS`.
    Ses,
    /// `herald_id` in the `unique_args` of `X-SMTPAPI`.
    Sendgrid,
    /// `X-PM-Metadata-herald-id`.
    Postmark,
    /// `herald_id` in `X-Mailgun-Variables`.
    Mailgun,
    /// No header of its own: its feedback matches by `X-Herald-Id` when it
    /// echoes headers, else by the id in its 250 reply.
    Resend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTls {
    /// TLS from the first byte (port 465).
    Implicit,
    /// STARTTLS, and the connection fails if the server does not offer it.
    StartTlsRequired,
    /// Plaintext: only to loopback.
    None,
}

/// Where a stream's mail is submitted.
#[derive(Clone)]
pub struct Relay {
    /// Name or IP literal, as the certificate must name it.
    pub host: String,
    /// From the URL; without one, 465 for `smtps://` and 587 for `smtp://`.
    pub port: u16,
    /// How the connection is protected; never weaker than configured.
    pub tls: RelayTls,
    /// User and password for SMTP AUTH; never printed.
    pub credentials: Option<(String, String)>,
    /// Extra trusted roots (PEM) for the relay's certificate.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Relay {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .finish()
    }
}

/// How a stream signs its mail.
#[derive(Clone)]
pub struct DkimSettings {
    /// The DNS selector: the public key is at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// The signing domain; `None` signs as the From domain.
    pub domain: Option<String>,
    /// The RSA private key, PKCS#1 PEM; never printed.
    pub key_pem: String,
}

impl std::fmt::Debug for DkimSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSettings")
            .field("selector", &self.selector)
            .field("domain", &self.domain)
            .finish()
    }
}

/// One stream: a kind of mail with its own relay and reputation.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// The name requests choose the stream by.
    pub name: String,
    /// Lowercase; empty allows any From domain.
    pub from_domains: Vec<String>,
    /// `None` writes `.eml` files to the outbox instead of sending.
    pub relay: Option<Relay>,
    /// `None` sends unsigned (a relay may sign).
    pub dkim: Option<DkimSettings>,
    /// Whether messages carry RFC 8058 one-click unsubscribe headers.
    pub unsubscribe: bool,
    /// A `mailto:` offered beside the one-click link; only with `unsubscribe`.
    pub unsubscribe_mailto: Option<String>,
    /// Messages a second at most, so a burst cannot trip the relay's limits.
    pub rate_limit_per_sec: Option<u32>,
    /// Whose metadata header to add, so that provider's feedback matches.
    pub esp: Option<Esp>,
    /// Daily caps while the stream warms up; the last doubles each day
    /// after. Empty: no cap.
    pub warmup: Vec<u32>,
}

impl StreamSettings {
    pub fn allows_from_domain(&self, domain: &str) -> bool {
        self.from_domains.is_empty() || self.from_domains.iter().any(|d| d == domain)
    }
}

#[derive(Debug, Clone)]
pub struct MailSettings {
    /// Worker threads, each with its own relay connections.
    pub workers: usize,
    /// Waits after the 1st, 2nd, … temporary failure; the last repeats.
    pub retry_schedule: Vec<Duration>,
    /// A message still failing this long after its first attempt fails;
    /// time held in the queue (a paused stream, a warm-up cap) does not count.
    pub give_up_after: Duration,
    /// Distinct days with a soft bounce, within `soft_bounce_window`, that
    /// suppress an address.
    pub soft_bounce_limit: u32,
    pub soft_bounce_window: Duration,
    /// When a stream's bounce and complaint rates warn or pause it.
    pub guard: GuardSettings,
    /// Where streams without a relay write `.eml` files.
    pub outbox: PathBuf,
    /// The limit on relaying one message: connecting, TLS, AUTH and every command.
    pub timeout: Duration,
    /// Recipients one request may name; each gets its own message.
    pub max_recipients: usize,
    /// The most bytes a request's text and HTML parts may hold together.
    pub max_message_bytes: usize,
    /// Every stream by name; without configured ones, `transactional` and
    /// `marketing` writing to the outbox.
    pub streams: BTreeMap<String, StreamSettings>,
}

/// Rates (per message sent) that warn about or pause a stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuardSettings {
    pub complaint_warn_rate: f64,
    pub complaint_pause_rate: f64,
    pub bounce_warn_rate: f64,
    pub bounce_pause_rate: f64,
    /// A window with fewer messages than this is not judged.
    pub min_sends: u32,
}

/// The internet-facing side: where unsubscribe links point.
#[derive(Debug, Clone)]
pub struct PublicSettings {
    /// Base of links in messages, without a trailing slash.
    pub url: String,
    /// No `url` was configured: the daemon derives it from the address it
    /// actually bound.
    pub url_is_default: bool,
    /// The public listener's address; `None`: no public listener.
    pub listen: Option<SocketAddr>,
}
