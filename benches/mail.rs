//! Transactional mail benchmark: a real `herald serve` relaying through an
//! SMTP sink in this process, over loopback.
//!
//! `cargo bench --bench mail` runs, each against a fresh daemon, database
//! and sink, so one scenario's backlog or pooled connections cannot flatter
//! or slow the next:
//! - `throughput`: `HERALD_BENCH_MESSAGES` messages posted to
//!   `/v1/emails` 50 recipients a request, over a few keep-alive
//!   connections, as fast as the API takes them; messages/s from the first
//!   POST until the sink answered 250 to the last of them. Once per entry
//!   of `HERALD_BENCH_WORKERS` (`[mail] workers`).
//! - `latency`: one recipient a request at a steady rate (open loop) for a
//!   few seconds; queue-to-250 latency is the sink's arrival time minus the
//!   moment this client received the 202 naming that message, matched by
//!   the `X-Herald-Id` header. It starts when the message is durably
//!   queued, so the API's own commit is reported apart.
//!
//! Every scenario ends by checking that each accepted message id reached the
//! sink exactly once; the bench exits non-zero when one did not, since its
//! figures would then count work that was not done. API requests, SMTP reads
//! and the waits for deliveries all have deadlines: a wedged daemon ends a
//! scenario with a report of what arrived, not a hang.
//!
//! Environment:
//! - `HERALD_BENCH_MESSAGES`: messages per throughput run (default 20,000).
//! - `HERALD_BENCH_WORKERS`: comma-separated `[mail] workers` values, one
//!   throughput run each (default `4,8`); the latency scenario uses the
//!   first.
//! - `HERALD_BENCH_RATE`: messages per second in the latency scenario
//!   (default 200).
//! - `HERALD_BENCH_SECS`: length of the latency scenario (default 10).
//! - `HERALD_BENCH_SCENARIOS`: `throughput`, `latency` or both.
//! - `HERALD_BENCH_THREADS`: threads of the bench's client runtime (default
//!   2); the sink adds a thread per SMTP connection.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::daemon::Daemon;
use common::http::{self, connect, exchange_within, Connection};
use common::knobs::{env_parse, Selection};
use common::load::{self, Conversation, Load, Scheduled, Shares};
use common::report::{cpu_note, cpu_sample, micros, quantile_ms, Findings};
use common::smtp_sink::{Arrival, Sink, SinkShared};

const SCENARIOS: &[&str] = &["throughput", "latency"];
/// Recipients per request in the throughput scenario: the API's maximum.
const RECIPIENTS_PER_REQUEST: usize = 50;
/// Connections posting at once in the throughput scenario, as a busy app
/// would.
const POSTERS: usize = 4;
/// Keep-alive connections the open-loop poster spreads its requests over;
/// enough that a slow commit rarely leaves a tick without a free one.
const LATENCY_CONNECTIONS: usize = 8;
/// A cap on one API request, so a wedged daemon ends a scenario with a
/// failure instead of hanging the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The wait for deliveries gives up when the sink saw nothing new for this
/// long: the daemon's SMTP timeout, after which a stuck attempt would be
/// deferred by a minute or more anyway.
const STALL: Duration = Duration::from_secs(30);
/// A backstop for a daemon that trickles rather than stalls: the wait for
/// deliveries ends after this long per accepted message (20/s), plus a
/// minute.
const PER_MESSAGE_BUDGET: Duration = Duration::from_millis(50);
/// Missing messages whose status the report looks up through the API.
const DESCRIBE_MISSING: usize = 5;

const FROM: &str = "Acme <no-reply@acme.com>";
const SUBJECT: &str = "Your receipt for order 4200";
/// A receipt-sized text part, so the relay moves a realistic message.
const TEXT: &str = "Hello,\n\nThanks for your order. We charged 42.00 EUR to the card \
ending in 4242.\n\nOrder: ord_1NzQ8x2eZvKYlo2C\nPlan: Pro, monthly\nNext invoice: 22 December\n\n\
Questions? Reply to this message and a person will answer.\n\n-- Acme billing\n";

