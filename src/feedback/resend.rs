//! Resend's webhooks: Standard Webhooks (Svix) signatures over
//! `id.timestamp.body`, one event per request about one or more recipients.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::common::{self, malformed, unauthenticated};
use super::settings::ResendSettings;
use super::{Batch, FeedbackError, FeedbackEvent, FeedbackKind, Inbound, Provider};

/// Checks the signature, then reads one event per recipient.
pub fn read(settings: &ResendSettings, inbound: &Inbound) -> Result<Batch, FeedbackError> {
    let message_id = authenticate(settings, inbound)?;
    let raw =
        std::str::from_utf8(inbound.body).map_err(|_| malformed("the body is not UTF-8 text"))?;
    let item: Value =
        serde_json::from_str(raw).map_err(|e| malformed(format!("the body is not JSON: {e}")))?;
    let event_type = item
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("`type` is missing"))?;
    let Some((kind, detail)) = classify(event_type, &item)? else {
        return common::batch(Vec::new(), &[event_type.to_owned()]);
    };
    let data = &item["data"];
    let recipients: Vec<String> = match data.get("to") {
        Some(Value::Array(to)) => to.iter().filter_map(|r| common::text(Some(r))).collect(),
        Some(one @ Value::String(_)) => common::text(Some(one)).into_iter().collect(),
        _ => Vec::new(),
    };
    if recipients.is_empty() {
        return Err(malformed("`data.to` names no recipient"));
    }
    common::check_count(recipients.len())?;
    let herald_id = herald_id(data);
    let occurred_at_ms = common::text(item.get("created_at"))
        .as_deref()
        .and_then(common::rfc3339_ms);
    let events = recipients
        .into_iter()
        .map(|address| FeedbackEvent {
            provider: Provider::Resend,
            event_id: format!("{message_id}:{address}"),
            kind,
            address,
            herald_id: herald_id.clone(),
            message_id_header: common::echoed_header(data, "message-id"),
            provider_message_id: common::text(data.get("email_id")),
            occurred_at_ms,
            detail: detail.clone(),
            raw: super::raw_excerpt(raw),
        })
        .collect();
    common::batch(events, &[])
}

/// Svix sent the first names; the Standard Webhooks spec the second.
fn either_header<'a>(inbound: &Inbound<'a>, name: &str) -> Option<&'a str> {
    common::header(inbound, &format!("svix-{name}"))
        .or_else(|| common::header(inbound, &format!("webhook-{name}")))
}

/// The message id, once one of the signatures is good and fresh.
fn authenticate(settings: &ResendSettings, inbound: &Inbound) -> Result<String, FeedbackError> {
    let id = either_header(inbound, "id")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| unauthenticated("the svix-id header is missing"))?;
    let timestamp = either_header(inbound, "timestamp")
        .ok_or_else(|| unauthenticated("the svix-timestamp header is missing"))?;
    let signatures = either_header(inbound, "signature")
        .ok_or_else(|| unauthenticated("the svix-signature header is missing"))?;
    let signed_ms = common::unix_seconds_ms(timestamp)
        .ok_or_else(|| unauthenticated("svix-timestamp is not Unix seconds"))?;
    common::check_fresh(signed_ms, inbound.now_ms)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&settings.secret)
        .map_err(|_| unauthenticated("the configured Resend secret is unusable"))?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(inbound.body);
    // Several `v1,` signatures during a secret rotation: one good is enough.
    let good = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|signature| mac.clone().verify_slice(&signature).is_ok());
    if !good {
        return Err(unauthenticated("no Resend signature matches the body"));
    }
    Ok(id.to_owned())
}

/// The kind and detail of an event type Herald uses.
fn classify(
    event_type: &str,
    item: &Value,
) -> Result<Option<(FeedbackKind, String)>, FeedbackError> {
    let str_of = |path: &[&str]| common::str_at(item, path);
    Ok(Some(match event_type {
        "email.bounced" => {
            let bounce_type = str_of(&["data", "bounce", "type"]);
            let sub_type = str_of(&["data", "bounce", "subType"]);
            let kind = match (bounce_type, sub_type) {
                (_, Some("Suppressed")) => FeedbackKind::EspSuppressed,
                (Some("Permanent"), _) => FeedbackKind::HardBounce,
                (Some("Transient" | "Undetermined"), _) => FeedbackKind::SoftBounce,
                (other, _) => {
                    return Err(malformed(format!(
                        "`data.bounce.type` is {other:?}, not Permanent, Transient or Undetermined"
                    )))
                }
            };
            let detail = common::detail(&[
                bounce_type,
                sub_type,
                str_of(&["data", "bounce", "message"]),
            ]);
            (kind, detail)
        }
        "email.complained" => (FeedbackKind::Complaint, String::new()),
        "email.delivered" => (FeedbackKind::Delivered, String::new()),
        "email.delivery_delayed" => (FeedbackKind::Deferred, String::new()),
        "email.opened" => (FeedbackKind::Opened, String::new()),
        "email.clicked" => (
            FeedbackKind::Clicked,
            common::detail(&[str_of(&["data", "click", "link"])]),
        ),
        _ => return Ok(None),
    }))
}

