//! Server-side tracking through the Segment-compatible API, as real clients
//! and operators see it: the official Python libraries, write-key
//! authentication, validation and size limits, deduplication, identity,
//! funnels, attribution and counts checked against a computation of our
//! own, kill -9 during ingestion, retention and the NDJSON export.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::support::*;

const WRITE_KEY: &str = "wk_web_0123456789abcdef";
const APP_KEY: &str = "wk_app_fedcba9876543210";
const HOUR: i64 = 3600 * 1000;
const DAY: i64 = 24 * HOUR;
/// Starting Python and importing `requests` can be slow on a loaded machine;
/// the clients also wait up to `upload_interval` before sending.
const PYTHON_RUN: Duration = Duration::from_secs(60);

/// Two sources, so deduplication can be seen to be per source; `extra` may
/// add `[tracking]` settings or other sections.
fn config(extra: &str) -> String {
    format!(
        "{extra}\n[[tracking.sources]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n\
         [[tracking.sources]]\nname = \"app\"\nwrite_key = \"{APP_KEY}\"\n"
    )
}

fn basic(user: &str) -> String {
    format!("Basic {}", STANDARD.encode(user))
}

/// What analytics-python sends: the key as user, an empty password.
fn web_auth() -> String {
    basic(&format!("{WRITE_KEY}:"))
}

fn post_tracking(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut all = vec![JSON];
    all.extend_from_slice(headers);
    request(addr, "POST", path, &all, body)
}

/// Posts with the web source's key and returns `results`, failing unless
/// the answer is 200 with `success: true`.
fn track_ok(addr: SocketAddr, path: &str, body: &Value) -> Vec<Value> {
    let auth = web_auth();
    let resp = post_tracking(
        addr,
        path,
        &[("Authorization", &auth)],
        body.to_string().as_bytes(),
    );
    assert_eq!(resp.status, 200, "{path} {body}: {}", resp.text());
    let answer = resp.json();
    assert_eq!(answer["success"], true, "{}", resp.text());
    answer["results"].as_array().expect("results").clone()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Unix ms as `2026-11-22T08:00:00.000Z`.
fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("a representable time");
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// An RFC 3339 text (any offset, any precision) as Unix ms, digits below
/// the millisecond dropped.
fn ms_of(text: &Value) -> i64 {
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("{text} is no timestamp"));
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    t.unix_timestamp_nanos().div_euclid(1_000_000) as i64
}

fn message_id(event: &Value) -> String {
    event["data"]["messageId"]
        .as_str()
        .unwrap_or_else(|| panic!("no messageId in {event}"))
        .to_owned()
}

/// Stored events per messageId; a list so that copies show up.
fn by_message_id(events: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for e in events {
        out.entry(message_id(e)).or_default().push(e.clone());
    }
    out
}

fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Value {
    let resp = request(addr, "GET", path, headers, b"");
    assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    resp.json()
}

/// Every call in a user's history, following `next_cursor` with pages of `limit`.
fn user_events(addr: SocketAddr, user: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10_000 {
        let mut path = format!("/v1/users/{}/events?limit={limit}", enc(user));
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let page = get_with(addr, &path, &[]);
        let events = page["events"].as_array().expect("events").clone();
        assert!(events.len() <= limit, "{path}: more than asked for");
        out.extend(events);
        match page["next_cursor"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return out,
        }
    }
    panic!("the history of {user} never ended");
}

/// The export's lines, each parsed; fails on a line that is not JSON.
fn export(addr: SocketAddr, query: &str) -> Vec<Value> {
    let path = format!("/v1/events/export{query}");
    let resp = get(addr, &path);
    assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("application/x-ndjson"),
        "{path}"
    );
    let text = resp.text();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{path}: the last line is cut short"
    );
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{path}: line {line:?}: {e}"))
        })
        .collect()
}

/// Runs tests/segment_clients.py with `spec` (see there), failing the test
/// with the library's own complaint if it reported an error.
fn run_client(spec: &Value) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/segment_clients.py");
    let mut child = Command::new(python())
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "running {} with {}: {e}",
                script.display(),
                python().display()
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx
        .recv_timeout(PYTHON_RUN)
        .unwrap_or_else(|_| {
            panic!(
                "the {} client did not finish within {PYTHON_RUN:?}",
                spec["library"]
            )
        })
        .expect("waiting for the Python client");
    assert!(
        output.status.success(),
        "the {} client failed ({}): {}",
        spec["library"],
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the client script prints JSON")
}

/// Checks the three times of the skew correction that every stored call
/// carries against each other and against the log's own time.
fn assert_timestamps(event: &Value) {
    let data = &event["data"];
    let received = ms_of(&data["receivedAt"]);
    let sent = ms_of(&data["sentAt"]);
    let original = ms_of(&data["originalTimestamp"]);
    assert_eq!(
        ms_of(&data["timestamp"]),
        received - (sent - original),
        "timestamp = receivedAt - (sentAt - originalTimestamp) in {event}"
    );
    assert_eq!(
        ms_of(&event["occurred_at"]),
        ms_of(&data["timestamp"]),
        "the log orders the call by its corrected time: {event}"
    );
}

fn call(method: &str, args: Value) -> Value {
    json!({"method": method, "args": args})
}

// ---------------------------------------------------------------------------
// 1. The official client libraries