fn email_request(addr: SocketAddr, to: Value) -> Vec<u8> {
    http::post(addr, "/v1/emails", "", &email_body(to))
}

fn email_body(to: Value) -> String {
    json!({"stream": "transactional", "from": FROM, "to": to, "subject": SUBJECT, "text": TEXT})
        .to_string()
}

/// The message ids of a 202, which must name every recipient.
fn message_ids(body: &[u8], recipients: usize) -> Result<Vec<String>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("202 body: {e}"))?;
    let ids: Vec<String> = v["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if ids.len() == recipients {
        Ok(ids)
    } else {
        Err(format!(
            "202 named {} messages for {recipients} recipients: {}",
            ids.len(),
            String::from_utf8_lossy(body)
        ))
    }
}

/// The message's status and last attempt, as `GET /v1/emails/{id}` tells.
async fn describe(conn: &mut Connection, addr: SocketAddr, id: &str) -> String {
    let request = http::get(addr, &format!("/v1/emails/{id}"));
    let answer = exchange_within(conn, &request, REQUEST_TIMEOUT).await;
    let body = match answer {
        Ok(body) => body,
        Err(e) => return format!("GET failed: {e}"),
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return format!("GET answered {}", String::from_utf8_lossy(&body));
    };
    let last = v["attempts"]
        .as_array()
        .and_then(|a| a.last())
        .map(|a| format!(", last attempt {} {}", a["code"], a["text"]))
        .unwrap_or_default();
    format!(
        "status {}, {} attempts{last}, next {}",
        v["status"], v["attempt_count"], v["next_attempt_at"]
    )
}

fn wait_budget(messages: u64) -> Duration {
    Duration::from_secs(60) + PER_MESSAGE_BUDGET * u32::try_from(messages).unwrap_or(u32::MAX)
}

