//! Property tests over every parser that request bytes reach: arbitrary
//! bytes and generated JSON (wrong types, huge numbers, deep nesting, NUL,
//! CR/LF, unicode, missing and unknown fields) never panic, and input that
//! breaks a rule is refused. The daemon-level counterpart is the `robustness`
//! folder of the integration tests.

use std::io::Write;

use hmac::{Hmac, Mac};
use hyper::header::{HeaderValue, CONTENT_ENCODING};
use hyper::HeaderMap;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::api::http::{page_limit, query_params};
use crate::clock;
use crate::config::mail::{validate_mail, MailSection, StreamSection};
use crate::events::{self, Invalid};
use crate::feedback::settings::{MailgunSettings, PostmarkSettings, ResendSettings, SesSettings};
use crate::feedback::test_support::{self, SendgridSigner};
use crate::feedback::{self, ses, Batch, FeedbackError, Inbound};
use crate::ids;
use crate::mail::address;
use crate::mail::request::{self, EmailInput};
use crate::mail::settings::MailSettings;
use crate::names;
use crate::percent;
use crate::store::EventCursor;
use crate::tracking::ingest;
use crate::tracking::segment::{self, Call};
use crate::tracking::settings::{Source, TrackingSettings};
use crate::webhooks::endpoint::{self, EndpointInput};
use crate::webhooks::signing::{self, Secret};
use crate::webhooks::target;

/// Enough cases to find the classic mistakes, few enough that the whole
/// file runs in seconds in a debug build on a small machine.
fn cases(n: u32) -> Config {
    Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    }
}

const NOW_MS: i64 = 1_800_000_000_000;

/// Text built to trip parsers: control characters, line breaks, NUL,
/// quotes, non-ASCII, lone `%`, and long runs.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        "[a-z0-9._@<>\" %+:-]{0,24}",
        Just(String::new()),
        Just("\0".to_owned()),
        Just("a\r\nBcc: x@example.com".to_owned()),
        Just("é\u{202e}\u{feff}𝄞".to_owned()),
        (1usize..5000).prop_map(|n| "x".repeat(n)),
        any::<Vec<char>>().prop_map(|c| c.into_iter().collect()),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        nasty_string().prop_map(Value::from),
    ]
}

/// Any JSON value, keys drawn from the fields the parsers know (so that
/// generated objects reach past the first check) or made up.
fn any_json(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        prop::sample::select(fields).prop_map(str::to_owned),
        nasty_string()
    ];
    leaf().prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value of any JSON type but `allowed` (and never null, which optional
/// fields accept).
fn wrong_type(allowed: fn(&Value) -> bool) -> impl Strategy<Value = Value> {
    any_json(&["a"]).prop_filter("a wrong type", move |v| !v.is_null() && !allowed(v))
}

/// `[[[…]]]` or `{"a":{"a":…}}` far deeper than any parser should follow.
fn deep(levels: usize, objects: bool) -> String {
    if objects {
        format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels))
    } else {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }
}

/// `base` with `field` replaced by the raw JSON text `raw`.
fn with_raw(base: &Value, field: &str, raw: &str) -> Vec<u8> {
    let mut object = base.as_object().expect("bases are objects").clone();
    object.insert(field.to_owned(), json!("@@RAW@@"));
    Value::Object(object)
        .to_string()
        .replacen("\"@@RAW@@\"", raw, 1)
        .into_bytes()
}

fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

// ---- events -------------------------------------------------------------

const EVENT_FIELDS: &[&str] = &[
    "type",
    "tenant",
    "data",
    "data_versions",
    "idempotency_key",
    "occurred_at",
];

fn valid_event() -> Value {
    json!({"type": "invoice.paid", "tenant": "acme", "data": {"amount": 4200},
           "idempotency_key": "in_1", "occurred_at": "2026-11-22T10:00:00Z"})
}

/// What every accepted event satisfies, whatever the input was.
fn check_event(e: &events::NewEvent) {
    assert!(names::is_valid_type_name(&e.event_type), "{}", e.event_type);
    assert!(e.tenant.as_deref().is_none_or(names::is_valid_tenant));
    let data: Value = serde_json::from_str(&e.data).expect("stored data is JSON");
    assert!(data.is_object());
    let mut last = 0;
    for (version, text) in &e.older_versions {
        assert!(*version > last && *version < e.data_version);
        last = *version;
        assert!(serde_json::from_str::<Value>(text)
            .expect("JSON")
            .is_object());
    }
    if let Some(key) = &e.idempotency_key {
        assert!(!key.is_empty() && !key.chars().any(char::is_control));
    }
}

