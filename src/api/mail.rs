//! `/v1/emails` and `/v1/suppressions`: sending mail, following each
//! message, and managing who must not be sent to.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::access::Access;
use super::error::ApiError;
use super::http::{json, page_limit, query_params, read_body, require_json, Resp};
use super::read_store;
use crate::clock;
use crate::events;
use crate::feedback::settings::FeedbackSettings;
use crate::feedback::sns_fetch::SnsFetcher;
use crate::mail::address;
use crate::mail::classify::enhanced_code;
use crate::mail::ledger::{
    self, format_email_id, parse_email_id, stream_label, Queued, SuppressionScope,
};
use crate::mail::request::{self, EmailInput};
use crate::mail::settings::MailSettings;
use crate::mail::unsubscribe::TokenKey;
use crate::pg::mail::PgMail;
use crate::store::feedback::{FeedbackFilter, FeedbackPage};
use crate::store::mail::{EmailFilter, EmailPage, SuppressionFilter, SuppressionPage, ALL_STREAMS};
use crate::store::mail_txn::MailTxn;
use crate::store::records::{
    EmailRecord, EmailStatus, FeedbackRecord, StreamStateRecord, SuppressionReason,
    SuppressionRecord,
};
use crate::store::streams::{Windows, DAY_MS};
use crate::store::{Store, StoreError, Writer};

/// What the mail routes need, whichever backend keeps mail: the handlers
/// below are the same code on both.
pub struct MailApi {
    pub store: MailStore,
    pub settings: MailSettings,
    /// Checks the unsubscribe links of sent mail.
    pub tokens: TokenKey,
    /// The ESPs whose reports `/feedback/{provider}` takes.
    pub feedback: FeedbackSettings,
    /// Fetches and caches SNS signing certificates; `None` without SES.
    pub sns: Option<Arc<SnsFetcher>>,
    pub body_timeout: Duration,
    /// Told when a message was queued, so this node's senders look at once
    /// rather than at their next poll; `None` where a scheduler hears of
    /// it from the commit itself.
    pub queued: Option<Arc<Notify>>,
}

/// Where mail lives.
pub enum MailStore {
    /// The redb file, changed by its single writer.
    Embedded { store: Store, writer: Writer },
    /// A PostgreSQL database shared with other nodes.
    Postgres(PgMail),
}

type Timeline = Option<(EmailRecord, Vec<FeedbackRecord>)>;
/// A stream's name, state, windows, and messages sent today.
pub(super) type StreamHealth = (String, StreamStateRecord, Windows, u64);

impl MailStore {
    /// Runs `change` (the mail rules) in one transaction of the backend.
    pub async fn write<T, F>(&self, change: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn MailTxn) -> Result<T, StoreError> + Send + 'static,
    {
        match self {
            MailStore::Embedded { writer, .. } => Ok(writer.write(move |txn| change(txn)).await?),
            MailStore::Postgres(pg) => pg
                .write(move |txn| change(txn))
                .await
                .map_err(|e| ApiError::not_acknowledged(&e)),
        }
    }

    async fn email_with_feedback(&self, id: u64) -> Result<Timeline, ApiError> {
        match self {
            MailStore::Embedded { store, .. } => {
                read_store(store, move |txn| {
                    let Some(record) = txn.email(id)? else {
                        return Ok(None);
                    };
                    Ok(Some((record, txn.email_feedback(id, MAX_TIMELINE)?)))
                })
                .await
            }
            MailStore::Postgres(pg) => pg
                .email_with_feedback(id, MAX_TIMELINE)
                .await
                .map_err(query_failed),
        }
    }

    async fn scan_emails(
        &self,
        filter: EmailFilter,
        after: u64,
        limit: usize,
    ) -> Result<EmailPage, ApiError> {
        match self {
            MailStore::Embedded { store, .. } => {
                read_store(store, move |txn| txn.scan_emails(&filter, after, limit)).await
            }
            MailStore::Postgres(pg) => pg
                .scan_emails(&filter, after, limit)
                .await
                .map_err(query_failed),
        }
    }