#[test]
fn segment_analytics_python_calls_are_stored_and_queryable() {
    let d = Daemon::start(&config(""));
    let addr = d.addr;
    let two_days_ago = now_ms() - 2 * DAY;
    let calls = vec![
        // Anonymous browsing before sign-up, from a campaign, with the time
        // the client saw it happen.
        call(
            "page",
            json!({"anonymous_id": "seg-anon-1", "category": "Docs", "name": "Pricing",
                   "properties": {"url": "https://example.com/pricing"},
                   "context": {"campaign": {"source": "google", "medium": "cpc", "name": "spring"}},
                   "timestamp": rfc3339(two_days_ago), "message_id": "seg-page-1"}),
        ),
        call(
            "identify",
            json!({"user_id": "seg-u1", "anonymous_id": "seg-anon-1",
                   "traits": {"email": "ada@example.com", "plan": "free"},
                   "message_id": "seg-identify-1"}),
        ),
        call(
            "track",
            json!({"user_id": "seg-u1", "event": "Signed Up", "properties": {"plan": "free"},
                   "message_id": "seg-track-1"}),
        ),
        call(
            "screen",
            json!({"user_id": "seg-u1", "name": "Home", "properties": {"tab": "feed"},
                   "message_id": "seg-screen-1"}),
        ),
        call(
            "group",
            json!({"user_id": "seg-u1", "group_id": "acme", "traits": {"name": "Acme Inc"},
                   "message_id": "seg-group-1"}),
        ),
        // Activity under an older id, which alias then ties to the user.
        call(
            "track",
            json!({"anonymous_id": "seg-old-id", "event": "Viewed Docs",
                   "message_id": "seg-track-2"}),
        ),
        call(
            "alias",
            json!({"previous_id": "seg-old-id", "user_id": "seg-u1", "message_id": "seg-alias-1"}),
        ),
        call(
            "identify",
            json!({"user_id": "seg-u1", "traits": {"plan": "pro"}, "message_id": "seg-identify-2"}),
        ),
    ];
    let spec = json!({"library": "segment", "host": format!("http://{addr}"),
                      "write_key": WRITE_KEY, "sync": false, "calls": calls});
    let client = run_client(&spec);

    let expected_types: BTreeMap<&str, (&str, &str)> = [
        ("seg-page-1", ("page", "page")),
        ("seg-identify-1", ("identify", "identify")),
        ("seg-track-1", ("Signed Up", "track")),
        ("seg-screen-1", ("screen", "screen")),
        ("seg-group-1", ("group", "group")),
        ("seg-track-2", ("Viewed Docs", "track")),
        ("seg-alias-1", ("alias", "alias")),
        ("seg-identify-2", ("identify", "identify")),
    ]
    .into_iter()
    .collect();
    let all = list_all(addr, "", &[]);
    let stored = by_message_id(&all);
    assert_eq!(
        stored.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected_types.keys().copied().collect(),
        "{all:#?}"
    );
    for (id, (log_type, call_type)) in &expected_types {
        let copies = &stored[*id];
        assert_eq!(copies.len(), 1, "{id} stored once: {copies:#?}");
        let e = &copies[0];
        assert_eq!(e["type"], *log_type, "{e}");
        assert_eq!(e["data"]["type"], *call_type, "{e}");
        assert_eq!(e["data"]["source"], "web", "{e}");
        // The library that ran is the one that spoke.
        assert_eq!(e["data"]["context"]["library"]["name"], "analytics-python");
        assert_eq!(
            e["data"]["context"]["library"]["version"],
            client["version"]
        );
        assert!(
            e["data"].get("writeKey").is_none(),
            "the write key the client put in the body is not data: {e}"
        );
        assert_timestamps(e);
    }
    let page = &stored["seg-page-1"][0]["data"];
    assert_eq!(ms_of(&page["originalTimestamp"]), two_days_ago);
    assert_eq!(page["name"], "Pricing");
    assert_eq!(page["category"], "Docs");
    assert_eq!(page["properties"]["url"], "https://example.com/pricing");
    assert_eq!(page["context"]["campaign"]["source"], "google");
    assert_eq!(page["anonymousId"], "seg-anon-1");
    let group = &stored["seg-group-1"][0]["data"];
    assert_eq!(group["groupId"], "acme");
    assert_eq!(group["traits"]["name"], "Acme Inc");
    assert_eq!(stored["seg-alias-1"][0]["data"]["previousId"], "seg-old-id");
    assert_eq!(
        stored["seg-track-1"][0]["data"]["properties"]["plan"],
        "free"
    );
    assert_eq!(stored["seg-screen-1"][0]["data"]["name"], "Home");

    for (query, n) in [
        ("type=identify", 2),
        ("type=page", 1),
        ("type=screen", 1),
        ("type=group", 1),
        ("type=alias", 1),
    ] {
        assert_eq!(list_all(addr, query, &[]).len(), n, "{query}");
    }
    let stats = get_with(
        addr,
        &format!(
            "/v1/stats/events?event={}&interval=day&since={}&until={}",
            enc("Signed Up"),
            enc(&rfc3339(now_ms() - 3 * DAY)),
            enc(&rfc3339(now_ms() + DAY))
        ),
        &[],
    );
    assert_eq!(stats["total"], 1, "{stats}");

    // Everything here is seg-u1's: the anonymous page through identify, the
    // old id's track through alias.
    let user = get_with(addr, "/v1/users/seg-u1", &[]);
    assert_eq!(user["user_id"], "seg-u1");
    assert_eq!(
        user["traits"],
        json!({"email": "ada@example.com", "plan": "pro"}),
        "identify merges traits, the later value winning: {user}"
    );
    let linked: BTreeSet<&str> = user["linked_ids"]
        .as_array()
        .expect("linked_ids")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        linked,
        BTreeSet::from(["seg-anon-1", "seg-old-id"]),
        "{user}"
    );
    assert_eq!(user["event_count"], 8, "{user}");
    let times: Vec<i64> = all.iter().map(|e| ms_of(&e["data"]["timestamp"])).collect();
    assert_eq!(
        ms_of(&user["first_seen"]),
        *times.iter().min().unwrap(),
        "{user}"
    );
    assert_eq!(
        ms_of(&user["last_seen"]),
        *times.iter().max().unwrap(),
        "{user}"
    );
    let history = user_events(addr, "seg-u1", 3);
    let mut in_log_order = all.clone();
    in_log_order.sort_by_key(|e| e["seq"].as_u64());
    assert_eq!(history, in_log_order, "the user's history, paged by 3");

    // The same calls again, one request each this time: nothing new.
    let again = json!({"library": "segment", "host": format!("http://{addr}"),
                       "write_key": WRITE_KEY, "sync": true, "calls": spec["calls"]});
    run_client(&again);
    assert_eq!(
        list_all(addr, "", &[]),
        all,
        "a resend stores no second copy"
    );
}

#[test]
fn rudder_sdk_python_calls_are_stored_and_queryable() {
    let d = Daemon::start(&config(""));
    let addr = d.addr;
    let calls = vec![
        call(
            "track",
            json!({"anonymous_id": "rud-anon-1", "event": "Added To Cart",
                   "properties": {"sku": "X-1", "price": 12.5}, "message_id": "rud-track-1"}),
        ),
        call(
            "identify",
            json!({"user_id": "rud-u1", "anonymous_id": "rud-anon-1",
                   "traits": {"email": "grace@example.com"}, "message_id": "rud-identify-1"}),
        ),
        call(
            "page",
            json!({"user_id": "rud-u1", "category": "Shop", "name": "Checkout",
                   "properties": {"step": 2}, "message_id": "rud-page-1"}),
        ),
    ];
    let spec = json!({"library": "rudder", "host": format!("http://{addr}"),
                      "write_key": WRITE_KEY, "sync": false, "calls": calls});
    let client = run_client(&spec);

    let all = list_all(addr, "", &[]);
    let stored = by_message_id(&all);
    for (id, log_type) in [
        ("rud-track-1", "Added To Cart"),
        ("rud-identify-1", "identify"),
        ("rud-page-1", "page"),
    ] {
        let copies = stored
            .get(id)
            .unwrap_or_else(|| panic!("{id} missing: {all:#?}"));
        assert_eq!(copies.len(), 1, "{id}: {copies:#?}");
        let e = &copies[0];
        assert_eq!(e["type"], log_type, "{e}");
        assert_eq!(e["data"]["source"], "web", "{e}");
        assert_eq!(e["data"]["channel"], "server", "{e}");
        assert_eq!(
            e["data"]["context"]["library"]["version"],
            client["version"]
        );
        assert_timestamps(e);
    }
    assert_eq!(all.len(), 3, "{all:#?}");
    assert_eq!(stored["rud-track-1"][0]["data"]["properties"]["sku"], "X-1");
    assert_eq!(stored["rud-page-1"][0]["data"]["name"], "Checkout");
    assert_eq!(list_all(addr, "type=identify", &[]).len(), 1);
    assert_eq!(list_all(addr, "type=page", &[]).len(), 1);

    let user = get_with(addr, "/v1/users/rud-u1", &[]);
    assert_eq!(user["linked_ids"], json!(["rud-anon-1"]), "{user}");
    assert_eq!(user["event_count"], 3, "{user}");
    let mut in_log_order = all.clone();
    in_log_order.sort_by_key(|e| e["seq"].as_u64());
    assert_eq!(user_events(addr, "rud-u1", 100), in_log_order);

    let again = json!({"library": "rudder", "host": format!("http://{addr}"),
                       "write_key": WRITE_KEY, "sync": true, "calls": spec["calls"]});
    run_client(&again);
    assert_eq!(
        list_all(addr, "", &[]),
        all,
        "a resend stores no second copy"
    );

    // rudder-sdk-python 2.x puts identify's traits in `context.traits`
    // only (never at the top level): a profile must still get them.
    assert_eq!(
        user["traits"],
        json!({"email": "grace@example.com"}),
        "traits sent by rudder-sdk-python's identify: {user}"
    );
}

// ---------------------------------------------------------------------------
// 2. The HTTP surface: authentication, validation, limits, encoding, time

