//! The accept loop: admits connections per peer, closes those that send no
//! request head in time (oldest first when room is needed), and gives a
//! `server.max_connections` slot only to a request being served.
//!
//! A connection waiting for a request head (a new one, or one kept alive
//! between requests) costs a socket and a little memory, and nothing else:
//! it is counted among the idle ones, bounded by `max_idle` and by the
//! per-peer cap, and when either is reached the oldest idle connection is
//! closed to make room. Clients that trickle their headers (slowloris)
//! therefore cannot keep a newer, honest client out, even from the same
//! address; and the header deadline runs from accept (or from the end of
//! the previous response), so trickling bytes does not extend it.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::http::{json, Resp, ResponseBody};

/// What bounds the connections of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests served at once; further ones wait for a slot.
    pub max_connections: usize,
    /// Connections waiting for a request head, new or kept alive.
    pub max_idle: usize,
    /// Connections of one IP address, serving or idle.
    pub per_peer: usize,
    /// Time from accept, or from the end of the previous response, until a
    /// request head must be complete.
    pub header_timeout: Duration,
    /// How long requests in flight may finish once shutdown begins.
    pub shutdown_grace: Duration,
}

/// Accepts connections until `shutdown` resolves, then lets requests in
/// flight finish for up to `limits.shutdown_grace`.
pub async fn serve<H, F>(
    listener: TcpListener,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let registry = Arc::new(Registry::new(limits));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    // hyper's own header timer is a backstop behind the registry's deadline.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .max_buf_size(64 * 1024);
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE: free a descriptor held by the
                    // longest-idle connection rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    registry.close_oldest_idle();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some((id, phase)) = registry.admit(peer.ip(), head_waiting(&stream)) else {
            // Every connection of this peer is serving a request.
            tracing::debug!(peer = %peer.ip(), "connection refused: the peer is at its cap");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = {
            let registry = registry.clone();
            let handler = handler.clone();
            service_fn(move |req| {
                let registry = registry.clone();
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(serve_request(&registry, id, req, handler).await) }
            })
        };
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(watch_connection(conn, registry.clone(), id, phase));
    }
    drop(listener);
    registry.stop_admitting();
    tracing::info!("stopped accepting; waiting for in-flight requests");
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
}

/// Whether a complete request head already waits in the connection's
/// receive buffer. Such a connection is not idle from the start: under a
/// flood of new connections from its address, its task might otherwise
/// run only after enough newer ones made it the oldest idle connection.
/// An honest client sends its request right after connecting, so by the
/// time a busy listener accepts it, the head is usually here.
fn head_waiting(stream: &tokio::net::TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 8 * 1024];
    // SAFETY: recv(2) writes at most `buf.len()` bytes into `buf`; with
    // MSG_PEEK the data stays queued for hyper, and MSG_DONTWAIT keeps the
    // call from blocking.
    let peeked = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(peeked)
        .ok()
        .and_then(|n| buf.get(..n))
        .is_some_and(|head| head.windows(4).any(|w| w == b"\r\n\r\n"))
}

/// One request: taken out of the idle pool, served once a slot is free, and
/// the slot held until the whole answer is written.
async fn serve_request<H, F>(
    registry: &Arc<Registry>,
    id: u64,
    req: Request<Incoming>,
    handler: H,
) -> Resp
where
    H: Fn(Request<Incoming>) -> F,
    F: Future<Output = Resp>,
{
    if !registry.begin(id) {
        // Closed to make room the moment its head completed.
        let mut resp = json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":{"code":"unavailable","message":"the connection was closed to make room; retry"}}"#,
        );
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    let slot = registry
        .slots
        .clone()
        .acquire_owned()
        .await
        .expect("the slot semaphore is never closed");
    let serving = Serving {
        registry: registry.clone(),
        id,
        _slot: slot,
    };
    handler(req).await.map(|body| {
        BodyExt::boxed(Guarded {
            inner: body,
            _serving: serving,
        })
    })
}

/// Drives one connection until it ends, is closed to make room, or misses
/// its header deadline.
async fn watch_connection(
    conn: impl Future,
    registry: Arc<Registry>,
    id: u64,
    mut phase: watch::Receiver<Phase>,
) {
    tokio::pin!(conn);
    loop {
        let current = *phase.borrow_and_update();
        match current {
            Phase::Closed => break,
            Phase::Serving => tokio::select! {
                _ = &mut conn => break,
                changed = phase.changed() => if changed.is_err() { break },
            },
            Phase::Waiting { until } => tokio::select! {
                _ = &mut conn => break,
                changed = phase.changed() => if changed.is_err() { break },
                () = tokio::time::sleep_until(until) => {
                    if registry.expire(id, until) {
                        tracing::debug!("connection closed: no request head before the deadline");
                        break;
                    }
                }
            },
        }
    }
    registry.forget(id);
}

/// Where a connection is, as its watcher sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head, which must be complete by `until`.
    Waiting { until: Instant },
    /// A request is being served; its answer is not yet fully written.
    Serving,
    /// Closed to make room or past its deadline: drop it.
    Closed,
}