    pub(super) async fn scan_feedback(
        &self,
        filter: FeedbackFilter,
        after: u64,
        limit: usize,
    ) -> Result<FeedbackPage, ApiError> {
        match self {
            MailStore::Embedded { store, .. } => {
                read_store(store, move |txn| txn.scan_feedback(&filter, after, limit)).await
            }
            MailStore::Postgres(pg) => pg
                .scan_feedback(&filter, after, limit)
                .await
                .map_err(query_failed),
        }
    }

    /// Each stream's state, windows and messages sent since the UTC day
    /// began, read together.
    pub(super) async fn stream_healths(
        &self,
        names: Vec<String>,
        now_ms: i64,
    ) -> Result<Vec<StreamHealth>, ApiError> {
        let midnight = now_ms - now_ms.rem_euclid(DAY_MS);
        match self {
            MailStore::Embedded { store, .. } => {
                read_store(store, move |txn| {
                    let mut out = Vec::with_capacity(names.len());
                    for name in names {
                        let record = txn.stream_state(&name)?;
                        let windows = txn.stream_windows(&name, now_ms)?;
                        let sent_today = txn.stream_sent_since(&name, midnight)?;
                        out.push((name, record, windows, sent_today));
                    }
                    Ok(out)
                })
                .await
            }
            MailStore::Postgres(pg) => pg
                .stream_healths(names, now_ms, midnight)
                .await
                .map_err(query_failed),
        }
    }

