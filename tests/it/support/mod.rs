//! Shared machinery for every test folder, re-exported here so that a test
//! needs only `use crate::support::*`.

mod api;
mod daemon;
mod http;
mod load;
mod python;
mod wait;

pub use api::*;
pub use daemon::*;
pub use http::*;
pub use load::*;
pub use python::*;
pub use wait::*;
