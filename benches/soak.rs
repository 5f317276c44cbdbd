//! Soak benchmark: a steady mixed load with short retention set, sampling
//! the database file's size, to show that it levels off instead of growing
//! with everything ever written.
//!
//! `cargo bench --bench soak` starts a real `herald serve` with an endpoint
//! on a receiver in this process, a mail stream relaying to an SMTP sink in
//! this process and a tracking source, then for the run's length sends,
//! every second: a batch of events (each fanned out to the endpoint), a few
//! messages and a batch of tracked calls. Retention of events, deliveries,
//! dead letters, mail bodies and tracked calls is set to
//! `HERALD_BENCH_RETENTION`, so after about that long the file should stop
//! growing: freed pages are reused. Every sample reads `GET
//! /v1/admin/storage` and prints the file's size, the bytes the tables
//! hold and their rows; the end compares the growth of the run's second
//! half with its first.
//!
//! Environment:
//! - `HERALD_BENCH_SECS`: length of the run (default 240).
//! - `HERALD_BENCH_SAMPLE_SECS`: time between samples (default 30).
//! - `HERALD_BENCH_RETENTION`: every retention setting (default `"30s"`).
//! - `HERALD_BENCH_RATE`: events a second (default 200); tracked calls
//!   are as many, messages a twentieth of that.
//! - `HERALD_BENCH_THREADS`: threads of the bench's client runtime (default 2).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::daemon::Daemon;
use common::http::{self, connect, Connection};
use common::knobs::env_parse;
use common::load;
use common::smtp_sink::Sink;
use common::webhook_receiver::{self, Received};

const WRITE_KEY: &str = "soak_write_key_0123456789";
const REQUEST_LIMIT: Duration = Duration::from_secs(30);
/// Text of each message: a body worth purging.
const MAIL_TEXT_BYTES: usize = 4_096;

fn config(sink: SocketAddr, retention: &str) -> String {
    format!(
        r#"
[events]
retention = "{retention}"
[webhooks]
allow_networks = ["127.0.0.1/32"]
require_https = false
retention = "{retention}"
dead_letter_retention = "{retention}"
[mail]
body_retention = "{retention}"
[mail.streams.transactional]
from_domains = ["example.com"]
relay = "smtp://{sink}"
[tracking]
dedup_window = "{retention}"
retention = "{retention}"
prune_interval = "5s"
[[tracking.sources]]
name = "soak"
write_key = "{WRITE_KEY}"
[storage]
prune_interval = "5s"
"#
    )
}

