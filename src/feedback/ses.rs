//! SES events through SNS: the envelope's RSA signature (SHA-1 for
//! SignatureVersion 1, SHA-256 for 2) checked with the certificate SNS
//! names, the topic and the certificate's host allow-listed, then the SES
//! notification inside read into events.
//!
//! Fetching the certificate is the caller's (`sns_fetch`), so this module
//! stays free of the network: parse, fetch, verify, then read.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hyper::http::uri::Scheme;
use ring::signature::{
    UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256,
};
use serde::Deserialize;
use serde_json::Value;

use super::common::{self, malformed, unauthenticated};
use super::keys;
use super::settings::SesSettings;
use super::{Batch, FeedbackError, FeedbackEvent, FeedbackKind, Inbound, Provider};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnsKind {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

impl SnsKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SnsKind::Notification => "Notification",
            SnsKind::SubscriptionConfirmation => "SubscriptionConfirmation",
            SnsKind::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }
}

/// The signature's hash: SNS's `SignatureVersion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVersion {
    /// RSA PKCS#1 v1.5 with SHA-1.
    V1,
    /// RSA PKCS#1 v1.5 with SHA-256.
    V2,
}

/// An SNS message whose shape, time, topic and certificate URL passed; its
/// signature is not checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub kind: SnsKind,
    pub message_id: String,
    pub topic_arn: String,
    pub subject: Option<String>,
    /// For a notification, the SES event as JSON text.
    pub message: String,
    /// As sent, since the signature covers this text.
    pub timestamp: String,
    pub timestamp_ms: i64,
    pub signature_version: SignatureVersion,
    pub signature: Vec<u8>,
    pub signing_cert_url: String,
    /// For (un)subscription confirmations: the URL that confirms.
    pub subscribe_url: Option<String>,
    pub token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Wire {
    r#type: Option<String>,
    message_id: Option<String>,
    topic_arn: Option<String>,
    subject: Option<String>,
    message: Option<String>,
    timestamp: Option<String>,
    signature_version: Option<String>,
    signature: Option<String>,
    #[serde(rename = "SigningCertURL")]
    signing_cert_url: Option<String>,
    #[serde(rename = "SubscribeURL")]
    subscribe_url: Option<String>,
    token: Option<String>,
}

/// Reads the envelope and checks everything that needs no certificate:
/// signature version, freshness, topic, and where the certificate is.
pub fn parse_envelope(
    settings: &SesSettings,
    inbound: &Inbound,
) -> Result<Envelope, FeedbackError> {
    let wire: Wire = serde_json::from_slice(inbound.body)
        .map_err(|e| malformed(format!("the body is not an SNS message: {e}")))?;
    let kind = match wire.r#type.as_deref() {
        Some("Notification") => SnsKind::Notification,
        Some("SubscriptionConfirmation") => SnsKind::SubscriptionConfirmation,
        Some("UnsubscribeConfirmation") => SnsKind::UnsubscribeConfirmation,
        other => {
            return Err(malformed(format!(
                "`Type` {other:?} is not an SNS message type"
            )))
        }
    };
    let signed_part = |value: Option<String>, name: &str| {
        value.ok_or_else(|| malformed(format!("`{name}` is missing")))
    };
    let signature_part = |value: Option<String>, name: &str| {
        value.ok_or_else(|| unauthenticated(format!("`{name}` is missing")))
    };
    let signature_version =
        match signature_part(wire.signature_version, "SignatureVersion")?.as_str() {
            "1" => SignatureVersion::V1,
            "2" => SignatureVersion::V2,
            other => {
                return Err(unauthenticated(format!(
                    "SignatureVersion {other:?} is not 1 or 2"
                )))
            }
        };
    let timestamp = signed_part(wire.timestamp, "Timestamp")?;
    let timestamp_ms = common::rfc3339_ms(&timestamp)
        .ok_or_else(|| unauthenticated("`Timestamp` is not an RFC 3339 time"))?;
    common::check_fresh(timestamp_ms, inbound.now_ms)?;
    let topic_arn = signed_part(wire.topic_arn, "TopicArn")?;
    if !settings.topic_arns.contains(&topic_arn) {
        return Err(unauthenticated(format!("topic {topic_arn} is not allowed")));
    }
    let signing_cert_url = signature_part(wire.signing_cert_url, "SigningCertURL")?;
    if !url_allowed(settings, &signing_cert_url) {
        return Err(unauthenticated(format!(
            "the signing certificate URL {signing_cert_url} is not HTTPS on an allowed host"
        )));
    }
    // SNS serves its certificates as `…/SimpleNotificationService-ID.pem`:
    // anything else on an allowed host is not worth a fetch.
    let path = signing_cert_url
        .split(['?', '#'])
        .next()
        .unwrap_or_default();
    if !path.ends_with(".pem") {
        return Err(unauthenticated(format!(
            "the signing certificate URL {signing_cert_url} does not name a .pem file"
        )));
    }
    let signature = STANDARD
        .decode(signature_part(wire.signature, "Signature")?)
        .map_err(|_| unauthenticated("`Signature` is not base64"))?;
    let (subscribe_url, token) = match kind {
        SnsKind::Notification => (None, None),
        _ => (
            Some(signed_part(wire.subscribe_url, "SubscribeURL")?),
            Some(signed_part(wire.token, "Token")?),
        ),
    };
    Ok(Envelope {
        kind,
        message_id: signed_part(wire.message_id, "MessageId")?,
        topic_arn,
        subject: wire.subject,
        message: signed_part(wire.message, "Message")?,
        timestamp,
        timestamp_ms,
        signature_version,
        signature,
        signing_cert_url,
        subscribe_url,
        token,
    })
}