    async fn scan_suppressions(
        &self,
        list: Option<String>,
        filter: SuppressionFilter,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<SuppressionPage, ApiError> {
        match self {
            MailStore::Embedded { store, .. } => {
                read_store(store, move |txn| {
                    let after = after.as_ref().map(|(a, s)| (a.as_str(), s.as_str()));
                    txn.scan_suppressions(list.as_deref(), &filter, after, limit)
                })
                .await
            }
            MailStore::Postgres(pg) => {
                let after = after.as_ref().map(|(a, s)| (a.as_str(), s.as_str()));
                pg.scan_suppressions(list.as_deref(), &filter, after, limit)
                    .await
                    .map_err(query_failed)
            }
        }
    }
}

/// The SNS certificate fetcher SES feedback needs, when SES is configured.
pub fn sns_fetcher(feedback: &FeedbackSettings) -> Option<Arc<SnsFetcher>> {
    feedback
        .ses
        .as_ref()
        .and_then(|ses| match SnsFetcher::new(ses) {
            Ok(fetcher) => Some(Arc::new(fetcher)),
            Err(e) => {
                tracing::error!(error = %e, "SES feedback is off: its certificate fetcher cannot start");
                None
            }
        })
}

fn query_failed(e: crate::pg::PgError) -> ApiError {
    tracing::error!(error = %e, "query failed");
    ApiError::unavailable("the query failed; see the server log")
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// ESP events shown on one message: a handful in practice (delivered,
/// opened, clicked…); a flood of opens stops here.
const MAX_TIMELINE: usize = 200;
/// Room for headers, tags and JSON escaping around the largest body.
const ENVELOPE_BYTES: usize = 256 * 1024;

pub fn status_name(status: EmailStatus) -> &'static str {
    match status {
        EmailStatus::Queued => "queued",
        EmailStatus::Deferred => "deferred",
        EmailStatus::Sent => "sent",
        EmailStatus::Failed => "failed",
        EmailStatus::Bounced => "bounced",
    }
}

fn parse_status(text: &str) -> Option<EmailStatus> {
    [
        EmailStatus::Queued,
        EmailStatus::Deferred,
        EmailStatus::Sent,
        EmailStatus::Failed,
        EmailStatus::Bounced,
    ]
    .into_iter()
    .find(|s| status_name(*s) == text)
}

fn email_not_found(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::not_found("email_not_found", format!("no message has id `{shown}`"))
}

fn email_json(id: u64, r: &EmailRecord, with_attempts: bool) -> Value {
    let tags: serde_json::Map<String, Value> = r
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    let mut out = json!({
        "id": format_email_id(id),
        "stream": r.stream,
        "tenant": r.tenant,
        "from": r.from,
        "to": r.to,
        "reply_to": r.reply_to,
        "subject": r.subject,
        "status": status_name(r.status),
        "created_at": clock::format_rfc3339(r.created_at_ms),
        "tags": tags,
        "message_id": r.message_id,
        "attempt_count": r.attempts.len(),
        "next_attempt_at": r.next_attempt_ms.map(clock::format_rfc3339),
        "smtp_response": r.smtp_response,
        "flagged": r.flagged,
    });
    if with_attempts {
        out["attempts"] = r
            .attempts
            .iter()
            .enumerate()
            .map(|(n, a)| {
                let last = n + 1 == r.attempts.len();
                let outcome = match (a.code, last, r.status) {
                    (200..=299, _, _) => "sent",
                    (_, true, EmailStatus::Bounced) => "bounced",
                    (_, true, EmailStatus::Failed) => "failed",
                    _ => "deferred",
                };
                json!({
                    "at": clock::format_rfc3339(a.at_ms),
                    "code": a.code,
                    "enhanced": enhanced_code(&a.text).map(|c| c.to_string()),
                    "text": a.text,
                    "latency_ms": a.latency_ms,
                    "outcome": outcome,
                })
            })
            .collect();
    }
    out
}

fn messages_json(messages: &[(u64, String)]) -> Value {
    json!({"messages": messages.iter().map(|(id, to)| json!({
        "id": format_email_id(*id), "to": to, "status": "queued"})).collect::<Vec<_>>()})
}

pub async fn send(
    mail: &MailApi,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let (parts, body) = req.into_parts();
    let limit = mail.settings.max_message_bytes * 2 + ENVELOPE_BYTES;
    let body = read_body(body, &parts.headers, limit, mail.body_timeout).await?;
    require_json(&parts.headers)?;
    let mut input: EmailInput = events::from_json_object(&body)?;
    input.tenant = access.tenant_for_write(input.tenant.take())?;
    let request = request::validate(input, &mail.settings).map_err(|r| {
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        ApiError::new(status, r.code, format!("{}: {}", r.field, r.message)).with_field(r.field)
    })?;
    let outcome = mail
        .store
        .write(move |txn| ledger::queue(txn, &request, clock::now_ms()))
        .await?;
    match outcome {
        Queued::Created(messages) => {
            if let Some(queued) = &mail.queued {
                queued.notify_waiters();
            }
            Ok(json(
                StatusCode::ACCEPTED,
                messages_json(&messages).to_string(),
            ))
        }
        Queued::Replayed(messages) => {
            Ok(json(StatusCode::OK, messages_json(&messages).to_string()))
        }
        Queued::KeyConflict => Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            "this idempotency_key was used for a different message",
        )
        .with_field("idempotency_key")),
        Queued::Suppressed {
            address,
            reason,
            stream,
        } => {
            let scope = match &stream {
                Some(s) => format!("for stream `{s}`"),
                None => "for every stream".to_owned(),
            };
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "recipient_suppressed",
                format!(
                    "{address} is suppressed {scope} ({}); nothing was queued",
                    reason.as_str()
                ),
            )
            .with_field("to")
            .with_detail("address", address)
            .with_detail("reason", reason.as_str()))
        }
    }
}

pub async fn get(mail: &MailApi, access: &Access, id: &str) -> Result<Resp, ApiError> {
    let key = parse_email_id(id).ok_or_else(|| email_not_found(id))?;
    let (record, feedback) = mail
        .store
        .email_with_feedback(key)
        .await?
        .filter(|(r, _)| access.sees(r.tenant.as_deref()))
        .ok_or_else(|| email_not_found(id))?;
    let mut body = email_json(key, &record, true);
    // The timeline after the relay's reply: what the ESP reported.
    body["feedback"] = feedback
        .iter()
        .map(|f| {
            json!({
                "provider": f.provider,
                "kind": f.kind,
                "detail": f.detail,
                "occurred_at": f.occurred_at_ms.map(clock::format_rfc3339),
                "received_at": clock::format_rfc3339(f.received_at_ms),
                "raw": serde_json::from_str::<Value>(&f.raw).unwrap_or_else(|_| f.raw.clone().into()),
            })
        })
        .collect();
    Ok(json(StatusCode::OK, body.to_string()))
}

