//! Slow-client benchmark (slowloris): how long a new client waits for its
//! answer while thousands of connections from its own address never finish
//! their request heads.
//!
//! `cargo bench --bench slowloris` starts the release binary with its
//! private and a public listener, both with the default limits, and holds
//! `HERALD_BENCH_SLOW` connections open to each from 127.0.0.1 as an
//! attacker would: each sends the start of a request head, then one more
//! header line every `HERALD_BENCH_TRICKLE_MS`, and reconnects at once when
//! the daemon closes it. After `HERALD_BENCH_WARMUP_SECS`, a new client
//! connects to each listener `HERALD_BENCH_PROBES` times, one probe every
//! 100 ms, and sends `GET /healthz`; the figure is the time from the start
//! of its connect to the end of the answer's head.
//!
//! The aim it measures: a new client answered within 1 s on both listeners
//! with 2,000 slow connections held open. The bench reports the figures and
//! judges none of them; it exits non-zero only when something broke: a
//! probe got no answer, or the daemon died.
//!
//! Environment:
//! - `HERALD_BENCH_SLOW`: slow connections per listener (default 2,000).
//! - `HERALD_BENCH_TRICKLE_MS`: pause between the header lines each sends
//!   (default 1,000).
//! - `HERALD_BENCH_PROBES`: probes per listener (default 50).
//! - `HERALD_BENCH_WARMUP_SECS`: attack time before the first probe
//!   (default 5).
//! - `HERALD_BENCH_THREADS`: threads of the bench's client runtime
//!   (default 2).

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::daemon::Daemon;
use common::knobs::env_parse;
use common::load;
use common::report::{micros, quantile_ms};

/// A probe still unanswered after this is a failure, not a figure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// A started daemon not answering by then is broken.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// What the attackers did, counted across all of them.
#[derive(Default)]
struct Attack {
    /// Connections currently open and sending their head.
    open: AtomicU64,
    /// Connections made, reconnections included.
    connects: AtomicU64,
    /// Connections the daemon closed (or refused).
    closed_by_daemon: AtomicU64,
    /// Answers an attacker got: none is expected, since no head completes.
    answered: AtomicU64,
    stop: AtomicBool,
}

