//! Retention of every kind of record and what the storage route reports:
//! with tiny retentions set, what aged out disappears (polled for) while
//! what is still needed stays.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;
use crate::webhooks::receiver::{Receiver, Reply};

/// Generous: a debug build on a loaded machine.
const SETTLE: Duration = Duration::from_secs(60);

fn storage(addr: SocketAddr) -> Value {
    let resp = get(addr, "/v1/admin/storage");
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()
}

fn table(storage: &Value, name: &str) -> Value {
    storage["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {storage}"))
        .clone()
}

#[test]
fn aged_records_are_deleted_and_what_is_still_needed_stays() {
    let healthy = Receiver::start(|_, _| Reply::status(200));
    let failing = Receiver::start(|_, _| Reply::status(500));
    let d = Daemon::start(
        r#"
[events]
retention = "2s"
[webhooks]
allow_networks = ["127.0.0.1/32"]
require_https = false
retry_schedule = ["1h"]
retention = "1s"
dead_letter_retention = "1s"
[mail]
body_retention = "1s"
[storage]
prune_interval = "100ms"
"#,
    );
    let resp = post_json(
        d.addr,
        "/v1/endpoints",
        &json!({"url": healthy.url("/"), "event_types": ["a"]}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let resp = post_json(
        d.addr,
        "/v1/endpoints",
        &json!({"url": failing.url("/"), "event_types": ["keep"]}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let batch: Vec<Value> = (0..20)
        .map(|i| json!({"type": "a", "data": {"i": i}}))
        .collect();
    let resp = post_json(d.addr, "/v1/events/batch", &json!({ "events": batch }));
    assert_eq!(resp.status, 200, "{}", resp.text());
    // Its delivery stays pending for an hour, and so the event stays.
    let kept = create(d.addr, &json!({"type": "keep"}));
    let body = "x".repeat(200_000);
    let resp = post_json(
        d.addr,
        "/v1/emails",
        &json!({"from": "a@example.com", "to": "b@example.net", "subject": "s", "text": body}),
    );
    assert_eq!(resp.status, 202, "{}", resp.text());
    let message = s(&resp.json()["messages"][0]["id"]).to_owned();
    // Its `email.sent` event comes before the last one.
    let sent = wait_until(deadline(SETTLE), || {
        get(d.addr, &format!("/v1/emails/{message}")).json()["status"] == "sent"
    });
    assert!(sent, "the message was not written to the outbox");
    // The log's last event always stays: sequence numbers resume from it.
    let last = create(d.addr, &json!({"type": "last"}));

    let mut remaining = Vec::new();
    let pruned = wait_until(deadline(SETTLE), || {
        remaining = list_all(d.addr, "", &[]);
        remaining.len() == 2
    });
    let ids: Vec<&Value> = remaining.iter().map(|e| &e["id"]).collect();
    assert!(pruned, "events left: {ids:?}");
    assert_eq!(ids, [&kept["id"], &last["id"]]);
    let gone = wait_until(deadline(SETTLE), || {
        get(d.addr, "/v1/deliveries?status=succeeded").json()["deliveries"] == json!([])
    });
    assert!(gone, "succeeded deliveries were not deleted");
    let pending = get(d.addr, "/v1/deliveries?status=pending").json();
    assert_eq!(
        pending["deliveries"].as_array().unwrap().len(),
        1,
        "{pending}"
    );

    // The message keeps its metadata; its 200 KB body goes.
    let purged = wait_until(deadline(SETTLE), || {
        table(&storage(d.addr), "emails")["stored_bytes"].as_u64() < Some(20_000)
    });
    assert!(purged, "{}", table(&storage(d.addr), "emails"));
    let email = get(d.addr, &format!("/v1/emails/{message}"));
    assert_eq!(email.status, 200);
    assert_eq!(email.json()["status"], "sent", "{}", email.text());

    let events = table(&storage(d.addr), "events");
    assert_eq!(events["rows"], 2, "{events}");
    assert_eq!(events["oldest"]["id"], kept["seq"], "{events}");
    assert_eq!(events["oldest"]["at"], kept["received_at"], "{events}");
}

#[test]
fn storage_reports_the_file_and_every_table() {
    let d = Daemon::start("");
    let first = create(d.addr, &json!({"type": "a"}));
    create(d.addr, &json!({"type": "b"}));
    let report = storage(d.addr);
    // A typo in the query is an error, as on every other route.
    let typo = get(d.addr, "/v1/admin/storage?table=events");
    assert_eq!(
        (typo.status, typo.code()),
        (400, "invalid_query".to_owned())
    );
    let file_bytes = report["file_bytes"].as_u64().expect("file_bytes");
    let stored = report["stored_bytes"].as_u64().expect("stored_bytes");
    assert!(stored > 0 && stored <= file_bytes, "{report}");
    let tables = report["tables"].as_array().expect("tables");
    for name in [
        "meta",
        "events",
        "deliveries",
        "emails",
        "tracked",
        "endpoint_attempts",
    ] {
        let t = table(&report, name);
        assert!(t["rows"].is_u64() && t["fragmented_bytes"].is_u64(), "{t}");
    }
    assert!(tables.len() >= 30, "{report}");
    let events = table(&report, "events");
    assert_eq!(events["rows"], 2);
    assert!(events["stored_bytes"].as_u64() > Some(0), "{events}");
    assert_eq!(
        events["oldest"],
        json!({"id": 1, "at": first["received_at"]})
    );
    assert_eq!(table(&report, "deliveries")["oldest"], Value::Null);
    assert_eq!(
        request(d.addr, "POST", "/v1/admin/storage", &[], b"").status,
        405
    );
}
