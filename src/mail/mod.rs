//! Transactional email: validated requests queued with their suppression
//! check in one transaction, relayed over SMTP by a worker pool with DKIM
//! and one-click unsubscribe, outcomes classified into retries, bounces and
//! suppressions.

pub mod address;
pub mod classify;
pub mod compose;
pub mod dispatch;
pub mod feedback;
pub mod gates;
pub mod guard;
pub mod ledger;
pub mod policy;
pub mod relay;
pub mod request;
pub mod sending;
pub mod settings;
pub mod soft_bounces;
pub mod unsubscribe;
pub mod warmup;
