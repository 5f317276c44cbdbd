//! ESP feedback: the providers' webhooks (`POST /feedback/PROVIDER`, on
//! both listeners, authenticated by each provider's own scheme) and the
//! list of what they reported (`GET /v1/feedback`).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use super::access::Access;
use super::error::ApiError;
use super::http::{json, page_limit, query_params, Resp};
use super::{read, AppState};
use crate::clock;
use crate::feedback::{FeedbackKind, Provider};
use crate::mail::ledger::format_email_id;
use crate::mail::feedback::{format_feedback_id, parse_feedback_id};
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
    state: Arc<AppState>,
    access: &Access,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let params = query_params(
        req.uri().query(),
        &["matched", "provider", "kind", "address", "tenant", "after", "limit"],
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
    let page = read(&state, move |txn| txn.scan_feedback(&filter, after, limit)).await?;
    let feedback: Vec<Value> = page
        .feedback
        .iter()
        .map(|(id, r)| feedback_json(*id, r))
        .collect();
    let body = json!({"feedback": feedback, "next_cursor": page.next_after.map(format_feedback_id)});
    Ok(json(StatusCode::OK, body.to_string()))
}
