//! What a valid `POST /v1/emails` is: one sender, up to `max_recipients`
//! recipients, a text part, and nothing that could forge or split a header.

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::address::{self, Mailbox};
use super::settings::{MailSettings, StreamSettings};

pub const DEFAULT_STREAM: &str = "transactional";
const MAX_SUBJECT_CHARS: usize = 998;
const MAX_HEADERS: usize = 32;
const MAX_TAGS: usize = 32;
const MAX_TAG_CHARS: usize = 256;
const MAX_KEY_BYTES: usize = 255;

/// `X-` and `List-` headers Herald writes itself (or an ESP reads as its
/// instructions); a caller setting one would forge or duplicate it, break
/// the DKIM signature, or add recipients (SendGrid's `X-SMTPAPI`).
const RESERVED_HEADERS: &[&str] = &[
    "list-unsubscribe",
    "list-unsubscribe-post",
    "x-herald-id",
    "x-ses-message-tags",
    "x-smtpapi",
    "x-mailgun-variables",
];

/// Named headers a caller may set besides `X-*` and `List-*`: each only
/// threads or describes a message. In-Reply-To and References thread
/// replies (RFC 5322); Keywords and Comments are informational (RFC 5322);
/// Auto-Submitted (RFC 3834) and Precedence mark automated mail so that
/// vacation responders stay quiet; Feedback-ID groups complaint reports
/// (Gmail's feedback loop). Anything else is refused: addressing and
/// routing headers (`Cc`, `Resent-*`, `Errors-To`, `Return-Receipt-To`,
/// `Disposition-Notification-To`…) would send copies or reports elsewhere,
/// and structural ones (`Content-*`, `MIME-Version`) would corrupt the
/// message Herald builds.
const PASSED_HEADERS: &[&str] = &[
    "in-reply-to",
    "references",
    "keywords",
    "comments",
    "auto-submitted",
    "precedence",
    "feedback-id",
];

/// Why a caller may not set the header `lower` (a lowercased name), if not.
fn header_refusal(lower: &str) -> Option<&'static str> {
    if RESERVED_HEADERS.contains(&lower) || lower.starts_with("x-pm-metadata-") {
        return Some("is set by Herald");
    }
    let passed = PASSED_HEADERS.contains(&lower)
        || (lower.starts_with("x-") && lower.len() > 2)
        || (lower.starts_with("list-") && lower.len() > 5);
    (!passed).then_some(
        "is not a header Herald passes on; allowed: X-*, List-* (but List-Unsubscribe), \
         In-Reply-To, References, Keywords, Comments, Auto-Submitted, Precedence, Feedback-ID",
    )
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Recipients {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailInput {
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<Recipients>,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
}

/// A request refused before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub field: &'static str,
    pub message: String,
}

fn refuse(field: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code: "invalid_field",
        field,
        message: message.into(),
    }
}

/// A request that passed validation: ready for the writer.
#[derive(Debug, Clone)]
pub struct EmailRequest {
    pub stream: String,
    pub from: Mailbox,
    /// Normalised, duplicates removed, in the order given.
    pub to: Vec<String>,
    pub reply_to: Option<Mailbox>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub headers: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
    /// Whose message it is; idempotency keys are scoped by it, so it is
    /// not part of the fingerprint.
    pub tenant: Option<String>,
    /// Identifies the content, so a reused key with other content is caught.
    pub fingerprint: u64,
}

