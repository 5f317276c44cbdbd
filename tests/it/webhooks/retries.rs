//! Failed attempts: retries under one webhook-id, network errors and the
//! answer excerpt kept, dead letters and manual retries, gone and redirect
//! answers, disabling, replay and recovery.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::receiver::{Receiver, Reply};
use super::verifier::reference_verify;
use super::{config, create_endpoint, post_empty, settled, status_codes, SETTLE, WEBHOOKS};
use crate::support::*;

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
fn an_endpoint_failing_past_disable_after_is_disabled_when_a_delivery_is_exhausted() {
    let receiver = Receiver::always(500);
    let d = Daemon::start(&config(&[
        ("disable_after", r#""1ms""#),
        ("failing_threshold", "3"),
    ]));
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
    // The 4th failure in a row, past the threshold of 3, announced itself too.
    assert_eq!(list_all(d.addr, "type=delivery.failing", &[]).len(), 1);
}

#[test]
fn replay_redelivers_what_a_disabled_endpoint_missed_and_recover_requeues_failures() {
    let failing = Arc::new(AtomicBool::new(true));
    let flag = failing.clone();
    let receiver = Receiver::start(move |_, _| {
        if flag.load(Ordering::SeqCst) {
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

    failing.store(false, Ordering::SeqCst);
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
