//! Whether an endpoint may receive another attempt now: its in-flight cap,
//! its rate limit and its circuit breaker. In memory only: after a restart
//! every breaker starts closed and every bucket full.

use std::time::{Duration, Instant};

use crate::scheduler::{Admit, Ended, TokenBucket};
use crate::store::records::EndpointRecord;

/// The dispatcher's limits that hold for every endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_in_flight: usize,
    /// Consecutive failures that open the breaker.
    pub circuit_failures: u32,
    /// How long an open breaker pauses the endpoint before one probe.
    pub circuit_cooldown: Duration,
}

#[derive(Debug)]
pub struct Gate {
    enabled: bool,
    bucket: Option<TokenBucket>,
    in_flight: usize,
    consecutive_failures: u32,
    /// While set and in the future, nothing is attempted; afterwards one
    /// probe at a time until a success closes the breaker.
    open_until: Option<Instant>,
}

impl Gate {
    pub fn new(record: Option<&EndpointRecord>, now: Instant) -> Self {
        let mut gate = Gate {
            enabled: false,
            bucket: None,
            in_flight: 0,
            consecutive_failures: 0,
            open_until: None,
        };
        gate.configure(record, now);
        gate
    }

    /// Takes the endpoint's current settings; a deleted endpoint admits
    /// nothing.
    pub fn configure(&mut self, record: Option<&EndpointRecord>, now: Instant) {
        self.enabled = record.is_some_and(|r| r.enabled);
        match (record.and_then(|r| r.rate_limit_per_sec), &mut self.bucket) {
            (None, _) => self.bucket = None,
            (Some(rate), Some(bucket)) => bucket.set_rate(rate),
            (Some(rate), None) => self.bucket = Some(TokenBucket::new(rate, now)),
        }
    }

    /// May one attempt start now? If so it is counted in flight.
    pub fn admit(&mut self, now: Instant, limits: &Limits) -> Admit {
        if !self.enabled {
            return Admit::Later;
        }
        let cap = match self.open_until {
            Some(until) if until > now => return Admit::At(until),
            Some(_) => 1,
            None => limits.max_in_flight,
        };
        if self.in_flight >= cap {
            return Admit::Later;
        }
        if let Some(bucket) = &mut self.bucket {
            if let Err(at) = bucket.take(now) {
                return Admit::At(at);
            }
        }
        self.in_flight += 1;
        Admit::Now
    }

    /// An admitted attempt ended.
    pub fn ended(&mut self, ended: Ended, now: Instant, limits: &Limits) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match ended {
            Ended::Succeeded => {
                self.consecutive_failures = 0;
                self.open_until = None;
            }
            Ended::Failed => {
                self.consecutive_failures += 1;
                if self.consecutive_failures >= limits.circuit_failures {
                    self.open_until = Some(now + limits.circuit_cooldown);
                }
            }
            Ended::Skipped | Ended::NotDue | Ended::Unrecorded => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_in_flight: usize, circuit_failures: u32) -> Limits {
        Limits {
            max_in_flight,
            circuit_failures,
            circuit_cooldown: Duration::from_secs(30),
        }
    }

    fn gate(rate: Option<u32>) -> Gate {
        let mut record = crate::webhooks::endpoint::new_record(0);
        record.rate_limit_per_sec = rate;
        Gate::new(Some(&record), Instant::now())
    }

    #[test]
    fn the_rate_limit_admits_a_burst_then_one_per_interval() {
        let mut g = gate(Some(5));
        let l = limits(100, 10);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(g.admit(t0, &l), Admit::Now);
        }
        let Admit::At(next) = g.admit(t0, &l) else {
            panic!("a sixth attempt in the same instant must wait");
        };
        assert!(next > t0 && next <= t0 + Duration::from_millis(201));
        assert_eq!(g.admit(t0 + Duration::from_millis(200), &l), Admit::Now);
        assert!(matches!(
            g.admit(t0 + Duration::from_millis(200), &l),
            Admit::At(_)
        ));
    }

    #[test]
    fn the_concurrency_cap_holds_until_an_attempt_ends() {
        let mut g = gate(None);
        let l = limits(2, 10);
        let now = Instant::now();
        assert_eq!(g.admit(now, &l), Admit::Now);
        assert_eq!(g.admit(now, &l), Admit::Now);
        assert_eq!(g.admit(now, &l), Admit::Later);
        g.ended(Ended::Succeeded, now, &l);
        assert_eq!(g.admit(now, &l), Admit::Now);
    }

    #[test]
    fn the_breaker_opens_after_failures_then_probes_one_at_a_time() {
        let mut g = gate(None);
        let l = limits(8, 3);
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(g.admit(now, &l), Admit::Now);
            g.ended(Ended::Failed, now, &l);
        }
        assert_eq!(g.admit(now, &l), Admit::At(now + l.circuit_cooldown));
        let later = now + l.circuit_cooldown;
        assert_eq!(
            g.admit(later, &l),
            Admit::Now,
            "one probe after the cool-down"
        );
        assert_eq!(g.admit(later, &l), Admit::Later, "only one probe at a time");
        g.ended(Ended::Succeeded, later, &l);
        assert_eq!(g.admit(later, &l), Admit::Now);
        assert_eq!(
            g.admit(later, &l),
            Admit::Now,
            "closed again: full concurrency"
        );
    }

    #[test]
    fn attempts_not_made_or_not_recorded_neither_open_nor_close_the_breaker() {
        let mut g = gate(None);
        let l = limits(8, 2);
        let now = Instant::now();
        assert_eq!(g.admit(now, &l), Admit::Now);
        g.ended(Ended::Failed, now, &l);
        for ended in [Ended::Skipped, Ended::NotDue, Ended::Unrecorded] {
            assert_eq!(g.admit(now, &l), Admit::Now);
            g.ended(ended, now, &l);
        }
        assert_eq!(g.admit(now, &l), Admit::Now);
        g.ended(Ended::Failed, now, &l);
        assert!(matches!(g.admit(now, &l), Admit::At(_)));
    }

    #[test]
    fn a_disabled_or_deleted_endpoint_admits_nothing() {
        let mut record = crate::webhooks::endpoint::new_record(0);
        record.enabled = false;
        let l = limits(8, 10);
        let mut g = Gate::new(Some(&record), Instant::now());
        assert_eq!(g.admit(Instant::now(), &l), Admit::Later);
        let mut g = Gate::new(None, Instant::now());
        assert_eq!(g.admit(Instant::now(), &l), Admit::Later);
    }
}
