//! The dispatcher: decides which pending delivery is attempted when, with
//! per-endpoint queues, concurrency caps, rate limits and circuit breakers.
//!
//! The durable schedule is the `deliveries_due` table. At start the
//! dispatcher loads it; afterwards the writer tells it about every committed
//! change, so nothing is polled. Timers live in an ordered set (the near and
//! the far future alike: pending deliveries cost a few dozen bytes each).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::clock;
use crate::store::codec::EndpointRecord;
use crate::store::webhooks::{DueDelivery, HookNote};

use super::attempt::{self, AttemptContext, Finished};

/// What an attempt task reports when it is done.
struct Done {
    endpoint_id: u128,
    delivery_id: u64,
    finished: Finished,
}

/// Per-endpoint dispatch state, in memory only: after a restart every
/// breaker starts closed and every bucket full.
struct EndpointGate {
    enabled: bool,
    rate_per_sec: Option<u32>,
    tokens: f64,
    refilled: Instant,
    in_flight: usize,
    consecutive_failures: u32,
    /// While set and in the future, nothing is attempted; afterwards one
    /// probe at a time until a success closes the breaker.
    open_until: Option<Instant>,
}

impl EndpointGate {
    fn new(record: Option<&EndpointRecord>, now: Instant) -> Self {
        let mut gate = EndpointGate {
            enabled: false,
            rate_per_sec: None,
            tokens: 0.0,
            refilled: now,
            in_flight: 0,
            consecutive_failures: 0,
            open_until: None,
        };
        gate.configure(record);
        gate.tokens = gate.rate_per_sec.map_or(0.0, f64::from);
        gate
    }

    fn configure(&mut self, record: Option<&EndpointRecord>) {
        self.enabled = record.is_some_and(|r| r.enabled);
        let rate = record.and_then(|r| r.rate_limit_per_sec);
        if rate != self.rate_per_sec {
            self.rate_per_sec = rate;
            self.tokens = self.tokens.min(rate.map_or(0.0, f64::from));
        }
    }

    /// Ok to start one attempt now; otherwise when to look again (`None`:
    /// when something else changes, such as an attempt finishing).
    fn admit(&mut self, now: Instant, max_in_flight: usize) -> Result<(), Option<Instant>> {
        if !self.enabled {
            return Err(None);
        }
        let cap = match self.open_until {
            Some(until) if until > now => return Err(Some(until)),
            Some(_) => 1,
            None => max_in_flight,
        };
        if self.in_flight >= cap {
            return Err(None);
        }
        if let Some(rate) = self.rate_per_sec {
            let rate = f64::from(rate);
            let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(rate);
            self.refilled = now;
            if self.tokens < 1.0 {
                let wait = (1.0 - self.tokens) / rate;
                return Err(Some(now + Duration::from_secs_f64(wait)));
            }
            self.tokens -= 1.0;
        }
        self.in_flight += 1;
        Ok(())
    }

    fn finished(&mut self, finished: Finished, now: Instant, failures: u32, cooldown: Duration) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match finished {
            Finished::Succeeded => {
                self.consecutive_failures = 0;
                self.open_until = None;
            }
            Finished::Failed => {
                self.consecutive_failures += 1;
                if self.consecutive_failures >= failures {
                    self.open_until = Some(now + cooldown);
                }
            }
            Finished::Skipped => {}
        }
    }
}

pub struct Dispatcher {
    ctx: Arc<AttemptContext>,
    notes: mpsc::UnboundedReceiver<HookNote>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// Where each known pending delivery is due; timer entries that disagree
    /// are stale and skipped.
    due: HashMap<u64, i64>,
    timers: BTreeSet<(i64, u64, u128)>,
    ready: HashMap<u128, VecDeque<u64>>,
    in_flight: HashSet<u64>,
    /// Reschedules that arrived while the delivery's attempt was running.
    after_flight: HashMap<u64, DueDelivery>,
    gates: HashMap<u128, EndpointGate>,
    endpoints: HashMap<u128, EndpointRecord>,
}

