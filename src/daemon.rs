//! `herald serve`: opens the store, starts the writer, the schedulers and
//! the background workers, serves the API until SIGTERM/SIGINT, then drains
//! requests, stops every worker, commits and closes the file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::api::auth::ApiKeys;
use crate::api::catalog::{CatalogApi, CatalogStore};
use crate::api::dashboard::DashboardApi;
use crate::api::events::{EventApi, EventLog};
use crate::api::keys::{KeyStore, KeysApi};
use crate::api::mail::{MailApi, MailStore};
use crate::api::overview::History;
use crate::api::postgres::PostgresApp;
use crate::api::sessions::Sessions;
use crate::api::tracking::{TrackingApi, TrackingStore};
use crate::api::{self, AppState, Surface};
use crate::catalog::Catalog;
use crate::config::store::{Backend, PostgresSettings};
use crate::config::Config;
use crate::mail::dispatch::{MailContext, MailWorker, Releases};
use crate::mail::sending::Sending;
use crate::mail::unsubscribe::TokenKey;
use crate::pg::catalog::PgCatalog;
use crate::pg::dispatch::PgDispatcher;
use crate::pg::keys::PgKeys;
use crate::pg::log::PgLog;
use crate::pg::mail::PgMail;
use crate::pg::sessions::PgSessions;
use crate::pg::tracking::PgTracking;
use crate::pg::webhooks::PgHooks;
use crate::pg::PgError;
use crate::portal_link::PortalKey;
use crate::retention::Retention;
use crate::scheduler::{self, Inbox, Scheduler};
use crate::store::due::ScheduleListener;
use crate::store::writer::Listeners;
use crate::store::{backup, OpenError, Queue, Store, StoreError, Writer};
use crate::tracking::retention::Upkeep;
use crate::tracking::settings::Source;
use crate::webhooks::dispatch::{AttemptContext, Deliveries};
use crate::webhooks::owner_alert::{OwnerAlerts, PortalLinks};
use crate::worker::Workers;

/// How long stopping waits for attempts in flight (webhook requests, SMTP
/// conversations); those still running are made again after the restart.
const WORKER_STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot start the writer: {0}")]
    Writer(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("storage failed; exiting so that a restart recovers the database file")]
    StorageFailed,
    #[error("cannot start mail delivery: {0}")]
    Mail(String),
    #[error("cannot start a background worker: {0}")]
    Worker(std::io::Error),
    #[error("{database}: {source}")]
    Postgres { database: String, source: PgError },
}