#[test]
fn write_keys_authenticate_by_basic_bearer_or_body_and_nothing_else() {
    const API_KEY: &str = "private-api-key-0123456789";
    let d = Daemon::start(&config(&format!("[server]\napi_keys = [\"{API_KEY}\"]\n")));
    let addr = d.addr;
    let private = format!("Bearer {API_KEY}");
    let track = |id: &str, with_key: Option<&str>| {
        let mut body = json!({"userId": "auth-u", "event": "Logged In", "messageId": id});
        if let Some(k) = with_key {
            body["writeKey"] = json!(k);
        }
        body.to_string().into_bytes()
    };
    let batch = |id: &str, with_key: Option<&str>| {
        let mut body = json!({"batch": [{"type": "track", "userId": "auth-u",
                                         "event": "Logged In", "messageId": id}]});
        if let Some(k) = with_key {
            body["writeKey"] = json!(k);
        }
        body.to_string().into_bytes()
    };
    let accepted = [
        ("basic-colon", basic(&format!("{WRITE_KEY}:")), None),
        ("basic-bare", basic(WRITE_KEY), None),
        ("bearer", format!("Bearer {WRITE_KEY}"), None),
        ("body", String::new(), Some(WRITE_KEY)),
        ("app-source", basic(&format!("{APP_KEY}:")), None),
    ];
    for (id, auth, body_key) in &accepted {
        let mut headers = vec![];
        if !auth.is_empty() {
            headers.push(("Authorization", auth.as_str()));
        }
        let resp = post_tracking(addr, "/v1/track", &headers, &track(id, *body_key));
        assert_eq!(resp.status, 200, "{id}: {}", resp.text());
    }
    let resp = post_tracking(
        addr,
        "/v1/batch",
        &[],
        &batch("batch-body", Some(WRITE_KEY)),
    );
    assert_eq!(
        resp.status,
        200,
        "batch with the key in the body: {}",
        resp.text()
    );

    let refused = [
        ("none", String::new(), None),
        ("unknown-basic", basic("wk_nobody_0123456789abc:"), None),
        (
            "unknown-bearer",
            "Bearer wk_nobody_0123456789abc".to_owned(),
            None,
        ),
        (
            "unknown-body",
            String::new(),
            Some("wk_nobody_0123456789abc"),
        ),
        // The private API key opens the query API, not ingestion.
        ("private-key", private.clone(), None),
        ("empty-basic", basic(":"), None),
    ];
    for (id, auth, body_key) in &refused {
        let mut headers = vec![];
        if !auth.is_empty() {
            headers.push(("Authorization", auth.as_str()));
        }
        let resp = post_tracking(addr, "/v1/track", &headers, &track(id, *body_key));
        assert_eq!(resp.status, 401, "{id}: {}", resp.text());
        let resp = post_tracking(addr, "/v1/batch", &headers, &batch(id, *body_key));
        assert_eq!(resp.status, 401, "batch {id}: {}", resp.text());
    }

    // Ingestion needed no API key, but reading does.
    assert_eq!(get(addr, "/v1/events").status, 401);
    assert_eq!(get(addr, "/v1/users/auth-u").status, 401);
    let auth = [("Authorization", private.as_str())];
    let stored = list_all(addr, "", &auth);
    let by_id = by_message_id(&stored);
    let mut ids: Vec<&str> = by_id.keys().map(String::as_str).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "app-source",
            "basic-bare",
            "basic-colon",
            "batch-body",
            "bearer",
            "body"
        ],
        "exactly the accepted calls were stored"
    );
    assert_eq!(by_id["app-source"][0]["data"]["source"], "app");
    assert_eq!(by_id["bearer"][0]["data"]["source"], "web");
    for e in &stored {
        assert!(
            e["data"].get("writeKey").is_none(),
            "the key is not data: {e}"
        );
    }
    let user = get_with(addr, "/v1/users/auth-u", &auth);
    assert_eq!(user["event_count"], 6, "{user}");
}

#[test]
fn invalid_calls_are_refused_whole_with_the_field_named() {
    let d = Daemon::start(&config(""));
    let addr = d.addr;
    let auth = web_auth();
    let headers = [("Authorization", auth.as_str())];
    let now = now_ms();
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "/v1/track",
            json!({"event": "E"}),
            &["userId", "anonymousId"],
        ),
        (
            "/v1/identify",
            json!({"traits": {"a": 1}}),
            &["userId", "anonymousId"],
        ),
        ("/v1/track", json!({"userId": "u"}), &["event"]),
        ("/v1/track", json!({"userId": "u", "event": ""}), &["event"]),
        ("/v1/group", json!({"userId": "u"}), &["groupId"]),
        ("/v1/alias", json!({"userId": "u"}), &["previousId"]),
        ("/v1/alias", json!({"previousId": "a"}), &["userId"]),
        (
            "/v1/page",
            json!({"userId": "u", "messageId": "m".repeat(101)}),
            &["messageId"],
        ),
        (
            "/v1/identify",
            json!({"userId": "u", "timestamp": "yesterday"}),
            &["timestamp"],
        ),
        (
            "/v1/track",
            json!({"userId": "u", "event": "E", "timestamp": rfc3339(now + 25 * HOUR)}),
            &["timestamp"],
        ),
    ];
    for (path, body, fields) in &cases {
        let resp = post_tracking(addr, path, &headers, body.to_string().as_bytes());
        assert_eq!(resp.status, 400, "{path} {body}: {}", resp.text());
        assert_eq!(resp.code(), "invalid_call", "{path} {body}");
        let field = resp.json()["error"]["field"].clone();
        assert!(
            fields.iter().any(|f| field == *f),
            "{path} {body}: field {field}, expected one of {fields:?}"
        );
    }
    // One bad item refuses the batch, and names the item.
    let mut items: Vec<Value> = (0..5)
        .map(|i| json!({"type": "track", "userId": "u", "event": "E", "messageId": format!("b-{i}")}))
        .collect();
    items[3].as_object_mut().unwrap().remove("event");
    let resp = post_tracking(
        addr,
        "/v1/batch",
        &headers,
        json!({"batch": items}).to_string().as_bytes(),
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.code(), "invalid_call");
    assert_eq!(resp.json()["error"]["field"], "batch[3].event");
    let mut items2 = items.clone();
    items2[1] = json!({"type": "alias", "userId": "u", "messageId": "b-1"});
    let resp = post_tracking(
        addr,
        "/v1/batch",
        &headers,
        json!({"batch": items2}).to_string().as_bytes(),
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.json()["error"]["field"], "batch[1].previousId");
    assert_eq!(count_events(addr), 0, "a refused request writes nothing");

    // Fixed, the batch passes whole; so do calls right at the limits and
    // one with only an anonymousId.
    items[3]["event"] = json!("E");
    let results = track_ok(addr, "/v1/batch", &json!({"batch": items}));
    assert!(
        results.iter().all(|r| r["status"] == "stored"),
        "nothing of the refused batch had been kept: {results:?}"
    );
    track_ok(
        addr,
        "/v1/page",
        &json!({"userId": "u", "messageId": "m".repeat(100)}),
    );
    track_ok(
        addr,
        "/v1/track",
        &json!({"userId": "u", "event": "E", "timestamp": rfc3339(now + 23 * HOUR)}),
    );
    track_ok(addr, "/v1/identify", &json!({"anonymousId": "only-anon"}));
    assert_eq!(count_events(addr), 8);
}

/// A track call serialised to exactly `len` bytes.
fn call_of_len(id: &str, len: usize) -> Vec<u8> {
    let bare = json!({"type": "track", "userId": "u", "event": "Big", "messageId": id,
                      "properties": {"pad": ""}})
    .to_string();
    assert!(bare.len() <= len);
    let body = json!({"type": "track", "userId": "u", "event": "Big", "messageId": id,
                      "properties": {"pad": "x".repeat(len - bare.len())}})
    .to_string();
    assert_eq!(body.len(), len);
    body.into_bytes()
}

/// `{"batch":[...]}` of `items` calls of about equal size, the whole body
/// exactly `len` bytes.
fn batch_of_len(prefix: &str, items: usize, len: usize) -> Vec<u8> {
    let (open, close) = (&b"{\"batch\":["[..], &b"]}"[..]);
    let payload = len - open.len() - (items - 1) - close.len();
    let parts: Vec<Vec<u8>> = (0..items)
        .map(|i| {
            let extra = if i + 1 == items { payload % items } else { 0 };
            call_of_len(&format!("{prefix}-{i}"), payload / items + extra)
        })
        .collect();
    let mut body = open.to_vec();
    body.extend(parts.join(&b","[..]));
    body.extend_from_slice(close);
    assert_eq!(body.len(), len);
    body
}

#[test]
fn oversize_calls_and_batches_are_refused_with_413() {
    let d = Daemon::start(&config(""));
    let addr = d.addr;
    let auth = web_auth();
    let headers = [("Authorization", auth.as_str())];
    let status = |path: &str, body: &[u8]| {
        let resp = post_tracking(addr, path, &headers, body);
        (resp.status, resp.text())
    };
    let gz_headers = [
        ("Authorization", auth.as_str()),
        ("Content-Encoding", "gzip"),
    ];

    // A call: 32 KB passes, a byte more does not, alone or in a batch.
    let (s, t) = status("/v1/track", &call_of_len("call-max", 32 * 1024));
    assert_eq!(s, 200, "{t}");
    let (s, t) = status("/v1/track", &call_of_len("call-over", 32 * 1024 + 1));
    assert_eq!(s, 413, "{t}");
    let mut in_batch = b"{\"batch\":[".to_vec();
    in_batch.extend(call_of_len("in-batch-over", 32 * 1024 + 1));
    in_batch.extend_from_slice(b"]}");
    let (s, t) = status("/v1/batch", &in_batch);
    assert_eq!(s, 413, "an oversize call inside a batch: {t}");

    // A batch: 500 KB passes, a byte more does not (items of ~25 KB).
    let (s, t) = status("/v1/batch", &batch_of_len("batch-max", 20, 512_000));
    assert_eq!(s, 200, "{t}");
    let (s, t) = status("/v1/batch", &batch_of_len("batch-over", 20, 512_001));
    assert_eq!(s, 413, "{t}");

    // 2,500 calls pass, 2,501 do not.
    let items = |prefix: &str, n: usize| {
        let list: Vec<Value> = (0..n)
            .map(|i| json!({"type": "track", "userId": "u", "event": "Many", "messageId": format!("{prefix}-{i}")}))
            .collect();
        json!({"batch": list}).to_string().into_bytes()
    };
    let (s, t) = status("/v1/batch", &items("many-over", 2501));
    assert_eq!(s, 413, "{t}");
    let (s, t) = status("/v1/batch", &items("many-max", 2500));
    assert_eq!(s, 200, "{t}");

    // The limits hold for what a gzip body inflates to, not its wire size.
    let small_on_the_wire = gzip(&batch_of_len("gz-over", 20, 512_001));
    assert!(small_on_the_wire.len() < 64 * 1024);
    let resp = post_tracking(addr, "/v1/batch", &gz_headers, &small_on_the_wire);
    assert_eq!(resp.status, 413, "{}", resp.text());
    let resp = post_tracking(
        addr,
        "/v1/track",
        &gz_headers,
        &gzip(&call_of_len("gz-call-over", 32 * 1024 + 1)),
    );
    assert_eq!(resp.status, 413, "{}", resp.text());

    let stored: HashSet<String> = list_all(addr, "", &[]).iter().map(message_id).collect();
    assert_eq!(stored.len(), 1 + 20 + 2500);
    assert!(stored.contains("call-max") && stored.contains("batch-max-19"));
    assert!(
        stored.iter().all(|id| !id.contains("over")),
        "nothing of a refused request was written"
    );
}