impl Dispatcher {
    pub fn new(ctx: Arc<AttemptContext>, notes: mpsc::UnboundedReceiver<HookNote>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Dispatcher {
            ctx,
            notes,
            done_tx,
            done_rx,
            due: HashMap::new(),
            timers: BTreeSet::new(),
            ready: HashMap::new(),
            in_flight: HashSet::new(),
            after_flight: HashMap::new(),
            gates: HashMap::new(),
            endpoints: HashMap::new(),
        }
    }

    /// Runs until `stop` resolves. Attempts in flight then are abandoned:
    /// their schedule rows remain, so they are retried after the restart.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        if let Err(e) = self.load().await {
            tracing::error!(error = %e, "cannot load pending deliveries; webhooks stay idle");
            stop.await;
            return;
        }
        tokio::pin!(stop);
        loop {
            let wake = self.start_what_can_start();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut stop => return,
                note = self.notes.recv() => match note {
                    Some(note) => self.on_note(note).await,
                    None => return,
                },
                Some(done) = self.done_rx.recv() => self.on_done(done),
                () = sleep => {}
            }
        }
    }

    async fn load(&mut self) -> Result<(), String> {
        let store = self.ctx.store.clone();
        let (endpoints, due) = tokio::task::spawn_blocking(move || {
            let txn = store.read()?;
            Ok::<_, crate::store::StoreError>((txn.endpoints()?, txn.due_deliveries()?))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        self.set_endpoints(endpoints);
        let count = due.len();
        for d in due {
            self.schedule(d);
        }
        tracing::info!(pending = count, "webhook dispatcher started");
        Ok(())
    }

    async fn reload_endpoints(&mut self) {
        let store = self.ctx.store.clone();
        match tokio::task::spawn_blocking(move || store.read()?.endpoints()).await {
            Ok(Ok(endpoints)) => self.set_endpoints(endpoints),
            Ok(Err(e)) => tracing::error!(error = %e, "reloading endpoints failed"),
            Err(e) => tracing::error!(error = %e, "reloading endpoints failed"),
        }
    }

    fn set_endpoints(&mut self, endpoints: Vec<EndpointRecord>) {
        self.endpoints = endpoints.into_iter().map(|e| (e.id, e)).collect();
        let now = Instant::now();
        for (id, gate) in &mut self.gates {
            gate.configure(self.endpoints.get(id));
        }
        for id in self.endpoints.keys() {
            self.gates
                .entry(*id)
                .or_insert_with(|| EndpointGate::new(self.endpoints.get(id), now));
        }
        // A deleted endpoint's deliveries were closed by the writer.
        let endpoints = &self.endpoints;
        let due = &mut self.due;
        self.ready.retain(|id, queue| {
            let keep = endpoints.contains_key(id);
            if !keep {
                for d in queue.iter() {
                    due.remove(d);
                }
            }
            keep
        });
    }

    async fn on_note(&mut self, note: HookNote) {
        match note {
            HookNote::Due(list) => {
                for d in list {
                    self.schedule(d);
                }
            }
            HookNote::EndpointsChanged => self.reload_endpoints().await,
        }
    }

    fn schedule(&mut self, d: DueDelivery) {
        if self.in_flight.contains(&d.delivery_id) {
            self.after_flight.insert(d.delivery_id, d);
            return;
        }
        if self.due.insert(d.delivery_id, d.due_ms) == Some(d.due_ms) {
            return;
        }
        self.timers.insert((d.due_ms, d.delivery_id, d.endpoint_id));
    }

    fn on_done(&mut self, done: Done) {
        self.in_flight.remove(&done.delivery_id);
        let now = Instant::now();
        let settings = &self.ctx.settings;
        if let Some(gate) = self.gates.get_mut(&done.endpoint_id) {
            gate.finished(
                done.finished,
                now,
                settings.circuit_failures,
                settings.circuit_cooldown,
            );
        }
        if let Some(next) = self.after_flight.remove(&done.delivery_id) {
            self.schedule(next);
        }
    }

    /// Moves due timers to their endpoint's queue and starts every attempt
    /// the gates admit. Returns when to look again.
    fn start_what_can_start(&mut self) -> Option<Instant> {
        let now_ms = clock::now_ms();
        while let Some(&(due_ms, delivery_id, endpoint_id)) = self.timers.first() {
            if due_ms > now_ms {
                break;
            }
            self.timers.pop_first();
            if self.due.get(&delivery_id) == Some(&due_ms) {
                self.ready
                    .entry(endpoint_id)
                    .or_default()
                    .push_back(delivery_id);
            }
        }

        let now = Instant::now();
        let mut wake: Option<Instant> = self.timers.first().map(|&(due_ms, _, _)| {
            now + Duration::from_millis(due_ms.saturating_sub(now_ms).max(0) as u64)
        });
        let max_in_flight = self.ctx.settings.max_in_flight_per_endpoint;
        for (endpoint_id, queue) in &mut self.ready {
            let gate = self
                .gates
                .entry(*endpoint_id)
                .or_insert_with(|| EndpointGate::new(self.endpoints.get(endpoint_id), now));
            while let Some(&delivery_id) = queue.front() {
                if !self.due.contains_key(&delivery_id) {
                    queue.pop_front();
                    continue;
                }
                match gate.admit(now, max_in_flight) {
                    Ok(()) => {
                        queue.pop_front();
                        self.due.remove(&delivery_id);
                        self.in_flight.insert(delivery_id);
                        let ctx = self.ctx.clone();
                        let done_tx = self.done_tx.clone();
                        let endpoint_id = *endpoint_id;
                        tokio::spawn(async move {
                            let finished = attempt::run_scheduled(&ctx, delivery_id).await;
                            let _ = done_tx.send(Done {
                                endpoint_id,
                                delivery_id,
                                finished,
                            });
                        });
                    }
                    Err(Some(at)) => {
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                        break;
                    }
                    Err(None) => break,
                }
            }
        }
        self.ready.retain(|_, q| !q.is_empty());
        wake
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(rate: Option<u32>) -> EndpointGate {
        let mut record = super::super::endpoint::new_record(0);
        record.rate_limit_per_sec = rate;
        EndpointGate::new(Some(&record), Instant::now())
    }

    #[test]
    fn the_rate_limit_admits_a_burst_then_one_per_interval() {
        let mut g = gate(Some(5));
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(g.admit(t0, 100).is_ok());
        }
        let Err(Some(next)) = g.admit(t0, 100) else {
            panic!("a sixth attempt in the same instant must wait");
        };
        assert!(next > t0 && next <= t0 + Duration::from_millis(201));
        assert!(g.admit(t0 + Duration::from_millis(200), 100).is_ok());
        assert!(g.admit(t0 + Duration::from_millis(200), 100).is_err());
    }

    #[test]
    fn the_concurrency_cap_holds_until_an_attempt_finishes() {
        let mut g = gate(None);
        let now = Instant::now();
        assert!(g.admit(now, 2).is_ok());
        assert!(g.admit(now, 2).is_ok());
        assert_eq!(g.admit(now, 2), Err(None));
        g.finished(Finished::Succeeded, now, 5, Duration::from_secs(1));
        assert!(g.admit(now, 2).is_ok());
    }

    #[test]
    fn the_breaker_opens_after_failures_then_probes_one_at_a_time() {
        let mut g = gate(None);
        let now = Instant::now();
        let cooldown = Duration::from_secs(30);
        for _ in 0..3 {
            assert!(g.admit(now, 8).is_ok());
            g.finished(Finished::Failed, now, 3, cooldown);
        }
        assert_eq!(g.admit(now, 8), Err(Some(now + cooldown)));
        let later = now + cooldown;
        assert!(g.admit(later, 8).is_ok(), "one probe after the cool-down");
        assert_eq!(g.admit(later, 8), Err(None), "only one probe at a time");
        g.finished(Finished::Succeeded, later, 3, cooldown);
        assert!(g.admit(later, 8).is_ok());
        assert!(g.admit(later, 8).is_ok(), "closed again: full concurrency");
    }

    #[test]
    fn a_disabled_endpoint_admits_nothing() {
        let mut record = super::super::endpoint::new_record(0);
        record.enabled = false;
        let mut g = EndpointGate::new(Some(&record), Instant::now());
        assert_eq!(g.admit(Instant::now(), 8), Err(None));
    }
}