fn event_field_breakage() -> impl Strategy<Value = (&'static str, Value)> {
    prop_oneof![
        wrong_type(Value::is_string).prop_map(|v| ("type", v)),
        nasty_string()
            .prop_filter("an invalid name", |s| !names::is_valid_type_name(s))
            .prop_map(|s| ("type", Value::from(s))),
        wrong_type(Value::is_string).prop_map(|v| ("tenant", v)),
        nasty_string()
            .prop_filter("an invalid tenant", |s| !names::is_valid_tenant(s))
            .prop_map(|s| ("tenant", Value::from(s))),
        wrong_type(Value::is_object).prop_map(|v| ("data", v)),
        // Beside `data`, any `data_versions` is refused.
        any_json(&["1", "2"]).prop_map(|v| ("data_versions", v)),
        wrong_type(Value::is_string).prop_map(|v| ("idempotency_key", v)),
        prop_oneof![
            Just(String::new()),
            Just("a\nb".into()),
            Just("k".repeat(256))
        ]
        .prop_map(|s| ("idempotency_key", Value::from(s))),
        wrong_type(Value::is_string).prop_map(|v| ("occurred_at", v)),
        nasty_string()
            .prop_filter("not a time", |s| clock::parse_rfc3339(s).is_none())
            .prop_map(|s| ("occurred_at", Value::from(s))),
        any_json(EVENT_FIELDS).prop_map(|v| ("unknown_field", v)),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn events_survive_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(e) = events::parse_event(&bytes) {
            check_event(&e);
        }
        if !is_json(&bytes) {
            // Which of the two 400s depends on what serde_json met first.
            prop_assert!(matches!(
                events::parse_event(&bytes),
                Err(Invalid::Json(_) | Invalid::Shape(_))
            ));
        }
    }

    #[test]
    fn events_survive_arbitrary_json(value in any_json(EVENT_FIELDS)) {
        if let Ok(e) = events::parse_event(value.to_string().as_bytes()) {
            check_event(&e);
        }
    }

    #[test]
    fn an_event_with_one_broken_field_is_refused((name, bad) in event_field_breakage()) {
        let mut body = valid_event();
        body[name] = bad;
        prop_assert!(events::parse_event(body.to_string().as_bytes()).is_err(), "{}", body);
    }

    #[test]
    fn an_event_missing_its_type_is_refused(drop_also in prop::sample::subsequence(EVENT_FIELDS, 0..5)) {
        let mut body = valid_event();
        let object = body.as_object_mut().unwrap();
        object.remove("type");
        for f in drop_also {
            object.remove(f);
        }
        prop_assert!(matches!(events::parse_event(body.to_string().as_bytes()), Err(Invalid::Shape(_))));
    }

    #[test]
    fn event_bodies_cut_short_are_refused(cut in 0usize..120) {
        let text = valid_event().to_string();
        let cut = cut.min(text.len() - 1);
        prop_assert!(events::parse_event(&text.as_bytes()[..cut]).is_err());
    }
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let base = valid_event();
    for field in EVENT_FIELDS.iter().chain(["data"].iter()) {
        for objects in [false, true] {
            let body = with_raw(&base, field, &deep(100_000, objects));
            assert!(events::parse_event(&body).is_err(), "{field}");
        }
    }
    assert!(events::parse_event(deep(100_000, false).as_bytes()).is_err());
}

// ---- endpoints ----------------------------------------------------------

const ENDPOINT_FIELDS: &[&str] = &[
    "url",
    "tenant",
    "event_types",
    "description",
    "headers",
    "rate_limit_per_sec",
    "timeout_secs",
    "secret",
    "payload_version",
];

