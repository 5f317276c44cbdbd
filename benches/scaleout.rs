//! Scale-out benchmark: the event log and webhook delivery on redb, on
//! PostgreSQL with one node, and on PostgreSQL with three nodes sharing one
//! database, driven by the same load in the same run.
//!
//! `cargo bench --bench scaleout` starts the release binary for each setup
//! (three processes for the three-node one, the load's connections spread
//! over them), each scenario on a fresh store, and prints two Markdown
//! tables and a summary. Every 2xx counted was committed: fsynced by redb,
//! or committed by PostgreSQL with `synchronous_commit` on.
//!
//! Scenarios:
//! - `single-c1`: one event a request, one request at a time, so its
//!   latency is the commit latency a lone client sees.
//! - `single-c64`: one event a request, 64 connections.
//! - `batch100-c8`: 100 events a request, 8 connections.
//! - `deliveries`: one webhook endpoint on a receiver in this process
//!   (answering 204 at once), events posted in batches of 100 over six
//!   connections spread over the nodes, timed from the first post until
//!   the receiver has seen the `webhook-id` of every event the API
//!   accepted. Deliveries/s counts those ids once each; redeliveries are
//!   reported apart, and on three nodes so is how the attempts spread over
//!   them (told apart by their connections' ports, from `/proc`). The
//!   in-flight cap is 64 per endpoint, which on PostgreSQL counts every
//!   node's attempts together.
//!
//! Environment:
//! - `HERALD_BENCH_SECS`: measured seconds per throughput scenario
//!   (default 8), after one unmeasured second of warm-up.
//! - `HERALD_BENCH_EVENTS`: events the deliveries scenario posts (default
//!   20,000).
//! - `HERALD_BENCH_SCENARIOS`: comma-separated subset of
//!   `single-c1,single-c64,batch100-c8,deliveries`.
//! - `HERALD_BENCH_POSTGRES_URL`: a PostgreSQL server to create the bench's
//!   databases on (a superuser's URL). Without it the bench starts a
//!   throwaway cluster with `tests/pg_cluster` and removes it at the end.
//! - `HERALD_BENCH_POOL_SIZE`: `store.pool_size` of the PostgreSQL nodes
//!   (default: the daemon's own default).
//! - `HERALD_BENCH_THREADS`: threads of the bench's own runtime (client and
//!   receiver, default 2).

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::http::{connect, post_json};
use common::knobs::{env_parse, Selection};
use common::load::{self, Conversation, Load, Shares, Throughput};
use common::poster::Poster;
use common::report::{quantile_ms, THROUGHPUT_HEADER};
use common::webhook_receiver::{self, unix_us, Received};

const SCENARIOS: &[Throughput] = &[
    Throughput::new("single-c1", 1, 1),
    Throughput::new("single-c64", 64, 1),
    Throughput::new("batch100-c8", 8, 100),
];
const DELIVERIES: &str = "deliveries";

/// Each setup's name and nodes; 0 is one redb daemon.
const SETUPS: [(&str, usize); 3] = [("redb", 0), ("postgres-1", 1), ("postgres-3", 3)];

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The deliveries scenario's `[webhooks]`: loopback must be allowed
/// explicitly and over plain HTTP; 64 in flight, as the webhooks bench, so
/// the endpoint uses the connection pool instead of measuring the default
/// cap of 8.
const WEBHOOKS: &str = r#"
[webhooks]
allow_networks = ["127.0.0.1/32"]
require_https = false
max_in_flight_per_endpoint = 64
"#;
const BATCH: u64 = 100;
/// Connections posting the deliveries scenario's batches: a multiple of
/// three, so each node of the three-node setup gets as many.
const POSTERS: usize = 6;
/// How long the deliveries scenario may take, posting included, before it
/// reports what arrived. Generous: PostgreSQL records one endpoint's
/// attempts a commit at a time (each waits for the endpoint's row lock),
/// so the default 20,000 take minutes there.
const DEADLINE: Duration = Duration::from_secs(300);
const HOOK_PATH: &str = "/hook";

/// A PostgreSQL server for the run: the caller's, or a throwaway cluster.
struct Server {
    url: String,
    /// The throwaway cluster's directory, stopped and removed on drop.
    cluster: Option<PathBuf>,
}