/// A request holds this until its answer is written: the slot, and the
/// connection's place among those serving.
struct Serving {
    registry: Arc<Registry>,
    id: u64,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.registry.end(self.id);
    }
}

/// An answer's body, holding the request's slot until it is written.
struct Guarded {
    inner: ResponseBody,
    _serving: Serving,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

struct Connection {
    peer: IpAddr,
    /// Its place in the idle order while waiting for a request head.
    idle_turn: Option<u64>,
    phase: watch::Sender<Phase>,
}

#[derive(Default)]
struct Peer {
    open: usize,
    /// Idle turn → connection id, oldest first.
    idle: BTreeMap<u64, u64>,
}

#[derive(Default)]
struct Connections {
    next_id: u64,
    next_turn: u64,
    open: HashMap<u64, Connection>,
    /// Idle turn → connection id, oldest first.
    idle: BTreeMap<u64, u64>,
    peers: HashMap<IpAddr, Peer>,
    stopping: bool,
}

/// Every connection of one listener, and the slots of requests served.
struct Registry {
    limits: Limits,
    slots: Arc<Semaphore>,
    connections: Mutex<Connections>,
}

impl Registry {
    fn new(limits: Limits) -> Self {
        Registry {
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            connections: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connections> {
        // The sections below never panic midway; a poisoned lock still
        // holds consistent books.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a new connection from `peer`, closing the oldest idle one (the
    /// peer's own first) when a cap is reached; `None` if every connection
    /// of the peer is busy. One whose request head is already here is not
    /// idle: it is not closed to make room before its request begins.
    fn admit(&self, peer: IpAddr, head_waiting: bool) -> Option<(u64, watch::Receiver<Phase>)> {
        let peer = peer.to_canonical();
        let mut books = self.lock();
        if books.stopping {
            return None;
        }
        let open = books.peers.get(&peer).map_or(0, |p| p.open);
        if open >= self.limits.per_peer {
            let oldest = books
                .peers
                .get(&peer)
                .and_then(|p| p.idle.values().next().copied())?;
            books.close(oldest);
        }
        while books.idle.len() >= self.limits.max_idle {
            let Some(&oldest) = books.idle.values().next() else {
                break;
            };
            books.close(oldest);
        }
        let id = books.next_id;
        books.next_id += 1;
        let until = Instant::now() + self.limits.header_timeout;
        let (phase, watcher) = watch::channel(Phase::Waiting { until });
        books.open.insert(
            id,
            Connection {
                peer,
                idle_turn: None,
                phase,
            },
        );
        books.peers.entry(peer).or_default().open += 1;
        if !head_waiting {
            books.make_idle(id);
        }
        Some((id, watcher))
    }

    /// A request head arrived: the connection leaves the idle pool. `false`
    /// if it was already closed to make room.
    fn begin(&self, id: u64) -> bool {
        let mut books = self.lock();
        books.leave_idle(id);
        match books.open.get(&id) {
            Some(conn) => {
                conn.phase.send_replace(Phase::Serving);
                true
            }
            None => false,
        }
    }

    /// The answer is written: the connection waits for its next request
    /// head, by a fresh deadline, among the idle ones.
    fn end(&self, id: u64) {
        let mut books = self.lock();
        // While stopping, hyper closes each connection once its answer is
        // out; closing it here could cut that answer short.
        if books.stopping {
            return;
        }
        let until = Instant::now() + self.limits.header_timeout;
        let Some(conn) = books.open.get(&id) else {
            return;
        };
        conn.phase.send_replace(Phase::Waiting { until });
        while books.idle.len() >= self.limits.max_idle {
            let Some(&oldest) = books.idle.values().next() else {
                break;
            };
            books.close(oldest);
        }
        books.make_idle(id);
    }

    /// Closes the connection if it is still waiting by this deadline.
    fn expire(&self, id: u64, until: Instant) -> bool {
        let mut books = self.lock();
        let still_waiting = books
            .open
            .get(&id)
            .is_some_and(|c| *c.phase.borrow() == Phase::Waiting { until });
        if still_waiting {
            books.close(id);
        }
        still_waiting
    }

    /// The connection ended on its own or was dropped by its watcher.
    fn forget(&self, id: u64) {
        self.lock().remove(id);
    }

    fn close_oldest_idle(&self) {
        let mut books = self.lock();
        if let Some(&oldest) = books.idle.values().next() {
            books.close(oldest);
        }
    }

    /// Shutdown: no new connections, and the idle ones close now rather
    /// than at their deadline.
    fn stop_admitting(&self) {
        let mut books = self.lock();
        books.stopping = true;
        let idle: Vec<u64> = books.idle.values().copied().collect();
        for id in idle {
            books.close(id);
        }
    }
}

impl Connections {
    fn make_idle(&mut self, id: u64) {
        let turn = self.next_turn;
        self.next_turn += 1;
        let Some(conn) = self.open.get_mut(&id) else {
            return;
        };
        conn.idle_turn = Some(turn);
        let peer = conn.peer;
        self.idle.insert(turn, id);
        self.peers.entry(peer).or_default().idle.insert(turn, id);
    }

    fn leave_idle(&mut self, id: u64) {
        let Some(conn) = self.open.get_mut(&id) else {
            return;
        };
        let Some(turn) = conn.idle_turn.take() else {
            return;
        };
        let peer = conn.peer;
        self.idle.remove(&turn);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.idle.remove(&turn);
        }
    }

    /// Tells the connection's watcher to drop it, and stops counting it.
    fn close(&mut self, id: u64) {
        if let Some(conn) = self.open.get(&id) {
            conn.phase.send_replace(Phase::Closed);
        }
        self.remove(id);
    }

    fn remove(&mut self, id: u64) {
        self.leave_idle(id);
        let Some(conn) = self.open.remove(&id) else {
            return;
        };
        if let Some(peer) = self.peers.get_mut(&conn.peer) {
            peer.open -= 1;
            if peer.open == 0 {
                self.peers.remove(&conn.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_idle: usize, per_peer: usize) -> Limits {
        Limits {
            max_connections: 2,
            max_idle,
            per_peer,
            header_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(1),
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn closed(watcher: &watch::Receiver<Phase>) -> bool {
        *watcher.borrow() == Phase::Closed
    }

    #[tokio::test]
    async fn a_full_idle_pool_closes_its_oldest_connection_for_a_new_one() {
        let registry = Registry::new(limits(3, 100));
        let conns: Vec<_> = (0..3)
            .map(|i| registry.admit(ip(i), false).unwrap())
            .collect();
        let (newest, newest_phase) = registry.admit(ip(9), false).unwrap();
        assert!(closed(&conns[0].1), "the oldest idle one makes room");
        assert!(!closed(&conns[1].1) && !closed(&conns[2].1) && !closed(&newest_phase));
        // A connection serving a request is not idle and is never closed
        // to make room; it rejoins the pool, as its newest, once answered.
        assert!(registry.begin(conns[1].0));
        registry.admit(ip(10), false).unwrap();
        assert!(!closed(&conns[2].1), "one left the pool: room enough");
        registry.end(conns[1].0);
        assert!(closed(&conns[2].1), "the oldest idle one made room again");
        assert!(!closed(&conns[1].1) && !closed(&newest_phase));
        registry.admit(ip(11), false).unwrap();
        assert!(closed(&newest_phase));
        assert!(!closed(&conns[1].1), "back in the pool as its newest");
        assert!(
            !registry.begin(newest),
            "a closed connection serves nothing"
        );
    }

    #[tokio::test]
    async fn a_peer_at_its_cap_loses_its_own_oldest_idle_connection() {
        let registry = Registry::new(limits(100, 2));
        let (a, a_phase) = registry.admit(ip(1), false).unwrap();
        let (_, b_phase) = registry.admit(ip(1), false).unwrap();
        let (_, other_phase) = registry.admit(ip(2), false).unwrap();
        let (_, c_phase) = registry.admit(ip(1), false).unwrap();
        assert!(closed(&a_phase) && !closed(&b_phase) && !closed(&c_phase));
        assert!(!closed(&other_phase), "another peer keeps its connection");
        assert!(!registry.begin(a));
        // With every connection serving, a further one is refused.
        let registry = Registry::new(limits(100, 2));
        let first = registry.admit(ip(1), false).unwrap().0;
        let second = registry.admit(ip(1), false).unwrap().0;
        assert!(registry.begin(first) && registry.begin(second));
        assert!(registry.admit(ip(1), false).is_none());
        registry.end(second);
        assert!(registry.admit(ip(1), false).is_some());
    }

    #[tokio::test]
    async fn a_connection_whose_head_is_already_here_is_not_closed_to_make_room() {
        let registry = Registry::new(limits(1, 2));
        let (ready, ready_phase) = registry.admit(ip(1), true).unwrap();
        let (_, idle_phase) = registry.admit(ip(1), false).unwrap();
        let (_, newest_phase) = registry.admit(ip(1), false).unwrap();
        assert!(closed(&idle_phase), "the idle one made room");
        assert!(!closed(&ready_phase) && !closed(&newest_phase));
        assert!(registry.begin(ready));
    }

    #[tokio::test]
    async fn a_deadline_closes_only_a_connection_still_waiting_for_it() {
        let registry = Registry::new(limits(100, 100));
        let (id, phase) = registry.admit(ip(1), false).unwrap();
        let Phase::Waiting { until } = *phase.borrow() else {
            panic!("a new connection waits for its head");
        };
        assert!(registry.begin(id));
        assert!(!registry.expire(id, until), "serving: the deadline is void");
        registry.end(id);
        assert!(!registry.expire(id, until), "a fresh deadline replaced it");
        let Phase::Waiting { until } = *phase.borrow() else {
            panic!("waiting again after the answer");
        };
        assert!(registry.expire(id, until));
        assert!(closed(&phase));
    }
}