/// Waits until the sink holds `expected` distinct ids, the deadline passes,
/// or the sink saw nothing new for `STALL`.
async fn wait_for_sink(sink: &SinkShared, expected: usize, deadline: Instant) {
    let mut seen = sink.messages.load(Ordering::Relaxed);
    let mut progress_at = Instant::now();
    while sink.distinct() < expected {
        let now = Instant::now();
        if now >= deadline || now.duration_since(progress_at) >= STALL {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        let count = sink.messages.load(Ordering::Relaxed);
        if count != seen {
            seen = count;
            progress_at = Instant::now();
        }
    }
}

/// How the sink's arrivals compare with the accepted ids.
struct Verdict {
    /// First arrival per accepted id.
    first: HashMap<String, Instant>,
    missing: Vec<String>,
    /// Accepted ids that arrived more than once, and the extra copies.
    duplicated: usize,
    extra_copies: usize,
    /// Arrivals with an id no 202 named, or with no id at all.
    unknown: usize,
    unlabelled: usize,
}

impl Verdict {
    fn new(answered: &HashMap<String, Instant>, arrivals: &[Arrival]) -> Verdict {
        let mut first = HashMap::with_capacity(answered.len());
        let mut copies: HashMap<&str, usize> = HashMap::new();
        let (mut unknown, mut unlabelled) = (0, 0);
        for arrival in arrivals {
            match &arrival.id {
                None => unlabelled += 1,
                Some(id) if !answered.contains_key(id) => unknown += 1,
                Some(id) => {
                    *copies.entry(id).or_default() += 1;
                    let at = first.entry(id.clone()).or_insert(arrival.at);
                    *at = (*at).min(arrival.at);
                }
            }
        }
        let mut missing: Vec<String> = answered
            .keys()
            .filter(|id| !first.contains_key(*id))
            .cloned()
            .collect();
        missing.sort_unstable();
        Verdict {
            first,
            missing,
            duplicated: copies.values().filter(|&&n| n > 1).count(),
            extra_copies: copies.values().map(|&n| n.saturating_sub(1)).sum(),
            unknown,
            unlabelled,
        }
    }

    fn exactly_once(&self) -> bool {
        self.missing.is_empty() && self.duplicated == 0 && self.unknown == 0 && self.unlabelled == 0
    }

    fn last_arrival(&self) -> Option<Instant> {
        self.first.values().max().copied()
    }
}

struct Row {
    scenario: &'static str,
    workers: usize,
    requested: u64,
    accepted: u64,
    delivered: u64,
    accepted_per_sec: f64,
    delivered_per_sec: f64,
    /// Queue-to-250, latency scenario only.
    latencies_us: Vec<u32>,
    tally: Findings,
    exactly_once: bool,
}

fn daemon_config(workers: usize, relay: SocketAddr) -> String {
    format!(
        "[mail]\nworkers = {workers}\n[mail.streams.transactional]\nrelay = \"smtp://{relay}\"\n"
    )
}

/// Starts the sink and a daemon relaying to it, runs `scenario`, then
/// checks every accepted id against the sink and stops both.
fn run<F, Fut>(
    runtime: &tokio::runtime::Runtime,
    name: &'static str,
    workers: usize,
    requested: u64,
    scenario: F,
) -> Row
where
    F: FnOnce(SocketAddr, Arc<SinkShared>) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let mut row = Row {
        scenario: name,
        workers,
        requested,
        accepted: 0,
        delivered: 0,
        accepted_per_sec: 0.0,
        delivered_per_sec: 0.0,
        latencies_us: Vec::new(),
        tally: Findings::default(),
        exactly_once: false,
    };
    let mut sink = match Sink::start() {
        Ok(sink) => sink,
        Err(e) => {
            row.tally.fail(format!("starting the SMTP sink: {e}"));
            return row;
        }
    };
    let mut daemon = Daemon::start(&daemon_config(workers, sink.addr));
    let cpu_before = cpu_sample(Some(daemon.pid()));
    let outcome = runtime.block_on(scenario(daemon.addr, sink.shared.clone()));
    let cpu_after = cpu_sample(Some(daemon.pid()));

    let (arrivals, mut data_us) = {
        let mut log = sink.shared.log.lock().unwrap();
        (
            std::mem::take(&mut log.arrivals),
            std::mem::take(&mut log.data_us),
        )
    };
    let verdict = Verdict::new(&outcome.answered, &arrivals);
    let mut tally = outcome.tally;
    if !verdict.missing.is_empty() {
        let described = runtime.block_on(async {
            let mut lines = Vec::new();
            let mut conn = match connect(daemon.addr).await {
                Ok(c) => c,
                Err(e) => return vec![format!("connecting to ask about them: {e}")],
            };
            for id in verdict.missing.iter().take(DESCRIBE_MISSING) {
                lines.push(format!(
                    "{id}: {}",
                    describe(&mut conn, daemon.addr, id).await
                ));
            }
            lines
        });
        tally.notes.push(format!(
            "{} accepted messages never reached the sink; the first by id:",
            verdict.missing.len()
        ));
        tally
            .notes
            .extend(described.into_iter().map(|d| format!("  {d}")));
    }
    let shared = &sink.shared;
    tally.notes.push(format!(
        "sink: {} messages from {} SMTP connections, {} commands ({} NOOP)",
        arrivals.len(),
        shared.connections.load(Ordering::Relaxed),
        shared.commands.load(Ordering::Relaxed),
        shared.noops.load(Ordering::Relaxed),
    ));
    data_us.sort_unstable();
    tally.notes.push(format!(
        "sink: 354 sent to the message's final `.` read: p50 {} ms, p99 {} ms",
        quantile_ms(&data_us, 0.50),
        quantile_ms(&data_us, 0.99),
    ));
    let errors = shared.errors.load(Ordering::Relaxed);
    if errors > 0 {
        tally.notes.push(format!(
            "sink: {errors} protocol errors, the first: {}",
            shared
                .first_error
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_default()
        ));
    }
    daemon.stop();
    sink.stop();

    let accepted = outcome.answered.len();
    let delivered = verdict.first.len();
    tally.notes.push(format!(
        "exactly once: {accepted} accepted, {delivered} arrived, {} missing, {} arrived more \
         than once ({} extra copies), {} with an id no 202 named, {} without X-Herald-Id",
        verdict.missing.len(),
        verdict.duplicated,
        verdict.extra_copies,
        verdict.unknown,
        verdict.unlabelled,
    ));
    if let (Some(started), Some(last)) = (outcome.first_post, verdict.last_arrival()) {
        let elapsed = last.saturating_duration_since(started);
        row.delivered_per_sec = delivered as f64 / elapsed.as_secs_f64();
        tally.notes.push(format!(
            "first POST to last 250: {:.2} s; first POST to last 202: {:.2} s",
            elapsed.as_secs_f64(),
            outcome.posted_in.as_secs_f64(),
        ));
    }
    if let Some(note) = cpu_note(
        cpu_before,
        cpu_after,
        "this process (client and sink)",
        None,
    ) {
        tally.notes.push(note);
    }
    if outcome.posted_in > Duration::ZERO {
        row.accepted_per_sec = accepted as f64 / outcome.posted_in.as_secs_f64();
    }
    if outcome.measure_latency {
        let mut early = 0usize;
        for (id, answered) in &outcome.answered {
            if let Some(arrived) = verdict.first.get(id) {
                if arrived < answered {
                    early += 1;
                }
                row.latencies_us
                    .push(micros(arrived.saturating_duration_since(*answered)));
            }
        }
        row.latencies_us.sort_unstable();
        if early > 0 {
            tally.notes.push(format!(
                "{early} messages reached the sink before this client had read their 202; \
                 counted as 0 ms"
            ));
        }
        // Relaying slower than the posting rate grows a backlog for the
        // whole run, and the percentiles then mostly measure its length.
        if verdict.missing.is_empty() && row.delivered_per_sec < row.accepted_per_sec * 0.95 {
            tally.notes.push(format!(
                "the daemon relayed {:.0}/s against {:.0}/s accepted: a backlog grew, so the \
                 latency percentiles are mostly time spent waiting in the queue",
                row.delivered_per_sec, row.accepted_per_sec
            ));
        }
    }
    row.accepted = accepted as u64;
    row.delivered = delivered as u64;
    row.exactly_once = accepted > 0 && verdict.exactly_once();
    row.tally = tally;
    row
}

