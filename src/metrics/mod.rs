//! The series Herald exposes at `GET /metrics`, recorded where the work
//! happens (the writer, webhook attempts, mail workers) and written out in
//! the Prometheus text format by `api::metrics`, which adds what is read at
//! scrape time (HTTP requests by route, queue depth, stream health, file
//! size). Process-wide like the process they describe; labels are fixed
//! sets (outcomes, configured streams, route rows), never request data.

pub mod series;
pub mod text;

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

pub use series::{Counter, Histogram};

/// Latency buckets, 0.5 ms to 10 s, in microseconds.
const DURATION_BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

pub type DurationHistogram = Histogram<14>;

/// Observed in microseconds, exposed in seconds.
pub const fn duration_histogram() -> DurationHistogram {
    Histogram::new(DURATION_BOUNDS_US, 1e6)
}

/// The group commit: how many operations share one fsync, and what the
/// transaction and its fsync take.
pub struct WriterSeries {
    pub batch_size: Histogram<12>,
    pub commit_seconds: DurationHistogram,
    pub failed_commits: Counter,
}

pub static WRITER: WriterSeries = WriterSeries {
    batch_size: Histogram::new([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096], 1.0),
    commit_seconds: duration_histogram(),
    failed_commits: Counter::new(),
};

impl WriterSeries {
    pub fn committed(&self, operations: usize, took: Duration, ok: bool) {
        self.batch_size.observe(operations as u64);
        self.commit_seconds.observe_micros(took);
        if !ok {
            self.failed_commits.inc();
        }
    }
}

/// What a recorded webhook attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// A 2xx answer: the delivery succeeded.
    Success,
    /// No 2xx; another attempt is scheduled (or it was a manual attempt).
    Failure,
    /// No 2xx and no attempt left: the delivery is a dead letter.
    Dead,
}

impl DeliveryOutcome {
    pub const ALL: [DeliveryOutcome; 3] = [Self::Success, Self::Failure, Self::Dead];

    pub fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Dead => "dead",
        }
    }
}

pub struct WebhookSeries {
    attempts: [Counter; 3],
    pub attempt_seconds: DurationHistogram,
}

pub static WEBHOOKS: WebhookSeries = WebhookSeries {
    attempts: [const { Counter::new() }; 3],
    attempt_seconds: duration_histogram(),
};

impl WebhookSeries {
    pub fn attempted(&self, outcome: DeliveryOutcome, took: Duration) {
        self.attempts[outcome as usize].inc();
        self.attempt_seconds.observe_micros(took);
    }

    pub fn attempts(&self, outcome: DeliveryOutcome) -> u64 {
        self.attempts[outcome as usize].get()
    }
}

/// What the relay (or the outbox) answered a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendResult {
    /// 2xx: accepted.
    Sent,
    /// 4xx: try again later.
    Deferred,
    /// 5xx: refused.
    Rejected,
    /// No reply: unreachable, timed out, or a local failure.
    Error,
}

impl SendResult {
    pub const ALL: [SendResult; 4] = [Self::Sent, Self::Deferred, Self::Rejected, Self::Error];

    pub fn of_reply(code: u16) -> Self {
        match code {
            200..=299 => Self::Sent,
            400..=499 => Self::Deferred,
            500..=599 => Self::Rejected,
            _ => Self::Error,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Deferred => "deferred",
            Self::Rejected => "rejected",
            Self::Error => "error",
        }
    }
}

/// One configured mail stream's sends.
pub struct StreamSeries {
    pub name: String,
    pub send_seconds: DurationHistogram,
    results: [Counter; 4],
}

impl StreamSeries {
    pub fn sent(&self, result: SendResult, took: Duration) {
        self.results[result as usize].inc();
        self.send_seconds.observe_micros(took);
    }

    pub fn results(&self, result: SendResult) -> u64 {
        self.results[result as usize].get()
    }
}

static MAIL_STREAMS: OnceLock<Box<[StreamSeries]>> = OnceLock::new();

/// Makes the series of the configured streams, once, before mail starts:
/// streams are only ever those of the configuration, so the label set is
/// fixed for the process's life.
pub fn configure_streams<'a>(names: impl IntoIterator<Item = &'a String>) {
    let series = names
        .into_iter()
        .map(|name| StreamSeries {
            name: name.clone(),
            send_seconds: duration_histogram(),
            results: [const { Counter::new() }; 4],
        })
        .collect();
    let _ = MAIL_STREAMS.set(series);
}

pub fn mail_streams() -> &'static [StreamSeries] {
    MAIL_STREAMS.get().map_or(&[], |s| s)
}

/// The series of stream `name`; `None` for one not configured at start.
pub fn mail_stream(name: &str) -> Option<&'static StreamSeries> {
    mail_streams().iter().find(|s| s.name == name)
}

static STARTED_AT_MS: AtomicI64 = AtomicI64::new(0);

pub fn mark_started(now_ms: i64) {
    STARTED_AT_MS.store(now_ms, Relaxed);
}

/// When the daemon started (Unix ms); 0 before it did.
pub fn started_at_ms() -> i64 {
    STARTED_AT_MS.load(Relaxed)
}
