//! One delivery attempt: load the delivery, sign and send its payload, and
//! record the outcome (and what follows from it) through the writer.

use std::time::Duration;

use serde_json::json;

use crate::clock;
use crate::config::webhooks::WebhookSettings;
use crate::events::{self, ID_PREFIX as EVENT_ID_PREFIX};
use crate::ids;
use crate::store::codec::{AttemptRecord, DeliveryRecord, DeliveryStatus, EndpointRecord};
use crate::store::webhooks::record_attempt;
use crate::store::{Store, StoreError, WriteTxn, Writer};

use super::endpoint::{signing_secrets, ID_PREFIX as ENDPOINT_ID_PREFIX};
use super::outbound::{self, Client, Outcome};
use super::{payload, signing};
use crate::retry::{self, FailureKind, RetryPolicy};

pub const DELIVERY_ID_PREFIX: &str = "dlv_";
/// After this many failed attempts of one delivery, `delivery.failing`.
const FAILING_AFTER: usize = 4;

pub struct AttemptContext {
    pub store: Store,
    pub writer: Writer,
    pub client: Client,
    pub settings: WebhookSettings,
    pub retry: RetryPolicy,
}

impl AttemptContext {
    pub fn new(store: Store, writer: Writer, settings: &WebhookSettings) -> Self {
        AttemptContext {
            client: Client::new(super::ssrf::Policy {
                allow: settings.allow_networks.clone(),
            }),
            retry: RetryPolicy::new(settings.retry_schedule.clone(), settings.min_throttle_delay),
            store,
            writer,
            settings: settings.clone(),
        }
    }
}

/// How an attempt went, for the endpoint's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Succeeded,
    Failed,
    /// Nothing was sent: the delivery was no longer pending.
    Skipped,
}

pub fn format_delivery_id(id: u64) -> String {
    format!("{DELIVERY_ID_PREFIX}{id:016x}")
}

pub fn parse_delivery_id(text: &str) -> Option<u64> {
    let hex = text.strip_prefix(DELIVERY_ID_PREFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().filter(|id| *id > 0)
}

/// The attempt the schedule asked for.
pub async fn run_scheduled(ctx: &AttemptContext, delivery_id: u64) -> Finished {
    match attempt(ctx, delivery_id, false).await {
        Ok(Some(outcome)) => finished(&outcome),
        Ok(None) => Finished::Skipped,
        Err(e) => {
            // Not recorded: the schedule row stays, so it is tried again
            // after a restart.
            tracing::error!(error = %e, delivery = delivery_id, "webhook attempt could not be recorded");
            Finished::Skipped
        }
    }
}

/// A manual attempt (`POST /v1/deliveries/{id}/retry`): made now, whatever
/// the delivery's status; it does not advance the retry schedule.
pub async fn run_manual(ctx: &AttemptContext, delivery_id: u64) -> Result<Option<Outcome>, String> {
    attempt(ctx, delivery_id, true).await
}

fn finished(outcome: &Outcome) -> Finished {
    if (200..300).contains(&outcome.status) {
        Finished::Succeeded
    } else {
        Finished::Failed
    }
}

struct Loaded {
    delivery: DeliveryRecord,
    endpoint: EndpointRecord,
    body: String,
}

async fn load(
    ctx: &AttemptContext,
    delivery_id: u64,
    manual: bool,
) -> Result<Option<Loaded>, StoreError> {
    let store = ctx.store.clone();
    tokio::task::spawn_blocking(move || {
        let txn = store.read()?;
        let Some(delivery) = txn.delivery(delivery_id)? else {
            return Ok(None);
        };
        if !manual && delivery.status != DeliveryStatus::Pending {
            return Ok(None);
        }
        let Some(endpoint) = txn.endpoint(delivery.endpoint_id)? else {
            return Ok(None);
        };
        let Some((seq, event)) = txn.event_by_id(delivery.event_id)? else {
            return Ok(None);
        };
        Ok(Some(Loaded {
            body: payload::v1(seq, &event),
            delivery,
            endpoint,
        }))
    })
    .await
    .unwrap_or_else(|_| Ok(None))
}

/// The request headers of one attempt, signature included.
pub fn request_headers(
    endpoint: &EndpointRecord,
    msg_id: &str,
    body: &str,
    now_ms: i64,
) -> Vec<(String, String)> {
    let timestamp = now_ms.div_euclid(1000);
    let secrets = signing_secrets(endpoint, now_ms);
    let refs: Vec<&signing::Secret> = secrets.iter().collect();
    let signature = signing::signature_header(&refs, msg_id, timestamp, body.as_bytes());
    let mut headers = vec![
        ("webhook-id".to_owned(), msg_id.to_owned()),
        ("webhook-timestamp".to_owned(), timestamp.to_string()),
        ("webhook-signature".to_owned(), signature),
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            "user-agent".to_owned(),
            concat!("Herald/", env!("CARGO_PKG_VERSION")).to_owned(),
        ),
    ];
    headers.extend(endpoint.headers.iter().cloned());
    headers
}

