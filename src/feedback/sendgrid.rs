//! SendGrid's Event Webhook: an ECDSA P-256 signature over the timestamp
//! header and the raw body, which is a JSON array of events.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
use serde_json::value::RawValue;
use serde_json::Value;

use super::common::{self, malformed, unauthenticated};
use super::keys;
use super::settings::SendgridSettings;
use super::{Batch, FeedbackError, FeedbackEvent, FeedbackKind, Inbound, Provider};

pub const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
pub const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";

/// Checks the signature, then reads every event Herald uses.
pub fn read(settings: &SendgridSettings, inbound: &Inbound) -> Result<Batch, FeedbackError> {
    authenticate(settings, inbound)?;
    let items: Vec<&RawValue> = serde_json::from_slice(inbound.body)
        .map_err(|e| malformed(format!("the body is not a JSON array of events: {e}")))?;
    common::check_count(items.len())?;
    let mut events = Vec::new();
    let mut skipped = Vec::new();
    for (index, raw) in items.into_iter().enumerate() {
        let item: Value = serde_json::from_str(raw.get())
            .map_err(|e| malformed(format!("event {index}: {e}")))?;
        if !item.is_object() {
            return Err(malformed(format!("event {index} is not a JSON object")));
        }
        match event(&item, raw.get()) {
            Ok(Some(event)) => events.push(event),
            Ok(None) => skipped.push(event_name(&item)),
            Err(reason) => return Err(malformed(format!("event {index}: {reason}"))),
        }
    }
    common::batch(events, &skipped)
}

/// Whether `der` is a key `read` can verify with (an ECDSA P-256
/// SubjectPublicKeyInfo), so a wrong key is refused when the config loads
/// rather than at the first webhook.
pub fn check_public_key(der: &[u8]) -> Result<(), String> {
    keys::p256_point(der).map(drop)
}

fn authenticate(settings: &SendgridSettings, inbound: &Inbound) -> Result<(), FeedbackError> {
    let signature = common::header(inbound, SIGNATURE_HEADER)
        .ok_or_else(|| unauthenticated(format!("the {SIGNATURE_HEADER} header is missing")))?;
    let timestamp = common::header(inbound, TIMESTAMP_HEADER)
        .ok_or_else(|| unauthenticated(format!("the {TIMESTAMP_HEADER} header is missing")))?;
    let signed_ms = common::unix_seconds_ms(timestamp)
        .ok_or_else(|| unauthenticated(format!("{TIMESTAMP_HEADER} is not Unix seconds")))?;
    common::check_fresh(signed_ms, inbound.now_ms)?;
    let signature = STANDARD
        .decode(signature)
        .map_err(|_| unauthenticated(format!("{SIGNATURE_HEADER} is not base64")))?;
    let point = keys::p256_point(&settings.public_key_der)
        .map_err(|e| unauthenticated(format!("the configured SendGrid key is unusable: {e}")))?;
    let signed = [timestamp.as_bytes(), inbound.body].concat();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
        .verify(&signed, &signature)
        .map_err(|_| unauthenticated("the SendGrid signature does not match the body"))
}

fn event_name(item: &Value) -> String {
    item.get("event")
        .and_then(Value::as_str)
        .unwrap_or("an event without a type")
        .to_owned()
}