fn is_header_name(name: &str) -> bool {
    (1..=76).contains(&name.len()) && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

pub fn validate(input: EmailInput, mail: &MailSettings) -> Result<EmailRequest, Refusal> {
    let stream_name = input.stream.unwrap_or_else(|| DEFAULT_STREAM.to_owned());
    let stream: &StreamSettings = mail.streams.get(&stream_name).ok_or_else(|| Refusal {
        code: "unknown_stream",
        field: "stream",
        message: format!(
            "no stream named `{}`; configured: {}",
            stream_name.chars().take(64).collect::<String>(),
            mail.streams.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    })?;

    let from_text = input.from.ok_or_else(|| refuse("from", "is required"))?;
    let from = address::parse_mailbox(&from_text).map_err(|e| refuse("from", e.to_string()))?;
    if !stream.allows_from_domain(from.domain()) {
        return Err(Refusal {
            code: "from_domain_not_allowed",
            field: "from",
            message: format!(
                "stream `{}` sends from {} only, not {}",
                stream.name,
                stream.from_domains.join(", "),
                from.domain()
            ),
        });
    }

    let recipients = match input.to {
        None => return Err(refuse("to", "is required")),
        Some(Recipients::One(one)) => vec![one],
        Some(Recipients::Many(many)) => many,
    };
    if recipients.is_empty() {
        return Err(refuse("to", "needs at least one address"));
    }
    if recipients.len() > mail.max_recipients {
        return Err(refuse(
            "to",
            format!("at most {} recipients per request", mail.max_recipients),
        ));
    }
    let mut to: Vec<String> = Vec::with_capacity(recipients.len());
    for text in &recipients {
        let address = address::normalize(text).map_err(|e| {
            refuse(
                "to",
                format!("`{}` {e}", text.chars().take(100).collect::<String>()),
            )
        })?;
        if !to.contains(&address) {
            to.push(address);
        }
    }

    let reply_to = match &input.reply_to {
        None => None,
        Some(text) => {
            Some(address::parse_mailbox(text).map_err(|e| refuse("reply_to", e.to_string()))?)
        }
    };

    let subject = input.subject.unwrap_or_default();
    if address::has_control(&subject) {
        return Err(refuse(
            "subject",
            "contains a line break or control character",
        ));
    }
    if subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(refuse(
            "subject",
            format!("is longer than {MAX_SUBJECT_CHARS} characters"),
        ));
    }

    let text = match input.text {
        Some(t) if !t.trim().is_empty() => t,
        _ => {
            return Err(Refusal {
                code: "missing_text",
                field: "text",
                message:
                    "a plain-text part is required (mailbox providers penalise HTML-only mail)"
                        .to_owned(),
            })
        }
    };
    let html = input.html.filter(|h| !h.trim().is_empty());
    let body_bytes = text.len() + html.as_ref().map_or(0, String::len);
    if body_bytes > mail.max_message_bytes {
        return Err(refuse(
            "text",
            format!(
                "text and html together exceed {} bytes",
                mail.max_message_bytes
            ),
        ));
    }

    if input.headers.len() > MAX_HEADERS {
        return Err(refuse("headers", format!("at most {MAX_HEADERS} headers")));
    }
    let mut headers = Vec::with_capacity(input.headers.len());
    for (name, value) in input.headers {
        let shown: String = name.chars().take(80).collect();
        if !is_header_name(&name) {
            return Err(refuse("headers", format!("`{shown}` is not a header name")));
        }
        if let Some(why) = header_refusal(&name.to_ascii_lowercase()) {
            return Err(refuse("headers", format!("`{shown}` {why}")));
        }
        if address::has_control(&value) || value.len() > 998 {
            return Err(refuse(
                "headers",
                format!("the value of `{shown}` contains a line break or control character, or exceeds 998 bytes"),
            ));
        }
        headers.push((name, value));
    }

    if input.tags.len() > MAX_TAGS {
        return Err(refuse("tags", format!("at most {MAX_TAGS} tags")));
    }
    for (k, v) in &input.tags {
        if k.is_empty() || k.chars().count() > MAX_TAG_CHARS || v.chars().count() > MAX_TAG_CHARS {
            return Err(refuse(
                "tags",
                format!("tag names and values are 1–{MAX_TAG_CHARS} characters"),
            ));
        }
        // Tags reach ESP metadata headers and webhook payloads.
        if address::has_control(k) || address::has_control(v) {
            return Err(refuse(
                "tags",
                "tag names and values contain no line break or control character",
            ));
        }
    }
    let tags: Vec<(String, String)> = input.tags.into_iter().collect();

    if let Some(key) = &input.idempotency_key {
        if key.is_empty() || key.len() > MAX_KEY_BYTES || address::has_control(key) {
            return Err(refuse(
                "idempotency_key",
                format!("must be 1–{MAX_KEY_BYTES} bytes without control characters"),
            ));
        }
    }

    if let Some(tenant) = &input.tenant {
        if !crate::names::is_valid_tenant(tenant) {
            return Err(refuse("tenant", "must match ^[A-Za-z0-9_.:-]{1,128}$"));
        }
    }

    let mut request = EmailRequest {
        stream: stream_name,
        from,
        to,
        reply_to,
        subject,
        text,
        html,
        headers,
        tags,
        idempotency_key: input.idempotency_key,
        tenant: input.tenant,
        fingerprint: 0,
    };
    request.fingerprint = fingerprint(&request);
    Ok(request)
}

fn fingerprint(r: &EmailRequest) -> u64 {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(r.stream.as_bytes());
    field(r.from.display().as_bytes());
    for to in &r.to {
        field(to.as_bytes());
    }
    field(
        r.reply_to
            .as_ref()
            .map(Mailbox::display)
            .unwrap_or_default()
            .as_bytes(),
    );
    field(r.subject.as_bytes());
    field(r.text.as_bytes());
    field(r.html.as_deref().unwrap_or("\0none").as_bytes());
    for (k, v) in r.headers.iter().chain(r.tags.iter()) {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    let digest = h.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::mail::{validate_mail, MailSection, StreamSection};

    fn settings() -> MailSettings {
        let mut section = MailSection::default();
        section.streams.insert(
            "transactional".into(),
            StreamSection {
                from_domains: vec!["acme.com".into()],
                ..Default::default()
            },
        );
        validate_mail(section, std::path::Path::new("/tmp")).unwrap()
    }

    fn input(json: serde_json::Value) -> EmailInput {
        serde_json::from_value(json).unwrap()
    }

    fn base() -> serde_json::Value {
        serde_json::json!({"from": "Acme <no-reply@acme.com>", "to": "Bob@Example.com",
                           "subject": "Hi", "text": "hello"})
    }

    #[test]
    fn a_minimal_request_is_normalised() {
        let r = validate(input(base()), &settings()).unwrap();
        assert_eq!(r.stream, "transactional");
        assert_eq!(r.to, vec!["bob@example.com"]);
        assert_eq!(r.from.name.as_deref(), Some("Acme"));
        let mut many = base();
        many["to"] = serde_json::json!(["a@x.com", "A@X.com", "b@x.com"]);
        assert_eq!(
            validate(input(many), &settings()).unwrap().to,
            vec!["a@x.com", "b@x.com"]
        );
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            ("text", serde_json::json!(null), "missing_text"),
            ("text", serde_json::json!("  "), "missing_text"),
            (
                "subject",
                serde_json::json!("Hi\r\nBcc: x@y.com"),
                "invalid_field",
            ),
            ("to", serde_json::json!("nobody"), "invalid_field"),
            ("to", serde_json::json!([]), "invalid_field"),
            (
                "from",
                serde_json::json!("x@other.com"),
                "from_domain_not_allowed",
            ),
            ("stream", serde_json::json!("nope"), "unknown_stream"),
            ("reply_to", serde_json::json!("a@b.com\n"), "invalid_field"),
            (
                "headers",
                serde_json::json!({"X-A": "v\r\nBcc: x@y.com"}),
                "invalid_field",
            ),
            (
                "headers",
                serde_json::json!({"Bcc": "x@y.com"}),
                "invalid_field",
            ),
            ("headers", serde_json::json!({"X A": "v"}), "invalid_field"),
            ("idempotency_key", serde_json::json!(""), "invalid_field"),
        ];
        for (field, value, code) in cases {
            let mut body = base();
            body[field] = value.clone();
            let err = validate(input(body), &settings()).unwrap_err();
            assert_eq!((err.field, err.code), (field, code), "{field} = {value}");
        }
    }

    #[test]
    fn only_headers_safe_to_pass_on_are_accepted() {
        let accepted = [
            "X-Campaign",
            "x-entity-ref-id",
            "List-Id",
            "List-Help",
            "In-Reply-To",
            "References",
            "Keywords",
            "Comments",
            "Auto-Submitted",
            "Precedence",
            "Feedback-ID",
        ];
        for name in accepted {
            let mut body = base();
            body["headers"] = serde_json::json!({ name: "v" });
            let r = validate(input(body), &settings());
            assert!(r.is_ok(), "{name}: {r:?}");
        }
        let refused = [
            // Routing: copies or reports to someone else.
            "Resent-Bcc",
            "Resent-To",
            "Errors-To",
            "Disposition-Notification-To",
            "Return-Receipt-To",
            "Cc",
            "Bcc",
            "Return-Path",
            "Sender",
            // Written by Herald, or read by an ESP as instructions.
            "From",
            "Message-ID",
            "List-Unsubscribe",
            "list-unsubscribe-post",
            "X-Herald-Id",
            "X-SMTPAPI",
            "X-PM-Metadata-herald-id",
            // Structure of the message Herald builds.
            "Content-Type",
            "MIME-Version",
            "DKIM-Signature",
            "X-",
            "List-",
        ];
        for name in refused {
            let mut body = base();
            body["headers"] = serde_json::json!({ name: "v" });
            let err = validate(input(body), &settings()).unwrap_err();
            assert_eq!(
                (err.field, err.code),
                ("headers", "invalid_field"),
                "{name}"
            );
            assert!(err.message.contains(name), "{name}: {}", err.message);
        }
    }

    #[test]
    fn line_breaks_are_refused_in_tags_too() {
        for tags in [
            serde_json::json!({"kind": "a\r\nBcc: x@y.com"}),
            serde_json::json!({"kind": "a\nb"}),
            serde_json::json!({"ki\rnd": "a"}),
            serde_json::json!({"kind": "a\u{0}b"}),
        ] {
            let mut body = base();
            body["tags"] = tags.clone();
            let err = validate(input(body), &settings()).unwrap_err();
            assert_eq!(err.field, "tags", "{tags}");
        }
        let mut body = base();
        body["tags"] = serde_json::json!({"kind": "reset\tpassword"});
        assert!(validate(input(body), &settings()).is_ok());
    }

    #[test]
    fn the_fingerprint_follows_the_content() {
        let a = validate(input(base()), &settings()).unwrap();
        let b = validate(input(base()), &settings()).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        let mut other = base();
        other["text"] = "hello!".into();
        assert_ne!(
            validate(input(other), &settings()).unwrap().fingerprint,
            a.fingerprint
        );
    }
}
