//! More webhook behaviour end to end, beside `hooks.rs`: the endpoint
//! lifecycle, signatures on every retry, throttling, the circuit breaker,
//! per-endpoint timeouts, response excerpts, SSRF refusals of every shape,
//! Herald's own delivery events, delivery listings, and attempts in flight at
//! `kill -9`. Each test runs its own daemon and receivers; completion is
//! polled with deadlines and only lower bounds are put on time.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::receiver::{Receiver, Reply};
use crate::support::*;
use crate::verifier::reference_verify;

/// Loopback receivers need the allow-list; a short schedule keeps tests
/// fast. Tests that count attempts rely on its three retries; those about
/// throttling, the circuit or in-flight attempts override what they need.
pub const WEBHOOKS: &str = r#"
[webhooks]
allow_networks = ["127.0.0.1/32"]
require_https = false
retry_schedule = ["100ms", "200ms", "400ms"]
min_throttle_delay = "100ms"
timeout = "2s"
circuit_failures = 100
circuit_cooldown = "500ms"
max_in_flight_per_endpoint = 4
"#;

/// Golden vector 1 of REFERENCE §1: a valid secret Herald must accept as is.
const GOLDEN_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// Another valid secret, for checking that a wrong one does not verify.
const OTHER_SECRET: &str = "whsec_plJ3nmyCDGBKInavdOK15jsl";

/// Generous: a debug build on a loaded 2-core machine.
pub const SETTLE: Duration = Duration::from_secs(30);

/// `WEBHOOKS` with some `[webhooks]` keys replaced (values are TOML).
pub fn config(overrides: &[(&str, &str)]) -> String {
    let mut table: toml::Table = WEBHOOKS.parse().unwrap();
    let hooks = table["webhooks"].as_table_mut().unwrap();
    for (key, value) in overrides {
        let parsed: toml::Table = format!("v = {value}").parse().expect("override is TOML");
        hooks.insert((*key).to_owned(), parsed["v"].clone());
    }
    toml::to_string(&table).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string: {v}"))
}

pub fn create_endpoint(addr: SocketAddr, body: Value) -> Value {
    let resp = post_json(addr, "/v1/endpoints", &body);
    assert_eq!(resp.status, 201, "{body}: {}", resp.text());
    resp.json()
}

fn patch(addr: SocketAddr, path: &str, body: &Value) -> Response {
    request(addr, "PATCH", path, &[JSON], body.to_string().as_bytes())
}

fn post_empty(addr: SocketAddr, path: &str) -> Response {
    request(addr, "POST", path, &[], b"")
}

/// Posts `n` events of type `a` in one batch; their ids in order.
fn post_numbered_events(addr: SocketAddr, n: usize) -> Vec<String> {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"type": "a", "data": {"i": i}}))
        .collect();
    let resp = post_json(addr, "/v1/events/batch", &json!({ "events": events }));
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| s(&r["id"]).to_owned())
        .collect()
}

/// The deliveries of one event as listed now.
fn deliveries_of(addr: SocketAddr, event_id: &str) -> Vec<Value> {
    let resp = get(addr, &format!("/v1/deliveries?event={event_id}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["deliveries"]
        .as_array()
        .expect("deliveries array")
        .clone()
}

/// The `count` deliveries of one event once none is pending any more.
pub fn settled(addr: SocketAddr, event_id: &str, count: usize) -> Vec<Value> {
    let mut list = Vec::new();
    let done = wait_until(deadline(SETTLE), || {
        list = deliveries_of(addr, event_id);
        list.len() == count && list.iter().all(|d| d["status"] != "pending")
    });
    assert!(done, "deliveries of {event_id} did not settle: {list:#?}");
    list
}

fn status_codes(delivery: &Value) -> Vec<i64> {
    delivery["attempts"]
        .as_array()
        .expect("attempts array")
        .iter()
        .map(|a| a["status_code"].as_i64().expect("status_code"))
        .collect()
}

/// Every delivery matching `query`, following `next_cursor` (`limit` per page).
fn all_deliveries(addr: SocketAddr, query: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/v1/deliveries?limit={limit}&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&after={c}"));
        }
        let resp = get(addr, &path);
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        let page = resp.json();
        let items = page["deliveries"].as_array().expect("deliveries").clone();
        assert!(items.len() <= limit, "{path} gave {} items", items.len());
        out.extend(items);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return out,
        }
    }
    panic!("listing {query:?} did not end");
}

fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// Each signature in the header: `v1,` and the base64 of 32 bytes.
fn assert_signature_shape(header: &str) {
    assert!(!header.is_empty(), "no webhook-signature");
    for sig in header.split(' ') {
        let b64 = sig
            .strip_prefix("v1,")
            .unwrap_or_else(|| panic!("{sig:?} in {header:?} is not v1"));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|e| panic!("{sig:?} is not base64: {e}"));
        assert_eq!(raw.len(), 32, "an HMAC-SHA256 is 32 bytes: {sig:?}");
    }
}

// ---------------------------------------------------------------------------
// Endpoints

