//! Webhook delivery benchmark: a real `herald serve` delivering signed
//! webhooks to a receiver in this process, over loopback.
//!
//! `cargo bench --bench webhooks` runs three scenarios, each against a fresh
//! daemon and database:
//! - `throughput-1-endpoint`: events posted in batches as fast as the API
//!   takes them, one endpoint; deliveries/s from the first post until the
//!   receiver has every delivery.
//! - `throughput-10-endpoints`: the same with ten endpoints, each receiving
//!   every event.
//! - `latency-1000-eps`: single events posted at a steady 1,000/s (open
//!   loop), one endpoint; event-to-receipt latency, measured from just
//!   before the POST to the receiver's arrival, so the durable commit is in.
//!
//! Environment: `HERALD_BENCH_EVENTS` (deliveries per throughput scenario,
//! default 20,000), `HERALD_BENCH_SECS` (length of the latency scenario,
//! default 10), `HERALD_BENCH_SCENARIOS` (comma-separated subset).

mod common;

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

use common::{connect, env_parse, post_json, quantile_ms, Daemon};

const CONFIG: &str = r#"
[webhooks]
allow_networks = ["127.0.0.1/32"]
require_https = false
max_in_flight_per_endpoint = 64
"#;
/// How long a throughput scenario may take before it reports what arrived.
const DEADLINE: Duration = Duration::from_secs(180);
const BATCH: usize = 500;

#[derive(Default)]
struct Received {
    count: AtomicU64,
    /// Post-to-receipt latency per delivery, when the scenario measures it.
    latencies_us: Mutex<Vec<u32>>,
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The receiver: answers 204 at once and counts; with `measure`, reads the
/// send time out of the event's data.
async fn start_receiver(received: Arc<Received>, measure: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the receiver");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let received = received.clone();
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let received = received.clone();
                async move {
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    if measure {
                        let now = unix_us();
                        let sent = serde_json::from_slice::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|v| v["data"]["sent_unix_us"].as_u64());
                        if let Some(sent) = sent {
                            let us = u32::try_from(now.saturating_sub(sent)).unwrap_or(u32::MAX);
                            received.latencies_us.lock().unwrap().push(us);
                        }
                    }
                    received.count.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .status(204)
                            .body(Full::new(Bytes::new()))
                            .expect("a valid response"),
                    )
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    addr
}

