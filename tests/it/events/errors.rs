//! Every refusal the API documents: its status, its stable code, and that
//! a refused request leaves the log as it was.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::support::*;

struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

fn case(what: &'static str, method: &'static str, path: &str, body: impl Into<Vec<u8>>) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        headers: vec![JSON],
        body: body.into(),
        status: 0,
        code: "",
        field: None,
    }
}

impl Case {
    fn expect(mut self, status: u16, code: &'static str) -> Case {
        self.status = status;
        self.code = code;
        self
    }

    fn field(mut self, field: &'static str) -> Case {
        self.field = Some(field);
        self
    }

    fn headers(mut self, headers: &[(&'static str, &'static str)]) -> Case {
        self.headers = headers.to_vec();
        self
    }
}

fn event(e: Value) -> Vec<u8> {
    e.to_string().into_bytes()
}

fn batch(events: Vec<Value>) -> Vec<u8> {
    json!({ "events": events }).to_string().into_bytes()
}

fn pad(n: usize) -> String {
    "x".repeat(n)
}

const LIMITS: &str =
    "[events]\nmax_event_bytes = 1024\nmax_request_bytes = 8192\nmax_batch_events = 10\n";

#[test]
fn refused_requests_answer_their_status_and_code_and_write_nothing() {
    let d = Daemon::start(LIMITS);
    let stored = create(
        d.addr,
        &json!({"type": "seed", "idempotency_key": "dup", "data": {"v": 1}}),
    );
    let id = stored["id"].as_str().unwrap().to_owned();
    // Same seq, other random bits: a guessed id must not find the event.
    let last = id.chars().last().unwrap();
    let forged = format!(
        "{}{}",
        &id[..id.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let before = list_all(d.addr, "", &[]);

    let deep = format!(
        r#"{{"type":"a","data":{}1{}}}"#,
        r#"{"a":"#.repeat(65),
        "}".repeat(65)
    );
    let small = || json!({"type": "ok"});
    let cases = vec![
        case("no content type", "POST", "/v1/events", event(small()))
            .headers(&[])
            .expect(415, "unsupported_media_type"),
        case("text/plain", "POST", "/v1/events", event(small()))
            .headers(&[("Content-Type", "text/plain")])
            .expect(415, "unsupported_media_type"),
        case(
            "batch as text",
            "POST",
            "/v1/events/batch",
            batch(vec![small()]),
        )
        .headers(&[("Content-Type", "text/plain")])
        .expect(415, "unsupported_media_type"),
        case("truncated JSON", "POST", "/v1/events", r#"{"type":"#).expect(400, "invalid_json"),
        case("not JSON", "POST", "/v1/events", "type=a").expect(400, "invalid_json"),
        case("empty body", "POST", "/v1/events", "").expect(400, "invalid_json"),
        case("array", "POST", "/v1/events", "[]").expect(400, "invalid_body"),
        case(
            "missing type",
            "POST",
            "/v1/events",
            event(json!({"data": {}})),
        )
        .expect(400, "invalid_body"),
        case(
            "unknown field",
            "POST",
            "/v1/events",
            event(json!({"type": "a", "extra": 1})),
        )
        .expect(400, "invalid_body"),
        case(
            "numeric type",
            "POST",
            "/v1/events",
            event(json!({"type": 5})),
        )
        .expect(400, "invalid_body"),
        case(
            "type with space",
            "POST",
            "/v1/events",
            event(json!({"type": "a b"})),
        )
        .expect(422, "invalid_field")
        .field("type"),
        case(
            "empty type",
            "POST",
            "/v1/events",
            event(json!({"type": ""})),
        )
        .expect(422, "invalid_field")
        .field("type"),
        case(
            "129-char type",
            "POST",
            "/v1/events",
            event(json!({"type": pad(129)})),
        )
        .expect(422, "invalid_field")
        .field("type"),
        case(
            "tenant with slash",
            "POST",
            "/v1/events",
            event(json!({"type": "a", "tenant": "a/b"})),
        )
        .expect(422, "invalid_field")
        .field("tenant"),
        case(
            "data array",
            "POST",
            "/v1/events",
            event(json!({"type": "a", "data": [1]})),
        )
        .expect(422, "invalid_field")
        .field("data"),
        case(
            "data string",
            "POST",
            "/v1/events",
            event(json!({"type": "a", "data": "x"})),
        )
        .expect(422, "invalid_field")
        .field("data"),
        case("data nested 65 deep", "POST", "/v1/events", deep)
            .expect(422, "invalid_field")
            .field("data"),
        case(
            "occurred_at not RFC 3339",
            "POST",
            "/v1/events",
            event(json!({"type": "a", "occurred_at": "2026-11-22 10:00"})),
        )
        .expect(422, "invalid_field")
        .field("occurred_at"),
        case(
            "occurred_at before 1970",
            "POST",
            "/v1/events",
            event(json!({"type": "a", "occurred_at": "1969-12-31T23:59:59Z"})),
        )
        .expect(422, "invalid_field")
        .field("occurred_at"),
        case(
            "empty idempotency key",
            "POST",
            "/v1/events",
            event(json!({"type": "a", "idempotency_key": ""})),
        )
        .expect(422, "invalid_field")
        .field("idempotency_key"),
        case(
            "256-byte idempotency key",
            "POST",
            "/v1/events",
            event(json!({"type": "a", "idempotency_key": pad(256)})),
        )
        .expect(422, "invalid_field")
        .field("idempotency_key"),
        case(
            "stored key, other content",
            "POST",
            "/v1/events",
            event(json!({"type": "seed", "idempotency_key": "dup", "data": {"v": 2}})),
        )
        .expect(409, "idempotency_conflict")
        .field("idempotency_key"),
        case(
            "body over max_event_bytes",
            "POST",
            "/v1/events",
            event(json!({"type": "a", "data": {"pad": pad(1100)}})),
        )
        .expect(413, "payload_too_large"),
        case(
            "batch over max_request_bytes",
            "POST",
            "/v1/events/batch",
            batch(vec![json!({"type": "a", "data": {"pad": pad(900)}}); 10]),
        )
        .expect(413, "payload_too_large"),
        case(
            "batch item over max_event_bytes",
            "POST",
            "/v1/events/batch",
            batch(vec![
                small(),
                json!({"type": "a", "data": {"pad": pad(1100)}}),
            ]),
        )
        .expect(413, "payload_too_large"),
        case("empty batch", "POST", "/v1/events/batch", batch(vec![]))
            .expect(422, "invalid_field")
            .field("events"),
        case(
            "batch over max_batch_events",
            "POST",
            "/v1/events/batch",
            batch(vec![small(); 11]),
        )
        .expect(422, "invalid_field")
        .field("events"),
        case("batch not JSON", "POST", "/v1/events/batch", "{").expect(400, "invalid_json"),
        case("batch as array", "POST", "/v1/events/batch", "[]").expect(400, "invalid_body"),
        case(
            "batch with unknown field",
            "POST",
            "/v1/events/batch",
            event(json!({"events": [small()], "x": 1})),
        )
        .expect(400, "invalid_body"),
        case(
            "batch item breaking a rule",
            "POST",
            "/v1/events/batch",
            batch(vec![small(), small(), json!({"type": "a", "tenant": ""})]),
        )
        .expect(422, "invalid_field")
        .field("events[2].tenant"),
        case(
            "batch reusing a key for other content",
            "POST",
            "/v1/events/batch",
            batch(vec![
                json!({"type": "a", "idempotency_key": "fresh"}),
                json!({"type": "b", "idempotency_key": "fresh"}),
            ]),
        )
        .expect(409, "idempotency_conflict")
        .field("events[1].idempotency_key"),
        case(
            "batch conflicting with a stored key",
            "POST",
            "/v1/events/batch",
            batch(vec![
                small(),
                json!({"type": "seed", "idempotency_key": "dup", "data": {"v": 3}}),
            ]),
        )
        .expect(409, "idempotency_conflict")
        .field("events[1].idempotency_key"),
        case("unknown route", "GET", "/nope", "").expect(404, "not_found"),
        case("unknown v1 route", "GET", "/v1/nope", "").expect(404, "not_found"),
        case("too deep a path", "GET", "/v1/events/a/b", "").expect(404, "not_found"),
        case("DELETE the log", "DELETE", "/v1/events", "").expect(405, "method_not_allowed"),
        case("GET the batch route", "GET", "/v1/events/batch", "")
            .expect(405, "method_not_allowed"),
        case("POST to an event", "POST", &format!("/v1/events/{id}"), "")
            .expect(405, "method_not_allowed"),
        case("POST a probe", "POST", "/healthz", "").expect(405, "method_not_allowed"),
        case("bad cursor", "GET", "/v1/events?after=not-a-cursor", "")
            .expect(400, "invalid_query")
            .field("after"),
        case("unknown query parameter", "GET", "/v1/events?tpye=a", "")
            .expect(400, "invalid_query"),
        case(
            "repeated query parameter",
            "GET",
            "/v1/events?limit=1&limit=2",
            "",
        )
        .expect(400, "invalid_query"),
        case("limit 0", "GET", "/v1/events?limit=0", "")
            .expect(400, "invalid_query")
            .field("limit"),
        case("limit 1001", "GET", "/v1/events?limit=1001", "")
            .expect(400, "invalid_query")
            .field("limit"),
        case("since not a time", "GET", "/v1/events?since=yesterday", "")
            .expect(400, "invalid_query")
            .field("since"),
        case("type filter not a name", "GET", "/v1/events?type=a%2Ab", "")
            .expect(400, "invalid_query")
            .field("type"),
        case(
            "unknown event id",
            "GET",
            "/v1/events/evt_00000000000000000000000000",
            "",
        )
        .expect(404, "event_not_found"),
        case("malformed event id", "GET", "/v1/events/evt_nope", "").expect(404, "event_not_found"),
        case(
            "forged event id",
            "GET",
            &format!("/v1/events/{forged}"),
            "",
        )
        .expect(404, "event_not_found"),
    ];

    for c in &cases {
        let resp = request(d.addr, c.method, &c.path, &c.headers, &c.body);
        let ctx = format!("{}: {} {} -> {}", c.what, c.method, c.path, resp.text());
        assert_eq!(resp.status, c.status, "{ctx}");
        assert_eq!(
            resp.header("content-type"),
            Some("application/json"),
            "{ctx}"
        );
        let err = resp.json()["error"].clone();
        assert_eq!(err["code"], c.code, "{ctx}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{ctx}"
        );
        if let Some(field) = c.field {
            assert_eq!(err["field"], field, "{ctx}");
        }
        if c.status == 405 {
            assert!(resp.header("allow").is_some(), "{ctx}");
        }
    }

    // Allow lists what the path does accept.
    let allow = |method, path: &str| {
        request(d.addr, method, path, &[], b"")
            .header("allow")
            .map(str::to_owned)
    };
    assert_eq!(allow("DELETE", "/v1/events").as_deref(), Some("GET, POST"));
    assert_eq!(allow("GET", "/v1/events/batch").as_deref(), Some("POST"));
    assert_eq!(
        allow("PUT", &format!("/v1/events/{id}")).as_deref(),
        Some("GET")
    );

    // The batch item that was too large is named.
    let resp = request(
        d.addr,
        "POST",
        "/v1/events/batch",
        &[JSON],
        &batch(vec![
            json!({"type": "ok"}),
            json!({"type": "a", "data": {"pad": pad(1100)}}),
        ]),
    );
    assert!(resp.text().contains("events[1]"), "{}", resp.text());

    // Not HTTP at all: refused by the HTTP layer, and the server carries on.
    let garbage = send_raw(d.addr, b"HELLO THERE\r\n\r\n").expect("an answer to garbage");
    assert_eq!(garbage.status, 400);
    assert_eq!(get(d.addr, "/healthz").status, 200);

    assert_eq!(list_all(d.addr, "", &[]), before, "a refused request wrote");
}

const KEY: &str = "test-key-0123456789abcdef";

#[test]
fn configured_api_keys_guard_v1_but_not_the_probes() {
    let d = Daemon::start(&format!("[server]\napi_keys = [\"{KEY}\"]\n"));
    let bearer = format!("Bearer {KEY}");
    let e = event(json!({"type": "secured"}));
    for (what, headers) in [
        ("no header", vec![JSON]),
        (
            "wrong key",
            vec![JSON, ("Authorization", "Bearer test-key-0123456789abcdeX")],
        ),
        (
            "key prefix",
            vec![JSON, ("Authorization", "Bearer test-key-0123456789abcde")],
        ),
        ("not bearer", vec![JSON, ("Authorization", KEY)]),
    ] {
        for (method, path, body) in [
            ("POST", "/v1/events", &e[..]),
            ("GET", "/v1/events", &b""[..]),
            ("GET", "/v1/nope", &b""[..]),
        ] {
            let resp = request(d.addr, method, path, &headers, body);
            assert_eq!(resp.status, 401, "{what}: {method} {path}");
            assert_eq!(resp.code(), "unauthorized");
            assert_eq!(resp.header("www-authenticate"), Some("Bearer"), "{what}");
        }
    }
    let auth = [("Authorization", bearer.as_str())];
    assert_eq!(list_all(d.addr, "", &auth), Vec::<Value>::new());

    let resp = request(d.addr, "POST", "/v1/events", &[JSON, auth[0]], &e);
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(list_all(d.addr, "", &auth).len(), 1);

    assert_eq!(get(d.addr, "/healthz").status, 200);
    let ready = get(d.addr, "/readyz");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json(), json!({"status": "ready"}));
}

#[test]
fn api_keys_from_the_environment_are_required_too() {
    let d = Daemon::start_with(Options {
        env: vec![(
            "HERALD_API_KEYS".into(),
            "env-key-0123456789abcdef, second-key-0123456789".into(),
        )],
        ..Options::default()
    });
    let e = event(json!({"type": "secured"}));
    let resp = request(d.addr, "POST", "/v1/events", &[JSON], &e);
    assert_eq!(resp.status, 401);
    assert_eq!(resp.code(), "unauthorized");
    for key in ["env-key-0123456789abcdef", "second-key-0123456789"] {
        let bearer = format!("Bearer {key}");
        let resp = request(
            d.addr,
            "POST",
            "/v1/events",
            &[JSON, ("Authorization", &bearer)],
            &e,
        );
        assert_eq!(resp.status, 201, "{key}: {}", resp.text());
    }
    let auth = format!("Bearer {}", "second-key-0123456789");
    assert_eq!(list_all(d.addr, "", &[("Authorization", &auth)]).len(), 2);
}

#[test]
fn a_full_write_queue_answers_503_overloaded_and_writes_nothing() {
    let d = Daemon::start("[storage]\nqueue_capacity = 1\nmax_commit_batch = 1\n");
    let addr = d.addr;
    // Large-ish events keep the writer busy longer per commit, which makes a
    // full one-slot queue likely.
    let payload = pad(48 * 1024);
    let created = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = created.clone();
    let overloaded = burst_until_refused(30, 32, move |_, _| {
        let created = sink.clone();
        let body = json!({"type": "load", "data": {"pad": payload}});
        move || {
            let resp = post_json(addr, "/v1/events", &body);
            match resp.status {
                201 => {
                    let id = resp.json()["id"].as_str().unwrap().to_owned();
                    created.lock().unwrap().push(id);
                    false
                }
                503 => {
                    assert_eq!(resp.code(), "overloaded");
                    assert!(resp.retry_after() >= 1);
                    true
                }
                other => panic!("unexpected {other}: {}", resp.text()),
            }
        }
    });
    assert!(
        overloaded > 0,
        "30 bursts of 32 never filled a one-slot queue"
    );

    let created = created.lock().unwrap().clone();
    for id in &created {
        let resp = get(addr, &format!("/v1/events/{id}"));
        assert_eq!(resp.status, 200, "{id}");
    }
    let listed: HashSet<String> = list_all(addr, "", &[])
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        listed,
        created.iter().cloned().collect(),
        "only the 201s were written"
    );
}
