//! Ingest benchmark: durable event POSTs against a real `herald serve`.
//!
//! `cargo bench --bench ingest` starts the release binary on a loopback port
//! with a fresh database under `target/bench-data/`, drives it with
//! closed-loop HTTP/1.1 keep-alive clients (each sends its next request when
//! the previous answer arrived) and prints one Markdown row per scenario.
//! Every 2xx counted here was fsynced by the daemon before it was sent.
//!
//! Environment:
//! - `HERALD_BENCH_SECS`: measured seconds per scenario (default 8), after
//!   one unmeasured second of warm-up.
//! - `HERALD_BENCH_SCENARIOS`: comma-separated subset of
//!   `single-c1,single-c16,single-c64,batch100-c8,batch100-c32`.
//! - `HERALD_BENCH_TARGET`: `http://IP:PORT` of an already running server to
//!   drive instead of starting one (for comparing against another server
//!   that accepts the same requests).
//! - `HERALD_BENCH_THREADS`: client threads (default 2, like `wrk -t2`).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::http::{connect, exchange};
use common::knobs::{env_parse, Selection};
use common::report::quantile_ms;

const SCENARIOS: &[Scenario] = &[
    Scenario::new("single-c1", 1, 1),
    Scenario::new("single-c16", 16, 1),
    Scenario::new("single-c64", 64, 1),
    Scenario::new("batch100-c8", 8, 100),
    Scenario::new("batch100-c32", 32, 100),
];

/// A cap on one request, so a wedged server ends the run with an error
/// instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

struct Scenario {
    name: &'static str,
    connections: usize,
    /// 1 posts to `/v1/events`; more posts that many to `/v1/events/batch`.
    events_per_request: usize,
}

impl Scenario {
    const fn new(name: &'static str, connections: usize, events_per_request: usize) -> Self {
        Scenario {
            name,
            connections,
            events_per_request,
        }
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    failures: u64,
    first_failure: Option<String>,
}

fn main() {
    let secs = env_parse("HERALD_BENCH_SECS", 8u64);
    let threads = env_parse("HERALD_BENCH_THREADS", 2usize);
    let selected = Selection::from_env();
    let scenarios: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| selected.wants(s.name))
        .collect();
    selected.require_any(&SCENARIOS.iter().map(|s| s.name).collect::<Vec<_>>());

    let (addr, mut daemon) = match std::env::var("HERALD_BENCH_TARGET") {
        Ok(target) => (
            target
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .parse::<SocketAddr>()
                .unwrap_or_else(|e| panic!("HERALD_BENCH_TARGET={target:?}: {e}")),
            None,
        ),
        Err(_) => {
            let daemon = Daemon::start("");
            (daemon.addr, Some(daemon))
        }
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("client runtime");

    println!(
        "ingest against {addr}, {secs}s per scenario, {threads} client threads\n\n\
         | scenario | connections | requests/s | events/s | p50 ms | p99 ms | p99.9 ms | failed |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|"
    );
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    for scenario in scenarios {
        let tally = runtime.block_on(drive(addr, scenario, secs, run_id));
        report(scenario, secs, tally);
    }
    if let Some(daemon) = daemon.as_mut() {
        daemon.stop();
    }
}

async fn drive(addr: SocketAddr, scenario: &Scenario, secs: u64, run_id: u128) -> Tally {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for connection in 0..scenario.connections {
        let (measuring, stop) = (measuring.clone(), stop.clone());
        let per_request = scenario.events_per_request;
        let prefix = format!("{}-{run_id}-{connection}", scenario.name);
        clients.push(tokio::spawn(async move {
            client(addr, per_request, prefix, measuring, stop).await
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);

    let mut total = Tally::default();
    for c in clients {
        let tally = c.await.expect("client task");
        total.latencies_us.extend(tally.latencies_us);
        total.failures += tally.failures;
        total.first_failure = total.first_failure.or(tally.first_failure);
    }
    total
}

/// One keep-alive connection sending requests back to back; reconnects
/// after a failure so one refused request does not end the scenario.
async fn client(
    addr: SocketAddr,
    events_per_request: usize,
    key_prefix: String,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut sent = 0u64;
    let path = if events_per_request == 1 {
        "/v1/events"
    } else {
        "/v1/events/batch"
    };
    let mut connection = None;
    while !stop.load(Ordering::Relaxed) {
        if connection.is_none() {
            match connect(addr).await {
                Ok(c) => connection = Some(c),
                Err(e) => {
                    note_failure(&mut tally, format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(stream) = connection.as_mut() else {
            continue;
        };
        let body = request_body(&key_prefix, &mut sent, events_per_request);
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let started = Instant::now();
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, exchange(stream, request.as_bytes()))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")));
        let elapsed = started.elapsed();
        if outcome.is_err() {
            connection = None;
        }
        if !measuring.load(Ordering::Relaxed) {
            continue;
        }
        match outcome {
            Ok(_) => tally
                .latencies_us
                .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)),
            Err(e) => note_failure(&mut tally, e),
        }
    }
    tally
}

fn note_failure(tally: &mut Tally, message: String) {
    tally.failures += 1;
    tally.first_failure.get_or_insert(message);
}

/// The same invoice event the ceiling's wrk scripts send, each with an
/// idempotency key unique to this run, connection and request.
fn request_body(prefix: &str, sent: &mut u64, events: usize) -> String {
    let mut one = |out: &mut String| {
        *sent += 1;
        out.push_str(&format!(
            r#"{{"type":"invoice.paid","tenant":"acme","data":{{"invoice":"in_1NzQ8x2eZvKYlo2C","amount":4200,"currency":"eur","customer":"cus_9s6XKzkNRiz8i3","lines":[{{"sku":"pro-monthly","qty":1}}],"paid_at":"2026-11-22T10:00:00Z"}},"idempotency_key":"{prefix}-{sent}"}}"#
        ));
    };
    let mut body = String::with_capacity(320 * events + 16);
    if events == 1 {
        one(&mut body);
    } else {
        body.push_str(r#"{"events":["#);
        for i in 0..events {
            if i > 0 {
                body.push(',');
            }
            one(&mut body);
        }
        body.push_str("]}");
    }
    body
}

fn report(scenario: &Scenario, secs: u64, mut tally: Tally) {
    tally.latencies_us.sort_unstable();
    let ok = tally.latencies_us.len();
    let per_sec = ok as f64 / secs as f64;
    let quantile = |q: f64| quantile_ms(&tally.latencies_us, q);
    println!(
        "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} |",
        scenario.name,
        scenario.connections,
        per_sec,
        per_sec * scenario.events_per_request as f64,
        quantile(0.50),
        quantile(0.99),
        quantile(0.999),
        tally.failures,
    );
    if let Some(first) = tally.first_failure {
        println!("  first failure: {first}");
    }
}
