//! A webhook receiver on loopback: hyper, answering 204 at once on
//! keep-alive connections, counting each delivery once per endpoint path
//! and `webhook-id`, and checking the Standard Webhooks headers. Every
//! request is also counted on the connection it came in on, so a bench
//! can tell which sender made how many attempts.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// The clock events are stamped with (`data.sent_unix_us`) and the receiver
/// reads on arrival: wall time, since the stamp crosses the daemon.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[derive(Default)]
pub struct Received {
    /// Distinct deliveries: one per endpoint and `webhook-id`, so a
    /// redelivery cannot make a scenario look finished early.
    pub count: AtomicU64,
    pub redeliveries: AtomicU64,
    /// Deliveries without the Standard Webhooks headers or a JSON body.
    pub malformed: AtomicU64,
    seen: Mutex<HashSet<String>>,
    /// Stamp-to-receipt latency per distinct delivery, when measured.
    pub latencies_us: Mutex<Vec<u32>>,
    /// Requests per connection, by the sender's address: one lock per
    /// connection, not per request.
    connections: Mutex<Vec<(SocketAddr, Arc<AtomicU64>)>>,
}

impl Received {
    /// Waits until `expected` distinct deliveries arrived or `deadline`
    /// passed; how many did.
    pub async fn wait_for(&self, expected: u64, deadline: Instant) -> u64 {
        while self.count.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.count.load(Ordering::Relaxed)
    }

    /// Of `ids`, how many have not arrived at `path` yet.
    pub fn missing<'a>(&self, path: &str, ids: impl IntoIterator<Item = &'a str>) -> usize {
        let seen = self.seen.lock().unwrap();
        ids.into_iter()
            .filter(|id| !seen.contains(&format!("{path} {id}")))
            .count()
    }

    /// Every request received (redeliveries and malformed ones too), by
    /// the sender's address of the connection it came on.
    pub fn requests_by_peer(&self) -> Vec<(SocketAddr, u64)> {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .map(|(peer, n)| (*peer, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Notes on what was received but not counted.
    pub fn anomalies(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let redeliveries = self.redeliveries.load(Ordering::Relaxed);
        if redeliveries > 0 {
            notes.push(format!(
                "{redeliveries} redeliveries (same endpoint and webhook-id) not counted"
            ));
        }
        let malformed = self.malformed.load(Ordering::Relaxed);
        if malformed > 0 {
            notes.push(format!(
                "{malformed} deliveries lacked webhook headers or the event's data"
            ));
        }
        notes
    }
}

/// Listens on an ephemeral loopback port and counts into `received`; with
/// `measure`, reads the send time out of the event's `data.sent_unix_us`.
/// Aborting the task stops it.
pub async fn start(
    received: Arc<Received>,
    measure: bool,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of descriptors, most likely: let some close.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let requests = Arc::new(AtomicU64::new(0));
            received
                .connections
                .lock()
                .unwrap()
                .push((peer, requests.clone()));
            let received = received.clone();
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let received = received.clone();
                requests.fetch_add(1, Ordering::Relaxed);
                async move {
                    receive(&received, measure, req).await;
                    let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = hyper::StatusCode::NO_CONTENT;
                    Ok::<_, Infallible>(resp)
                }
            });
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

async fn receive(received: &Received, measure: bool, req: hyper::Request<hyper::body::Incoming>) {
    let key = req
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(|id| format!("{} {id}", req.uri().path()));
    let signed = req.headers().contains_key("webhook-signature")
        && req.headers().contains_key("webhook-timestamp");
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let now = unix_us();
    let Some(key) = key else {
        received.malformed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if !received.seen.lock().unwrap().insert(key) {
        received.redeliveries.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let sent = body
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["data"]["sent_unix_us"].as_u64());
    if !signed || sent.is_none() {
        received.malformed.fetch_add(1, Ordering::Relaxed);
    }
    if let (true, Some(sent)) = (measure, sent) {
        let us = u32::try_from(now.saturating_sub(sent)).unwrap_or(u32::MAX);
        received.latencies_us.lock().unwrap().push(us);
    }
    received.count.fetch_add(1, Ordering::Relaxed);
}