pub fn run(mut config: Config) -> Result<(), DaemonError> {
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("herald-io")
        .build()
        .map_err(DaemonError::Runtime)?;
    if let Backend::Postgres(settings) = &config.backend {
        let settings = (**settings).clone();
        return run_on_postgres(runtime, config, settings);
    }

    crate::metrics::mark_started(crate::clock::now_ms());
    crate::metrics::configure_streams(config.mail.streams.keys());
    let path = config.database_path();
    let store = Store::open_with_cache(&path, config.cache_bytes)?;
    add_development_source(&mut config, &store)?;
    let config = Arc::new(config);
    backup::remove_stale_temp_files(&config.data_dir);
    let (webhook_inbox_tx, webhook_inbox) = scheduler::inbox();
    let (mail_inbox_tx, mail_inbox) = scheduler::inbox();
    let listeners = Listeners::default()
        .on(Queue::Webhooks, forward_to(webhook_inbox_tx.clone()))
        .on(Queue::Mail, forward_to(mail_inbox_tx.clone()));
    let (writer, writer_thread) = Writer::start(
        &store,
        config.queue_capacity,
        config.max_commit_batch,
        listeners,
    )?;
    // Bound before mail and webhooks start: links in messages need the real
    // addresses when the configured ports are 0 (chosen by the kernel).
    let private_listener = bind(config.listen)?;
    let private_addr = private_listener.local_addr().unwrap_or(config.listen);
    let public_listener = config.public.listen.map(bind).transpose()?;
    let mut public = config.public.clone();
    if public.url_is_default {
        let addr = public_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(private_addr);
        public.url = format!("http://{addr}");
    }
    // Alert mail carries portal links to the same base `POST
    // /v1/portal-links` answers with: the public listener when there is one.
    let hooks = Arc::new(AttemptContext::new(
        store.clone(),
        writer.clone(),
        &config.webhooks,
        owner_alerts(&config, store.persistent_secret("portal")?, &public.url),
    ));
    let tokens = TokenKey::new(store.persistent_secret("unsubscribe")?);
    let mail = Arc::new(
        MailContext::new(
            config.mail.clone(),
            public,
            tokens,
            store.clone(),
            writer.clone(),
        )
        .map_err(DaemonError::Mail)?,
    );
    let mut workers = Workers::new();
    let deliveries = Deliveries::new(hooks.clone(), runtime.handle().clone(), webhook_inbox_tx)?;
    let (releases, jobs) = Releases::new(
        &config.mail,
        config.mail.workers,
        mail_inbox_tx.clone(),
        store.clone(),
        writer.clone(),
    );
    let webhooks = Scheduler::for_queue(store.clone(), Queue::Webhooks, deliveries, webhook_inbox);
    workers.spawn(webhooks).map_err(DaemonError::Worker)?;
    let mail_scheduler = Scheduler::for_queue(store.clone(), Queue::Mail, releases, mail_inbox);
    workers.spawn(mail_scheduler).map_err(DaemonError::Worker)?;
    for number in 0..config.mail.workers {
        let worker = MailWorker::new(number, mail.clone(), jobs.clone(), mail_inbox_tx.clone())
            .map_err(DaemonError::Worker)?;
        workers.spawn(worker).map_err(DaemonError::Worker)?;
    }
    workers
        .spawn(Upkeep::new(writer.clone(), config.tracking.clone()))
        .map_err(DaemonError::Worker)?;
    workers
        .spawn(Retention::new(writer.clone(), config.retention.clone()))
        .map_err(DaemonError::Worker)?;
    let state = Arc::new(AppState::new(
        store.clone(),
        writer.clone(),
        config.clone(),
        hooks.clone(),
        mail,
    )?);

    let served = runtime.block_on(async {
        let listener = adopt(private_listener, config.listen)?;
        let addr = private_addr;
        let public_listener = match (public_listener, config.public.listen) {
            (Some(l), Some(public)) => Some(adopt(l, public)?),
            _ => None,
        };
        // Installed before `listening` is announced: a supervisor may send
        // SIGTERM the moment it sees that line, and it must stop us cleanly.
        let signals = ShutdownSignals::install();
        if state.keys.is_open() {
            tracing::warn!(
                "no API key configured: the API at {addr} accepts every local caller; \
                 set server.api_keys or HERALD_API_KEYS"
            );
        }
        tracing::info!(addr = %addr, database = %path.display(), "listening");
        let (public_stop, public_stopped) = tokio::sync::oneshot::channel::<()>();
        let public_server = public_listener.map(|listener| {
            match listener.local_addr() {
                Ok(public_addr) => tracing::info!(addr = %public_addr, "public listening"),
                Err(_) => tracing::info!("public listening"),
            }
            let stop = async {
                let _ = public_stopped.await;
            };
            tokio::spawn(api::serve(listener, state.clone(), stop, Surface::Public))
        });
        notify_systemd(&[sd_notify::NotifyState::Ready]);
        let stop = async {
            tokio::select! {
                () = signals.recv() => {}
                () = writer.storage_failed() => {}
            }
        };
        api::serve(listener, state, stop, Surface::Private).await;
        let _ = public_stop.send(());
        if let Some(server) = public_server {
            let _ = server.await;
        }
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
        // The writer is stopped only below, so if it is gone already it
        // stopped on its own: storage failed.
        if writer.is_alive() {
            Ok(())
        } else {
            Err(DaemonError::StorageFailed)
        }
    });

    // Workers record their outcomes through the writer, and webhook
    // attempts run on the runtime: both stop before the writer and the
    // runtime do.
    workers.stop(Instant::now() + WORKER_STOP_GRACE);
    // Handlers that outlived the grace period are dropped with the runtime;
    // then the writer commits what it already accepted and the file closes.
    runtime.shutdown_timeout(Duration::from_secs(2));
    writer_thread.stop();
    drop(store);
    tracing::info!("stopped");
    served
}

