//! `GET /metrics`: HTTP requests by route row and status, counted here as
//! each answer leaves, with the series the writer and the workers record
//! (`crate::metrics`) and what a read snapshot tells at scrape time:
//! backlog, stream health, file size.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};

use super::error::ApiError;
use super::http::{query_params, typed, Resp};
use super::postgres_state::PostgresApp;
use super::routes::ROUTES;
use super::{read, AppState};
use crate::clock;
use crate::metrics::text::{Exposition, Kind, CONTENT_TYPE};
use crate::metrics::{
    self, duration_histogram, DeliveryOutcome, DurationHistogram, SendResult, WEBHOOKS, WRITER,
};
use crate::pg::backlog::backlogs;
use crate::store::due::DueSummary;
use crate::store::streams::Windows;
use crate::store::Queue;

/// A scrape counts pending jobs up to this many: every counted job is a
/// step through the schedule, and a scrape comes every few seconds. A
/// backlog beyond it reads as this figure.
const PENDING_COUNT_CAP: u64 = 100_000;
/// The statuses Herald answers with; anything else counts as `other`.
const STATUSES: [u16; 20] = [
    200, 201, 202, 204, 303, 304, 400, 401, 403, 404, 405, 406, 408, 409, 413, 415, 422, 429, 500,
    503,
];
/// Methods of requests that match no row; anything else counts as `other`.
const METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// One row's (or one unmatched method's) requests, a histogram per status.
struct RequestSeries([DurationHistogram; STATUSES.len() + 1]);

/// Slots: every row of `ROUTES`, then unmatched requests by method.
static REQUESTS: LazyLock<Box<[RequestSeries]>> = LazyLock::new(|| {
    (0..ROUTES.len() + METHODS.len() + 1)
        .map(|_| RequestSeries(std::array::from_fn(|_| duration_histogram())))
        .collect()
});

/// Where a request's answer is counted.
#[derive(Debug, Clone, Copy)]
pub struct RequestSlot(usize);

impl RequestSlot {
    /// A request no row serves (404, 405).
    pub fn unmatched(method: &Method) -> Self {
        let at = METHODS
            .iter()
            .position(|m| m == method)
            .unwrap_or(METHODS.len());
        RequestSlot(ROUTES.len() + at)
    }

    /// The request row `index` of `ROUTES` serves.
    pub fn row(index: usize) -> Self {
        RequestSlot(index)
    }

    pub fn observe(self, status: StatusCode, took: Duration) {
        let at = STATUSES
            .iter()
            .position(|s| *s == status.as_u16())
            .unwrap_or(STATUSES.len());
        if let Some(series) = REQUESTS.get(self.0) {
            series.0[at].observe_micros(took);
        }
    }

    /// Its `method` and `route` labels.
    fn labels(self) -> (&'static str, &'static str) {
        match ROUTES.get(self.0) {
            Some(row) => (row.method.as_str(), row.path),
            None => (
                METHODS
                    .get(self.0 - ROUTES.len())
                    .map_or("other", Method::as_str),
                "unmatched",
            ),
        }
    }
}

fn status_label(at: usize) -> String {
    STATUSES
        .get(at)
        .map_or_else(|| "other".to_owned(), u16::to_string)
}

/// What scrape reads from the file.
struct Stored {
    webhooks: DueSummary,
    mail: DueSummary,
    /// Configured streams: (name, paused, windows).
    streams: Vec<(String, bool, Windows)>,
    file_bytes: u64,
}

pub async fn scrape(state: Arc<AppState>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    query_params(req.uri().query(), &[])?;
    let names: Vec<String> = state.config.mail.streams.keys().cloned().collect();
    let path = state.config.database_path();
    let now_ms = clock::now_ms();
    let stored = read(&state, move |txn| {
        let mut streams = Vec::with_capacity(names.len());
        for name in names {
            let paused = txn.stream_state(&name)?.paused;
            let windows = txn.stream_windows(&name, now_ms)?;
            streams.push((name, paused, windows));
        }
        Ok(Stored {
            webhooks: txn.due_summary(Queue::Webhooks, PENDING_COUNT_CAP)?,
            mail: txn.due_summary(Queue::Mail, PENDING_COUNT_CAP)?,
            streams,
            file_bytes: std::fs::metadata(&path)?.len(),
        })
    })
    .await?;
    Ok(typed(StatusCode::OK, CONTENT_TYPE, render(&stored, now_ms)))
}