#[test]
fn endpoint_fields_round_trip_and_list_by_tenant() {
    let d = Daemon::start(WEBHOOKS);
    let body = json!({
        "url": "https://hooks.example.com/in?x=1",
        "tenant": "acme",
        "event_types": ["invoice.paid", "user.*"],
        "description": "billing",
        "headers": {"x-a": "b"},
        "rate_limit_per_sec": 7,
        "timeout_secs": 12,
        "secret": GOLDEN_SECRET,
    });
    let ep = create_endpoint(d.addr, body.clone());
    assert!(s(&ep["id"]).starts_with("ep_"), "{ep}");
    for field in [
        "url",
        "tenant",
        "event_types",
        "description",
        "headers",
        "rate_limit_per_sec",
        "timeout_secs",
        "secret",
    ] {
        assert_eq!(ep[field], body[field], "{field} in {ep}");
    }
    assert_eq!(ep["enabled"], true);
    assert_eq!(ep["payload_version"], 1);
    assert!(ep["created_at"].is_string() && ep["updated_at"].is_string());
    let path = format!("/v1/endpoints/{}", s(&ep["id"]));
    assert_eq!(
        get(d.addr, &path).json(),
        ep,
        "GET gives what POST answered"
    );

    let plain = create_endpoint(d.addr, json!({"url": "http://127.0.0.1:9/"}));
    assert!(s(&plain["secret"]).starts_with("whsec_"), "{plain}");
    assert_ne!(plain["secret"], ep["secret"]);
    assert_eq!(plain["event_types"], json!([]), "{plain}");
    assert!(plain["tenant"].is_null(), "{plain}");
    let globex = create_endpoint(
        d.addr,
        json!({"url": "http://127.0.0.1:9/g", "tenant": "globex"}),
    );

    let acme_only = get(d.addr, "/v1/endpoints?tenant=acme").json();
    assert_eq!(acme_only, json!({"endpoints": [ep.clone()]}));
    let listed: HashSet<String> = get(d.addr, "/v1/endpoints").json()["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| s(&e["id"]).to_owned())
        .collect();
    let expected: HashSet<String> = [&ep, &plain, &globex]
        .iter()
        .map(|e| s(&e["id"]).to_owned())
        .collect();
    assert_eq!(listed, expected);

    let resp = patch(
        d.addr,
        &path,
        &json!({"description": "payments", "event_types": ["order.*"], "timeout_secs": 3}),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let patched = resp.json();
    assert_eq!(patched["description"], "payments");
    assert_eq!(patched["event_types"], json!(["order.*"]));
    assert_eq!(patched["timeout_secs"], 3);
    for unchanged in [
        "id",
        "url",
        "tenant",
        "headers",
        "rate_limit_per_sec",
        "secret",
        "enabled",
        "created_at",
    ] {
        assert_eq!(patched[unchanged], ep[unchanged], "{unchanged} after PATCH");
    }
    assert_eq!(get(d.addr, &path).json(), patched);

    let off = post_empty(d.addr, &format!("{path}/disable"));
    assert_eq!(off.status, 200, "{}", off.text());
    assert_eq!(off.json()["enabled"], false);
    assert_eq!(get(d.addr, &path).json()["enabled"], false);
    let on = post_empty(d.addr, &format!("{path}/enable"));
    assert_eq!(on.status, 200, "{}", on.text());
    assert_eq!(on.json()["enabled"], true);
    assert_eq!(get(d.addr, &path).json()["enabled"], true);
}

#[test]
fn bad_input_and_unknown_ids_are_refused_and_change_nothing() {
    // Defaults: https is required.
    let d = Daemon::start("");
    for (body, field) in [
        (json!({"url": "not a url"}), "url"),
        (json!({"url": ""}), "url"),
        (json!({"url": "ftp://example.com/"}), "url"),
        (json!({"url": "https://user:pw@example.com/"}), "url"),
        (json!({"url": "https://user@example.com/"}), "url"),
        (json!({"url": "http://example.com/"}), "url"),
        (
            json!({"url": "https://example.com/", "secret": "abc"}),
            "secret",
        ),
        (
            json!({"url": "https://example.com/", "secret": "nope"}),
            "secret",
        ),
        (
            json!({"url": "https://example.com/", "secret": "whsec_!!!not base64!!!"}),
            "secret",
        ),
        (
            json!({"url": "https://example.com/", "event_types": ["a*b"]}),
            "event_types",
        ),
        (
            json!({"url": "https://example.com/", "timeout_secs": 0}),
            "timeout_secs",
        ),
        (
            json!({"url": "https://example.com/", "timeout_secs": 31}),
            "timeout_secs",
        ),
    ] {
        let resp = post_json(d.addr, "/v1/endpoints", &body);
        assert_eq!(resp.status, 422, "{body}: {}", resp.text());
        assert_eq!(resp.code(), "invalid_field", "{body}");
        assert_eq!(resp.json()["error"]["field"], field, "{body}");
    }
    let resp = post_json(d.addr, "/v1/endpoints", &json!({"description": "no url"}));
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(
        get(d.addr, "/v1/endpoints").json(),
        json!({"endpoints": []}),
        "nothing was created"
    );

    let ep = create_endpoint(d.addr, json!({"url": "https://example.com/a"}));
    let path = format!("/v1/endpoints/{}", s(&ep["id"]));
    let resp = patch(
        d.addr,
        &path,
        &json!({"url": "https://example.com/b", "timeout_secs": 99}),
    );
    assert_eq!(resp.status, 422, "{}", resp.text());
    assert_eq!(
        get(d.addr, &path).json(),
        ep,
        "a refused PATCH changes nothing"
    );
    let resp = patch(d.addr, &path, &json!({"description": "billing"}));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["description"], "billing");
    assert_eq!(resp.json()["url"], "https://example.com/a");

    // A well-formed id that no longer exists, and one that never could.
    assert_eq!(request(d.addr, "DELETE", &path, &[], b"").status, 204);
    let answers = [
        ("GET", path.clone(), None),
        ("DELETE", path.clone(), None),
        ("PATCH", path.clone(), Some(json!({"description": "x"}))),
        (
            "POST",
            format!("{path}/rotate-secret"),
            Some(json!({"grace_secs": 60})),
        ),
        ("POST", format!("{path}/enable"), None),
        ("POST", format!("{path}/disable"), None),
        ("POST", format!("{path}/test"), None),
        ("GET", "/v1/endpoints/ep_garbage".to_owned(), None),
        (
            "PATCH",
            "/v1/endpoints/ep_garbage".to_owned(),
            Some(json!({})),
        ),
    ];
    for (method, path, body) in answers {
        let resp = match body {
            Some(b) => request(d.addr, method, &path, &[JSON], b.to_string().as_bytes()),
            None => request(d.addr, method, &path, &[], b""),
        };
        assert_eq!(resp.status, 404, "{method} {path}: {}", resp.text());
        assert_eq!(resp.code(), "endpoint_not_found", "{method} {path}");
    }
    for (method, path) in [
        ("GET", "/v1/deliveries/dlv_garbage"),
        ("POST", "/v1/deliveries/dlv_garbage/retry"),
    ] {
        let resp = request(d.addr, method, path, &[], b"");
        assert_eq!(resp.status, 404, "{method} {path}: {}", resp.text());
        assert_eq!(resp.code(), "delivery_not_found", "{method} {path}");
    }
    assert_eq!(
        get(d.addr, "/v1/endpoints").json(),
        json!({"endpoints": []})
    );
}

#[test]
fn patching_disabling_and_deleting_change_which_later_events_are_delivered() {
    let receiver = Receiver::always(200);
    let d = Daemon::start(WEBHOOKS);
    let ep = create_endpoint(
        d.addr,
        json!({"url": receiver.url("/"), "event_types": ["a"]}),
    );
    let path = format!("/v1/endpoints/{}", s(&ep["id"]));
    // Deliveries are written in the event's own commit, so the count right
    // after the answer is final.
    let mut expect_delivered: Vec<String> = Vec::new();
    let send = |expect: &mut Vec<String>, t: &str, delivered: bool| {
        let event = create(d.addr, &json!({"type": t}));
        let n = deliveries_of(d.addr, s(&event["id"])).len();
        assert_eq!(n, usize::from(delivered), "{t} after the last change");
        if delivered {
            expect.push(s(&event["id"]).to_owned());
        }
    };
    let e = &mut expect_delivered;
    send(e, "b", false);
    send(e, "a", true);
    let resp = patch(d.addr, &path, &json!({"event_types": ["b"]}));
    assert_eq!(resp.status, 200, "{}", resp.text());
    send(e, "a", false);
    send(e, "b", true);
    assert_eq!(post_empty(d.addr, &format!("{path}/disable")).status, 200);
    send(e, "b", false);
    assert_eq!(post_empty(d.addr, &format!("{path}/enable")).status, 200);
    send(e, "b", true);
    // Deleting an endpoint abandons what is still pending for it: let every
    // delivery finish first, including the one held while it was disabled.
    for id in e.iter() {
        let list = settled(d.addr, id, 1);
        assert_eq!(list[0]["status"], "succeeded", "{list:?}");
    }
    assert_eq!(request(d.addr, "DELETE", &path, &[], b"").status, 204);
    send(e, "b", false);

    for id in &expect_delivered {
        let list = settled(d.addr, id, 1);
        assert_eq!(list[0]["status"], "succeeded", "{list:?}");
    }
    let got: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(got, expect_delivered, "in order, each once");
}

// ---------------------------------------------------------------------------
// Signing

#[test]
fn a_supplied_secret_signs_every_attempt_afresh() {
    let receiver = Receiver::sequence(
        vec![Reply::status(500), Reply::status(503)],
        Reply::status(200),
    );
    let d = Daemon::start(WEBHOOKS);
    create_endpoint(
        d.addr,
        json!({"url": receiver.url("/in"), "secret": GOLDEN_SECRET, "headers": {"x-tag": "t1"}}),
    );
    let event = create(
        d.addr,
        &json!({"type": "user.created", "data": {"name": "Zoë", "n": [1, 2]}}),
    );
    let list = settled(d.addr, s(&event["id"]), 1);
    assert_eq!(list[0]["status"], "succeeded", "{list:?}");
    assert_eq!(status_codes(&list[0]), [500, 503, 200]);

    let got = receiver.requests();
    assert_eq!(got.len(), 3, "one request per attempt");
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/in");
        assert_eq!(r.header("webhook-id"), s(&event["id"]), "attempt {i}");
        assert_eq!(r.header("x-tag"), "t1");
        assert_eq!(r.body, got[0].body, "the body is the same on every retry");
        let ts: i64 = r
            .header("webhook-timestamp")
            .parse()
            .unwrap_or_else(|_| panic!("webhook-timestamp {:?}", r.header("webhook-timestamp")));
        assert!(
            (ts - unix_now()).abs() <= 300,
            "attempt {i} is stamped {ts}, now is {}",
            unix_now()
        );
        assert_signature_shape(r.header("webhook-signature"));
        assert_eq!(
            r.header("webhook-signature").split(' ').count(),
            1,
            "no rotation, one signature"
        );
        if let Err(e) = reference_verify(GOLDEN_SECRET, r) {
            panic!("attempt {i} does not verify: {e}");
        }
        assert!(
            reference_verify(OTHER_SECRET, r).is_err(),
            "attempt {i} verifies with a wrong secret"
        );
    }
    let body = got[0].json();
    assert_eq!(body["data"], json!({"name": "Zoë", "n": [1, 2]}));
    assert_eq!(body["id"], event["id"]);
}

