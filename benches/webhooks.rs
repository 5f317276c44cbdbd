//! Webhook delivery benchmark: a real `herald serve` delivering signed
//! webhooks to a receiver in this process, over loopback.
//!
//! `cargo bench --bench webhooks` runs three scenarios, each against a fresh
//! daemon and database, so one scenario's backlog or pooled connections
//! cannot flatter or slow the next:
//! - `throughput-1-endpoint`: events posted in batches of 500 as fast as the
//!   API takes them, one endpoint; deliveries/s from the first post until
//!   the receiver has every delivery.
//! - `throughput-10-endpoints`: the same with ten endpoints, each receiving
//!   every event, and a tenth of the events, so the delivery count matches.
//! - `latency-1000-eps`: single events posted at a steady 1,000/s (open
//!   loop), one endpoint; event-to-receipt latency, measured from the
//!   moment the schedule said to post (so a post held up behind a slow one
//!   counts its wait) to the receiver's arrival, durable commit included.
//!
//! The receiver counts a delivery once per endpoint and `webhook-id`, so a
//! redelivery cannot make a scenario look finished early; redeliveries are
//! reported apart. API requests and the waits for deliveries have
//! deadlines: a slow daemon ends a scenario with a report of what arrived,
//! not a hang or a panic.
//!
//! Environment:
//! - `HERALD_BENCH_EVENTS`: deliveries per throughput scenario (default
//!   20,000). Larger runs show the steady state rather than the ramp-up of
//!   the dispatcher and its connection pool.
//! - `HERALD_BENCH_SECS`: length of the latency scenario (default 10); a
//!   few seconds are enough for p99, p99.9 wants more samples.
//! - `HERALD_BENCH_SCENARIOS`: comma-separated subset of the names above,
//!   to iterate on one without waiting for the others.
//! - `HERALD_BENCH_THREADS`: threads of the bench's own runtime (client and
//!   receiver, default 2), which shares the machine with the daemon.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::http::{self, connect, post_json};
use common::knobs::{env_parse, Selection};
use common::load::{self, Load, Scheduled};
use common::report::{quantile_ms, resident_mib, Findings};
use common::webhook_receiver::{self, unix_us, Received};

/// Appended to the shared bench config (JSON logs at `info`, which the
/// daemon keeps off the per-request path). Loopback must be allowed
/// explicitly and over plain HTTP; 64 in flight lets one endpoint use the
/// pool instead of measuring the default cap of 8.
const CONFIG: &str = r#"
[webhooks]
allow_networks = ["127.0.0.1/32"]
require_https = false
max_in_flight_per_endpoint = 64
"#;

const SCENARIOS: &[&str] = &[
    "throughput-1-endpoint",
    "throughput-10-endpoints",
    "latency-1000-eps",
];
/// How long a throughput scenario may take, posting included, before it
/// reports what arrived.
const DEADLINE: Duration = Duration::from_secs(120);
/// How long the latency scenario waits for stragglers after its last post.
const DRAIN: Duration = Duration::from_secs(30);
/// A cap on one API request, so a wedged daemon ends a scenario with a
/// failure instead of hanging the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const BATCH: u64 = 500;
/// Connections posting batches at once, as a busy app would.
const POSTERS: usize = 4;
const RATE: u64 = 1000;
/// Keep-alive connections the open-loop poster spreads its events over;
/// enough that a slow commit rarely leaves a tick without one.
const LATENCY_CONNECTIONS: usize = 16;

