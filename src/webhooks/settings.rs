//! Webhook settings as the dispatcher uses them, after `config::webhooks`
//! checked the file.

use std::time::Duration;

use super::ssrf::Cidr;

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Networks endpoints may reach although they are not public.
    pub allow_networks: Vec<Cidr>,
    /// Whether `http://` endpoint URLs are refused.
    pub require_https: bool,
    /// Waits after the 1st, 2nd, … failed attempt; then the delivery is a
    /// dead letter.
    pub retry_schedule: Vec<Duration>,
    /// The shortest wait after a timeout or a 429: such a receiver is
    /// overloaded and an early retry only adds to its load.
    pub min_throttle_delay: Duration,
    /// How long one attempt may take unless the endpoint sets its own.
    pub timeout: Duration,
    /// Attempts one endpoint may have in flight at once.
    pub max_in_flight_per_endpoint: usize,
    /// Consecutive failures that open an endpoint's circuit breaker.
    pub circuit_failures: u32,
    /// How long an open breaker pauses its endpoint before one probe.
    pub circuit_cooldown: Duration,
    /// A streak of failures this long disables an endpoint once one of its
    /// deliveries exhausts its schedule.
    pub disable_after: Duration,
    /// Failed attempts in a row an endpoint may have; the next one records
    /// `delivery.failing` and alerts its owner.
    pub failing_threshold: u32,
    /// How endpoint owners are emailed; `None`: they are not.
    pub owner_alerts: Option<OwnerAlertSettings>,
}

/// `[webhooks.owner_alerts]` after its checks: the stream exists and sends
/// from `from`'s domain.
#[derive(Debug, Clone)]
pub struct OwnerAlertSettings {
    pub stream: String,
    /// An address or `Name <address>`.
    pub from: String,
    /// How long the portal link in an alert stays valid.
    pub portal_link_ttl: Duration,
}