fn main() {
    let slow = env_parse("HERALD_BENCH_SLOW", 2_000usize);
    let trickle = Duration::from_millis(env_parse("HERALD_BENCH_TRICKLE_MS", 1_000u64));
    let probes = env_parse("HERALD_BENCH_PROBES", 50usize);
    let warmup = Duration::from_secs(env_parse("HERALD_BENCH_WARMUP_SECS", 5u64));
    let threads = env_parse("HERALD_BENCH_THREADS", 2usize);
    if probes == 0 {
        eprintln!("HERALD_BENCH_PROBES must be positive");
        std::process::exit(2);
    }
    let descriptors = raise_open_file_limit();
    let public = match free_port() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("finding a free loopback port: {e}");
            std::process::exit(1);
        }
    };
    let runtime = load::runtime(threads);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut daemon = Daemon::start(&format!("[public]\nlisten = \"{public}\"\n"));
    let private = daemon.addr;
    let mut broken = Vec::new();

    let rows = runtime.block_on(async {
        for addr in [private, public] {
            if !answers_within(addr, START_DEADLINE).await {
                broken.push(format!("{addr} never answered GET /healthz"));
                return Vec::new();
            }
        }
        let attack = Arc::new(Attack::default());
        let attackers: Vec<_> = [private, public]
            .into_iter()
            .flat_map(|addr| (0..slow).map(move |i| (addr, i)))
            .map(|(addr, i)| tokio::spawn(attacker(addr, i, trickle, attack.clone())))
            .collect();
        tokio::time::sleep(warmup).await;
        let started = Instant::now();
        let connects_before = attack.connects.load(Ordering::Relaxed);
        let mut rows = Vec::new();
        for (name, addr) in [("private", private), ("public", public)] {
            let mut samples = Vec::with_capacity(probes);
            let mut failures = 0usize;
            let mut first_failure = None;
            let mut open_seen = Vec::with_capacity(probes);
            for _ in 0..probes {
                open_seen.push(attack.open.load(Ordering::Relaxed));
                match probe(addr).await {
                    Ok(took) => samples.push(micros(took)),
                    Err(e) => {
                        failures += 1;
                        first_failure.get_or_insert(e);
                    }
                }
                tokio::time::sleep(PROBE_EVERY).await;
            }
            samples.sort_unstable();
            open_seen.sort_unstable();
            if let Some(e) = first_failure {
                broken.push(format!("{name}: {failures} probes unanswered, first: {e}"));
            }
            rows.push(format!(
                "| {name} | {} | {} | {} | {} | {} | {failures} |",
                samples.len(),
                quantile_ms(&samples, 0.5),
                quantile_ms(&samples, 0.99),
                quantile_ms(&samples, 1.0),
                open_seen[open_seen.len() / 2],
            ));
        }
        let elapsed = started.elapsed().as_secs_f64();
        let reconnects = attack.connects.load(Ordering::Relaxed) - connects_before;
        rows.push(format!(
            "\nduring the probes: {:.0} attacker connections a second ({reconnects} in {elapsed:.1} s), \
             {} closed or refused by the daemon in all, {} attacker connections answered",
            reconnects as f64 / elapsed,
            attack.closed_by_daemon.load(Ordering::Relaxed),
            attack.answered.load(Ordering::Relaxed),
        ));
        attack.stop.store(true, Ordering::Relaxed);
        for a in attackers {
            a.abort();
        }
        rows
    });
    if let Some(status) = daemon.exited() {
        broken.push(format!("the daemon exited during the run: {status}"));
    }
    daemon.stop();

    println!(
        "command: `HERALD_BENCH_SLOW={slow} HERALD_BENCH_TRICKLE_MS={} HERALD_BENCH_PROBES={probes} \
         HERALD_BENCH_WARMUP_SECS={} HERALD_BENCH_THREADS={threads} cargo bench --bench slowloris`\n\
         one `herald serve` with default limits, private listener {private} and public listener \
         {public}; {slow} slow connections to each from 127.0.0.1 (open-file limit of this \
         process {descriptors}); {cores} cores shared by the daemon and this client \
         ({threads} runtime threads); time from connect to the answer's head of GET /healthz \
         on a new connection, in ms\n\n\
         | listener | answered | p50 ms | p99 ms | max ms | attacker connections open (median) | unanswered |\n\
         |---|---:|---:|---:|---:|---:|---:|",
        trickle.as_millis(),
        warmup.as_secs(),
    );
    for row in &rows {
        println!("{row}");
    }
    if !broken.is_empty() {
        println!("\nBROKEN:\n- {}", broken.join("\n- "));
        std::process::exit(1);
    }
}

/// One slow client for the whole run: the start of a head, then a header
/// line every `trickle`, never the blank line that ends it; when the
/// daemon closes the connection, another at once.
async fn attacker(addr: SocketAddr, index: usize, trickle: Duration, attack: Arc<Attack>) {
    // Spread the trickles so they do not arrive in waves.
    let offset = trickle.mul_f64((index % 97) as f64 / 97.0);
    while !attack.stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            attack.closed_by_daemon.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        attack.connects.fetch_add(1, Ordering::Relaxed);
        attack.open.fetch_add(1, Ordering::Relaxed);
        let mut head_sent = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")
            .await
            .is_ok();
        let mut next = tokio::time::Instant::now() + offset;
        let mut buf = [0u8; 512];
        while head_sent {
            tokio::select! {
                read = stream.read(&mut buf) => {
                    match read {
                        Ok(n) if n > 0 => {
                            attack.answered.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                    break;
                }
                () = tokio::time::sleep_until(next) => {
                    head_sent = stream.write_all(b"X-Slow: a\r\n").await.is_ok();
                    next += trickle;
                }
            }
        }
        attack.open.fetch_sub(1, Ordering::Relaxed);
        attack.closed_by_daemon.fetch_add(1, Ordering::Relaxed);
    }
}

/// A new client's `GET /healthz`: the time from connect to the end of the
/// answer's head.
async fn probe(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .write_all(
                format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed without an answer".to_owned());
            }
            head.extend_from_slice(&buf[..n]);
        }
        if !head.starts_with(b"HTTP/1.1 200") {
            return Err(format!(
                "answered {:?}",
                String::from_utf8_lossy(&head[..head.len().min(40)])
            ));
        }
        Ok(started.elapsed())
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {PROBE_TIMEOUT:?}"))?
}

async fn answers_within(addr: SocketAddr, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if probe(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    false
}

/// A loopback port free a moment ago, for the public listener: the
/// daemon logs only its private address in the line the bench waits for.
fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The attackers' connections need descriptors beyond the usual 1,024.
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    limit.rlim_cur
}