/// The same scrape on a node on PostgreSQL: the queues are the cluster's,
/// the size is the database's, the counters this node's.
pub async fn scrape_postgres(app: &PostgresApp, req: Request<Incoming>) -> Result<Resp, ApiError> {
    query_params(req.uri().query(), &[])?;
    let now_ms = clock::now_ms();
    let failed = |e: crate::pg::PgError| {
        tracing::error!(error = %e, "query failed");
        ApiError::unavailable("the query failed; see the server log")
    };
    let (webhooks, mail, file_bytes) = backlogs(&app.pool, PENDING_COUNT_CAP)
        .await
        .map_err(failed)?;
    let names: Vec<String> = app.config.mail.streams.keys().cloned().collect();
    let streams = app
        .mail
        .store
        .stream_healths(names, now_ms)
        .await?
        .into_iter()
        .map(|(name, state, windows, _)| (name, state.paused, windows))
        .collect();
    let stored = Stored {
        webhooks,
        mail,
        streams,
        file_bytes,
    };
    Ok(typed(StatusCode::OK, CONTENT_TYPE, render(&stored, now_ms)))
}

fn render(stored: &Stored, now_ms: i64) -> String {
    let mut e = Exposition::default();
    http_requests(&mut e);

    e.family(
        "herald_writer_batch_size",
        "Operations committed together in one transaction and fsync.",
        Kind::Histogram,
    );
    e.histogram(
        "herald_writer_batch_size",
        &[],
        &WRITER.batch_size.snapshot(),
    );
    e.family(
        "herald_writer_commit_duration_seconds",
        "Time to apply a group of operations and commit it durably.",
        Kind::Histogram,
    );
    e.histogram(
        "herald_writer_commit_duration_seconds",
        &[],
        &WRITER.commit_seconds.snapshot(),
    );
    e.family(
        "herald_writer_failed_commits_total",
        "Group commits that failed: nothing in them was acknowledged.",
        Kind::Counter,
    );
    e.sample(
        "herald_writer_failed_commits_total",
        &[],
        WRITER.failed_commits.get() as f64,
    );

    backlog(
        &mut e,
        "webhook_deliveries",
        "webhook deliveries",
        stored.webhooks,
        now_ms,
    );
    backlog(
        &mut e,
        "mail_messages",
        "mail messages",
        stored.mail,
        now_ms,
    );

    e.family(
        "herald_webhook_attempts_total",
        "Recorded webhook attempts by outcome: success (2xx), failure (another attempt follows, or a manual one), dead (none follows).",
        Kind::Counter,
    );
    for outcome in DeliveryOutcome::ALL {
        e.sample(
            "herald_webhook_attempts_total",
            &[("outcome", outcome.label())],
            WEBHOOKS.attempts(outcome) as f64,
        );
    }
    e.family(
        "herald_webhook_attempt_duration_seconds",
        "Time from a webhook request's start to its answer or failure.",
        Kind::Histogram,
    );
    e.histogram(
        "herald_webhook_attempt_duration_seconds",
        &[],
        &WEBHOOKS.attempt_seconds.snapshot(),
    );

    mail_sends(&mut e);
    stream_health(&mut e, &stored.streams);

    e.family(
        "herald_database_file_bytes",
        "Size of the database file.",
        Kind::Gauge,
    );
    e.sample("herald_database_file_bytes", &[], stored.file_bytes as f64);
    e.family(
        "herald_start_time_seconds",
        "When the daemon started, in Unix seconds.",
        Kind::Gauge,
    );
    e.sample(
        "herald_start_time_seconds",
        &[],
        metrics::started_at_ms() as f64 / 1000.0,
    );
    e.finish()
}