/// What a scenario's client part brings back to `run`.
#[derive(Default)]
struct Outcome {
    answered: HashMap<String, Instant>,
    first_post: Option<Instant>,
    /// First POST to the last 202 (or the last attempt to post).
    posted_in: Duration,
    measure_latency: bool,
    tally: Findings,
}

/// A connection of the throughput scenario: requests of
/// `RECIPIENTS_PER_REQUEST` recipients, taken in turn with the others.
struct Poster {
    addr: SocketAddr,
    messages: u64,
    requests: Shares,
    /// Recipients of the request in flight, which its 202 must name.
    recipients: usize,
    /// Each accepted message id and when its 202 arrived.
    answered: Vec<(String, Instant)>,
}

impl Conversation for Poster {
    async fn next_request(&mut self) -> Option<Vec<u8>> {
        let first = self.requests.take()? * RECIPIENTS_PER_REQUEST as u64;
        let to: Vec<String> = (first..self.messages.min(first + RECIPIENTS_PER_REQUEST as u64))
            .map(|i| format!("user{i}@example.net"))
            .collect();
        self.recipients = to.len();
        Some(email_request(self.addr, json!(to)))
    }

    fn answered(&mut self, body: &[u8]) -> Result<(), String> {
        let ids = message_ids(body, self.recipients)?;
        let at = Instant::now();
        self.answered.extend(ids.into_iter().map(|id| (id, at)));
        Ok(())
    }

