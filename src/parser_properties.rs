//! Property tests over every parser that request bytes reach: arbitrary
//! bytes and generated JSON (wrong types, huge numbers, deep nesting, NUL,
//! CR/LF, unicode, missing and unknown fields) never panic, and input that
//! breaks a rule is refused. The daemon-level counterpart is the `robustness`
//! folder of the integration tests.

use std::io::Write;

use hyper::header::{HeaderValue, CONTENT_ENCODING};
use hyper::HeaderMap;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Value};

use crate::api::http::{page_limit, query_params};
use crate::clock;
use crate::config::mail::{validate_mail, MailSection, StreamSection};
use crate::events::{self, Invalid};
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
use crate::webhooks::signing::Secret;
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

const EVENT_FIELDS: &[&str] = &["type", "tenant", "data", "idempotency_key", "occurred_at"];

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