/// Whether `url` is HTTPS, without credentials, on a host matching one of
/// the `cert_hosts` patterns (`*` standing for exactly one DNS label).
pub fn url_allowed(settings: &SesSettings, url: &str) -> bool {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return false;
    };
    if uri.scheme() != Some(&Scheme::HTTPS) {
        return false;
    }
    let Some(authority) = uri.authority() else {
        return false;
    };
    if authority.as_str().contains('@') {
        return false;
    }
    let host = authority.host();
    settings
        .cert_hosts
        .iter()
        .any(|pattern| host_matches(pattern, host))
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let patterns: Vec<&str> = pattern.split('.').collect();
    let labels: Vec<&str> = host.split('.').collect();
    patterns.len() == labels.len()
        && patterns.iter().zip(&labels).all(|(p, label)| {
            let is_label = !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            is_label && (*p == "*" || p.eq_ignore_ascii_case(label))
        })
}

/// The text the signature covers: AWS's `Key\nValue\n` pairs, in its order.
pub fn string_to_sign(envelope: &Envelope) -> String {
    let mut pairs: Vec<(&str, &str)> = vec![
        ("Message", &envelope.message),
        ("MessageId", &envelope.message_id),
    ];
    match envelope.kind {
        SnsKind::Notification => {
            if let Some(subject) = &envelope.subject {
                pairs.push(("Subject", subject));
            }
            pairs.push(("Timestamp", &envelope.timestamp));
        }
        SnsKind::SubscriptionConfirmation | SnsKind::UnsubscribeConfirmation => {
            pairs.push((
                "SubscribeURL",
                envelope.subscribe_url.as_deref().unwrap_or(""),
            ));
            pairs.push(("Timestamp", &envelope.timestamp));
            pairs.push(("Token", envelope.token.as_deref().unwrap_or("")));
        }
    }
    pairs.push(("TopicArn", &envelope.topic_arn));
    pairs.push(("Type", envelope.kind.as_str()));
    pairs
        .into_iter()
        .map(|(key, value)| format!("{key}\n{value}\n"))
        .collect()
}

/// Checks the envelope's signature with the RSA key of the certificate
/// fetched from its `SigningCertURL` (PEM, as SNS serves it, or DER).
pub fn verify(envelope: &Envelope, cert_pem_or_der: &[u8]) -> Result<(), FeedbackError> {
    let key = keys::certificate_rsa_key(cert_pem_or_der)
        .map_err(|e| unauthenticated(format!("the SNS signing certificate is unusable: {e}")))?;
    let algorithm = match envelope.signature_version {
        SignatureVersion::V1 => &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        SignatureVersion::V2 => &RSA_PKCS1_2048_8192_SHA256,
    };
    UnparsedPublicKey::new(algorithm, key)
        .verify(string_to_sign(envelope).as_bytes(), &envelope.signature)
        .map_err(|_| unauthenticated("the SNS signature does not match the message"))
}