#[test]
fn gzip_bodies_are_accepted_on_every_route() {
    let d = Daemon::start(&config(""));
    let addr = d.addr;
    let auth = web_auth();
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Encoding", "gzip"),
    ];
    let batch = json!({"batch": [
        {"type": "identify", "userId": "gz-u", "traits": {"name": "Zip"}, "messageId": "gz-1"},
        {"type": "track", "userId": "gz-u", "event": "Compressed", "messageId": "gz-2",
         "properties": {"text": "ünïcödé"}},
    ]});
    let resp = post_tracking(
        addr,
        "/v1/batch",
        &headers,
        &gzip(batch.to_string().as_bytes()),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let single = json!({"userId": "gz-u", "name": "Home", "messageId": "gz-3"});
    let resp = post_tracking(
        addr,
        "/v1/page",
        &headers,
        &gzip(single.to_string().as_bytes()),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let results = resp.json()["results"].clone();
    assert_eq!(results[0]["messageId"], "gz-3");
    assert_eq!(results[0]["status"], "stored");

    let stored = by_message_id(&list_all(addr, "", &[]));
    assert_eq!(stored.len(), 3);
    assert_eq!(stored["gz-2"][0]["data"]["properties"]["text"], "ünïcödé");
    assert_eq!(
        get_with(addr, "/v1/users/gz-u", &[])["traits"],
        json!({"name": "Zip"})
    );
}

#[test]
fn batch_context_merges_into_items_and_sent_at_corrects_client_skew() {
    let d = Daemon::start(&config(""));
    let addr = d.addr;
    // A client whose clock runs 10 minutes fast: it says the call happened
    // 2 s before it sent it, which is all the server can trust.
    let skew = 10 * 60 * 1000;
    let original = now_ms() + skew - 2000;
    let sent = original + 2000;
    let batch = json!({
        "batch": [
            {"type": "track", "userId": "ctx-u", "event": "Own Context", "messageId": "ctx-1",
             "timestamp": rfc3339(original),
             "context": {"ip": "203.0.113.7", "locale": "de-DE"}},
            {"type": "page", "userId": "ctx-u", "messageId": "ctx-2",
             "timestamp": rfc3339(original - 60_000)},
            // An item's own sentAt wins over the batch's, and
            // originalTimestamp over timestamp.
            {"type": "screen", "userId": "ctx-u", "messageId": "ctx-3",
             "originalTimestamp": rfc3339(original - 5000),
             "timestamp": rfc3339(original - 999_999),
             "sentAt": rfc3339(original + 1000)},
            {"type": "identify", "userId": "ctx-u", "messageId": "ctx-4",
             "integrations": {"Mixpanel": true}},
        ],
        "context": {"ip": "198.51.100.1", "library": {"name": "custom", "version": "1"}},
        "integrations": {"All": false},
        "sentAt": rfc3339(sent),
    });
    track_ok(addr, "/v1/batch", &batch);
    let stored = by_message_id(&list_all(addr, "", &[]));
    let data = |id: &str| stored[id][0]["data"].clone();

    let one = data("ctx-1");
    assert_eq!(
        one["context"]["ip"], "203.0.113.7",
        "the item's own key wins"
    );
    assert_eq!(one["context"]["locale"], "de-DE");
    assert_eq!(one["context"]["library"]["name"], "custom", "merged in");
    assert_eq!(one["integrations"], json!({"All": false}));
    let two = data("ctx-2");
    assert_eq!(two["context"]["ip"], "198.51.100.1");
    assert_eq!(two["context"]["library"]["version"], "1");
    let four = data("ctx-4");
    assert_eq!(four["integrations"]["Mixpanel"], true);
    assert_eq!(four["integrations"]["All"], false);

    let received = ms_of(&one["receivedAt"]);
    assert_eq!(ms_of(&one["originalTimestamp"]), original);
    assert_eq!(ms_of(&one["sentAt"]), sent, "the batch's sentAt applies");
    assert_eq!(ms_of(&one["timestamp"]), received - 2000);
    assert_eq!(ms_of(&stored["ctx-1"][0]["occurred_at"]), received - 2000);
    assert_eq!(ms_of(&two["timestamp"]), ms_of(&two["receivedAt"]) - 62_000);
    let three = data("ctx-3");
    assert_eq!(ms_of(&three["originalTimestamp"]), original - 5000);
    assert_eq!(ms_of(&three["sentAt"]), original + 1000);
    assert_eq!(
        ms_of(&three["timestamp"]),
        ms_of(&three["receivedAt"]) - 6000
    );
    // Without any time the call happened when it arrived.
    assert_eq!(ms_of(&four["timestamp"]), ms_of(&four["receivedAt"]));

    // Without sentAt the client's time stands as given.
    let given = now_ms() - 3 * DAY + 123;
    track_ok(
        addr,
        "/v1/track",
        &json!({"userId": "ctx-u", "event": "No Sent At", "messageId": "ctx-5",
                "timestamp": rfc3339(given)}),
    );
    let five = by_message_id(&list_all(addr, "", &[]))["ctx-5"][0].clone();
    assert_eq!(ms_of(&five["data"]["timestamp"]), given);
    assert_eq!(ms_of(&five["data"]["originalTimestamp"]), given);
    assert_eq!(ms_of(&five["occurred_at"]), given);
}

#[test]
fn message_ids_deduplicate_per_source_answering_the_original_seq() {
    let d = Daemon::start(&config(""));
    let addr = d.addr;
    let call = json!({"userId": "dup-u", "event": "Paid", "messageId": "dup-1",
                      "properties": {"amount": 10}});
    let first = track_ok(addr, "/v1/track", &call);
    assert_eq!(first[0]["status"], "stored");
    let seq = first[0]["seq"].as_u64().expect("a seq");

    // A resend, even with other content, and the same id inside a batch.
    let changed = json!({"userId": "dup-u", "event": "Paid", "messageId": "dup-1",
                         "properties": {"amount": 99}});
    let again = track_ok(addr, "/v1/track", &changed);
    assert_eq!(
        again[0],
        json!({"messageId": "dup-1", "seq": seq, "status": "duplicate"})
    );
    let batch = json!({"batch": [
        {"type": "track", "userId": "dup-u", "event": "Paid", "messageId": "dup-2"},
        {"type": "track", "userId": "dup-u", "event": "Paid", "messageId": "dup-1"},
        {"type": "track", "userId": "dup-u", "event": "Paid", "messageId": "dup-2"},
    ]});
    let results = track_ok(addr, "/v1/batch", &batch);
    assert_eq!(results[0]["status"], "stored");
    assert_eq!(
        results[1],
        json!({"messageId": "dup-1", "seq": seq, "status": "duplicate"})
    );
    assert_eq!(
        results[2]["status"], "duplicate",
        "a repeat within one batch"
    );
    assert_eq!(results[2]["seq"], results[0]["seq"]);

    // Another source's dup-1 is a different call.
    let resp = post_tracking(
        addr,
        "/v1/track",
        &[("Authorization", &format!("Bearer {APP_KEY}"))],
        call.to_string().as_bytes(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["results"][0]["status"], "stored");

    let all = list_all(addr, "", &[]);
    assert_eq!(all.len(), 3, "{all:#?}");
    let web: Vec<&Value> = all
        .iter()
        .filter(|e| e["data"]["source"] == "web")
        .collect();
    assert_eq!(web.len(), 2);
    let original = web
        .iter()
        .find(|e| e["data"]["messageId"] == "dup-1")
        .unwrap();
    assert_eq!(original["seq"], seq);
    assert_eq!(
        original["data"]["properties"]["amount"], 10,
        "the first copy stays"
    );
    assert_eq!(get_with(addr, "/v1/users/dup-u", &[])["event_count"], 3);
}

#[test]
fn a_message_id_past_the_dedup_window_is_a_new_call() {
    let d = Daemon::start(&config("[tracking]\ndedup_window = \"300ms\"\n"));
    let addr = d.addr;
    let call = json!({"userId": "win-u", "event": "Pinged", "messageId": "win-1"});
    let first = track_ok(addr, "/v1/track", &call);
    assert_eq!(first[0]["status"], "stored");
    let stored = list_all(addr, "", &[]);
    // Past the window by the daemon's own record of receipt; the clock is
    // waited out, not guessed.
    let expires = ms_of(&stored[0]["received_at"]) + 300;
    assert!(wait_until(deadline(Duration::from_secs(10)), || now_ms() > expires));
    let again = track_ok(addr, "/v1/track", &call);
    assert_eq!(again[0]["status"], "stored", "{again:?}");
    assert_ne!(again[0]["seq"], first[0]["seq"]);
    let copies = by_message_id(&list_all(addr, "", &[]))["win-1"].len();
    assert_eq!(copies, 2);
}

#[test]
fn tracked_calls_are_listed_by_their_event_name() {
    let d = Daemon::start(&config(""));
    let addr = d.addr;
    track_ok(
        addr,
        "/v1/track",
        &json!({"userId": "name-u", "event": "Signed Up", "messageId": "name-1"}),
    );
    track_ok(
        addr,
        "/v1/page",
        &json!({"userId": "name-u", "messageId": "name-2"}),
    );
    // Segment event names are free text; "Signed Up" is the documented example.
    let resp = get(addr, "/v1/events?type=Signed%20Up");
    assert_eq!(
        resp.status,
        200,
        "GET /v1/events?type=Signed%20Up: {}",
        resp.text()
    );
    let events = resp.json()["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["data"]["messageId"], "name-1");
}

#[test]
fn a_full_write_queue_answers_429_with_retry_after_and_writes_nothing() {
    let d = Daemon::start(&config(
        "[storage]\nqueue_capacity = 1\nmax_commit_batch = 1\n",
    ));
    let addr = d.addr;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut overloaded = 0;
    // Whether a burst overflows a one-slot queue is down to scheduling, so
    // bursts repeat until one does; heavy batches keep the writer busy.
    for burst in 0..30 {
        const THREADS: usize = 24;
        let start = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (start, acked) = (start.clone(), acked.clone());
                std::thread::spawn(move || {
                    let prefix = format!("busy-{burst}-{t}");
                    let body = batch_of_len(&prefix, 40, 400_000);
                    let auth = web_auth();
                    start.wait();
                    let resp = post_tracking(addr, "/v1/batch", &[("Authorization", &auth)], &body);
                    match resp.status {
                        200 => {
                            acked.lock().unwrap().push(prefix);
                            false
                        }
                        429 => {
                            let retry: u64 = resp
                                .header("retry-after")
                                .expect("429 carries Retry-After")
                                .parse()
                                .expect("Retry-After in seconds");
                            assert!(retry >= 1);
                            true
                        }
                        other => panic!("unexpected {other}: {}", resp.text()),
                    }
                })
            })
            .collect();
        for t in threads {
            overloaded += usize::from(t.join().expect("poster thread"));
        }
        if overloaded > 0 {
            break;
        }
    }
    assert!(overloaded > 0, "30 bursts never filled a one-slot queue");
    let acked = acked.lock().unwrap().clone();
    let stored: BTreeSet<String> = list_all(addr, "", &[])
        .iter()
        .map(|e| message_id(e).rsplit_once('-').unwrap().0.to_owned())
        .collect();
    assert_eq!(
        stored,
        acked.into_iter().collect(),
        "only the answered batches were written"
    );
}

// ---------------------------------------------------------------------------
// 3. Funnels, attribution and counts against an independent computation

/// splitmix64: a fixed seed gives the same data set on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

type Campaign = (String, String, String);

/// One generated call, as the test understands it.
#[derive(Debug, Clone)]
struct Sent {
    kind: &'static str,
    event: Option<String>,
    user: Option<String>,
    anon: Option<String>,
    previous: Option<String>,
    ts: i64,
    campaign: Option<Campaign>,
}

impl Sent {
    fn new(kind: &'static str, user: Option<&str>, anon: Option<&str>, ts: i64) -> Sent {
        Sent {
            kind,
            event: None,
            user: user.map(str::to_owned),
            anon: anon.map(str::to_owned),
            previous: None,
            ts,
            campaign: None,
        }
    }

    fn track(event: &str, user: Option<&str>, anon: Option<&str>, ts: i64) -> Sent {
        Sent {
            event: Some(event.to_owned()),
            ..Sent::new("track", user, anon, ts)
        }
    }

    fn alias(previous: &str, user: &str, ts: i64) -> Sent {
        Sent {
            previous: Some(previous.to_owned()),
            ..Sent::new("alias", Some(user), None, ts)
        }
    }

    fn with_campaign(mut self, c: &Campaign) -> Sent {
        self.campaign = Some(c.clone());
        self
    }

    fn event_type(&self) -> &str {
        self.event.as_deref().unwrap_or(self.kind)
    }

    fn to_json(&self, message_id: &str) -> Value {
        let mut m =
            json!({"type": self.kind, "messageId": message_id, "timestamp": rfc3339(self.ts)});
        if let Some(u) = &self.user {
            m["userId"] = json!(u);
        }
        if let Some(a) = &self.anon {
            m["anonymousId"] = json!(a);
        }
        if let Some(p) = &self.previous {
            m["previousId"] = json!(p);
        }
        if let Some(e) = &self.event {
            m["event"] = json!(e);
        }
        if self.kind == "identify" {
            m["traits"] = json!({"seen": self.ts});
        }
        if let Some((source, medium, name)) = &self.campaign {
            m["context"] = json!({"campaign": {"source": source, "medium": medium, "name": name}});
        }
        m
    }
}

/// Who a call belongs to: a userId, with anonymous ids tied to one by a
/// call carrying both or by alias; an id never tied stays its own person.
struct People {
    links: HashMap<String, String>,
}

impl People {
    fn new(calls: &[Sent]) -> People {
        // Every generated id is tied to at most one user, so the order in
        // which the ties were made cannot matter.
        let mut links = HashMap::new();
        for c in calls {
            let other = match c.kind {
                "alias" => c.previous.as_ref(),
                _ => c.anon.as_ref(),
            };
            if let (Some(user), Some(other)) = (&c.user, other) {
                let before = links.insert(other.clone(), user.clone());
                assert!(
                    before.is_none_or(|b| b == *user),
                    "the generator tied {other} to two users"
                );
            }
        }
        People { links }
    }

    fn of(&self, c: &Sent) -> String {
        match (&c.user, &c.anon) {
            (Some(u), _) => format!("u:{}", self.links.get(u).unwrap_or(u)),
            (None, Some(a)) => match self.links.get(a) {
                Some(u) => format!("u:{u}"),
                None => format!("a:{a}"),
            },
            (None, None) => unreachable!("every generated call names someone"),
        }
    }
}

fn expected_funnel(
    calls: &[Sent],
    people: &People,
    steps: &[&str],
    within: i64,
    since: i64,
    until: i64,
) -> Vec<u64> {
    let person: Vec<String> = calls.iter().map(|c| people.of(c)).collect();
    // person → (entered step 1, entered the latest step)
    let mut current: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (c, p) in calls.iter().zip(&person) {
        if c.event_type() == steps[0] && since <= c.ts && c.ts < until {
            let entry = current.entry(p.clone()).or_insert((c.ts, c.ts));
            if c.ts < entry.0 {
                *entry = (c.ts, c.ts);
            }
        }
    }
    let mut counts = vec![current.len() as u64];
    for step in &steps[1..] {
        let mut next = BTreeMap::new();
        for (p, (start, previous)) in &current {
            let entered = calls
                .iter()
                .zip(&person)
                .filter(|(c, q)| {
                    *q == p
                        && c.event_type() == *step
                        && c.ts >= *previous
                        && c.ts <= start + within
                })
                .map(|(c, _)| c.ts)
                .min();
            if let Some(t) = entered {
                next.insert(p.clone(), (*start, t));
            }
        }
        counts.push(next.len() as u64);
        current = next;
    }
    counts
}

fn expected_attribution(
    calls: &[Sent],
    people: &People,
    event: &str,
    first_touch: bool,
    since: i64,
    until: i64,
) -> (u64, BTreeMap<Option<Campaign>, u64>) {
    let mut total = 0;
    let mut by: BTreeMap<Option<Campaign>, u64> = BTreeMap::new();
    for conversion in calls
        .iter()
        .filter(|c| c.event_type() == event && since <= c.ts && c.ts < until)
    {
        total += 1;
        let who = people.of(conversion);
        let touches = calls
            .iter()
            .filter(|c| c.campaign.is_some() && c.ts <= conversion.ts && people.of(c) == who);
        let chosen = if first_touch {
            touches.min_by_key(|c| c.ts)
        } else {
            touches.max_by_key(|c| c.ts)
        };
        *by.entry(chosen.and_then(|c| c.campaign.clone()))
            .or_default() += 1;
    }
    (total, by)
}

fn expected_counts(
    calls: &[Sent],
    event: &str,
    bucket: i64,
    since: i64,
    until: i64,
) -> BTreeMap<i64, u64> {
    let mut out = BTreeMap::new();
    for c in calls
        .iter()
        .filter(|c| c.event_type() == event && since <= c.ts && c.ts < until)
    {
        *out.entry(c.ts.div_euclid(bucket) * bucket).or_default() += 1;
    }
    out
}

/// A Monday, long enough ago that no timestamp is in the future.
const BASE: i64 = 1_740_960_000_000; // 2025-03-03T00:00:00Z
const SINCE: i64 = BASE + 3 * DAY;
const UNTIL: i64 = BASE + 14 * DAY;
const WITHIN: i64 = 3 * DAY;
const STEPS: [&str; 3] = ["Signed Up", "Activated", "Subscribed"];

/// A few hundred people, some anonymous for good, some tied to a user by
/// identify, by alias or by a track call carrying both ids; campaign touches
/// on page calls (and on some sign-ups); plus hand-made people on every
/// boundary of the funnel window and of attribution.
fn generate() -> Vec<Sent> {
    let campaigns: Vec<Campaign> = [
        ("google", "cpc", "spring-sale"),
        ("newsletter", "email", "weekly-42"),
        ("twitter", "social", "launch"),
        ("partner", "referral", "acme"),
        ("google", "organic", "brand"),
    ]
    .iter()
    .map(|(s, m, n)| (s.to_string(), m.to_string(), n.to_string()))
    .collect();
    let mut calls = Vec::new();

    // Hand-made edges: (since, until, within) = (SINCE, UNTIL, WITHIN).
    calls.extend([
        // Enters at exactly `since`; step 2 at exactly start + within; step 3 a ms late.
        Sent::track("Signed Up", Some("edge-a"), None, SINCE),
        Sent::track("Activated", Some("edge-a"), None, SINCE + WITHIN),
        Sent::track("Subscribed", Some("edge-a"), None, SINCE + WITHIN + 1),
        // Outside [since, until) on both sides: never enters.
        Sent::track("Signed Up", Some("edge-b"), None, SINCE - 1),
        Sent::track("Signed Up", Some("edge-b"), None, UNTIL),
        Sent::track("Activated", Some("edge-b"), None, UNTIL + 1),
        // Its first sign-up in range counts; an earlier step 2 does not.
        Sent::track("Signed Up", Some("edge-c"), None, SINCE - 1),
        Sent::track("Signed Up", Some("edge-c"), None, SINCE + 5 * HOUR),
        Sent::track("Activated", Some("edge-c"), None, SINCE + HOUR),
        Sent::track("Activated", Some("edge-c"), None, SINCE + 6 * HOUR),
        Sent::track("Subscribed", Some("edge-c"), None, SINCE + 6 * HOUR),
        Sent::track("Signed Up", Some("edge-c"), None, SINCE + 7 * HOUR),
        // Signs up anonymously, then alias ties the anonymous id to the user.
        Sent::track("Signed Up", None, Some("edge-d-anon"), SINCE + DAY),
        Sent::alias("edge-d-anon", "edge-d", BASE + 19 * DAY),
        Sent::track("Activated", Some("edge-d"), None, SINCE + DAY + HOUR),
        Sent::track(
            "Subscribed",
            None,
            Some("edge-d-anon"),
            SINCE + DAY + 2 * HOUR,
        ),
        // Enters a ms before `until`; later steps after `until` but in the window.
        Sent::track("Signed Up", Some("edge-e"), None, UNTIL - 1),
        Sent::track("Activated", Some("edge-e"), None, UNTIL + WITHIN - 2),
        Sent::track("Subscribed", Some("edge-e"), None, UNTIL + WITHIN - 1),
        // A touch at the very ms of the conversion counts, one a ms later not.
        Sent::new("page", Some("edge-f"), None, SINCE + 2 * DAY).with_campaign(&campaigns[3]),
        Sent::track("Subscribed", Some("edge-f"), None, SINCE + 2 * DAY),
        Sent::new("page", Some("edge-f"), None, SINCE + 2 * DAY + 1).with_campaign(&campaigns[2]),
        // A touch long before `since`, anonymous, tied by identify.
        Sent::new("page", None, Some("edge-g-anon"), SINCE - 5 * DAY).with_campaign(&campaigns[1]),
        Sent::new(
            "identify",
            Some("edge-g"),
            Some("edge-g-anon"),
            SINCE - 4 * DAY,
        ),
        Sent::track("Subscribed", Some("edge-g"), None, SINCE + 3 * DAY),
        Sent::new("page", Some("edge-g"), None, SINCE + 2 * DAY).with_campaign(&campaigns[0]),
        // Converts with no touch at all, and with only a later one.
        Sent::track("Subscribed", Some("edge-h"), None, SINCE + 4 * DAY),
        Sent::track("Subscribed", Some("edge-i"), None, SINCE + 4 * DAY),
        Sent::new("page", Some("edge-i"), None, SINCE + 4 * DAY + 1).with_campaign(&campaigns[0]),
    ]);

    let mut rng = Rng(0x5EED_F00D_4E4A_1D00);
    for i in 0..300 {
        let user = format!("user-{i}");
        let anon = format!("anon-{i}");
        let second_anon = format!("anon-{i}-b");
        let kind = rng.below(100);
        let (has_user, has_anon) = match kind {
            0..60 => (true, true),
            60..85 => (false, true),
            _ => (true, false),
        };
        // Activity clusters around a moment so that windows matter.
        let anchor = BASE + rng.below(20 * DAY as u64) as i64;
        let when = |rng: &mut Rng| anchor - 2 * DAY + rng.below(8 * DAY as u64) as i64;
        if kind < 40 {
            calls.push(Sent::new(
                "identify",
                Some(&user),
                Some(&anon),
                when(&mut rng),
            ));
        } else if kind < 60 {
            calls.push(Sent::alias(&anon, &user, when(&mut rng)));
        }
        let tied_second = has_user && rng.percent(30);
        if tied_second {
            calls.push(Sent::track(
                "Clicked",
                Some(&user),
                Some(&second_anon),
                when(&mut rng),
            ));
        }
        let mut ids: Vec<(Option<&str>, Option<&str>)> = Vec::new();
        if has_user {
            ids.push((Some(&user), None));
        }
        if has_anon {
            ids.push((None, Some(&anon)));
        }
        if tied_second {
            ids.push((None, Some(&second_anon)));
        }
        for (event, max) in [("Signed Up", 2), ("Activated", 3), ("Subscribed", 2)] {
            for _ in 0..rng.below(max + 1) {
                let (u, a) = *rng.pick(&ids);
                let mut c = Sent::track(event, u, a, when(&mut rng));
                if event == "Signed Up" && rng.percent(10) {
                    c = c.with_campaign(rng.pick(&campaigns));
                }
                calls.push(c);
            }
        }
        for _ in 0..rng.below(4) {
            let (u, a) = *rng.pick(&ids);
            let c = Sent::new("page", u, a, when(&mut rng)).with_campaign(rng.pick(&campaigns));
            calls.push(c);
        }
        for _ in 0..rng.below(3) {
            let (u, a) = *rng.pick(&ids);
            calls.push(Sent::new("page", u, a, when(&mut rng)));
        }
    }

    // Two touches of one person at the same ms would make first and last
    // touch a matter of tie-breaking, which the contract leaves open.
    let mut touch_times = HashSet::new();
    for c in calls.iter_mut().filter(|c| c.campaign.is_some()) {
        while !touch_times.insert(c.ts) {
            c.ts += 1;
        }
    }
    // Shuffled, so that log order says nothing about time or person.
    for i in (1..calls.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        calls.swap(i, j);
    }
    calls
}

fn campaign_key(v: &Value) -> Option<Campaign> {
    if v.is_null() {
        return None;
    }
    let s = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k} in {v}"))
            .to_owned()
    };
    Some((s("source"), s("medium"), s("name")))
}