fn valid_endpoint() -> Value {
    json!({"url": "https://hooks.example.com/in", "tenant": "acme",
           "event_types": ["invoice.paid", "user.*"], "description": "billing",
           "headers": {"x-token": "t"}, "rate_limit_per_sec": 10, "timeout_secs": 5,
           "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "payload_version": 1})
}

/// Parses a create or patch body and applies it as the handler does.
fn apply_endpoint(bytes: &[u8]) -> Result<crate::store::records::EndpointRecord, String> {
    let input: EndpointInput = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    endpoint::apply(endpoint::new_record(NOW_MS), input, true).map_err(|e| format!("{e:?}"))
}

fn endpoint_field_breakage() -> impl Strategy<Value = (&'static str, Value)> {
    let number = |v: &Value| v.is_u64();
    prop_oneof![
        wrong_type(Value::is_string).prop_map(|v| ("url", v)),
        nasty_string().prop_map(|s| ("url", Value::from(format!("ftp://{s}")))),
        nasty_string()
            .prop_filter("not a URL", |s| target::parse(s, true).is_err())
            .prop_map(|s| ("url", Value::from(s))),
        wrong_type(Value::is_string).prop_map(|v| ("tenant", v)),
        wrong_type(Value::is_array).prop_map(|v| ("event_types", v)),
        nasty_string()
            .prop_filter("not a pattern", |s| !names::is_valid_pattern(s))
            .prop_map(|s| ("event_types", json!([s]))),
        wrong_type(Value::is_string).prop_map(|v| ("description", v)),
        Just(("description", Value::from("d".repeat(1025)))),
        wrong_type(Value::is_object).prop_map(|v| ("headers", v)),
        nasty_string().prop_map(|s| ("headers", json!({"x-a": format!("{s}\r\n")}))),
        Just(("headers", json!({"webhook-signature": "v1,forged"}))),
        wrong_type(number).prop_map(|v| ("rate_limit_per_sec", v)),
        Just(("rate_limit_per_sec", json!(0))),
        Just(("rate_limit_per_sec", json!(u64::MAX))),
        wrong_type(number).prop_map(|v| ("timeout_secs", v)),
        (31u64..u64::MAX).prop_map(|n| ("timeout_secs", json!(n))),
        wrong_type(Value::is_string).prop_map(|v| ("secret", v)),
        nasty_string().prop_map(|s| ("secret", Value::from(format!("whsec_{s}!")))),
        wrong_type(number).prop_map(|v| ("payload_version", v)),
        (2u64..100_000).prop_map(|n| ("payload_version", json!(n))),
        any_json(ENDPOINT_FIELDS).prop_map(|v| ("unknown_field", v)),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn endpoints_survive_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let applied = apply_endpoint(&bytes);
        if !is_json(&bytes) {
            prop_assert!(applied.is_err());
        }
    }

    #[test]
    fn endpoints_survive_arbitrary_json(value in any_json(ENDPOINT_FIELDS)) {
        if let Ok(record) = apply_endpoint(value.to_string().as_bytes()) {
            prop_assert!(record.timeout_secs.is_none_or(|t| (1..=30).contains(&t)));
            prop_assert!(record.rate_limit_per_sec != Some(0));
            prop_assert!(Secret::parse(&record.secret).is_ok());
        }
    }

    #[test]
    fn an_endpoint_with_one_broken_field_is_refused((name, bad) in endpoint_field_breakage()) {
        let mut body = valid_endpoint();
        body[name] = bad;
        prop_assert!(apply_endpoint(body.to_string().as_bytes()).is_err(), "{}", body);
    }
}

const EVENT_TYPE_FIELDS: &[&str] = &[
    "description",
    "versions",
    "deprecated",
    "1",
    "2",
    "schema",
    "sample",
    "type",
    "properties",
    "$ref",
    "pattern",
    "items",
];

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn event_type_definitions_survive_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let parsed = crate::catalog::definition::parse(&bytes, NOW_MS);
        if !is_json(&bytes) {
            prop_assert!(parsed.is_err());
        }
    }

    /// Any JSON as a schema either compiles, and then validates its own
    /// sample, or is refused; and any JSON as a definition never panics.
    #[test]
    fn event_type_schemas_compile_or_are_refused(
        schema in any_json(EVENT_TYPE_FIELDS),
        sample in any_json(EVENT_TYPE_FIELDS),
        definition in any_json(EVENT_TYPE_FIELDS),
    ) {
        let body = json!({"versions": {"1": {"schema": schema, "sample": sample}}});
        if let Ok(entry) = crate::catalog::definition::parse(body.to_string().as_bytes(), NOW_MS) {
            let catalog = crate::catalog::Catalog::default();
            catalog.put("t", std::sync::Arc::new(entry));
            prop_assert!(sample.is_object());
            prop_assert!(catalog.check("t", [(1, sample.to_string().as_str())]).is_ok());
        }
        let _ = crate::catalog::definition::parse(definition.to_string().as_bytes(), NOW_MS);
    }
}

#[test]
fn the_endpoint_generators_start_from_a_valid_body() {
    apply_endpoint(valid_endpoint().to_string().as_bytes()).unwrap();
    events::parse_event(valid_event().to_string().as_bytes()).unwrap();
    let base = valid_endpoint();
    for field in ENDPOINT_FIELDS {
        let body = with_raw(&base, field, &deep(100_000, true));
        assert!(apply_endpoint(&body).is_err(), "{field}");
    }
}

// ---- mail ---------------------------------------------------------------

const EMAIL_FIELDS: &[&str] = &[
    "stream",
    "from",
    "to",
    "reply_to",
    "subject",
    "text",
    "html",
    "headers",
    "tags",
    "idempotency_key",
];

fn mail_settings() -> MailSettings {
    let mut section = MailSection::default();
    section.streams.insert(
        "transactional".into(),
        StreamSection {
            from_domains: vec!["example.com".into()],
            ..Default::default()
        },
    );
    validate_mail(section, std::path::Path::new("outbox")).expect("a valid mail section")
}

fn valid_email() -> Value {
    json!({"stream": "transactional", "from": "Acme <no-reply@example.com>",
           "to": ["bob@example.net"], "reply_to": "help@example.com", "subject": "Hi",
           "text": "hello", "html": "<p>hello</p>", "headers": {"X-Campaign": "c1"},
           "tags": {"kind": "reset"}, "idempotency_key": "reset-1"})
}

fn validate_email(bytes: &[u8], settings: &MailSettings) -> Result<request::EmailRequest, String> {
    let input: EmailInput = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    request::validate(input, settings).map_err(|r| r.code.to_owned())
}