    fn failed(&mut self, error: String) -> (String, Duration) {
        (
            format!("{} recipients: {error}", self.recipients),
            Duration::ZERO,
        )
    }
}

async fn throughput(addr: SocketAddr, sink: Arc<SinkShared>, messages: u64) -> Outcome {
    let mut outcome = Outcome::default();
    let budget = wait_budget(messages);
    let requests = Shares::new(messages.div_ceil(RECIPIENTS_PER_REQUEST as u64));
    let load = Load {
        connections: POSTERS,
        warmup: Duration::ZERO,
        limit: Some(budget),
        request_timeout: REQUEST_TIMEOUT,
    };
    let posted = load::run(addr, &load, |_| Poster {
        addr,
        messages,
        requests: requests.clone(),
        recipients: 0,
        answered: Vec::new(),
    })
    .await;
    let started = posted.started;
    outcome.first_post = Some(started);
    outcome.tally.count(&posted.tally);
    for poster in posted.conversations {
        outcome.answered.extend(poster.answered);
    }
    outcome.posted_in = outcome
        .answered
        .values()
        .max()
        .map_or(posted.elapsed, |last| *last - started);
    let api_us = &posted.tally.latencies_us;
    outcome.tally.notes.push(format!(
        "POST of {RECIPIENTS_PER_REQUEST} recipients, {POSTERS} connections: p50 {} ms, \
         p99 {} ms",
        quantile_ms(api_us, 0.50),
        quantile_ms(api_us, 0.99),
    ));
    wait_for_sink(&sink, outcome.answered.len(), started + budget).await;
    outcome
}

/// A connection of the latency scenario: one recipient a request.
struct Paced {
    addr: SocketAddr,
    answered: Vec<(String, Instant)>,
}

impl Scheduled for Paced {
    fn request(&mut self, index: u64, _due: Instant) -> Vec<u8> {
        email_request(self.addr, json!(format!("user{index}@example.net")))
    }

    fn answered(&mut self, body: &[u8]) -> Result<(), String> {
        let ids = message_ids(body, 1)?;
        let at = Instant::now();
        self.answered.extend(ids.into_iter().map(|id| (id, at)));
        Ok(())
    }
}

async fn latency(addr: SocketAddr, sink: Arc<SinkShared>, rate: u64, secs: u64) -> Outcome {
    let mut outcome = Outcome {
        measure_latency: true,
        ..Outcome::default()
    };
    let total = rate * secs;
    let posted = load::open_loop(
        addr,
        LATENCY_CONNECTIONS,
        rate,
        total,
        REQUEST_TIMEOUT,
        || Paced {
            addr,
            answered: Vec::new(),
        },
    )
    .await;
    outcome.first_post = Some(posted.started);
    outcome.posted_in = posted.elapsed;
    outcome.tally.count(&posted.tally);
    for paced in posted.conversations {
        outcome.answered.extend(paced.answered);
    }
    let api_us = &posted.tally.latencies_us;
    outcome.tally.notes.push(format!(
        "{} of {total} messages accepted at {rate}/s scheduled; API (schedule to 202) \
         p50 {} ms, p99 {} ms, p99.9 {} ms",
        outcome.answered.len(),
        quantile_ms(api_us, 0.50),
        quantile_ms(api_us, 0.99),
        quantile_ms(api_us, 0.999),
    ));
    let accepted = outcome.answered.len();
    wait_for_sink(
        &sink,
        accepted,
        Instant::now() + wait_budget(accepted as u64),
    )
    .await;
    outcome
}