#[test]
fn funnels_attribution_and_counts_match_an_independent_computation() {
    let d = Daemon::start(&config(""));
    let addr = d.addr;
    let calls = generate();
    assert!(calls.len() > 1000, "{} calls", calls.len());
    const BATCH: usize = 250;
    for (n, chunk) in calls.chunks(BATCH).enumerate() {
        let items: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, c)| c.to_json(&format!("gen-{}", n * BATCH + i)))
            .collect();
        let results = track_ok(addr, "/v1/batch", &json!({"batch": items}));
        assert_eq!(results.len(), chunk.len());
        assert!(
            results.iter().all(|r| r["status"] == "stored"),
            "{results:?}"
        );
    }
    let people = People::new(&calls);

    let range = |since: i64, until: i64| {
        format!(
            "since={}&until={}",
            enc(&rfc3339(since)),
            enc(&rfc3339(until))
        )
    };
    let funnels: Vec<(Vec<&str>, &str, i64, i64, i64)> = vec![
        (STEPS.to_vec(), "3d", WITHIN, SINCE, UNTIL),
        (STEPS.to_vec(), "14d", 14 * DAY, SINCE, UNTIL),
        (STEPS.to_vec(), "12h", 12 * HOUR, BASE, BASE + 20 * DAY),
        (
            vec!["Activated", "Subscribed"],
            "2d",
            2 * DAY,
            BASE + 2 * DAY + 7 * HOUR + 13 * 60_000,
            BASE + 11 * DAY + 5 * HOUR,
        ),
        (
            vec!["page", "Signed Up", "Subscribed"],
            "5d",
            5 * DAY,
            SINCE,
            UNTIL,
        ),
    ];
    let mut nonzero_last_steps = 0;
    for (steps, within_text, within, since, until) in &funnels {
        let path = format!(
            "/v1/funnels?steps={}&within={within_text}&{}",
            enc(&steps.join(",")),
            range(*since, *until)
        );
        let answer = get_with(addr, &path, &[]);
        let want = expected_funnel(&calls, &people, steps, *within, *since, *until);
        let got_steps = answer["steps"].as_array().expect("steps");
        let got: Vec<u64> = got_steps
            .iter()
            .map(|s| s["count"].as_u64().unwrap())
            .collect();
        assert_eq!(got, want, "{path}: {answer}");
        nonzero_last_steps += usize::from(*want.last().unwrap() > 0);
        for (i, s) in got_steps.iter().enumerate() {
            assert_eq!(s["event"], steps[i], "{path}");
            let rate = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
            let previous = if i == 0 { want[0] } else { want[i - 1] };
            assert_eq!(
                s["conversion_from_previous"].as_f64(),
                Some(rate(want[i], previous)),
                "{path}: {s}"
            );
            assert_eq!(
                s["conversion_from_first"].as_f64(),
                Some(rate(want[i], want[0])),
                "{path}: {s}"
            );
        }
    }
    assert!(
        nonzero_last_steps >= 3,
        "the data set exercises whole funnels"
    );

    for (event, since, until) in [
        ("Subscribed", SINCE, UNTIL),
        ("Subscribed", BASE, BASE + 21 * DAY),
        ("Signed Up", SINCE, UNTIL),
    ] {
        for (model, first) in [("first_touch", true), ("last_touch", false)] {
            let path = format!(
                "/v1/attribution?event={}&model={model}&{}",
                enc(event),
                range(since, until)
            );
            let answer = get_with(addr, &path, &[]);
            let (total, want) = expected_attribution(&calls, &people, event, first, since, until);
            assert_eq!(answer["conversions"], total, "{path}: {answer}");
            let mut got = BTreeMap::new();
            for row in answer["by_campaign"].as_array().expect("by_campaign") {
                let before = got.insert(
                    campaign_key(&row["campaign"]),
                    row["conversions"].as_u64().unwrap(),
                );
                assert!(
                    before.is_none(),
                    "{path}: a campaign listed twice: {answer}"
                );
            }
            assert_eq!(got, want, "{path}: {answer}");
            assert!(
                want.len() >= 4,
                "{path}: several campaigns and none: {want:?}"
            );
        }
    }

    for (event, interval, bucket, since, until) in [
        ("Signed Up", "day", DAY, BASE - 3 * DAY, BASE + 25 * DAY),
        ("Subscribed", "day", DAY, SINCE, UNTIL),
        ("page", "day", DAY, BASE, BASE + 21 * DAY),
        ("Activated", "hour", HOUR, SINCE, SINCE + 2 * DAY),
    ] {
        let path = format!(
            "/v1/stats/events?event={}&interval={interval}&{}",
            enc(event),
            range(since, until)
        );
        let answer = get_with(addr, &path, &[]);
        let want = expected_counts(&calls, event, bucket, since, until);
        let mut got = BTreeMap::new();
        for b in answer["series"].as_array().expect("series") {
            let start = ms_of(&b["start"]);
            assert_eq!(
                start.rem_euclid(bucket),
                0,
                "{path}: {b} is not on a UTC {interval}"
            );
            assert!(
                since <= start && start < until,
                "{path}: {b} is out of range"
            );
            let count = b["count"].as_u64().unwrap();
            if count > 0 {
                got.insert(start, count);
            }
        }
        assert_eq!(got, want, "{path}: {answer}");
        assert_eq!(answer["total"], want.values().sum::<u64>(), "{path}");
    }

    // Every user as the same computation sees them: their calls (anonymous
    // ones included), the ids tied to them, traits, first and last seen.
    let users: BTreeSet<&str> = calls.iter().filter_map(|c| c.user.as_deref()).collect();
    assert!(users.len() > 200, "{} users", users.len());
    for user in users {
        let person = format!("u:{user}");
        let theirs: Vec<(usize, &Sent)> = calls
            .iter()
            .enumerate()
            .filter(|(_, c)| people.of(c) == person)
            .collect();
        let profile = get_with(addr, &format!("/v1/users/{}", enc(user)), &[]);
        assert_eq!(profile["event_count"], theirs.len(), "{profile}");
        let first = theirs.iter().map(|(_, c)| c.ts).min().unwrap();
        let last = theirs.iter().map(|(_, c)| c.ts).max().unwrap();
        assert_eq!(ms_of(&profile["first_seen"]), first, "{profile}");
        assert_eq!(ms_of(&profile["last_seen"]), last, "{profile}");
        let linked: BTreeSet<&str> = profile["linked_ids"]
            .as_array()
            .expect("linked_ids")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let want_linked: BTreeSet<&str> = people
            .links
            .iter()
            .filter(|(_, u)| *u == user)
            .map(|(other, _)| other.as_str())
            .collect();
        assert_eq!(linked, want_linked, "{profile}");
        let traits = match theirs.iter().find(|(_, c)| c.kind == "identify") {
            Some((_, c)) => json!({"seen": c.ts}),
            None => json!({}),
        };
        assert_eq!(profile["traits"], traits, "{profile}");
        let history: BTreeSet<String> = user_events(addr, user, 4).iter().map(message_id).collect();
        let want_history: BTreeSet<String> =
            theirs.iter().map(|(k, _)| format!("gen-{k}")).collect();
        assert_eq!(history, want_history, "the history of {user}");
    }
}

