//! Webhooks: endpoints, and signed, retried, at-least-once delivery of the
//! events they subscribe to. Deliveries are created by the log's fan-out
//! (`store::log`); from there the scheduler hands due ones to
//! [`dispatch`], which sends them through [`client`] and records what
//! happened through [`ledger`] as [`policy`] decides.

pub mod client;
pub mod dispatch;
pub mod endpoint;
pub mod gate;
pub mod ledger;
pub mod owner_alert;
pub mod payload;
pub mod policy;
mod pool;
pub mod settings;
pub mod signing;
pub mod ssrf;
pub mod target;
#[cfg(test)]
mod test_server;