#[test]
fn rotation_signs_with_both_secrets_until_the_old_ones_grace_ends() {
    let receiver = Receiver::always(200);
    let d = Daemon::start(WEBHOOKS);
    let ep = create_endpoint(
        d.addr,
        json!({"url": receiver.url("/"), "secret": GOLDEN_SECRET}),
    );
    let rotate = |grace_secs: u64| {
        post_json(
            d.addr,
            &format!("/v1/endpoints/{}/rotate-secret", s(&ep["id"])),
            &json!({ "grace_secs": grace_secs }),
        )
    };
    let rotated = rotate(3600);
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let rotated = rotated.json();
    let new = s(&rotated["secret"]).to_owned();
    assert!(
        new.starts_with("whsec_") && new != GOLDEN_SECRET,
        "{rotated}"
    );
    assert_eq!(rotated["id"], ep["id"]);
    assert_eq!(
        get(d.addr, &format!("/v1/endpoints/{}", s(&ep["id"]))).json()["secret"],
        new.as_str()
    );

    create(d.addr, &json!({"type": "a"}));
    let got = receiver.wait_for_requests(1, deadline(SETTLE));
    let header = got[0].header("webhook-signature");
    assert_signature_shape(header);
    assert_eq!(header.split(' ').count(), 2, "{header}");
    reference_verify(&new, &got[0]).expect("the new secret verifies");
    reference_verify(GOLDEN_SECRET, &got[0]).expect("the old secret verifies");
    assert!(reference_verify(OTHER_SECRET, &got[0]).is_err());

    // Without a grace period the secret it replaces stops signing at once.
    let newest = s(&rotate(0).json()["secret"]).to_owned();
    create(d.addr, &json!({"type": "a"}));
    let got = receiver.wait_for_requests(2, deadline(SETTLE));
    assert!(reference_verify(&newest, &got[1]).is_ok());
    assert!(reference_verify(&new, &got[1]).is_err());
    // The first rotation's grace period is still running.
    assert!(reference_verify(GOLDEN_SECRET, &got[1]).is_ok());
}