fn main() {
    let messages = env_parse("HERALD_BENCH_MESSAGES", 20_000u64);
    let rate = env_parse("HERALD_BENCH_RATE", 200u64);
    let secs = env_parse("HERALD_BENCH_SECS", 10u64);
    let threads = env_parse("HERALD_BENCH_THREADS", 2usize);
    let workers_text = std::env::var("HERALD_BENCH_WORKERS").unwrap_or_else(|_| "4,8".to_owned());
    let workers: Vec<usize> = workers_text
        .split(',')
        .map(|w| {
            w.trim().parse().unwrap_or_else(|_| {
                panic!("HERALD_BENCH_WORKERS={workers_text:?}: `{w}` is not a number")
            })
        })
        .collect();
    let selected = Selection::from_env();
    let wanted = |name: &str| selected.wants(name);
    selected.require_any(SCENARIOS);
    if rate == 0 || secs == 0 || messages == 0 {
        eprintln!(
            "HERALD_BENCH_MESSAGES, HERALD_BENCH_RATE and HERALD_BENCH_SECS must be positive"
        );
        std::process::exit(2);
    }
    let runtime = load::runtime(threads);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    println!(
        "`cargo bench --bench mail`: HERALD_BENCH_MESSAGES={messages} HERALD_BENCH_WORKERS={workers_text} \
         HERALD_BENCH_RATE={rate} HERALD_BENCH_SECS={secs} HERALD_BENCH_THREADS={threads} \
         HERALD_BENCH_SCENARIOS={}\n\
         a fresh `herald serve` and SMTP sink per scenario, plaintext SMTP over loopback, no DKIM; \
         {cores} cores shared by the daemon, the sink (a thread per SMTP connection) and the \
         client ({threads} runtime threads)\n\n\
         | scenario | workers | messages | accepted | delivered | accepted/s | delivered/s | p50 ms | p99 ms | p99.9 ms | max ms | failures |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        selected.describe(),
    );
    let mut rows = Vec::new();
    if wanted("throughput") {
        for &w in &workers {
            rows.push(run(&runtime, "throughput", w, messages, |addr, sink| {
                throughput(addr, sink, messages)
            }));
            print_row(rows.last().unwrap());
        }
    }
    if wanted("latency") {
        let w = workers.first().copied().unwrap_or(4);
        rows.push(run(&runtime, "latency", w, rate * secs, |addr, sink| {
            latency(addr, sink, rate, secs)
        }));
        print_row(rows.last().unwrap());
    }
    // Notes wait until after the table so they do not break it.
    println!(
        "\n- throughput: {RECIPIENTS_PER_REQUEST} recipients per POST over {POSTERS} connections; \
         accepted/s from the first POST to the last 202, delivered/s from the first POST to the \
         last 250 at the sink\n\
         - latency: one recipient per POST at {rate}/s over {LATENCY_CONNECTIONS} connections; \
         percentiles are queue-to-250 (202 read by the client to 250 sent by the sink)"
    );
    for row in &rows {
        for note in &row.tally.notes {
            println!("- {} (workers {}): {note}", row.scenario, row.workers);
        }
    }
    let broken: Vec<String> = rows
        .iter()
        .filter(|r| !r.exactly_once)
        .map(|r| format!("{} (workers {})", r.scenario, r.workers))
        .collect();
    if !broken.is_empty() {
        println!(
            "\nNOT every accepted message arrived exactly once in: {}; their figures do not \
             stand for delivered mail",
            broken.join(", ")
        );
        std::process::exit(1);
    }
}

fn print_row(row: &Row) {
    let q = |p: f64| quantile_ms(&row.latencies_us, p);
    let max = row.latencies_us.last().map_or("-".to_owned(), |&us| {
        format!("{:.2}", f64::from(us) / 1000.0)
    });
    println!(
        "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {max} | {} |",
        row.scenario,
        row.workers,
        row.requested,
        row.accepted,
        row.delivered,
        row.accepted_per_sec,
        row.delivered_per_sec,
        q(0.50),
        q(0.99),
        q(0.999),
        row.tally.failures,
    );
}