/// Only rows and statuses that were seen: most pairs never are.
fn http_requests(e: &mut Exposition) {
    let seen: Vec<(RequestSlot, usize, u64)> = (0..REQUESTS.len())
        .flat_map(|slot| (0..=STATUSES.len()).map(move |at| (RequestSlot(slot), at)))
        .map(|(slot, at)| (slot, at, REQUESTS[slot.0].0[at].count()))
        .filter(|(_, _, count)| *count > 0)
        .collect();
    let labelled = |slot: RequestSlot, at: usize| {
        let (method, route) = slot.labels();
        (method, route, status_label(at))
    };
    e.family(
        "herald_http_requests_total",
        "Answered requests by route row (method and path template; `unmatched` for none) and status.",
        Kind::Counter,
    );
    for &(slot, at, count) in &seen {
        let (method, route, status) = labelled(slot, at);
        e.sample(
            "herald_http_requests_total",
            &[("method", method), ("route", route), ("status", &status)],
            count as f64,
        );
    }
    e.family(
        "herald_http_request_duration_seconds",
        "Time from a request's arrival to its answer's head (a streamed body may take longer).",
        Kind::Histogram,
    );
    for &(slot, at, _) in &seen {
        let (method, route, status) = labelled(slot, at);
        e.histogram(
            "herald_http_request_duration_seconds",
            &[("method", method), ("route", route), ("status", &status)],
            &REQUESTS[slot.0].0[at].snapshot(),
        );
    }
}

fn backlog(e: &mut Exposition, name: &str, what: &str, due: DueSummary, now_ms: i64) {
    let pending = format!("herald_{name}_pending");
    e.family(
        &pending,
        &format!("Scheduled {what} not yet done, due or not."),
        Kind::Gauge,
    );
    e.sample(&pending, &[], due.jobs.count as f64);
    let lag = format!("herald_{name}_oldest_due_lag_seconds");
    e.family(
        &lag,
        &format!(
            "How long the earliest due of the {what} has been waiting; 0 when none is overdue."
        ),
        Kind::Gauge,
    );
    let lag_ms = due.earliest_due_ms.map_or(0, |due| (now_ms - due).max(0));
    e.sample(&lag, &[], lag_ms as f64 / 1000.0);
}

fn mail_sends(e: &mut Exposition) {
    e.family(
        "herald_mail_sends_total",
        "Messages handed to a stream's relay (or outbox) by reply: sent (2xx), deferred (4xx), rejected (5xx), error (no reply).",
        Kind::Counter,
    );
    for stream in metrics::mail_streams() {
        for result in SendResult::ALL {
            e.sample(
                "herald_mail_sends_total",
                &[("stream", &stream.name), ("outcome", result.label())],
                stream.results(result) as f64,
            );
        }
    }
    e.family(
        "herald_mail_send_duration_seconds",
        "Time to compose, sign and relay one message, by stream.",
        Kind::Histogram,
    );
    for stream in metrics::mail_streams() {
        e.histogram(
            "herald_mail_send_duration_seconds",
            &[("stream", &stream.name)],
            &stream.send_seconds.snapshot(),
        );
    }
}

fn stream_health(e: &mut Exposition, streams: &[(String, bool, Windows)]) {
    type Rate = fn(&Windows) -> f64;
    let rates: [(&str, &str, Rate); 4] = [
        (
            "herald_mail_stream_bounce_rate_24h",
            "Hard bounces per message sent over the last 24 hours, as the guard judges it.",
            |w| w.last_24h.bounce_rate(),
        ),
        (
            "herald_mail_stream_complaint_rate_24h",
            "Complaints per message sent over the last 24 hours, as the guard judges it.",
            |w| w.last_24h.complaint_rate(),
        ),
        (
            "herald_mail_stream_bounce_rate_last_1000",
            "Hard bounces per message over the stream's last 1,000 sends.",
            |w| w.last_1000.bounce_rate(),
        ),
        (
            "herald_mail_stream_complaint_rate_last_1000",
            "Complaints per message over the stream's last 1,000 sends.",
            |w| w.last_1000.complaint_rate(),
        ),
    ];
    for (name, help, rate) in rates {
        e.family(name, help, Kind::Gauge);
        for (stream, _, windows) in streams {
            e.sample(name, &[("stream", stream)], rate(windows));
        }
    }
    e.family(
        "herald_mail_stream_paused",
        "1 while a stream is paused (by hand or by the guard).",
        Kind::Gauge,
    );
    for (stream, paused, _) in streams {
        e.sample(
            "herald_mail_stream_paused",
            &[("stream", stream)],
            f64::from(u8::from(*paused)),
        );
    }
}
