//! Postmark's webhooks: HTTP basic auth set in the webhook's URL, one JSON
//! object per request, its kind in `RecordType`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::common::{self, malformed, unauthenticated};
use super::settings::PostmarkSettings;
use super::{Batch, FeedbackError, FeedbackEvent, FeedbackKind, Inbound, Provider};
use crate::constant_time;

/// Checks the credentials, then reads the one event.
pub fn read(settings: &PostmarkSettings, inbound: &Inbound) -> Result<Batch, FeedbackError> {
    authenticate(settings, inbound)?;
    let raw =
        std::str::from_utf8(inbound.body).map_err(|_| malformed("the body is not UTF-8 text"))?;
    let item: Value =
        serde_json::from_str(raw).map_err(|e| malformed(format!("the body is not JSON: {e}")))?;
    if !item.is_object() {
        return Err(malformed("the body is not a JSON object"));
    }
    match event(&item, raw)? {
        Read::Event(event) => common::batch(vec![event], &[]),
        Read::Ignored(what) => common::batch(Vec::new(), &[what]),
    }
}

fn authenticate(settings: &PostmarkSettings, inbound: &Inbound) -> Result<(), FeedbackError> {
    let value = common::header(inbound, "authorization")
        .ok_or_else(|| unauthenticated("basic auth credentials are missing"))?;
    let (scheme, encoded) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(unauthenticated(
            "the Authorization header is not basic auth",
        ));
    }
    let given = STANDARD
        .decode(encoded.trim())
        .map_err(|_| unauthenticated("the basic auth credentials are not base64"))?;
    let expected = format!("{}:{}", settings.username, settings.password);
    // Digests have one length whatever was sent, so the comparison's time
    // says nothing about the credentials' length either.
    let digest = |bytes: &[u8]| -> [u8; 32] { Sha256::digest(bytes).into() };
    if !constant_time::eq(&digest(&given), &digest(expected.as_bytes())) {
        return Err(unauthenticated("wrong basic auth credentials"));
    }
    Ok(())
}

enum Read {
    Event(FeedbackEvent),
    /// A record Herald has no use for, and what it was.
    Ignored(String),
}

fn event(item: &Value, raw: &str) -> Result<Read, FeedbackError> {
    let str_of = |key: &str| item.get(key).and_then(Value::as_str);
    let record_type = str_of("RecordType").unwrap_or("");
    let (kind, detail, time_key) = match record_type {
        "Bounce" => {
            let type_code = item.get("TypeCode").and_then(Value::as_u64);
            let Some(kind) = type_code.and_then(bounce_kind) else {
                return Ok(Read::Ignored(format!(
                    "bounce type {}",
                    str_of("Type").unwrap_or("unknown")
                )));
            };
            let detail =
                common::detail(&[str_of("Type"), str_of("Description"), str_of("Details")]);
            (kind, detail, "BouncedAt")
        }
        "SpamComplaint" => (
            FeedbackKind::Complaint,
            common::detail(&[str_of("Type"), str_of("Details")]),
            "BouncedAt",
        ),
        "Delivery" => (
            FeedbackKind::Delivered,
            common::detail(&[str_of("Details")]),
            "DeliveredAt",
        ),
        "Open" => (FeedbackKind::Opened, String::new(), "ReceivedAt"),
        "Click" => (
            FeedbackKind::Clicked,
            common::detail(&[str_of("OriginalLink")]),
            "ReceivedAt",
        ),
        "SubscriptionChange" => {
            if item.get("SuppressSending").and_then(Value::as_bool) != Some(true) {
                return Ok(Read::Ignored(
                    "a subscription change that lifts a suppression".into(),
                ));
            }
            (
                FeedbackKind::EspSuppressed,
                common::detail(&[str_of("SuppressionReason"), str_of("Origin")]),
                "ChangedAt",
            )
        }
        "" => return Err(malformed("`RecordType` is missing")),
        other => return Ok(Read::Ignored(format!("record type {other}"))),
    };
    let address = common::text(item.get("Email"))
        .or_else(|| common::text(item.get("Recipient")))
        .ok_or_else(|| malformed("`Email` or `Recipient` is missing"))?;
    let message_id = common::text(item.get("MessageID"));
    let occurred = common::text(item.get(time_key));
    // Bounces and complaints have an `ID`; deliveries, opens, clicks and
    // subscription changes do not, and are told apart by what they are
    // about and when.
    let event_id = match common::id_text(item.get("ID")) {
        Some(id) => id,
        None => format!(
            "{}:{record_type}:{address}:{}",
            message_id.as_deref().unwrap_or(""),
            occurred.as_deref().unwrap_or("")
        ),
    };
    Ok(Read::Event(FeedbackEvent {
        provider: Provider::Postmark,
        event_id,
        kind,
        address,
        herald_id: common::text(item.get("Metadata").and_then(|m| m.get("herald-id"))),
        message_id_header: None,
        provider_message_id: message_id,
        occurred_at_ms: occurred.as_deref().and_then(common::rfc3339_ms),
        detail,
        raw: raw.to_owned(),
    }))
}

