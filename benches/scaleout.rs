//! Scale-out benchmark: the event log on redb, on PostgreSQL with one
//! node, and on PostgreSQL with three nodes sharing one database, driven
//! by the same load in the same run.
//!
//! `cargo bench --bench scaleout` starts the release binary for each setup
//! (three processes for the three-node one, the load's connections spread
//! over them) and prints one Markdown row per setup and scenario. Every 2xx
//! counted was committed: fsynced by redb, or committed by PostgreSQL with
//! `synchronous_commit` on. `single-c1` is one request at a time, so its
//! latency is the commit latency a lone client sees.
//!
//! Environment:
//! - `HERALD_BENCH_SECS`: measured seconds per scenario (default 8), after
//!   one unmeasured second of warm-up.
//! - `HERALD_BENCH_SCENARIOS`: comma-separated subset of
//!   `single-c1,single-c64,batch100-c8`.
//! - `HERALD_BENCH_POSTGRES_URL`: a PostgreSQL server to create the bench's
//!   databases on (a superuser's URL). Without it the bench starts a
//!   throwaway cluster with `tests/pg_cluster` and removes it at the end.
//! - `HERALD_BENCH_THREADS`: client threads (default 2).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::daemon::Daemon;
use common::knobs::{env_parse, Selection};
use common::load::{self, Throughput};
use common::poster::Poster;
use common::report::THROUGHPUT_HEADER;

const SCENARIOS: &[Throughput] = &[
    Throughput::new("single-c1", 1, 1),
    Throughput::new("single-c64", 64, 1),
    Throughput::new("batch100-c8", 8, 100),
];

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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

fn main() {
    let secs = env_parse("HERALD_BENCH_SECS", 8u64);
    let threads = env_parse("HERALD_BENCH_THREADS", 2usize);
    let selected = Selection::from_env();
    let scenarios: Vec<&Throughput> = SCENARIOS
        .iter()
        .filter(|s| selected.wants(s.name))
        .collect();
    selected.require_any(&SCENARIOS.iter().map(|s| s.name).collect::<Vec<_>>());
    let server = Server::get();
    let runtime = load::runtime(threads);
    let run_id = load::run_id();

    println!("scale-out, {secs}s per scenario, {threads} client threads\n\n{THROUGHPUT_HEADER}");
    for (setup, nodes) in [("redb", 0usize), ("postgres-1", 1), ("postgres-3", 3)] {
        for scenario in &scenarios {
            // A fresh store for each scenario, so no run pays for another's rows.
            let mut daemons: Vec<Daemon> = if nodes == 0 {
                vec![Daemon::start("")]
            } else {
                let url = server.fresh_database(&format!("herald_bench_{nodes}"));
                let toml = format!("[store]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\n");
                (0..nodes).map(|_| Daemon::start(&toml)).collect()
            };
            let addrs: Vec<SocketAddr> = daemons.iter().map(|d| d.addr).collect();
            let load = scenario.load(secs, REQUEST_TIMEOUT);
            let outcome = runtime.block_on(load::run_spread(&addrs, &load, |connection| Poster {
                addr: addrs[connection % addrs.len()],
                events_per_request: scenario.per_request,
                key_prefix: format!("{}-{setup}-{run_id}-{connection}", scenario.name),
                sent: 0,
            }));
            println!(
                "{}",
                scenario.row_as(&format!("{} {setup}", scenario.name), secs, &outcome.tally)
            );
            if let Some(first) = &outcome.tally.first_failure {
                println!("  first failure: {first}");
            }
            for daemon in &mut daemons {
                daemon.stop();
            }
        }
    }
    println!(
        "\ndeliveries/s: not measured on PostgreSQL; that backend serves the event log only in \
         this release (`cargo bench --bench webhooks` measures redb)"
    );
}
