//! The PostgreSQL server tests/run starts for the tests (tests/pg_cluster),
//! a fresh database on it per daemon, and `psql` to look at what a daemon
//! stored there.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::daemon::run_with_deadline;

/// Connecting and one statement, `CREATE DATABASE` included (it copies a
/// template and syncs it), on a loaded 2-core machine.
pub const PSQL_RUN: Duration = Duration::from_secs(60);

/// The server's URL (`postgres://postgres@127.0.0.1:PORT/postgres`) from
/// HERALD_TEST_POSTGRES_URL, which tests/run exports; `None` when unset or
/// empty.
pub fn server_url() -> Option<String> {
    std::env::var("HERALD_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// Whether the tests run their daemons on the PostgreSQL backend
/// (HERALD_TEST_BACKEND=postgres) instead of the default redb.
pub fn postgres_backend() -> bool {
    std::env::var("HERALD_TEST_BACKEND").is_ok_and(|backend| backend == "postgres")
}

/// Creates an empty database with a name no other test uses and returns its
/// URL: the server URL with the database name replaced.
pub fn fresh_database() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let server = server_url().expect(
        "HERALD_TEST_POSTGRES_URL is unset: run tests/run, which starts a PostgreSQL \
         server with tests/pg_cluster, or start one yourself and export its URL",
    );
    let name = format!(
        "herald_t_{}_{}_{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        random_u32()
    );
    psql_command(&server, &format!("CREATE DATABASE {name}"), &[]);
    with_database(&server, &name)
}

/// Runs `sql` (one or more statements) on the database at `url` and returns
/// what `psql` printed, unaligned and without headers (`-A -t`), trimmed;
/// fails the test with psql's stderr if a statement fails.
pub fn psql(url: &str, sql: &str) -> String {
    psql_command(url, sql, &["-A", "-t"])
}

fn psql_command(url: &str, sql: &str, format: &[&str]) -> String {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(format)
        .arg("-d")
        .arg(url)
        .arg("-c")
        .arg(sql)
        .stdin(Stdio::null());
    let out = run_with_deadline(&mut cmd, PSQL_RUN);
    assert!(
        out.status.success(),
        "psql on {url} failed ({}) running:\n{sql}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("psql prints UTF-8")
        .trim()
        .to_owned()
}

/// `url` naming database `name` instead: the path after the authority is
/// replaced, a query string kept.
fn with_database(url: &str, name: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let end = url[authority..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority + i);
    let query = url[end..].find('?').map_or("", |i| &url[end + i..]);
    format!("{}/{name}{query}", &url[..end])
}

/// Different in every call and every process: std's randomly keyed hasher
/// over the time.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish() as u32
}

#[test]
fn with_database_replaces_only_the_path() {
    let server = "postgres://postgres@127.0.0.1:5432/postgres";
    assert_eq!(
        with_database(server, "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgres://u:p@h:1?sslmode=disable", "t2"),
        "postgres://u:p@h:1/t2?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://u@h:1/db?application_name=x", "t3"),
        "postgres://u@h:1/t3?application_name=x"
    );
}
