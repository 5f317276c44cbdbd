//! The ingestion surface: write-key authentication, refusals naming the
//! field, gzip bodies, batch context and clock-skew correction, and calls
//! listed by their event name.

use herald::clock::{format_rfc3339, now_ms};
use serde_json::{json, Value};

use super::{
    basic, by_message_id, config, get_with, gzip, ms_of, post_tracking, track_ok, web_auth,
    APP_KEY, DAY, HOUR, WRITE_KEY,
};
use crate::support::*;

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
            json!({"userId": "u", "event": "E", "timestamp": format_rfc3339(now + 25 * HOUR)}),
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
        &json!({"userId": "u", "event": "E", "timestamp": format_rfc3339(now + 23 * HOUR)}),
    );
    track_ok(addr, "/v1/identify", &json!({"anonymousId": "only-anon"}));
    assert_eq!(count_events(addr), 8);
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
             "timestamp": format_rfc3339(original),
             "context": {"ip": "203.0.113.7", "locale": "de-DE"}},
            {"type": "page", "userId": "ctx-u", "messageId": "ctx-2",
             "timestamp": format_rfc3339(original - 60_000)},
            // An item's own sentAt wins over the batch's, and
            // originalTimestamp over timestamp.
            {"type": "screen", "userId": "ctx-u", "messageId": "ctx-3",
             "originalTimestamp": format_rfc3339(original - 5000),
             "timestamp": format_rfc3339(original - 999_999),
             "sentAt": format_rfc3339(original + 1000)},
            {"type": "identify", "userId": "ctx-u", "messageId": "ctx-4",
             "integrations": {"Mixpanel": true}},
        ],
        "context": {"ip": "198.51.100.1", "library": {"name": "custom", "version": "1"}},
        "integrations": {"All": false},
        "sentAt": format_rfc3339(sent),
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
                "timestamp": format_rfc3339(given)}),
    );
    let five = by_message_id(&list_all(addr, "", &[]))["ctx-5"][0].clone();
    assert_eq!(ms_of(&five["data"]["timestamp"]), given);
    assert_eq!(ms_of(&five["data"]["originalTimestamp"]), given);
    assert_eq!(ms_of(&five["occurred_at"]), given);
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
