//! Signed webhooks end to end: the real daemon delivering to scriptable
//! HTTP receivers on loopback, signatures judged by the reference Python
//! library. Each test runs its own daemon and receivers; completion is
//! polled with deadlines and only lower bounds are put on time.

mod catalog;
mod destinations;
mod durability;
mod endpoints;
mod lists;
mod owner_alerts;
mod pacing;
pub(crate) mod receiver;
mod records;
mod retries;
mod secrets;
mod signing;
mod sources;
mod verifier;
mod versions;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// Loopback receivers need the allow-list; a short schedule keeps tests
/// fast. Tests that count attempts rely on its three retries; those about
/// throttling, the circuit or in-flight attempts override what they need.
const WEBHOOKS: &str = r#"
[webhooks]
allow_networks = ["127.0.0.1/32"]
require_https = false
retry_schedule = ["100ms", "200ms", "400ms"]
min_throttle_delay = "100ms"
timeout = "2s"
circuit_failures = 100
circuit_cooldown = "500ms"
max_in_flight_per_endpoint = 4
"#;

/// Golden vector 1 of REFERENCE §1: a valid secret Herald must accept as is.
const GOLDEN_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// Another valid secret, for checking that a wrong one does not verify.
const OTHER_SECRET: &str = "whsec_plJ3nmyCDGBKInavdOK15jsl";

/// Generous: a debug build on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(30);

/// `WEBHOOKS` with some `[webhooks]` keys replaced (values are TOML).
fn config(overrides: &[(&str, &str)]) -> String {
    let mut table: toml::Table = WEBHOOKS.parse().unwrap();
    let hooks = table["webhooks"].as_table_mut().unwrap();
    for (key, value) in overrides {
        let parsed: toml::Table = format!("v = {value}").parse().expect("override is TOML");
        hooks.insert((*key).to_owned(), parsed["v"].clone());
    }
    toml::to_string(&table).unwrap()
}

fn create_endpoint(addr: SocketAddr, body: Value) -> Value {
    let resp = post_json(addr, "/v1/endpoints", &body);
    assert_eq!(resp.status, 201, "{body}: {}", resp.text());
    resp.json()
}

fn patch(addr: SocketAddr, path: &str, body: &Value) -> Response {
    request(addr, "PATCH", path, &[JSON], body.to_string().as_bytes())
}

fn post_empty(addr: SocketAddr, path: &str) -> Response {
    request(addr, "POST", path, &[], b"")
}

/// Posts `n` events of type `a` in one batch; their ids in order.
fn post_numbered_events(addr: SocketAddr, n: usize) -> Vec<String> {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"type": "a", "data": {"i": i}}))
        .collect();
    let resp = post_json(addr, "/v1/events/batch", &json!({ "events": events }));
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| s(&r["id"]).to_owned())
        .collect()
}

/// The deliveries of one event as listed now.
fn deliveries_of(addr: SocketAddr, event_id: &str) -> Vec<Value> {
    let resp = get(addr, &format!("/v1/deliveries?event={event_id}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["deliveries"]
        .as_array()
        .expect("deliveries array")
        .clone()
}

/// The `count` deliveries of one event once none is pending any more.
fn settled(addr: SocketAddr, event_id: &str, count: usize) -> Vec<Value> {
    let mut list = Vec::new();
    let done = wait_until(deadline(SETTLE), || {
        list = deliveries_of(addr, event_id);
        list.len() == count && list.iter().all(|d| d["status"] != "pending")
    });
    assert!(done, "deliveries of {event_id} did not settle: {list:#?}");
    list
}

fn status_codes(delivery: &Value) -> Vec<i64> {
    delivery["attempts"]
        .as_array()
        .expect("attempts array")
        .iter()
        .map(|a| a["status_code"].as_i64().expect("status_code"))
        .collect()
}

/// Every delivery matching `query`, following `next_cursor` (`limit` per page).
fn all_deliveries(addr: SocketAddr, query: &str, limit: usize) -> Vec<Value> {
    list_pages(
        addr,
        &format!("/v1/deliveries?{query}"),
        "deliveries",
        limit,
        &[],
    )
}
