//! The environment knobs every bench reads the same way: numbers, the
//! scenario selection and the server to drive instead of a daemon.

use std::net::SocketAddr;

pub fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// `HERALD_BENCH_TARGET`: `http://IP:PORT` of an already running server to
/// drive instead of starting a daemon, for comparing Herald with another
/// server that accepts the same requests.
pub fn target() -> Option<SocketAddr> {
    std::env::var("HERALD_BENCH_TARGET").ok().map(|target| {
        target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse::<SocketAddr>()
            .unwrap_or_else(|e| panic!("HERALD_BENCH_TARGET={target:?}: {e}"))
    })
}

/// `HERALD_BENCH_SCENARIOS`: a comma-separated list of scenario names, or
/// of prefixes before a `-` (`batch100` selects `batch100-c8` and
/// `batch100-c32`); unset selects every scenario.
pub struct Selection(Option<Vec<String>>);

impl Selection {
    pub fn from_env() -> Self {
        Selection(
            std::env::var("HERALD_BENCH_SCENARIOS")
                .ok()
                .map(|s| s.split(',').map(|x| x.trim().to_owned()).collect()),
        )
    }

    pub fn wants(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|v| {
            v.iter().any(|n| {
                n == name
                    || name
                        .strip_prefix(n.as_str())
                        .is_some_and(|r| r.starts_with('-'))
            })
        })
    }

    /// Exits with status 2 when no scenario of `known` is selected.
    pub fn require_any(&self, known: &[&str]) {
        if !known.iter().any(|k| self.wants(k)) {
            eprintln!("HERALD_BENCH_SCENARIOS selects none of {}", known.join(","));
            std::process::exit(2);
        }
    }

    /// The selection as given, for the report's header.
    pub fn describe(&self) -> String {
        self.0.as_ref().map_or("(all)".to_owned(), |v| v.join(","))
    }
}