/// Our id from the tags (an object, or `[{name, value}]`) or the
/// `X-Herald-Id` header echoed back.
fn herald_id(data: &Value) -> Option<String> {
    let from_tags = match data.get("tags") {
        Some(Value::Object(tags)) => common::text(tags.get("herald_id")),
        Some(Value::Array(tags)) => tags
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("herald_id"))
            .and_then(|t| common::text(t.get("value"))),
        _ => None,
    };
    from_tags.or_else(|| common::echoed_header(data, "x-herald-id"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::test_support::{NOW_MS, NOW_SECS};
    use hyper::HeaderMap;

    use crate::webhooks::signing::{self, Secret};

    /// A Standard Webhooks secret as Resend shows it; the tests sign with
    /// Herald's own outbound signer, checked against the spec's vectors.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn settings() -> ResendSettings {
        ResendSettings {
            secret: STANDARD.decode(&SECRET["whsec_".len()..]).unwrap(),
        }
    }

    fn sign(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
        let secret = Secret::parse(secret).unwrap();
        signing::sign(&secret, id, timestamp.parse().unwrap(), body)
    }

    fn headers(prefix: &str, id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            hyper::header::HeaderName::from_bytes(format!("{prefix}-id").as_bytes()).unwrap(),
            id.parse().unwrap(),
        );
        headers.insert(
            hyper::header::HeaderName::from_bytes(format!("{prefix}-timestamp").as_bytes())
                .unwrap(),
            timestamp.parse().unwrap(),
        );
        headers.insert(
            hyper::header::HeaderName::from_bytes(format!("{prefix}-signature").as_bytes())
                .unwrap(),
            signature.parse().unwrap(),
        );
        headers
    }

    const ID: &str = "msg_2pJQ8LQ7Xbv0Wc0gVDNtuH8Anrn";

    /// Shaped like Resend's documented `email.bounced` example.
    const BOUNCED: &str = r#"{
  "type": "email.bounced",
  "created_at": "2026-03-01T11:59:41.126Z",
  "data": {
    "broadcast_id": "8b146471-e88e-4322-86af-016cd36fd216",
    "created_at": "2026-03-01T11:59:40.000Z",
    "email_id": "56761188-7520-42d8-8898-ff6fc54ce618",
    "from": "Acme <onboarding@example.org>",
    "to": ["delivered@example.com", "second@example.com"],
    "subject": "Sending this example",
    "headers": [{"name": "X-Herald-Id", "value": "msg_0000000000000006"}],
    "bounce": {
      "message": "The recipient's email provider sent a hard bounce message.",
      "subType": "General",
      "type": "Permanent"
    },
    "tags": {"category": "confirm_email"}
  }
}"#;

    fn read_with(headers: &HeaderMap, body: &str) -> Result<Batch, FeedbackError> {
        read(
            &settings(),
            &Inbound {
                headers,
                body: body.as_bytes(),
                now_ms: NOW_MS,
            },
        )
    }

    fn signed(body: &str) -> Result<Batch, FeedbackError> {
        let signature = sign(SECRET, ID, NOW_SECS, body.as_bytes());
        read_with(&headers("svix", ID, NOW_SECS, &signature), body)
    }

    #[test]
    fn a_signed_bounce_is_one_event_per_recipient() {
        let batch = signed(BOUNCED).unwrap();
        assert_eq!(batch.ignored, None);
        let addresses: Vec<&str> = batch.events.iter().map(|e| e.address.as_str()).collect();
        assert_eq!(addresses, ["delivered@example.com", "second@example.com"]);
        let event = &batch.events[0];
        assert_eq!(event.provider, Provider::Resend);
        assert_eq!(event.kind, FeedbackKind::HardBounce);
        assert_eq!(event.event_id, format!("{ID}:delivered@example.com"));
        assert_eq!(event.herald_id.as_deref(), Some("msg_0000000000000006"));
        assert_eq!(
            event.provider_message_id.as_deref(),
            Some("56761188-7520-42d8-8898-ff6fc54ce618")
        );
        assert_eq!(event.occurred_at_ms, Some(1_772_366_381_126));
        assert!(
            event
                .detail
                .starts_with("Permanent; General; The recipient"),
            "{}",
            event.detail
        );
        assert_eq!(event.raw, BOUNCED);
    }

    #[test]
    fn webhook_headers_and_rotated_signatures_are_accepted() {
        let body = BOUNCED.as_bytes();
        let old = sign(&Secret::generate().to_string(), ID, NOW_SECS, body);
        let new = sign(SECRET, ID, NOW_SECS, body);
        let both = format!("{old} {new}");
        assert!(read_with(&headers("webhook", ID, NOW_SECS, &both), BOUNCED).is_ok());
    }

    #[test]
    fn each_type_maps_to_its_kind_and_tags_carry_our_id() {
        let cases = [
            (
                BOUNCED.replace("\"Permanent\"", "\"Transient\""),
                FeedbackKind::SoftBounce,
            ),
            (
                BOUNCED.replace("\"General\"", "\"Suppressed\""),
                FeedbackKind::EspSuppressed,
            ),
            (
                BOUNCED.replace("email.bounced", "email.complained"),
                FeedbackKind::Complaint,
            ),
            (
                BOUNCED.replace("email.bounced", "email.delivered"),
                FeedbackKind::Delivered,
            ),
            (
                BOUNCED.replace("email.bounced", "email.delivery_delayed"),
                FeedbackKind::Deferred,
            ),
            (
                BOUNCED.replace("email.bounced", "email.opened"),
                FeedbackKind::Opened,
            ),
            (
                BOUNCED.replace("email.bounced", "email.clicked"),
                FeedbackKind::Clicked,
            ),
        ];
        for (body, kind) in cases {
            assert_eq!(signed(&body).unwrap().events[0].kind, kind, "{body}");
        }
        let tagged = BOUNCED.replace(
            r#""tags": {"category": "confirm_email"}"#,
            r#""tags": [{"name": "herald_id", "value": "msg_0000000000000007"}]"#,
        );
        let batch = signed(&tagged).unwrap();
        assert_eq!(
            batch.events[0].herald_id.as_deref(),
            Some("msg_0000000000000007")
        );
    }

    #[test]
    fn an_altered_body_signature_or_stale_timestamp_is_unauthenticated() {
        let signature = sign(SECRET, ID, NOW_SECS, BOUNCED.as_bytes());
        let unauthenticated =
            |r: Result<Batch, FeedbackError>| matches!(r, Err(FeedbackError::Unauthenticated(_)));
        let good = headers("svix", ID, NOW_SECS, &signature);
        assert!(unauthenticated(read_with(
            &good,
            &BOUNCED.replace("second@", "third@")
        )));
        let other_id = headers("svix", "msg_other", NOW_SECS, &signature);
        assert!(unauthenticated(read_with(&other_id, BOUNCED)));
        let broken = headers("svix", ID, NOW_SECS, &signature.replace("v1,", "v1,AA"));
        assert!(unauthenticated(read_with(&broken, BOUNCED)));
        let v2 = headers("svix", ID, NOW_SECS, &signature.replace("v1,", "v2,"));
        assert!(unauthenticated(read_with(&v2, BOUNCED)));
        let stale = (NOW_MS / 1000 + 301).to_string();
        let stale_signature = sign(SECRET, ID, &stale, BOUNCED.as_bytes());
        assert!(unauthenticated(read_with(
            &headers("svix", ID, &stale, &stale_signature),
            BOUNCED
        )));
        assert!(unauthenticated(read_with(&HeaderMap::new(), BOUNCED)));
    }

    #[test]
    fn an_unreadable_signed_body_is_malformed() {
        for body in [
            "",
            "{",
            "[]",
            r#"{"data":{}}"#,
            r#"{"type":"email.bounced","data":{"to":["a@example.com"]}}"#,
            r#"{"type":"email.delivered","data":{"to":[]}}"#,
        ] {
            assert!(
                matches!(signed(body), Err(FeedbackError::Malformed(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn types_without_feedback_are_ignored() {
        let sent = BOUNCED.replace("email.bounced", "email.sent");
        let batch = signed(&sent).unwrap();
        assert!(batch.events.is_empty());
        assert_eq!(batch.ignored.as_deref(), Some("email.sent"));
    }
}