fn email_field_breakage() -> impl Strategy<Value = (&'static str, Value)> {
    let to = |v: &Value| v.is_string() || v.is_array();
    prop_oneof![
        wrong_type(Value::is_string).prop_map(|v| ("stream", v)),
        nasty_string()
            .prop_filter("not the stream", |s| s != "transactional")
            .prop_map(|s| ("stream", Value::from(s))),
        wrong_type(Value::is_string).prop_map(|v| ("from", v)),
        nasty_string()
            .prop_filter("not an address", |s| address::parse_mailbox(s).is_err())
            .prop_map(|s| ("from", Value::from(s))),
        Just(("from", Value::from("x@other.example"))),
        wrong_type(to).prop_map(|v| ("to", v)),
        Just(("to", json!([]))),
        nasty_string()
            .prop_filter("not an address", |s| address::normalize(s).is_err())
            .prop_map(|s| ("to", json!(["ok@example.net", s]))),
        wrong_type(Value::is_string).prop_map(|v| ("reply_to", v)),
        nasty_string().prop_map(|s| ("subject", Value::from(format!("{s}\n")))),
        Just(("subject", Value::from("s".repeat(999)))),
        wrong_type(Value::is_string).prop_map(|v| ("text", v)),
        Just(("text", Value::from(" \r\n\t"))),
        wrong_type(Value::is_object).prop_map(|v| ("headers", v)),
        nasty_string().prop_map(|s| ("headers", json!({"X-A": format!("{s}\r\nBcc: x@y.z")}))),
        Just(("headers", json!({"Message-ID": "<forged@example.com>"}))),
        wrong_type(Value::is_object).prop_map(|v| ("tags", v)),
        Just(("tags", json!({"": "empty name"}))),
        wrong_type(Value::is_string).prop_map(|v| ("idempotency_key", v)),
        any_json(EMAIL_FIELDS).prop_map(|v| ("unknown_field", v)),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn emails_survive_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let settings = mail_settings();
        let validated = validate_email(&bytes, &settings);
        if !is_json(&bytes) {
            prop_assert!(validated.is_err());
        }
    }

    #[test]
    fn emails_survive_arbitrary_json(value in any_json(EMAIL_FIELDS)) {
        let settings = mail_settings();
        if let Ok(r) = validate_email(value.to_string().as_bytes(), &settings) {
            prop_assert!(!r.to.is_empty());
            prop_assert!(!address::has_control(&r.subject));
            for (name, value) in &r.headers {
                prop_assert!(!address::has_control(name) && !address::has_control(value));
            }
        }
    }

    #[test]
    fn an_email_with_one_broken_field_is_refused((name, bad) in email_field_breakage()) {
        let settings = mail_settings();
        let mut body = valid_email();
        body[name] = bad;
        prop_assert!(validate_email(body.to_string().as_bytes(), &settings).is_err(), "{}", body);
    }

    /// Path and query parts of the mail routes: addresses and suppression
    /// reasons.
    #[test]
    fn address_parsers_survive_any_text(text in nasty_string()) {
        if let Ok(a) = address::normalize(&text) {
            prop_assert!(a.contains('@') && !address::has_control(&a) && a.len() <= 254);
            prop_assert_eq!(address::normalize(&a), Ok(a.clone()));
        }
        if let Ok(m) = address::parse_mailbox(&text) {
            prop_assert!(!m.name.as_deref().is_some_and(address::has_control));
        }
        if let Some(decoded) = percent::decode(&text) {
            prop_assert!(decoded.len() <= text.len());
        }
        let _ = crate::store::records::SuppressionReason::parse(&text);
    }
}

#[test]
fn the_email_generator_starts_from_a_valid_body() {
    let settings = mail_settings();
    validate_email(valid_email().to_string().as_bytes(), &settings).unwrap();
    for field in EMAIL_FIELDS {
        let body = with_raw(&valid_email(), field, &deep(100_000, false));
        assert!(validate_email(&body, &settings).is_err(), "{field}");
    }
}

// ---- Segment calls ------------------------------------------------------

const SEGMENT_FIELDS: &[&str] = &[
    "type",
    "userId",
    "anonymousId",
    "previousId",
    "groupId",
    "event",
    "messageId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "properties",
    "traits",
    "context",
    "integrations",
    "writeKey",
    "batch",
    "campaign",
];

fn tracking_settings() -> TrackingSettings {
    TrackingSettings {
        sources: vec![Source {
            name: "web".into(),
            write_key: "wk_web_0123456789abcdef".into(),
            tenant: None,
        }],
        dedup_window: std::time::Duration::from_secs(7 * 24 * 3600),
        max_event_bytes: 32 * 1024,
        max_batch_bytes: 500 * 1024,
        max_batch_events: 2500,
        retention: None,
        prune_interval: std::time::Duration::from_secs(60),
    }
}

const CALLS: [Option<Call>; 7] = [
    Some(Call::Identify),
    Some(Call::Track),
    Some(Call::Page),
    Some(Call::Screen),
    Some(Call::Group),
    Some(Call::Alias),
    None,
];

/// A valid body for the route of `call` (`None`: `/v1/batch`).
fn valid_call(call: Option<Call>) -> Value {
    let item = |c: Call| {
        let mut v = json!({"userId": "u_1", "anonymousId": "a_1", "messageId": "m-1",
                           "timestamp": "2026-11-22T10:00:00Z", "sentAt": "2026-11-22T10:00:01Z",
                           "properties": {"plan": "pro"}, "traits": {"email": "a@example.com"},
                           "context": {"campaign": {"source": "google"}}});
        match c {
            Call::Track => v["event"] = json!("Signed Up"),
            Call::Group => v["groupId"] = json!("g_1"),
            Call::Alias => v["previousId"] = json!("a_1"),
            _ => {}
        }
        v
    };
    match call {
        Some(c) => item(c),
        None => {
            let mut first = item(Call::Track);
            first["type"] = json!("track");
            json!({"batch": [first], "context": {"library": {"name": "x"}}})
        }
    }
}