/// Sends `body` to `endpoint` now and returns how it went.
pub async fn send(
    ctx: &AttemptContext,
    endpoint: &EndpointRecord,
    msg_id: &str,
    body: String,
) -> Outcome {
    let now_ms = clock::now_ms();
    let timeout = endpoint
        .timeout_secs
        .map_or(ctx.settings.timeout, |s| Duration::from_secs(u64::from(s)));
    let target = match outbound::parse_target(&endpoint.url, ctx.settings.require_https) {
        Ok(t) => t,
        Err(e) => return Outcome::refused(format!("endpoint URL refused: {e}")),
    };
    let headers = request_headers(endpoint, msg_id, &body, now_ms);
    ctx.client
        .send(outbound::Attempt {
            target: &target,
            headers,
            body: bytes::Bytes::from(body),
            timeout,
        })
        .await
}

async fn attempt(
    ctx: &AttemptContext,
    delivery_id: u64,
    manual: bool,
) -> Result<Option<Outcome>, String> {
    let Some(loaded) = load(ctx, delivery_id, manual)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let msg_id = ids::format(EVENT_ID_PREFIX, loaded.delivery.event_id);
    let started_ms = clock::now_ms();
    let outcome = send(ctx, &loaded.endpoint, &msg_id, loaded.body).await;
    let attempt = AttemptRecord {
        at_ms: started_ms,
        status_code: outcome.status,
        error: outcome.error.clone(),
        latency_ms: u32::try_from(outcome.latency.as_millis()).unwrap_or(u32::MAX),
        response: outcome.response_excerpt.clone(),
        manual,
    };
    let kind = if outcome.timed_out {
        FailureKind::Timeout
    } else if outcome.status == 429 {
        FailureKind::TooManyRequests
    } else {
        FailureKind::Other
    };
    let retry_after = outcome
        .retry_after
        .as_deref()
        .and_then(|v| retry::parse_retry_after(v, started_ms.div_euclid(1000)));
    let report = AttemptReport {
        attempt,
        kind,
        retry_after,
        gone: outcome.status == 410,
        random_unit: crate::ids::random_unit(),
    };
    let retry = ctx.retry.clone();
    let disable_after = ctx.settings.disable_after;
    let written = ctx
        .writer
        .write(move |txn| apply_outcome(txn, delivery_id, report, &retry, disable_after))
        .await;
    written
        .map(|()| Some(outcome))
        .map_err(|e| format!("the attempt's outcome was not written: {e}"))
}

struct AttemptReport {
    attempt: AttemptRecord,
    kind: FailureKind,
    retry_after: Option<Duration>,
    gone: bool,
    random_unit: f64,
}