/// The normalised event, `None` for a type Herald has no use for.
fn event(item: &Value, raw: &str) -> Result<Option<FeedbackEvent>, String> {
    let str_of = |key: &str| item.get(key).and_then(Value::as_str);
    let (kind, detail) = match str_of("event") {
        // `type` tells a hard bounce from a block (a refusal of this
        // message, often temporary); old payloads without it were bounces.
        Some("bounce") => {
            let kind = match str_of("type") {
                Some("blocked") => FeedbackKind::SoftBounce,
                _ => FeedbackKind::HardBounce,
            };
            let detail = common::detail(&[
                str_of("type"),
                str_of("bounce_classification"),
                str_of("status"),
                str_of("reason"),
            ]);
            (kind, detail)
        }
        // Only a drop because of the address (`Bounced Address`,
        // `Spam Reporting Address`, `Unsubscribed Address`, `Invalid`)
        // says anything about the recipient; `Spam Content` or an invalid
        // SMTPAPI header are about our message.
        Some("dropped") => {
            let reason = str_of("reason").unwrap_or_default();
            let about_address = reason.contains("Address") || reason == "Invalid";
            let kind = if about_address {
                FeedbackKind::EspSuppressed
            } else {
                FeedbackKind::PolicyBlock
            };
            (kind, common::detail(&[str_of("reason")]))
        }
        Some("deferred") => (
            FeedbackKind::Deferred,
            common::detail(&[str_of("response")]),
        ),
        Some("delivered") => (
            FeedbackKind::Delivered,
            common::detail(&[str_of("response")]),
        ),
        Some("spamreport") => (FeedbackKind::Complaint, String::new()),
        Some("open") => (FeedbackKind::Opened, String::new()),
        Some("click") => (FeedbackKind::Clicked, common::detail(&[str_of("url")])),
        _ => return Ok(None),
    };
    let event_id = common::id_text(item.get("sg_event_id")).ok_or("`sg_event_id` is missing")?;
    let address = common::text(item.get("email")).ok_or("`email` is missing")?;
    Ok(Some(FeedbackEvent {
        provider: Provider::Sendgrid,
        event_id,
        kind,
        address,
        herald_id: common::text(item.get("herald_id")),
        message_id_header: common::text(item.get("smtp-id")),
        provider_message_id: common::text(item.get("sg_message_id")),
        occurred_at_ms: item.get("timestamp").and_then(common::json_seconds_ms),
        detail,
        raw: raw.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::test_support::{SendgridSigner as Signer, NOW_MS, NOW_SECS};
    use hyper::HeaderMap;

    /// Shaped like SendGrid's documented examples, with our unique_args
    /// (`herald_id`) flattened in as SendGrid does.
    const BODY: &str = r#"[
  {"email":"bob@example.com","timestamp":1772366390,"smtp-id":"<0000000000000002.aa11@example.org>","event":"bounce","category":["welcome"],"sg_event_id":"6g4ZI7SA-xmRDv57GoPIPw==","sg_message_id":"14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0","reason":"550 5.1.1 The email account that you tried to reach does not exist.","status":"5.1.1","type":"bounce","bounce_classification":"Invalid Address","herald_id":"msg_0000000000000002"},
  {"email":"carol@example.com","timestamp":1772366391,"event":"bounce","sg_event_id":"Bq4ZI7SA-xmRDv57GoPIPw==","sg_message_id":"14c5d75ce94.dfd.64b469.filter0001.16648.5515E0B88.0","reason":"421 too many connections","status":"4.0.0","type":"blocked"},
  {"email":" Dan@Example.com ","timestamp":1772366392,"event":"dropped","sg_event_id":"zmzJhfJgAfUSOW80yEbPyw==","sg_message_id":"14c5d75ce95.dfd.64b469.filter0001.16648.5515E0B88.0","reason":"Bounced Address","status":"5.0.0"},
  {"email":"erin@example.com","timestamp":1772366393,"event":"deferred","sg_event_id":"t7LEShmowp86DTdUW8M-GQ==","response":"400 try again later","attempt":"5"},
  {"email":"frank@example.com","timestamp":1772366394,"event":"delivered","sg_event_id":"rWVYmVk90MjZJ9iohOBa3w==","response":"250 OK"},
  {"email":"gina@example.com","timestamp":1772366395,"event":"spamreport","sg_event_id":"37nvH5QBz858KGVYCM4uOA=="},
  {"email":"hal@example.com","timestamp":1772366396,"event":"open","sg_event_id":"FOTFFO0ecsBE-zxFXfs6WA==","useragent":"Mozilla/4.0","ip":"255.255.255.255"},
  {"email":"ida@example.com","timestamp":1772366397,"event":"click","sg_event_id":"kCAi1KttyQdEKHhdC-nuEA==","url":"https://example.org/welcome"},
  {"email":"jo@example.com","timestamp":1772366398,"event":"processed","sg_event_id":"LdmGdL6pPnOMCjHOrGnbkQ=="},
  {"email":"jo@example.com","timestamp":1772366399,"event":"group_unsubscribe","sg_event_id":"rN8cRB3v7B37wzzN3Y0uVg==","asm_group_id":1}
]"#;

    fn read_with(
        signer: &Signer,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Batch, FeedbackError> {
        read(
            &signer.settings(),
            &Inbound {
                headers,
                body,
                now_ms: NOW_MS,
            },
        )
    }

    #[test]
    fn a_signed_batch_reads_into_normalised_events() {
        let signer = Signer::new();
        let headers = signer.headers(NOW_SECS, BODY.as_bytes());
        let batch = read_with(&signer, &headers, BODY.as_bytes()).unwrap();
        assert_eq!(batch.ignored, None);
        assert_eq!(batch.replay_token, None);
        let kinds: Vec<(&str, FeedbackKind)> = batch
            .events
            .iter()
            .map(|e| (e.address.as_str(), e.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("bob@example.com", FeedbackKind::HardBounce),
                ("carol@example.com", FeedbackKind::SoftBounce),
                ("Dan@Example.com", FeedbackKind::EspSuppressed),
                ("erin@example.com", FeedbackKind::Deferred),
                ("frank@example.com", FeedbackKind::Delivered),
                ("gina@example.com", FeedbackKind::Complaint),
                ("hal@example.com", FeedbackKind::Opened),
                ("ida@example.com", FeedbackKind::Clicked),
            ]
        );
        let bounce = &batch.events[0];
        assert_eq!(bounce.provider, Provider::Sendgrid);
        assert_eq!(bounce.event_id, "6g4ZI7SA-xmRDv57GoPIPw==");
        assert_eq!(bounce.herald_id.as_deref(), Some("msg_0000000000000002"));
        assert_eq!(
            bounce.message_id_header.as_deref(),
            Some("<0000000000000002.aa11@example.org>")
        );
        assert_eq!(
            bounce.provider_message_id.as_deref(),
            Some("14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0")
        );
        assert_eq!(bounce.occurred_at_ms, Some(1_772_366_390_000));
        assert!(
            bounce.detail.contains("Invalid Address"),
            "{}",
            bounce.detail
        );
        assert!(bounce.detail.contains("550 5.1.1"), "{}", bounce.detail);
        let raw: Value = serde_json::from_str(&bounce.raw).unwrap();
        assert_eq!(raw["sg_event_id"], "6g4ZI7SA-xmRDv57GoPIPw==");
        assert_eq!(batch.events[2].detail, "Bounced Address");
        assert_eq!(batch.events[7].detail, "https://example.org/welcome");
    }

    #[test]
    fn an_altered_body_signature_or_timestamp_is_unauthenticated() {
        let signer = Signer::new();
        let headers = signer.headers(NOW_SECS, BODY.as_bytes());
        let altered = BODY.replace("bob@", "rob@");
        let unauthenticated =
            |r: Result<Batch, FeedbackError>| matches!(r, Err(FeedbackError::Unauthenticated(_)));
        assert!(unauthenticated(read_with(
            &signer,
            &headers,
            altered.as_bytes()
        )));

        let mut other_timestamp = headers.clone();
        other_timestamp.insert(TIMESTAMP_HEADER, "1772366401".parse().unwrap());
        assert!(unauthenticated(read_with(
            &signer,
            &other_timestamp,
            BODY.as_bytes()
        )));

        let stale = (NOW_MS / 1000 - 301).to_string();
        let stale_headers = signer.headers(&stale, BODY.as_bytes());
        let error = read_with(&signer, &stale_headers, BODY.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("301 s"), "{error}");

        let mut missing = headers.clone();
        missing.remove(SIGNATURE_HEADER);
        assert!(unauthenticated(read_with(
            &signer,
            &missing,
            BODY.as_bytes()
        )));

        let another_key = Signer::new();
        assert!(unauthenticated(read_with(
            &another_key,
            &headers,
            BODY.as_bytes()
        )));
    }

    #[test]
    fn an_unreadable_signed_body_is_malformed() {
        let signer = Signer::new();
        for body in [&b"{\"event\":\"bounce\"}"[..], b"[{", b"", b"[1]"] {
            let headers = signer.headers(NOW_SECS, body);
            assert!(
                matches!(
                    read_with(&signer, &headers, body),
                    Err(FeedbackError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let no_email = br#"[{"event":"bounce","sg_event_id":"x"}]"#;
        let headers = signer.headers(NOW_SECS, no_email);
        let error = read_with(&signer, &headers, no_email).unwrap_err();
        assert!(error.to_string().contains("`email`"), "{error}");
    }

    #[test]
    fn only_a_p256_key_passes_the_config_check() {
        assert!(check_public_key(&Signer::new().settings().public_key_der).is_ok());
        assert!(check_public_key(b"MFkw").is_err());
        assert!(check_public_key(&[]).is_err());
    }

    #[test]
    fn a_batch_of_unused_types_is_ignored() {
        let signer = Signer::new();
        let body = br#"[{"email":"a@example.com","event":"processed","sg_event_id":"p1"},{"email":"a@example.com","event":"unsubscribe","sg_event_id":"u1"}]"#;
        let headers = signer.headers(NOW_SECS, body);
        let batch = read_with(&signer, &headers, body).unwrap();
        assert!(batch.events.is_empty());
        assert_eq!(batch.ignored.as_deref(), Some("processed, unsubscribe"));
    }

    #[test]
    fn more_than_the_limit_is_malformed() {
        let signer = Signer::new();
        let one = r#"{"email":"a@example.com","event":"open","sg_event_id":"o"}"#;
        let body = format!("[{}]", vec![one; common::MAX_EVENTS + 1].join(","));
        let headers = signer.headers(NOW_SECS, body.as_bytes());
        let error = read_with(&signer, &headers, body.as_bytes()).unwrap_err();
        assert!(matches!(error, FeedbackError::Malformed(_)));
        assert!(error.to_string().contains("10000"), "{error}");
    }
}
