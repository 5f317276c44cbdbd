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
}