impl Server {
    fn get() -> Server {
        if let Ok(url) = std::env::var("HERALD_BENCH_POSTGRES_URL") {
            return Server { url, cluster: None };
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("bench-pg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the cluster's directory");
        let out = Command::new(script())
            .arg("start")
            .arg(&dir)
            .output()
            .expect("running tests/pg_cluster");
        assert!(
            out.status.success(),
            "tests/pg_cluster start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Server {
            url: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            cluster: Some(dir),
        }
    }

    /// A new empty database on the server, by URL.
    fn fresh_database(&self, name: &str) -> String {
        // Two -c: psql runs each in a transaction of its own, which
        // DROP DATABASE needs.
        let out = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &self.url, "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {name}"))
            .arg("-c")
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "creating {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (base, _) = self.url.rsplit_once('/').expect("a URL with a database");
        format!("{base}/{name}")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(dir) = &self.cluster {
            let _ = Command::new(script()).arg("stop").arg(dir).status();
        }
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pg_cluster")
}

/// The nodes of a setup on a fresh store, `extra_toml` in their config.
fn start_nodes(server: &Server, setup: &str, nodes: usize, extra_toml: &str) -> Vec<Daemon> {
    if nodes == 0 {
        return vec![Daemon::start(extra_toml)];
    }
    let url = server.fresh_database(&format!("herald_bench_{}", setup.replace('-', "_")));
    // Unset, the nodes run with the default pool.
    let pool = std::env::var("HERALD_BENCH_POOL_SIZE")
        .map(|n| format!("pool_size = {n}\n"))
        .unwrap_or_default();
    let toml =
        format!("[store]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\n{pool}{extra_toml}");
    (0..nodes).map(|_| Daemon::start(&toml)).collect()
}

/// What the summary shows of a setup, each figure once its scenario ran.
#[derive(Default)]
struct Summary {
    single_c1: Option<(String, String)>,
    single_c64: Option<f64>,
    batch: Option<f64>,
    deliveries: Option<f64>,
}

fn figure(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.0}"))
}

/// A connection of the deliveries scenario: batches taken in turn with the
/// other connections', posted to one node, and the ids of the events the
/// API created.
struct IdPoster {
    addr: SocketAddr,
    total: u64,
    batches: Shares,
    in_flight: u64,
    ids: Vec<String>,
}

impl Conversation for IdPoster {
    async fn next_request(&mut self) -> Option<Vec<u8>> {
        let first = self.batches.take()? * BATCH;
        let events: Vec<String> = (first..self.total.min(first + BATCH))
            .map(event_json)
            .collect();
        self.in_flight = events.len() as u64;
        let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
        Some(common::http::post(self.addr, "/v1/events/batch", "", &body))
    }

    fn answered(&mut self, body: &[u8]) -> Result<(), String> {
        let answer: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("batch answer: {e}"))?;
        let results = answer["results"]
            .as_array()
            .filter(|r| r.len() as u64 == self.in_flight)
            .ok_or_else(|| format!("batch answer without {} results", self.in_flight))?;
        for result in results {
            match (result["result"].as_str(), result["id"].as_str()) {
                (Some("created"), Some(id)) => self.ids.push(id.to_owned()),
                _ => return Err(format!("batch result {result}")),
            }
        }
        Ok(())
    }

    fn failed(&mut self, error: String) -> (String, Duration) {
        (
            format!("batch of {}: {error}", self.in_flight),
            Duration::ZERO,
        )
    }
}

fn event_json(i: u64) -> String {
    format!(
        r#"{{"type":"invoice.paid","tenant":"acme","data":{{"invoice":"in_{i}","amount":4200,"currency":"eur","sent_unix_us":{}}}}}"#,
        unix_us()
    )
}

struct Delivered {
    /// Events the API accepted.
    events: u64,
    /// Of those, how many the receiver saw (their ids, once each).
    delivered: u64,
    per_sec: f64,
    duplicates: u64,
    failures: u64,
    notes: Vec<String>,
}