pub async fn list(
    mail: &MailApi,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let params = query_params(
        req.uri().query(),
        &["to", "status", "stream", "tenant", "after", "limit"],
    )?;
    let mut filter = EmailFilter::default();
    let mut tenant = None;
    let mut after = 0u64;
    let mut limit = DEFAULT_PAGE;
    for (name, value) in params {
        match name.as_str() {
            "tenant" => tenant = Some(value),
            "to" => {
                filter.to = Some(
                    address::normalize(&value)
                        .map_err(|e| ApiError::invalid_query("to", e.to_string()))?,
                )
            }
            "status" => {
                filter.status = Some(parse_status(&value).ok_or_else(|| {
                    ApiError::invalid_query(
                        "status",
                        "one of queued, deferred, sent, failed, bounced",
                    )
                })?)
            }
            "stream" => filter.stream = Some(value),
            "after" => {
                after = parse_email_id(&value)
                    .ok_or_else(|| ApiError::invalid_query("after", "not a message id"))?
            }
            "limit" => limit = page_limit(&value, MAX_PAGE)?,
            _ => unreachable!("query_params only yields known names"),
        }
    }
    filter.tenant = access.tenant_param(tenant)?;
    let page = mail.store.scan_emails(filter, after, limit).await?;
    let emails: Vec<Value> = page
        .emails
        .iter()
        .map(|(id, r)| email_json(*id, r, false))
        .collect();
    let body = json!({"emails": emails, "next_cursor": page.next_after.map(format_email_id)});
    Ok(json(StatusCode::OK, body.to_string()))
}

fn suppression_json(
    list: Option<&str>,
    address: &str,
    stream: &str,
    r: &SuppressionRecord,
) -> Value {
    json!({
        "address": address,
        "tenant": list,
        "stream": stream_label(stream),
        "reason": r.reason.as_str(),
        "created_at": clock::format_rfc3339(r.created_at_ms),
        "message_id": r.email_id.map(format_email_id),
        "detail": (!r.detail.is_empty()).then_some(r.detail.as_str()),
    })
}

fn encode_cursor(address: &str, stream: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{stream}\n{address}"))
}

fn decode_cursor(text: &str) -> Option<(String, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (stream, address) = text.split_once('\n')?;
    Some((address.to_owned(), stream.to_owned()))
}

pub async fn list_suppressions(
    mail: &MailApi,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let params = query_params(
        req.uri().query(),
        &["stream", "reason", "tenant", "after", "limit"],
    )?;
    let mut filter = SuppressionFilter::default();
    let mut tenant = None;
    let mut after = None;
    let mut limit = DEFAULT_PAGE;
    for (name, value) in params {
        match name.as_str() {
            "tenant" => tenant = Some(value),
            "stream" => filter.stream = Some(value),
            "reason" => {
                filter.reason = Some(SuppressionReason::parse(&value).ok_or_else(|| {
                    ApiError::invalid_query(
                        "reason",
                        "one of hard_bounce, complaint, unsubscribe, soft_bounce_limit, manual",
                    )
                })?)
            }
            "after" => {
                after = Some(
                    decode_cursor(&value)
                        .ok_or_else(|| ApiError::invalid_query("after", "not a cursor"))?,
                )
            }
            "limit" => limit = page_limit(&value, MAX_PAGE)?,
            _ => unreachable!("query_params only yields known names"),
        }
    }
    let list_owner = access.tenant_param(tenant)?;
    let page = mail
        .store
        .scan_suppressions(list_owner.clone(), filter, after, limit)
        .await?;
    let list: Vec<Value> = page
        .entries
        .iter()
        .map(|(a, s, r)| suppression_json(list_owner.as_deref(), a, s, r))
        .collect();
    let body = json!({
        "suppressions": list,
        "next_cursor": page.next_after.map(|(a, s)| encode_cursor(&a, &s)),
    });
    Ok(json(StatusCode::OK, body.to_string()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SuppressionInput {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    stream: Option<String>,
}

fn path_address(raw: &str) -> Result<String, ApiError> {
    let decoded = crate::percent::decode(raw).ok_or_else(|| {
        ApiError::invalid_field("address", "a broken percent-escape or not UTF-8")
    })?;
    address::normalize(&decoded).map_err(|e| {
        ApiError::invalid_field(
            "address",
            format!("`{}` {e}", decoded.chars().take(100).collect::<String>()),
        )
    })
}

fn check_stream(settings: &MailSettings, stream: &str) -> Result<(), ApiError> {
    if settings.streams.contains_key(stream) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_stream",
            format!(
                "no stream named `{}`",
                stream.chars().take(64).collect::<String>()
            ),
        )
        .with_field("stream"))
    }
}