/// Everything the route does with a body after authentication, as one call.
fn ingest_body(call: Option<Call>, bytes: &[u8]) -> Result<Vec<ingest::Prepared>, ingest::Refusal> {
    let parsed = ingest::parse(call, bytes, &tracking_settings())?;
    ingest::prepare(call, parsed, "web", None, NOW_MS)
}

/// A batch's items carry their broken field inside `batch[0]`.
fn break_call(call: Option<Call>, name: &str, bad: Value) -> Value {
    let mut body = valid_call(call);
    match call {
        Some(_) => body[name] = bad,
        None => body["batch"][0][name] = bad,
    }
    body
}

fn segment_field_breakage(call: Option<Call>) -> BoxedStrategy<(&'static str, Value)> {
    let id = |v: &Value| v.is_string() || v.is_number();
    let mut options: Vec<BoxedStrategy<(&'static str, Value)>> = vec![
        wrong_type(Value::is_string)
            .prop_map(|v| ("messageId", v))
            .boxed(),
        Just(("messageId", Value::from("m".repeat(101)))).boxed(),
        Just(("messageId", Value::from("m\u{0}"))).boxed(),
        nasty_string()
            .prop_filter("not a time", |s| segment::parse_time(s).is_none())
            .prop_map(|s| ("timestamp", Value::from(s)))
            .boxed(),
        wrong_type(Value::is_string)
            .prop_map(|v| ("sentAt", v))
            .boxed(),
        Just(("timestamp", Value::from("2999-01-01T00:00:00Z"))).boxed(),
        wrong_type(Value::is_object)
            .prop_map(|v| ("properties", v))
            .boxed(),
        wrong_type(Value::is_object)
            .prop_map(|v| ("traits", v))
            .boxed(),
        wrong_type(Value::is_object)
            .prop_map(|v| ("context", v))
            .boxed(),
        wrong_type(Value::is_object)
            .prop_map(|v| ("integrations", v))
            .boxed(),
    ];
    if call != Some(Call::Alias) {
        // Both ids broken: one wrong-typed id already refuses the call.
        options.push(wrong_type(id).prop_map(|v| ("userId", v)).boxed());
        options.push(wrong_type(id).prop_map(|v| ("anonymousId", v)).boxed());
    } else {
        options.push(wrong_type(id).prop_map(|v| ("previousId", v)).boxed());
        options.push(Just(("previousId", Value::Null)).boxed());
    }
    match call {
        Some(Call::Track) | None => {
            options.push(
                wrong_type(Value::is_string)
                    .prop_map(|v| ("event", v))
                    .boxed(),
            );
            options.push(Just(("event", Value::from(" "))).boxed());
            options.push(Just(("event", Value::from("e\r\n"))).boxed());
            options.push(Just(("event", Value::from("e".repeat(129)))).boxed());
        }
        Some(Call::Group) => {
            options.push(wrong_type(id).prop_map(|v| ("groupId", v)).boxed());
        }
        _ => {}
    }
    if call.is_none() {
        options.push(
            nasty_string()
                .prop_map(|s| ("type", Value::from(s)))
                .boxed(),
        );
    }
    prop::strategy::Union::new(options).boxed()
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn segment_calls_survive_arbitrary_bytes(
        call in prop::sample::select(&CALLS[..]),
        bytes in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let result = ingest_body(call, &bytes);
        if !is_json(&bytes) {
            prop_assert!(result.is_err());
        }
    }

    #[test]
    fn segment_calls_survive_arbitrary_json(
        call in prop::sample::select(&CALLS[..]),
        value in any_json(SEGMENT_FIELDS),
        wrap_in_batch in any::<bool>(),
    ) {
        let body = if wrap_in_batch { json!({"batch": [value]}) } else { value };
        if let Ok(prepared) = ingest_body(call, body.to_string().as_bytes()) {
            for p in prepared {
                prop_assert!(!p.tracked.event_type.is_empty());
                prop_assert!(p.tracked.message_id.chars().count() <= segment::MAX_MESSAGE_ID_CHARS);
                prop_assert!(p.tracked.timestamp_ms >= 0);
                prop_assert!(serde_json::from_str::<Value>(&p.data).is_ok());
            }
        }
    }

    #[test]
    fn a_segment_call_with_one_broken_field_is_refused(
        (call, (name, bad)) in prop::sample::select(&CALLS[..])
            .prop_flat_map(|c| (Just(c), segment_field_breakage(c))),
    ) {
        let body = break_call(call, name, bad);
        let result = ingest_body(call, body.to_string().as_bytes());
        prop_assert!(result.is_err(), "{}", body);
    }

    #[test]
    fn a_batch_whose_items_are_not_objects_is_refused(item in any_json(SEGMENT_FIELDS)) {
        prop_assume!(!item.is_object());
        let body = json!({"batch": [valid_call(None)["batch"][0].clone(), item]});
        prop_assert!(ingest_body(None, body.to_string().as_bytes()).is_err());
        if !item.is_array() {
            let not_a_list = json!({"batch": item});
            prop_assert!(ingest_body(None, not_a_list.to_string().as_bytes()).is_err());
        }
    }

    /// A gzip body is refused, not inflated, past the limit: a bomb of
    /// zeros costs at most `limit` bytes.
    #[test]
    fn gzip_bodies_inflate_only_up_to_the_limit(
        zeros in 0usize..200_000,
        garbage in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let limit = 32 * 1024;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&vec![0u8; zeros]).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let inflated = ingest::decode_body(&headers, &enc.finish().unwrap(), limit);
        match inflated {
            Ok(out) => prop_assert!(zeros <= limit && out.len() == zeros),
            Err(ingest::Refusal::TooLarge(_)) => prop_assert!(zeros > limit),
            Err(other) => prop_assert!(false, "{:?}", other),
        }
        prop_assert!(ingest::decode_body(&headers, &garbage, limit).is_err() || garbage.is_empty());
    }

    #[test]
    fn segment_timestamps_survive_any_text(text in nasty_string()) {
        if let Some(ms) = segment::parse_time(&text) {
            prop_assert!(ms >= 0);
        }
    }
}

