//! Integration tests: each test starts the real `herald` binary on a
//! loopback port of its own and talks HTTP/1.1 to it.

mod backup;
mod cli;
mod durability;
mod errors;
mod events_api;
mod hooks;
mod mail;
mod receiver;
mod smtp;
mod support;
mod tracking;
mod verifier;
mod webhooks;
