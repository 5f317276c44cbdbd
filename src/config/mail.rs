//! The `[mail]` and `[public]` tables: streams with their relay, From
//! domains, DKIM key and unsubscribe policy, checked once at start-up.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::values::{duration, invalid, ConfigError};
use crate::mail::settings::{
    DkimSettings, Esp, GuardSettings, MailSettings, PublicSettings, Relay, RelayTls, StreamSettings,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSection {
    /// Worker threads relaying mail (1–64), each keeping its own SMTP connections.
    pub workers: usize,
    /// Waits before each retry after a temporary failure, as durations, with
    /// ±20% jitter; the last repeats until `give_up_after`.
    pub retry_schedule: Vec<String>,
    /// A message still failing this long after its first attempt fails;
    /// time held in the queue (a paused stream, a warm-up cap) does not count.
    pub give_up_after: String,
    /// Distinct UTC days with a soft bounce (a 4xx reply, mailbox full, or an
    /// ESP's soft bounce; not an unreachable relay) within `soft_bounce_window`
    /// that suppress an address as `soft_bounce_limit`; a delivery resets them.
    pub soft_bounce_limit: u32,
    /// How far back soft-bounce days count.
    pub soft_bounce_window: String,
    /// `[mail.guard]`: the bounce and complaint rates that warn and pause a stream.
    pub guard: GuardSection,
    /// Where streams without a relay write `.eml` files; `None`: `<data_dir>/outbox`.
    pub outbox: Option<PathBuf>,
    /// Limit on relaying one message: connecting, TLS, AUTH and every command.
    pub timeout: String,
    /// Recipients per `POST /v1/emails`; each gets its own message.
    pub max_recipients: usize,
    /// Text and HTML parts together, in bytes.
    pub max_message_bytes: usize,
    /// `[mail.streams.NAME]` tables; none gives `transactional` and `marketing`,
    /// which accept any From domain and write to the outbox.
    pub streams: BTreeMap<String, StreamSection>,
    /// Empty the text and HTML of messages settled (sent, failed, bounced) and
    /// queued longer ago than this; the rest of the record stays. `None` keeps them.
    pub body_retention: Option<String>,
    /// Delete ESP feedback records (and the rows that recognise their
    /// replays) received longer ago than this; at least 7 days, as
    /// providers retry for days. `None` keeps them.
    pub feedback_retention: Option<String>,
}

impl Default for MailSection {
    fn default() -> Self {
        Self {
            workers: 4,
            retry_schedule: ["1m", "5m", "15m", "30m", "1h", "2h", "4h", "8h"]
                .map(str::to_owned)
                .to_vec(),
            give_up_after: "24h".to_owned(),
            soft_bounce_limit: 3,
            soft_bounce_window: "7d".to_owned(),
            guard: GuardSection::default(),
            outbox: None,
            timeout: "30s".to_owned(),
            max_recipients: 50,
            max_message_bytes: 1 << 20,
            streams: BTreeMap::new(),
            body_retention: None,
            feedback_retention: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSection {
    /// From domains this stream may send as; empty allows any.
    pub from_domains: Vec<String>,
    /// `smtps://` (implicit TLS), `smtp://` (STARTTLS required) or plaintext
    /// `smtp://` to loopback, credentials percent-encoded; `None` writes to the outbox.
    pub relay: Option<String>,
    /// Extra CA certificate (PEM) trusted for the relay, e.g. a private CA.
    pub relay_ca_file: Option<PathBuf>,
    /// DKIM selector: the key is published at `SELECTOR._domainkey.DOMAIN`.
    /// Set with `dkim_key_file` or not at all.
    pub dkim_selector: Option<String>,
    /// RSA private key in PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`) that signs the mail.
    pub dkim_key_file: Option<PathBuf>,
    /// The signing domain; `None`: the From address's domain.
    pub dkim_domain: Option<String>,
    /// RFC 8058 one-click List-Unsubscribe headers; `None`: only for a stream
    /// named `marketing`.
    pub unsubscribe: Option<bool>,
    /// An address that also accepts unsubscribing by mail.
    pub unsubscribe_mailto: Option<String>,
    /// Messages per second handed to the relay; `None`: no limit.
    pub rate_limit_per_sec: Option<u32>,
    /// Whose metadata header carries our message id, so its feedback matches back.
    pub esp: Option<Esp>,
    /// Daily caps of a warming stream, one per day of sending; the last
    /// doubles each day after. Empty: no cap.
    pub warmup: Vec<u32>,
}

/// Rates are hard bounces (or complaints) per message sent, over the last
/// 24 hours and over the stream's last 1,000 messages; a window warns or
/// pauses the stream once it holds `min_sends` messages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardSection {
    pub complaint_warn_rate: f64,
    pub complaint_pause_rate: f64,
    pub bounce_warn_rate: f64,
    pub bounce_pause_rate: f64,
    pub min_sends: u32,
}

impl Default for GuardSection {
    fn default() -> Self {
        // The mailbox providers' published limits: complaints must stay
        // under 0.1% and never reach 0.3%; ESPs review accounts bouncing
        // over 2% and suspend near 5%.
        GuardSection {
            complaint_warn_rate: 0.001,
            complaint_pause_rate: 0.003,
            bounce_warn_rate: 0.02,
            bounce_pause_rate: 0.05,
            min_sends: 100,
        }
    }
}

fn validate_guard(g: GuardSection) -> Result<GuardSettings, ConfigError> {
    let rate = |name: &str, value: f64| {
        if value.is_finite() && value > 0.0 && value <= 1.0 {
            Ok(value)
        } else {
            Err(invalid(
                format!("mail.guard.{name}"),
                "must be a fraction above 0 and at most 1 (0.001 is 0.1%)",
            ))
        }
    };
    let settings = GuardSettings {
        complaint_warn_rate: rate("complaint_warn_rate", g.complaint_warn_rate)?,
        complaint_pause_rate: rate("complaint_pause_rate", g.complaint_pause_rate)?,
        bounce_warn_rate: rate("bounce_warn_rate", g.bounce_warn_rate)?,
        bounce_pause_rate: rate("bounce_pause_rate", g.bounce_pause_rate)?,
        min_sends: g.min_sends.max(1),
    };
    if settings.complaint_warn_rate > settings.complaint_pause_rate {
        return Err(invalid(
            "mail.guard.complaint_warn_rate",
            "must not exceed complaint_pause_rate",
        ));
    }
    if settings.bounce_warn_rate > settings.bounce_pause_rate {
        return Err(invalid(
            "mail.guard.bounce_warn_rate",
            "must not exceed bounce_pause_rate",
        ));
    }
    Ok(settings)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublicSection {
    /// Base URL of links in mail; `None`: `http://` + `listen`, or the private
    /// address. Required when a stream relays mail with `unsubscribe`.
    pub url: Option<String>,
    /// A second listener serving only the public routes (`/u/TOKEN`), for a
    /// reverse proxy to expose; `None`: no public routes.
    pub listen: Option<String>,
}

fn stream_key(name: &str, key: &str) -> String {
    format!("mail.streams.{name}.{key}")
}

/// Unsubscribe links in relayed mail must reach the public listener: a
/// default link to this machine's loopback address would be signed into
/// every message and useless to the mailbox provider.
pub fn check_unsubscribe_links(
    mail: &MailSettings,
    public: &PublicSettings,
) -> Result<(), ConfigError> {
    if !public.url_is_default {
        return Ok(());
    }
    match mail
        .streams
        .values()
        .find(|s| s.unsubscribe && s.relay.is_some())
    {
        Some(stream) => Err(invalid(
            "public.url",
            format!(
                "stream `{}` relays mail with one-click unsubscribe links; set public.url to \
                 the address mailbox providers reach (or unsubscribe = false)",
                stream.name
            ),
        )),
        None => Ok(()),
    }
}

pub fn validate_public(
    section: PublicSection,
    private_listen: SocketAddr,
) -> Result<PublicSettings, ConfigError> {
    let listen = match &section.listen {
        None => None,
        Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "public.listen",
                format!("`{text}` is not an address like 0.0.0.0:8080"),
            )
        })?),
    };
    let url_is_default = section.url.is_none();
    let url = match section.url {
        Some(url) => {
            let trimmed = url.trim_end_matches('/').to_owned();
            let rest = trimmed
                .strip_prefix("https://")
                .or_else(|| trimmed.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => trimmed,
                _ => {
                    return Err(invalid(
                        "public.url",
                        "is not an http(s) URL like https://mail.example.com",
                    ))
                }
            }
        }
        None => format!("http://{}", listen.unwrap_or(private_listen)),
    };
    Ok(PublicSettings {
        url,
        url_is_default,
        listen,
    })
}