async fn create_endpoints(daemon: SocketAddr, receiver: SocketAddr, n: usize) {
    let mut conn = connect(daemon).await.expect("connecting to herald");
    for i in 0..n {
        let body = format!(r#"{{"url":"http://{receiver}/hook/{i}"}}"#);
        post_json(&mut conn, daemon, "/v1/endpoints", &body)
            .await
            .expect("creating an endpoint");
    }
}

fn event_json(i: u64) -> String {
    format!(
        r#"{{"type":"invoice.paid","tenant":"acme","data":{{"invoice":"in_{i}","amount":4200,"currency":"eur","sent_unix_us":{}}}}}"#,
        unix_us()
    )
}

struct Row {
    scenario: &'static str,
    endpoints: usize,
    events: u64,
    deliveries: u64,
    per_sec: f64,
    latencies_us: Vec<u32>,
    note: Option<String>,
}

async fn throughput(name: &'static str, endpoints: usize, deliveries: u64) -> Row {
    let mut daemon = Daemon::start(CONFIG);
    let received = Arc::new(Received::default());
    let receiver = start_receiver(received.clone(), false).await;
    create_endpoints(daemon.addr, receiver, endpoints).await;
    let events = deliveries / endpoints as u64;
    let addr = daemon.addr;

    let started = Instant::now();
    // A few connections posting batches concurrently, as an app would.
    let posters: Vec<_> = (0..4u64)
        .map(|p| {
            tokio::spawn(async move {
                let mut conn = connect(addr).await.map_err(|e| e.to_string())?;
                let mut i = p;
                let mut batch = Vec::with_capacity(BATCH);
                while i < events {
                    batch.clear();
                    while batch.len() < BATCH && i < events {
                        batch.push(event_json(i));
                        i += 4;
                    }
                    let body = format!(r#"{{"events":[{}]}}"#, batch.join(","));
                    post_json(&mut conn, addr, "/v1/events/batch", &body).await?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    let mut note = None;
    for p in posters {
        if let Ok(Err(e)) = p.await {
            note.get_or_insert(format!("posting failed: {e}"));
        }
    }
    let expected = events * endpoints as u64;
    while received.count.load(Ordering::Relaxed) < expected && started.elapsed() < DEADLINE {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let got = received.count.load(Ordering::Relaxed);
    if got < expected {
        note.get_or_insert(format!(
            "only {got} of {expected} arrived within {DEADLINE:?}"
        ));
    }
    daemon.stop();
    Row {
        scenario: name,
        endpoints,
        events,
        deliveries: got,
        per_sec: got as f64 / elapsed,
        latencies_us: Vec::new(),
        note,
    }
}

async fn steady_latency(secs: u64) -> Row {
    const RATE: u64 = 1000;
    const CONNECTIONS: usize = 16;
    let mut daemon = Daemon::start(CONFIG);
    let received = Arc::new(Received::default());
    let receiver = start_receiver(received.clone(), true).await;
    create_endpoints(daemon.addr, receiver, 1).await;
    let addr = daemon.addr;

    // Open loop: a tick per event hands work to a pool of connections, so a
    // slow answer delays the next post on that connection only.
    let (work_tx, work_rx) = async_channel(RATE as usize * secs as usize);
    let failures = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let work_rx = work_rx.clone();
            let failures = failures.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = connect(addr).await else {
                    return;
                };
                while let Ok(i) = recv(&work_rx).await {
                    if post_json(&mut conn, addr, "/v1/events", &event_json(i))
                        .await
                        .is_err()
                    {
                        failures.fetch_add(1, Ordering::Relaxed);
                        match connect(addr).await {
                            Ok(c) => conn = c,
                            Err(_) => return,
                        }
                    }
                }
            })
        })
        .collect();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = RATE * secs;
    let started = Instant::now();
    for i in 0..total {
        tick.tick().await;
        let _ = work_tx.send(i).await;
    }
    drop(work_tx);
    for w in workers {
        let _ = w.await;
    }
    let posted_in = started.elapsed().as_secs_f64();
    let sent = total - failures.load(Ordering::Relaxed);
    let end = Instant::now() + Duration::from_secs(30);
    while received.count.load(Ordering::Relaxed) < sent && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    daemon.stop();
    let mut latencies = std::mem::take(&mut *received.latencies_us.lock().unwrap());
    latencies.sort_unstable();
    let got = received.count.load(Ordering::Relaxed);
    Row {
        scenario: "latency-1000-eps",
        endpoints: 1,
        events: total,
        deliveries: got,
        per_sec: sent as f64 / posted_in,
        latencies_us: latencies,
        note: (got < sent).then(|| format!("only {got} of {sent} arrived")),
    }
}

/// A bounded multi-consumer queue from tokio's primitives.
type WorkRx = Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<u64>>>;

fn async_channel(capacity: usize) -> (tokio::sync::mpsc::Sender<u64>, WorkRx) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
    (tx, Arc::new(tokio::sync::Mutex::new(rx)))
}

async fn recv(rx: &WorkRx) -> Result<u64, ()> {
    rx.lock().await.recv().await.ok_or(())
}

fn main() {
    let deliveries = env_parse("HERALD_BENCH_EVENTS", 20_000u64);
    let secs = env_parse("HERALD_BENCH_SECS", 10u64);
    let selected: Option<Vec<String>> = std::env::var("HERALD_BENCH_SCENARIOS")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_owned()).collect());
    let wanted = |name: &str| {
        selected
            .as_ref()
            .is_none_or(|v| v.iter().any(|n| n == name))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("bench runtime");

    println!(
        "webhook delivery, {deliveries} deliveries per throughput scenario, {secs}s at 1,000 events/s\n\n\
         | scenario | endpoints | events | deliveries | deliveries/s | p50 ms | p99 ms | p99.9 ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut rows = Vec::new();
    if wanted("throughput-1-endpoint") {
        rows.push(runtime.block_on(throughput("throughput-1-endpoint", 1, deliveries)));
    }
    if wanted("throughput-10-endpoints") {
        rows.push(runtime.block_on(throughput("throughput-10-endpoints", 10, deliveries)));
    }
    if wanted("latency-1000-eps") {
        rows.push(runtime.block_on(steady_latency(secs)));
    }
    for row in rows {
        let q = |p: f64| quantile_ms(&row.latencies_us, p);
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} |",
            row.scenario,
            row.endpoints,
            row.events,
            row.deliveries,
            row.per_sec,
            q(0.50),
            q(0.99),
            q(0.999),
        );
        if let Some(note) = row.note {
            println!("  {note}");
        }
    }
}
