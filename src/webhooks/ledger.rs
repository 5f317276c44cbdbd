//! Webhook state changes inside the writer's transaction: recording an
//! attempt and what the policy decided, changing and deleting endpoints,
//! recovering and replaying deliveries. The HTTP handlers and the
//! dispatcher call these; nothing else rewrites webhook rows.

use serde_json::json;

use super::owner_alert::{self, OwnerAlerts};
use super::policy::{self, Notice, OwnerAlert, Policy, Report, Streak};
use crate::clock;
use crate::events::{self, ID_PREFIX as EVENT_ID_PREFIX};
use crate::ids;
use crate::store::records::{
    AttemptRecord, DeliveryRecord, DeliveryStatus, EndpointRecord, FailureSummary,
};
use crate::store::{StoreError, WriteTxn};

/// How much of a failed attempt's response an owner's alert quotes.
const ALERT_RESPONSE_CHARS: usize = 1000;

/// Why an endpoint disabled through the API is, unless it already says.
pub const DISABLED_BY_API: &str = "disabled through the API";

use super::endpoint::ID_PREFIX as ENDPOINT_ID_PREFIX;

pub const DELIVERY_ID_PREFIX: &str = "dlv_";

pub fn format_delivery_id(id: u64) -> String {
    ids::format_seq(DELIVERY_ID_PREFIX, id)
}

pub fn parse_delivery_id(text: &str) -> Option<u64> {
    ids::parse_seq(DELIVERY_ID_PREFIX, text)
}

/// Records `attempt` on delivery `delivery_id` and applies what the policy
/// decides: the next attempt, the endpoint's streak and state, Herald's own
/// events, and the owner's alert. Nothing happens if the delivery or its
/// endpoint is gone. Returns the delivery's status after the attempt, when
/// it was recorded.
pub fn record_attempt(
    txn: &mut WriteTxn<'_>,
    delivery_id: u64,
    attempt: AttemptRecord,
    report: &Report,
    policy: &Policy,
    alerts: Option<&OwnerAlerts>,
) -> Result<Option<DeliveryStatus>, StoreError> {
    let Some(mut delivery) = txn.delivery(delivery_id)? else {
        return Ok(None);
    };
    let Some(mut endpoint) = txn.endpoint(delivery.endpoint_id).cloned() else {
        return Ok(None);
    };
    let now = clock::now_ms();
    let stored_streak = txn.endpoint_streak(endpoint.id)?;
    let streak = Streak {
        failed_attempts: stored_streak.failed_attempts,
        announced: stored_streak.announced,
    };
    let decision = policy::decide(&delivery, &endpoint, streak, report, policy, now);
    let mut new_streak = stored_streak.clone();
    new_streak.failed_attempts = decision.streak.failed_attempts;
    new_streak.announced = decision.streak.announced;
    new_streak.last_failure = failure_summary(&attempt, report);
    let previous_due = delivery.next_attempt_ms;
    delivery.attempts.push(attempt);
    delivery.status = decision.status;
    delivery.next_attempt_ms = decision.next_attempt_ms;
    txn.put_delivery(delivery_id, &delivery, previous_due)?;

    let mut endpoint_changed = endpoint.failing_since_ms != decision.failing_since_ms;
    endpoint.failing_since_ms = decision.failing_since_ms;
    if let Some(reason) = decision.disable {
        endpoint.enabled = false;
        endpoint.disabled_reason = Some(reason.to_owned());
        endpoint_changed = true;
    }
    if endpoint_changed {
        endpoint.updated_at_ms = now;
        txn.put_endpoint(endpoint.clone())?;
    }
    if let (Some(alerts), Some(cause)) = (alerts, decision.alert) {
        owner_alert::alert(txn, alerts, &endpoint, &mut new_streak, cause, now)?;
    }
    if new_streak != stored_streak {
        txn.put_endpoint_streak(endpoint.id, &new_streak)?;
    }
    let status = decision.status;
    // Not sent to the endpoint the events are about: a failing endpoint
    // would otherwise feed itself news of its own failures.
    for event in notice_events(&decision, delivery_id, &delivery, &endpoint) {
        txn.append_system_event(event, now, Some(endpoint.id))?;
    }
    Ok(Some(status))
}

/// What the owner's alert says of `attempt`: nothing once it succeeded.
pub fn failure_summary(attempt: &AttemptRecord, report: &Report) -> Option<FailureSummary> {
    (!report.succeeded()).then(|| FailureSummary {
        at_ms: attempt.at_ms,
        status_code: attempt.status_code,
        error: attempt.error.clone(),
        response: attempt
            .response
            .chars()
            .take(ALERT_RESPONSE_CHARS)
            .collect(),
    })
}

/// Herald's own events that `decision` calls for, about `delivery` to
/// `endpoint`: what every backend records with the attempt.
pub fn notice_events(
    decision: &policy::Decision,
    delivery_id: u64,
    delivery: &DeliveryRecord,
    endpoint: &EndpointRecord,
) -> Vec<events::NewEvent> {
    let endpoint_id = endpoint.id;
    decision
        .notices
        .iter()
        .map(|notice| {
            let mut data = match notice {
                Notice::EndpointDisabled(reason) => json!({
                    "endpoint_id": ids::format(ENDPOINT_ID_PREFIX, endpoint_id),
                    "url": endpoint.url,
                    "reason": reason,
                }),
                _ => json!({
                    "delivery_id": format_delivery_id(delivery_id),
                    "endpoint_id": ids::format(ENDPOINT_ID_PREFIX, endpoint_id),
                    "event_id": ids::format(EVENT_ID_PREFIX, delivery.event_id),
                    "event_type": delivery.event_type,
                }),
            };
            if *notice == Notice::Failing {
                data["consecutive_failures"] = decision.streak.failed_attempts.into();
            }
            events::system_event(notice.event_type(), endpoint.tenant.as_deref(), data)
        })
        .collect()
}

