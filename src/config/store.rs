//! `[store]`: which backend holds Herald's state, and how to reach
//! PostgreSQL when that is the one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokio_postgres::config::SslMode;
use tokio_rustls::rustls::pki_types::CertificateDer;

use super::values::{duration, in_range, invalid, ConfigError};

/// Environment variable that supplies `store.postgres_url`; it wins over the
/// file, so the password can stay out of it.
pub const POSTGRES_URL_ENV: &str = "HERALD_POSTGRES_URL";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `redb` (one file, the default) or `postgres` (a shared database
    /// several nodes may serve from).
    pub backend: String,
    /// `postgres://user:password@host:port/database`; `HERALD_POSTGRES_URL`
    /// overrides it.
    pub postgres_url: Option<String>,
    /// A PEM file of CA certificates trusted besides Mozilla's roots when
    /// the URL asks for TLS (`sslmode=require`).
    pub postgres_ca_file: Option<PathBuf>,
    /// Connections each node keeps for queries, besides the one its group
    /// committer holds.
    pub pool_size: usize,
    /// Longest any one statement may run before PostgreSQL cancels it.
    pub statement_timeout: String,
    /// Longest a new connection may take to be established.
    pub connect_timeout: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            backend: "redb".to_owned(),
            postgres_url: None,
            postgres_ca_file: None,
            pool_size: 16,
            statement_timeout: "10s".to_owned(),
            connect_timeout: "5s".to_owned(),
        }
    }
}

// One value, made once at start: boxing the big variant would save nothing.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `herald.redb` in the data directory.
    Redb,
    Postgres(Box<PostgresSettings>),
}

#[derive(Clone)]
pub struct PostgresSettings {
    /// Parsed once here, so a malformed URL is a configuration error.
    pub connection: tokio_postgres::Config,
    pub pool_size: usize,
    pub statement_timeout: Duration,
    pub connect_timeout: Duration,
    /// CAs trusted besides Mozilla's roots, from `postgres_ca_file`; only
    /// read when the URL asks for TLS.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

// Written by hand: the connection settings carry the password.
impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("hosts", &self.connection.get_hosts())
            .field("dbname", &self.connection.get_dbname())
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("tls", &self.wants_tls())
            .finish_non_exhaustive()
    }
}

impl PostgresSettings {
    /// Whether connections go over TLS: only when the URL says
    /// `sslmode=require`. The driver's `prefer` would try TLS first, but a
    /// server whose certificate does not verify would then fail an install
    /// that works in plain text today, so `prefer` (the default) and
    /// `disable` both connect in plain text.
    pub fn wants_tls(&self) -> bool {
        self.connection.get_ssl_mode() == SslMode::Require
    }

    /// Host, port and database, for logs: never the user or password.
    pub fn describe(&self) -> String {
        let host = match self.connection.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = self.connection.get_ports().first().copied().unwrap_or(5432);
        let db = self.connection.get_dbname().unwrap_or("(default)");
        format!("postgres://{host}:{port}/{db}")
    }
}

/// Checks `[store]`; `env_url` is `HERALD_POSTGRES_URL` if set.
pub fn validate_store(
    section: StoreSection,
    env_url: Option<String>,
) -> Result<Backend, ConfigError> {
    let url = env_url.filter(|u| !u.trim().is_empty());
    match section.backend.as_str() {
        "redb" => Ok(Backend::Redb),
        "postgres" => {
            let text = url.or(section.postgres_url).ok_or_else(|| {
                invalid(
                    "store.postgres_url",
                    format!(
                        "backend \"postgres\" needs store.postgres_url or {POSTGRES_URL_ENV}, \
                         like postgres://herald@127.0.0.1:5432/herald"
                    ),
                )
            })?;
            let connection = parse_url("store.postgres_url", &text)?;
            let extra_roots = match &section.postgres_ca_file {
                None => Vec::new(),
                Some(path) => ca_file("store.postgres_ca_file", path, &connection)?,
            };
            Ok(Backend::Postgres(Box::new(PostgresSettings {
                connection,
                pool_size: in_range("store.pool_size", section.pool_size, 1, 1024)?,
                statement_timeout: at_least_a_millisecond(
                    "store.statement_timeout",
                    duration(
                        "store.statement_timeout",
                        &section.statement_timeout,
                        Duration::from_secs(3600),
                    )?,
                )?,
                connect_timeout: duration(
                    "store.connect_timeout",
                    &section.connect_timeout,
                    Duration::from_secs(300),
                )?,
                extra_roots,
            })))
        }
        other => Err(invalid(
            "store.backend",
            format!("`{}` is not \"redb\" or \"postgres\"", other.escape_debug()),
        )),
    }
}

