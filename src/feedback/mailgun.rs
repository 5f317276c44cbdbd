//! Mailgun's webhooks: one JSON event per request whose `signature` object
//! holds a hex HMAC-SHA256 over timestamp ‖ token; the token is single-use.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::Sha256;

use super::common::{self, malformed, unauthenticated};
use super::settings::MailgunSettings;
use super::{Batch, FeedbackError, FeedbackEvent, FeedbackKind, Inbound, Provider};

#[derive(Deserialize)]
struct Body<'a> {
    signature: Option<Value>,
    #[serde(rename = "event-data", borrow)]
    event_data: Option<&'a RawValue>,
}

/// Checks the signature, then reads the event; the batch carries the token
/// so that the ledger refuses it a second time.
pub fn read(settings: &MailgunSettings, inbound: &Inbound) -> Result<Batch, FeedbackError> {
    let text =
        std::str::from_utf8(inbound.body).map_err(|_| malformed("the body is not UTF-8 text"))?;
    let body: Body = serde_json::from_str(text).map_err(|e| {
        malformed(format!(
            "the body is not a Mailgun webhook JSON object: {e}"
        ))
    })?;
    let token = authenticate(settings, body.signature.as_ref(), inbound.now_ms)?;
    let raw = body
        .event_data
        .ok_or_else(|| malformed("`event-data` is missing"))?
        .get();
    let item: Value = serde_json::from_str(raw).map_err(|e| malformed(e.to_string()))?;
    if !item.is_object() {
        return Err(malformed("`event-data` is not a JSON object"));
    }
    let mut batch = match event(&item, raw)? {
        Some(event) => common::batch(vec![event], &[])?,
        None => {
            let name = item
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or("an event without a type");
            common::batch(Vec::new(), &[name.to_owned()])?
        }
    };
    batch.replay_token = Some(token);
    Ok(batch)
}

/// The token, once the signature over it is good and fresh.
fn authenticate(
    settings: &MailgunSettings,
    signature: Option<&Value>,
    now_ms: i64,
) -> Result<String, FeedbackError> {
    let signature = signature.ok_or_else(|| unauthenticated("`signature` is missing"))?;
    let field = |key: &str| {
        signature
            .get(key)
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .ok_or_else(|| unauthenticated(format!("`signature.{key}` is missing")))
    };
    let timestamp = field("timestamp")?;
    let token = field("token")?;
    let given = field("signature")?;
    let signed_ms = common::unix_seconds_ms(&timestamp)
        .ok_or_else(|| unauthenticated("`signature.timestamp` is not Unix seconds"))?;
    common::check_fresh(signed_ms, now_ms)?;
    let given =
        decode_hex(&given).ok_or_else(|| unauthenticated("`signature.signature` is not hex"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(settings.signing_key.as_bytes())
        .map_err(|_| unauthenticated("the configured Mailgun signing key is unusable"))?;
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    mac.verify_slice(&given)
        .map_err(|_| unauthenticated("the Mailgun signature does not match"))?;
    Ok(token)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digits = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(digits, 16).ok()
        })
        .collect()
}

/// Mailgun's reasons for a permanent failure that mean "on our own
/// suppression list", not "this mailbox bounced now".
const SUPPRESSION_REASONS: [&str; 3] = [
    "suppress-bounce",
    "suppress-complaint",
    "suppress-unsubscribe",
];

