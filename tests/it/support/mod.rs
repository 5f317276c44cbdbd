//! Shared machinery for every test folder, re-exported here so that a test
//! needs only `use crate::support::*`.

mod api;
mod daemon;
mod http;
mod load;
// Tests of the PostgreSQL backend use all of it; a version of the suite
// without them uses only what the daemon support needs.
#[allow(dead_code)]
mod postgres;
mod python;
mod wait;
// The client covers the protocol browser tests need as a whole; not every
// command is used by every version of the suite.
#[allow(dead_code)]
mod webdriver;

pub use api::*;
pub use daemon::*;
pub use http::*;
pub use load::*;
#[allow(unused_imports)]
pub use postgres::*;
pub use python::*;
pub use wait::*;
pub use webdriver::*;
