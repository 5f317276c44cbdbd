//! The PostgreSQL server tests/run starts for the tests (tests/pg_cluster),
//! a fresh database on it per daemon, `psql` to look at what a daemon
//! stored there, and a server of a test's own with TLS on.

use std::path::{Path, PathBuf};
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
    let server = server_url().expect(
        "HERALD_TEST_POSTGRES_URL is unset: run tests/run, which starts a PostgreSQL \
         server with tests/pg_cluster, or start one yourself and export its URL",
    );
    fresh_database_on(&server)
}

fn fresh_database_on(server: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "herald_t_{}_{}_{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        random_u32()
    );
    psql_command(server, &format!("CREATE DATABASE {name}"), &[]);
    with_database(server, &name)
}

/// A PostgreSQL server of the test's own with TLS on (`tests/pg_cluster
/// start-tls`): its certificate, for 127.0.0.1 and localhost, is signed by
/// a CA made for it alone. Stopped and removed when dropped.
pub struct TlsServer {
    dir: PathBuf,
    /// `postgres://postgres@127.0.0.1:PORT/postgres`, without any sslmode:
    /// the server takes plain connections as well.
    pub url: String,
}

impl TlsServer {
    /// Starts one; `None` when the openssl command that makes the
    /// certificates is missing.
    pub fn start() -> Option<TlsServer> {
        if Command::new("openssl")
            .arg("version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "herald-pg-tls-{}-{:08x}",
            std::process::id(),
            random_u32()
        ));
        std::fs::create_dir(&dir).expect("creating the cluster's directory");
        let out = run_with_deadline(
            Command::new(pg_cluster()).arg("start-tls").arg(&dir),
            PSQL_RUN,
        );
        let server = TlsServer {
            url: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            dir,
        };
        assert!(
            out.status.success(),
            "tests/pg_cluster start-tls failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Some(server)
    }

    /// The CA that signed the server's certificate, as PEM.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("tls").join("ca.pem")
    }

    /// A fresh database's URL, asking for TLS.
    pub fn fresh_database(&self) -> String {
        format!("{}?sslmode=require", fresh_database_on(&self.url))
    }

    /// `url` without its query: psql speaking plain text, so that only the
    /// daemon's connections count among the encrypted ones.
    pub fn plain(url: &str) -> String {
        let base = url.split('?').next().unwrap_or(url);
        format!("{base}?sslmode=disable")
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = Command::new(pg_cluster())
            .arg("stop")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .status();
    }
}

fn pg_cluster() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pg_cluster")
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
