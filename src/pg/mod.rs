//! The PostgreSQL backend: connections to the shared database, its schema
//! migrations, the event log that several nodes append to at once, and the
//! copy of a redb file's log into it (`herald migrate`).

pub mod backlog;
pub mod catalog;
pub mod dispatch;
pub mod endpoint_switch;
pub mod import;
pub mod keys;
pub mod log;
pub mod mail;
pub mod mail_dispatch;
pub mod mail_txn;
pub mod migrate;
pub mod migrate_access;
pub mod migrate_mail;
pub mod migrate_tracking;
pub mod overview;
pub mod owner_alerts;
pub mod retention;
pub mod schema;
pub mod sessions;
pub mod tracking;
pub mod webhooks;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, NoTls, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::store::PostgresSettings;
use crate::store::codec::CodecError;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("postgres: {}", with_cause(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("postgres connection pool: {0}")]
    Pool(String),
    #[error("postgres: no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(
        "the database has schema version {found}, newer than this binary's {supported}; \
         run a herald release that supports it"
    )]
    NewerSchema { found: i32, supported: i32 },
    #[error("the event log's committer stopped")]
    CommitterStopped,
    #[error("the database holds damaged data: {0}")]
    Damaged(String),
    /// The mail rules, run in one of this backend's transactions, failed.
    #[error("{0}")]
    Mail(String),
    #[error("postgres TLS: {0}")]
    Tls(String),
}

/// The driver's message names the step ("error connecting to server"); its
/// cause says what went wrong.
fn with_cause(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => PgError::Db(e),
            other => PgError::Pool(other.to_string()),
        }
    }
}

/// The settings every Herald connection uses.
///
/// `synchronous_commit` is forced on: a 2xx means the commit is on disk,
/// whatever the server's default says. A node that vanishes inside a group
/// transaction (power loss, a partition: no FIN ever reaches the server)
/// holds the log head's lock, and with it every node's appends, until the
/// server gives up on it; `idle_in_transaction_session_timeout` bounds that
/// to twice the statement timeout, since Herald's own transactions are
/// never idle longer than a round trip. `tcp_user_timeout` and the
/// keepalives bound how long this side waits on a dead server.
fn session_config(settings: &PostgresSettings) -> tokio_postgres::Config {
    let mut config = settings.connection.clone();
    let statement_ms = settings.statement_timeout.as_millis().max(1);
    let ours = format!(
        "-c statement_timeout={statement_ms} -c synchronous_commit=on \
         -c idle_in_transaction_session_timeout={}",
        statement_ms * 2
    );
    // The URL's own options (a search_path, say) are kept: ours come last
    // and win only where they name the same setting.
    let options = match settings.connection.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    config
        .application_name("herald")
        .connect_timeout(settings.connect_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(settings.statement_timeout * 2 + Duration::from_secs(5))
        .options(options);
    config
}

/// The TLS every connection to `settings`' database uses, `None` for
/// plain text (see [`PostgresSettings::wants_tls`]). With TLS the server's
/// certificate must chain to Mozilla's roots or `postgres_ca_file` and name
/// the URL's host; the driver never falls back to plain text when
/// `sslmode=require` and the handshake fails.
fn tls(settings: &PostgresSettings) -> Result<Option<MakeRustlsConnect>, PgError> {
    if !settings.wants_tls() {
        return Ok(None);
    }
    let mut config =
        crate::tls::client_config(settings.extra_roots.clone()).map_err(PgError::Tls)?;
    // The protocol name PostgreSQL 17 registered; older servers ignore it,
    // and 17's direct TLS negotiation (`sslnegotiation=direct`) requires it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// One connection of its own (the group committer's, migrations').
pub async fn connect(settings: &PostgresSettings) -> Result<Client, PgError> {
    let config = session_config(settings);
    match tls(settings)? {
        Some(tls) => connect_with(&config, tls, settings.connect_timeout).await,
        None => connect_with(&config, NoTls, settings.connect_timeout).await,
    }
}

async fn connect_with<T>(
    config: &tokio_postgres::Config,
    tls: T,
    timeout: Duration,
) -> Result<Client, PgError>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, connection) = tokio::time::timeout(timeout, config.connect(tls))
        .await
        .map_err(|_| PgError::Timeout(timeout))?
        .map_err(|e| match refused_certificate(&e) {
            Some(why) => PgError::Tls(format!(
                "the server's certificate is refused ({why}); it must name the URL's host \
                 and chain to Mozilla's roots or to a CA in store.postgres_ca_file"
            )),
            None => PgError::Db(e),
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

/// What rustls found wrong with the server's certificate, if that is why
/// connecting failed: the driver's own message says only that the
/// handshake did.
fn refused_certificate(e: &tokio_postgres::Error) -> Option<String> {
    let mut cause = std::error::Error::source(e);
    while let Some(error) = cause {
        let found = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| error.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(why)) = found {
            return Some(format!("{why:?}"));
        }
        cause = error.source();
    }
    None
}

/// The pool queries take their connections from: `pool_size` at most, and
/// a caller waits at most the statement timeout for one.
pub fn pool(settings: &PostgresSettings) -> Result<Pool, PgError> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let config = session_config(settings);
    let manager = match tls(settings)? {
        Some(tls) => Manager::from_config(config, tls, manager_config),
        None => Manager::from_config(config, NoTls, manager_config),
    };
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.statement_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .build()
        .map_err(|e| PgError::Pool(e.to_string()))
}

/// The secret named `name` every node shares, made on first use: the
/// first node to ask stores it, every later one reads that one.
pub async fn shared_secret(client: &Client, name: &str) -> Result<[u8; 32], PgError> {
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh).map_err(|e| PgError::Damaged(format!("no randomness: {e}")))?;
    client
        .execute(
            "INSERT INTO herald_secrets (name, secret) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&name, &fresh.as_slice()],
        )
        .await?;
    let row = client
        .query_one(
            "SELECT secret FROM herald_secrets WHERE name = $1",
            &[&name],
        )
        .await?;
    <[u8; 32]>::try_from(row.get::<_, &[u8]>(0))
        .map_err(|_| PgError::Damaged(format!("the secret `{name}` is not 32 bytes")))
}

/// A read-only transaction on one snapshot: several reads that must agree
/// (a version and the rows it numbers, a page of related counts).
pub async fn snapshot(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, PgError> {
    Ok(client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}
