//! ESP feedback: the providers' webhooks (`POST /feedback/PROVIDER`, on
//! both listeners, authenticated by each provider's own scheme) and the
//! list of what they reported (`GET /v1/feedback`).

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use super::access::Access;
use super::error::ApiError;
use super::http::{json, page_limit, query_params, read_body, Resp};
use super::mail::MailApi;
use crate::clock;
use crate::feedback::ses::{self, SnsKind};
use crate::feedback::{
    mailgun, postmark, resend, sendgrid, Batch, FeedbackError, FeedbackKind, Inbound, Provider,
};
use crate::mail::feedback::{
    self as mail_feedback, format_feedback_id, parse_feedback_id, FeedbackRules, Outcome,
};
use crate::mail::ledger::format_email_id;
use crate::mail::policy::MailRetry;
use crate::store::feedback::FeedbackFilter;
use crate::store::records::FeedbackRecord;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn feedback_json(id: u64, r: &FeedbackRecord) -> Value {
    json!({
        "id": format_feedback_id(id),
        "provider": r.provider,
        "event_id": r.event_id,
        "kind": r.kind,
        "address": r.address,
        "matched": r.email_id.is_some(),
        "message_id": r.email_id.map(format_email_id),
        "stream": r.stream,
        "tenant": r.tenant,
        "detail": r.detail,
        "occurred_at": r.occurred_at_ms.map(clock::format_rfc3339),
        "received_at": clock::format_rfc3339(r.received_at_ms),
    })
}

pub async fn list(
    mail: &MailApi,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let params = query_params(
        req.uri().query(),
        &[
            "matched", "provider", "kind", "address", "tenant", "after", "limit",
        ],
    )?;
    let mut filter = FeedbackFilter::default();
    let mut tenant = None;
    let mut after = 0u64;
    let mut limit = DEFAULT_PAGE;
    for (name, value) in params {
        match name.as_str() {
            "matched" => {
                filter.matched = Some(match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ApiError::invalid_query("matched", "true or false")),
                })
            }
            "provider" => {
                let provider = Provider::parse(&value).ok_or_else(|| {
                    ApiError::invalid_query(
                        "provider",
                        "one of ses, sendgrid, postmark, mailgun, resend",
                    )
                })?;
                filter.provider = Some(provider.as_str().to_owned());
            }
            "kind" => {
                let kind = FeedbackKind::parse(&value).ok_or_else(|| {
                    let kinds: Vec<&str> = FeedbackKind::ALL.iter().map(|k| k.as_str()).collect();
                    ApiError::invalid_query("kind", format!("one of {}", kinds.join(", ")))
                })?;
                filter.kind = Some(kind.as_str().to_owned());
            }
            "address" => {
                filter.address = Some(
                    crate::mail::address::normalize(&value)
                        .map_err(|e| ApiError::invalid_query("address", e.to_string()))?,
                )
            }
            "tenant" => tenant = Some(value),
            "after" => {
                after = parse_feedback_id(&value)
                    .ok_or_else(|| ApiError::invalid_query("after", "not a feedback id"))?
            }
            "limit" => limit = page_limit(&value, MAX_PAGE)?,
            _ => unreachable!("query_params only yields known names"),
        }
    }
    // A tenant key sees its own messages' feedback; unmatched events
    // belong to no tenant and only unscoped keys see them.
    filter.tenant = access.tenant_param(tenant)?;
    let page = mail.store.scan_feedback(filter, after, limit).await?;
    let feedback: Vec<Value> = page
        .feedback
        .iter()
        .map(|(id, r)| feedback_json(*id, r))
        .collect();
    let body =
        json!({"feedback": feedback, "next_cursor": page.next_after.map(format_feedback_id)});
    Ok(json(StatusCode::OK, body.to_string()))
}

/// Providers post a few hundred events at most; SendGrid's batches of
/// 10,000 stay well under this.
const MAX_BODY: usize = 1 << 20;

fn provider_not_found(name: &str) -> ApiError {
    let shown: String = name.chars().take(64).collect();
    ApiError::not_found(
        "not_found",
        format!("no feedback provider `{shown}` is configured"),
    )
}

fn refused(error: FeedbackError) -> ApiError {
    match error {
        FeedbackError::Unauthenticated(reason) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", reason)
        }
        FeedbackError::Malformed(reason) => ApiError::bad_request("malformed", reason),
        FeedbackError::Unavailable(reason) => {
            tracing::warn!(%reason, "a feedback request could not be checked now; the provider will retry");
            ApiError::unavailable(reason)
        }
    }
}