// ---------------------------------------------------------------------------
// 4. kill -9 during batched ingestion

const LOAD_THREADS: usize = 4;
const LOAD_BATCH: usize = 25;

/// The body of batch `b` of thread `t`, the same bytes every time it is built.
fn load_batch(t: usize, b: usize) -> Vec<u8> {
    let items: Vec<Value> = (0..LOAD_BATCH)
        .map(|i| {
            json!({"type": "track", "userId": format!("load-{t}"), "event": "Bulk Ingested",
                   "messageId": format!("load-{t}-{b}-{i}"), "properties": {"i": i}})
        })
        .collect();
    json!({"batch": items}).to_string().into_bytes()
}

#[derive(Default)]
struct Load {
    /// (thread, batch) → the results of its 200.
    acked: Mutex<HashMap<(usize, usize), Vec<Value>>>,
    /// Batches sent without an answer (or with a refusal under load).
    unanswered: Mutex<Vec<(usize, usize)>>,
    acked_count: AtomicUsize,
    stop: AtomicBool,
}

#[test]
fn kill9_during_batched_ingestion_keeps_every_acknowledged_batch_exactly_once() {
    let mut d = Daemon::start(&config(""));
    let addr = d.addr;
    let load = Arc::new(Load::default());
    let threads: Vec<_> = (0..LOAD_THREADS)
        .map(|t| {
            let load = load.clone();
            std::thread::spawn(move || {
                let auth = web_auth();
                for b in 0..10_000 {
                    if load.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let headers = [JSON, ("Authorization", auth.as_str())];
                    match try_request(addr, "POST", "/v1/batch", &headers, &load_batch(t, b)) {
                        Ok(resp) if resp.status == 200 => {
                            let results = resp.json()["results"].as_array().unwrap().clone();
                            load.acked.lock().unwrap().insert((t, b), results);
                            load.acked_count.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(resp) if resp.status == 429 || resp.status == 503 => {
                            load.unanswered.lock().unwrap().push((t, b));
                        }
                        Ok(resp) => panic!("batch {t}/{b}: {} {}", resp.status, resp.text()),
                        Err(_) => {
                            load.unanswered.lock().unwrap().push((t, b));
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    let busy = wait_until(deadline(Duration::from_secs(60)), || {
        load.acked_count.load(Ordering::SeqCst) >= 40
    });
    assert!(busy, "40 batches were not acknowledged in time");
    d.kill9();
    load.stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("client thread");
    }
    d.restart();
    let addr = d.addr;

    let acked = load.acked.lock().unwrap().clone();
    let unanswered = load.unanswered.lock().unwrap().clone();
    let stored = by_message_id(&list_all(addr, "", &[]));
    let sent: HashSet<String> = acked
        .keys()
        .chain(&unanswered)
        .flat_map(|(t, b)| (0..LOAD_BATCH).map(move |i| format!("load-{t}-{b}-{i}")))
        .collect();
    for (id, copies) in &stored {
        assert!(sent.contains(id), "{id} was never sent");
        assert_eq!(copies.len(), 1, "{id} stored {} times", copies.len());
    }
    for ((t, b), results) in &acked {
        for (i, r) in results.iter().enumerate() {
            let id = format!("load-{t}-{b}-{i}");
            assert_eq!(r["messageId"], id.as_str());
            let copy = stored
                .get(&id)
                .unwrap_or_else(|| panic!("{id} was acknowledged but is gone after kill -9"));
            assert_eq!(copy[0]["seq"], r["seq"], "{id}");
        }
    }

    // A client that did not hear back sends everything again.
    for (t, b) in acked.keys().chain(&unanswered) {
        let auth = web_auth();
        let resp = post_tracking(
            addr,
            "/v1/batch",
            &[("Authorization", &auth)],
            &load_batch(*t, *b),
        );
        assert_eq!(resp.status, 200, "{}", resp.text());
        for (i, r) in resp.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let id = format!("load-{t}-{b}-{i}");
            match stored.get(&id) {
                Some(copy) => {
                    assert_eq!(r["status"], "duplicate", "{id}: {r}");
                    assert_eq!(r["seq"], copy[0]["seq"], "{id}");
                }
                None => assert_eq!(r["status"], "stored", "{id}: {r}"),
            }
        }
    }
    let after = by_message_id(&list_all(addr, "", &[]));
    assert_eq!(after.len(), sent.len());
    assert!(after.values().all(|copies| copies.len() == 1));
}

// ---------------------------------------------------------------------------
// 5. Retention

#[test]
fn retention_prunes_old_calls_from_the_log_and_the_user_but_keeps_the_last() {
    let d = Daemon::start(&config(
        "[tracking]\nretention = \"1s\"\ndedup_window = \"1s\"\nprune_interval = \"200ms\"\n",
    ));
    let addr = d.addr;
    let old = json!({"batch": [
        {"type": "identify", "userId": "ret-u", "anonymousId": "ret-anon", "messageId": "old-1"},
        {"type": "page", "anonymousId": "ret-anon", "messageId": "old-2"},
        {"type": "track", "userId": "ret-u", "event": "Old Thing", "messageId": "old-3"},
        {"type": "track", "userId": "someone-else", "event": "Old Thing", "messageId": "old-4"},
    ]});
    track_ok(addr, "/v1/batch", &old);
    // The newest call is the log's last event, which retention never
    // deletes, so it stays however slow this machine is.
    track_ok(
        addr,
        "/v1/track",
        &json!({"userId": "ret-u", "event": "Recent Thing", "messageId": "recent-1"}),
    );
    let mut remaining = Vec::new();
    let pruned = wait_until(deadline(Duration::from_secs(30)), || {
        remaining = list_all(addr, "", &[]).iter().map(message_id).collect();
        remaining == ["recent-1"]
    });
    assert!(pruned, "still stored: {remaining:?}");
    let history: Vec<String> = user_events(addr, "ret-u", 100)
        .iter()
        .map(message_id)
        .collect();
    assert_eq!(history, ["recent-1"]);
    let user = get_with(addr, "/v1/users/ret-u", &[]);
    assert_eq!(user["event_count"], 1, "{user}");
    let stats = get_with(
        addr,
        &format!(
            "/v1/stats/events?event={}&since={}",
            enc("Old Thing"),
            enc(&rfc3339(now_ms() - DAY))
        ),
        &[],
    );
    assert_eq!(stats["total"], 0, "{stats}");
    let exported: Vec<String> = export(addr, "").iter().map(message_id).collect();
    assert_eq!(exported, ["recent-1"]);
}

// ---------------------------------------------------------------------------
// 6. Export

#[test]
fn export_streams_the_tracked_calls_received_in_range_as_stored() {
    let d = Daemon::start(&config(""));
    let addr = d.addr;
    // Not a tracked call: the export leaves it out.
    create(addr, &json!({"type": "invoice.paid", "data": {"n": 1}}));
    let first: Vec<Value> = (0..1500)
        .map(|i| {
            let mut item = json!({"type": "track", "userId": format!("exp-{}", i % 7),
                                  "event": "Exported", "messageId": format!("a-{i}"),
                                  "properties": {"i": i, "text": "line \"quoted\"\nnext ünï"}});
            if i % 3 == 0 {
                item["context"] = json!({"campaign": {"source": "s", "medium": "m", "name": "n"}});
            }
            item
        })
        .collect();
    track_ok(addr, "/v1/batch", &json!({"batch": first}));
    // Every call of the first batch was received before `split`, every one
    // of the second at or after it: the clock is waited out, not guessed.
    let split = now_ms() + 1;
    assert!(wait_until(deadline(Duration::from_secs(5)), || now_ms() >= split));
    let second = json!({"batch": [
        {"type": "identify", "userId": "exp-0", "traits": {"x": 1}, "messageId": "b-0"},
        {"type": "page", "anonymousId": "exp-anon", "name": "Landing", "messageId": "b-1"},
        {"type": "alias", "previousId": "exp-anon", "userId": "exp-0", "messageId": "b-2"},
    ]});
    track_ok(addr, "/v1/batch", &second);

    let stored: BTreeMap<u64, Value> = list_all(addr, "", &[])
        .into_iter()
        .filter(|e| e["type"] != "invoice.paid")
        .map(|e| (e["seq"].as_u64().unwrap(), e))
        .collect();
    assert_eq!(stored.len(), 1503);
    let check = |lines: &[Value], prefix: Option<&str>| {
        let mut seen = BTreeSet::new();
        for line in lines {
            let seq = line["seq"].as_u64().expect("seq");
            assert!(seen.insert(seq), "seq {seq} exported twice");
            assert_eq!(
                Some(line),
                stored.get(&seq),
                "the export line matches the stored call"
            );
        }
        let want: BTreeSet<u64> = stored
            .iter()
            .filter(|(_, e)| prefix.is_none_or(|p| message_id(e).starts_with(p)))
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(seen, want, "exported {prefix:?}");
    };
    // By default the last 24 hours: everything.
    check(&export(addr, ""), None);
    let since = format!("?since={}", enc(&rfc3339(split)));
    check(&export(addr, &since), Some("b-"));
    let until = format!("?until={}", enc(&rfc3339(split)));
    check(&export(addr, &until), Some("a-"));
    let window = format!(
        "?since={}&until={}",
        enc(&rfc3339(split - DAY)),
        enc(&rfc3339(split + DAY))
    );
    check(&export(addr, &window), None);
    let later = format!(
        "?since={}&until={}",
        enc(&rfc3339(split + DAY)),
        enc(&rfc3339(split + 2 * DAY))
    );
    assert!(export(addr, &later).is_empty());
    let exported = export(addr, "");
    let campaign = exported
        .iter()
        .find(|e| e["data"]["messageId"] == "a-3")
        .expect("a-3 exported");
    assert_eq!(campaign["data"]["context"]["campaign"]["source"], "s");
    assert_eq!(
        campaign["data"]["properties"]["text"],
        "line \"quoted\"\nnext ünï"
    );
}