/// What `herald check-config` says of the configured backend. PostgreSQL is
/// reached and its schema version read, without changing anything: a
/// database this binary cannot serve fails the check.
pub fn check_backend(config: &Config) -> Result<String, DaemonError> {
    let Backend::Postgres(settings) = &config.backend else {
        return Ok(format!("store redb {}", config.database_path().display()));
    };
    let database = settings.describe();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let found = runtime.block_on(async {
        let client = crate::pg::connect(settings).await?;
        crate::pg::schema::version(&client).await
    });
    let supported = crate::pg::schema::PG_SCHEMA_VERSION;
    match found {
        Ok(found) if found > supported => Err(DaemonError::Postgres {
            database,
            source: PgError::NewerSchema { found, supported },
        }),
        Ok(0) => Ok(format!(
            "store postgres {database}, empty: serve creates schema version {supported}"
        )),
        Ok(found) => Ok(format!(
            "store postgres {database}, schema version {found} of {supported}"
        )),
        Err(source) => Err(DaemonError::Postgres { database, source }),
    }
}

/// `herald serve` on a PostgreSQL database other nodes may share: migrates
/// its schema, starts this node's group committer and serves the routes
/// whose state lives there.
/// How soon a key or an event type created, changed or deleted on another
/// node counts on this one.
const SHARED_STATE_FOLLOWED_EVERY: Duration = Duration::from_secs(1);

/// Reloads this node's stored keys and recompiles its catalog whenever
/// another node changed them.
async fn follow_shared_state(
    keys: (PgKeys, Arc<ApiKeys>, i64),
    catalog: (PgCatalog, Arc<Catalog>, i64),
) {
    let (pg_keys, live_keys, mut keys_version) = keys;
    let (pg_catalog, live_catalog, mut catalog_version) = catalog;
    let mut every = tokio::time::interval(SHARED_STATE_FOLLOWED_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match pg_keys.version().await {
            Ok(now) if now == keys_version => {}
            Ok(_) => match pg_keys.all().await {
                Ok((now, stored)) => {
                    live_keys.replace_stored_at(now, &stored);
                    keys_version = now;
                }
                Err(e) => tracing::warn!(error = %e, "reloading the API keys failed"),
            },
            Err(e) => tracing::warn!(error = %e, "checking the API keys' version failed"),
        }
        match pg_catalog.version().await {
            Ok(now) if now == catalog_version => {}
            Ok(_) => match pg_catalog.all().await {
                Ok((now, stored)) => {
                    // Compiling schemas is CPU work: off the async threads.
                    let live = live_catalog.clone();
                    let _ =
                        tokio::task::spawn_blocking(move || live.replace_all_at(now, stored)).await;
                    catalog_version = now;
                }
                Err(e) => tracing::warn!(error = %e, "reloading the event catalog failed"),
            },
            Err(e) => tracing::warn!(error = %e, "checking the event catalog's version failed"),
        }
    }
}

