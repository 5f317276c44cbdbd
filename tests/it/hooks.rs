//! Webhooks end to end, the main paths: the real daemon delivering to real
//! HTTP receivers on loopback, signatures checked by the reference Python
//! library. Edge cases and crash recovery are in `webhooks.rs`.

use serde_json::{json, Value};

use crate::receiver::{Receiver, Reply};
use crate::support::*;
use crate::verifier::reference_verify;
use crate::webhooks::{config, create_endpoint, settled, SETTLE, WEBHOOKS};

#[test]
fn a_delivery_carries_the_documented_body_and_verifies_with_the_reference_library() {
    let receiver = Receiver::always(204);
    let d = Daemon::start(WEBHOOKS);
    let endpoint = create_endpoint(
        d.addr,
        json!({"url": receiver.url("/hook?x=1"), "headers": {"x-team": "billing"}}),
    );
    let secret = endpoint["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{endpoint}");

    let event = create(
        d.addr,
        &json!({"type": "invoice.paid", "tenant": "acme", "data": {"amount": 4200}}),
    );
    let got = receiver.wait_for_requests(1, deadline(SETTLE));
    let request = &got[0];
    assert_eq!(request.path, "/hook?x=1");
    assert_eq!(request.header("webhook-id"), event["id"]);
    assert_eq!(request.header("content-type"), "application/json");
    assert!(request.header("user-agent").starts_with("Herald/"));
    assert_eq!(request.header("x-team"), "billing");
    assert_eq!(
        request.json(),
        json!({
            "id": event["id"], "type": "invoice.paid", "version": 1, "seq": event["seq"],
            "timestamp": event["occurred_at"], "tenant": "acme", "data": {"amount": 4200},
        })
    );
    assert!(reference_verify(secret, request).is_ok());
    let wrong = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert!(
        reference_verify(wrong, request).is_err(),
        "a wrong secret must not verify"
    );

    let list = settled(d.addr, event["id"].as_str().unwrap(), 1);
    assert_eq!(list[0]["status"], "succeeded");
    assert_eq!(list[0]["attempts"][0]["status_code"], 204);
    assert_eq!(list[0]["endpoint_id"], endpoint["id"]);
}

#[test]
fn failures_are_retried_with_the_same_webhook_id_until_one_succeeds() {
    // A connection dropped without an answer is a network error (status 0).
    // The client retries once on a fresh connection when a pooled one
    // fails, so the receiver drops two in a row.
    let receiver = Receiver::start(|n, _| match n {
        0 => Reply::status(500),
        1 | 2 => Reply::Drop,
        _ => Reply::status(200),
    });
    let d = Daemon::start(WEBHOOKS);
    create_endpoint(d.addr, json!({"url": receiver.url("/")}));
    let event = create(d.addr, &json!({"type": "a"}));
    let got = receiver.wait_for_requests(4, deadline(SETTLE));
    assert!(got.iter().all(|r| r.header("webhook-id") == event["id"]));

    let list = settled(d.addr, event["id"].as_str().unwrap(), 1);
    let attempts = list[0]["attempts"].as_array().unwrap();
    assert_eq!(list[0]["status"], "succeeded", "{list:?}");
    let codes: Vec<&Value> = attempts.iter().map(|a| &a["status_code"]).collect();
    assert_eq!(codes, [&json!(500), &json!(0), &json!(200)]);
    assert!(attempts[1]["error"].is_string());
    assert!(attempts.iter().all(|a| a["trigger"] == "scheduled"));
}

#[test]
fn an_exhausted_delivery_is_a_dead_letter_until_a_manual_retry_succeeds() {
    let receiver = Receiver::start(|n, _| Reply::status(if n < 4 { 503 } else { 200 }));
    let d = Daemon::start(WEBHOOKS);
    let endpoint = create_endpoint(d.addr, json!({"url": receiver.url("/")}));
    let event = create(d.addr, &json!({"type": "a"}));
    let list = settled(d.addr, event["id"].as_str().unwrap(), 1);
    assert_eq!(list[0]["status"], "failed");
    assert_eq!(
        list[0]["attempts"].as_array().unwrap().len(),
        4,
        "immediate + 3 retries"
    );
    assert!(list[0]["next_attempt_at"].is_null());

    let dead = get(
        d.addr,
        &format!(
            "/v1/dead-letters?endpoint={}",
            endpoint["id"].as_str().unwrap()
        ),
    )
    .json();
    assert_eq!(dead["deliveries"].as_array().unwrap().len(), 1, "{dead}");
    let exhausted = list_all(d.addr, "type=delivery.exhausted", &[]);
    assert_eq!(exhausted.len(), 1);
    assert_eq!(exhausted[0]["data"]["event_id"], event["id"]);
    assert_eq!(exhausted[0]["data"]["delivery_id"], list[0]["id"]);

    let id = list[0]["id"].as_str().unwrap();
    let resp = request(
        d.addr,
        "POST",
        &format!("/v1/deliveries/{id}/retry"),
        &[],
        b"",
    );
    assert_eq!(resp.status, 202, "{}", resp.text());
    let after = resp.json();
    assert_eq!(after["status"], "succeeded");
    assert_eq!(after["attempts"][4]["trigger"], "manual");
    assert_eq!(after["attempts"][4]["status_code"], 200);
    let dead = get(d.addr, "/v1/dead-letters").json();
    assert_eq!(dead["deliveries"], json!([]));
}

