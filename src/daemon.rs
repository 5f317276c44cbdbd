//! `herald serve`: opens the store, starts the writer, serves the API until
//! SIGTERM/SIGINT, then drains requests, commits and closes the file.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{self, AppState, Surface};
use crate::config::Config;
use crate::mail::dispatch::{self as mail_dispatch, MailContext};
use crate::mail::unsubscribe::TokenKey;
use crate::store::{backup, OpenError, Store, StoreError, Writer};
use crate::webhooks;

/// How long stopping waits for mail attempts in flight.
const MAIL_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

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
}

pub fn run(config: Config) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("herald-io")
        .build()
        .map_err(DaemonError::Runtime)?;

    let path = config.database_path();
    let store = Store::open_with_cache(&path, config.cache_bytes)?;
    backup::remove_stale_temp_files(&config.data_dir);
    let (hook_notes, hook_inbox) = tokio::sync::mpsc::unbounded_channel();
    let (writer, writer_thread) = Writer::start(
        &store,
        config.queue_capacity,
        config.max_commit_batch,
        Some(hook_notes),
    )?;
    let hooks = Arc::new(webhooks::attempt::AttemptContext::new(
        store.clone(),
        writer.clone(),
        &config.webhooks,
    ));
    // Bound before mail starts: links in messages need the real addresses
    // when the configured ports are 0 (chosen by the kernel).
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
    let mail_threads = mail_dispatch::start(mail.clone())?;
    let state = Arc::new(AppState::new(
        store.clone(),
        writer.clone(),
        config.clone(),
        hooks.clone(),
        mail,
        mail_threads.queue(),
    ));

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
        if config.is_unauthenticated() {
            tracing::warn!(
                "no API key configured: the API at {addr} accepts every local caller; \
                 set server.api_keys or HERALD_API_KEYS"
            );
        }
        tracing::info!(addr = %addr, database = %path.display(), "listening");
        // Attempts it has in flight at shutdown are dropped with the
        // runtime; their schedule rows make them retry after the restart.
        runtime_spawn_dispatcher(hooks, hook_inbox);
        tokio::spawn(crate::tracking::retention::run(
            writer.clone(),
            config.tracking.clone(),
        ));
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

    // Handlers that outlived the grace period are dropped with the runtime;
    // then the writer commits what it already accepted and the file closes.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    // Mail attempts record their outcome through the writer: stop them first.
    mail_threads.stop(MAIL_STOP_GRACE);
    writer_thread.stop();
    drop(store);
    tracing::info!("stopped");
    served
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

fn runtime_spawn_dispatcher(
    hooks: Arc<webhooks::attempt::AttemptContext>,
    inbox: tokio::sync::mpsc::UnboundedReceiver<crate::store::webhooks::HookNote>,
) {
    let dispatcher = webhooks::dispatch::Dispatcher::new(hooks, inbox);
    tokio::spawn(dispatcher.run(std::future::pending()));
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