/// Inside the writer: records the attempt, schedules what follows, updates
/// the endpoint's health and appends the operational events it causes.
fn apply_outcome(
    txn: &mut WriteTxn<'_>,
    delivery_id: u64,
    report: AttemptReport,
    retry: &RetryPolicy,
    disable_after: Duration,
) -> Result<(), StoreError> {
    let Some(mut delivery) = txn.delivery(delivery_id)? else {
        return Ok(());
    };
    let Some(mut endpoint) = txn.endpoint(delivery.endpoint_id).cloned() else {
        return Ok(());
    };
    let now = clock::now_ms();
    let succeeded = (200..300).contains(&report.attempt.status_code);
    let manual = report.attempt.manual;
    let was = delivery.status;
    let failed_before = delivery
        .attempts
        .iter()
        .filter(|a| !(200..300).contains(&a.status_code))
        .count();

    let next = if succeeded || report.gone {
        None
    } else if manual {
        // A manual attempt leaves the schedule as it was.
        delivery.next_attempt_ms
    } else {
        let counted = delivery
            .attempts
            .get(delivery.schedule_from as usize..)
            .unwrap_or_default();
        let scheduled_failures = counted.iter().filter(|a| !a.manual).count() as u32 + 1;
        retry
            .next_delay(
                scheduled_failures,
                report.kind,
                report.retry_after,
                report.random_unit,
            )
            .map(|d| now + d.as_millis() as i64)
    };
    let previous_due = record_attempt(&mut delivery, report.attempt, next, succeeded);
    if manual && !succeeded && was == DeliveryStatus::Failed {
        delivery.status = DeliveryStatus::Failed;
    }
    txn.put_delivery(delivery_id, &delivery, previous_due)?;

    let ids_json = json!({
        "delivery_id": format_delivery_id(delivery_id),
        "endpoint_id": ids::format(ENDPOINT_ID_PREFIX, endpoint.id),
        "event_id": ids::format(EVENT_ID_PREFIX, delivery.event_id),
        "event_type": delivery.event_type,
    });
    let mut endpoint_changed = false;
    let mut operational = Vec::new();
    if succeeded {
        if endpoint.failing_since_ms.is_some() {
            endpoint.failing_since_ms = None;
            endpoint_changed = true;
        }
        if failed_before >= FAILING_AFTER {
            operational.push(("delivery.recovered", ids_json.clone()));
        }
    } else {
        if endpoint.failing_since_ms.is_none() {
            endpoint.failing_since_ms = Some(now);
            endpoint_changed = true;
        }
        if failed_before + 1 == FAILING_AFTER {
            operational.push(("delivery.failing", ids_json.clone()));
        }
        let exhausted = delivery.status == DeliveryStatus::Failed && was == DeliveryStatus::Pending;
        if exhausted {
            operational.push(("delivery.exhausted", ids_json.clone()));
        }
        let failing_long = endpoint
            .failing_since_ms
            .is_some_and(|since| now - since >= disable_after.as_millis() as i64);
        let reason = if report.gone {
            Some("the endpoint answered 410 Gone")
        } else if exhausted && failing_long {
            Some("failing continuously and a delivery exhausted its retries")
        } else {
            None
        };
        if let (Some(reason), true) = (reason, endpoint.enabled) {
            endpoint.enabled = false;
            endpoint.disabled_reason = Some(reason.to_owned());
            endpoint_changed = true;
            operational.push((
                "endpoint.disabled",
                json!({
                    "endpoint_id": ids::format(ENDPOINT_ID_PREFIX, endpoint.id),
                    "url": endpoint.url,
                    "reason": reason,
                }),
            ));
        }
    }
    let tenant = endpoint.tenant.clone();
    let endpoint_id = endpoint.id;
    if endpoint_changed {
        endpoint.updated_at_ms = now;
        txn.put_endpoint(endpoint)?;
    }
    for (event_type, data) in operational {
        // Not sent to the endpoint the event is about: a failing endpoint
        // would otherwise feed itself news of its own failures.
        txn.append_system_event(
            events::system_event(event_type, tenant.as_deref(), data),
            now,
            Some(endpoint_id),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_round_trip_and_refuse_garbage() {
        assert_eq!(parse_delivery_id(&format_delivery_id(42)), Some(42));
        for bad in [
            "",
            "dlv_",
            "dlv_0000000000000000",
            "dlv_xyz",
            "evt_000000000000002a",
        ] {
            assert_eq!(parse_delivery_id(bad), None, "{bad}");
        }
    }
}
