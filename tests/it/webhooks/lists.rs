//! Filtered delivery lists and endpoint stats over many deliveries in mixed
//! statuses: every page of a filter is full or the last, and stats count
//! every delivery and attempt exactly.

use serde_json::{json, Value};

use super::receiver::{Receiver, Reply};
use super::{all_deliveries, config, create_endpoint, post_numbered_events, SETTLE};
use crate::support::*;

/// Every page of `path` (a filtered listing) with `limit` per page: each
/// page but the last is full, and the last carries no cursor.
fn pages(addr: std::net::SocketAddr, path: &str, limit: usize) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut page_path = format!("{path}{sep}limit={limit}");
        if let Some(a) = &after {
            page_path.push_str(&format!("&after={a}"));
        }
        let page = get(addr, &page_path).json();
        let items = page["deliveries"].as_array().expect("deliveries").clone();
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(items.len(), limit, "{page_path}: a cursor on a short page");
                after = Some(next.to_owned());
                pages.push(items);
            }
            None => {
                pages.push(items);
                return pages;
            }
        }
        assert!(pages.len() < 10_000, "{path} does not end");
    }
}

fn stats(addr: std::net::SocketAddr, endpoint: &str) -> Value {
    get(addr, &format!("/v1/endpoints/{endpoint}/stats")).json()
}

#[test]
fn status_filtered_pages_are_full_or_final_and_stats_count_every_delivery() {
    const EVENTS: usize = 300;
    const LATER: usize = 40;
    let healthy = Receiver::start(|_, _| Reply::status(200));
    let failing = Receiver::start(|_, _| Reply::status(500));
    // One failure leaves a delivery pending for an hour.
    let d = Daemon::start(&config(&[("retry_schedule", r#"["1h"]"#)]));
    // Not subscribed to Herald's own `delivery.*`: the failing endpoints'
    // runs of failures are news that would add deliveries to count.
    let ok = create_endpoint(
        d.addr,
        json!({"url": healthy.url("/"), "event_types": ["a", "b"]}),
    );
    let bad = create_endpoint(
        d.addr,
        json!({"url": failing.url("/"), "event_types": ["a"]}),
    );
    let (ok, bad) = (s(&ok["id"]).to_owned(), s(&bad["id"]).to_owned());
    post_numbered_events(d.addr, EVENTS);
    let settled = wait_until(deadline(SETTLE * 4), || {
        let (o, b) = (stats(d.addr, &ok), stats(d.addr, &bad));
        o["deliveries"]["succeeded"] == EVENTS && b["last_hour"]["attempts"] == EVENTS
    });
    assert!(settled, "{} / {}", stats(d.addr, &ok), stats(d.addr, &bad));

    // A third endpoint's pending deliveries become dead letters when it
    // is deleted.
    let doomed = create_endpoint(
        d.addr,
        json!({"url": failing.url("/"), "event_types": ["b"]}),
    );
    let doomed = s(&doomed["id"]).to_owned();
    let batch: Vec<Value> = (0..LATER)
        .map(|i| json!({"type": "b", "data": {"i": i}}))
        .collect();
    let resp = post_json(d.addr, "/v1/events/batch", &json!({ "events": batch }));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = request(
        d.addr,
        "DELETE",
        &format!("/v1/endpoints/{doomed}"),
        &[],
        b"",
    );
    assert_eq!(resp.status, 204);
    let delivered = wait_until(deadline(SETTLE), || {
        stats(d.addr, &ok)["deliveries"]["succeeded"] == EVENTS + LATER
    });
    assert!(delivered, "{}", stats(d.addr, &ok));

    let b = stats(d.addr, &bad);
    assert_eq!(
        b["deliveries"],
        json!({"pending": EVENTS, "succeeded": 0, "failed": 0}),
        "{b}"
    );
    assert_eq!(b["last_hour"]["failed"], EVENTS, "{b}");
    assert_eq!(b["last_day"]["attempts"], EVENTS, "{b}");
    assert!(b["last_day"]["latency_ms"]["p50"].is_number(), "{b}");
    let o = stats(d.addr, &ok);
    assert_eq!(o["deliveries"]["succeeded"], EVENTS + LATER, "{o}");
    assert_eq!(o["last_hour"]["succeeded"], EVENTS + LATER, "{o}");

    for (query, expected, status) in [
        ("/v1/deliveries?status=failed", LATER, "failed"),
        ("/v1/dead-letters", LATER, "failed"),
        ("/v1/deliveries?status=pending", EVENTS, "pending"),
        (
            "/v1/deliveries?status=succeeded",
            EVENTS + LATER,
            "succeeded",
        ),
        (
            &format!("/v1/deliveries?status=pending&endpoint={bad}"),
            EVENTS,
            "pending",
        ),
        (
            &format!("/v1/deliveries?status=succeeded&endpoint={bad}"),
            0,
            "succeeded",
        ),
        (
            &format!("/v1/dead-letters?endpoint={doomed}"),
            LATER,
            "failed",
        ),
    ] {
        let pages = pages(d.addr, query, 7);
        let items: Vec<&Value> = pages.iter().flatten().collect();
        assert_eq!(items.len(), expected, "{query}");
        assert!(items.iter().all(|i| i["status"] == status), "{query}");
        let ids: Vec<&str> = items.iter().map(|i| s(&i["id"])).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{query}: not oldest first"
        );
    }
    // The unfiltered list still holds them all.
    assert_eq!(
        all_deliveries(d.addr, "", 1000).len(),
        2 * EVENTS + 2 * LATER
    );
}
