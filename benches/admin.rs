//! Dashboard benchmark: how long each page's API calls take with a large
//! log stored.
//!
//! `cargo bench --bench admin` starts the release binary, registers one
//! endpoint on a loopback port nothing listens on (so every event becomes
//! a pending delivery, as for a dead receiver), posts
//! `HERALD_BENCH_EVENTS` events through `/v1/events/batch` (1,000 a
//! request over 4 connections; ten types, twenty tenants) and queues 1,000
//! messages to the outbox. Then it asks, one request after another on one
//! keep-alive connection, every call each dashboard page makes, `ROUNDS`
//! times, and prints p50 and max per call and the sum of the p50s per page.
//!
//! The aim it measures: every page answers in under 300 ms with 1,000,000
//! events stored. The bench reports the figures and judges none; it exits
//! non-zero only when something broke: a fill request or a page call
//! failed.
//!
//! Environment:
//! - `HERALD_BENCH_EVENTS`: events to store (default 1,000,000).
//! - `HERALD_BENCH_THREADS`: threads of the bench's client runtime
//!   (default 2).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::dead_endpoint;
use common::http::{connect, exchange_within, get, get_json, post_json, Connection};
use common::knobs::env_parse;
use common::load::{self, Load};

const BATCH: u64 = 1000;
const FILL_CONNECTIONS: usize = 4;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Each call is asked this many times; the first answer counts too.
const ROUNDS: usize = 20;
const MESSAGES: usize = 1000;
const RECIPIENTS_PER_REQUEST: usize = 50;

fn main() {
    let events = env_parse("HERALD_BENCH_EVENTS", 1_000_000u64);
    let threads = env_parse("HERALD_BENCH_THREADS", 2usize);
    let runtime = load::runtime(threads);
    let mut broken = Vec::new();
    let mut daemon = Daemon::start(dead_endpoint::CONFIG);
    let addr = daemon.addr;
    let dead = dead_endpoint::closed_port().expect("a free loopback port");

    let fill_started = Instant::now();
    let endpoint = runtime.block_on(fill(addr, dead, events, &mut broken));
    let fill_secs = fill_started.elapsed().as_secs_f64();

    let mut rows = Vec::new();
    if let Some(endpoint) = endpoint {
        rows = runtime.block_on(measure(addr, &endpoint, &mut broken));
    }
    daemon.stop();

    println!(
        "command: `HERALD_BENCH_EVENTS={events} HERALD_BENCH_THREADS={threads} cargo bench --bench admin`\n\
         {events} events (each a pending delivery to a dead endpoint) and {MESSAGES} messages stored \
         in {fill_secs:.0} s; each call asked {ROUNDS} times in a row on one connection\n\n\
         | page | call | p50 ms | max ms |\n|---|---|---:|---:|"
    );
    let mut pages: Vec<(&str, f64, f64)> = Vec::new();
    for (page, call, p50, max) in &rows {
        println!("| {page} | `{call}` | {p50:.1} | {max:.1} |");
        match pages.iter_mut().find(|(p, _, _)| p == page) {
            Some(entry) => {
                entry.1 += p50;
                entry.2 += max;
            }
            None => pages.push((page, *p50, *max)),
        }
    }
    println!(
        "\n| page | its calls one after another: sum of p50 ms | sum of max ms |\n|---|---:|---:|"
    );
    for (page, p50, max) in pages {
        println!("| {page} | {p50:.1} | {max:.1} |");
    }
    if !broken.is_empty() {
        println!("\nBROKEN:\n- {}", broken.join("\n- "));
        std::process::exit(1);
    }
}

