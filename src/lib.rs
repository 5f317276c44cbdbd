//! Herald: an event log, signed webhooks and transactional email in one
//! process, with all state in one redb file.
//!
//! The data path reads top to bottom:
//!
//! - [`api`]: the HTTP surfaces (private API, public listener) and their routes.
//! - [`events`]: what a valid event is and how an idempotent append decides.
//! - [`store`]: the one redb file; [`store::writer`] group-commits every write.
//! - [`webhooks`] and [`mail`]: delivery to endpoints and relays; [`tracking`]:
//!   Segment-compatible ingestion and the questions asked of it.
//!
//! Around it: [`config`] (the TOML file and its checks), [`daemon`] (wiring
//! and shutdown), [`cli`] (`herald backup` and the admin commands, over
//! [`api_client`]; [`backup_client`] checks a copy), and small leaf modules
//! ([`clock`], [`ids`], [`percent`], [`logging`]), and [`retention`], the
//! pass that deletes what has aged out.

pub mod api;
pub mod api_client;
pub mod backup_client;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod constant_time;
pub mod daemon;
pub mod events;
pub mod feedback;
pub mod ids;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod names;
pub mod percent;
pub mod pg;
pub mod portal_link;
pub mod retention;
pub mod retry;
pub mod roles;
pub mod scheduler;
pub mod store;
pub mod tls;
pub mod tracking;
pub mod webhooks;
pub mod worker;

#[cfg(test)]
mod layering;
#[cfg(test)]
mod parser_properties;
