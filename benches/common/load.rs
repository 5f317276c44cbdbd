//! The load loop every bench drives a server with: keep-alive connections
//! that each send their next request when the answer to the previous one
//! arrived (closed loop), for a while or until their work runs out, and an
//! open loop that releases requests at a steady rate to whichever of those
//! connections is free.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, Mutex};

use super::http::{connect, exchange_within, Connection};
use super::report::{micros, quantile_ms};

/// The least wait after a refused connect.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// The bench's own runtime, which shares the machine's cores with the
/// server: `threads` is kept small on purpose.
pub fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("bench runtime")
}

/// Milliseconds since the epoch: a tag for ids and keys that must not
/// clash with an earlier run's against the same server.
pub fn run_id() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// One connection's part of a load: what it sends and what it makes of
/// the answers. The loop owns the connection: it connects, reconnects
/// after a failure, applies the deadline and times each exchange.
pub trait Conversation: Send + 'static {
    /// The next request, or `None` when this connection's work is done.
    fn next_request(&mut self) -> impl Future<Output = Option<Vec<u8>>> + Send;

    /// Judges a 2xx answer to the last request; an `Err` counts it as
    /// failed. Answers during the warm-up are not shown.
    fn answered(&mut self, _body: &[u8]) -> Result<(), String> {
        Ok(())
    }

    /// The last request failed (transport, non-2xx or `answered`): the
    /// message to tally and the pause before the next request.
    fn failed(&mut self, error: String) -> (String, Duration) {
        (error, Duration::ZERO)
    }
}

pub struct Load {
    pub connections: usize,
    /// Sent but neither timed nor counted: lets connections open and the
    /// server's pools fill before the measurement.
    pub warmup: Duration,
    /// When the measured part stops sending; `None` runs until every
    /// conversation has no more requests.
    pub limit: Option<Duration>,
    pub request_timeout: Duration,
}

/// What the connections measured together.
#[derive(Default)]
pub struct Tally {
    /// Send-to-answer time of each measured 2xx (due-to-answer in an open
    /// loop), sorted.
    pub latencies_us: Vec<u32>,
    pub failures: u64,
    pub first_failure: Option<String>,
}

impl Tally {
    /// Requests answered in the measured time: two loads run equally long
    /// compare by this alone.
    pub fn answered(&self) -> f64 {
        self.latencies_us.len() as f64
    }

    /// The `q` quantile of the answers' latencies, in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        super::report::quantile_us(&self.latencies_us, q).map_or(0.0, f64::from)
    }
}

impl Tally {
    fn fail(&mut self, message: String) {
        self.failures += 1;
        self.first_failure.get_or_insert(message);
    }
}

pub struct Outcome<C> {
    pub tally: Tally,
    /// Each connection's conversation, with whatever it counted.
    pub conversations: Vec<C>,
    /// When the measurement began: after the warm-up.
    pub started: Instant,
    /// From `started` until the last connection finished.
    pub elapsed: Duration,
}

/// A timed closed-loop scenario of a throughput bench.
pub struct Throughput {
    pub name: &'static str,
    pub connections: usize,
    /// Events in each request; 1 sends them to the single-event route.
    pub per_request: usize,
}

impl Throughput {
    pub const fn new(name: &'static str, connections: usize, per_request: usize) -> Self {
        Throughput {
            name,
            connections,
            per_request,
        }
    }

    /// `secs` measured after a second of warm-up.
    pub fn load(&self, secs: u64, request_timeout: Duration) -> Load {
        Load {
            connections: self.connections,
            warmup: Duration::from_secs(1),
            limit: Some(Duration::from_secs(secs)),
            request_timeout,
        }
    }

    /// The scenario's row under `THROUGHPUT_HEADER`.
    pub fn row(&self, secs: u64, tally: &Tally) -> String {
        self.row_as(self.name, secs, tally)
    }

    /// Events committed a second over `secs` measured seconds.
    pub fn events_per_sec(&self, secs: u64, tally: &Tally) -> f64 {
        tally.latencies_us.len() as f64 / secs as f64 * self.per_request as f64
    }

    /// As `row`, under another name (the same load against another server).
    pub fn row_as(&self, name: &str, secs: u64, tally: &Tally) -> String {
        let per_sec = tally.latencies_us.len() as f64 / secs as f64;
        let quantile = |q: f64| quantile_ms(&tally.latencies_us, q);
        format!(
            "| {} | {} | {per_sec:.0} | {:.0} | {} | {} | {} | {} |",
            name,
            self.connections,
            self.events_per_sec(secs, tally),
            quantile(0.50),
            quantile(0.99),
            quantile(0.999),
            tally.failures,
        )
    }
}

