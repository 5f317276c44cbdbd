//! ESP feedback applied inside the writer's transaction: each provider
//! event once, matched to our message, and turned into the bounce,
//! complaint and delivery rules' effects with `email.*` events (source
//! `esp`). An event no message matches still acts on its address.

use std::collections::BTreeSet;

use serde_json::json;

use super::address;
use super::guard;
use super::ledger::{self, format_email_id, parse_email_id, SuppressionScope};
use super::policy::MailRetry;
use super::settings::GuardSettings;
use super::soft_bounces::{self, day_of};
use crate::events::system_event;
use crate::feedback::{Batch, FeedbackEvent, FeedbackKind, Provider};
use crate::ids;
use crate::store::mail::ALL_STREAMS;
use crate::store::mail_txn::MailTxn;
use crate::store::records::{EmailRecord, EmailStatus, FeedbackRecord, SuppressionReason};
use crate::store::streams::SendOutcome;
use crate::store::StoreError;

pub const ID_PREFIX: &str = "fb_";

pub fn format_feedback_id(id: u64) -> String {
    ids::format_seq(ID_PREFIX, id)
}

pub fn parse_feedback_id(text: &str) -> Option<u64> {
    ids::parse_seq(ID_PREFIX, text)
}

/// The rules feedback follows, as the mail settings set them.
pub struct FeedbackRules {
    pub retry: MailRetry,
    pub guard: GuardSettings,
}

/// What became of one request's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied {
        applied: usize,
        duplicates: usize,
    },
    /// Its single-use token was spent before: nothing was applied.
    Replayed,
}

/// Applies every event of `batch` not seen before, in one transaction.
pub fn apply(
    txn: &mut dyn MailTxn,
    provider: Provider,
    batch: &Batch,
    rules: &FeedbackRules,
    now_ms: i64,
) -> Result<Outcome, StoreError> {
    if let Some(token) = &batch.replay_token {
        if !txn.spend_replay_token(provider.as_str(), token, now_ms)? {
            return Ok(Outcome::Replayed);
        }
    }
    let (mut applied, mut duplicates) = (0, 0);
    let mut touched = BTreeSet::new();
    for event in &batch.events {
        if txn
            .feedback_seen(event.provider.as_str(), &event.event_id)?
            .is_some()
        {
            duplicates += 1;
            continue;
        }
        touched.extend(apply_one(txn, event, rules, now_ms)?);
        applied += 1;
    }
    // Judged once per stream: a batch of complaints must not read the
    // windows once per event.
    for stream in touched {
        guard::judge_stream(txn, &stream, &rules.guard, now_ms)?;
    }
    Ok(Outcome::Applied {
        applied,
        duplicates,
    })
}

/// The message an event is about: by the id Herald sent in its metadata
/// header, by the `Message-ID` Herald wrote, or by the relay's own id; and
/// only if it was sent to the address the event names. Ids are sequential,
/// so another Herald sharing the ESP account (a staging one) names ids of
/// ours: the recipient is what tells a report about our message apart.
fn find_message(
    txn: &mut dyn MailTxn,
    event: &FeedbackEvent,
    address: &str,
) -> Result<Option<(u64, EmailRecord)>, StoreError> {
    let mut candidates: Vec<u64> = Vec::new();
    if let Some(id) = event.herald_id.as_deref().and_then(parse_email_id) {
        candidates.push(id);
    }
    let header = event.message_id_header.as_deref().map(|h| {
        let h = h.trim();
        let h = h.strip_prefix('<').unwrap_or(h);
        h.strip_suffix('>').unwrap_or(h).to_owned()
    });
    // Herald's Message-IDs start with the message id in hex.
    let from_header = header
        .as_deref()
        .and_then(|h| h.split_once('.'))
        .and_then(|(hex, _)| u64::from_str_radix(hex, 16).ok());
    candidates.extend(from_header);
    if let Some(provider_id) = event.provider_message_id.as_deref() {
        let mut found = txn.email_by_provider_id(provider_id)?;
        // SendGrid's message ids extend its queue id: `ID.filter…`.
        if found.is_none() && event.provider == Provider::Sendgrid {
            if let Some((head, _)) = provider_id.split_once('.') {
                found = txn.email_by_provider_id(head)?;
            }
        }
        candidates.extend(found);
    }
    for id in candidates {
        let Some(record) = txn.email(id)? else {
            continue;
        };
        if record.to != address {
            continue;
        }
        let named_by_header = Some(id) == from_header;
        if let (true, Some(header)) = (named_by_header, &header) {
            if record.message_id != format!("<{header}>") {
                continue;
            }
        }
        return Ok(Some((id, record)));
    }
    Ok(None)
}