/// `POST /feedback/PROVIDER`: checks the request by the provider's scheme
/// on its raw bytes, then applies its events in one transaction and
/// answers once that is durable. A refused request changes nothing.
pub async fn receive(mail: &MailApi, name: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let provider = Provider::parse(name)
        .filter(|p| mail.feedback.is_enabled(*p))
        .ok_or_else(|| provider_not_found(name))?;
    if req.method() != Method::POST {
        return Err(ApiError::method_not_allowed("POST"));
    }
    let (parts, body) = req.into_parts();
    let body = read_body(body, &parts.headers, MAX_BODY, mail.body_timeout).await?;
    let inbound = Inbound {
        headers: &parts.headers,
        body: &body,
        now_ms: clock::now_ms(),
    };
    let settings = &mail.feedback;
    let read = match provider {
        Provider::Ses => match read_ses(mail, &inbound).await? {
            SesRead::Batch(batch) => Ok(batch),
            SesRead::Confirmed => {
                return Ok(json(StatusCode::OK, json!({"confirmed": true}).to_string()))
            }
        },
        Provider::Sendgrid => sendgrid::read(configured(&settings.sendgrid)?, &inbound),
        Provider::Postmark => postmark::read(configured(&settings.postmark)?, &inbound),
        Provider::Mailgun => mailgun::read(configured(&settings.mailgun)?, &inbound),
        Provider::Resend => resend::read(configured(&settings.resend)?, &inbound),
    };
    let batch = read.map_err(refused)?;
    let ignored = batch.ignored.clone();
    // A single-use token is spent even on a request that carries nothing
    // to apply: Mailgun signs the token, not the body, so a captured
    // signature of an ignored event could otherwise carry a forged one.
    if ignored.is_some() && batch.replay_token.is_none() {
        return Ok(ignored_answer(ignored));
    }
    let received = batch.events.len();
    let rules = FeedbackRules {
        retry: MailRetry::new(&mail.settings),
        guard: mail.settings.guard,
    };
    let outcome = mail
        .store
        .write(move |txn| mail_feedback::apply(txn, provider, &batch, &rules, clock::now_ms()))
        .await?;
    match outcome {
        Outcome::Applied {
            applied,
            duplicates,
        } if ignored.is_none() => {
            let body = json!({"received": received, "applied": applied, "duplicates": duplicates});
            Ok(json(StatusCode::OK, body.to_string()))
        }
        Outcome::Applied { .. } => Ok(ignored_answer(ignored)),
        // 406 is what tells Mailgun not to retry.
        Outcome::Replayed => Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "replayed",
            "this request's token was used before; nothing was applied",
        )),
    }
}

fn ignored_answer(what: Option<String>) -> Resp {
    let body = json!({"received": 0, "applied": 0, "duplicates": 0, "ignored": what});
    json(StatusCode::OK, body.to_string())
}

fn configured<T>(settings: &Option<T>) -> Result<&T, ApiError> {
    settings
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("the provider's settings are missing"))
}

enum SesRead {
    Batch(Batch),
    /// An allowed topic's subscription request, confirmed.
    Confirmed,
}

/// SNS: the envelope is checked (topic, certificate host, freshness), the
/// signing certificate fetched over HTTPS (or taken from the cache), the
/// signature verified; only then is a subscription confirmed or a
/// notification read.
async fn read_ses(mail: &MailApi, inbound: &Inbound<'_>) -> Result<SesRead, ApiError> {
    let settings = configured(&mail.feedback.ses)?;
    let fetcher = mail
        .sns
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("the SNS certificate fetcher is not running"))?;
    let envelope = ses::parse_envelope(settings, inbound).map_err(refused)?;
    let certificate = fetcher
        .certificate(&envelope.signing_cert_url)
        .await
        .map_err(refused)?;
    ses::verify(&envelope, &certificate).map_err(refused)?;
    match envelope.kind {
        SnsKind::Notification => ses::events(&envelope).map(SesRead::Batch).map_err(refused),
        SnsKind::SubscriptionConfirmation if settings.auto_confirm => {
            let url = envelope.subscribe_url.as_deref().ok_or_else(|| {
                refused(FeedbackError::Malformed(
                    "a SubscriptionConfirmation without SubscribeURL".into(),
                ))
            })?;
            if !ses::url_allowed(settings, url) {
                return Err(refused(FeedbackError::Unauthenticated(
                    "the SubscribeURL is not HTTPS on an allowed host".into(),
                )));
            }
            fetcher.confirm(url).await.map_err(|reason| {
                tracing::warn!(topic = %envelope.topic_arn, %reason, "confirming the SNS subscription failed");
                ApiError::unavailable(format!("confirming the subscription failed: {reason}"))
            })?;
            tracing::info!(topic = %envelope.topic_arn, "SNS subscription confirmed");
            Ok(SesRead::Confirmed)
        }
        SnsKind::SubscriptionConfirmation | SnsKind::UnsubscribeConfirmation => {
            Ok(SesRead::Batch(Batch {
                ignored: Some(format!("{:?}", envelope.kind)),
                ..Batch::default()
            }))
        }
    }
}