async fn fill(
    addr: SocketAddr,
    dead: SocketAddr,
    events: u64,
    broken: &mut Vec<String>,
) -> Option<String> {
    let endpoint = match dead_endpoint::create(addr, dead, REQUEST_TIMEOUT).await {
        Ok(id) => id,
        Err(e) => {
            broken.push(format!("creating the endpoint: {e}"));
            return None;
        }
    };
    let fillers = load::event_batches(addr, events, BATCH, |i| {
        format!(
            r#"{{"type":"bench.t{}","tenant":"tenant{}","data":{{"n":{i}}}}}"#,
            i % 10,
            i % 20
        )
    });
    let load = Load {
        connections: FILL_CONNECTIONS,
        warmup: Duration::ZERO,
        limit: None,
        request_timeout: REQUEST_TIMEOUT,
    };
    let fill = load::run(addr, &load, fillers).await;
    if let Some(first) = &fill.tally.first_failure {
        broken.push(format!(
            "{} fill requests failed, the first: {first}",
            fill.tally.failures
        ));
    }
    // The fill took longer than the daemon keeps an idle connection.
    let Ok(mut conn) = connect(addr).await else {
        broken.push("connecting to queue mail".into());
        return Some(endpoint);
    };
    for batch in 0..MESSAGES / RECIPIENTS_PER_REQUEST {
        let to: Vec<String> = (0..RECIPIENTS_PER_REQUEST)
            .map(|r| {
                format!(
                    "\"reader{}@example.net\"",
                    batch * RECIPIENTS_PER_REQUEST + r
                )
            })
            .collect();
        let body = format!(
            r#"{{"from":"bench@example.com","to":[{}],"subject":"Bench","text":"Hello."}}"#,
            to.join(",")
        );
        if let Err(e) = post_json(&mut conn, addr, "/v1/emails", &body, REQUEST_TIMEOUT).await {
            broken.push(format!("queueing mail: {e}"));
            break;
        }
    }
    Some(endpoint)
}

/// `ROUNDS` answers of `path`: p50 and max in ms.
async fn time(
    conn: &mut Connection,
    addr: SocketAddr,
    path: &str,
) -> Result<(f64, f64, serde_json::Value), String> {
    let mut took = Vec::with_capacity(ROUNDS);
    let mut last = serde_json::Value::Null;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let answer = exchange_within(conn, &get(addr, path), REQUEST_TIMEOUT).await?;
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        last = serde_json::from_slice(&answer).map_err(|e| format!("{path}: {e}"))?;
    }
    took.sort_by(f64::total_cmp);
    Ok((took[(ROUNDS - 1) / 2], took[ROUNDS - 1], last))
}

async fn measure(
    addr: SocketAddr,
    endpoint: &str,
    broken: &mut Vec<String>,
) -> Vec<(&'static str, String, f64, f64)> {
    let Ok(mut conn) = connect(addr).await else {
        broken.push("connecting for the page calls".into());
        return Vec::new();
    };
    // Ids the detail pages open, read from the daemon first.
    let some = |v: Result<serde_json::Value, String>, key: &str| -> String {
        v.ok()
            .and_then(|v| v[key][0]["id"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let delivery = some(
        get_json(&mut conn, addr, "/v1/deliveries?limit=1", REQUEST_TIMEOUT).await,
        "deliveries",
    );
    let email = some(
        get_json(
            &mut conn,
            addr,
            "/v1/emails?to=reader500@example.net",
            REQUEST_TIMEOUT,
        )
        .await,
        "emails",
    );
    let recent = time_param(Duration::from_secs(60));
    let calls: Vec<(&'static str, String)> = vec![
        ("overview", "/v1/admin/overview".into()),
        ("events", "/v1/events?limit=100".into()),
        ("events", "/v1/events?type=bench.t7&limit=100".into()),
        ("events", "/v1/events?tenant=tenant13&limit=100".into()),
        ("events", format!("/v1/events?since={recent}&limit=500")),
        ("endpoints", "/v1/endpoints".into()),
        ("endpoints", format!("/v1/endpoints/{endpoint}/stats")),
        (
            "endpoints",
            format!("/v1/deliveries?endpoint={endpoint}&status=failed&limit=5"),
        ),
        ("delivery", format!("/v1/deliveries/{delivery}")),
        ("dead letters", "/v1/dead-letters?limit=100".into()),
        (
            "emails",
            "/v1/emails?to=reader500%40example.net&limit=100".into(),
        ),
        ("emails", "/v1/emails?limit=100".into()),
        ("email", format!("/v1/emails/{email}")),
        ("suppressions", "/v1/suppressions?limit=1000".into()),
        ("streams", "/v1/streams".into()),
        ("storage", "/v1/admin/overview".into()),
        // Counted only when the page's button asks: it walks the file.
        ("storage table sizes", "/v1/admin/storage".into()),
    ];
    let mut rows = Vec::new();
    for (page, path) in calls {
        match time(&mut conn, addr, &path).await {
            Ok((p50, max, _)) => rows.push((page, path, p50, max)),
            Err(e) => {
                broken.push(format!("{path}: {e}"));
                // A timed-out connection is in an unknown state.
                match connect(addr).await {
                    Ok(c) => conn = c,
                    Err(_) => break,
                }
            }
        }
    }
    rows
}

/// `ago` before now as RFC 3339, as a query takes it.
fn time_param(ago: Duration) -> String {
    let ms = herald::clock::now_ms() - ago.as_millis() as i64;
    herald::clock::format_rfc3339(ms)
}