/// The normalised event, `None` for a type Herald has no use for.
fn event(item: &Value, raw: &str) -> Result<Option<FeedbackEvent>, FeedbackError> {
    let str_of = |path: &[&str]| common::str_at(item, path);
    let status = common::detail(&[
        str_of(&["delivery-status", "description"]),
        str_of(&["delivery-status", "message"]),
    ]);
    let kind = match str_of(&["event"]) {
        Some("failed") => match (str_of(&["severity"]), str_of(&["reason"])) {
            (Some("permanent"), Some(reason)) if SUPPRESSION_REASONS.contains(&reason) => {
                FeedbackKind::EspSuppressed
            }
            (Some("permanent"), _) => FeedbackKind::HardBounce,
            (Some("temporary"), _) => FeedbackKind::SoftBounce,
            (other, _) => {
                return Err(malformed(format!(
                    "a failed event's severity is {other:?}, not permanent or temporary"
                )))
            }
        },
        Some("complained") => FeedbackKind::Complaint,
        Some("delivered") => FeedbackKind::Delivered,
        Some("opened") => FeedbackKind::Opened,
        Some("clicked") => FeedbackKind::Clicked,
        _ => return Ok(None),
    };
    let detail = match kind {
        FeedbackKind::Clicked => common::detail(&[str_of(&["url"])]),
        _ => common::detail(&[str_of(&["severity"]), str_of(&["reason"]), Some(&status)]),
    };
    let event_id =
        common::text(item.get("id")).ok_or_else(|| malformed("`event-data.id` is missing"))?;
    let address = common::text(item.get("recipient"))
        .ok_or_else(|| malformed("`event-data.recipient` is missing"))?;
    let message_id = common::text(
        item.get("message")
            .and_then(|m| m.get("headers"))
            .and_then(|h| h.get("message-id")),
    );
    Ok(Some(FeedbackEvent {
        provider: Provider::Mailgun,
        event_id,
        kind,
        address,
        herald_id: common::text(item.get("user-variables").and_then(|v| v.get("herald_id"))),
        // Mailgun names a message by its Message-ID header: it is both.
        message_id_header: message_id.clone(),
        provider_message_id: message_id,
        occurred_at_ms: item.get("timestamp").and_then(common::json_seconds_ms),
        detail,
        raw: raw.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::test_support::{NOW_MS, NOW_SECS};
    use hyper::HeaderMap;

    const KEY: &str = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";
    const TOKEN: &str = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";

    fn settings() -> MailgunSettings {
        MailgunSettings {
            signing_key: KEY.into(),
        }
    }

    fn sign(timestamp: &str, token: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
        mac.update(timestamp.as_bytes());
        mac.update(token.as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Shaped like Mailgun's documented `failed` example.
    fn body(timestamp: &str, signature: &str, event_data: &str) -> String {
        format!(
            r#"{{"signature":{{"timestamp":"{timestamp}","token":"{TOKEN}","signature":"{signature}"}},"event-data":{event_data}}}"#
        )
    }

    const FAILED: &str = r#"{
    "id": "G9Bn5sl1TC6nu79C8C0bwg",
    "timestamp": 1772366390.329574,
    "log-level": "error",
    "event": "failed",
    "severity": "permanent",
    "reason": "bounce",
    "recipient": "alice@example.com",
    "recipient-domain": "example.com",
    "user-variables": {"herald_id": "msg_0000000000000005"},
    "message": {"headers": {"to": "Alice <alice@example.com>", "message-id": "0000000000000005.ff00@example.org", "from": "Bob <bob@example.org>", "subject": "Test permanent_fail webhook"}, "attachments": [], "size": 111},
    "delivery-status": {"attempt-no": 1, "message": "No Such User Here", "code": 550, "description": "", "session-seconds": 0.0},
    "flags": {"is-routed": false, "is-authenticated": true, "is-system-test": false, "is-test-mode": false}
}"#;

    fn read_body(body: &str) -> Result<Batch, FeedbackError> {
        read(
            &settings(),
            &Inbound {
                headers: &HeaderMap::new(),
                body: body.as_bytes(),
                now_ms: NOW_MS,
            },
        )
    }

    fn signed(event_data: &str) -> String {
        body(NOW_SECS, &sign(NOW_SECS, TOKEN), event_data)
    }

    #[test]
    fn a_signed_permanent_failure_is_a_hard_bounce_with_its_token() {
        let batch = read_body(&signed(FAILED)).unwrap();
        assert_eq!(batch.replay_token.as_deref(), Some(TOKEN));
        assert_eq!(batch.ignored, None);
        let [event] = batch.events.as_slice() else {
            panic!("{batch:?}")
        };
        assert_eq!(event.provider, Provider::Mailgun);
        assert_eq!(event.kind, FeedbackKind::HardBounce);
        assert_eq!(event.event_id, "G9Bn5sl1TC6nu79C8C0bwg");
        assert_eq!(event.address, "alice@example.com");
        assert_eq!(event.herald_id.as_deref(), Some("msg_0000000000000005"));
        assert_eq!(
            event.message_id_header.as_deref(),
            Some("0000000000000005.ff00@example.org")
        );
        assert_eq!(event.occurred_at_ms, Some(1_772_366_390_330));
        assert_eq!(event.detail, "permanent; bounce; No Such User Here");
        assert_eq!(event.raw, FAILED);
    }

    #[test]
    fn each_event_maps_to_its_kind() {
        let cases = [
            (
                FAILED.replace("\"permanent\"", "\"temporary\""),
                FeedbackKind::SoftBounce,
            ),
            (
                FAILED.replace("\"bounce\"", "\"suppress-bounce\""),
                FeedbackKind::EspSuppressed,
            ),
            (
                FAILED.replace("\"bounce\"", "\"suppress-complaint\""),
                FeedbackKind::EspSuppressed,
            ),
            (
                FAILED.replace("\"failed\"", "\"complained\""),
                FeedbackKind::Complaint,
            ),
            (
                FAILED.replace("\"failed\"", "\"delivered\""),
                FeedbackKind::Delivered,
            ),
            (
                FAILED.replace("\"failed\"", "\"opened\""),
                FeedbackKind::Opened,
            ),
            (
                FAILED.replace("\"failed\"", "\"clicked\""),
                FeedbackKind::Clicked,
            ),
        ];
        for (event_data, kind) in cases {
            let batch = read_body(&signed(&event_data)).unwrap();
            assert_eq!(batch.events[0].kind, kind, "{event_data}");
        }
    }

    #[test]
    fn an_altered_signature_token_or_stale_timestamp_is_unauthenticated() {
        let good = signed(FAILED);
        let unauthenticated =
            |body: &str| matches!(read_body(body), Err(FeedbackError::Unauthenticated(_)));
        assert!(unauthenticated(
            &good.replace(TOKEN, &TOKEN.replace('a', "b"))
        ));
        let flipped = sign(NOW_SECS, TOKEN).replace('0', "1");
        assert!(unauthenticated(&body(NOW_SECS, &flipped, FAILED)));
        let stale = (NOW_MS / 1000 - 301).to_string();
        assert!(unauthenticated(&body(&stale, &sign(&stale, TOKEN), FAILED)));
        assert!(unauthenticated(&body(NOW_SECS, "zz", FAILED)));
        assert!(unauthenticated(&format!(r#"{{"event-data":{FAILED}}}"#)));
        // The signature covers timestamp and token only: a signed request's
        // event data is trusted as Mailgun's, as Mailgun documents.
        assert!(read_body(&good.replace("alice@", "carol@")).is_ok());
    }

    #[test]
    fn an_unreadable_body_is_malformed() {
        for body in [
            "",
            "[]",
            "{",
            "\"x\"",
            &signed("[1]"),
            &signed(r#"{"event":"failed"}"#),
        ] {
            assert!(
                matches!(read_body(body), Err(FeedbackError::Malformed(_))),
                "{body}"
            );
        }
        assert!(matches!(
            read_body(&format!(
                r#"{{"signature":{{"timestamp":"{NOW_SECS}","token":"{TOKEN}","signature":"{}"}}}}"#,
                sign(NOW_SECS, TOKEN)
            )),
            Err(FeedbackError::Malformed(_))
        ));
    }

    #[test]
    fn an_event_herald_has_no_use_for_is_ignored_but_its_token_kept() {
        let accepted = FAILED.replace("\"failed\"", "\"accepted\"");
        let batch = read_body(&signed(&accepted)).unwrap();
        assert!(batch.events.is_empty());
        assert_eq!(batch.ignored.as_deref(), Some("accepted"));
        assert_eq!(batch.replay_token.as_deref(), Some(TOKEN));
    }
}
