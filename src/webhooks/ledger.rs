//! Webhook state changes inside the writer's transaction: recording an
//! attempt and what the policy decided, changing and deleting endpoints,
//! recovering and replaying deliveries. The HTTP handlers and the
//! dispatcher call these; nothing else rewrites webhook rows.

use serde_json::json;

use super::policy::{self, Notice, Policy, Report};
use crate::clock;
use crate::events::{self, ID_PREFIX as EVENT_ID_PREFIX};
use crate::ids;
use crate::store::records::{AttemptRecord, DeliveryStatus, EndpointRecord};
use crate::store::{StoreError, WriteTxn};

use super::endpoint::ID_PREFIX as ENDPOINT_ID_PREFIX;

pub const DELIVERY_ID_PREFIX: &str = "dlv_";

pub fn format_delivery_id(id: u64) -> String {
    ids::format_seq(DELIVERY_ID_PREFIX, id)
}

pub fn parse_delivery_id(text: &str) -> Option<u64> {
    ids::parse_seq(DELIVERY_ID_PREFIX, text)
}

/// Records `attempt` on delivery `delivery_id` and applies what the policy
/// decides: the next attempt, the endpoint's streak and state, and Herald's
/// own events. Nothing happens if the delivery or its endpoint is gone.
/// Returns the delivery's status after the attempt, when it was recorded.
pub fn record_attempt(
    txn: &mut WriteTxn<'_>,
    delivery_id: u64,
    attempt: AttemptRecord,
    report: &Report,
    policy: &Policy,
) -> Result<Option<DeliveryStatus>, StoreError> {
    let Some(mut delivery) = txn.delivery(delivery_id)? else {
        return Ok(None);
    };
    let Some(mut endpoint) = txn.endpoint(delivery.endpoint_id).cloned() else {
        return Ok(None);
    };
    let now = clock::now_ms();
    let decision = policy::decide(&delivery, &endpoint, report, policy, now);
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
    let tenant = endpoint.tenant.clone();
    let endpoint_id = endpoint.id;
    let url = endpoint.url.clone();
    if endpoint_changed {
        endpoint.updated_at_ms = now;
        txn.put_endpoint(endpoint)?;
    }
    for notice in decision.notices {
        let data = match notice {
            Notice::EndpointDisabled(reason) => json!({
                "endpoint_id": ids::format(ENDPOINT_ID_PREFIX, endpoint_id),
                "url": url,
                "reason": reason,
            }),
            _ => json!({
                "delivery_id": format_delivery_id(delivery_id),
                "endpoint_id": ids::format(ENDPOINT_ID_PREFIX, endpoint_id),
                "event_id": ids::format(EVENT_ID_PREFIX, delivery.event_id),
                "event_type": delivery.event_type,
            }),
        };
        // Not sent to the endpoint the event is about: a failing endpoint
        // would otherwise feed itself news of its own failures.
        txn.append_system_event(
            events::system_event(notice.event_type(), tenant.as_deref(), data),
            now,
            Some(endpoint_id),
        )?;
    }
    Ok(Some(decision.status))
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
