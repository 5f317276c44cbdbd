//! The event log's HTTP API: what it stores and returns, and what it refuses.

mod api;
mod errors;
