//! Payload versions at real receivers: an endpoint pinned to a version
//! gets that version's data, an unpinned one the newest, both signed as
//! the reference library checks; attempts are numbered in a header; and a
//! test send carries a catalogued type's sample.

use serde_json::json;

use super::receiver::{Receiver, Reply};
use super::verifier::reference_verify;
use super::{create_endpoint, patch, post_empty, settled, SETTLE, WEBHOOKS};
use crate::support::*;

#[test]
fn pinned_and_unpinned_endpoints_receive_their_own_version_signed() {
    let old = Receiver::always(204);
    let new = Receiver::always(204);
    let d = Daemon::start(WEBHOOKS);
    let pinned = create_endpoint(
        d.addr,
        json!({"url": old.url("/"), "version_pins": {"invoice.paid": 1}}),
    );
    assert_eq!(pinned["version_pins"], json!({"invoice.paid": 1}));
    let unpinned = create_endpoint(d.addr, json!({"url": new.url("/")}));
    assert_eq!(unpinned["version_pins"], json!({}));

    let event = create(
        d.addr,
        &json!({"type": "invoice.paid", "tenant": "acme",
                "data_versions": {"2": {"cents": 4200}, "1": {"amount": 42}}}),
    );
    assert_eq!(event["data"], json!({"cents": 4200}));
    assert_eq!(event["data_version"], 2);
    assert_eq!(
        event["data_versions"],
        json!({"1": {"amount": 42}, "2": {"cents": 4200}})
    );
    let stored = get(d.addr, &format!("/v1/events/{}", s(&event["id"]))).json();
    assert_eq!(stored, event, "the log keeps every version");

    let to_old = &old.wait_for_requests(1, deadline(SETTLE))[0];
    let to_new = &new.wait_for_requests(1, deadline(SETTLE))[0];
    let expected = |version: u32, data| {
        json!({
            "id": event["id"], "type": "invoice.paid", "source": "api", "version": 1,
            "data_version": version, "seq": event["seq"], "timestamp": event["occurred_at"],
            "tenant": "acme", "data": data,
        })
    };
    assert_eq!(to_old.json(), expected(1, json!({"amount": 42})));
    assert_eq!(to_new.json(), expected(2, json!({"cents": 4200})));
    reference_verify(s(&pinned["secret"]), to_old).expect("the pinned body verifies");
    reference_verify(s(&unpinned["secret"]), to_new).expect("the newest body verifies");
    settled(d.addr, s(&event["id"]), 2);

    // Unpinned, it moves to the newest; an event of version 1 only is that.
    let id = s(&pinned["id"]);
    let resp = patch(
        d.addr,
        &format!("/v1/endpoints/{id}"),
        &json!({"version_pins": {}}),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    create(
        d.addr,
        &json!({"type": "invoice.paid", "data_versions": {"1": {"amount": 7}, "2": {"cents": 700}}}),
    );
    create(
        d.addr,
        &json!({"type": "invoice.paid", "data": {"amount": 8}}),
    );
    let got = old.wait_for_requests(3, deadline(SETTLE));
    assert_eq!(got[1].json()["data"], json!({"cents": 700}));
    assert_eq!(
        (
            got[2].json()["data_version"].clone(),
            got[2].json()["data"].clone()
        ),
        (json!(1), json!({"amount": 8}))
    );

    let resp = patch(
        d.addr,
        &format!("/v1/endpoints/{id}"),
        &json!({"version_pins": {"invoice.paid": 0}}),
    );
    assert_eq!(
        (resp.status, resp.code()),
        (422, "invalid_field".into()),
        "{}",
        resp.text()
    );
}

#[test]
fn every_attempt_says_its_number() {
    let receiver = Receiver::sequence(
        vec![Reply::status(500), Reply::status(503)],
        Reply::status(200),
    );
    let d = Daemon::start(WEBHOOKS);
    create_endpoint(d.addr, json!({"url": receiver.url("/")}));
    let event = create(d.addr, &json!({"type": "a"}));
    settled(d.addr, s(&event["id"]), 1);
    let numbers: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("webhook-attempt").to_owned())
        .collect();
    assert_eq!(numbers, ["1", "2", "3"]);
}

#[test]
fn a_test_send_carries_the_sample_of_a_catalogued_type_it_takes() {
    let receiver = Receiver::always(200);
    let d = Daemon::start(WEBHOOKS);
    let definition = json!({"versions": {
        "1": {"sample": {"amount": 42}},
        "2": {"schema": {"type": "object"}, "sample": {"cents": 4200}},
    }});
    let resp = request(
        d.addr,
        "PUT",
        "/v1/event-types/invoice.paid",
        &[JSON],
        definition.to_string().as_bytes(),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let pinned = create_endpoint(
        d.addr,
        json!({"url": receiver.url("/"), "event_types": ["invoice.*"],
               "version_pins": {"invoice.paid": 1}}),
    );
    let unpinned = create_endpoint(
        d.addr,
        json!({"url": receiver.url("/"), "event_types": ["invoice.*"]}),
    );
    let elsewhere = create_endpoint(
        d.addr,
        json!({"url": receiver.url("/"), "event_types": ["user.*"]}),
    );

    for (endpoint, event_type, version, data) in [
        (&pinned, "invoice.paid", 1, json!({"amount": 42})),
        (&unpinned, "invoice.paid", 2, json!({"cents": 4200})),
        (
            &elsewhere,
            "herald.test",
            1,
            json!({"message": "a test event from Herald"}),
        ),
    ] {
        let sent = receiver.requests().len();
        let resp = post_empty(
            d.addr,
            &format!("/v1/endpoints/{}/test", s(&endpoint["id"])),
        );
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json()["status_code"], 200);
        assert_eq!(resp.json()["event_type"], event_type);
        let got = receiver.wait_for_requests(sent + 1, deadline(SETTLE));
        let body = got[sent].json();
        assert_eq!(body["type"], event_type);
        assert_eq!(body["source"], "herald");
        assert_eq!(body["data_version"], version);
        assert_eq!(body["data"], data);
        assert_eq!(got[sent].header("webhook-attempt"), "1");
        reference_verify(s(&endpoint["secret"]), &got[sent]).expect("a test send verifies");
    }
}
