//! Mail state changes inside the writer's transaction: queueing a request
//! (with its suppression check), applying an attempt's outcome, and
//! suppressing or releasing addresses. Each change appends its `email.*`
//! event in the same transaction.

use serde_json::json;

use super::classify::enhanced_code;
use super::guard;
use super::policy::{self, AttemptReport, Event, MailRetry, SoftBounceChange};
use super::request::EmailRequest;
use super::settings::GuardSettings;
use super::soft_bounces::{self, day_of};
use crate::clock;
use crate::events::system_event;
use crate::ids;
use crate::store::mail::ALL_STREAMS;
use crate::store::mail_txn::MailTxn;
use crate::store::records::{
    EmailRecord, EmailStatus, MailAttemptRecord, SuppressionReason, SuppressionRecord,
};
use crate::store::streams::SendOutcome;
use crate::store::StoreError;

pub const ID_PREFIX: &str = "msg_";

pub fn format_email_id(id: u64) -> String {
    ids::format_seq(ID_PREFIX, id)
}

pub fn parse_email_id(text: &str) -> Option<u64> {
    ids::parse_seq(ID_PREFIX, text)
}

/// The stream column shown to users: `None` for an entry covering all.
pub fn stream_label(stream: &str) -> Option<&str> {
    (stream != ALL_STREAMS).then_some(stream)
}

/// Appends an `email.*` event of `tenant`: only that tenant's endpoints
/// (and those bound to none) receive it.
fn append(
    txn: &mut dyn MailTxn,
    event_type: &str,
    tenant: Option<&str>,
    data: serde_json::Value,
    now_ms: i64,
) -> Result<(), StoreError> {
    txn.append_system_event(system_event(event_type, tenant, data), now_ms, None)?;
    Ok(())
}

#[derive(Debug)]
pub enum Queued {
    /// New messages, (id, recipient) in request order.
    Created(Vec<(u64, String)>),
    /// The idempotency key named an earlier identical request.
    Replayed(Vec<(u64, String)>),
    KeyConflict,
    Suppressed {
        address: String,
        reason: SuppressionReason,
        stream: Option<String>,
    },
}

/// Queues one message per recipient, due now; refuses the whole request if
/// any recipient is suppressed for its stream, on the global list or on
/// the request's tenant's.
pub fn queue(
    txn: &mut dyn MailTxn,
    request: &EmailRequest,
    now_ms: i64,
) -> Result<Queued, StoreError> {
    let tenant = request.tenant.as_deref();
    if let Some(key) = &request.idempotency_key {
        if let Some((first, count, fingerprint)) = txn.email_key(tenant, key)? {
            if fingerprint != request.fingerprint {
                return Ok(Queued::KeyConflict);
            }
            let mut messages = Vec::with_capacity(count as usize);
            for id in first..first + u64::from(count) {
                if let Some(record) = txn.email(id)? {
                    messages.push((id, record.to));
                }
            }
            return Ok(Queued::Replayed(messages));
        }
    }
    for address in &request.to {
        if let Some(entry) = txn.suppression_for(tenant, address, &request.stream)? {
            return Ok(Queued::Suppressed {
                address: address.clone(),
                reason: entry.record.reason,
                stream: (!entry.all_streams).then(|| request.stream.clone()),
            });
        }
    }
    let first = txn.next_email_id()?;
    let mut messages = Vec::with_capacity(request.to.len());
    for (offset, to) in request.to.iter().enumerate() {
        let id = first + offset as u64;
        let record = EmailRecord {
            stream: request.stream.clone(),
            tenant: request.tenant.clone(),
            from: request.from.display(),
            to: to.clone(),
            reply_to: request.reply_to.as_ref().map(|m| m.display()),
            subject: request.subject.clone(),
            text: request.text.clone(),
            html: request.html.clone(),
            headers: request.headers.clone(),
            tags: request.tags.clone(),
            message_id: format!(
                "<{id:x}.{:016x}@{}>",
                ids::new_id() as u64,
                request.from.domain()
            ),
            created_at_ms: now_ms,
            status: EmailStatus::Queued,
            attempts: Vec::new(),
            next_attempt_ms: Some(now_ms),
            smtp_response: None,
            flagged: false,
        };
        txn.put_email(id, &record, None, true)?;
        let tags: serde_json::Map<String, serde_json::Value> = record
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        append(
            txn,
            "email.queued",
            tenant,
            json!({"message_id": format_email_id(id), "stream": record.stream, "to": to,
                   "from": record.from, "subject": record.subject, "tags": tags}),
            now_ms,
        )?;
        messages.push((id, to.clone()));
    }
    if let Some(key) = &request.idempotency_key {
        txn.put_email_key(
            tenant,
            key,
            first,
            messages.len() as u32,
            request.fingerprint,
        )?;
    }
    Ok(Queued::Created(messages))
}