#[test]
fn gone_disables_the_endpoint_and_redirects_are_failures_not_followed() {
    let gone = Receiver::always(410);
    let moved = Receiver::always(302);
    let d = Daemon::start(WEBHOOKS);
    let gone_ep = create_endpoint(d.addr, json!({"url": gone.url("/"), "event_types": ["a"]}));
    create_endpoint(d.addr, json!({"url": moved.url("/"), "event_types": ["a"]}));
    let event = create(d.addr, &json!({"type": "a"}));
    let list = settled(d.addr, event["id"].as_str().unwrap(), 2);
    assert!(list.iter().all(|d| d["status"] == "failed"), "{list:?}");

    let ep = get(
        d.addr,
        &format!("/v1/endpoints/{}", gone_ep["id"].as_str().unwrap()),
    )
    .json();
    assert_eq!(ep["enabled"], false, "{ep}");
    assert_eq!(gone.requests().len(), 1, "410 is not retried");
    let moved_requests = moved.requests();
    assert_eq!(moved_requests.len(), 4, "a 302 is retried like any failure");
    assert!(
        moved_requests.iter().all(|r| r.path == "/"),
        "the Location was never requested"
    );
    assert_eq!(list_all(d.addr, "type=endpoint.disabled", &[]).len(), 1);

    // A disabled endpoint gets nothing new.
    create(d.addr, &json!({"type": "a"}));
    let later = create(d.addr, &json!({"type": "a"}));
    settled(d.addr, later["id"].as_str().unwrap(), 1);
    assert_eq!(gone.requests().len(), 1);
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

#[test]
fn an_endpoint_failing_past_disable_after_is_disabled_when_a_delivery_is_exhausted() {
    let receiver = Receiver::always(500);
    let d = Daemon::start(&config(&[("disable_after", r#""1ms""#)]));
    let ep = create_endpoint(d.addr, json!({"url": receiver.url("/")}));
    let event = create(d.addr, &json!({"type": "a"}));
    settled(d.addr, event["id"].as_str().unwrap(), 1);
    let path = format!("/v1/endpoints/{}", ep["id"].as_str().unwrap());
    let ep = get(d.addr, &path).json();
    assert_eq!(ep["enabled"], false, "{ep}");
    assert!(ep["disabled_reason"].as_str().unwrap().contains("failing"));
    let disabled = list_all(d.addr, "type=endpoint.disabled", &[]);
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0]["data"]["endpoint_id"], ep["id"]);
    // The 4th failure announced itself too.
    assert_eq!(list_all(d.addr, "type=delivery.failing", &[]).len(), 1);
}

#[test]
fn replay_redelivers_what_a_disabled_endpoint_missed_and_recover_requeues_failures() {
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = failing.clone();
    let receiver = Receiver::start(move |_, _| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    });
    let d = Daemon::start(WEBHOOKS);
    let ep = create_endpoint(
        d.addr,
        json!({"url": receiver.url("/"), "event_types": ["a"]}),
    );
    let id = ep["id"].as_str().unwrap();
    let since = create(d.addr, &json!({"type": "a"}));
    settled(d.addr, since["id"].as_str().unwrap(), 1);
    let failed = get(d.addr, &format!("/v1/dead-letters?endpoint={id}")).json();
    assert_eq!(failed["deliveries"].as_array().unwrap().len(), 1);

    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let recover = post_json(
        d.addr,
        &format!("/v1/endpoints/{id}/recover"),
        &json!({"since": since["received_at"]}),
    );
    assert_eq!(recover.status, 202, "{}", recover.text());
    assert_eq!(recover.json()["requeued"], 1);
    let list = settled(d.addr, since["id"].as_str().unwrap(), 1);
    assert_eq!(list[0]["status"], "succeeded", "{list:?}");

    // Events that arrive while the endpoint is disabled are not delivered...
    let resp = request(
        d.addr,
        "POST",
        &format!("/v1/endpoints/{id}/disable"),
        &[],
        b"",
    );
    assert_eq!(resp.json()["enabled"], false);
    let missed = create(d.addr, &json!({"type": "a"}));
    create(d.addr, &json!({"type": "b"}));
    let page = get(
        d.addr,
        &format!("/v1/deliveries?event={}", missed["id"].as_str().unwrap()),
    )
    .json();
    assert_eq!(page["deliveries"], json!([]));
    // ...until a replay after enabling it again, which skips other types.
    request(
        d.addr,
        "POST",
        &format!("/v1/endpoints/{id}/enable"),
        &[],
        b"",
    );
    let replay = post_json(
        d.addr,
        &format!("/v1/endpoints/{id}/replay"),
        &json!({"since": missed["received_at"]}),
    );
    assert_eq!(replay.status, 202, "{}", replay.text());
    assert_eq!(replay.json()["replayed"], 1);
    let list = settled(d.addr, missed["id"].as_str().unwrap(), 1);
    assert_eq!(list[0]["status"], "succeeded");

    let stats = get(d.addr, &format!("/v1/endpoints/{id}/stats")).json();
    assert_eq!(stats["last_hour"]["succeeded"], 2, "{stats}");
    assert_eq!(stats["last_hour"]["failed"], 4, "{stats}");
    assert!(stats["last_day"]["latency_ms"]["p99"].is_number());

    let test = request(
        d.addr,
        "POST",
        &format!("/v1/endpoints/{id}/test"),
        &[],
        b"",
    );
    assert_eq!(test.status, 200);
    assert_eq!(test.json()["status_code"], 200, "{}", test.text());
    let last = receiver.requests().pop().unwrap();
    assert_eq!(last.json()["type"], "herald.test");
}
