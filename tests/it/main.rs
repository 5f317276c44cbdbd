//! Integration tests: each test starts the real `herald` binary on a
//! loopback port of its own and talks HTTP/1.1 to it. One folder per
//! capability; `support` is what they all share.

mod edge;
mod events;
mod feedback;
mod mail;
mod operations;
mod robustness;
mod scaleout;
mod support;
mod tenancy;
mod tracking;
mod ui;
mod webhooks;
