//! What Herald keeps and tells about deliveries: its own delivery events,
//! listings by status and endpoint, one delivery per idempotent event.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::receiver::Receiver;
use super::{all_deliveries, config, create_endpoint, deliveries_of, settled, SETTLE, WEBHOOKS};
use crate::support::*;

#[test]
fn delivery_trouble_is_reported_to_other_endpoints_never_about_themselves() {
    let failing = Receiver::always(500);
    let watcher = Receiver::always(200);
    // One delivery's four attempts: the 4th failure in a row passes 3.
    let d = Daemon::start(&config(&[("failing_threshold", "3")]));
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
    assert_eq!(exhausted.json()["source"], "herald");

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
        // One delivery also shows what each attempt sent; lists stay lean.
        let mut one = one.json();
        for attempt in one["attempts"].as_array_mut().unwrap() {
            let headers = attempt
                .as_object_mut()
                .unwrap()
                .remove("request_headers")
                .expect("each attempt's request headers");
            assert!(headers
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["name"] == "webhook-id"));
        }
        assert_eq!(&one, x, "listing and GET agree");
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