#[test]
fn the_segment_generators_start_from_valid_bodies() {
    for call in CALLS {
        let body = valid_call(call).to_string();
        ingest_body(call, body.as_bytes()).unwrap_or_else(|e| panic!("{call:?}: {e:?}"));
        for objects in [false, true] {
            let deep_body = with_raw(&valid_call(call), "properties", &deep(100_000, objects));
            assert!(ingest_body(call, &deep_body).is_err(), "{call:?}");
        }
    }
}

// ---- ESP feedback webhooks ----------------------------------------------

const FEEDBACK_HEADERS: &[&str] = &[
    "x-twilio-email-event-webhook-signature",
    "x-twilio-email-event-webhook-timestamp",
    "authorization",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// Fields and values the five formats use, so generated objects reach
/// past each reader's first checks.
const FEEDBACK_FIELDS: &[&str] = &[
    "event",
    "type",
    "email",
    "sg_event_id",
    "sg_message_id",
    "smtp-id",
    "timestamp",
    "herald_id",
    "reason",
    "RecordType",
    "TypeCode",
    "ID",
    "Email",
    "Recipient",
    "MessageID",
    "Metadata",
    "herald-id",
    "BouncedAt",
    "SuppressSending",
    "id",
    "recipient",
    "severity",
    "user-variables",
    "message",
    "headers",
    "message-id",
    "delivery-status",
    "data",
    "to",
    "bounce",
    "subType",
    "tags",
    "name",
    "value",
    "email_id",
    "created_at",
    "notificationType",
    "eventType",
    "bounceType",
    "bounceSubType",
    "bouncedRecipients",
    "emailAddress",
    "complaint",
    "complainedRecipients",
    "delivery",
    "recipients",
    "deliveryDelay",
    "delayedRecipients",
    "mail",
    "destination",
    "messageId",
    "commonHeaders",
];

const FEEDBACK_EVENT_NAMES: &[&str] = &[
    "bounce",
    "dropped",
    "deferred",
    "delivered",
    "spamreport",
    "open",
    "click",
    "processed",
    "Bounce",
    "SpamComplaint",
    "Delivery",
    "Open",
    "Click",
    "SubscriptionChange",
    "failed",
    "complained",
    "opened",
    "clicked",
    "email.bounced",
    "email.complained",
    "email.delivered",
    "email.delivery_delayed",
    "email.opened",
    "email.clicked",
    "email.sent",
    "Complaint",
    "DeliveryDelay",
    "Reject",
    "Send",
];

/// Arbitrary generated JSON, often an object whose kind field (`event`,
/// `RecordType`, `type`, `notificationType`) names a real event type.
fn feedback_json() -> impl Strategy<Value = Value> {
    (
        any_json(FEEDBACK_FIELDS),
        prop::sample::select(
            &[
                "event",
                "RecordType",
                "type",
                "notificationType",
                "eventType",
            ][..],
        ),
        prop::sample::select(FEEDBACK_EVENT_NAMES),
        any::<bool>(),
    )
        .prop_map(|(mut value, field, name, typed)| {
            if let (Some(object), true) = (value.as_object_mut(), typed) {
                object.insert(field.to_owned(), Value::from(name));
            }
            value
        })
}

fn feedback_headers() -> impl Strategy<Value = HeaderMap> {
    let value = prop_oneof![
        nasty_string().prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..40),
        Just(b"1772366400".to_vec()),
        Just(b"Basic cG9zdG1hcms6cGFzcw==".to_vec()),
        Just(b"v1,AAAA v1,".to_vec()),
    ];
    prop::collection::vec((prop::sample::select(FEEDBACK_HEADERS), value), 0..8).prop_map(|pairs| {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                headers.append(name, value);
            }
        }
        headers
    })
}

struct FeedbackKeys {
    sendgrid: SendgridSigner,
    postmark: PostmarkSettings,
    mailgun: MailgunSettings,
    resend: ResendSettings,
    resend_secret: Secret,
    ses: SesSettings,
}