/// The events of a verified notification; other SNS messages, SES's own
/// subscription notice and event types Herald has no use for are ignored.
pub fn events(envelope: &Envelope) -> Result<Batch, FeedbackError> {
    if envelope.kind != SnsKind::Notification {
        return common::batch(Vec::new(), &[format!("SNS {}", envelope.kind.as_str())]);
    }
    // A message published by hand to the topic (the console's test) is
    // not an SES event: acknowledged, so SNS does not retry it.
    let ses: Value = match serde_json::from_str(&envelope.message) {
        Ok(value @ Value::Object(_)) => value,
        _ => {
            return common::batch(
                Vec::new(),
                &["an SNS message that is not an SES event".into()],
            )
        }
    };
    let event_type = ses
        .get("notificationType")
        .or_else(|| ses.get("eventType"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(reading) = Reading::of(event_type, &ses)? else {
        let what = if event_type.is_empty() {
            "an SES message without a type"
        } else {
            event_type
        };
        return common::batch(Vec::new(), &[what.to_owned()]);
    };
    let mail = ses.get("mail");
    let mail_str = |path: &[&str]| mail.and_then(|m| common::str_at(m, path));
    let herald_id = mail
        .and_then(|m| m.get("tags"))
        .and_then(|tags| tags.get("herald_id"))
        .and_then(|ids| ids.get(0))
        .and_then(|id| common::text(Some(id)))
        .or_else(|| mail.and_then(|m| common::echoed_header(m, "x-herald-id")));
    let message_id_header = mail_str(&["commonHeaders", "messageId"])
        .map(str::to_owned)
        .or_else(|| mail.and_then(|m| common::echoed_header(m, "message-id")));
    let provider_message_id = mail_str(&["messageId"]).map(str::to_owned);
    common::check_count(reading.recipients.len())?;
    let events = reading
        .recipients
        .into_iter()
        .map(|(address, diagnostic)| FeedbackEvent {
            provider: Provider::Ses,
            event_id: format!("{}:{address}", envelope.message_id),
            kind: reading.kind,
            address,
            herald_id: herald_id.clone(),
            message_id_header: message_id_header.clone(),
            provider_message_id: provider_message_id.clone(),
            occurred_at_ms: reading.occurred_at_ms.or(Some(envelope.timestamp_ms)),
            detail: common::detail(&[Some(&reading.detail), diagnostic.as_deref()]),
            raw: super::raw_excerpt(&envelope.message),
        })
        .collect();
    common::batch(events, &[])
}

/// What one SES event says, before it is split per recipient.
struct Reading {
    kind: FeedbackKind,
    /// Each recipient with its own diagnostic, if SES gave one.
    recipients: Vec<(String, Option<String>)>,
    detail: String,
    occurred_at_ms: Option<i64>,
}

impl Reading {
    fn of(event_type: &str, ses: &Value) -> Result<Option<Reading>, FeedbackError> {
        let at = |path: &[&str]| common::str_at(ses, path);
        let time = |object: &str| at(&[object, "timestamp"]).and_then(common::rfc3339_ms);
        let reading = match event_type {
            "Bounce" => {
                let bounce_type = at(&["bounce", "bounceType"]);
                let sub_type = at(&["bounce", "bounceSubType"]);
                let kind = match (bounce_type, sub_type) {
                    (Some("Permanent"), Some("Suppressed" | "OnAccountSuppressionList")) => {
                        FeedbackKind::EspSuppressed
                    }
                    (Some("Permanent"), _) => FeedbackKind::HardBounce,
                    (Some("Transient" | "Undetermined"), _) => FeedbackKind::SoftBounce,
                    (other, _) => {
                        return Err(malformed(format!(
                        "`bounce.bounceType` {other:?} is not Permanent, Transient or Undetermined"
                    )))
                    }
                };
                Reading {
                    kind,
                    recipients: recipient_objects(ses, &["bounce", "bouncedRecipients"])?,
                    detail: common::detail(&[bounce_type, sub_type]),
                    occurred_at_ms: time("bounce"),
                }
            }
            "Complaint" => Reading {
                kind: FeedbackKind::Complaint,
                recipients: recipient_objects(ses, &["complaint", "complainedRecipients"])?,
                detail: common::detail(&[
                    at(&["complaint", "complaintFeedbackType"]),
                    at(&["complaint", "complaintSubType"]),
                ]),
                occurred_at_ms: time("complaint"),
            },
            "Delivery" => Reading {
                kind: FeedbackKind::Delivered,
                recipients: recipient_strings(ses, &["delivery", "recipients"])?,
                detail: common::detail(&[at(&["delivery", "smtpResponse"])]),
                occurred_at_ms: time("delivery"),
            },
            "DeliveryDelay" => Reading {
                kind: FeedbackKind::Deferred,
                recipients: recipient_objects(ses, &["deliveryDelay", "delayedRecipients"])?,
                detail: common::detail(&[at(&["deliveryDelay", "delayType"])]),
                occurred_at_ms: time("deliveryDelay"),
            },
            "Open" => Reading {
                kind: FeedbackKind::Opened,
                recipients: recipient_strings(ses, &["mail", "destination"])?,
                detail: String::new(),
                occurred_at_ms: time("open"),
            },
            "Click" => Reading {
                kind: FeedbackKind::Clicked,
                recipients: recipient_strings(ses, &["mail", "destination"])?,
                detail: common::detail(&[at(&["click", "link"])]),
                occurred_at_ms: time("click"),
            },
            "Reject" => Reading {
                kind: FeedbackKind::PolicyBlock,
                recipients: recipient_strings(ses, &["mail", "destination"])?,
                detail: common::detail(&[at(&["reject", "reason"])]),
                occurred_at_ms: time("mail"),
            },
            _ => return Ok(None),
        };
        Ok(Some(reading))
    }
}

/// The array at `path`, refused when missing or empty.
fn nonempty_array<'a>(ses: &'a Value, path: &[&str]) -> Result<&'a Vec<Value>, FeedbackError> {
    path.iter()
        .try_fold(ses, |at, key| at.get(key))
        .and_then(Value::as_array)
        .filter(|list| !list.is_empty())
        .ok_or_else(|| malformed(format!("`{}` names no recipient", path.join("."))))
}