/// Postmark's bounce `TypeCode`s that say something about the address or
/// the sender; the rest (auto-replies, challenge mails, unsubscribe
/// requests, …) are not failures.
fn bounce_kind(type_code: u64) -> Option<FeedbackKind> {
    Some(match type_code {
        1 | 100000 => FeedbackKind::HardBounce, // HardBounce, BadEmailAddress
        2 | 4096 | 16384 => FeedbackKind::SoftBounce, // Transient, SoftBounce, DnsError
        100006 => FeedbackKind::PolicyBlock,    // Blocked
        100001 => FeedbackKind::Complaint,      // SpamComplaint
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::test_support::NOW_MS;
    use hyper::HeaderMap;

    fn settings() -> PostmarkSettings {
        PostmarkSettings {
            username: "postmark".into(),
            password: "s3cret:pass".into(),
        }
    }

    fn auth(user_pass: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", STANDARD.encode(user_pass));
        headers.insert("authorization", value.parse().unwrap());
        headers
    }

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

    fn good(body: &str) -> Batch {
        read_with(&auth("postmark:s3cret:pass"), body).unwrap()
    }

    /// Postmark's documented bounce example, with our metadata.
    const BOUNCE: &str = r#"{
  "RecordType": "Bounce",
  "MessageStream": "outbound",
  "ID": 4323372036854775807,
  "Type": "HardBounce",
  "TypeCode": 1,
  "Name": "Hard bounce",
  "Tag": "Invitation",
  "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
  "Metadata": {"herald-id": "msg_0000000000000003", "a_key": "a_value"},
  "ServerID": 23,
  "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
  "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
  "Email": "john@example.com",
  "From": "sender@example.com",
  "BouncedAt": "2026-03-01T11:59:50.2735393Z",
  "DumpAvailable": true,
  "Inactive": true,
  "CanActivate": true,
  "Subject": "Test subject",
  "Content": "Return-Path: <>"
}"#;

    #[test]
    fn a_hard_bounce_reads_with_its_ids_and_time() {
        let batch = good(BOUNCE);
        assert_eq!(batch.ignored, None);
        let [event] = batch.events.as_slice() else {
            panic!("{batch:?}")
        };
        assert_eq!(event.provider, Provider::Postmark);
        assert_eq!(event.kind, FeedbackKind::HardBounce);
        assert_eq!(event.event_id, "4323372036854775807");
        assert_eq!(event.address, "john@example.com");
        assert_eq!(event.herald_id.as_deref(), Some("msg_0000000000000003"));
        assert_eq!(
            event.provider_message_id.as_deref(),
            Some("883953f4-6105-42a2-a16a-77a8eac79483")
        );
        assert_eq!(event.occurred_at_ms, Some(1_772_366_390_273));
        assert!(
            event.detail.starts_with("HardBounce; The server"),
            "{}",
            event.detail
        );
        assert_eq!(event.raw, BOUNCE);
    }

    #[test]
    fn every_record_type_maps_to_its_kind() {
        let cases = [
            (BOUNCE.replace("\"TypeCode\": 1", "\"TypeCode\": 4096"), FeedbackKind::SoftBounce),
            (BOUNCE.replace("\"TypeCode\": 1", "\"TypeCode\": 16384"), FeedbackKind::SoftBounce),
            (BOUNCE.replace("\"TypeCode\": 1", "\"TypeCode\": 100000"), FeedbackKind::HardBounce),
            (BOUNCE.replace("\"TypeCode\": 1", "\"TypeCode\": 100006"), FeedbackKind::PolicyBlock),
            (BOUNCE.replace("\"TypeCode\": 1", "\"TypeCode\": 100001"), FeedbackKind::Complaint),
            (
                r#"{"RecordType":"SpamComplaint","ID":42,"Type":"SpamComplaint","TypeCode":512,"MessageID":"m1","Email":"a@example.com","BouncedAt":"2026-03-01T11:59:00Z"}"#.into(),
                FeedbackKind::Complaint,
            ),
            (
                r#"{"RecordType":"Delivery","ServerID":23,"MessageStream":"outbound","MessageID":"m2","Recipient":"b@example.com","Tag":"welcome","DeliveredAt":"2026-03-01T11:59:00Z","Details":"Test delivery webhook details","Metadata":{"herald-id":"msg_0000000000000004"}}"#.into(),
                FeedbackKind::Delivered,
            ),
            (
                r#"{"RecordType":"Open","FirstOpen":true,"MessageID":"m3","Recipient":"c@example.com","ReceivedAt":"2026-03-01T11:59:00Z"}"#.into(),
                FeedbackKind::Opened,
            ),
            (
                r#"{"RecordType":"Click","ClickLocation":"HTML","OriginalLink":"https://example.org","MessageID":"m4","Recipient":"d@example.com","ReceivedAt":"2026-03-01T11:59:00Z"}"#.into(),
                FeedbackKind::Clicked,
            ),
            (
                r#"{"RecordType":"SubscriptionChange","MessageID":"m5","ServerID":23,"ChangedAt":"2026-03-01T11:59:00Z","Recipient":"e@example.com","Origin":"Recipient","SuppressSending":true,"SuppressionReason":"HardBounce"}"#.into(),
                FeedbackKind::EspSuppressed,
            ),
        ];
        for (body, kind) in cases {
            let batch = good(&body);
            assert_eq!(batch.events.len(), 1, "{body}");
            assert_eq!(batch.events[0].kind, kind, "{body}");
        }
        let delivery = &good(
            r#"{"RecordType":"Delivery","MessageID":"m2","Recipient":"b@example.com","DeliveredAt":"2026-03-01T11:59:00Z"}"#,
        )
        .events[0];
        assert_eq!(
            delivery.event_id,
            "m2:Delivery:b@example.com:2026-03-01T11:59:00Z"
        );
    }

    #[test]
    fn wrong_or_missing_credentials_are_unauthenticated() {
        for headers in [
            HeaderMap::new(),
            auth("postmark:s3cret"),
            auth("postmark:s3cret:pass "),
            auth("Postmark:s3cret:pass"),
            auth(""),
        ] {
            assert!(
                matches!(
                    read_with(&headers, BOUNCE),
                    Err(FeedbackError::Unauthenticated(_))
                ),
                "{headers:?}"
            );
        }
        let mut bearer = HeaderMap::new();
        bearer.insert(
            "authorization",
            "Bearer cG9zdG1hcms6czNjcmV0OnBhc3M=".parse().unwrap(),
        );
        assert!(matches!(
            read_with(&bearer, BOUNCE),
            Err(FeedbackError::Unauthenticated(_))
        ));
        let mut lower = HeaderMap::new();
        lower.insert(
            "authorization",
            "basic cG9zdG1hcms6czNjcmV0OnBhc3M=".parse().unwrap(),
        );
        assert!(read_with(&lower, BOUNCE).is_ok());
    }

    #[test]
    fn an_unreadable_body_is_malformed() {
        for body in [
            "",
            "[]",
            "{\"RecordType\":",
            "{\"ID\":1}",
            r#"{"RecordType":"Bounce","TypeCode":1}"#,
        ] {
            assert!(
                matches!(
                    read_with(&auth("postmark:s3cret:pass"), body),
                    Err(FeedbackError::Malformed(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn records_without_meaning_for_the_address_are_ignored() {
        let auto_reply = BOUNCE
            .replace("\"TypeCode\": 1", "\"TypeCode\": 64")
            .replace("\"HardBounce\"", "\"AutoResponder\"");
        assert_eq!(
            good(&auto_reply).ignored.as_deref(),
            Some("bounce type AutoResponder")
        );
        let inbound = r#"{"RecordType":"Inbound","From":"x@example.com"}"#;
        assert_eq!(
            good(inbound).ignored.as_deref(),
            Some("record type Inbound")
        );
        let reactivated = r#"{"RecordType":"SubscriptionChange","Recipient":"e@example.com","SuppressSending":false}"#;
        assert!(good(reactivated).events.is_empty());
    }
}