/// One set of keys for every case: generating a P-256 pair per case would
/// dominate the run.
fn feedback_keys() -> &'static FeedbackKeys {
    static KEYS: std::sync::OnceLock<FeedbackKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let resend_secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let resend_key = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .unwrap();
        FeedbackKeys {
            sendgrid: SendgridSigner::new(),
            postmark: PostmarkSettings {
                username: "postmark".into(),
                password: "pass".into(),
            },
            mailgun: MailgunSettings {
                signing_key: "key-3ax6xnjp29jd6fds4gc373sgvjxteol0".into(),
            },
            resend: ResendSettings { secret: resend_key },
            resend_secret,
            ses: SesSettings {
                topic_arns: vec!["arn:aws:sns:us-east-1:123456789012:herald-feedback".into()],
                cert_hosts: vec!["sns.*.amazonaws.com".into()],
                ca_pem: None,
                auto_confirm: true,
            },
        }
    })
}

/// What every event a reader returns satisfies, whatever the input.
fn check_feedback(batch: &Batch) {
    assert!(batch.events.len() <= feedback::MAX_EVENTS_PER_REQUEST);
    assert_eq!(
        batch.events.is_empty(),
        batch.ignored.is_some(),
        "{batch:?}"
    );
    for event in &batch.events {
        assert!(!event.event_id.is_empty());
        assert!(!event.address.is_empty() && event.address.trim() == event.address);
        assert!(
            serde_json::from_str::<Value>(&event.raw).is_ok(),
            "{}",
            event.raw
        );
    }
}

/// Every reader, given the same request; none may authenticate it.
fn read_everywhere(headers: &HeaderMap, body: &[u8]) -> Vec<Result<Batch, FeedbackError>> {
    let keys = feedback_keys();
    let inbound = Inbound {
        headers,
        body,
        now_ms: test_support::NOW_MS,
    };
    vec![
        feedback::sendgrid::read(&keys.sendgrid.settings(), &inbound),
        feedback::postmark::read(&keys.postmark, &inbound),
        feedback::mailgun::read(&keys.mailgun, &inbound),
        feedback::resend::read(&keys.resend, &inbound),
        ses::parse_envelope(&keys.ses, &inbound).map(|_| Batch::default()),
    ]
}

fn is_unauthenticated(result: &Result<Batch, FeedbackError>) -> bool {
    matches!(result, Err(FeedbackError::Unauthenticated(_)))
}

fn ses_envelope(message: String) -> ses::Envelope {
    ses::Envelope {
        kind: ses::SnsKind::Notification,
        message_id: "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324".into(),
        topic_arn: "arn:aws:sns:us-east-1:123456789012:herald-feedback".into(),
        subject: None,
        message,
        timestamp: "2026-03-01T12:00:00.000Z".into(),
        timestamp_ms: test_support::NOW_MS,
        signature_version: ses::SignatureVersion::V2,
        signature: Vec::new(),
        signing_cert_url: "https://sns.us-east-1.amazonaws.com/c.pem".into(),
        subscribe_url: None,
        token: None,
    }
}

proptest! {
    #![proptest_config(cases(128))]

    #[test]
    fn feedback_readers_survive_arbitrary_bytes_and_headers(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        headers in feedback_headers(),
    ) {
        for result in read_everywhere(&headers, &bytes) {
            prop_assert!(result.is_err(), "{:?}", result);
        }
    }

    #[test]
    fn feedback_readers_survive_arbitrary_json_unsigned(value in feedback_json()) {
        let body = value.to_string();
        for result in read_everywhere(&HeaderMap::new(), body.as_bytes()) {
            prop_assert!(result.is_err(), "{:?}", result);
        }
    }

    /// Signed correctly, generated JSON gets past authentication: the
    /// answer is events or "malformed", never a panic.
    #[test]
    fn signed_arbitrary_json_reads_or_is_malformed(
        value in feedback_json(),
        as_array in any::<bool>(),
    ) {
        let keys = feedback_keys();
        let now = test_support::NOW_SECS;

        let body = if as_array { json!([value]) } else { value.clone() }.to_string();
        let headers = keys.sendgrid.headers(now, body.as_bytes());
        let inbound = Inbound { headers: &headers, body: body.as_bytes(), now_ms: test_support::NOW_MS };
        let sendgrid = feedback::sendgrid::read(&keys.sendgrid.settings(), &inbound);

        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Basic cG9zdG1hcms6cGFzcw=="));
        let body = value.to_string();
        let inbound = Inbound { headers: &headers, body: body.as_bytes(), now_ms: test_support::NOW_MS };
        let postmark = feedback::postmark::read(&keys.postmark, &inbound);

        let mut mac = Hmac::<Sha256>::new_from_slice(keys.mailgun.signing_key.as_bytes()).unwrap();
        mac.update(format!("{now}token").as_bytes());
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let body = json!({"signature": {"timestamp": now, "token": "token", "signature": hex}, "event-data": value}).to_string();
        let inbound = Inbound { headers: &HeaderMap::new(), body: body.as_bytes(), now_ms: test_support::NOW_MS };
        let mailgun = feedback::mailgun::read(&keys.mailgun, &inbound);

        let body = value.to_string();
        let mut headers = HeaderMap::new();
        headers.insert("svix-id", HeaderValue::from_static("msg_1"));
        headers.insert("svix-timestamp", HeaderValue::from_static(test_support::NOW_SECS));
        let signature = signing::sign(&keys.resend_secret, "msg_1", now.parse().unwrap(), body.as_bytes());
        headers.insert("svix-signature", HeaderValue::from_str(&signature).unwrap());
        let inbound = Inbound { headers: &headers, body: body.as_bytes(), now_ms: test_support::NOW_MS };
        let resend = feedback::resend::read(&keys.resend, &inbound);

        for result in [sendgrid, postmark, mailgun, resend] {
            prop_assert!(!is_unauthenticated(&result), "{:?}", result);
            if let Ok(batch) = result {
                check_feedback(&batch);
            }
        }
    }

    #[test]
    fn ses_events_survive_arbitrary_messages(value in feedback_json(), text in nasty_string()) {
        for message in [value.to_string(), text] {
            let envelope = ses_envelope(message);
            if let Ok(batch) = ses::events(&envelope) {
                check_feedback(&batch);
            }
            // Unsigned: no certificate verifies it.
            prop_assert!(ses::verify(&envelope, test_support::SNS_CERT_PEM).is_err());
        }
    }

    #[test]
    fn sns_envelopes_survive_arbitrary_json(
        value in any_json(&["Type", "MessageId", "TopicArn", "Subject", "Message", "Timestamp",
                            "SignatureVersion", "Signature", "SigningCertURL", "SubscribeURL", "Token"]),
    ) {
        let keys = feedback_keys();
        let body = value.to_string();
        let inbound = Inbound { headers: &HeaderMap::new(), body: body.as_bytes(), now_ms: test_support::NOW_MS };
        if let Ok(envelope) = ses::parse_envelope(&keys.ses, &inbound) {
            let _ = ses::events(&envelope);
        }
    }

    #[test]
    fn sns_url_checks_survive_any_text(
        url in prop_oneof!["\\PC{0,60}", "https://[a-z0-9.*@:-]{0,40}/[a-z.]{0,10}"],
    ) {
        if ses::url_allowed(&feedback_keys().ses, &url) {
            prop_assert!(url.starts_with("https://"), "{}", url);
            prop_assert!(!url.contains('@'), "{}", url);
        }
    }
}