/// Applies one event; returns the stream whose reputation it changed.
fn apply_one(
    txn: &mut dyn MailTxn,
    event: &FeedbackEvent,
    rules: &FeedbackRules,
    now_ms: i64,
) -> Result<Option<String>, StoreError> {
    let address = address::normalize(&event.address)
        .unwrap_or_else(|_| event.address.trim().to_ascii_lowercase());
    let matched = find_message(txn, event, &address)?;
    let sent_at_ms = matched
        .as_ref()
        .and_then(|(_, record)| record.attempts.last())
        .map_or(now_ms, |attempt| attempt.at_ms);
    let (email_id, stream, tenant) = match &matched {
        Some((id, record)) => (
            Some(*id),
            Some(record.stream.clone()),
            record.tenant.clone(),
        ),
        None => (None, None, None),
    };
    let detail: String = event.detail.chars().take(1000).collect();
    let record = FeedbackRecord {
        provider: event.provider.as_str().to_owned(),
        event_id: event.event_id.clone(),
        kind: event.kind.as_str().to_owned(),
        address: address.clone(),
        email_id,
        stream: stream.clone(),
        tenant: tenant.clone(),
        occurred_at_ms: event.occurred_at_ms,
        received_at_ms: now_ms,
        detail: detail.clone(),
        raw: crate::feedback::raw_excerpt(&event.raw),
    };
    let feedback_id = txn.add_feedback(&record)?;
    let mut data = json!({
        "message_id": email_id.map(format_email_id),
        "to": address,
        "stream": stream,
        "source": "esp",
        "provider": event.provider.as_str(),
        "detail": detail,
        "feedback_id": format_feedback_id(feedback_id),
    });
    if let Some(at) = event.occurred_at_ms {
        data["occurred_at"] = crate::clock::format_rfc3339(at).into();
    }
    let esp_detail = format!("{}: {detail}", event.provider.as_str());
    let mut reputation = None;
    // What a mailbox (or the provider) reported holds for every sender:
    // the global list, told to the message's tenant.
    let scope = SuppressionScope {
        list: None,
        event_tenant: tenant.as_deref(),
    };
    let event_type = match event.kind {
        FeedbackKind::HardBounce => {
            data["bounce_type"] = "hard".into();
            let added = ledger::suppress_with_detail(
                txn,
                scope,
                &address,
                ALL_STREAMS,
                (SuppressionReason::HardBounce, esp_detail),
                email_id,
                now_ms,
            )?;
            if let Some((id, record)) = matched {
                settle(txn, id, record, EmailStatus::Bounced, false)?;
            }
            // Once per address: a second feed reporting the same event
            // (SES notifications and event publishing) counts once.
            if added {
                reputation = record_outcome(
                    txn,
                    &stream,
                    email_id,
                    SendOutcome::HardBounce,
                    rules,
                    sent_at_ms,
                    now_ms,
                )?;
            }
            "email.bounced"
        }
        FeedbackKind::SoftBounce => {
            data["bounce_type"] = "soft".into();
            let today = day_of(now_ms);
            let day = day_of(event.occurred_at_ms.unwrap_or(now_ms));
            let days = soft_bounces::with_bounce(
                &txn.soft_bounce_days(&address)?,
                day,
                today,
                rules.retry.soft_bounce_window_days,
            );
            txn.put_soft_bounce_days(&address, &days)?;
            if days.days.len() as u32 >= rules.retry.soft_bounce_limit {
                ledger::suppress_with_detail(
                    txn,
                    scope,
                    &address,
                    ALL_STREAMS,
                    (SuppressionReason::SoftBounceLimit, esp_detail),
                    email_id,
                    now_ms,
                )?;
            }
            "email.bounced"
        }
        FeedbackKind::Deferred => "email.deferred",
        FeedbackKind::Complaint => {
            let added = ledger::suppress_with_detail(
                txn,
                scope,
                &address,
                ALL_STREAMS,
                (SuppressionReason::Complaint, esp_detail),
                email_id,
                now_ms,
            )?;
            if let Some((id, record)) = matched {
                if matches!(record.status, EmailStatus::Queued | EmailStatus::Deferred) {
                    ledger::cancel_suppressed(txn, id, SuppressionReason::Complaint)?;
                }
            }
            // Once per address: a second feed reporting the same event
            // (SES notifications and event publishing) counts once.
            if added {
                reputation = record_outcome(
                    txn,
                    &stream,
                    email_id,
                    SendOutcome::Complaint,
                    rules,
                    sent_at_ms,
                    now_ms,
                )?;
            }
            "email.complained"
        }
        FeedbackKind::Delivered => {
            if !txn.soft_bounce_days(&address)?.days.is_empty() {
                txn.put_soft_bounce_days(&address, &Default::default())?;
            }
            "email.delivered"
        }
        FeedbackKind::Opened => "email.opened",
        FeedbackKind::Clicked => "email.clicked",
        FeedbackKind::EspSuppressed => {
            ledger::suppress_with_detail(
                txn,
                scope,
                &address,
                ALL_STREAMS,
                (SuppressionReason::EspSuppressed, esp_detail),
                email_id,
                now_ms,
            )?;
            // The provider dropped the message without trying.
            if let Some((id, record)) = matched {
                settle(txn, id, record, EmailStatus::Failed, false)?;
            }
            data["reason"] = "esp_suppressed".into();
            "email.failed"
        }
        FeedbackKind::PolicyBlock => {
            let email = email_id.map(format_email_id).unwrap_or_default();
            tracing::warn!(provider = event.provider.as_str(), %email, %detail,
                           "the ESP refused our mail for a sender-side reason (policy, reputation, content); the address is kept");
            if let Some((id, record)) = matched {
                settle(txn, id, record, EmailStatus::Failed, true)?;
            }
            data["reason"] = "policy_block".into();
            data["flagged"] = true.into();
            "email.failed"
        }
    };
    txn.append_system_event(
        system_event(event_type, tenant.as_deref(), data),
        now_ms,
        None,
    )?;
    Ok(reputation)
}

