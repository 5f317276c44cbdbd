//! `/v1/streams`: each mail stream's health (rolling bounce and complaint
//! rates, warm-up) and pausing or resuming it by hand.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::error::ApiError;
use super::http::{json, Resp};
use super::mail::MailApi;
use crate::clock;
use crate::mail::guard::{self, window_json};
use crate::mail::soft_bounces::day_of;
use crate::mail::warmup;
use crate::store::records::StreamStateRecord;
use crate::store::streams::Windows;

fn stream_not_found(name: &str) -> ApiError {
    let shown: String = name.chars().take(64).collect();
    ApiError::not_found(
        "stream_not_found",
        format!("no stream is configured as `{shown}`"),
    )
}

fn health_json(
    name: &str,
    ramp: &[u32],
    (state, windows, sent_today): (&StreamStateRecord, &Windows, u64),
    now_ms: i64,
) -> Value {
    let today = day_of(now_ms);
    let step = warmup::step_on(state, today);
    let warmup = warmup::cap(ramp, step).map(|cap| {
        json!({
            "step": step,
            "cap": cap,
            "sent_today": sent_today,
        })
    });
    json!({
        "stream": name,
        "paused": state.paused,
        "pause_reason": state.pause_reason,
        "paused_at": state.paused_at_ms.map(clock::format_rfc3339),
        "warning": state.warning,
        "window_24h": window_json(&windows.last_24h),
        "window_last_1000": window_json(&windows.last_1000),
        "warmup": warmup,
    })
}

/// The health of the configured streams `names`, read from one snapshot.
async fn healths(mail: &MailApi, names: Vec<String>) -> Result<Vec<Value>, ApiError> {
    let mut ramps = Vec::with_capacity(names.len());
    for name in &names {
        let stream = mail
            .settings
            .streams
            .get(name)
            .ok_or_else(|| stream_not_found(name))?;
        ramps.push(stream.warmup.clone());
    }
    let now_ms = clock::now_ms();
    let stored = mail.store.stream_healths(names, now_ms).await?;
    Ok(stored
        .iter()
        .zip(&ramps)
        .map(|((name, record, windows, sent_today), ramp)| {
            health_json(name, ramp, (record, windows, *sent_today), now_ms)
        })
        .collect())
}

pub async fn list(mail: &MailApi) -> Result<Resp, ApiError> {
    let names: Vec<String> = mail.settings.streams.keys().cloned().collect();
    let streams = healths(mail, names).await?;
    Ok(json(
        StatusCode::OK,
        json!({ "streams": streams }).to_string(),
    ))
}

pub async fn health(mail: &MailApi, name: &str) -> Result<Resp, ApiError> {
    Ok(json(
        StatusCode::OK,
        healths(mail, vec![name.to_owned()]).await?[0].to_string(),
    ))
}

/// Pauses or resumes `name`; answers its health after the change.
pub async fn set_paused(mail: &MailApi, name: &str, paused: bool) -> Result<Resp, ApiError> {
    if !mail.settings.streams.contains_key(name) {
        return Err(stream_not_found(name));
    }
    let owned = name.to_owned();
    mail.store
        .write(move |txn| guard::set_paused(txn, &owned, paused, clock::now_ms()))
        .await?;
    if !paused {
        if let Some(queued) = &mail.queued {
            queued.notify_waiters();
        }
    }
    health(mail, name).await
}
