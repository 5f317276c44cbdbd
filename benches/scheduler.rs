//! Scheduler benchmark: a backlog of deliveries for a dead endpoint, what
//! the daemon's memory does while it holds them, and how soon it answers
//! after a restart with them on disk.
//!
//! `cargo bench --bench scheduler` starts the release binary with one
//! endpoint on a loopback port nothing listens on, subscribed to every
//! event, and posts `HERALD_BENCH_BACKLOG` events through
//! `/v1/events/batch`, 1,000 a request over 4 connections; each fans out to
//! one delivery. Then it
//! - stops the daemon with SIGTERM, as systemd does, waits for it to exit,
//!   and starts a new process on the same data directory, timing from the
//!   spawn the `listening` log line and the first 200 of `GET /readyz` and
//!   of `GET /v1/endpoints`, each polled every 10 ms;
//! - samples the daemon's resident memory (VmRSS) every second for
//!   `HERALD_BENCH_SECS` while it holds the backlog: every attempt is
//!   refused, the circuit breaker opens after 10 failures and probes every
//!   30 s;
//! - checks through `GET /v1/deliveries?endpoint=…&status=pending&limit=1`
//!   that deliveries are still pending.
//!
//! The aim it measures: with 1,000,000 deliveries pending, resident memory
//! under 200 MB and `/readyz` answering within 2 s of the start, since the
//! scheduler keeps only a window of the due index in memory. The bench
//! reports the figures and judges none of them; it exits non-zero only when
//! something broke: a request failed, the daemon died or did not exit
//! cleanly on SIGTERM, or no delivery is pending.
//!
//! Environment:
//! - `HERALD_BENCH_BACKLOG`: events, so deliveries, to pile up (default
//!   1,000,000; 100,000 makes a quick run).
//! - `HERALD_BENCH_SECS`: seconds of memory samples after the restart
//!   (default 30, enough for one breaker probe).
//! - `HERALD_BENCH_THREADS`: threads of the bench's client runtime
//!   (default 2).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::dead_endpoint;
use common::http::{self, connect, exchange_within, get_json};
use common::knobs::env_parse;
use common::load::{self, Load};
use common::report::{cpu_note, cpu_sample, quantile_ms, resident_mib};

/// Events per request: the daemon's `max_batch_events`.
const BATCH: u64 = 1000;
/// Enough connections that several requests share each group commit.
const FILL_CONNECTIONS: usize = 4;
/// A cap on one API request, so a wedged daemon ends the run with a
/// failure instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Far finer than the 2 s the start-up is held to.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// A restarted daemon that has not answered by then is broken, not slow.
const START_DEADLINE: Duration = Duration::from_secs(120);
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The bench's table, its notes, and whether something broke.
#[derive(Default)]
struct Report {
    rows: Vec<(String, String)>,
    notes: Vec<String>,
    broken: Vec<String>,
}

impl Report {
    fn row(&mut self, scenario: impl Into<String>, figure: impl Into<String>) {
        self.rows.push((scenario.into(), figure.into()));
    }
}

fn main() {
    let backlog = env_parse("HERALD_BENCH_BACKLOG", 1_000_000u64);
    let secs = env_parse("HERALD_BENCH_SECS", 30u64);
    let threads = env_parse("HERALD_BENCH_THREADS", 2usize);
    if backlog == 0 {
        eprintln!("HERALD_BENCH_BACKLOG must be positive");
        std::process::exit(2);
    }
    let runtime = load::runtime(threads);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let dead = match dead_endpoint::closed_port() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("finding a closed loopback port: {e}");
            std::process::exit(1);
        }
    };

    let mut daemon = Daemon::start(dead_endpoint::CONFIG);
    let mut report = Report::default();
    run(&runtime, &mut daemon, dead, backlog, secs, &mut report);
    daemon.stop();

    println!(
        "command: `HERALD_BENCH_BACKLOG={backlog} HERALD_BENCH_SECS={secs} \
         HERALD_BENCH_THREADS={threads} cargo bench --bench scheduler`\n\
         one `herald serve` holding deliveries for a dead endpoint (http://{dead}/hook, \
         connections refused), restarted once on the same data; {cores} cores shared by the \
         daemon and this client ({threads} runtime threads); memory in MiB as /proc reports it\n\n\
         | scenario | figure |\n\
         |---|---:|"
    );
    for (scenario, figure) in &report.rows {
        println!("| {scenario} | {figure} |");
    }
    if !report.notes.is_empty() {
        println!("\n{}", report.notes.join("\n"));
    }
    if !report.broken.is_empty() {
        println!(
            "\nBROKEN, so the figures above do not stand for a held backlog:\n- {}",
            report.broken.join("\n- ")
        );
        std::process::exit(1);
    }
}