/// Runs `load.connections` conversations, the `i`th made by `make(i)`.
pub async fn run<C: Conversation>(
    addr: SocketAddr,
    load: &Load,
    make: impl FnMut(usize) -> C,
) -> Outcome<C> {
    run_spread(&[addr], load, make).await
}

/// As `run`, the `i`th connection to `addrs[i % addrs.len()]`: one load
/// spread over several servers.
pub async fn run_spread<C: Conversation>(
    addrs: &[SocketAddr],
    load: &Load,
    make: impl FnMut(usize) -> C,
) -> Outcome<C> {
    let measuring = Arc::new(AtomicBool::new(load.warmup.is_zero()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now() + load.warmup;
    let connections: Vec<_> = (0..load.connections)
        .map(make)
        .enumerate()
        .map(|(i, conversation)| {
            tokio::spawn(converse(
                addrs[i % addrs.len()],
                conversation,
                load.request_timeout,
                measuring.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let (warmup, limit) = (load.warmup, load.limit);
    let clock = tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        measuring.store(true, Ordering::Relaxed);
        if let Some(limit) = limit {
            tokio::time::sleep(limit).await;
            stop.store(true, Ordering::Relaxed);
        }
    });
    let mut tally = Tally::default();
    let mut conversations = Vec::with_capacity(connections.len());
    for connection in connections {
        let (conversation, part) = connection.await.expect("load connection task");
        tally.latencies_us.extend(part.latencies_us);
        tally.failures += part.failures;
        tally.first_failure = tally.first_failure.or(part.first_failure);
        conversations.push(conversation);
    }
    clock.abort();
    tally.latencies_us.sort_unstable();
    Outcome {
        tally,
        conversations,
        started,
        elapsed: started.elapsed(),
    }
}

/// One keep-alive connection sending back to back. A failure drops the
/// connection and the next request opens another, so one refused request
/// does not end the load; the failed request is the conversation's to
/// retry, so a server that is down ends fixed work instead of stalling it.
async fn converse<C: Conversation>(
    addr: SocketAddr,
    mut conversation: C,
    request_timeout: Duration,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> (C, Tally) {
    let mut tally = Tally::default();
    let mut connection: Option<Connection> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(request) = conversation.next_request().await else {
            break;
        };
        let stream = match connection.as_mut() {
            Some(stream) => Some(stream),
            None => match connect(addr).await {
                Ok(stream) => Some(connection.insert(stream)),
                Err(e) => {
                    // The request is spent like any failed one; the pause
                    // keeps a refusing server from being spun against.
                    let (message, pause) = conversation.failed(format!("connect: {e}"));
                    if measuring.load(Ordering::Relaxed) {
                        tally.fail(message);
                    }
                    tokio::time::sleep(pause.max(RECONNECT_PAUSE)).await;
                    None
                }
            },
        };
        let Some(stream) = stream else {
            continue;
        };
        let sent = Instant::now();
        let answer = exchange_within(stream, &request, request_timeout).await;
        let latency = sent.elapsed();
        let measured = measuring.load(Ordering::Relaxed);
        let outcome = match answer {
            Ok(body) if measured => conversation.answered(&body),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) if measured => tally.latencies_us.push(micros(latency)),
            Ok(()) => {}
            Err(e) => {
                connection = None;
                let (message, pause) = conversation.failed(e);
                if measured {
                    tally.fail(message);
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
    (conversation, tally)
}

/// Hands out `0..total` to whichever connection asks first, so fixed work
/// spreads over the connections by their speed.
#[derive(Clone)]
pub struct Shares {
    next: Arc<AtomicU64>,
    total: u64,
}

impl Shares {
    pub fn new(total: u64) -> Shares {
        Shares {
            next: Arc::new(AtomicU64::new(0)),
            total,
        }
    }

    pub fn take(&self) -> Option<u64> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n < self.total).then_some(n)
    }
}

/// A connection posting events to `/v1/events/batch`, `per_request` a
/// request, its batches taken in turn with the other connections'.
pub struct EventBatches<F> {
    addr: SocketAddr,
    total: u64,
    per_request: u64,
    batches: Shares,
    /// The `i`th event's JSON.
    event: F,
    /// Events in the batch in flight.
    in_flight: u64,
    /// Events in the batches the API accepted.
    pub posted: u64,
}

/// Makes the connections that post events `0..total` between them.
pub fn event_batches<F>(
    addr: SocketAddr,
    total: u64,
    per_request: u64,
    event: F,
) -> impl FnMut(usize) -> EventBatches<F>
where
    F: Fn(u64) -> String + Clone + Send + 'static,
{
    let batches = Shares::new(total.div_ceil(per_request));
    move |_| EventBatches {
        addr,
        total,
        per_request,
        batches: batches.clone(),
        event: event.clone(),
        in_flight: 0,
        posted: 0,
    }
}

impl<F: Fn(u64) -> String + Send + 'static> Conversation for EventBatches<F> {
    async fn next_request(&mut self) -> Option<Vec<u8>> {
        let first = self.batches.take()? * self.per_request;
        let events: Vec<String> = (first..self.total.min(first + self.per_request))
            .map(&self.event)
            .collect();
        self.in_flight = events.len() as u64;
        let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
        Some(super::http::post(self.addr, "/v1/events/batch", "", &body))
    }

    fn answered(&mut self, _body: &[u8]) -> Result<(), String> {
        self.posted += self.in_flight;
        Ok(())
    }

    fn failed(&mut self, error: String) -> (String, Duration) {
        (
            format!("batch of {}: {error}", self.in_flight),
            Duration::ZERO,
        )
    }
}

/// One connection's part of an open loop: the request for a due slot and
/// what it makes of the answer.
pub trait Scheduled: Send + 'static {
    /// The request for the `index`th slot, due at `due`.
    fn request(&mut self, index: u64, due: Instant) -> Vec<u8>;

    /// Judges a 2xx answer; an `Err` counts the request as failed.
    fn answered(&mut self, _body: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// The open loop's schedule: slot `index` is due at the instant beside it.
/// Connections take the next due slot when they are free, so a slow answer
/// delays only its own connection, and a request's wait in the queue counts
/// toward its latency, as a real producer's would.
#[derive(Clone)]
struct Slots(Arc<Mutex<mpsc::Receiver<(u64, Instant)>>>);

/// A `Scheduled` on a connection of the open loop, timing each answer from
/// the moment its request was due rather than sent.
struct Paced<S> {
    scheduled: S,
    slots: Slots,
    /// When the request in flight was due.
    due: Instant,
    due_to_answer_us: Vec<u32>,
}

impl<S: Scheduled> Conversation for Paced<S> {
    async fn next_request(&mut self) -> Option<Vec<u8>> {
        let (index, due) = self.slots.0.lock().await.recv().await?;
        self.due = due;
        Some(self.scheduled.request(index, due))
    }

    fn answered(&mut self, body: &[u8]) -> Result<(), String> {
        self.scheduled.answered(body)?;
        self.due_to_answer_us.push(micros(self.due.elapsed()));
        Ok(())
    }
}

/// `total` requests at `rate` a second over `connections`, the `Scheduled`
/// of each made by `make`. The tally's latencies run from when each request
/// was due to its answer.
pub async fn open_loop<S: Scheduled>(
    addr: SocketAddr,
    connections: usize,
    rate: u64,
    total: u64,
    request_timeout: Duration,
    mut make: impl FnMut() -> S,
) -> Outcome<S> {
    let (due, queue) = mpsc::channel::<(u64, Instant)>(total.max(1) as usize);
    let slots = Slots(Arc::new(Mutex::new(queue)));
    let load = Load {
        connections,
        warmup: Duration::ZERO,
        limit: None,
        request_timeout,
    };
    let outcome = run(addr, &load, |_| Paced {
        scheduled: make(),
        slots: slots.clone(),
        due: Instant::now(),
        due_to_answer_us: Vec::new(),
    });
    let rate = rate.max(1) as f64;
    let schedule = async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        for i in 0..total {
            tick.tick().await;
            let at = started + Duration::from_secs_f64(i as f64 / rate);
            if due.send((i, at)).await.is_err() {
                break;
            }
        }
    };
    let (outcome, ()) = tokio::join!(outcome, schedule);
    let mut tally = outcome.tally;
    tally.latencies_us.clear();
    let mut conversations = Vec::with_capacity(outcome.conversations.len());
    for paced in outcome.conversations {
        tally.latencies_us.extend(paced.due_to_answer_us);
        conversations.push(paced.scheduled);
    }
    tally.latencies_us.sort_unstable();
    Outcome {
        tally,
        conversations,
        started: outcome.started,
        elapsed: outcome.elapsed,
    }
}
