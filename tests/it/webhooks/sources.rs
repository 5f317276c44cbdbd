//! Where events come from: a tracked call, whose write key ships to
//! browsers, reaches only endpoints that take tracked calls, whatever name
//! it gives itself, and API clients cannot post under Herald's own names.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::{json, Value};

use super::receiver::{Receiver, Recorded};
use super::{all_deliveries, create_endpoint, deliveries_of, SETTLE, WEBHOOKS};
use crate::support::*;

const WRITE_KEY: &str = "wk_browser_0123456789abcdef";

/// Names a tracked call could borrow to look like a server event or one of
/// Herald's own.
const FORGED: [&str; 4] = [
    "invoice.paid",
    "email.bounced",
    "delivery.exhausted",
    "endpoint.disabled",
];

fn config() -> String {
    format!("{WEBHOOKS}\n[[tracking.sources]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n")
}

/// Tracks each name in one Segment batch, authenticated by the write key in
/// the body as browser snippets do; the stored events, in order.
fn track_forged(addr: SocketAddr) -> Vec<Value> {
    let batch: Vec<Value> = FORGED
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({"type": "track", "event": name, "userId": "mallory",
                   "messageId": format!("forged-{i}"), "properties": {"amount": 1}})
        })
        .collect();
    let resp = post_json(
        addr,
        "/v1/batch",
        &json!({"writeKey": WRITE_KEY, "batch": batch}),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seqs: Vec<i64> = resp.json()["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["seq"].as_i64().expect("seq"))
        .collect();
    let events = list_all(addr, "", &[]);
    seqs.iter()
        .map(|seq| {
            events
                .iter()
                .find(|e| e["seq"] == *seq)
                .unwrap_or_else(|| panic!("seq {seq} is not in {events:#?}"))
                .clone()
        })
        .collect()
}

/// Every delivery to `endpoint`, once none is pending.
fn settled_deliveries(addr: SocketAddr, endpoint: &Value) -> Vec<Value> {
    let query = format!("endpoint={}", s(&endpoint["id"]));
    let mut list = Vec::new();
    let done = wait_until(deadline(SETTLE), || {
        list = all_deliveries(addr, &query, 100);
        list.iter().all(|d| d["status"] != "pending")
    });
    assert!(done, "deliveries to {endpoint} did not settle: {list:#?}");
    list
}

fn types_and_sources(requests: &[Recorded]) -> BTreeSet<(String, String)> {
    requests
        .iter()
        .map(|r| {
            let body = r.json();
            (s(&body["type"]).to_owned(), s(&body["source"]).to_owned())
        })
        .collect()
}

#[test]
fn tracked_calls_reach_only_endpoints_that_take_tracked_calls() {
    let named = Receiver::always(200);
    let everything = Receiver::always(200);
    let tracking = Receiver::always(200);
    let d = Daemon::start(&config());
    // Two endpoints with the default sources: one subscribed to exactly the
    // names a tracked call will borrow, one to every type.
    let named_ep = create_endpoint(
        d.addr,
        json!({"url": named.url("/"), "event_types": FORGED}),
    );
    let everything_ep = create_endpoint(d.addr, json!({"url": everything.url("/")}));
    assert_eq!(everything_ep["sources"], json!(["api", "herald"]));
    let tracking_ep = create_endpoint(
        d.addr,
        json!({"url": tracking.url("/"), "sources": ["tracking"]}),
    );
    assert_eq!(tracking_ep["sources"], json!(["tracking"]));

    let forged = track_forged(d.addr);
    for event in &forged {
        assert_eq!(event["source"], "tracking", "{event}");
        // Fan-out happens in the event's own commit: none now means none ever.
        let deliveries = deliveries_of(d.addr, s(&event["id"]));
        let endpoints: Vec<&str> = deliveries.iter().map(|x| s(&x["endpoint_id"])).collect();
        assert_eq!(endpoints, [s(&tracking_ep["id"])], "{event}");
    }
    // A server event of a borrowed name arrives, and only it: once every
    // delivery to the default endpoints has settled, nothing else came.
    let server = create(
        d.addr,
        &json!({"type": "invoice.paid", "data": {"amount": 4200}}),
    );
    assert_eq!(server["source"], "api");
    named.wait_for_requests(1, deadline(SETTLE));
    everything.wait_for_requests(1, deadline(SETTLE));
    for (receiver, endpoint) in [(&named, &named_ep), (&everything, &everything_ep)] {
        let deliveries = settled_deliveries(d.addr, endpoint);
        assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
        let got = receiver.requests();
        assert_eq!(got.len(), 1);
        let body = got[0].json();
        assert_eq!(body["id"], server["id"]);
        assert_eq!(body["source"], "api");
        assert_eq!(got[0].header("webhook-id"), s(&server["id"]));
    }

    // The endpoint that opted in gets every tracked call, saying so, and no
    // server event.
    let got = tracking.wait_for_requests(FORGED.len(), deadline(SETTLE));
    assert_eq!(settled_deliveries(d.addr, &tracking_ep).len(), FORGED.len());
    let expected: BTreeSet<(String, String)> = FORGED
        .iter()
        .map(|name| (name.to_string(), "tracking".to_owned()))
        .collect();
    assert_eq!(types_and_sources(&tracking.requests()), expected);
    assert_eq!(got[0].json()["data"]["userId"], "mallory");

    // A replay picks by source too.
    for (endpoint, replayed) in [(&named_ep, 1), (&everything_ep, 1), (&tracking_ep, 4)] {
        let resp = post_json(
            d.addr,
            &format!("/v1/endpoints/{}/replay", s(&endpoint["id"])),
            &json!({"since": "2000-01-01T00:00:00Z"}),
        );
        assert_eq!(resp.status, 202, "{}", resp.text());
        assert_eq!(resp.json()["replayed"], replayed, "{endpoint}");
    }
}

#[test]
fn api_clients_cannot_post_under_herald_names_and_sources_can_be_changed() {
    let receiver = Receiver::always(200);
    let d = Daemon::start(&config());
    for name in [
        "email.bounced",
        "delivery.exhausted",
        "endpoint.disabled",
        "herald.test",
    ] {
        let resp = post_json(d.addr, "/v1/events", &json!({"type": name}));
        assert_eq!(resp.status, 422, "{name}: {}", resp.text());
        assert_eq!(resp.json()["error"]["field"], "type", "{name}");
        let resp = post_json(
            d.addr,
            "/v1/events/batch",
            &json!({"events": [{"type": "ok"}, {"type": name}]}),
        );
        assert_eq!(resp.status, 422, "{name}: {}", resp.text());
        assert_eq!(resp.json()["error"]["field"], "events[1].type", "{name}");
    }
    assert_eq!(count_events(d.addr), 0, "nothing was written");

    // Opting in later takes tracked calls from then on.
    let ep = create_endpoint(d.addr, json!({"url": receiver.url("/")}));
    let path = format!("/v1/endpoints/{}", s(&ep["id"]));
    track_forged(d.addr);
    let resp = request(
        d.addr,
        "PATCH",
        &path,
        &[JSON],
        json!({"sources": ["api", "herald", "tracking"]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["sources"], json!(["api", "herald", "tracking"]));
    assert_eq!(get(d.addr, &path).json()["sources"], resp.json()["sources"]);
    let tracked = post_json(
        d.addr,
        "/v1/track",
        &json!({"writeKey": WRITE_KEY, "event": "Signed Up", "userId": "u1"}),
    );
    assert_eq!(tracked.status, 200, "{}", tracked.text());
    let got = receiver.wait_for_requests(1, deadline(SETTLE));
    assert_eq!(settled_deliveries(d.addr, &ep).len(), 1);
    assert_eq!(
        types_and_sources(&got),
        BTreeSet::from([("Signed Up".to_owned(), "tracking".to_owned())])
    );
}