/// Changes endpoint `id` with `change` (which may refuse, leaving it as it
/// was). `None` when there is no such endpoint.
pub fn update_endpoint<E>(
    txn: &mut WriteTxn<'_>,
    id: u128,
    change: impl FnOnce(EndpointRecord) -> Result<EndpointRecord, E>,
) -> Result<Option<Result<EndpointRecord, E>>, StoreError> {
    let Some(current) = txn.endpoint(id).cloned() else {
        return Ok(None);
    };
    match change(current) {
        Ok(mut updated) => {
            updated.updated_at_ms = clock::now_ms();
            txn.put_endpoint(updated.clone())?;
            Ok(Some(Ok(updated)))
        }
        Err(e) => Ok(Some(Err(e))),
    }
}

/// Enables or disables `endpoint` at `now_ms`: enabling clears why it was
/// disabled and its failing streak's start. True when an enabled endpoint
/// was disabled, news for its owner.
pub fn switch_enabled(endpoint: &mut EndpointRecord, enabled: bool, now_ms: i64) -> bool {
    let was_enabled = endpoint.enabled;
    endpoint.enabled = enabled;
    if enabled {
        endpoint.disabled_reason = None;
        endpoint.failing_since_ms = None;
    } else if endpoint.disabled_reason.is_none() {
        endpoint.disabled_reason = Some(DISABLED_BY_API.to_owned());
    }
    endpoint.updated_at_ms = now_ms;
    was_enabled && !enabled
}

/// Enables or disables endpoint `id`. Enabling clears why it was disabled
/// and its failing streak's start; disabling an enabled one alerts its
/// owner. `None` when there is no such endpoint.
pub fn set_enabled(
    txn: &mut WriteTxn<'_>,
    id: u128,
    enabled: bool,
    alerts: Option<&OwnerAlerts>,
) -> Result<Option<EndpointRecord>, StoreError> {
    let Some(mut endpoint) = txn.endpoint(id).cloned() else {
        return Ok(None);
    };
    let now = clock::now_ms();
    let newly_disabled = switch_enabled(&mut endpoint, enabled, now);
    txn.put_endpoint(endpoint.clone())?;
    if let (Some(alerts), true) = (alerts, newly_disabled) {
        let stored = txn.endpoint_streak(id)?;
        let mut streak = stored.clone();
        owner_alert::alert(
            txn,
            alerts,
            &endpoint,
            &mut streak,
            OwnerAlert::Disabled,
            now,
        )?;
        if streak != stored {
            txn.put_endpoint_streak(id, &streak)?;
        }
    }
    Ok(Some(endpoint))
}

/// Deletes the endpoint and ends its pending deliveries as failed; their
/// history stays readable. False when there was no such endpoint.
pub fn delete_endpoint(txn: &mut WriteTxn<'_>, id: u128) -> Result<bool, StoreError> {
    if !txn.remove_endpoint(id)? {
        return Ok(false);
    }
    for (delivery_id, mut record) in txn.endpoint_deliveries(id, DeliveryStatus::Pending)? {
        let due = record.next_attempt_ms.take();
        record.status = DeliveryStatus::Failed;
        txn.put_delivery(delivery_id, &record, due)?;
    }
    Ok(true)
}

/// Puts every failed delivery of the endpoint created since `since_ms`
/// (at most `limit` examined) back on the schedule, due now and with the
/// schedule afresh. A delivery of an event from a source the endpoint no
/// longer takes stays failed (a tracked call fanned out before endpoints
/// named their sources). `None` when there is no such endpoint.
pub fn recover(
    txn: &mut WriteTxn<'_>,
    endpoint_id: u128,
    since_ms: i64,
    limit: usize,
) -> Result<Option<RecoverCount>, StoreError> {
    let Some(sources) = txn.endpoint(endpoint_id).map(|e| e.sources.clone()) else {
        return Ok(None);
    };
    let now = clock::now_ms();
    let failed =
        txn.endpoint_deliveries_since(endpoint_id, since_ms, DeliveryStatus::Failed, limit)?;
    let mut count = RecoverCount {
        examined: failed.len(),
        requeued: 0,
    };
    for (delivery_id, mut record) in failed {
        let source = txn.event_at(record.event_seq)?.map(|e| e.source);
        if source.is_some_and(|s| !sources.contains(&s)) {
            continue;
        }
        count.requeued += 1;
        record.status = DeliveryStatus::Pending;
        record.next_attempt_ms = Some(now);
        record.schedule_from = record.attempts.len() as u32;
        txn.put_delivery(delivery_id, &record, None)?;
    }
    Ok(Some(count))
}

/// What a recover call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoverCount {
    /// Failed deliveries looked at; the limit means there may be more.
    pub examined: usize,
    /// Those put back on the schedule.
    pub requeued: usize,
}

/// A new delivery to the endpoint of each (seq, event id, type), due now.
pub fn replay(
    txn: &mut WriteTxn<'_>,
    endpoint_id: u128,
    events: Vec<(u64, u128, String)>,
) -> Result<usize, StoreError> {
    let now = clock::now_ms();
    let count = events.len();
    for (seq, event_id, event_type) in events {
        txn.create_delivery(endpoint_id, seq, event_id, &event_type, now)?;
    }
    Ok(count)
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