/// Where a suppression entry goes, and whose `email.suppressed` event
/// tells of it.
#[derive(Debug, Clone, Copy)]
pub struct SuppressionScope<'a> {
    /// The list: a tenant's, or `None`, the global one every send checks.
    pub list: Option<&'a str>,
    /// The tenant the event belongs to: the list's, or, for a global entry
    /// caused by a message, that message's tenant, whose id the event names.
    pub event_tenant: Option<&'a str>,
}

impl SuppressionScope<'_> {
    pub const GLOBAL: SuppressionScope<'static> = SuppressionScope {
        list: None,
        event_tenant: None,
    };

    /// A tenant's own list (`None`: the global one), told to that tenant.
    pub fn list(list: Option<&str>) -> SuppressionScope<'_> {
        SuppressionScope {
            list,
            event_tenant: list,
        }
    }
}

/// Adds a suppression entry and its `email.suppressed` event; false when
/// the same entry existed already.
pub fn suppress(
    txn: &mut dyn MailTxn,
    scope: SuppressionScope<'_>,
    address: &str,
    stream: &str,
    reason: SuppressionReason,
    email_id: Option<u64>,
    now_ms: i64,
) -> Result<bool, StoreError> {
    suppress_with_detail(
        txn,
        scope,
        address,
        stream,
        (reason, String::new()),
        email_id,
        now_ms,
    )
}

/// As `suppress`, keeping where the reason came from (an ESP's own words).
pub fn suppress_with_detail(
    txn: &mut dyn MailTxn,
    scope: SuppressionScope<'_>,
    address: &str,
    stream: &str,
    (reason, detail): (SuppressionReason, String),
    email_id: Option<u64>,
    now_ms: i64,
) -> Result<bool, StoreError> {
    if let Some(existing) = txn.stored_suppression(scope.list, address, stream)? {
        if existing.reason == reason {
            return Ok(false);
        }
    }
    let mut data = json!({"address": address, "stream": stream_label(stream),
                          "reason": reason.as_str(), "tenant": scope.list,
                          "message_id": email_id.map(format_email_id)});
    if !detail.is_empty() {
        data["detail"] = detail.clone().into();
    }
    let record = SuppressionRecord {
        reason,
        created_at_ms: now_ms,
        email_id,
        detail,
    };
    txn.put_suppression(scope.list, address, stream, &record)?;
    append(txn, "email.suppressed", scope.event_tenant, data, now_ms)?;
    Ok(true)
}

/// One-click unsubscribe onto `tenant`'s list (`None`: the global one),
/// told to that tenant: idempotent, and only the first records events.
pub fn unsubscribe(
    txn: &mut dyn MailTxn,
    tenant: Option<&str>,
    address: &str,
    stream: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let added = suppress(
        txn,
        SuppressionScope::list(tenant),
        address,
        stream,
        SuppressionReason::Unsubscribe,
        None,
        now_ms,
    )?;
    if added {
        append(
            txn,
            "email.unsubscribed",
            tenant,
            json!({"address": address, "stream": stream}),
            now_ms,
        )?;
    }
    Ok(added)
}

