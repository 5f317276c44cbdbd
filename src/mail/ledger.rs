//! Mail state changes inside the writer's transaction: queueing a request
//! (with its suppression check), applying an attempt's outcome, and
//! suppressing or releasing addresses. Each change appends its `email.*`
//! event in the same transaction.

use std::time::Duration;

use serde_json::json;

use super::classify::{enhanced_code, verdict, Verdict};
use super::request::EmailRequest;
use crate::clock;
use crate::events::system_event;
use crate::ids;
use crate::retry::{FailureKind, RetryPolicy};
use crate::store::codec::{
    EmailRecord, EmailStatus, MailAttemptRecord, SuppressionReason, SuppressionRecord,
};
use crate::store::mail::{DueEmail, ALL_STREAMS};
use crate::store::{StoreError, WriteTxn};

pub const ID_PREFIX: &str = "msg_";

pub fn format_email_id(id: u64) -> String {
    format!("{ID_PREFIX}{id:016x}")
}

pub fn parse_email_id(text: &str) -> Option<u64> {
    let hex = text.strip_prefix(ID_PREFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().filter(|id| *id > 0)
}

/// The stream column shown to users: `None` for an entry covering all.
pub fn stream_label(stream: &str) -> Option<&str> {
    (stream != ALL_STREAMS).then_some(stream)
}

fn append(
    txn: &mut WriteTxn<'_>,
    event_type: &str,
    data: serde_json::Value,
    now_ms: i64,
) -> Result<(), StoreError> {
    txn.append_system_event(system_event(event_type, None, data), now_ms, None)?;
    Ok(())
}

#[derive(Debug)]
pub enum Queued {
    /// New messages, (id, recipient) in request order.
    Created {
        messages: Vec<(u64, String)>,
        due: Vec<DueEmail>,
    },
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
/// any recipient is suppressed for its stream.
pub fn queue(
    txn: &mut WriteTxn<'_>,
    request: &EmailRequest,
    now_ms: i64,
) -> Result<Queued, StoreError> {
    if let Some(key) = &request.idempotency_key {
        if let Some((first, count, fingerprint)) = txn.email_key(key)? {
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
        if let Some(entry) = txn.suppression_for(address, &request.stream)? {
            let stream = txn
                .stored_suppression(address, ALL_STREAMS)?
                .is_none()
                .then(|| request.stream.clone());
            return Ok(Queued::Suppressed {
                address: address.clone(),
                reason: entry.reason,
                stream,
            });
        }
    }
    let first = txn.next_email_id()?;
    let mut messages = Vec::with_capacity(request.to.len());
    let mut due = Vec::with_capacity(request.to.len());
    for (offset, to) in request.to.iter().enumerate() {
        let id = first + offset as u64;
        let record = EmailRecord {
            stream: request.stream.clone(),
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
        due.extend(txn.put_email(id, &record, None, true)?);
        let tags: serde_json::Map<String, serde_json::Value> = record
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        append(
            txn,
            "email.queued",
            json!({"message_id": format_email_id(id), "stream": record.stream, "to": to,
                   "from": record.from, "subject": record.subject, "tags": tags}),
            now_ms,
        )?;
        messages.push((id, to.clone()));
    }
    if let Some(key) = &request.idempotency_key {
        txn.put_email_key(key, first, messages.len() as u32, request.fingerprint)?;
    }
    Ok(Queued::Created { messages, due })
}

/// Adds a suppression entry and its `email.suppressed` event; false when
/// the same entry existed already.
pub fn suppress(
    txn: &mut WriteTxn<'_>,
    address: &str,
    stream: &str,
    reason: SuppressionReason,
    email_id: Option<u64>,
    now_ms: i64,
) -> Result<bool, StoreError> {
    if let Some(existing) = txn.stored_suppression(address, stream)? {
        if existing.reason == reason {
            return Ok(false);
        }
    }
    let record = SuppressionRecord {
        reason,
        created_at_ms: now_ms,
        email_id,
    };
    txn.put_suppression(address, stream, &record)?;
    append(
        txn,
        "email.suppressed",
        json!({"address": address, "stream": stream_label(stream), "reason": reason.as_str(),
               "message_id": email_id.map(format_email_id)}),
        now_ms,
    )?;
    Ok(true)
}

/// One-click unsubscribe: idempotent, and only the first records events.
pub fn unsubscribe(
    txn: &mut WriteTxn<'_>,
    address: &str,
    stream: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let added = suppress(
        txn,
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
            json!({"address": address, "stream": stream}),
            now_ms,
        )?;
    }
    Ok(added)
}

/// How attempts are retried; built once from the settings.
#[derive(Debug, Clone)]
pub struct MailRetry {
    pub policy: RetryPolicy,
    pub steps: u32,
    pub give_up_after: Duration,
    pub soft_bounce_limit: u32,
}

impl MailRetry {
    pub fn new(settings: &crate::config::mail::MailSettings) -> Self {
        MailRetry {
            policy: RetryPolicy::new(settings.retry_schedule.clone(), Duration::ZERO),
            steps: settings.retry_schedule.len() as u32,
            give_up_after: settings.give_up_after,
            soft_bounce_limit: settings.soft_bounce_limit,
        }
    }

    /// The wait after `failures` temporary failures: the schedule, then its
    /// last step again until `give_up_after`.
    fn delay(&self, failures: u32, random_unit: f64) -> Option<Duration> {
        if self.steps == 0 {
            return None;
        }
        self.policy.next_delay(
            failures.min(self.steps),
            FailureKind::Other,
            None,
            random_unit,
        )
    }
}

/// What a worker saw when it tried a message.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub at_ms: i64,
    /// 0 when the relay could not be reached.
    pub code: u16,
    pub text: String,
    /// Whether the reply was about the recipient (see `relay::Reply`).
    pub about_recipient: bool,
    pub latency_ms: u32,
    pub random_unit: f64,
}

/// Records an attempt on message `id` and moves it on: sent, retried,
/// failed or bounced, with suppressions and events. Returns the message's
/// next due row, if any.
pub fn record_attempt(
    txn: &mut WriteTxn<'_>,
    id: u64,
    report: AttemptReport,
    retry: &MailRetry,
) -> Result<Option<DueEmail>, StoreError> {
    let Some(mut record) = txn.email(id)? else {
        return Ok(None);
    };
    if !matches!(record.status, EmailStatus::Queued | EmailStatus::Deferred) {
        // Another attempt already settled it (a duplicate after a restart).
        return Ok(None);
    }
    let now_ms = clock::now_ms();
    let previous_due = record.next_attempt_ms;
    let verdict = verdict(report.code, &report.text, report.about_recipient);
    let text: String = report.text.chars().take(1000).collect();
    record.attempts.push(MailAttemptRecord {
        at_ms: report.at_ms,
        code: report.code,
        text: text.clone(),
        latency_ms: report.latency_ms,
    });
    let message_id = format_email_id(id);
    let to = record.to.clone();
    let enhanced = enhanced_code(&text).map(|c| c.to_string());
    let base = json!({"message_id": message_id, "stream": record.stream, "to": to,
                      "code": report.code, "enhanced": enhanced, "response": text,
                      "attempt": record.attempts.len()});
    record.next_attempt_ms = None;
    // The final reply is kept whatever it was; a deferral keeps the last one.
    record.smtp_response = Some(format!("{} {}", report.code, text));
    match verdict {
        Verdict::Accepted => {
            record.status = EmailStatus::Sent;
            txn.set_soft_bounces(&to, 0)?;
            append(txn, "email.sent", base, now_ms)?;
        }
        Verdict::SoftBounce | Verdict::Unreachable => {
            let mut over_limit = false;
            if verdict == Verdict::SoftBounce {
                let count = txn.soft_bounces(&to)?.saturating_add(1);
                txn.set_soft_bounces(&to, count)?;
                over_limit = count >= retry.soft_bounce_limit;
            }
            let failures = record.attempts.len() as u32;
            let next = retry
                .delay(failures, report.random_unit)
                .map(|d| now_ms.saturating_add(d.as_millis() as i64))
                .filter(|next| {
                    (next - record.created_at_ms) as u128 <= retry.give_up_after.as_millis()
                });
            if over_limit {
                record.status = EmailStatus::Failed;
                let mut data = base;
                data["reason"] = "soft_bounce_limit".into();
                append(txn, "email.failed", data, now_ms)?;
                suppress(
                    txn,
                    &to,
                    ALL_STREAMS,
                    SuppressionReason::SoftBounceLimit,
                    Some(id),
                    now_ms,
                )?;
            } else if let Some(next) = next {
                record.status = EmailStatus::Deferred;
                record.next_attempt_ms = Some(next);
                let mut data = base;
                data["next_attempt_at"] = clock::format_rfc3339(next).into();
                append(txn, "email.deferred", data, now_ms)?;
            } else {
                record.status = EmailStatus::Failed;
                let mut data = base;
                data["reason"] = "expired".into();
                append(txn, "email.failed", data, now_ms)?;
            }
        }
        Verdict::HardBounce => {
            record.status = EmailStatus::Bounced;
            append(txn, "email.bounced", base, now_ms)?;
            suppress(
                txn,
                &to,
                ALL_STREAMS,
                SuppressionReason::HardBounce,
                Some(id),
                now_ms,
            )?;
        }
        Verdict::SenderProblem | Verdict::Rejected => {
            record.status = EmailStatus::Failed;
            let flagged = verdict == Verdict::SenderProblem;
            record.flagged = flagged;
            let mut data = base;
            data["reason"] = if flagged {
                "sender_refused"
            } else {
                "rejected"
            }
            .into();
            data["flagged"] = flagged.into();
            append(txn, "email.failed", data, now_ms)?;
        }
    }
    txn.put_email(id, &record, previous_due, false)
}

/// A message whose recipient was suppressed after it was queued: it fails
/// without being sent.
pub fn cancel_suppressed(
    txn: &mut WriteTxn<'_>,
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

    #[test]
    fn retries_repeat_the_last_step() {
        let retry = MailRetry {
            policy: RetryPolicy::new(
                vec![Duration::from_secs(60), Duration::from_secs(300)],
                Duration::ZERO,
            ),
            steps: 2,
            give_up_after: Duration::from_secs(3600),
            soft_bounce_limit: 5,
        };
        assert_eq!(retry.delay(1, 0.5), Some(Duration::from_secs(60)));
        assert_eq!(retry.delay(2, 0.5), Some(Duration::from_secs(300)));
        assert_eq!(retry.delay(9, 0.5), Some(Duration::from_secs(300)));
    }
}