fn run_on_postgres(
    runtime: tokio::runtime::Runtime,
    config: Config,
    settings: PostgresSettings,
) -> Result<(), DaemonError> {
    crate::metrics::mark_started(crate::clock::now_ms());
    crate::metrics::configure_streams(config.mail.streams.keys());
    let database = settings.describe();
    let failed = |source| DaemonError::Postgres {
        database: database.clone(),
        source,
    };
    let config = Arc::new(config);
    let private_listener = bind(config.listen)?;
    let private_addr = private_listener.local_addr().unwrap_or(config.listen);
    let public_listener = config.public.listen.map(bind).transpose()?;
    let served = runtime.block_on(async {
        let mut client = crate::pg::connect(&settings).await.map_err(failed)?;
        let before = crate::pg::schema::migrate(&mut client)
            .await
            .map_err(failed)?;
        let unsubscribe_key = crate::pg::shared_secret(&client, "unsubscribe")
            .await
            .map_err(failed)?;
        let portal_key = crate::pg::shared_secret(&client, "portal")
            .await
            .map_err(failed)?;
        let has_stored_keys: bool = client
            .query_one("SELECT EXISTS (SELECT 1 FROM herald_api_keys)", &[])
            .await
            .map_err(|e| failed(e.into()))?
            .get(0);
        let mut tracking = config.tracking.clone();
        if wants_development_source(&config, has_stored_keys) {
            let secret = crate::pg::shared_secret(&client, "tracking.development")
                .await
                .map_err(failed)?;
            tracking.sources.push(development_source(secret));
        }
        drop(client);
        let pool = crate::pg::pool(&settings).map_err(failed)?;
        let deliveries_due = Arc::new(tokio::sync::Notify::new());
        let (log, committer) = PgLog::start(
            settings.clone(),
            pool.clone(),
            config.queue_capacity,
            config.max_commit_batch,
            deliveries_due.clone(),
        );
        let tracked = PgTracking::new(pool.clone(), config.queue_capacity, deliveries_due.clone());
        let (stop_retention, retention) = crate::pg::retention::start(
            settings.clone(),
            config.retention.clone(),
            config.tracking.clone(),
        );
        let mut public = config.public.clone();
        if public.url_is_default {
            let addr = public_listener
                .as_ref()
                .and_then(|l| l.local_addr().ok())
                .unwrap_or(private_addr);
            public.url = format!("http://{addr}");
        }
        let public_url = public.url.clone();
        let stop_dispatch = Arc::new(tokio::sync::Notify::new());
        let alerts = owner_alerts(&config, portal_key, &public_url).map(Arc::new);
        let pg_dispatcher = PgDispatcher::new(pool.clone(), config.webhooks.clone(), alerts);
        let dispatcher = tokio::spawn(pg_dispatcher.clone().run(
            deliveries_due,
            stop_dispatch.clone(),
            WORKER_STOP_GRACE,
        ));
        let sending = Sending::new(config.mail.clone(), public, TokenKey::new(unsubscribe_key))
            .map_err(DaemonError::Mail)?;
        let mail_queued = Arc::new(tokio::sync::Notify::new());
        let stop_senders = Arc::new(AtomicBool::new(false));
        let senders = crate::pg::mail_dispatch::start(
            Arc::new(sending),
            pool.clone(),
            tokio::runtime::Handle::current(),
            (mail_queued.clone(), stop_senders.clone()),
            config.mail.workers,
            settings.statement_timeout * 2 + Duration::from_secs(5),
        )
        .map_err(DaemonError::Worker)?;
        let pg_keys = PgKeys::new(pool.clone());
        let (keys_version, stored_keys) = pg_keys.all().await.map_err(failed)?;
        let keys = Arc::new(ApiKeys::new(&config.keys, &stored_keys));
        keys.note_version(keys_version);
        let pg_catalog = PgCatalog::new(pool.clone());
        let (catalog_version, stored_types) = pg_catalog.all().await.map_err(failed)?;
        let catalog = Arc::new(Catalog::load(stored_types));
        catalog.note_version(catalog_version);
        let shared_state_watch = tokio::spawn(follow_shared_state(
            (pg_keys.clone(), keys.clone(), keys_version),
            (pg_catalog.clone(), catalog.clone(), catalog_version),
        ));
        let app = Arc::new(PostgresApp {
            pool: pool.clone(),
            dispatcher: pg_dispatcher,
            mail: MailApi {
                store: MailStore::Postgres(PgMail::new(pool.clone())),
                settings: config.mail.clone(),
                tokens: TokenKey::new(unsubscribe_key),
                sns: crate::api::mail::sns_fetcher(&config.feedback),
                feedback: config.feedback.clone(),
                body_timeout: config.body_timeout,
                queued: Some(mail_queued),
            },
            tracking: TrackingApi {
                store: TrackingStore::Postgres(tracked),
                settings: tracking,
                body_timeout: config.body_timeout,
            },
            dashboard: DashboardApi {
                keys: keys.clone(),
                sessions: Sessions::shared(PgSessions::new(pool.clone()), config.admin_session_ttl),
                body_timeout: config.body_timeout,
            },
            history: History::default(),
            hooks: PgHooks::new(pool),
            keys: keys.clone(),
            catalog_api: CatalogApi {
                store: CatalogStore::Postgres(pg_catalog),
                live: catalog.clone(),
                body_timeout: config.body_timeout,
            },
            keys_api: KeysApi {
                store: KeyStore::Postgres(pg_keys.clone()),
                live: keys.clone(),
                body_timeout: config.body_timeout,
            },
            events: EventApi {
                log: EventLog::Postgres(log.clone()),
                limits: config.limits,
                body_timeout: config.body_timeout,
                catalog: catalog.clone(),
            },
            log,
            config: config.clone(),
            portal_links: PortalKey::new(portal_key),
            public_url,
        });
        let listener = adopt(private_listener, config.listen)?;
        let signals = ShutdownSignals::install();
        if app.keys.is_open() {
            tracing::warn!(
                "no API key configured: the API at {private_addr} accepts every local caller; \
                 set server.api_keys or HERALD_API_KEYS"
            );
        }
        tracing::info!(
            addr = %private_addr,
            database = %database,
            schema_before = before,
            schema = crate::pg::schema::PG_SCHEMA_VERSION,
            "listening"
        );
        notify_systemd(&[sd_notify::NotifyState::Ready]);
        // A committer that ended (a panic) would leave a node that answers
        // every append 503: the node stops instead, for its supervisor to
        // restart it.
        let committer_ended = Arc::new(tokio::sync::Notify::new());
        let committer = {
            let ended = committer_ended.clone();
            tokio::spawn(async move {
                let outcome = committer.await;
                ended.notify_one();
                outcome
            })
        };
        let stop = async {
            tokio::select! {
                () = signals.recv() => {}
                () = committer_ended.notified() => {
                    tracing::error!("the event log's committer stopped; stopping the node");
                }
            }
        };
        let (public_stop, public_stopped) = tokio::sync::oneshot::channel::<()>();
        let public_server = match (public_listener, config.public.listen) {
            (Some(l), Some(public)) => {
                let listener = adopt(l, public)?;
                if let Ok(addr) = listener.local_addr() {
                    tracing::info!(addr = %addr, "public listening");
                }
                let stop = async {
                    let _ = public_stopped.await;
                };
                Some(tokio::spawn(crate::api::postgres::serve(
                    listener,
                    app.clone(),
                    stop,
                    Surface::Public,
                )))
            }
            _ => None,
        };
        crate::api::postgres::serve(listener, app, stop, Surface::Private).await;
        let _ = public_stop.send(());
        if let Some(server) = public_server {
            let _ = server.await;
        }
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
        stop_dispatch.notify_one();
        stop_senders.store(true, Ordering::Relaxed);
        shared_state_watch.abort();
        // A pass stops at its next batch; a statement under way is bounded
        // by the statement timeout, and what it did is committed or not.
        let _ = stop_retention.send(true);
        let _ = dispatcher.await;
        if tokio::time::timeout(WORKER_STOP_GRACE, retention)
            .await
            .is_err()
        {
            tracing::warn!("the retention pass did not stop in time");
        }
        // A sender mid-relay finishes its message (bounded by the mail
        // timeout); one that does not is left to its lease.
        let joined = tokio::task::spawn_blocking(move || {
            for sender in senders {
                let _ = sender.join();
            }
        });
        let _ = tokio::time::timeout(WORKER_STOP_GRACE, joined).await;
        // The server dropped its handles: the committer answers what is
        // queued, then ends.
        match tokio::time::timeout(WORKER_STOP_GRACE, committer).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(_) => Err(failed(PgError::CommitterStopped)),
            Err(_) => {
                tracing::warn!("the event log's committer did not finish in time");
                Ok(())
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    tracing::info!("stopped");
    served
}

/// What owner alerts need, when `[webhooks.owner_alerts]` is configured:
/// links to the endpoint's tenant's portal sign with the key the portal
/// checks them with.
fn owner_alerts(
    config: &Config,
    portal_key: [u8; 32],
    portal_base_url: &str,
) -> Option<OwnerAlerts> {
    let settings = config.webhooks.owner_alerts.clone()?;
    let key = PortalKey::new(portal_key);
    let portal = PortalLinks {
        base_url: portal_base_url.to_owned(),
        ttl: settings.portal_link_ttl,
        mint: Box::new(move |tenant, expires_at_ms| key.mint(tenant, expires_at_ms)),
    };
    Some(OwnerAlerts {
        settings,
        mail: config.mail.clone(),
        portal: Some(portal),
    })
}

/// Makes the README's Segment snippet work out of the box: where the API
/// itself accepts every local caller (loopback, no API key) and no tracking
/// source is configured, a `development` source is added and its write key
/// logged. Anywhere else a key in the log would be a key handed out. Keys
/// created through the API close the API, so they count as well (from the
/// next start).
fn add_development_source(config: &mut Config, store: &Store) -> Result<(), DaemonError> {
    if !wants_development_source(config, !store.read()?.api_keys()?.is_empty()) {
        return Ok(());
    }
    let source = development_source(store.persistent_secret("tracking.development")?);
    config.tracking.sources.push(source);
    Ok(())
}

fn wants_development_source(config: &Config, has_stored_keys: bool) -> bool {
    config.listen.ip().is_loopback()
        && config.is_unauthenticated()
        && !has_stored_keys
        && config.tracking.sources.is_empty()
}

fn development_source(secret: [u8; 32]) -> Source {
    let source = Source::development(secret);
    tracing::info!(
        source = %source.name,
        write_key = %source.write_key,
        "development tracking source"
    );
    source
}

/// Raises the soft limit on open files to the hard one: each connection,
/// idle ones included, holds a descriptor, and the usual soft limit (1,024)
/// is below what one listener may hold under a connection flood.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            None
        } else {
            let before = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            Some(if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                limit.rlim_max
            } else {
                before
            })
        }
    };
    match raised {
        Some(limit) => tracing::info!(limit, "open file limit"),
        None => tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot read the open file limit"
        ),
    }
}

fn bind(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, DaemonError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| DaemonError::Listen { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| DaemonError::Listen { addr, source })?;
    Ok(listener)
}

/// Hands a bound listener to the runtime (must run inside it).
fn adopt(
    listener: std::net::TcpListener,
    addr: std::net::SocketAddr,
) -> Result<TcpListener, DaemonError> {
    TcpListener::from_std(listener).map_err(|source| DaemonError::Listen { addr, source })
}

/// Hands a queue's schedule notes from the writer to its scheduler.
fn forward_to(inbox: crossbeam_channel::Sender<Inbox>) -> ScheduleListener {
    Box::new(move |note| {
        // After the scheduler stopped nobody listens: nothing to tell.
        let _ = inbox.send(Inbox::Schedule(note));
    })
}

fn notify_systemd(states: &[sd_notify::NotifyState]) {
    // Outside systemd NOTIFY_SOCKET is unset and this is a no-op.
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

struct ShutdownSignals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl ShutdownSignals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Self(Some((term, int))),
            _ => {
                tracing::error!("cannot install signal handlers; stop with SIGKILL");
                Self(None)
            }
        }
    }

    async fn recv(self) {
        let Some((mut term, mut int)) = self.0 else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}
