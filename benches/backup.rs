//! Backup benchmark: what `GET /v1/admin/backup` costs a daemon holding a
//! million events, in memory (the daemon's resident set before, at its
//! highest during, and after the backup) and in disk (the live file before,
//! at its largest during, and after; the copy's size).
//!
//! `cargo bench --bench backup` loads the events through the batch API,
//! then takes two backups: one with the daemon idle, one while clients keep
//! posting batches, since it is writes during the copy that can grow the
//! live file.
//!
//! Environment:
//! - `HERALD_BENCH_EVENTS`: events to load first (default 1,000,000).
//! - `HERALD_BENCH_CACHE_MB`: `storage.cache_mb` of the daemon (default 256).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::http;
use common::knobs::env_parse;
use common::load::{self, Conversation, Load};
use common::report::resident_mib;

const BATCH: u64 = 1000;
const FILL_CONNECTIONS: usize = 4;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// A backup of a large file on a slow disk still ends well inside this.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(600);

fn event_json(i: u64) -> String {
    format!(
        r#"{{"type":"bench.backup.{}","tenant":"t{}","idempotency_key":"k{i}","data":{{"n":{i},"note":"a line of text of about the size a real event carries"}}}}"#,
        i % 16,
        i % 8
    )
}

/// Clients that post batches of 100 until told to stop: the write load
/// during the second backup.
struct PostWhile {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    posted: Arc<AtomicU64>,
}

impl Conversation for PostWhile {
    async fn next_request(&mut self) -> Option<Vec<u8>> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let first = self.next.fetch_add(100, Ordering::Relaxed);
        let events: Vec<String> = (first..first + 100).map(event_json).collect();
        let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
        Some(http::post(self.addr, "/v1/events/batch", "", &body))
    }

    fn answered(&mut self, _body: &[u8]) -> Result<(), String> {
        self.posted.fetch_add(100, Ordering::Relaxed);
        Ok(())
    }
}

fn file_mib(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / (1 << 20) as f64)
}

fn rss_mib(pid: u32) -> f64 {
    resident_mib(pid).map_or(0.0, |(_, now)| now)
}

/// Downloads a backup, discarding it; its length in bytes.
fn download_backup(addr: SocketAddr) -> u64 {
    let mut stream = TcpStream::connect(addr).expect("connecting for the backup");
    stream.set_read_timeout(Some(BACKUP_TIMEOUT)).unwrap();
    write!(
        stream,
        "GET /v1/admin/backup HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream
            .read_exact(&mut byte)
            .expect("reading the answer's head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "backup refused: {head}");
    let mut total = 0u64;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        match stream.read(&mut chunk).expect("reading the backup") {
            0 => return total,
            n => total += n as u64,
        }
    }
}

struct Figures {
    rss_before: f64,
    rss_peak: f64,
    rss_after: f64,
    live_before: f64,
    live_peak: f64,
    live_after: f64,
    copy_mib: f64,
    took: Duration,
    posted_during: u64,
}

/// Takes one backup while sampling the daemon's memory and the live file.
fn measured_backup(daemon: &Daemon, live: &Path, writers: usize) -> Figures {
    let pid = daemon.pid();
    let addr = daemon.addr;
    let rss_before = rss_mib(pid);
    let live_before = file_mib(live);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, live) = (done.clone(), live.to_owned());
        std::thread::spawn(move || {
            let (mut rss, mut file) = (0f64, 0f64);
            while !done.load(Ordering::Relaxed) {
                rss = rss.max(rss_mib(pid));
                file = file.max(file_mib(&live));
                std::thread::sleep(Duration::from_millis(20));
            }
            (rss, file)
        })
    };
    let posted = Arc::new(AtomicU64::new(0));
    let load_thread = (writers > 0).then(|| {
        let (done, posted) = (done.clone(), posted.clone());
        std::thread::spawn(move || {
            let runtime = load::runtime(1);
            let next = Arc::new(AtomicU64::new(u64::MAX / 2));
            let load = Load {
                connections: writers,
                warmup: Duration::ZERO,
                limit: None,
                request_timeout: REQUEST_TIMEOUT,
            };
            let outcome = runtime.block_on(load::run(addr, &load, |_| PostWhile {
                addr,
                stop: done.clone(),
                next: next.clone(),
                posted: posted.clone(),
            }));
            if let Some(first) = outcome.tally.first_failure {
                eprintln!("write load during the backup: {first}");
            }
        })
    });
    // Let the writers reach their pace before the backup starts.
    if writers > 0 {
        std::thread::sleep(Duration::from_secs(1));
    }
    let posted_before = posted.load(Ordering::Relaxed);
    let started = Instant::now();
    let bytes = download_backup(addr);
    let took = started.elapsed();
    let posted_during = posted.load(Ordering::Relaxed) - posted_before;
    done.store(true, Ordering::Relaxed);
    if let Some(t) = load_thread {
        t.join().expect("write load thread");
    }
    let (rss_peak, live_peak) = sampler.join().expect("sampler thread");
    Figures {
        rss_before,
        rss_peak,
        rss_after: rss_mib(pid),
        live_before,
        live_peak: live_peak.max(file_mib(live)),
        live_after: file_mib(live),
        copy_mib: bytes as f64 / (1 << 20) as f64,
        took,
        posted_during,
    }
}

fn main() {
    let events: u64 = env_parse("HERALD_BENCH_EVENTS", 1_000_000);
    let cache_mb: u64 = env_parse("HERALD_BENCH_CACHE_MB", 256);
    let mut daemon = Daemon::start(&format!("[storage]\ncache_mb = {cache_mb}\n"));
    let live: PathBuf = daemon_data_file(&daemon);

    let runtime = load::runtime(2);
    let fill = Load {
        connections: FILL_CONNECTIONS,
        warmup: Duration::ZERO,
        limit: None,
        request_timeout: REQUEST_TIMEOUT,
    };
    let posters = load::event_batches(daemon.addr, events, BATCH, event_json);
    let filled = runtime.block_on(load::run(daemon.addr, &fill, posters));
    let loaded: u64 = filled.conversations.iter().map(|c| c.posted).sum();
    assert_eq!(
        loaded, events,
        "the load was refused: {:?}",
        filled.tally.first_failure
    );
    drop(runtime);
    println!(
        "loaded {events} events in {:.1} s; storage.cache_mb = {cache_mb}\n",
        filled.elapsed.as_secs_f64()
    );
    println!("| backup | took | daemon RSS before / peak / after (MiB) | live file before / peak / after (MiB) | copy (MiB) | events posted during |");
    println!("|---|---|---|---|---|---|");
    for (name, writers) in [("idle", 0), ("under write load", 2)] {
        let f = measured_backup(&daemon, &live, writers);
        println!(
            "| {name} | {:.1} s | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {:.0} | {} |",
            f.took.as_secs_f64(),
            f.rss_before,
            f.rss_peak,
            f.rss_after,
            f.live_before,
            f.live_peak,
            f.live_after,
            f.copy_mib,
            f.posted_during,
        );
    }
    daemon.stop();
}

fn daemon_data_file(daemon: &Daemon) -> PathBuf {
    daemon.data_dir().join("herald.redb")
}