/// Creates the endpoint on the first node, posts `events` over all of
/// them and waits for every accepted event's delivery.
async fn deliveries(nodes: &[(SocketAddr, u32)], events: u64) -> Delivered {
    let mut out = Delivered {
        events: 0,
        delivered: 0,
        per_sec: 0.0,
        duplicates: 0,
        failures: 0,
        notes: Vec::new(),
    };
    let received = Arc::new(Received::default());
    let (receiver, receiver_task) = match webhook_receiver::start(received.clone(), false).await {
        Ok(r) => r,
        Err(e) => {
            out.failures += 1;
            out.notes.push(format!("starting the receiver: {e}"));
            return out;
        }
    };
    let first = nodes[0].0;
    let created = match connect(first).await {
        Ok(mut conn) => {
            let body = format!(r#"{{"url":"http://{receiver}{HOOK_PATH}"}}"#);
            post_json(&mut conn, first, "/v1/endpoints", &body, REQUEST_TIMEOUT).await
        }
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = created {
        receiver_task.abort();
        out.failures += 1;
        out.notes.push(format!("creating the endpoint: {e}"));
        return out;
    }

    let addrs: Vec<SocketAddr> = nodes.iter().map(|(addr, _)| *addr).collect();
    let load = Load {
        connections: POSTERS,
        warmup: Duration::ZERO,
        limit: Some(DEADLINE),
        request_timeout: REQUEST_TIMEOUT,
    };
    let batches = Shares::new(events.div_ceil(BATCH));
    let posting = load::run_spread(&addrs, &load, |connection| IdPoster {
        addr: addrs[connection % addrs.len()],
        total: events,
        batches: batches.clone(),
        in_flight: 0,
        ids: Vec::new(),
    })
    .await;
    let ids: Vec<String> = posting
        .conversations
        .into_iter()
        .flat_map(|c| c.ids)
        .collect();
    let expected = ids.len() as u64;
    let deadline = posting.started + DEADLINE;

    // The count says when to look; the ids say whether it is done, since
    // an event whose batch failed after its commit is delivered too.
    let (missing, elapsed) = loop {
        received.wait_for(expected, deadline).await;
        let at = posting.started.elapsed();
        let missing = received.missing(HOOK_PATH, ids.iter().map(String::as_str));
        if missing == 0 || Instant::now() >= deadline {
            break (missing as u64, at);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let by_node = attempts_by_node(&received, receiver, nodes);
    receiver_task.abort();

    out.events = expected;
    out.delivered = expected - missing;
    out.per_sec = out.delivered as f64 / elapsed.as_secs_f64();
    out.duplicates = received.redeliveries.load(Ordering::Relaxed);
    if let Some(first) = &posting.tally.first_failure {
        out.failures += posting.tally.failures;
        out.notes.push(format!("first failure: {first}"));
    }
    out.notes.push(format!(
        "{expected} events accepted in {:.2} s ({:.0} events/s); last delivery counted at {:.2} s",
        posting.elapsed.as_secs_f64(),
        expected as f64 / posting.elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
    ));
    if expected < events {
        out.notes
            .push(format!("only {expected} of {events} events were accepted"));
    }
    if missing > 0 {
        out.notes.push(format!(
            "{missing} accepted events had no delivery within {DEADLINE:?}"
        ));
    }
    let unique = received.count.load(Ordering::Relaxed);
    if unique > out.delivered {
        out.notes.push(format!(
            "{} deliveries of events whose batch was not answered 2xx, not counted",
            unique - out.delivered
        ));
    }
    if nodes.len() > 1 {
        out.notes.push(by_node);
    }
    out.notes.extend(received.anomalies());
    out
}

/// Every request the receiver had, by the node whose connection it came
/// on; connections already closed cannot be told apart and are counted
/// as unattributed.
fn attempts_by_node(
    received: &Received,
    receiver: SocketAddr,
    nodes: &[(SocketAddr, u32)],
) -> String {
    let peers = received.requests_by_peer();
    let total: u64 = peers.iter().map(|(_, n)| n).sum();
    let mut attributed = 0;
    let mut parts = Vec::new();
    for (i, (_, pid)) in nodes.iter().enumerate() {
        let ports = tcp_ports_of(*pid, receiver.port());
        let n: u64 = peers
            .iter()
            .filter(|(peer, _)| ports.contains(&peer.port()))
            .map(|(_, n)| n)
            .sum();
        attributed += n;
        parts.push(format!("node {} {n}", i + 1));
    }
    let mut note = format!("attempts by node: {}", parts.join(", "));
    if attributed < total {
        note.push_str(&format!(", unattributed {}", total - attributed));
    }
    note
}

/// The local ports of a process's IPv4 TCP connections to port `to`: its
/// sockets' inodes from `/proc/PID/fd`, their ports from
/// `/proc/PID/net/tcp`. Matching the remote port too, since Linux may give
/// one local port to connections to different destinations. Empty where
/// `/proc` cannot say.
fn tcp_ports_of(pid: u32, to: u16) -> HashSet<u16> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    let inodes: HashSet<String> = fds
        .filter_map(|fd| {
            let link = std::fs::read_link(fd.ok()?.path()).ok()?;
            let inode = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(inode.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |field: usize| {
                let (_, hex) = fields.get(field)?.split_once(':')?;
                u16::from_str_radix(hex, 16).ok()
            };
            if port(2)? != to || !inodes.contains(*fields.get(9)?) {
                return None;
            }
            port(1)
        })
        .collect()
}

fn main() {
    let secs = env_parse("HERALD_BENCH_SECS", 8u64);
    let events = env_parse("HERALD_BENCH_EVENTS", 20_000u64);
    let threads = env_parse("HERALD_BENCH_THREADS", 2usize);
    let selected = Selection::from_env();
    let scenarios: Vec<&Throughput> = SCENARIOS
        .iter()
        .filter(|s| selected.wants(s.name))
        .collect();
    let want_deliveries = selected.wants(DELIVERIES);
    let mut known: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
    known.push(DELIVERIES);
    selected.require_any(&known);
    let server = Server::get();
    let runtime = load::runtime(threads);
    let run_id = load::run_id();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    println!(
        "`cargo bench --bench scaleout`: HERALD_BENCH_SECS={secs} HERALD_BENCH_EVENTS={events} \
         HERALD_BENCH_THREADS={threads} HERALD_BENCH_SCENARIOS={}, {cores} cores shared by \
         the bench, the nodes and PostgreSQL",
        selected.describe()
    );
    let mut summaries: Vec<Summary> = SETUPS.iter().map(|_| Summary::default()).collect();
    let mut notes = Vec::new();
    if !scenarios.is_empty() {
        println!("\n{THROUGHPUT_HEADER}");
    }
    for ((setup, nodes), summary) in SETUPS.iter().zip(&mut summaries) {
        for scenario in &scenarios {
            // A fresh store for each scenario, so no run pays for another's rows.
            let mut daemons = start_nodes(&server, setup, *nodes, "");
            let addrs: Vec<SocketAddr> = daemons.iter().map(|d| d.addr).collect();
            let load = scenario.load(secs, REQUEST_TIMEOUT);
            let outcome = runtime.block_on(load::run_spread(&addrs, &load, |connection| Poster {
                addr: addrs[connection % addrs.len()],
                events_per_request: scenario.per_request,
                key_prefix: format!("{}-{setup}-{run_id}-{connection}", scenario.name),
                sent: 0,
            }));
            let name = format!("{} {setup}", scenario.name);
            println!("{}", scenario.row_as(&name, secs, &outcome.tally));
            if let Some(first) = &outcome.tally.first_failure {
                notes.push(format!("- {name}: first failure: {first}"));
            }
            let tally = &outcome.tally;
            match scenario.name {
                "single-c1" => {
                    summary.single_c1 = Some((
                        quantile_ms(&tally.latencies_us, 0.50),
                        quantile_ms(&tally.latencies_us, 0.99),
                    ))
                }
                "single-c64" => summary.single_c64 = Some(scenario.events_per_sec(secs, tally)),
                _ => summary.batch = Some(scenario.events_per_sec(secs, tally)),
            }
            for daemon in &mut daemons {
                daemon.stop();
            }
        }
    }

    if want_deliveries {
        println!(
            "\n| scenario | nodes | events | delivered | deliveries/s | duplicates | failed |\n\
             |---|---:|---:|---:|---:|---:|---:|"
        );
    }
    let deliveries_runs = SETUPS
        .iter()
        .zip(&mut summaries)
        .filter(|_| want_deliveries);
    for ((setup, nodes), summary) in deliveries_runs {
        let mut daemons = start_nodes(&server, setup, *nodes, WEBHOOKS);
        let addrs: Vec<(SocketAddr, u32)> = daemons.iter().map(|d| (d.addr, d.pid())).collect();
        let row = runtime.block_on(deliveries(&addrs, events));
        for daemon in &mut daemons {
            daemon.stop();
        }
        let name = format!("{DELIVERIES} {setup}");
        println!(
            "| {name} | {} | {} | {} | {:.0} | {} | {} |",
            addrs.len(),
            row.events,
            row.delivered,
            row.per_sec,
            row.duplicates,
            row.failures,
        );
        notes.extend(row.notes.into_iter().map(|n| format!("- {name}: {n}")));
        summary.deliveries = Some(row.per_sec);
    }
    if !notes.is_empty() {
        println!("\n{}", notes.join("\n"));
    }

    println!(
        "\nSummary. single-c1 is one request at a time, each answered once its event is \
         committed: its p50 and p99 are the commit latency a lone client sees.\n\n\
         | setup | single-c1 p50 ms | single-c1 p99 ms | single-c64 events/s | batch100-c8 events/s | deliveries/s |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    for ((setup, _), summary) in SETUPS.iter().zip(&summaries) {
        let (p50, p99) = summary
            .single_c1
            .clone()
            .unwrap_or_else(|| ("-".to_owned(), "-".to_owned()));
        println!(
            "| {setup} | {p50} | {p99} | {} | {} | {} |",
            figure(summary.single_c64),
            figure(summary.batch),
            figure(summary.deliveries),
        );
    }
}