/// Creates `n` endpoints on the receiver; how many were created.
async fn create_endpoints(
    daemon: SocketAddr,
    receiver: SocketAddr,
    n: usize,
    tally: &mut Findings,
) -> usize {
    let mut conn = match connect(daemon).await {
        Ok(c) => c,
        Err(e) => {
            tally.fail(format!("connecting to herald: {e}"));
            return 0;
        }
    };
    let mut created = 0;
    for i in 0..n {
        // A path per endpoint tells the receiver whose delivery it is.
        let body = format!(r#"{{"url":"http://{receiver}/hook/{i}"}}"#);
        match post_json(&mut conn, daemon, "/v1/endpoints", &body, REQUEST_TIMEOUT).await {
            Ok(_) => created += 1,
            Err(e) => tally.fail(format!("creating an endpoint: {e}")),
        }
    }
    created
}

fn event_json(i: u64, sent_unix_us: u64) -> String {
    format!(
        r#"{{"type":"invoice.paid","tenant":"acme","data":{{"invoice":"in_{i}","amount":4200,"currency":"eur","sent_unix_us":{sent_unix_us}}}}}"#
    )
}

struct Row {
    scenario: &'static str,
    endpoints: usize,
    events: u64,
    deliveries: u64,
    per_sec: f64,
    latencies_us: Vec<u32>,
    tally: Findings,
}

fn run_throughput(
    runtime: &tokio::runtime::Runtime,
    name: &'static str,
    endpoints: usize,
    deliveries: u64,
) -> Row {
    let mut daemon = Daemon::start(CONFIG);
    let row = runtime.block_on(throughput(
        daemon.addr,
        daemon.pid(),
        name,
        endpoints,
        deliveries,
    ));
    daemon.stop();
    row
}

async fn throughput(
    addr: SocketAddr,
    pid: u32,
    name: &'static str,
    endpoints: usize,
    deliveries: u64,
) -> Row {
    let mut tally = Findings::default();
    let received = Arc::new(Received::default());
    let (receiver, receiver_task) = match webhook_receiver::start(received.clone(), false).await {
        Ok(r) => r,
        Err(e) => {
            tally.fail(format!("starting the receiver: {e}"));
            return empty_row(name, endpoints, tally);
        }
    };
    let created = create_endpoints(addr, receiver, endpoints, &mut tally).await;
    let events = deliveries / endpoints as u64;
    if created == 0 {
        receiver_task.abort();
        return empty_row(name, endpoints, tally);
    }

    let idle_mib = resident_mib(pid).map(|(_, now)| now);
    let load = Load {
        connections: POSTERS,
        warmup: Duration::ZERO,
        limit: Some(DEADLINE),
        request_timeout: REQUEST_TIMEOUT,
    };
    let posters = load::event_batches(addr, events, BATCH, |i| event_json(i, unix_us()));
    let posting = load::run(addr, &load, posters).await;
    tally.count(&posting.tally);
    let posted: u64 = posting.conversations.iter().map(|p| p.posted).sum();
    let (started, posted_in) = (posting.started, posting.elapsed);

    let expected = posted * created as u64;
    let got = received.wait_for(expected, started + DEADLINE).await;
    let elapsed = started.elapsed();
    receiver_task.abort();
    if let (Some(idle), Some((peak, now))) = (idle_mib, resident_mib(pid)) {
        tally.notes.push(format!(
            "daemon resident memory {idle:.0} MiB idle, peak {peak:.0} MiB under load, {now:.0} MiB after"
        ));
    }
    tally.notes.push(format!(
        "{posted} events accepted in {:.2} s ({:.0} events/s); last delivery counted at {:.2} s",
        posted_in.as_secs_f64(),
        posted as f64 / posted_in.as_secs_f64(),
        elapsed.as_secs_f64(),
    ));
    if posted < events {
        tally
            .notes
            .push(format!("only {posted} of {events} events were accepted"));
    }
    if got < expected {
        tally.notes.push(format!(
            "only {got} of {expected} deliveries arrived within {DEADLINE:?}"
        ));
    }
    tally.notes.extend(received.anomalies());
    Row {
        scenario: name,
        endpoints: created,
        events: posted,
        deliveries: got,
        per_sec: got as f64 / elapsed.as_secs_f64(),
        latencies_us: Vec::new(),
        tally,
    }
}

fn run_latency(runtime: &tokio::runtime::Runtime, secs: u64) -> Row {
    let mut daemon = Daemon::start(CONFIG);
    let row = runtime.block_on(steady_latency(daemon.addr, secs));
    daemon.stop();
    row
}

/// A connection of the latency scenario: single events, each stamped with
/// the wall time it was due, which the receiver compares against.
struct Paced {
    addr: SocketAddr,
    /// An instant and the wall clock then, to turn a due instant into
    /// wall time.
    epoch: (Instant, u64),
}

impl Scheduled for Paced {
    fn request(&mut self, index: u64, due: Instant) -> Vec<u8> {
        let (epoch, epoch_us) = self.epoch;
        let due_us = epoch_us + due.saturating_duration_since(epoch).as_micros() as u64;
        http::post(self.addr, "/v1/events", "", &event_json(index, due_us))
    }
}

async fn steady_latency(addr: SocketAddr, secs: u64) -> Row {
    let name = "latency-1000-eps";
    let mut tally = Findings::default();
    let received = Arc::new(Received::default());
    let (receiver, receiver_task) = match webhook_receiver::start(received.clone(), true).await {
        Ok(r) => r,
        Err(e) => {
            tally.fail(format!("starting the receiver: {e}"));
            return empty_row(name, 1, tally);
        }
    };
    if create_endpoints(addr, receiver, 1, &mut tally).await == 0 {
        receiver_task.abort();
        return empty_row(name, 1, tally);
    }

    // Open loop, so a slow answer delays only its own connection and the
    // event's wait for a free one counts toward its latency.
    let total = RATE * secs;
    let epoch = (Instant::now(), unix_us());
    let posting = load::open_loop(
        addr,
        LATENCY_CONNECTIONS,
        RATE,
        total,
        REQUEST_TIMEOUT,
        || Paced { addr, epoch },
    )
    .await;
    tally.count(&posting.tally);
    let (started, posted_in) = (posting.started, posting.elapsed);
    // Every answered request is one accepted event.
    let answered_us = &posting.tally.latencies_us;
    let accepted = answered_us.len() as u64;
    let got = received.wait_for(accepted, Instant::now() + DRAIN).await;
    let elapsed = started.elapsed();
    receiver_task.abort();
    tally.notes.push(format!(
        "{accepted} of {total} events accepted in {:.2} s ({:.0} events/s achieved against {RATE} scheduled)",
        posted_in.as_secs_f64(),
        accepted as f64 / posted_in.as_secs_f64(),
    ));
    if got < accepted {
        tally.notes.push(format!(
            "only {got} of {accepted} deliveries arrived within {DRAIN:?} of the last post"
        ));
    }
    // Splits the latency: how much of it the API's durable commit (and the
    // wait for a free connection) took, the rest being delivery.
    tally.notes.push(format!(
        "API answered (schedule to 2xx) p50 {} ms, p99 {} ms, p99.9 {} ms",
        quantile_ms(answered_us, 0.50),
        quantile_ms(answered_us, 0.99),
        quantile_ms(answered_us, 0.999),
    ));
    tally.notes.extend(received.anomalies());
    let mut latencies = std::mem::take(&mut *received.latencies_us.lock().unwrap());
    latencies.sort_unstable();
    Row {
        scenario: name,
        endpoints: 1,
        events: accepted,
        deliveries: got,
        per_sec: got as f64 / elapsed.as_secs_f64(),
        latencies_us: latencies,
        tally,
    }
}

fn empty_row(scenario: &'static str, endpoints: usize, tally: Findings) -> Row {
    Row {
        scenario,
        endpoints,
        events: 0,
        deliveries: 0,
        per_sec: 0.0,
        latencies_us: Vec::new(),
        tally,
    }
}

fn main() {
    let deliveries = env_parse("HERALD_BENCH_EVENTS", 20_000u64);
    let secs = env_parse("HERALD_BENCH_SECS", 10u64);
    let threads = env_parse("HERALD_BENCH_THREADS", 2usize);
    let selected = Selection::from_env();
    let wanted = |name: &str| selected.wants(name);
    selected.require_any(SCENARIOS);
    let runtime = load::runtime(threads);

    println!(
        "`cargo bench --bench webhooks`: HERALD_BENCH_EVENTS={deliveries} HERALD_BENCH_SECS={secs} \
         HERALD_BENCH_THREADS={threads} HERALD_BENCH_SCENARIOS={}\n\
         a fresh `herald serve` per scenario, receiver in this process, loopback, \
         max_in_flight_per_endpoint = 64\n\n\
         | scenario | endpoints | events | deliveries | deliveries/s | p50 ms | p99 ms | p99.9 ms | failures |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|",
        selected.describe(),
    );
    // Rows print as scenarios finish; notes wait until after the table so
    // they do not break it.
    let mut notes = Vec::new();
    for &name in SCENARIOS.iter().filter(|s| wanted(s)) {
        let row = match name {
            "throughput-1-endpoint" => run_throughput(&runtime, name, 1, deliveries),
            "throughput-10-endpoints" => run_throughput(&runtime, name, 10, deliveries),
            _ => run_latency(&runtime, secs),
        };
        let q = |p: f64| quantile_ms(&row.latencies_us, p);
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            row.scenario,
            row.endpoints,
            row.events,
            row.deliveries,
            row.per_sec,
            q(0.50),
            q(0.99),
            q(0.999),
            row.tally.failures,
        );
        notes.extend(
            row.tally
                .notes
                .into_iter()
                .map(|n| format!("- {}: {n}", row.scenario)),
        );
    }
    if !notes.is_empty() {
        println!("\n{}", notes.join("\n"));
    }
}