/// Moves a message to what its feedback says, unless it is settled as
/// something that says more (a bounce over a failure over a send), or has
/// no attempt recorded yet: then the worker's outcome is still on its way
/// and must not find the message settled.
fn settle(
    txn: &mut dyn MailTxn,
    id: u64,
    mut record: EmailRecord,
    status: EmailStatus,
    flag: bool,
) -> Result<(), StoreError> {
    let rank = |s: EmailStatus| match s {
        EmailStatus::Queued | EmailStatus::Deferred => 0,
        EmailStatus::Sent => 1,
        EmailStatus::Failed => 2,
        EmailStatus::Bounced => 3,
    };
    if record.attempts.is_empty() {
        return Ok(());
    }
    let moves = rank(status) > rank(record.status);
    if !moves && (record.flagged || !flag) {
        return Ok(());
    }
    let previous_due = record.next_attempt_ms;
    if moves {
        record.next_attempt_ms = None;
        record.status = status;
    }
    record.flagged |= flag;
    txn.put_email(id, &record, previous_due, false)
}

/// Counts a bounce or complaint against its message's stream; returns
/// the stream, to be judged at the end of the batch.
fn record_outcome(
    txn: &mut dyn MailTxn,
    stream: &Option<String>,
    email_id: Option<u64>,
    outcome: SendOutcome,
    rules: &FeedbackRules,
    sent_at_ms: i64,
    now_ms: i64,
) -> Result<Option<String>, StoreError> {
    match stream {
        Some(name) => {
            guard::record(
                txn,
                name,
                email_id,
                outcome,
                &rules.guard,
                sent_at_ms,
                now_ms,
            )?;
            Ok(Some(name.clone()))
        }
        // Whose reputation an unmatched report hurts is unknown.
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::settings::MailSettings;
    use crate::store::feedback::FeedbackFilter;
    use crate::store::records::MailAttemptRecord;
    use crate::store::writer::Listeners;
    use crate::store::{Store, Writer};

    const NOW: i64 = 1_800_000_000_000;

    fn rules() -> FeedbackRules {
        let settings: MailSettings =
            crate::config::mail::validate_mail(Default::default(), std::path::Path::new("."))
                .unwrap();
        FeedbackRules {
            retry: MailRetry::new(&settings),
            guard: settings.guard,
        }
    }

    fn sent_to(to: &str) -> EmailRecord {
        EmailRecord {
            stream: "transactional".into(),
            tenant: Some("acme".into()),
            from: "no-reply@acme.com".into(),
            to: to.into(),
            reply_to: None,
            subject: "Hi".into(),
            text: "hello".into(),
            html: None,
            headers: vec![],
            tags: vec![],
            message_id: "<1.00000000000000ab@acme.com>".into(),
            created_at_ms: NOW - 1000,
            status: EmailStatus::Sent,
            attempts: vec![MailAttemptRecord {
                at_ms: NOW - 900,
                code: 250,
                text: "2.0.0 ok".into(),
                latency_ms: 3,
            }],
            next_attempt_ms: None,
            smtp_response: Some("250 2.0.0 ok".into()),
            flagged: false,
        }
    }

    fn event(id: &str, kind: FeedbackKind, address: &str) -> FeedbackEvent {
        FeedbackEvent {
            provider: Provider::Postmark,
            event_id: id.into(),
            kind,
            address: address.into(),
            herald_id: Some(format_email_id(1)),
            message_id_header: None,
            provider_message_id: None,
            occurred_at_ms: None,
            detail: "test".into(),
            raw: "{}".into(),
        }
    }

    fn batch(events: Vec<FeedbackEvent>) -> Batch {
        Batch {
            events,
            ..Batch::default()
        }
    }

    fn apply_all(writer: &Writer, events: Vec<FeedbackEvent>) -> Outcome {
        writer
            .write_blocking(move |txn| {
                apply(txn, Provider::Postmark, &batch(events), &rules(), NOW)
            })
            .unwrap()
    }

    #[test]
    fn an_event_naming_our_id_for_another_address_does_not_touch_our_message() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.redb")).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        writer
            .write_blocking(|txn| txn.put_email(1, &sent_to("bob@example.com"), None, true))
            .unwrap();

        // Another sender's message 1 bounced: the address differs.
        let foreign = event("a", FeedbackKind::HardBounce, "eve@example.org");
        assert_eq!(
            apply_all(&writer, vec![foreign]),
            Outcome::Applied {
                applied: 1,
                duplicates: 0
            }
        );
        let read = store.read().unwrap();
        assert_eq!(read.email(1).unwrap().unwrap().status, EmailStatus::Sent);
        let unmatched = FeedbackFilter {
            matched: Some(false),
            ..Default::default()
        };
        assert_eq!(
            read.scan_feedback(&unmatched, 0, 10)
                .unwrap()
                .feedback
                .len(),
            1
        );
        drop(read);

        // Ours bounced, then a late policy block says less: it stays bounced.
        let ours = event("b", FeedbackKind::HardBounce, "Bob@Example.com");
        let late = event("c", FeedbackKind::PolicyBlock, "bob@example.com");
        apply_all(&writer, vec![ours.clone(), late]);
        let read = store.read().unwrap();
        let record = read.email(1).unwrap().unwrap();
        assert_eq!(record.status, EmailStatus::Bounced);
        assert!(record.flagged);
        assert_eq!(read.email_feedback(1, 10).unwrap().len(), 2);
        drop(read);

        // A replay changes nothing.
        assert_eq!(
            apply_all(&writer, vec![ours]),
            Outcome::Applied {
                applied: 0,
                duplicates: 1
            }
        );
        thread.stop();
    }

    #[test]
    fn the_same_complaint_from_two_feeds_counts_once_against_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.redb")).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        writer
            .write_blocking(|txn| {
                txn.put_email(1, &sent_to("bob@example.com"), None, true)?;
                let guard = rules().guard;
                guard::record(
                    txn,
                    "transactional",
                    Some(1),
                    SendOutcome::Sent,
                    &guard,
                    NOW,
                    NOW,
                )
            })
            .unwrap();
        let notification = event("feed-1", FeedbackKind::Complaint, "bob@example.com");
        let published = event("feed-2", FeedbackKind::Complaint, "bob@example.com");
        apply_all(&writer, vec![notification, published]);
        let windows = store
            .read()
            .unwrap()
            .stream_windows("transactional", NOW)
            .unwrap();
        assert_eq!(windows.last_24h.complaints, 1);
        assert_eq!(windows.last_1000.complaints, 1);
        assert_eq!(windows.last_1000.sent, 1);
        thread.stop();
    }

    #[test]
    fn a_report_about_old_mail_weighs_on_the_window_of_its_send() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.redb")).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        let two_days = 2 * 24 * 3600 * 1000;
        writer
            .write_blocking(move |txn| {
                let mut old = sent_to("bob@example.com");
                old.attempts[0].at_ms = NOW - two_days;
                txn.put_email(1, &old, None, true)
            })
            .unwrap();
        apply_all(
            &writer,
            vec![event("late", FeedbackKind::Complaint, "bob@example.com")],
        );
        let windows = store
            .read()
            .unwrap()
            .stream_windows("transactional", NOW)
            .unwrap();
        assert_eq!(windows.last_24h.complaints, 0, "{windows:?}");
        thread.stop();
    }
}
