//! When attempts are made: the throttle floor and Retry-After, the circuit
//! breaker, timeouts, in-flight caps and rate limits.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use super::receiver::{Receiver, Reply};
use super::{
    all_deliveries, config, create_endpoint, deliveries_of, post_numbered_events, settled,
    status_codes, SETTLE, WEBHOOKS,
};
use crate::support::*;

#[test]
fn throttled_answers_wait_for_the_floor_and_for_retry_after() {
    let receiver = Receiver::sequence(
        vec![
            Reply::status(429),
            Reply::status(429).header("Retry-After", "2"),
        ],
        Reply::status(200),
    );
    let d = Daemon::start(&config(&[
        ("retry_schedule", r#"["100ms", "100ms", "100ms"]"#),
        ("min_throttle_delay", r#""1s""#),
    ]));
    create_endpoint(d.addr, json!({"url": receiver.url("/")}));
    let event = create(d.addr, &json!({"type": "a"}));
    let list = settled(d.addr, s(&event["id"]), 1);
    assert_eq!(list[0]["status"], "succeeded", "{list:?}");
    assert_eq!(status_codes(&list[0]), [429, 429, 200]);
    let got = receiver.requests();
    assert_eq!(got.len(), 3);
    // Lower bounds only: a slow machine can only make the gaps longer.
    let floor_gap = got[1].at.duration_since(got[0].at);
    assert!(
        floor_gap >= Duration::from_millis(900),
        "a 429 was retried after {floor_gap:?}, under min_throttle_delay (1 s)"
    );
    // Retry-After: 2 lies within [delay, 2 x delay] = [1 s, 2 s]: honoured.
    let asked_gap = got[2].at.duration_since(got[1].at);
    assert!(
        asked_gap >= Duration::from_millis(1800),
        "Retry-After: 2 was retried after {asked_gap:?}"
    );
}

#[test]
fn the_circuit_breaker_pauses_an_endpoint_without_spending_retries() {
    let receiver = Receiver::always(500);
    let d = Daemon::start(&config(&[
        ("retry_schedule", r#"["100ms", "100ms", "100ms"]"#),
        ("circuit_failures", "2"),
        ("circuit_cooldown", r#""1s""#),
        ("max_in_flight_per_endpoint", "1"),
    ]));
    create_endpoint(d.addr, json!({"url": receiver.url("/")}));
    let event = create(d.addr, &json!({"type": "a"}));
    let list = settled(d.addr, s(&event["id"]), 1);
    assert_eq!(list[0]["status"], "failed", "{list:?}");
    assert_eq!(
        status_codes(&list[0]),
        [500, 500, 500, 500],
        "the pause used up no attempt: immediate + 3 retries"
    );
    let got = receiver.requests();
    assert_eq!(got.len(), 4);
    // Two consecutive failures open the circuit: the third attempt (the
    // probe) waits for the cooldown, not the 100 ms of the schedule.
    let paused = got[2].at.duration_since(got[1].at);
    assert!(
        paused >= Duration::from_millis(900),
        "the probe came {paused:?} after the circuit opened (cooldown 1 s)"
    );
}

#[test]
fn an_endpoint_timeout_cuts_a_hanging_attempt_short() {
    // The daemon-wide timeout is 30 s; the endpoint's own is 1 s. Which one
    // cut the attempt is read from its error, not from a clock; waiting
    // longer than 30 s lets a wrong choice show there too.
    let receiver = Receiver::sequence(vec![Reply::Hang], Reply::status(200));
    let d = Daemon::start(&config(&[("timeout", r#""30s""#)]));
    create_endpoint(d.addr, json!({"url": receiver.url("/"), "timeout_secs": 1}));
    let event = create(d.addr, &json!({"type": "a"}));
    let mut list = Vec::new();
    let done = wait_until(deadline(Duration::from_secs(60)), || {
        list = deliveries_of(d.addr, s(&event["id"]));
        list.len() == 1 && list[0]["status"] != "pending"
    });
    assert!(done, "the delivery never settled: {list:#?}");
    assert_eq!(list[0]["status"], "succeeded", "{list:?}");
    let attempts = list[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["status_code"], 0, "a timeout has no status");
    let error = s(&attempts[0]["error"]);
    assert!(!error.is_empty(), "a timeout says so: {attempts:?}");
    assert!(
        error.contains("within 1s"),
        "the hanging attempt was not cut at timeout_secs = 1: {error:?}"
    );
    assert_eq!(attempts.last().unwrap()["status_code"], 200);
}

#[test]
fn a_hanging_or_slow_endpoint_does_not_hold_up_a_healthy_one() {
    // One endpoint never answers: each attempt holds its connection until
    // the 30 s timeout. Another answers, but only after 3 s.
    let hanging = Receiver::start(|_, _| Reply::Hang);
    let slow = Receiver::start(|_, _| Reply::status(200).after(Duration::from_secs(3)));
    let healthy = Receiver::always(200);
    let d = Daemon::start(&config(&[
        ("timeout", r#""30s""#),
        ("max_in_flight_per_endpoint", "2"),
    ]));
    let hanging_ep = create_endpoint(d.addr, json!({"url": hanging.url("/")}));
    create_endpoint(d.addr, json!({"url": slow.url("/")}));
    create_endpoint(d.addr, json!({"url": healthy.url("/")}));
    post_numbered_events(d.addr, 30);
    let got = healthy.wait_for_requests(30, deadline(SETTLE));
    let ids: HashSet<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 30);
    // Attempts are recorded when they end: none at the hanging endpoint
    // has, so all thirty got through while it still held its first two.
    let held = all_deliveries(d.addr, &format!("endpoint={}", s(&hanging_ep["id"])), 100);
    assert!(
        held.iter().all(|x| x["attempts"] == json!([])),
        "the hanging endpoint's attempts ended first: {held:#?}"
    );
    assert!(hanging.requests().len() <= 2, "the in-flight cap holds");
    // Two at a time, 3 s each: the slow endpoint needs 45 s for all thirty.
    assert!(
        slow.requests().len() < 30,
        "the slow endpoint cannot have finished yet"
    );
}

#[test]
fn the_rate_limit_spaces_out_deliveries_and_caps_arrivals_in_any_second() {
    let receiver = Receiver::always(200);
    let d = Daemon::start(WEBHOOKS);
    create_endpoint(
        d.addr,
        json!({"url": receiver.url("/"), "rate_limit_per_sec": 5}),
    );
    post_numbered_events(d.addr, 20);
    let got = receiver.wait_for_requests(20, deadline(Duration::from_secs(60)));
    let ids: HashSet<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 20, "each event once");
    // A bucket of 5 refilled at 5/s: the 15th cannot come before 2 s after
    // the first (10 tokens to refill), whatever the machine's speed.
    let spread = got[14].at.duration_since(got[0].at);
    assert!(
        spread >= Duration::from_millis(1900),
        "15 deliveries took only {spread:?}"
    );
    // Nor can more than 5 + 5 come within any 1 s window; allow 2 more for
    // timer slack.
    let times: Vec<Instant> = got.iter().map(|r| r.at).collect();
    for (i, start) in times.iter().enumerate() {
        let window = times[i..]
            .iter()
            .filter(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        assert!(
            window <= 12,
            "{window} deliveries within 1 s of arrival {i} at 5/s"
        );
    }
}