pub fn validate_mail(section: MailSection, data_dir: &Path) -> Result<MailSettings, ConfigError> {
    let key = |k: &str| format!("mail.{k}");
    if section.retry_schedule.len() > 50 {
        return Err(invalid(key("retry_schedule"), "at most 50 retries"));
    }
    let week = Duration::from_secs(7 * 24 * 3600);
    let mut retry_schedule = Vec::with_capacity(section.retry_schedule.len());
    for text in &section.retry_schedule {
        retry_schedule.push(duration("mail.retry_schedule", text, week)?);
    }
    if section.workers == 0 || section.workers > 64 {
        return Err(invalid(key("workers"), "must be between 1 and 64"));
    }
    if section.soft_bounce_limit == 0 || section.soft_bounce_limit > 365 {
        return Err(invalid(
            key("soft_bounce_limit"),
            "must be between 1 and 365 (days with a soft bounce)",
        ));
    }
    let soft_bounce_window = duration(
        "mail.soft_bounce_window",
        &section.soft_bounce_window,
        Duration::from_secs(365 * 24 * 3600),
    )?;
    if soft_bounce_window < Duration::from_secs(24 * 3600) {
        return Err(invalid(
            key("soft_bounce_window"),
            "must be at least 1d: soft bounces count by day",
        ));
    }
    let window_days = crate::mail::soft_bounces::window_days(soft_bounce_window);
    if i64::from(section.soft_bounce_limit) > window_days {
        return Err(invalid(
            key("soft_bounce_limit"),
            format!(
                "{} days cannot fit in soft_bounce_window ({window_days} days): no address would ever be suppressed",
                section.soft_bounce_limit
            ),
        ));
    }
    if section.max_recipients == 0 || section.max_recipients > 1000 {
        return Err(invalid(key("max_recipients"), "must be between 1 and 1000"));
    }
    if section.max_message_bytes < 1024 || section.max_message_bytes > 32 << 20 {
        return Err(invalid(
            key("max_message_bytes"),
            "must be between 1024 and 33554432",
        ));
    }
    let mut streams = BTreeMap::new();
    let sections = if section.streams.is_empty() {
        // The default install: both usual streams, any From domain, outbox.
        let mut defaults = BTreeMap::new();
        defaults.insert("transactional".to_owned(), StreamSection::default());
        defaults.insert("marketing".to_owned(), StreamSection::default());
        defaults
    } else {
        section.streams
    };
    for (name, stream) in sections {
        streams.insert(name.clone(), validate_stream(&name, stream)?);
    }
    Ok(MailSettings {
        workers: section.workers,
        retry_schedule,
        give_up_after: duration("mail.give_up_after", &section.give_up_after, week * 4)?,
        soft_bounce_limit: section.soft_bounce_limit,
        soft_bounce_window,
        guard: validate_guard(section.guard)?,
        outbox: section.outbox.unwrap_or_else(|| data_dir.join("outbox")),
        timeout: duration("mail.timeout", &section.timeout, Duration::from_secs(600))?,
        max_recipients: section.max_recipients,
        max_message_bytes: section.max_message_bytes,
        streams,
    })
}

