//! Webhooks: endpoints, fan-out of events into deliveries, and signed,
//! retried, at-least-once dispatch to the endpoints' URLs.

pub mod attempt;
pub mod dispatch;
pub mod endpoint;
pub mod outbound;
pub mod payload;
pub mod signing;
pub mod ssrf;