#[test]
fn the_feedback_generators_reach_past_authentication() {
    let keys = feedback_keys();
    let body = br#"[{"event":"open","email":"a@example.com","sg_event_id":"e1"}]"#;
    let headers = keys.sendgrid.headers(test_support::NOW_SECS, body);
    let inbound = Inbound {
        headers: &headers,
        body,
        now_ms: test_support::NOW_MS,
    };
    let batch = feedback::sendgrid::read(&keys.sendgrid.settings(), &inbound).unwrap();
    assert_eq!(batch.events.len(), 1);
    let envelope = ses_envelope(
        json!({"notificationType": "Delivery", "delivery": {"recipients": ["a@example.com"]}})
            .to_string(),
    );
    assert_eq!(ses::events(&envelope).unwrap().events.len(), 1);
}

// ---- query strings, cursors and ids --------------------------------------

const QUERY_NAMES: &[&str] = &["after", "type", "tenant", "since", "until", "limit"];

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn query_strings_survive_any_text(
        query in prop_oneof!["\\PC{0,40}", "[a-z=&%0-9+]{0,40}"],
        limit in "\\PC{0,12}",
    ) {
        if let Ok(params) = query_params(Some(&query), QUERY_NAMES) {
            let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
            prop_assert!(names.iter().all(|n| QUERY_NAMES.contains(n)));
            let mut unique = names.clone();
            unique.sort_unstable();
            unique.dedup();
            prop_assert_eq!(unique.len(), names.len());
        }
        if let Ok(n) = page_limit(&limit, 1000) {
            prop_assert!((1..=1000).contains(&n));
        }
        let _ = clock::parse_rfc3339(&limit);
        let _ = humantime::parse_duration(&limit);
    }

    /// A cursor or id is accepted only in the exact form the API writes.
    #[test]
    fn cursors_and_ids_accept_only_what_the_api_writes(
        text in prop_oneof!["\\PC{0,40}", "[A-Za-z0-9_+-]{0,30}", "(evt|ep|dlv|msg)_[+-]?[0-9a-fA-F]{14,28}"],
    ) {
        if let Some(cursor) = EventCursor::parse(&text) {
            prop_assert_eq!(cursor.encode(), text.clone());
        }
        for prefix in ["evt_", "ep_"] {
            if let Some(id) = ids::parse(prefix, &text) {
                prop_assert!(ids::format(prefix, id).eq_ignore_ascii_case(&text), "{}", text);
            }
        }
        for prefix in ["dlv_", "msg_"] {
            if let Some(id) = ids::parse_seq(prefix, &text) {
                prop_assert!(ids::format_seq(prefix, id).eq_ignore_ascii_case(&text), "{}", text);
            }
        }
        let _ = Secret::parse(&text);
        let _ = target::parse(&text, false);
    }
}

#[test]
fn a_repeated_or_unknown_query_name_is_refused() {
    for name in QUERY_NAMES {
        let twice = format!("{name}=1&{name}=2");
        assert!(query_params(Some(&twice), QUERY_NAMES).is_err(), "{twice}");
    }
    assert!(query_params(Some("typo=1"), QUERY_NAMES).is_err());
    assert!(query_params(Some("%FF=1"), QUERY_NAMES).is_err());
}
