//! Ingest benchmark: durable event POSTs against a real `herald serve`.
//!
//! `cargo bench --bench ingest` starts the release binary on a loopback port
//! with a fresh database under `target/tmp/`, drives it with
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
//! - `HERALD_CEILING_BIN`: the ceiling probe's binary. Each scenario then
//!   runs against the probe right after Herald, with the same load, and
//!   the report gives Herald's ratio to it.
//!
//! Herald's resident memory is reported idle (before the first scenario),
//! at its peak under load, and idle again after the last.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::ceiling::{self, Ceiling};
use common::daemon::Daemon;
use common::knobs::{self, env_parse, Selection};
use common::load::{self, Tally, Throughput};
use common::poster::Poster;
use common::report::{resident_mib, THROUGHPUT_HEADER};

const SCENARIOS: &[Throughput] = &[
    Throughput::new("single-c1", 1, 1),
    Throughput::new("single-c16", 16, 1),
    Throughput::new("single-c64", 64, 1),
    Throughput::new("batch100-c8", 8, 100),
    Throughput::new("batch100-c32", 32, 100),
];

/// A cap on one request, so a wedged server ends the run with an error
/// instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    let secs = env_parse("HERALD_BENCH_SECS", 8u64);
    let threads = env_parse("HERALD_BENCH_THREADS", 2usize);
    let selected = Selection::from_env();
    let scenarios: Vec<&Throughput> = SCENARIOS
        .iter()
        .filter(|s| selected.wants(s.name))
        .collect();
    selected.require_any(&SCENARIOS.iter().map(|s| s.name).collect::<Vec<_>>());

    let (addr, mut daemon) = match knobs::target() {
        Some(addr) => (addr, None),
        None => {
            let daemon = Daemon::start("");
            (daemon.addr, Some(daemon))
        }
    };

    let runtime = load::runtime(threads);
    let ceilings = [
        Ceiling::start(ceiling::Mode::Single),
        Ceiling::start(ceiling::Mode::Batch),
    ];
    let idle = daemon.as_ref().and_then(|d| resident_mib(d.pid()));

    println!(
        "ingest against {addr}, {secs}s per scenario, {threads} client threads\n\n{THROUGHPUT_HEADER}"
    );
    let run_id = load::run_id();
    let mut ratios = Vec::new();
    for scenario in scenarios {
        let drive = |target: SocketAddr, label: &str| -> Tally {
            let load = scenario.load(secs, REQUEST_TIMEOUT);
            let outcome = runtime.block_on(load::run(target, &load, |connection| Poster {
                addr: target,
                events_per_request: scenario.per_request,
                key_prefix: format!("{}-{label}-{run_id}-{connection}", scenario.name),
                sent: 0,
            }));
            if let Some(first) = &outcome.tally.first_failure {
                println!("  first failure ({label}): {first}");
            }
            outcome.tally
        };
        let herald = drive(addr, "herald");
        println!("{}", scenario.row(secs, &herald));
        let probe = &ceilings[usize::from(scenario.per_request > 1)];
        let ceiling = probe.as_ref().map(|probe| {
            let tally = drive(probe.addr, "ceiling");
            println!(
                "{}",
                scenario.row_as(&format!("{} (ceiling)", scenario.name), secs, &tally)
            );
            tally
        });
        ratios.push(format!(
            "| {} | {} | {} | {} |",
            scenario.name,
            ceiling::ratio(herald.answered(), ceiling.as_ref().map(Tally::answered)),
            ceiling::ratio(
                herald.quantile_us(0.999),
                ceiling.as_ref().map(|c| c.quantile_us(0.50))
            ),
            ceiling::ratio(
                herald.quantile_us(0.99),
                ceiling.as_ref().map(|c| c.quantile_us(0.99))
            ),
        ));
    }
    if ceilings.iter().any(Option::is_some) {
        println!(
            "\n| scenario | throughput / ceiling | p99.9 / ceiling p50 | p99 / ceiling p99 |\n|---|---:|---:|---:|"
        );
        for row in &ratios {
            println!("{row}");
        }
    } else {
        println!("\n(no ceiling: set HERALD_CEILING_BIN to run it beside Herald)");
    }
    if let Some(daemon) = daemon.as_mut() {
        let after = resident_mib(daemon.pid());
        let mib = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} MiB"));
        println!(
            "\nherald resident memory: idle {}, peak under load {}, idle after {}",
            mib(idle.map(|(_, now)| now)),
            mib(after.map(|(peak, _)| peak)),
            mib(after.map(|(_, now)| now)),
        );
        daemon.stop();
    }
}