/// Requests sent and refused, by kind.
#[derive(Default)]
struct Sent {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Sends the requests `make(tick)` builds once a second until `until`.
async fn steady(
    addr: SocketAddr,
    until: Instant,
    sent: Arc<Sent>,
    make: impl Fn(u64) -> Vec<Vec<u8>>,
) {
    let mut conn: Option<Connection> = None;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut tick = 0u64;
    while Instant::now() < until {
        ticker.tick().await;
        for request in make(tick) {
            if conn.is_none() {
                conn = connect(addr).await.ok();
            }
            let Some(stream) = conn.as_mut() else {
                sent.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            match http::exchange_within(stream, &request, REQUEST_LIMIT).await {
                Ok(_) => sent.ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => {
                    conn = None;
                    sent.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
        tick += 1;
    }
}

struct Sample {
    at: Duration,
    file_bytes: u64,
    stored_bytes: u64,
    rows: Vec<(String, u64)>,
}

async fn sample(addr: SocketAddr, started: Instant) -> Option<Sample> {
    let mut conn = connect(addr).await.ok()?;
    let report = http::get_json(&mut conn, addr, "/v1/admin/storage", REQUEST_LIMIT)
        .await
        .ok()?;
    let rows = ["events", "deliveries", "emails", "tracked"]
        .iter()
        .map(|name| {
            let rows = report["tables"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["name"] == *name))
                .and_then(|t| t["rows"].as_u64())
                .unwrap_or(0);
            ((*name).to_owned(), rows)
        })
        .collect();
    Some(Sample {
        at: started.elapsed(),
        file_bytes: report["file_bytes"].as_u64()?,
        stored_bytes: report["stored_bytes"].as_u64()?,
        rows,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn main() {
    let secs: u64 = env_parse("HERALD_BENCH_SECS", 240);
    let sample_secs: u64 = env_parse("HERALD_BENCH_SAMPLE_SECS", 30);
    let retention: String = env_parse("HERALD_BENCH_RETENTION", "30s".to_owned());
    let rate: u64 = env_parse("HERALD_BENCH_RATE", 200);
    let threads: usize = env_parse("HERALD_BENCH_THREADS", 2);
    let runtime = load::runtime(threads);
    let mut sink = Sink::start().expect("starting the SMTP sink");
    let mut daemon = Daemon::start(&config(sink.addr, &retention));
    let addr = daemon.addr;
    let received = Arc::new(Received::default());
    let samples = runtime.block_on(async {
        let (receiver, receiver_task) = webhook_receiver::start(received.clone(), false)
            .await
            .expect("starting the webhook receiver");
        let mut conn = connect(addr).await.expect("connecting");
        let endpoint = json!({"url": format!("http://{receiver}/hook")}).to_string();
        http::post_json(&mut conn, addr, "/v1/endpoints", &endpoint, REQUEST_LIMIT)
            .await
            .expect("creating the endpoint");
        let started = Instant::now();
        let until = started + Duration::from_secs(secs);
        let sent = Arc::new(Sent::default());
        let run = load::run_id();
        let events = tokio::spawn(steady(addr, until, sent.clone(), move |tick| {
            let batch: Vec<Value> = (0..rate)
                .map(|i| json!({"type": "soak.tick", "data": {"tick": tick, "i": i, "pad": "p".repeat(200)}}))
                .collect();
            let body = json!({ "events": batch }).to_string();
            vec![http::post(addr, "/v1/events/batch", "", &body)]
        }));
        let mail = tokio::spawn(steady(addr, until, sent.clone(), move |tick| {
            (0..(rate / 20).max(1))
                .map(|i| {
                    let body = json!({
                        "from": "Soak <soak@example.com>",
                        "to": format!("r{}@example.net", i % 50),
                        "subject": format!("tick {tick}"),
                        "text": "t".repeat(MAIL_TEXT_BYTES),
                    })
                    .to_string();
                    http::post(addr, "/v1/emails", "", &body)
                })
                .collect()
        }));
        let tracking = tokio::spawn(steady(addr, until, sent.clone(), move |tick| {
            let calls: Vec<Value> = (0..rate)
                .map(|i| json!({"type": "track", "userId": format!("u{}", i % 500),
                                "event": "Soaked", "messageId": format!("{run}-{tick}-{i}"),
                                "properties": {"tick": tick}}))
                .collect();
            let body = json!({"writeKey": WRITE_KEY, "batch": calls}).to_string();
            vec![http::post(addr, "/v1/batch", "", &body)]
        }));
        let mut samples = Vec::new();
        let mut next = started;
        while Instant::now() < until {
            if let Some(s) = sample(addr, started).await {
                samples.push(s);
            }
            next += Duration::from_secs(sample_secs);
            tokio::time::sleep_until(next.into()).await;
        }
        for task in [events, mail, tracking] {
            let _ = task.await;
        }
        if let Some(s) = sample(addr, started).await {
            samples.push(s);
        }
        receiver_task.abort();
        println!(
            "requests: {} answered, {} failed; webhooks received: {}; mail received: {}",
            sent.ok.load(Ordering::Relaxed),
            sent.failed.load(Ordering::Relaxed),
            received.count.load(Ordering::Relaxed),
            sink.shared.distinct(),
        );
        samples
    });
    daemon.stop();
    sink.stop();

    println!(
        "soak: {rate} events/s (each delivered), {rate} tracked calls/s, {} messages/s; retention {retention}",
        (rate / 20).max(1)
    );
    println!(
        "{:>6} {:>10} {:>10} {:>9} {:>11} {:>8} {:>9}",
        "t (s)", "file MiB", "data MiB", "events", "deliveries", "emails", "tracked"
    );
    for s in &samples {
        let rows: Vec<String> = s.rows.iter().map(|(_, n)| n.to_string()).collect();
        println!(
            "{:>6} {:>10.1} {:>10.1} {:>9} {:>11} {:>8} {:>9}",
            s.at.as_secs(),
            mib(s.file_bytes),
            mib(s.stored_bytes),
            rows[0],
            rows[1],
            rows[2],
            rows[3]
        );
    }
    let half = samples.len() / 2;
    if half >= 1 && samples.len() >= 3 {
        let first = mib(samples[half].file_bytes) - mib(samples[0].file_bytes);
        let second = mib(samples[samples.len() - 1].file_bytes) - mib(samples[half].file_bytes);
        println!("file growth: {first:.1} MiB in the first half, {second:.1} MiB in the second");
    }
}