/// A loopback port that refuses connections: bound by the kernel's choice,
/// then released. Nothing else on this machine is expected to take it
/// within the run.
fn run(
    runtime: &tokio::runtime::Runtime,
    daemon: &mut Daemon,
    dead: SocketAddr,
    backlog: u64,
    secs: u64,
    report: &mut Report,
) {
    let endpoint = match runtime.block_on(dead_endpoint::create(daemon.addr, dead, REQUEST_TIMEOUT))
    {
        Ok(id) => id,
        Err(e) => {
            report.broken.push(format!("creating the endpoint: {e}"));
            return;
        }
    };

    report.row(
        "daemon RSS idle, before the fill",
        mib(resident_mib(daemon.pid()).map(|(_, now)| now)),
    );
    let pid = Some(daemon.pid());
    let cpu_before = cpu_sample(pid);
    let load = Load {
        connections: FILL_CONNECTIONS,
        warmup: Duration::ZERO,
        limit: None,
        request_timeout: REQUEST_TIMEOUT,
    };
    let fillers = load::event_batches(daemon.addr, backlog, BATCH, |i| {
        format!(r#"{{"type":"bench.backlog","data":{{"n":{i}}}}}"#)
    });
    let fill = runtime.block_on(load::run(daemon.addr, &load, fillers));
    let filled: u64 = fill.conversations.iter().map(|f| f.posted).sum();
    let took = fill.elapsed.as_secs_f64();
    report.row(
        format!("fill: {backlog} events, {BATCH} a request over {FILL_CONNECTIONS} connections"),
        format!("{:.0} events/s ({took:.1} s)", filled as f64 / took),
    );
    let after_fill = resident_mib(daemon.pid());
    report.row(
        "daemon RSS at its peak during the fill (under load)",
        mib(after_fill.map(|(peak, _)| peak)),
    );
    report.row(
        "daemon RSS at the end of the fill",
        mib(after_fill.map(|(_, now)| now)),
    );
    let latencies = &fill.tally.latencies_us;
    report.notes.push(format!(
        "- fill: {filled} of {backlog} events accepted; a request of {BATCH}: p50 {} ms, p99 {} ms",
        quantile_ms(latencies, 0.50),
        quantile_ms(latencies, 0.99),
    ));
    report.notes.extend(
        cpu_note(cpu_before, cpu_sample(pid), "this client", pid).map(|n| format!("- fill: {n}")),
    );
    if let Some(first) = &fill.tally.first_failure {
        report.broken.push(format!(
            "{} fill requests failed, the first: {first}",
            fill.tally.failures
        ));
    }

    let stopping = Instant::now();
    match daemon.terminate() {
        Ok(status) if status.success() => report.row(
            "stop: SIGTERM to exit with the backlog pending",
            format!("{:.0} ms", ms(stopping.elapsed())),
        ),
        Ok(status) => report
            .broken
            .push(format!("the daemon exited with {status} on SIGTERM")),
        Err(e) => report.broken.push(format!("waiting for the daemon: {e}")),
    }
    // The process has exited: this starts another on the same data.
    if let Err(e) = daemon.restart() {
        report.broken.push(format!("restarting: {e}"));
        return;
    }
    let spawned = daemon.spawned;
    report.row(
        "restart: spawn to `listening` logged",
        format!("{:.0} ms", ms(daemon.listening - spawned)),
    );
    let (ready, listed) = runtime.block_on(async {
        tokio::join!(
            first_ok(daemon.addr, "/readyz", spawned),
            first_ok(daemon.addr, "/v1/endpoints", spawned),
        )
    });
    for (path, answered) in [("/readyz", ready), ("/v1/endpoints", listed)] {
        match answered {
            Ok(after) => report.row(
                format!("restart: spawn to first `GET {path}` 200"),
                format!("{:.0} ms", ms(after)),
            ),
            Err(e) => report
                .broken
                .push(format!("GET {path} after the restart: {e}")),
        }
    }

    hold(daemon, secs, report);

    let pending = format!("/v1/deliveries?endpoint={endpoint}&status=pending&limit=1");
    match runtime.block_on(ask(daemon.addr, &pending)) {
        Ok((took, answer)) => match answer["deliveries"].get(0) {
            Some(delivery) => report.row(
                "a delivery still pending after the hold",
                format!(
                    "yes: {}, attempts so far {}, next at {} (asked in {:.0} ms)",
                    delivery["id"].as_str().unwrap_or("?"),
                    delivery["attempts"].as_array().map_or(0, Vec::len),
                    delivery["next_attempt_at"].as_str().unwrap_or("-"),
                    ms(took)
                ),
            ),
            None => report
                .broken
                .push(format!("no delivery pending for {endpoint}: {answer}")),
        },
        Err(e) => report.broken.push(format!("GET {pending}: {e}")),
    }
    // How hard the daemon tried the dead endpoint: the breaker should keep
    // this near its threshold plus a probe every 30 s, not the backlog.
    let stats = format!("/v1/endpoints/{endpoint}/stats");
    if let Ok((_, answer)) = runtime.block_on(ask(daemon.addr, &stats)) {
        let hour = &answer["last_hour"];
        report.notes.push(format!(
            "- attempts on the dead endpoint in the last hour, both processes: {} ({} network errors)",
            hour["attempts"], hour["network_errors"]
        ));
    }
}

/// Samples the daemon's RSS every `SAMPLE_EVERY` for `secs` while it holds
/// the backlog, and the peak the kernel saw in between.
fn hold(daemon: &mut Daemon, secs: u64, report: &mut Report) {
    let pid = Some(daemon.pid());
    let cpu_before = cpu_sample(pid);
    let started = Instant::now();
    let mut samples = Vec::new();
    for tick in 0..=secs {
        let due = started + SAMPLE_EVERY * u32::try_from(tick).unwrap_or(u32::MAX);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if let Some(status) = daemon.exited() {
            report.broken.push(format!(
                "the daemon exited with {status} while holding the backlog"
            ));
            return;
        }
        samples.extend(resident_mib(daemon.pid()).map(|(_, now)| now));
    }
    report.row(
        format!(
            "RSS holding the backlog, max of {} samples over {secs} s",
            samples.len()
        ),
        mib(samples.iter().copied().reduce(f64::max)),
    );
    report.row(
        "RSS holding the backlog, last sample",
        mib(samples.last().copied()),
    );
    report.row(
        "RSS peak since the restart (VmHWM)",
        mib(resident_mib(daemon.pid()).map(|(peak, _)| peak)),
    );
    report.notes.extend(
        cpu_note(cpu_before, cpu_sample(pid), "this client", None).map(|n| format!("- hold: {n}")),
    );
}

/// How long after `spawned` a GET of `path` first answered 2xx, asked every
/// `POLL_EVERY` on a fresh connection after each failure.
async fn first_ok(addr: SocketAddr, path: &str, spawned: Instant) -> Result<Duration, String> {
    let request = http::get(addr, path);
    let mut last_error = String::new();
    let mut conn = None;
    while spawned.elapsed() < START_DEADLINE {
        if conn.is_none() {
            match connect(addr).await {
                Ok(c) => conn = Some(c),
                Err(e) => last_error = format!("connect: {e}"),
            }
        }
        if let Some(stream) = conn.as_mut() {
            match exchange_within(stream, &request, REQUEST_TIMEOUT).await {
                Ok(_) => return Ok(spawned.elapsed()),
                Err(e) => {
                    last_error = e;
                    conn = None;
                }
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    Err(format!(
        "no 2xx within {START_DEADLINE:?}; the last answer: {last_error}"
    ))
}

/// One GET on a connection of its own: how long it took and its answer.
async fn ask(addr: SocketAddr, path: &str) -> Result<(Duration, serde_json::Value), String> {
    let mut conn = connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let started = Instant::now();
    let answer = get_json(&mut conn, addr, path, REQUEST_TIMEOUT).await?;
    Ok((started.elapsed(), answer))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.0} MiB"))
}
