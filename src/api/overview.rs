//! `GET /v1/admin/overview`: the series the dashboard's overview draws,
//! computed from one read snapshot with bounded reads (binary searches of
//! the log, per-minute attempt tallies, the schedule counted up to a cap),
//! plus a short history of the file's size and the queues' depth sampled
//! while someone looks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use super::error::ApiError;
use super::http::{json, query_params, Resp};
use super::{read, AppState};
use crate::clock;
use crate::mail::guard::window_json;
use crate::store::attempt_tally::AttemptTally;
use crate::store::due::Bounded;
use crate::store::due::Queue;
use crate::store::records::EmailStatus;

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

/// What one queue of the schedule holds.
struct QueueSummary {
    depth: Bounded,
    /// The earliest due time of any job (Unix ms); `None` when empty.
    oldest_due_ms: Option<i64>,
}

fn queue_json(q: &QueueSummary, now_ms: i64) -> Value {
    json!({
        "depth": q.depth.count,
        "depth_capped": q.depth.capped,
        "oldest_due_at": q.oldest_due_ms.map(clock::format_rfc3339),
        // How late the most overdue job is; 0 when none is overdue.
        "oldest_due_lag_ms": q.oldest_due_ms.map(|due| (now_ms - due).max(0)),
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

struct Snapshot {
    log_positions: Vec<u64>,
    per_minute: BTreeMap<i64, AttemptTally>,
    webhooks: QueueSummary,
    mail: QueueSummary,
    streams: Vec<Value>,
    file_bytes: u64,
}

pub async fn overview(state: Arc<AppState>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    query_params(req.uri().query(), &[])?;
    let now_ms = clock::now_ms();
    // Whole minutes, the current one last (partly elapsed).
    let first_minute = now_ms.div_euclid(MINUTE_MS) - (MINUTES - 1);
    let boundaries: Vec<i64> = (0..=MINUTES)
        .map(|i| (first_minute + i) * MINUTE_MS)
        .collect();
    let streams: Vec<String> = state.config.mail.streams.keys().cloned().collect();
    let path = state.config.database_path();
    let snapshot = read(&state, move |txn| {
        let log_positions = txn.log_positions_at(&boundaries)?;
        let mut per_minute: BTreeMap<i64, AttemptTally> = BTreeMap::new();
        // The exact counts every status change keeps, so a backlog of
        // millions costs one row per endpoint.
        let mut pending = 0;
        for endpoint in txn.endpoints()? {
            for (minute, tally) in txn.endpoint_attempt_tallies(endpoint.id, first_minute)? {
                per_minute.entry(minute).or_default().merge(&tally);
            }
            pending += txn.endpoint_delivery_counts(endpoint.id)?.pending;
        }
        let mut stream_rows = Vec::with_capacity(streams.len());
        for name in streams {
            let state = txn.stream_state(&name)?;
            let windows = txn.stream_windows(&name, now_ms)?;
            let deferred = txn.stream_status_count(&name, EmailStatus::Deferred, COUNT_CAP)?;
            let queued = txn.stream_status_count(&name, EmailStatus::Queued, COUNT_CAP)?;
            stream_rows.push(json!({
                    "stream": name,
                    "paused": state.paused,
                    "warning": state.warning,
                    "window_24h": window_json(&windows.last_24h),
                    "window_last_1000": window_json(&windows.last_1000),
                    "queued": bounded_json(queued),
                    "deferred": bounded_json(deferred),
            }));
        }
        Ok(Snapshot {
            log_positions,
            per_minute,
            webhooks: QueueSummary {
                depth: Bounded {
                    count: pending,
                    capped: false,
                },
                // The count is exact from the per-endpoint counts: no need
                // to count the schedule's rows.
                oldest_due_ms: txn.due_summary(Queue::Webhooks, 0)?.earliest_due_ms,
            },
            mail: {
                let due = txn.due_summary(Queue::Mail, COUNT_CAP)?;
                QueueSummary {
                    depth: due.jobs,
                    oldest_due_ms: due.earliest_due_ms,
                }
            },
            streams: stream_rows,
            file_bytes: std::fs::metadata(&path)?.len(),
        })
    })
    .await?;

    let events_per_minute: Vec<Value> = snapshot
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
    let deliveries_per_minute: Vec<Value> = (first_minute..first_minute + MINUTES)
        .map(|minute| {
            let tally = snapshot
                .per_minute
                .get(&minute)
                .cloned()
                .unwrap_or_default();
            hour.merge(&tally);
            tally_json(minute * MINUTE_MS, &tally)
        })
        .collect();
    let guard = state.config.mail.guard;
    let thresholds = json!({
        "bounce_warn_rate": guard.bounce_warn_rate,
        "bounce_pause_rate": guard.bounce_pause_rate,
        "complaint_warn_rate": guard.complaint_warn_rate,
        "complaint_pause_rate": guard.complaint_pause_rate,
        "min_sends": guard.min_sends,
    });
    let history = state.history.record(Sample {
        at_ms: now_ms,
        file_bytes: snapshot.file_bytes,
        webhooks_depth: snapshot.webhooks.depth.count,
        mail_depth: snapshot.mail.depth.count,
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
    Ok(json(
        StatusCode::OK,
        json!({
            "now": clock::format_rfc3339(now_ms),
            "events_per_minute": events_per_minute,
            "deliveries": {
                "per_minute": deliveries_per_minute,
                "last_hour": tally_json(first_minute * MINUTE_MS, &hour),
            },
            "queues": {
                "webhooks": queue_json(&snapshot.webhooks, now_ms),
                "mail": queue_json(&snapshot.mail, now_ms),
            },
            "streams": snapshot.streams,
            "stream_thresholds": thresholds,
            "file_bytes": snapshot.file_bytes,
            "history": history,
        })
        .to_string(),
    ))
}
