//! Keep-alive HTTP/1.1 connections to webhook destinations: made on the
//! vetted address, handed out one request at a time, taken back when the
//! answer was read to its end, and dropped when idle too long.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::target::{Scheme, Target};

/// A connection exists because that many requests were in flight to its
/// destination at once, and reopening it costs more than keeping it for
/// the idle timeout. Endpoints that share a destination share its
/// connections, so this is no endpoint's in-flight cap, but the highest
/// one the configuration allows.
const MAX_IDLE_PER_DESTINATION: usize = 1024;
/// Under nginx's 75 s keep-alive; servers that close sooner (Apache and
/// Node.js: 5 s) are covered by the retry on a stale pooled connection.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections of destinations no longer sent to are dropped this
/// often (counted in check-ins), so the pool cannot grow without bound.
const SWEEP_EVERY_CHECK_INS: u64 = 1024;

/// A pooled connection is only reused for the same host name *and* the same
/// vetted address, so an address vetted for one name never serves another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    scheme: Scheme,
    host: String,
    port: u16,
    address: SocketAddr,
}

impl Destination {
    pub fn new(target: &Target, address: SocketAddr) -> Self {
        Destination {
            scheme: target.scheme,
            host: target.host.clone(),
            port: target.port,
            address,
        }
    }
}

/// One open HTTP/1.1 connection.
pub struct Connection {
    pub sender: SendRequest<Full<Bytes>>,
    /// The task driving the socket; aborting it closes the socket.
    driver: AbortHandle,
}

/// Dropping a connection closes it at once: a response body that was not
/// read to its end must not go on downloading in the background.
impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Connection {
    /// Runs the HTTP/1.1 handshake over an established stream.
    pub async fn handshake<S>(stream: S) -> Result<Connection, hyper::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(async move {
            // Its errors surface to the request that was in flight.
            let _ = driver.await;
        });
        Ok(Connection {
            sender,
            driver: driver.abort_handle(),
        })
    }

    #[cfg(test)]
    pub fn close(&self) {
        self.driver.abort();
    }
}

struct IdleConnection {
    connection: Connection,
    since: Instant,
}

impl IdleConnection {
    fn is_usable(&self) -> bool {
        !self.connection.sender.is_closed() && self.since.elapsed() < IDLE_TIMEOUT
    }
}

#[derive(Default)]
struct Idle {
    by_destination: HashMap<Destination, Vec<IdleConnection>>,
    check_ins: u64,
}

/// Idle connections by destination.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Idle>,
}

impl Pool {
    fn idle(&self) -> MutexGuard<'_, Idle> {
        // The pool holds no invariant a panicking holder could break.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ready idle connection to `target` at one of `addresses`, if any.
    pub async fn check_out(
        &self,
        target: &Target,
        addresses: &[SocketAddr],
    ) -> Option<(Destination, Connection)> {
        loop {
            let found = {
                let mut idle = self.idle();
                addresses.iter().find_map(|address| {
                    let destination = Destination::new(target, *address);
                    let list = idle.by_destination.get_mut(&destination)?;
                    while let Some(candidate) = list.pop() {
                        if candidate.is_usable() {
                            return Some((destination, candidate.connection));
                        }
                    }
                    None
                })
            };
            let (destination, mut connection) = found?;
            if connection.sender.ready().await.is_ok() {
                return Some((destination, connection));
            }
        }
    }

    /// Keeps a connection whose last answer was read to its end.
    pub fn check_in(&self, destination: Destination, connection: Connection) {
        if connection.sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        idle.check_ins = idle.check_ins.wrapping_add(1);
        if idle.check_ins % SWEEP_EVERY_CHECK_INS == 0 {
            idle.by_destination.retain(|_, list| {
                list.retain(IdleConnection::is_usable);
                !list.is_empty()
            });
        }
        let list = idle.by_destination.entry(destination).or_default();
        if list.len() < MAX_IDLE_PER_DESTINATION {
            list.push(IdleConnection {
                connection,
                since: Instant::now(),
            });
        }
    }

    /// Closes every idle connection as a server would.
    #[cfg(test)]
    pub fn close_all(&self) {
        for list in self.idle().by_destination.values() {
            for idle in list {
                idle.connection.close();
            }
        }
    }
}
