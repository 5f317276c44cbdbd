//! The `[webhooks]` table: which destinations may be reached, the retry
//! schedule, timeouts and the per-endpoint limits of the dispatcher.

use std::time::Duration;

use serde::Deserialize;

use super::values::{duration, in_range, invalid, ConfigError};
use crate::mail::address;
use crate::mail::settings::MailSettings;
use crate::webhooks::settings::{OwnerAlertSettings, WebhookSettings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksSection {
    /// CIDRs endpoints may reach beyond public addresses.
    pub allow_networks: Vec<String>,
    /// Refuse `http://` endpoint URLs.
    pub require_https: bool,
    /// Waits after the 1st, 2nd, … failed attempt, as durations.
    pub retry_schedule: Vec<String>,
    /// The shortest wait after a timeout or a 429.
    pub min_throttle_delay: String,
    /// How long one attempt may take (at most 30s); an endpoint's `timeout_secs`
    /// overrides it, longer or shorter.
    pub timeout: String,
    /// Attempts one endpoint may have in flight at once.
    pub max_in_flight_per_endpoint: usize,
    /// Consecutive failures that open an endpoint's circuit breaker.
    pub circuit_failures: u32,
    /// How long an open breaker pauses its endpoint.
    pub circuit_cooldown: String,
    /// A streak of failures this long disables an endpoint once one of its
    /// deliveries exhausts its retries.
    pub disable_after: String,
    /// Delete succeeded deliveries (with their attempts) this long after they
    /// succeeded; `None` keeps them forever.
    pub retention: Option<String>,
    /// Delete failed deliveries (dead letters) this long after their last
    /// attempt; `None` keeps them forever.
    pub dead_letter_retention: Option<String>,
    /// Failed attempts in a row (across an endpoint's deliveries, reset by
    /// any success) after which the next failure records `delivery.failing`
    /// and alerts the endpoint's owner; once per run of failures.
    pub failing_threshold: u32,
    /// `[webhooks.owner_alerts]`: emails to endpoints' `owner_email`; off
    /// without this table.
    pub owner_alerts: Option<OwnerAlertsSection>,
}

/// `[webhooks.owner_alerts]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerAlertsSection {
    /// The configured mail stream alerts go through (its suppressions and
    /// unsubscribe apply).
    pub stream: String,
    /// The sender, an address or `Name <address>` in one of the stream's
    /// `from_domains`.
    pub from: String,
    /// How long the portal link in an alert stays valid (60s to 7d).
    #[serde(default = "default_portal_link_ttl")]
    pub portal_link_ttl: String,
}

fn default_portal_link_ttl() -> String {
    "7d".to_owned()
}

impl Default for WebhooksSection {
    fn default() -> Self {
        Self {
            allow_networks: Vec::new(),
            require_https: true,
            retry_schedule: ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]
                .map(str::to_owned)
                .to_vec(),
            min_throttle_delay: "60s".to_owned(),
            timeout: "15s".to_owned(),
            max_in_flight_per_endpoint: 8,
            circuit_failures: 10,
            circuit_cooldown: "30s".to_owned(),
            disable_after: "5d".to_owned(),
            retention: None,
            dead_letter_retention: None,
            failing_threshold: 10,
            owner_alerts: None,
        }
    }
}

const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// The bounds of a portal link's life, as `POST /v1/portal-links` has them.
const MIN_PORTAL_LINK_TTL: Duration = Duration::from_secs(60);
const MAX_PORTAL_LINK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

pub fn validate_webhooks(section: WebhooksSection) -> Result<WebhookSettings, ConfigError> {
    let mut allow_networks = Vec::with_capacity(section.allow_networks.len());
    for text in &section.allow_networks {
        allow_networks.push(text.parse().map_err(|e| {
            invalid(
                "webhooks.allow_networks",
                format!("`{text}` is not a network like \"127.0.0.1/32\": {e}"),
            )
        })?);
    }
    if section.retry_schedule.len() > 50 {
        return Err(invalid("webhooks.retry_schedule", "at most 50 retries"));
    }
    let mut retry_schedule = Vec::with_capacity(section.retry_schedule.len());
    for text in &section.retry_schedule {
        retry_schedule.push(duration(
            "webhooks.retry_schedule",
            text,
            Duration::from_secs(7 * 24 * 3600),
        )?);
    }
    Ok(WebhookSettings {
        allow_networks,
        require_https: section.require_https,
        retry_schedule,
        min_throttle_delay: duration(
            "webhooks.min_throttle_delay",
            &section.min_throttle_delay,
            Duration::from_secs(3600),
        )?,
        timeout: duration("webhooks.timeout", &section.timeout, MAX_WEBHOOK_TIMEOUT)?,
        max_in_flight_per_endpoint: in_range(
            "webhooks.max_in_flight_per_endpoint",
            section.max_in_flight_per_endpoint,
            1,
            1024,
        )?,
        circuit_failures: in_range(
            "webhooks.circuit_failures",
            section.circuit_failures,
            1,
            1_000_000,
        )?,
        circuit_cooldown: duration(
            "webhooks.circuit_cooldown",
            &section.circuit_cooldown,
            Duration::from_secs(24 * 3600),
        )?,
        disable_after: duration(
            "webhooks.disable_after",
            &section.disable_after,
            Duration::from_secs(365 * 24 * 3600),
        )?,
        failing_threshold: in_range(
            "webhooks.failing_threshold",
            section.failing_threshold,
            1,
            1_000_000,
        )?,
        owner_alerts: section
            .owner_alerts
            .map(validate_owner_alerts)
            .transpose()?,
    })
}

fn validate_owner_alerts(section: OwnerAlertsSection) -> Result<OwnerAlertSettings, ConfigError> {
    let ttl = duration(
        "webhooks.owner_alerts.portal_link_ttl",
        &section.portal_link_ttl,
        MAX_PORTAL_LINK_TTL,
    )?;
    if ttl < MIN_PORTAL_LINK_TTL {
        return Err(invalid(
            "webhooks.owner_alerts.portal_link_ttl",
            "must be at least 60s",
        ));
    }
    Ok(OwnerAlertSettings {
        stream: section.stream,
        from: section.from,
        portal_link_ttl: ttl,
    })
}

/// Owner alerts go through a configured stream that may send from their
/// sender's domain: checked once mail is, so an alert is never refused.
pub fn check_owner_alerts(
    webhooks: &WebhookSettings,
    mail: &MailSettings,
) -> Result<(), ConfigError> {
    let Some(alerts) = &webhooks.owner_alerts else {
        return Ok(());
    };
    let Some(stream) = mail.streams.get(&alerts.stream) else {
        return Err(invalid(
            "webhooks.owner_alerts.stream",
            format!(
                "no mail stream named `{}`; configured: {}",
                alerts.stream.chars().take(64).collect::<String>(),
                mail.streams.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    let from = address::parse_mailbox(&alerts.from)
        .map_err(|e| invalid("webhooks.owner_alerts.from", format!("the sender {e}")))?;
    if !stream.allows_from_domain(from.domain()) {
        return Err(invalid(
            "webhooks.owner_alerts.from",
            format!(
                "stream `{}` sends from {} only",
                stream.name,
                stream.from_domains.join(", ")
            ),
        ));
    }
    Ok(())
}
