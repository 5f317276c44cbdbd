//! Webhooks carry a tenant's events, and Herald's own events about a
//! tenant's endpoints, to that tenant's endpoints only (and to endpoints
//! without a tenant, which receive every tenant's).

use std::collections::BTreeMap;

use serde_json::json;

use super::{all_pages, config, expect, wait_until_settled, ACME, ADMIN, GLOBEX, SETTLE};
use crate::support::*;
use crate::webhooks::receiver::{Receiver, Recorded};

/// (tenant, type) → how many deliveries arrived with them.
fn received(requests: &[Recorded]) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for r in requests {
        let body = r.json();
        let tenant = body["tenant"].as_str().unwrap_or("-").to_owned();
        *out.entry((tenant, s(&body["type"]).to_owned()))
            .or_default() += 1;
    }
    out
}

fn counts(pairs: &[(&str, &str, usize)]) -> BTreeMap<(String, String), usize> {
    pairs
        .iter()
        .map(|(t, ty, n)| (((*t).to_owned(), (*ty).to_owned()), *n))
        .collect()
}

#[test]
fn a_tenant_endpoint_receives_its_tenant_events_and_reports_only() {
    let acme_rx = Receiver::always(200);
    let globex_rx = Receiver::always(200);
    let global_rx = Receiver::always(200);
    let failing = Receiver::always(500);
    let d = Daemon::start(&config());
    let endpoint = |key: &str, body: serde_json::Value| {
        expect(d.addr, key, "POST", "/v1/endpoints", Some(&body), 201)
    };
    endpoint(ACME.write, json!({"url": acme_rx.url("/")}));
    endpoint(GLOBEX.write, json!({"url": globex_rx.url("/")}));
    endpoint(ADMIN, json!({"url": global_rx.url("/")}));
    let failing_ep = endpoint(
        ACME.write,
        json!({"url": failing.url("/"), "event_types": ["invoice.*"]}),
    );

    let post = |key: &str, n: usize| {
        for i in 0..n {
            let body = json!({"type": "invoice.paid", "data": {"i": i}});
            expect(d.addr, key, "POST", "/v1/events", Some(&body), 201);
        }
    };
    post(ACME.write, 3);
    post(GLOBEX.write, 2);
    post(ADMIN, 1);

    // Every posted event, plus one delivery.exhausted per failed attempt
    // at acme's failing endpoint, reaches the endpoint without a tenant.
    global_rx.wait_for_requests(9, deadline(SETTLE));
    wait_until_settled(d.addr);

    assert_eq!(
        received(&acme_rx.requests()),
        counts(&[
            ("acme", "delivery.exhausted", 3),
            ("acme", "invoice.paid", 3)
        ])
    );
    assert_eq!(
        received(&globex_rx.requests()),
        counts(&[("globex", "invoice.paid", 2)])
    );
    assert_eq!(
        received(&global_rx.requests()),
        counts(&[
            ("-", "invoice.paid", 1),
            ("acme", "delivery.exhausted", 3),
            ("acme", "invoice.paid", 3),
            ("globex", "invoice.paid", 2),
        ])
    );
    assert_eq!(
        received(&failing.requests()),
        counts(&[("acme", "invoice.paid", 3)])
    );
    for report in acme_rx
        .requests()
        .iter()
        .map(Recorded::json)
        .filter(|b| b["type"] == "delivery.exhausted")
    {
        assert_eq!(report["data"]["endpoint_id"], failing_ep["id"], "{report}");
    }

    // The reports are acme's events in the log too: globex never sees them.
    let globex_sees = all_pages(d.addr, GLOBEX.read, "/v1/events", "events", 100);
    assert_eq!(globex_sees.len(), 2, "{globex_sees:#?}");
    let acme_reports = all_pages(
        d.addr,
        ACME.read,
        "/v1/events?type=delivery.exhausted",
        "events",
        100,
    );
    assert_eq!(acme_reports.len(), 3);
}
