//! What the benchmarks share, one concern a file: the daemon they drive,
//! the HTTP client they drive it with, the load loop, the peers the daemon
//! talks to, the environment knobs, and the figures they report.
#![allow(dead_code)] // each bench uses a different part

pub mod ceiling;
pub mod daemon;
pub mod dead_endpoint;
pub mod http;
pub mod knobs;
pub mod load;
pub mod poster;
pub mod report;
pub mod smtp_sink;
pub mod webhook_receiver;
