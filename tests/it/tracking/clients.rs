//! The official client libraries, analytics-python and rudder-sdk-python,
//! run from the test venv against the daemon: what they send is stored and
//! can be queried, and a resend stores nothing new.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use herald::clock::{format_rfc3339, now_ms};
use serde_json::{json, Value};

use super::{by_message_id, config, enc, get_with, linked_ids, ms_of, user_events, DAY, WRITE_KEY};
use crate::support::*;

/// Runs tests/segment_clients.py with `spec` (see there), failing the test
/// with the library's own complaint if it reported an error.
pub(super) fn run_client(spec: &Value) -> Value {
    let output = run_python("segment_clients.py", &[], spec.to_string().as_bytes());
    assert!(
        output.status.success(),
        "the {} client failed ({}): {}",
        spec["library"],
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the client script prints JSON")
}

/// What segment_clients.py runs: `library` sending `calls` with the web
/// source's key, batched in the background or (`sync`) a request each.
fn client_spec(library: &str, addr: SocketAddr, sync: bool, calls: &Value) -> Value {
    json!({"library": library, "host": format!("http://{addr}"),
           "write_key": WRITE_KEY, "sync": sync, "calls": calls})
}

/// Sends `spec`'s calls again, a request each, and checks that the log is
/// still `stored`.
fn assert_resend_stores_nothing(addr: SocketAddr, spec: &Value, stored: &[Value]) {
    run_client(&client_spec(
        s(&spec["library"]),
        addr,
        true,
        &spec["calls"],
    ));
    assert_eq!(
        list_all(addr, "", &[]),
        stored,
        "a resend stores no second copy"
    );
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
                   "timestamp": format_rfc3339(two_days_ago), "message_id": "seg-page-1"}),
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
    let spec = client_spec("segment", addr, false, &json!(calls));
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
            enc(&format_rfc3339(now_ms() - 3 * DAY)),
            enc(&format_rfc3339(now_ms() + DAY))
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
    assert_eq!(
        linked_ids(&user),
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

    assert_resend_stores_nothing(addr, &spec, &all);
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
    let spec = client_spec("rudder", addr, false, &json!(calls));
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

    assert_resend_stores_nothing(addr, &spec, &all);

    // rudder-sdk-python 2.x puts identify's traits in `context.traits`
    // only (never at the top level): a profile must still get them.
    assert_eq!(
        user["traits"],
        json!({"email": "grace@example.com"}),
        "traits sent by rudder-sdk-python's identify: {user}"
    );
}