// ---------------------------------------------------------------------------
// Timing: throttling, circuit breaker, timeouts

#[test]
fn throttled_answers_wait_for_the_floor_and_for_retry_after() {
    let receiver = Receiver::sequence(
        vec![
            Reply::status(429),
            Reply::status(429).header("Retry-After", "2"),
        ],
        Reply::status(200),
    );
    let d = Daemon::start(&config(&[
        ("retry_schedule", r#"["100ms", "100ms", "100ms"]"#),
        ("min_throttle_delay", r#""1s""#),
    ]));
    create_endpoint(d.addr, json!({"url": receiver.url("/")}));
    let event = create(d.addr, &json!({"type": "a"}));
    let list = settled(d.addr, s(&event["id"]), 1);
    assert_eq!(list[0]["status"], "succeeded", "{list:?}");
    assert_eq!(status_codes(&list[0]), [429, 429, 200]);
    let got = receiver.requests();
    assert_eq!(got.len(), 3);
    // Lower bounds only: a slow machine can only make the gaps longer.
    let floor_gap = got[1].at.duration_since(got[0].at);
    assert!(
        floor_gap >= Duration::from_millis(900),
        "a 429 was retried after {floor_gap:?}, under min_throttle_delay (1 s)"
    );
    // Retry-After: 2 lies within [delay, 2 x delay] = [1 s, 2 s]: honoured.
    let asked_gap = got[2].at.duration_since(got[1].at);
    assert!(
        asked_gap >= Duration::from_millis(1800),
        "Retry-After: 2 was retried after {asked_gap:?}"
    );
}

#[test]
fn the_circuit_breaker_pauses_an_endpoint_without_spending_retries() {
    let receiver = Receiver::always(500);
    let d = Daemon::start(&config(&[
        ("retry_schedule", r#"["100ms", "100ms", "100ms"]"#),
        ("circuit_failures", "2"),
        ("circuit_cooldown", r#""1s""#),
        ("max_in_flight_per_endpoint", "1"),
    ]));
    create_endpoint(d.addr, json!({"url": receiver.url("/")}));
    let event = create(d.addr, &json!({"type": "a"}));
    let list = settled(d.addr, s(&event["id"]), 1);
    assert_eq!(list[0]["status"], "failed", "{list:?}");
    assert_eq!(
        status_codes(&list[0]),
        [500, 500, 500, 500],
        "the pause used up no attempt: immediate + 3 retries"
    );
    let got = receiver.requests();
    assert_eq!(got.len(), 4);
    // Two consecutive failures open the circuit: the third attempt (the
    // probe) waits for the cooldown, not the 100 ms of the schedule.
    let paused = got[2].at.duration_since(got[1].at);
    assert!(
        paused >= Duration::from_millis(900),
        "the probe came {paused:?} after the circuit opened (cooldown 1 s)"
    );
}

#[test]
fn an_endpoint_timeout_cuts_a_hanging_attempt_short() {
    // The daemon-wide timeout is 30 s; the endpoint's own is 1 s. Settling
    // well before 30 s shows the endpoint's value was used.
    let receiver = Receiver::sequence(vec![Reply::Hang], Reply::status(200));
    let d = Daemon::start(&config(&[("timeout", r#""30s""#)]));
    create_endpoint(d.addr, json!({"url": receiver.url("/"), "timeout_secs": 1}));
    let event = create(d.addr, &json!({"type": "a"}));
    let mut list = Vec::new();
    let done = wait_until(deadline(Duration::from_secs(20)), || {
        list = deliveries_of(d.addr, s(&event["id"]));
        list.len() == 1 && list[0]["status"] != "pending"
    });
    assert!(
        done,
        "the hanging attempt was not cut at timeout_secs = 1: {list:#?}"
    );
    assert_eq!(list[0]["status"], "succeeded", "{list:?}");
    let attempts = list[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["status_code"], 0, "a timeout has no status");
    assert!(
        !s(&attempts[0]["error"]).is_empty(),
        "a timeout says so: {attempts:?}"
    );
    assert_eq!(attempts.last().unwrap()["status_code"], 200);
}

#[test]
fn a_hanging_or_slow_endpoint_does_not_hold_up_a_healthy_one() {
    // One endpoint never answers: each attempt holds its connection until
    // the 30 s timeout. Another answers, but only after 3 s.
    let hanging = Receiver::start(|_, _| Reply::Hang);
    let slow = Receiver::start(|_, _| Reply::status(200).after(Duration::from_secs(3)));
    let healthy = Receiver::always(200);
    let d = Daemon::start(&config(&[
        ("timeout", r#""30s""#),
        ("max_in_flight_per_endpoint", "2"),
    ]));
    let hanging_ep = create_endpoint(d.addr, json!({"url": hanging.url("/")}));
    create_endpoint(d.addr, json!({"url": slow.url("/")}));
    create_endpoint(d.addr, json!({"url": healthy.url("/")}));
    post_numbered_events(d.addr, 30);
    let got = healthy.wait_for_requests(30, deadline(SETTLE));
    let ids: HashSet<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 30);
    // Attempts are recorded when they end: none at the hanging endpoint
    // has, so all thirty got through while it still held its first two.
    let held = all_deliveries(d.addr, &format!("endpoint={}", s(&hanging_ep["id"])), 100);
    assert!(
        held.iter().all(|x| x["attempts"] == json!([])),
        "the hanging endpoint's attempts ended first: {held:#?}"
    );
    assert!(hanging.requests().len() <= 2, "the in-flight cap holds");
    // Two at a time, 3 s each: the slow endpoint needs 45 s for all thirty.
    assert!(
        slow.requests().len() < 30,
        "the slow endpoint cannot have finished yet"
    );
}

#[test]
fn the_rate_limit_spaces_out_deliveries_and_caps_arrivals_in_any_second() {
    let receiver = Receiver::always(200);
    let d = Daemon::start(WEBHOOKS);
    create_endpoint(
        d.addr,
        json!({"url": receiver.url("/"), "rate_limit_per_sec": 5}),
    );
    post_numbered_events(d.addr, 20);
    let got = receiver.wait_for_requests(20, deadline(Duration::from_secs(60)));
    let ids: HashSet<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 20, "each event once");
    // A bucket of 5 refilled at 5/s: the 15th cannot come before 2 s after
    // the first (10 tokens to refill), whatever the machine's speed.
    let spread = got[14].at.duration_since(got[0].at);
    assert!(
        spread >= Duration::from_millis(1900),
        "15 deliveries took only {spread:?}"
    );
    // Nor can more than 5 + 5 come within any 1 s window; allow 2 more for
    // timer slack.
    let times: Vec<Instant> = got.iter().map(|r| r.at).collect();
    for (i, start) in times.iter().enumerate() {
        let window = times[i..]
            .iter()
            .filter(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        assert!(
            window <= 12,
            "{window} deliveries within 1 s of arrival {i} at 5/s"
        );
    }
}

// ---------------------------------------------------------------------------
// Answers and refusals

#[test]
fn attempts_keep_a_bounded_excerpt_of_the_answer() {
    let big: Vec<u8> = b"0123456789abcdef"
        .iter()
        .cycle()
        .take(10_000)
        .copied()
        .collect();
    let chatty = Receiver::start({
        let big = big.clone();
        move |_, _| Reply::status(500).body(big.clone())
    });
    let polite = Receiver::start(|_, _| Reply::status(200).body("thanks"));
    let d = Daemon::start(&config(&[("retry_schedule", "[]")]));
    let chatty_ep = create_endpoint(d.addr, json!({"url": chatty.url("/")}));
    create_endpoint(d.addr, json!({"url": polite.url("/")}));
    let event = create(d.addr, &json!({"type": "a"}));
    let list = settled(d.addr, s(&event["id"]), 2);
    for delivery in &list {
        let attempt = &delivery["attempts"][0];
        let response = s(&attempt["response"]);
        assert!(attempt["latency_ms"].is_number(), "{attempt}");
        assert_eq!(attempt["attempt"], 1);
        assert_eq!(attempt["trigger"], "scheduled");
        if delivery["endpoint_id"] == chatty_ep["id"] {
            assert_eq!(delivery["status"], "failed");
            assert_eq!(attempt["status_code"], 500);
            assert!(
                response.len() <= 4096 && response.len() >= 1024,
                "excerpt of {} bytes",
                response.len()
            );
            assert!(big.starts_with(response.as_bytes()), "not a prefix");
        } else {
            assert_eq!(delivery["status"], "succeeded");
            assert_eq!(response, "thanks");
        }
    }

    // The test send answers with the same kind of report, and is signed.
    let resp = post_empty(
        d.addr,
        &format!("/v1/endpoints/{}/test", s(&chatty_ep["id"])),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let report = resp.json();
    assert_eq!(report["status_code"], 500, "{report}");
    assert!(report["latency_ms"].is_number());
    let excerpt = s(&report["response"]);
    assert!(excerpt.len() <= 4096 && big.starts_with(excerpt.as_bytes()));
    let sent = chatty.requests().pop().unwrap();
    assert_eq!(sent.json()["type"], "herald.test");
    reference_verify(s(&chatty_ep["secret"]), &sent).expect("the test send is signed");
}

#[test]
fn a_dropped_connection_is_a_network_error() {
    let receiver = Receiver::start(|_, _| Reply::Drop);
    let d = Daemon::start(&config(&[("retry_schedule", "[]")]));
    create_endpoint(d.addr, json!({"url": receiver.url("/")}));
    let event = create(d.addr, &json!({"type": "a"}));
    let list = settled(d.addr, s(&event["id"]), 1);
    assert_eq!(list[0]["status"], "failed", "{list:?}");
    assert_eq!(status_codes(&list[0]), [0], "one attempt, no status");
    assert!(!s(&list[0]["attempts"][0]["error"]).is_empty());
    let got = receiver.requests();
    assert!(!got.is_empty());
    assert!(got
        .iter()
        .all(|r| r.header("webhook-id") == s(&event["id"])));
}

#[test]
fn non_public_destinations_are_refused_named_and_never_contacted() {
    let receiver = Receiver::always(200);
    let port = receiver.addr.port();
    // No allow-list: nothing on loopback, private or link-local networks.
    let d = Daemon::start("[webhooks]\nrequire_https = false\nretry_schedule = []\n");
    // (URL, what the error must name; None where only the refusal matters)
    let cases = [
        (receiver.url("/"), Some("127.0.0.1")),
        (format!("http://localhost:{port}/"), Some("localhost")),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            Some("169.254.169.254"),
        ),
        (format!("http://[::ffff:127.0.0.1]:{port}/"), None),
        (format!("http://[::1]:{port}/"), None),
        (format!("http://0.0.0.0:{port}/"), None),
        (format!("http://2130706433:{port}/"), None),
        ("http://10.1.2.3/".to_owned(), Some("10.1.2.3")),
        ("http://100.64.0.1/".to_owned(), Some("100.64.0.1")),
    ];
    let mut created = Vec::new();
    for (url, named) in &cases {
        let resp = post_json(d.addr, "/v1/endpoints", &json!({"url": url}));
        match resp.status {
            201 => created.push((resp.json(), url.clone(), *named)),
            // Refusing an odd address form up front is fine too.
            422 if named.is_none() => assert_eq!(resp.json()["error"]["field"], "url"),
            _ => panic!("{url}: {} {}", resp.status, resp.text()),
        }
    }
    let event = create(d.addr, &json!({"type": "a"}));
    let list = settled(d.addr, s(&event["id"]), created.len());
    for (ep, url, named) in &created {
        let delivery = list
            .iter()
            .find(|x| x["endpoint_id"] == ep["id"])
            .unwrap_or_else(|| panic!("no delivery to {url}"));
        assert_eq!(delivery["status"], "failed", "{url}: {delivery}");
        let attempt = &delivery["attempts"][0];
        assert_eq!(attempt["status_code"], 0, "{url}: {delivery}");
        let error = s(&attempt["error"]);
        if let Some(named) = named {
            assert!(error.contains(named), "{url}: {error:?} names no {named}");
            assert!(error.contains("public"), "{url}: {error:?}");
        } else {
            assert!(!error.is_empty(), "{url}");
        }
    }
    // The test send is refused the same way.
    let (loopback, _, _) = &created[0];
    let resp = post_empty(
        d.addr,
        &format!("/v1/endpoints/{}/test", s(&loopback["id"])),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let report = resp.json();
    assert_eq!(report["status_code"], 0, "{report}");
    assert!(s(&report["error"]).contains("127.0.0.1"), "{report}");
    assert!(
        receiver.requests().is_empty(),
        "a refused destination was contacted: {:?}",
        receiver.requests()
    );
}

// ---------------------------------------------------------------------------
// Herald's own events, listings, idempotency

#[test]
fn delivery_trouble_is_reported_to_other_endpoints_never_about_themselves() {
    let failing = Receiver::always(500);
    let watcher = Receiver::always(200);
    let d = Daemon::start(WEBHOOKS);
    let failing_ep = create_endpoint(d.addr, json!({"url": failing.url("/")}));
    create_endpoint(
        d.addr,
        json!({"url": watcher.url("/"), "event_types": ["delivery.*", "endpoint.*"]}),
    );
    let event = create(d.addr, &json!({"type": "a"}));
    let list = settled(d.addr, s(&event["id"]), 1);
    assert_eq!(list[0]["status"], "failed");

    let mut types = HashSet::new();
    let reported = wait_until(deadline(SETTLE), || {
        types = watcher
            .requests()
            .iter()
            .map(|r| s(&r.json()["type"]).to_owned())
            .collect();
        types.contains("delivery.failing") && types.contains("delivery.exhausted")
    });
    assert!(reported, "the watcher got only {types:?}");
    let exhausted = watcher
        .requests()
        .into_iter()
        .find(|r| r.json()["type"] == "delivery.exhausted")
        .unwrap();
    assert_eq!(exhausted.json()["data"]["event_id"], event["id"]);

    // Those events were committed with their deliveries: none is for the
    // endpoint they are about, though it subscribes to every type.
    let own = all_deliveries(d.addr, &format!("endpoint={}", s(&failing_ep["id"])), 100);
    let own_types: Vec<&str> = own.iter().map(|x| s(&x["event_type"])).collect();
    assert_eq!(own_types, ["a"], "{own:#?}");
    assert!(failing.requests().iter().all(|r| r.json()["type"] == "a"));
}

#[test]
fn deliveries_list_by_status_and_endpoint_page_by_page() {
    let ok = Receiver::always(200);
    let bad = Receiver::always(500);
    let d = Daemon::start(&config(&[("retry_schedule", "[]")]));
    // Subscribed to "a" only: Herald's own delivery.* events about the
    // failures would otherwise add deliveries.
    let ok_ep = create_endpoint(d.addr, json!({"url": ok.url("/"), "event_types": ["a"]}));
    let bad_ep = create_endpoint(d.addr, json!({"url": bad.url("/"), "event_types": ["a"]}));
    let (ok_id, bad_id) = (s(&ok_ep["id"]), s(&bad_ep["id"]));
    let mut events = Vec::new();
    for i in 0..5 {
        events.push(create(d.addr, &json!({"type": "a", "data": {"i": i}})));
    }
    for e in &events {
        settled(d.addr, s(&e["id"]), 2);
    }

    let succeeded = all_deliveries(d.addr, "status=succeeded", 2);
    let brief = |list: &[Value]| -> Vec<String> {
        list.iter()
            .map(|x| {
                format!(
                    "{} {} {}",
                    s(&x["id"]),
                    s(&x["endpoint_id"]),
                    s(&x["status"])
                )
            })
            .collect()
    };
    assert_eq!(succeeded.len(), 5, "{:#?}", brief(&succeeded));
    assert!(succeeded.iter().all(|x| x["endpoint_id"] == ok_id));
    let failed = all_deliveries(d.addr, "status=failed", 2);
    assert_eq!(failed.len(), 5);
    assert!(failed.iter().all(|x| x["endpoint_id"] == bad_id));
    assert!(all_deliveries(d.addr, "status=pending", 2).is_empty());
    assert_eq!(
        all_deliveries(d.addr, &format!("endpoint={ok_id}"), 2).len(),
        5
    );
    assert!(all_deliveries(d.addr, &format!("endpoint={ok_id}&status=failed"), 2).is_empty());

    let everything = all_deliveries(d.addr, "", 3);
    let ids: HashSet<&str> = everything.iter().map(|x| s(&x["id"])).collect();
    assert_eq!(ids.len(), 10, "each delivery once across pages");
    assert!(ids.iter().all(|id| id.starts_with("dlv_")));
    for x in &everything {
        let one = get(d.addr, &format!("/v1/deliveries/{}", s(&x["id"])));
        assert_eq!(one.status, 200);
        assert_eq!(&one.json(), x, "listing and GET agree");
    }

    let dead = get(d.addr, &format!("/v1/dead-letters?endpoint={bad_id}")).json();
    assert_eq!(dead["deliveries"].as_array().unwrap().len(), 5);
    let dead_ok = get(d.addr, &format!("/v1/dead-letters?endpoint={ok_id}")).json();
    assert_eq!(dead_ok["deliveries"], json!([]));

    let resp = get(d.addr, "/v1/deliveries?status=bogus");
    assert_eq!(resp.status, 400, "{}", resp.text());
}

#[test]
fn a_repeated_idempotency_key_is_delivered_once() {
    let receiver = Receiver::always(200);
    let d = Daemon::start(WEBHOOKS);
    create_endpoint(d.addr, json!({"url": receiver.url("/")}));
    let body = json!({"type": "a", "idempotency_key": "k1"});
    let first = post_json(d.addr, "/v1/events", &body);
    assert_eq!(first.status, 201);
    let again = post_json(d.addr, "/v1/events", &body);
    assert_eq!(again.status, 200, "{}", again.text());
    let id = s(&first.json()["id"]).to_owned();
    assert_eq!(deliveries_of(d.addr, &id).len(), 1);
    let marker = create(d.addr, &json!({"type": "a"}));
    settled(d.addr, &id, 1);
    settled(d.addr, s(&marker["id"]), 1);
    let got: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(got.iter().filter(|g| **g == id).count(), 1, "{got:?}");
}

// ---------------------------------------------------------------------------
// Durability

#[test]
fn attempts_in_flight_at_kill_9_are_made_again_after_the_restart() {
    // Until the gate opens, the receiver holds every request unanswered, so
    // attempts are in flight when the daemon dies.
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    let receiver = Receiver::start(move |_, _| {
        if gate.load(Ordering::SeqCst) {
            Reply::status(200)
        } else {
            Reply::Hang
        }
    });
    let mut d = Daemon::start(&config(&[("timeout", r#""30s""#)]));
    create_endpoint(d.addr, json!({"url": receiver.url("/")}));
    let ids = post_numbered_events(d.addr, 12);
    assert_eq!(ids.len(), 12);
    // max_in_flight_per_endpoint = 4: four attempts hang, eight wait.
    receiver.wait_for_requests(4, deadline(SETTLE));
    d.kill9();
    let before_restart = receiver.requests().len();
    open.store(true, Ordering::SeqCst);
    d.restart();

    assert_all_arrive(&receiver, before_restart, &ids);
    for id in &ids {
        let list = settled(d.addr, id, 1);
        assert_eq!(list[0]["status"], "succeeded", "{list:?}");
    }
}

#[test]
fn deliveries_to_a_receiver_down_at_kill_9_arrive_once_it_is_up() {
    // Reserve a port, then free it: connections are refused until the
    // receiver is started on it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut d = Daemon::start(&config(&[(
        "retry_schedule",
        r#"["200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms"]"#,
    )]));
    create_endpoint(d.addr, json!({"url": format!("http://127.0.0.1:{port}/")}));
    let ids = post_numbered_events(d.addr, 50);
    // Wait until some attempts have failed, so retries are pending.
    let failed_once = wait_until(deadline(SETTLE), || {
        deliveries_of(d.addr, &ids[0])
            .first()
            .is_some_and(|x| !x["attempts"].as_array().unwrap().is_empty())
    });
    assert!(failed_once, "no attempt was made");
    d.kill9();

    let receiver = bind_receiver_on(port);
    d.restart();
    assert_all_arrive(&receiver, 0, &ids);
}

/// Waits until every event in `ids` reached `receiver` among the requests
/// after the first `skip`.
fn assert_all_arrive(receiver: &Receiver, skip: usize, ids: &[String]) {
    let mut missing = Vec::new();
    let all = wait_until(deadline(Duration::from_secs(60)), || {
        let got: HashSet<String> = receiver.requests()[skip..]
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        missing = ids
            .iter()
            .filter(|id| !got.contains(*id))
            .cloned()
            .collect();
        missing.is_empty()
    });
    assert!(all, "never delivered after the restart: {missing:?}");
}

/// A 200-answering receiver on a given port (freed just before).
fn bind_receiver_on(port: u16) -> Receiver {
    let mut found = None;
    let bound = wait_until(deadline(Duration::from_secs(10)), || {
        found = Receiver::start_on(port, |_, _| Reply::status(200)).ok();
        found.is_some()
    });
    assert!(bound, "could not bind 127.0.0.1:{port} again");
    found.unwrap()
}