/// `[{"emailAddress": …, "diagnosticCode": …}, …]`
fn recipient_objects(
    ses: &Value,
    path: &[&str],
) -> Result<Vec<(String, Option<String>)>, FeedbackError> {
    nonempty_array(ses, path)?
        .iter()
        .map(|recipient| {
            let address = common::text(recipient.get("emailAddress")).ok_or_else(|| {
                malformed(format!(
                    "a recipient in `{}` has no emailAddress",
                    path.join(".")
                ))
            })?;
            let diagnostic = common::detail(&[
                recipient.get("status").and_then(Value::as_str),
                recipient.get("diagnosticCode").and_then(Value::as_str),
            ]);
            Ok((address, (!diagnostic.is_empty()).then_some(diagnostic)))
        })
        .collect()
}

/// `["address", …]`
fn recipient_strings(
    ses: &Value,
    path: &[&str],
) -> Result<Vec<(String, Option<String>)>, FeedbackError> {
    nonempty_array(ses, path)?
        .iter()
        .map(|recipient| {
            common::text(Some(recipient))
                .map(|address| (address, None))
                .ok_or_else(|| malformed(format!("`{}` holds a non-address", path.join("."))))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::test_support::{sns_sign_v2, NOW_MS, SNS_CERT_PEM, SNS_V1_BOUNCE};
    use hyper::HeaderMap;
    use serde_json::json;

    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:herald-feedback";
    const CERT_URL: &str =
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem";

    fn settings() -> SesSettings {
        SesSettings {
            topic_arns: vec![TOPIC.into()],
            cert_hosts: vec![
                "sns.*.amazonaws.com".into(),
                "sns.*.amazonaws.com.cn".into(),
            ],
            ca_pem: None,
            auto_confirm: true,
        }
    }

    fn parse(body: &str) -> Result<Envelope, FeedbackError> {
        parse_envelope(
            &settings(),
            &Inbound {
                headers: &HeaderMap::new(),
                body: body.as_bytes(),
                now_ms: NOW_MS,
            },
        )
    }

    /// Fills in `SignatureVersion` 2 and a signature over the fields given.
    fn signed_v2(mut fields: Value) -> String {
        fields["SignatureVersion"] = json!("2");
        fields["SigningCertURL"] = json!(CERT_URL);
        fields["Signature"] = json!("");
        let unsigned = parse(&fields.to_string()).unwrap();
        fields["Signature"] = json!(sns_sign_v2(&string_to_sign(&unsigned)));
        fields.to_string()
    }

    fn ses_notification(ses: Value) -> Value {
        json!({
            "Type": "Notification",
            "MessageId": "a1b2c3d4-0000-4000-8000-000000000001",
            "TopicArn": TOPIC,
            "Message": ses.to_string(),
            "Timestamp": "2026-03-01T11:59:59.500Z",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        })
    }

    fn verified_events(body: &str) -> Batch {
        let envelope = parse(body).unwrap();
        verify(&envelope, SNS_CERT_PEM).unwrap();
        events(&envelope).unwrap()
    }

    #[test]
    fn a_v1_sha1_bounce_verifies_and_reads() {
        let envelope = parse(SNS_V1_BOUNCE).unwrap();
        assert_eq!(envelope.signature_version, SignatureVersion::V1);
        assert_eq!(envelope.kind, SnsKind::Notification);
        verify(&envelope, SNS_CERT_PEM).unwrap();
        let der = x509_cert::der::pem::decode_vec(SNS_CERT_PEM).unwrap().1;
        verify(&envelope, &der).unwrap();
        let batch = events(&envelope).unwrap();
        let [event] = batch.events.as_slice() else {
            panic!("{batch:?}")
        };
        assert_eq!(event.provider, Provider::Ses);
        assert_eq!(event.kind, FeedbackKind::HardBounce);
        assert_eq!(
            event.event_id,
            "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324:jane@example.com"
        );
        assert_eq!(event.address, "jane@example.com");
        assert_eq!(event.herald_id.as_deref(), Some("msg_0000000000000001"));
        assert_eq!(
            event.message_id_header.as_deref(),
            Some("<0000000000000001.abcdef@example.org>")
        );
        assert_eq!(
            event.provider_message_id.as_deref(),
            Some("0100018e0a1b2c3d-11111111-2222-3333-4444-555555555555-000000")
        );
        assert_eq!(event.occurred_at_ms, Some(1_772_366_398_237));
        assert_eq!(
            event.detail,
            "Permanent; General; 5.1.1; smtp; 550 5.1.1 user unknown"
        );
        assert_eq!(event.raw, envelope.message);
    }

    #[test]
    fn an_altered_v1_message_or_signature_is_unauthenticated() {
        let mut envelope = parse(SNS_V1_BOUNCE).unwrap();
        envelope.message = envelope.message.replace("jane@", "joan@");
        assert!(matches!(
            verify(&envelope, SNS_CERT_PEM),
            Err(FeedbackError::Unauthenticated(_))
        ));
        let mut envelope = parse(SNS_V1_BOUNCE).unwrap();
        envelope.signature[10] ^= 1;
        assert!(verify(&envelope, SNS_CERT_PEM).is_err());
        // The SHA-1 signature read as version 2 does not verify either.
        let mut envelope = parse(SNS_V1_BOUNCE).unwrap();
        envelope.signature_version = SignatureVersion::V2;
        assert!(verify(&envelope, SNS_CERT_PEM).is_err());
        let envelope = parse(SNS_V1_BOUNCE).unwrap();
        assert!(verify(&envelope, b"not a certificate").is_err());
    }

    #[test]
    fn a_v2_sha256_notification_of_each_event_type_reads() {
        let mail = json!({
            "timestamp": "2026-03-01T11:59:00.000Z",
            "messageId": "0100018e-ses-id",
            "destination": ["ann@example.com", "ben@example.com"],
            "headers": [{"name": "X-Herald-Id", "value": "msg_0000000000000008"}],
        });
        let cases = [
            (
                json!({"eventType": "Bounce", "mail": mail, "bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull", "bouncedRecipients": [{"emailAddress": "ann@example.com"}], "timestamp": "2026-03-01T11:59:30.000Z"}}),
                vec![FeedbackKind::SoftBounce],
            ),
            (
                json!({"notificationType": "Bounce", "mail": mail, "bounce": {"bounceType": "Permanent", "bounceSubType": "OnAccountSuppressionList", "bouncedRecipients": [{"emailAddress": "ann@example.com"}]}}),
                vec![FeedbackKind::EspSuppressed],
            ),
            (
                json!({"notificationType": "Complaint", "mail": mail, "complaint": {"complainedRecipients": [{"emailAddress": "ann@example.com"}], "complaintFeedbackType": "abuse", "timestamp": "2026-03-01T11:59:30.000Z"}}),
                vec![FeedbackKind::Complaint],
            ),
            (
                json!({"notificationType": "Delivery", "mail": mail, "delivery": {"recipients": ["ann@example.com", "ben@example.com"], "smtpResponse": "250 ok", "timestamp": "2026-03-01T11:59:30.000Z"}}),
                vec![FeedbackKind::Delivered, FeedbackKind::Delivered],
            ),
            (
                json!({"eventType": "DeliveryDelay", "mail": mail, "deliveryDelay": {"delayType": "MailboxFull", "delayedRecipients": [{"emailAddress": "ben@example.com", "status": "4.2.2"}], "timestamp": "2026-03-01T11:59:30.000Z"}}),
                vec![FeedbackKind::Deferred],
            ),
            (
                json!({"eventType": "Open", "mail": mail, "open": {"timestamp": "2026-03-01T11:59:30.000Z"}}),
                vec![FeedbackKind::Opened, FeedbackKind::Opened],
            ),
            (
                json!({"eventType": "Click", "mail": mail, "click": {"link": "https://example.org", "timestamp": "2026-03-01T11:59:30.000Z"}}),
                vec![FeedbackKind::Clicked, FeedbackKind::Clicked],
            ),
            (
                json!({"eventType": "Reject", "mail": mail, "reject": {"reason": "Bad content"}}),
                vec![FeedbackKind::PolicyBlock, FeedbackKind::PolicyBlock],
            ),
        ];
        for (ses, kinds) in cases {
            let batch = verified_events(&signed_v2(ses_notification(ses.clone())));
            let got: Vec<FeedbackKind> = batch.events.iter().map(|e| e.kind).collect();
            assert_eq!(got, kinds, "{ses}");
            assert_eq!(
                batch.events[0].herald_id.as_deref(),
                Some("msg_0000000000000008")
            );
        }
    }

    #[test]
    fn a_subject_is_signed_when_present() {
        let mut fields =
            ses_notification(json!({"notificationType": "AmazonSnsSubscriptionSucceeded"}));
        fields["Subject"] = json!("Amazon SES Email Event Notification");
        let body = signed_v2(fields);
        let envelope = parse(&body).unwrap();
        assert!(string_to_sign(&envelope).contains("Subject\nAmazon SES"));
        verify(&envelope, SNS_CERT_PEM).unwrap();
        let mut altered = envelope.clone();
        altered.subject = None;
        assert!(verify(&altered, SNS_CERT_PEM).is_err());
    }

    #[test]
    fn a_subscription_confirmation_is_signed_over_its_url_and_token() {
        let body = signed_v2(json!({
            "Type": "SubscriptionConfirmation",
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": "2336412f37fb687f5d51e6e2425f004aed25fd36",
            "TopicArn": TOPIC,
            "Message": "You have chosen to subscribe to the topic. To confirm the subscription, visit the SubscribeURL included in this message.",
            "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=2336412f",
            "Timestamp": "2026-03-01T11:59:59.000Z",
        }));
        let envelope = parse(&body).unwrap();
        assert_eq!(envelope.kind, SnsKind::SubscriptionConfirmation);
        assert_eq!(
            envelope.subscribe_url.as_deref(),
            Some("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=2336412f")
        );
        verify(&envelope, SNS_CERT_PEM).unwrap();
        let mut altered = envelope.clone();
        altered.subscribe_url = Some("https://sns.us-east-1.amazonaws.com/?Action=Other".into());
        assert!(verify(&altered, SNS_CERT_PEM).is_err());
        let batch = events(&envelope).unwrap();
        assert_eq!(
            batch.ignored.as_deref(),
            Some("SNS SubscriptionConfirmation")
        );
    }

    #[test]
    fn stale_unknown_topic_bad_cert_url_or_version_is_unauthenticated() {
        let fields: Value = serde_json::from_str(SNS_V1_BOUNCE).unwrap();
        let with = |key: &str, value: Value| {
            let mut changed = fields.clone();
            changed[key] = value;
            changed.to_string()
        };
        for body in [
            with("Timestamp", json!("2026-03-01T11:54:59.999Z")),
            with("Timestamp", json!("2026-03-01T12:05:00.001Z")),
            with("Timestamp", json!("yesterday")),
            with(
                "TopicArn",
                json!("arn:aws:sns:us-east-1:999999999999:other"),
            ),
            with(
                "SigningCertURL",
                json!("http://sns.us-east-1.amazonaws.com/c.pem"),
            ),
            with(
                "SigningCertURL",
                json!("https://sns.us-east-1.amazonaws.com.evil.example/c.pem"),
            ),
            with(
                "SigningCertURL",
                json!("https://sns.us-east-1.amazonaws.com/redirect?to=c.pem"),
            ),
            with("SignatureVersion", json!("3")),
            with("Signature", json!("%%%")),
            with("Signature", Value::Null),
        ] {
            assert!(
                matches!(parse(&body), Err(FeedbackError::Unauthenticated(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn an_unreadable_envelope_or_ses_event_is_malformed() {
        for body in [
            "",
            "[]",
            "{",
            r#"{"Type":"Other"}"#,
            r#"{"Type":"Notification","Message":1}"#,
        ] {
            assert!(
                matches!(parse(body), Err(FeedbackError::Malformed(_))),
                "{body}"
            );
        }
        for ses in [
            json!({"notificationType": "Bounce", "bounce": {"bounceType": "Permanent"}}),
            json!({"notificationType": "Bounce", "bounce": {"bounceType": "Odd", "bouncedRecipients": [{"emailAddress": "a@example.com"}]}}),
            json!({"notificationType": "Delivery", "delivery": {"recipients": [7]}}),
        ] {
            let envelope = parse(&signed_v2(ses_notification(ses.clone()))).unwrap();
            assert!(
                matches!(events(&envelope), Err(FeedbackError::Malformed(_))),
                "{ses}"
            );
        }
    }

    #[test]
    fn ses_subscription_notices_and_plain_messages_are_ignored() {
        let succeeded = json!({"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "You have successfully subscribed your Amazon SNS topic"});
        let batch = verified_events(&signed_v2(ses_notification(succeeded)));
        assert_eq!(
            batch.ignored.as_deref(),
            Some("AmazonSnsSubscriptionSucceeded")
        );
        let mut plain = ses_notification(json!(null));
        plain["Message"] = json!("hello from the console");
        let batch = verified_events(&signed_v2(plain));
        assert!(batch.events.is_empty());
        assert!(batch.ignored.is_some());
    }

    #[test]
    fn url_allowed_takes_https_on_a_matching_host_only() {
        let settings = settings();
        for good in [
            CERT_URL,
            "https://sns.cn-north-1.amazonaws.com.cn/x.pem",
            "https://SNS.US-EAST-1.AMAZONAWS.COM/x.pem",
            "https://sns.eu-west-1.amazonaws.com:443/x.pem",
        ] {
            assert!(url_allowed(&settings, good), "{good}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.amazonaws.com/x.pem",
            "https://sns.a.b.amazonaws.com/x.pem",
            "https://sns..amazonaws.com/x.pem",
            "https://sns.us_east.amazonaws.com/x.pem",
            "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com@evil.example/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/x.pem",
            "//sns.us-east-1.amazonaws.com/x.pem",
            "sns.us-east-1.amazonaws.com",
            "",
            "https://sns.us-east-1.amazonaws.com /x.pem",
        ] {
            assert!(!url_allowed(&settings, bad), "{bad}");
        }
        let local = SesSettings {
            cert_hosts: vec!["localhost".into()],
            ..settings
        };
        assert!(url_allowed(&local, "https://localhost:8443/cert.pem"));
        assert!(!url_allowed(&local, "https://127.0.0.1:8443/cert.pem"));
    }
}
