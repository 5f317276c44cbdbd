//! Endpoints: their fields, what input they refuse, and how subscribing,
//! patching, disabling and deleting decide which events are delivered.

use std::collections::HashSet;

use serde_json::json;

use super::receiver::Receiver;
use super::{
    create_endpoint, deliveries_of, patch, post_empty, settled, GOLDEN_SECRET, SETTLE, WEBHOOKS,
};
use crate::support::*;

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
        "owner_email": "ops@acme.example",
    });
    let created = create_endpoint(d.addr, body.clone());
    assert!(s(&created["id"]).starts_with("ep_"), "{created}");
    for field in [
        "url",
        "tenant",
        "event_types",
        "description",
        "rate_limit_per_sec",
        "timeout_secs",
        "secret",
        "owner_email",
    ] {
        assert_eq!(created[field], body[field], "{field} in {created}");
    }
    assert_eq!(created["headers"], json!({"x-a": "[redacted]"}));
    assert_eq!(created["sources"], json!(["api", "herald"]));
    assert_eq!(created["enabled"], true);
    assert_eq!(created["payload_version"], 1);
    assert!(created["created_at"].is_string() && created["updated_at"].is_string());
    // Only the answer to create shows the secret.
    let mut ep = created.clone();
    ep.as_object_mut().unwrap().remove("secret");
    let path = format!("/v1/endpoints/{}", s(&ep["id"]));
    assert_eq!(
        get(d.addr, &path).json(),
        ep,
        "GET gives what POST answered, but the secret"
    );

    let plain = create_endpoint(d.addr, json!({"url": "http://127.0.0.1:9/"}));
    assert!(s(&plain["secret"]).starts_with("whsec_"), "{plain}");
    assert_ne!(plain["secret"], created["secret"]);
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
        "sources",
        "rate_limit_per_sec",
        "enabled",
        "created_at",
    ] {
        assert_eq!(patched[unchanged], ep[unchanged], "{unchanged} after PATCH");
    }
    assert_eq!(get(d.addr, &path).json(), patched);

    // The tenant is fixed at creation: naming the same one is no change,
    // another or none is refused and changes nothing.
    let resp = patch(d.addr, &path, &json!({"tenant": "acme"}));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let patched = resp.json();
    assert_eq!(patched["tenant"], "acme");
    for moved in [json!({"tenant": "globex"}), json!({"tenant": null})] {
        let resp = patch(d.addr, &path, &moved);
        assert_eq!(resp.status, 422, "{}", resp.text());
        assert_eq!(resp.json()["error"]["field"], "tenant");
    }
    assert_eq!(get(d.addr, &path).json(), patched);

    // An owner is named, refused when not an address, and cleared by null.
    let resp = patch(d.addr, &path, &json!({"owner_email": "not an address"}));
    assert_eq!(resp.status, 422, "{}", resp.text());
    assert_eq!(resp.json()["error"]["field"], "owner_email");
    assert_eq!(get(d.addr, &path).json(), patched);
    let resp = patch(d.addr, &path, &json!({"owner_email": null}));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.json()["owner_email"].is_null(), "{}", resp.text());

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
        (
            json!({"url": "https://example.com/", "sources": []}),
            "sources",
        ),
        (
            json!({"url": "https://example.com/", "sources": ["browser"]}),
            "sources",
        ),
        (
            json!({"url": "https://example.com/", "sources": ["tracking", "tracking"]}),
            "sources",
        ),
        (
            json!({"url": "https://example.com/", "headers": {"authorization": "[redacted]"}}),
            "headers",
        ),
        (
            json!({"url": "https://example.com/", "owner_email": "ops@localhost"}),
            "owner_email",
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
    let before = get(d.addr, &path).json();
    for body in [
        json!({"url": "https://example.com/b", "timeout_secs": 99}),
        json!({"url": "https://example.com/b", "sources": ["api", "nope"]}),
        json!({"sources": []}),
        json!({"sources": "tracking"}),
    ] {
        let resp = patch(d.addr, &path, &body);
        assert!([400, 422].contains(&resp.status), "{body}: {}", resp.text());
        assert_eq!(
            get(d.addr, &path).json(),
            before,
            "a refused PATCH changes nothing"
        );
    }
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
        ("GET", format!("{path}/secret"), None),
        ("GET", "/v1/endpoints/ep_garbage/secret".to_owned(), None),
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

#[test]
fn endpoints_receive_only_the_types_and_tenant_they_subscribe_to() {
    let all = Receiver::always(200);
    let users = Receiver::always(200);
    let acme = Receiver::always(200);
    let d = Daemon::start(WEBHOOKS);
    create_endpoint(d.addr, json!({"url": all.url("/")}));
    create_endpoint(
        d.addr,
        json!({"url": users.url("/"), "event_types": ["user.*", "invoice.paid"]}),
    );
    create_endpoint(d.addr, json!({"url": acme.url("/"), "tenant": "acme"}));
    let sent = [
        ("user.created", None),
        ("invoice.paid", Some("acme")),
        ("invoice.voided", Some("other")),
        ("users.x", None),
    ];
    for (t, tenant) in sent {
        create(d.addr, &json!({"type": t, "tenant": tenant}));
    }
    let types = |r: &Receiver, n: usize| -> Vec<String> {
        let mut v: Vec<String> = r
            .wait_for_requests(n, deadline(SETTLE))
            .iter()
            .map(|x| x.json()["type"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        types(&all, 4),
        ["invoice.paid", "invoice.voided", "user.created", "users.x"]
    );
    assert_eq!(types(&users, 2), ["invoice.paid", "user.created"]);
    assert_eq!(types(&acme, 1), ["invoice.paid"]);
    // Everything for the first endpoint arrived; the others got nothing more.
    let marker = create(d.addr, &json!({"type": "user.created", "tenant": "acme"}));
    all.wait_for_requests(5, deadline(SETTLE));
    users.wait_for_requests(3, deadline(SETTLE));
    acme.wait_for_requests(2, deadline(SETTLE));
    settled(d.addr, marker["id"].as_str().unwrap(), 3);
    assert_eq!(users.requests().len(), 3);
    assert_eq!(acme.requests().len(), 2);
}
