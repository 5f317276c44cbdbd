//! Shared machinery for every test folder, re-exported here so that a test
//! needs only `use crate::support::*`.

mod api;
mod daemon;
mod http;
mod load;
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
pub use python::*;
pub use wait::*;
pub use webdriver::*;