/// The list a suppression route acts on: `?tenant=` for an unscoped key
/// (none: the global list), always its own for a tenant key.
fn suppression_list(access: &Access, req: &Request<Incoming>) -> Result<Option<String>, ApiError> {
    let tenant = query_params(req.uri().query(), &["tenant"])?
        .into_iter()
        .next()
        .map(|(_, v)| v);
    access.tenant_param(tenant)
}

pub async fn put_suppression(
    mail: &MailApi,
    access: &Access,
    raw_address: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let address = path_address(raw_address)?;
    let list = suppression_list(access, &req)?;
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers, 16 * 1024, mail.body_timeout).await?;
    let input: SuppressionInput = if body.is_empty() {
        SuppressionInput::default()
    } else {
        require_json(&parts.headers)?;
        events::from_json_object(&body)?
    };
    let reason = match input.reason.as_deref() {
        None => SuppressionReason::Manual,
        Some(text) => SuppressionReason::parse(text).ok_or_else(|| {
            ApiError::invalid_field(
                "reason",
                "one of hard_bounce, complaint, unsubscribe, soft_bounce_limit, manual",
            )
        })?,
    };
    let stream = input.stream.unwrap_or_default();
    if !stream.is_empty() {
        check_stream(&mail.settings, &stream)?;
    }
    let (addr, col, owner) = (address.clone(), stream.clone(), list.clone());
    let now = clock::now_ms();
    let (created, record) = mail
        .store
        .write(move |txn| {
            let owner = owner.as_deref();
            let existed = txn.stored_suppression(owner, &addr, &col)?.is_some();
            let scope = SuppressionScope::list(owner);
            ledger::suppress(txn, scope, &addr, &col, reason, None, now)?;
            let record = txn.stored_suppression(owner, &addr, &col)?;
            Ok((!existed, record))
        })
        .await?;
    let record = record.ok_or_else(|| ApiError::unavailable("the entry vanished"))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(
        status,
        suppression_json(list.as_deref(), &address, &stream, &record).to_string(),
    ))
}

/// Removes an entry from the list the key acts on. A tenant key reaches
/// only its own list, so an entry of the global list (a bounce, a
/// complaint) is `404` to it, exactly as a missing one.
pub async fn delete_suppression(
    mail: &MailApi,
    access: &Access,
    raw_address: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let address = path_address(raw_address)?;
    let mut stream = ALL_STREAMS.to_owned();
    let mut tenant = None;
    for (name, value) in query_params(req.uri().query(), &["stream", "tenant"])? {
        match name.as_str() {
            "stream" => stream = value,
            _ => tenant = Some(value),
        }
    }
    let list = access.tenant_param(tenant)?;
    let (addr, col, owner) = (address.clone(), stream.clone(), list.clone());
    let removed = mail
        .store
        .write(move |txn| {
            let removed = txn.delete_suppression(owner.as_deref(), &addr, &col)?;
            // A fresh start on the global list: earlier soft bounces no
            // longer count. They are the mailbox's, not a tenant's to reset.
            if removed && owner.is_none() {
                txn.put_soft_bounce_days(&addr, &Default::default())?;
            }
            Ok(removed)
        })
        .await?;
    if removed {
        Ok(json(StatusCode::NO_CONTENT, ""))
    } else {
        let scope = if stream.is_empty() {
            "every stream".to_owned()
        } else {
            format!("stream `{stream}`")
        };
        let whose = match &list {
            Some(tenant) => format!(" on tenant `{tenant}`'s list"),
            None => String::new(),
        };
        Err(ApiError::not_found(
            "suppression_not_found",
            format!("{address} is not suppressed for {scope}{whose}"),
        ))
    }
}
