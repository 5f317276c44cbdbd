//! Herald on PostgreSQL: several nodes on one database, and moving a redb
//! install there. These tests need the server `tests/run` starts; run
//! without it (plain `cargo test`) they skip, except in CI.

mod dashboard_sessions;
mod migrate;
mod retention;
mod shared_state;
mod three_nodes;
mod tls;

use crate::support::server_url;

/// Whether a PostgreSQL server is there to test against.
fn postgres_or_skip() -> bool {
    if server_url().is_some() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "HERALD_TEST_POSTGRES_URL is unset in CI: tests/run starts the server and sets it"
    );
    eprintln!("skipped: no PostgreSQL server (HERALD_TEST_POSTGRES_URL); tests/run starts one");
    false
}
