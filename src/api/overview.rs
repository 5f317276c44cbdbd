//! `GET /v1/admin/overview`: the series the dashboard's overview draws,
//! computed from one read snapshot with bounded reads (searches of the log
//! by time, per-minute attempt tallies, the queues counted up to a cap),
//! plus a short history of the file's (or database's) size and the queues'
//! depth sampled while someone looks. Each backend reads the same figures
//! (`store::overview`, `pg::overview`); one function answers them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use super::error::ApiError;
use super::http::{json, query_params, Resp};
use super::{read, AppState};
use crate::clock;
use crate::config::Config;
use crate::mail::guard::window_json;
use crate::store::attempt_tally::AttemptTally;
use crate::store::due::{Bounded, DueSummary};
use crate::store::overview::{OverviewReading, OverviewRequest, StreamNow};

const MINUTE_MS: i64 = 60_000;
/// The charts cover the last hour, a point a minute.
const MINUTES: i64 = 60;
/// Counting a queue or a stream's deferred mail stops here: past it the
/// exact figure matters less than the answer's time.
const COUNT_CAP: u64 = 100_000;
/// Samples of the file's size and the queues' depth: at most one per
/// `SAMPLE_EVERY_MS`, the last `MAX_SAMPLES` kept (12 hours at one a
/// minute, less when sampled faster).
const SAMPLE_EVERY_MS: i64 = 30_000;
const MAX_SAMPLES: usize = 720;

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at_ms: i64,
    file_bytes: u64,
    webhooks_depth: u64,
    mail_depth: u64,
}

/// What the overview and storage pages have seen of the file and the
/// queues, kept in memory: the file itself records no history of its size.
#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    fn record(&self, sample: Sample) -> Vec<Sample> {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples
            .back()
            .is_none_or(|last| sample.at_ms - last.at_ms >= SAMPLE_EVERY_MS)
        {
            if samples.len() == MAX_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(sample);
        }
        samples.iter().copied().collect()
    }
}

fn bounded_json(b: Bounded) -> Value {
    json!({ "count": b.count, "capped": b.capped })
}

fn queue_json(q: &DueSummary, now_ms: i64) -> Value {
    json!({
        "depth": q.jobs.count,
        "depth_capped": q.jobs.capped,
        "oldest_due_at": q.earliest_due_ms.map(clock::format_rfc3339),
        // How late the most overdue job is; 0 when none is overdue.
        "oldest_due_lag_ms": q.earliest_due_ms.map(|due| (now_ms - due).max(0)),
    })
}

fn tally_json(at_ms: i64, t: &AttemptTally) -> Value {
    json!({
        "at": clock::format_rfc3339(at_ms),
        "attempts": t.attempts,
        "succeeded": t.succeeded,
        "failed": t.failed,
        "network_errors": t.network_errors,
        "success_rate": (t.attempts > 0).then(|| t.succeeded as f64 / t.attempts as f64),
        "latency_ms": {
            "p50": t.latency_quantile(0.50),
            "p95": t.latency_quantile(0.95),
            "p99": t.latency_quantile(0.99),
        },
    })
}

fn stream_json(stream: &StreamNow) -> Value {
    json!({
        "stream": stream.name,
        "paused": stream.state.paused,
        "warning": stream.state.warning,
        "window_24h": window_json(&stream.windows.last_24h),
        "window_last_1000": window_json(&stream.windows.last_1000),
        "queued": bounded_json(stream.queued),
        "deferred": bounded_json(stream.deferred),
    })
}

/// The hour the overview covers, in whole minutes, the current one last
/// (partly elapsed).
fn asked(config: &Config, now_ms: i64) -> OverviewRequest {
    OverviewRequest {
        first_minute: now_ms.div_euclid(MINUTE_MS) - (MINUTES - 1),
        minutes: MINUTES,
        streams: config.mail.streams.keys().cloned().collect(),
        now_ms,
        count_cap: COUNT_CAP,
    }
}