/// Settings for a one-off command's connection (`herald migrate --to`):
/// its URL and CA file are held to the checks `store.postgres_url` and
/// `store.postgres_ca_file` are, and refusals name the flags they came
/// from (`url_key`, `ca_key`).
pub fn one_connection(
    (url_key, url): (&str, &str),
    (ca_key, ca_path): (&str, Option<&Path>),
    statement_timeout: Duration,
    connect_timeout: Duration,
) -> Result<PostgresSettings, ConfigError> {
    let connection = parse_url(url_key, url)?;
    let extra_roots = match ca_path {
        None => Vec::new(),
        Some(path) => ca_file(ca_key, path, &connection)?,
    };
    Ok(PostgresSettings {
        connection,
        pool_size: 1,
        statement_timeout,
        connect_timeout,
        extra_roots,
    })
}

/// The CA certificates in `path`, refused unless each is usable as a root,
/// and refused outright when the URL does not ask for TLS: a CA file there
/// would suggest a verified connection that is in fact plain text.
fn ca_file(
    key: &str,
    path: &Path,
    connection: &tokio_postgres::Config,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    if connection.get_ssl_mode() != SslMode::Require {
        return Err(invalid(
            key,
            "is set, but the PostgreSQL URL does not ask for TLS: add ?sslmode=require to it",
        ));
    }
    let pem = std::fs::read(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let unusable = |e: String| {
        invalid(
            key,
            format!("{} holds no usable CA certificate: {e}", path.display()),
        )
    };
    if pem.iter().all(u8::is_ascii_whitespace) {
        return Err(unusable("the file is empty".to_owned()));
    }
    let certificates = crate::tls::ca_certificates(&pem).map_err(unusable)?;
    crate::tls::client_config(certificates.clone()).map_err(unusable)?;
    Ok(certificates)
}

/// PostgreSQL counts the timeout in whole milliseconds, and 0 turns it off.
fn at_least_a_millisecond(key: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d < Duration::from_millis(1) {
        return Err(invalid(key, "must be at least 1ms"));
    }
    Ok(d)
}

/// Only `postgres://` URLs: the key=value form would accept a typo as an
/// unknown key. No message quotes the URL, which may hold a password.
fn parse_url(key: &str, text: &str) -> Result<tokio_postgres::Config, ConfigError> {
    let text = text.trim();
    let bad = |why: &str| {
        invalid(
            key,
            format!("{why}; write postgres://user:password@host:5432/database"),
        )
    };
    if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
        return Err(bad("is not a postgres:// URL"));
    }
    let config: tokio_postgres::Config = text
        .parse()
        .map_err(|_| bad("is not a valid PostgreSQL URL"))?;
    if config.get_hosts().is_empty() {
        return Err(bad("names no host"));
    }
    if config.get_dbname().is_none() {
        return Err(bad("names no database"));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(backend: &str, url: Option<&str>) -> StoreSection {
        StoreSection {
            backend: backend.to_owned(),
            postgres_url: url.map(str::to_owned),
            ..StoreSection::default()
        }
    }

    #[test]
    fn redb_is_the_default_and_postgres_needs_a_url() {
        assert!(matches!(
            validate_store(StoreSection::default(), None),
            Ok(Backend::Redb)
        ));
        let e = validate_store(section("postgres", None), None).unwrap_err();
        assert!(e.to_string().starts_with("store.postgres_url:"), "{e}");
        let e = validate_store(section("sqlite", None), None).unwrap_err();
        assert!(e.to_string().starts_with("store.backend:"), "{e}");
    }

    #[test]
    fn the_environment_wins_and_errors_never_quote_the_url() {
        let from_env = validate_store(
            section("postgres", Some("postgres://a@file-host/filedb")),
            Some("postgres://b:secret@env-host:6000/envdb".to_owned()),
        )
        .unwrap();
        let Backend::Postgres(pg) = from_env else {
            panic!("postgres expected")
        };
        assert_eq!(pg.describe(), "postgres://env-host:6000/envdb");
        assert!(!format!("{pg:?}").contains("secret"));

        for bad in [
            "mysql://u:hunter2@h/db",
            "postgres://u:hunter2@h:notaport/db",
            "postgres://u:hunter2@h:5432",
            "host=h password=hunter2",
        ] {
            let e = validate_store(section("postgres", Some(bad)), None).unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with("store.postgres_url:"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn a_command_line_url_is_checked_alike_and_named_by_its_flag() {
        let secs = Duration::from_secs;
        let pg = one_connection(
            ("--to", "postgres://u:hunter2@h:6000/db"),
            ("--ca-file", None),
            secs(60),
            secs(10),
        )
        .unwrap();
        assert_eq!(pg.describe(), "postgres://h:6000/db");
        assert_eq!(pg.statement_timeout, secs(60));
        let e = one_connection(
            ("--to", "postgres://u:hunter2@h:6000"),
            ("--ca-file", None),
            secs(60),
            secs(10),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("--to: names no database"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn tls_is_asked_for_by_the_url_and_the_ca_file_is_checked() {
        let plain = validate_store(section("postgres", Some("postgres://u@h/db")), None).unwrap();
        let Backend::Postgres(plain) = plain else {
            panic!("postgres expected")
        };
        assert!(!plain.wants_tls());
        let mut s = section("postgres", Some("postgres://u@h/db?sslmode=require"));
        s.postgres_ca_file =
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feedback/tls_ca.pem"));
        let Backend::Postgres(tls) = validate_store(s, None).unwrap() else {
            panic!("postgres expected")
        };
        assert!(tls.wants_tls());
        assert_eq!(tls.extra_roots.len(), 1);

        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        for path in [junk.clone(), empty, dir.path().join("missing.pem")] {
            let mut s = section("postgres", Some("postgres://u@h/db?sslmode=require"));
            s.postgres_ca_file = Some(path);
            let e = validate_store(s, None).unwrap_err().to_string();
            assert!(e.starts_with("store.postgres_ca_file:"), "{e}");
        }
        let mut s = section("postgres", Some("postgres://u@h/db?sslmode=prefer"));
        s.postgres_ca_file = Some(junk);
        let e = validate_store(s, None).unwrap_err().to_string();
        assert!(e.contains("sslmode=require"), "{e}");
    }

    #[test]
    fn pool_and_timeouts_are_checked() {
        let mut s = section("postgres", Some("postgres://u@h/db"));
        s.pool_size = 0;
        let e = validate_store(s, None).unwrap_err();
        assert!(e.to_string().starts_with("store.pool_size:"), "{e}");
        let mut s = section("postgres", Some("postgres://u@h/db"));
        s.statement_timeout = "forever".to_owned();
        let e = validate_store(s, None).unwrap_err();
        assert!(e.to_string().starts_with("store.statement_timeout:"), "{e}");
        let mut s = section("postgres", Some("postgres://u@h/db"));
        s.statement_timeout = "500us".to_owned();
        let e = validate_store(s, None).unwrap_err();
        assert!(e.to_string().contains("at least 1ms"), "{e}");
    }
}