fn is_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn validate_stream(name: &str, s: StreamSection) -> Result<StreamSettings, ConfigError> {
    if !is_stream_name(name) {
        return Err(invalid(
            format!("mail.streams.{name}"),
            "stream names use letters, digits, `_` and `-` (at most 64)",
        ));
    }
    let mut from_domains = Vec::with_capacity(s.from_domains.len());
    for domain in &s.from_domains {
        let lower = domain.trim().to_ascii_lowercase();
        if !crate::mail::address::is_domain(&lower) {
            return Err(invalid(
                stream_key(name, "from_domains"),
                format!("`{domain}` is not a domain name"),
            ));
        }
        from_domains.push(lower);
    }
    let relay = match &s.relay {
        None => None,
        Some(url) => {
            let mut relay = parse_relay(url).map_err(|m| invalid(stream_key(name, "relay"), m))?;
            if let Some(path) = &s.relay_ca_file {
                relay.ca_pem = Some(std::fs::read(path).map_err(|e| {
                    invalid(
                        stream_key(name, "relay_ca_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?);
            }
            Some(relay)
        }
    };
    let dkim = match (&s.dkim_selector, &s.dkim_key_file) {
        (None, None) => None,
        (Some(selector), Some(path)) => {
            let key_pem = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    stream_key(name, "dkim_key_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if let Err(e) = lettre::message::dkim::DkimSigningKey::new(
                &key_pem,
                lettre::message::dkim::DkimSigningAlgorithm::Rsa,
            ) {
                return Err(invalid(
                    stream_key(name, "dkim_key_file"),
                    format!("not an RSA private key in PKCS#1 PEM: {e}"),
                ));
            }
            let selector_ok = !selector.is_empty()
                && selector.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !selector_ok {
                return Err(invalid(
                    stream_key(name, "dkim_selector"),
                    format!("`{selector}` is not a DNS label"),
                ));
            }
            let domain = match &s.dkim_domain {
                Some(d) if crate::mail::address::is_domain(&d.to_ascii_lowercase()) => {
                    Some(d.to_ascii_lowercase())
                }
                Some(d) => {
                    return Err(invalid(
                        stream_key(name, "dkim_domain"),
                        format!("`{d}` is not a domain name"),
                    ))
                }
                None => None,
            };
            Some(DkimSettings {
                selector: selector.clone(),
                domain,
                key_pem,
            })
        }
        _ => {
            return Err(invalid(
                stream_key(name, "dkim_selector"),
                "dkim_selector and dkim_key_file go together",
            ))
        }
    };
    let unsubscribe_mailto = match &s.unsubscribe_mailto {
        None => None,
        Some(mailto) => Some(crate::mail::address::normalize(mailto).map_err(|_| {
            invalid(
                stream_key(name, "unsubscribe_mailto"),
                format!("`{mailto}` is not an email address"),
            )
        })?),
    };
    if s.rate_limit_per_sec == Some(0) {
        return Err(invalid(
            stream_key(name, "rate_limit_per_sec"),
            "must be at least 1 (leave it out for no limit)",
        ));
    }
    if s.warmup.len() > 100 || s.warmup.contains(&0) {
        return Err(invalid(
            stream_key(name, "warmup"),
            "daily caps must be at least 1, at most 100 of them (e.g. [50, 200, 1000])",
        ));
    }
    Ok(StreamSettings {
        name: name.to_owned(),
        from_domains,
        relay,
        dkim,
        unsubscribe: s.unsubscribe.unwrap_or(name == "marketing"),
        unsubscribe_mailto,
        rate_limit_per_sec: s.rate_limit_per_sec,
        esp: s.esp,
        warmup: s.warmup,
    })
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn decode_credential(text: &str) -> Result<String, String> {
    crate::percent::decode(text).ok_or_else(|| {
        "the relay URL's credentials have a bad percent-escape or are not UTF-8".to_owned()
    })
}

/// `smtps://user:pass@host:465`, `smtp://host:587?tls=required`,
/// `smtp://127.0.0.1:2525` (plaintext, loopback only). However malformed,
/// no part of the URL is quoted in an error: a misplaced `?`, `@` or `/`
/// can put any part of the password anywhere.
pub fn parse_relay(url: &str) -> Result<Relay, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "is not a URL like smtps://user:pass@host:465".to_owned())?;
    let implicit = match scheme {
        "smtps" => true,
        "smtp" => false,
        _ => return Err("the scheme must be smtps:// or smtp://".to_owned()),
    };
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a.trim_end_matches('/'), Some(q)),
        None => (rest.trim_end_matches('/'), None),
    };
    let (credentials, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (
                Some((decode_credential(user)?, decode_credential(pass)?)),
                hostport,
            )
        }
        None => (None, authority),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port: u16 = p
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| "the port must be a number from 1 to 65535".to_owned())?;
            (h, port)
        }
        _ => (hostport, if implicit { 465 } else { 587 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err("the relay URL has no host".to_owned());
    }
    let mut tls = if implicit {
        RelayTls::Implicit
    } else if is_loopback_host(host) {
        RelayTls::None
    } else {
        RelayTls::StartTlsRequired
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match (k.as_ref(), v.as_ref()) {
            ("tls", "required") if !implicit => tls = RelayTls::StartTlsRequired,
            ("tls", "none") if !implicit => tls = RelayTls::None,
            ("tls", _) => {
                return Err(
                    "tls must be required or none (none: smtp:// to loopback only)".to_owned(),
                )
            }
            _ => return Err("the relay URL's only parameter is tls".to_owned()),
        }
    }
    if tls == RelayTls::None && !is_loopback_host(host) {
        return Err(
            "plaintext SMTP off loopback would expose mail and credentials; \
                    use smtps:// or smtp://…?tls=required"
                .to_owned(),
        );
    }
    Ok(Relay {
        host: host.to_owned(),
        port,
        tls,
        credentials,
        ca_pem: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_choose_tls_and_refuse_plaintext_off_loopback() {
        let r = parse_relay("smtps://user%40x:p%3Ass@smtp.example.com").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.tls),
            ("smtp.example.com", 465, RelayTls::Implicit)
        );
        assert_eq!(r.credentials, Some(("user@x".into(), "p:ss".into())));
        let r = parse_relay("smtp://smtp.example.com:587?tls=required").unwrap();
        assert_eq!((r.port, r.tls), (587, RelayTls::StartTlsRequired));
        let r = parse_relay("smtp://smtp.example.com").unwrap();
        assert_eq!(r.tls, RelayTls::StartTlsRequired);
        let r = parse_relay("smtp://127.0.0.1:2525").unwrap();
        assert_eq!((r.port, r.tls), (2525, RelayTls::None));
        let r = parse_relay("smtp://localhost:2525?tls=required").unwrap();
        assert_eq!(r.tls, RelayTls::StartTlsRequired);
        assert!(parse_relay("smtp://smtp.example.com?tls=none").is_err());
        assert!(parse_relay("http://x").is_err());
        assert!(parse_relay("smtp://:25").is_err());
        assert!(parse_relay("smtp://x:0").is_err());
        assert!(parse_relay("smtp://x?foo=1").is_err());
    }

    #[test]
    fn no_error_quotes_any_part_of_a_malformed_relay_url() {
        for url in [
            "ftp://u:QzXkJv@x",
            "smtp://user:Qz?XkJv@host:25",
            "smtp:/user:QzXkJv@host",
            "smtp//user:QzXkJv@host",
            "smtp://user:QzXkJv",
            "smtp://user:QzXk%zzJv@host",
            "smtp://user:Qz/XkJv@host:2x5",
            "smtp://host?QzXkJv=1",
            "smtp://host?tls=QzXkJv",
            "QzXkJv@smtp://host",
            "smtp://user:QzXkJv@ho st",
        ] {
            let err = parse_relay(url).expect_err(url);
            for fragment in ["Qz", "Xk", "Jv"] {
                assert!(!err.contains(fragment), "{url}: {err}");
            }
        }
    }

    #[test]
    fn streams_default_to_the_outbox_and_marketing_unsubscribes() {
        let mail = validate_mail(MailSection::default(), Path::new("/d")).unwrap();
        assert_eq!(mail.outbox, Path::new("/d/outbox"));
        assert!(mail.streams["marketing"].unsubscribe);
        assert!(!mail.streams["transactional"].unsubscribe);
        assert!(mail.streams["transactional"].relay.is_none());
        assert!(mail.streams["transactional"].allows_from_domain("any.example"));
    }
}