/// Records an attempt on message `id` and moves it on as the policy
/// decides: sent, retried, failed or bounced, with suppressions and events.
pub fn record_attempt(
    txn: &mut dyn MailTxn,
    id: u64,
    report: AttemptReport,
    retry: &MailRetry,
    guard: &GuardSettings,
) -> Result<(), StoreError> {
    let Some(mut record) = txn.email(id)? else {
        return Ok(());
    };
    if !matches!(record.status, EmailStatus::Queued | EmailStatus::Deferred) {
        // Another attempt already settled it (a duplicate after a restart).
        return Ok(());
    }
    let now_ms = clock::now_ms();
    let to = record.to.clone();
    let today = day_of(now_ms);
    let bounce_days = txn.soft_bounce_days(&to)?;
    let with_this =
        soft_bounces::with_bounce(&bounce_days, today, today, retry.soft_bounce_window_days);
    let decision = policy::decide(
        policy::Message {
            // Time held in the queue (a paused stream, a warm-up cap) is not
            // time spent failing.
            first_attempt_ms: record.attempts.first().map_or(report.at_ms, |a| a.at_ms),
            attempts_before: record.attempts.len() as u32,
            soft_bounce_days_with_this: with_this.days.len() as u32,
        },
        &report,
        retry,
        now_ms,
    );
    let previous_due = record.next_attempt_ms;
    let text: String = report.text.chars().take(1000).collect();
    record.attempts.push(MailAttemptRecord {
        at_ms: report.at_ms,
        code: report.code,
        text: text.clone(),
        latency_ms: report.latency_ms,
    });
    record.status = decision.status;
    record.next_attempt_ms = decision.next_attempt_ms;
    record.flagged |= decision.flagged;
    if decision.flagged {
        tracing::warn!(email = %format_email_id(id), code = report.code, reply = %text,
                       "the relay refused our mail for a sender-side reason; check the stream's domain, DKIM and relay account");
    }
    // The final reply is kept whatever it was; a deferral keeps the last one.
    record.smtp_response = Some(format!("{} {}", report.code, text));
    match decision.soft_bounce {
        SoftBounceChange::Unchanged => {}
        SoftBounceChange::Add => txn.put_soft_bounce_days(&to, &with_this)?,
        SoftBounceChange::Reset if !bounce_days.days.is_empty() => {
            txn.put_soft_bounce_days(&to, &Default::default())?
        }
        SoftBounceChange::Reset => {}
    }
    match decision.event {
        Event::Sent => {
            if let Some(provider_id) = &report.provider_id {
                txn.put_provider_message_id(provider_id, id)?;
            }
            guard::count(
                txn,
                &record.stream,
                Some(id),
                SendOutcome::Sent,
                guard,
                now_ms,
            )?;
        }
        Event::Bounced => {
            guard::count(
                txn,
                &record.stream,
                Some(id),
                SendOutcome::HardBounce,
                guard,
                now_ms,
            )?;
        }
        Event::Deferred | Event::Failed(_) => {}
    }
    let enhanced = enhanced_code(&text).map(|c| c.to_string());
    let mut data = json!({"message_id": format_email_id(id), "stream": record.stream, "to": to,
                          "code": report.code, "enhanced": enhanced, "response": text,
                          "attempt": record.attempts.len(), "source": "smtp"});
    let event_type = match decision.event {
        Event::Sent => "email.sent",
        Event::Bounced => "email.bounced",
        Event::Deferred => {
            if let Some(next) = decision.next_attempt_ms {
                data["next_attempt_at"] = clock::format_rfc3339(next).into();
            }
            "email.deferred"
        }
        Event::Failed(reason) => {
            data["reason"] = reason.into();
            if reason == "sender_refused" || reason == "rejected" {
                data["flagged"] = decision.flagged.into();
            }
            "email.failed"
        }
    };
    let tenant = record.tenant.as_deref();
    append(txn, event_type, tenant, data, now_ms)?;
    if let Some(reason) = decision.suppress {
        // What a mailbox answered holds for every sender: the global list.
        let scope = SuppressionScope {
            list: None,
            event_tenant: tenant,
        };
        suppress(txn, scope, &to, ALL_STREAMS, reason, Some(id), now_ms)?;
    }
    txn.put_email(id, &record, previous_due, false)
}

/// A message whose recipient was suppressed after it was queued: it fails
/// without being sent.
pub fn cancel_suppressed(
    txn: &mut dyn MailTxn,
    id: u64,
    reason: SuppressionReason,
) -> Result<(), StoreError> {
    let Some(mut record) = txn.email(id)? else {
        return Ok(());
    };
    if !matches!(record.status, EmailStatus::Queued | EmailStatus::Deferred) {
        return Ok(());
    }
    let now_ms = clock::now_ms();
    let previous_due = record.next_attempt_ms.take();
    record.status = EmailStatus::Failed;
    append(
        txn,
        "email.failed",
        record.tenant.as_deref(),
        json!({"message_id": format_email_id(id), "stream": record.stream, "to": record.to,
               "reason": "suppressed", "suppression": reason.as_str()}),
        now_ms,
    )?;
    txn.put_email(id, &record, previous_due, false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_round_trip() {
        assert_eq!(format_email_id(42), "msg_000000000000002a");
        assert_eq!(parse_email_id("msg_000000000000002a"), Some(42));
        assert_eq!(parse_email_id("msg_2a"), None);
        assert_eq!(parse_email_id("msg_0000000000000000"), None);
        assert_eq!(parse_email_id("evt_000000000000002a"), None);
    }
}