/// `GET /v1/admin/overview` on redb: one read snapshot of the file.
pub async fn overview(state: Arc<AppState>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    query_params(req.uri().query(), &[])?;
    let asked = asked(&state.config, clock::now_ms());
    let path = state.config.database_path();
    let reading_asked = asked.clone();
    let (reading, file_bytes) = read(&state, move |txn| {
        let reading = txn.overview(&reading_asked)?;
        // Read after the tables, so the size covers at least what they hold.
        Ok((reading, std::fs::metadata(&path)?.len()))
    })
    .await?;
    Ok(answer(
        &state.config,
        &state.history,
        &asked,
        &reading,
        file_bytes,
    ))
}

/// `GET /v1/admin/overview` on PostgreSQL: one read-only snapshot of the
/// shared database; `file_bytes` is the database's size, as
/// `/v1/admin/storage` reports it there.
pub async fn overview_postgres(
    pool: &deadpool_postgres::Pool,
    config: &Config,
    history: &History,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    query_params(req.uri().query(), &[])?;
    let asked = asked(config, clock::now_ms());
    let (reading, database_bytes) = crate::pg::overview::read(pool, &asked).await.map_err(|e| {
        tracing::error!(error = %e, "query failed");
        ApiError::unavailable("the query failed; see the server log")
    })?;
    Ok(answer(config, history, &asked, &reading, database_bytes))
}

/// The answer to what either backend read, with the sample it makes added
/// to this node's `history`.
fn answer(
    config: &Config,
    history: &History,
    asked: &OverviewRequest,
    reading: &OverviewReading,
    file_bytes: u64,
) -> Resp {
    let now_ms = asked.now_ms;
    let first_minute = asked.first_minute;
    let events_per_minute: Vec<Value> = reading
        .log_positions
        .windows(2)
        .zip(0..)
        .map(|(pair, i)| {
            json!({
                "at": clock::format_rfc3339((first_minute + i) * MINUTE_MS),
                "count": pair[1].saturating_sub(pair[0]),
            })
        })
        .collect();
    let mut hour = AttemptTally::default();
    let deliveries_per_minute: Vec<Value> = (first_minute..first_minute + asked.minutes)
        .map(|minute| {
            let tally = reading.per_minute.get(&minute).cloned().unwrap_or_default();
            hour.merge(&tally);
            tally_json(minute * MINUTE_MS, &tally)
        })
        .collect();
    let guard = config.mail.guard;
    let thresholds = json!({
        "bounce_warn_rate": guard.bounce_warn_rate,
        "bounce_pause_rate": guard.bounce_pause_rate,
        "complaint_warn_rate": guard.complaint_warn_rate,
        "complaint_pause_rate": guard.complaint_pause_rate,
        "min_sends": guard.min_sends,
    });
    let history = history.record(Sample {
        at_ms: now_ms,
        file_bytes,
        webhooks_depth: reading.webhooks.jobs.count,
        mail_depth: reading.mail.jobs.count,
    });
    let history: Vec<Value> = history
        .iter()
        .map(|s| {
            json!({
                "at": clock::format_rfc3339(s.at_ms),
                "file_bytes": s.file_bytes,
                "webhooks_depth": s.webhooks_depth,
                "mail_depth": s.mail_depth,
            })
        })
        .collect();
    let streams: Vec<Value> = reading.streams.iter().map(stream_json).collect();
    json(
        StatusCode::OK,
        json!({
            "now": clock::format_rfc3339(now_ms),
            "events_per_minute": events_per_minute,
            "deliveries": {
                "per_minute": deliveries_per_minute,
                "last_hour": tally_json(first_minute * MINUTE_MS, &hour),
            },
            "queues": {
                "webhooks": queue_json(&reading.webhooks, now_ms),
                "mail": queue_json(&reading.mail, now_ms),
            },
            "streams": streams,
            "stream_thresholds": thresholds,
            "file_bytes": file_bytes,
            "history": history,
        })
        .to_string(),
    )
}
