//! Every route and every id of one tenant, probed with the other tenant's
//! keys: ids answer 404 exactly as missing ones, naming the other tenant
//! is 403, lists hold only the caller's own, read keys cannot write,
//! tenant keys cannot take backups or manage keys, and nothing changes.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::{json, Value};

use super::{
    all_pages, call, config, expect, ids, wait_until_settled, Tenant, ACME, ACME_ADMIN, ADMIN,
    GLOBEX,
};
use crate::support::*;
use crate::webhooks::receiver::Receiver;

/// Ids that exist nowhere, of each kind.
const MISSING_EVENT: &str = "evt_00000000000000000000000001";
const MISSING_ENDPOINT: &str = "ep_00000000000000000000000001";
const MISSING_DELIVERY: &str = "dlv_00000000000f4240";
const SINCE: &str = "2000-01-01T00:00:00Z";
/// What one owner (a tenant, or the admin for no tenant) holds.
#[derive(Default)]
struct Owned {
    events: Vec<String>,
    endpoints: Vec<String>,
    deliveries: Vec<String>,
}

/// A healthy and a failing endpoint, single and batched events.
fn populate(addr: SocketAddr, key: &str, tenant: Option<&str>, ok: &Receiver, bad: &Receiver) {
    for (receiver, what) in [(ok, "healthy"), (bad, "failing")] {
        let ep = expect(
            addr,
            key,
            "POST",
            "/v1/endpoints",
            Some(&json!({"url": receiver.url("/"), "description": what})),
            201,
        );
        assert_eq!(ep["tenant"].as_str(), tenant, "{ep}");
    }
    for i in 0..3 {
        let event = expect(
            addr,
            key,
            "POST",
            "/v1/events",
            Some(
                &json!({"type": "invoice.paid", "data": {"i": i}, "idempotency_key": format!("k{i}")}),
            ),
            201,
        );
        assert_eq!(event["tenant"].as_str(), tenant, "{event}");
    }
    let batch = json!({"events": [{"type": "user.created"}, {"type": "user.deleted"}]});
    expect(addr, key, "POST", "/v1/events/batch", Some(&batch), 200);
}

/// Everything the admin sees: what must not change under the probes.
fn snapshot(addr: SocketAddr) -> Value {
    let endpoints = expect(addr, ADMIN, "GET", "/v1/endpoints", None, 200);
    let mut one_by_one = Vec::new();
    for id in ids(endpoints["endpoints"].as_array().unwrap()) {
        one_by_one.push(expect(
            addr,
            ADMIN,
            "GET",
            &format!("/v1/endpoints/{id}"),
            None,
            200,
        ));
    }
    json!({
        "events": all_pages(addr, ADMIN, "/v1/events", "events", 1000),
        "endpoints": endpoints,
        "one_by_one": one_by_one,
        "deliveries": all_pages(addr, ADMIN, "/v1/deliveries", "deliveries", 1000),
        "keys": expect(addr, ADMIN, "GET", "/v1/keys", None, 200),
    })
}

/// Who owns what, read through the admin key.
fn owners(snapshot: &Value) -> [(Option<&'static str>, Owned); 3] {
    let mut out = [
        (Some(ACME.name), Owned::default()),
        (Some(GLOBEX.name), Owned::default()),
        (None, Owned::default()),
    ];
    for (tenant, owned) in &mut out {
        let tenant = tenant.map(Value::from).unwrap_or(Value::Null);
        for event in snapshot["events"].as_array().unwrap() {
            if event["tenant"] == tenant {
                owned.events.push(s(&event["id"]).to_owned());
            }
        }
        for ep in snapshot["endpoints"]["endpoints"].as_array().unwrap() {
            if ep["tenant"] == tenant {
                owned.endpoints.push(s(&ep["id"]).to_owned());
            }
        }
        for delivery in snapshot["deliveries"].as_array().unwrap() {
            if owned
                .endpoints
                .iter()
                .any(|e| delivery["endpoint_id"] == *e)
            {
                owned.deliveries.push(s(&delivery["id"]).to_owned());
            }
        }
    }
    out
}

/// Every request about one object by id, with a body where it needs one.
fn id_probes(kind: &str, id: &str) -> Vec<(&'static str, String, Option<Value>)> {
    let since = json!({"since": SINCE});
    match kind {
        "event" => vec![("GET", format!("/v1/events/{id}"), None)],
        "endpoint" => {
            let at = format!("/v1/endpoints/{id}");
            vec![
                ("GET", at.clone(), None),
                ("PATCH", at.clone(), Some(json!({"description": "taken"}))),
                ("DELETE", at.clone(), None),
                ("GET", format!("{at}/stats"), None),
                ("GET", format!("{at}/secret"), None),
                ("POST", format!("{at}/rotate-secret"), Some(json!({}))),
                ("POST", format!("{at}/test"), None),
                ("POST", format!("{at}/enable"), None),
                ("POST", format!("{at}/disable"), None),
                ("POST", format!("{at}/recover"), Some(since.clone())),
                ("POST", format!("{at}/replay"), Some(since)),
            ]
        }
        "delivery" => vec![
            ("GET", format!("/v1/deliveries/{id}"), None),
            ("POST", format!("/v1/deliveries/{id}/retry"), None),
        ],
        _ => unreachable!("{kind}"),
    }
}

/// Each id of `victim` answers `attacker`'s keys exactly as a missing id
/// of its kind does: 404 for the write key, and for the read key 404 on
/// reads and 403 on writes (its role is checked first).
fn probe_ids(addr: SocketAddr, attacker: &Tenant, victim: &Owned) {
    for (kind, owned, missing) in [
        ("event", &victim.events, MISSING_EVENT),
        ("endpoint", &victim.endpoints, MISSING_ENDPOINT),
        ("delivery", &victim.deliveries, MISSING_DELIVERY),
    ] {
        assert!(!owned.is_empty(), "nothing of kind {kind} to probe");
        let as_missing = id_probes(kind, missing);
        for id in owned {
            for ((method, path, body), (_, missing_path, _)) in
                id_probes(kind, id).into_iter().zip(&as_missing)
            {
                for key in [attacker.write, attacker.read] {
                    let expected = call(addr, key, method, missing_path, body.as_ref());
                    let got = call(addr, key, method, &path, body.as_ref());
                    assert_eq!(
                        (got.status, got.code()),
                        (expected.status, expected.code()),
                        "{} {method} {path}",
                        attacker.name
                    );
                    // Reading a secret needs a write key: it lets one forge deliveries.
                    let needs_write = method != "GET" || path.ends_with("/secret");
                    let status = if key == attacker.read && needs_write {
                        403
                    } else {
                        404
                    };
                    assert_eq!(got.status, status, "{method} {path}: {}", got.text());
                }
            }
        }
    }
}

/// Writes and list filters naming `victim`'s tenant, or none, are 403.
fn probe_naming(addr: SocketAddr, attacker: &Tenant, own_endpoint: &str, victim: &str) {
    let forbidden = |method: &str, path: &str, body: Option<Value>, field: Option<&str>| {
        let resp = call(addr, attacker.write, method, path, body.as_ref());
        assert_eq!(resp.status, 403, "{method} {path}: {}", resp.text());
        assert_eq!(resp.code(), "forbidden");
        assert_eq!(
            resp.json()["error"]["field"].as_str(),
            field,
            "{method} {path}"
        );
    };
    let url = "http://127.0.0.1:9/";
    forbidden(
        "POST",
        "/v1/events",
        Some(json!({"type": "a", "tenant": victim})),
        Some("tenant"),
    );
    forbidden(
        "POST",
        "/v1/events/batch",
        Some(json!({"events": [{"type": "a"}, {"type": "a", "tenant": victim}]})),
        Some("events[1].tenant"),
    );
    forbidden(
        "POST",
        "/v1/endpoints",
        Some(json!({"url": url, "tenant": victim})),
        Some("tenant"),
    );
    forbidden(
        "POST",
        "/v1/endpoints",
        Some(json!({"url": url, "tenant": null})),
        Some("tenant"),
    );
    let own = format!("/v1/endpoints/{own_endpoint}");
    forbidden(
        "PATCH",
        &own,
        Some(json!({"tenant": victim})),
        Some("tenant"),
    );
    forbidden("PATCH", &own, Some(json!({"tenant": null})), Some("tenant"));
    for list in ["/v1/events", "/v1/endpoints"] {
        let path = format!("{list}?tenant={victim}");
        let resp = call(addr, attacker.read, "GET", &path, None);
        assert_eq!(
            (resp.status, resp.code()),
            (403, "forbidden".into()),
            "{path}"
        );
    }
}

/// Lists seen with `attacker`'s keys hold exactly its own objects.
fn probe_lists(addr: SocketAddr, attacker: &Tenant, own: &Owned, victim: &Owned, admin: &Value) {
    let key = attacker.read;
    let set = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
    let events = all_pages(addr, key, "/v1/events", "events", 2);
    assert_eq!(
        set(ids(&events)),
        set(own.events.clone()),
        "{}",
        attacker.name
    );
    let named = all_pages(
        addr,
        key,
        &format!("/v1/events?tenant={}", attacker.name),
        "events",
        2,
    );
    assert_eq!(ids(&named), ids(&events));
    let typed = all_pages(addr, key, "/v1/events?type=invoice.paid", "events", 2);
    assert_eq!(typed.len(), 3, "{typed:#?}");
    assert!(typed.iter().all(|e| e["tenant"] == attacker.name));

    let endpoints = expect(addr, key, "GET", "/v1/endpoints", None, 200);
    let endpoints = endpoints["endpoints"].as_array().unwrap();
    assert_eq!(set(ids(endpoints)), set(own.endpoints.clone()));

    let deliveries = all_pages(addr, key, "/v1/deliveries", "deliveries", 2);
    assert_eq!(set(ids(&deliveries)), set(own.deliveries.clone()));
    let failed: BTreeSet<String> = admin["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == "failed" && own.deliveries.iter().any(|o| d["id"] == *o))
        .map(|d| s(&d["id"]).to_owned())
        .collect();
    assert!(!failed.is_empty(), "each tenant has a failing endpoint");
    let dead = all_pages(addr, key, "/v1/dead-letters", "deliveries", 2);
    assert_eq!(set(ids(&dead)), failed);
    let by_status = all_pages(addr, key, "/v1/deliveries?status=failed", "deliveries", 2);
    assert_eq!(set(ids(&by_status)), failed);
    let own_endpoint = format!("/v1/deliveries?endpoint={}", own.endpoints[0]);
    assert!(!all_pages(addr, key, &own_endpoint, "deliveries", 2).is_empty());
    for filter in [
        format!("endpoint={}", victim.endpoints[0]),
        format!("event={}", victim.events[0]),
    ] {
        for list in ["/v1/deliveries", "/v1/dead-letters"] {
            if list == "/v1/dead-letters" && filter.starts_with("event") {
                continue;
            }
            let path = format!("{list}?{filter}");
            let found = all_pages(addr, key, &path, "deliveries", 2);
            assert!(
                found.is_empty(),
                "{} sees {path}: {found:#?}",
                attacker.name
            );
        }
    }
}

/// Every route that may change state, refused to a read key of the
/// tenant that owns the object.
fn probe_read_key_writes(addr: SocketAddr, tenant: &Tenant, own: &Owned) {
    let mut writes: Vec<(&str, String, Option<Value>)> = vec![
        ("POST", "/v1/events".into(), Some(json!({"type": "a"}))),
        (
            "POST",
            "/v1/events/batch".into(),
            Some(json!({"events": [{"type": "a"}]})),
        ),
        (
            "POST",
            "/v1/endpoints".into(),
            Some(json!({"url": "http://127.0.0.1:9/"})),
        ),
        (
            "POST",
            "/v1/emails".into(),
            Some(
                json!({"from": "a@example.com", "to": "b@example.net", "subject": "s", "text": "t"}),
            ),
        ),
        (
            "PUT",
            "/v1/suppressions/b@example.net".into(),
            Some(json!({})),
        ),
        ("DELETE", "/v1/suppressions/b@example.net".into(), None),
    ];
    for (method, path, body) in id_probes("endpoint", &own.endpoints[0])
        .into_iter()
        .chain(id_probes("delivery", &own.deliveries[0]))
    {
        if method != "GET" {
            writes.push((method, path, body));
        }
    }
    for (method, path, body) in writes {
        let resp = call(addr, tenant.read, method, &path, body.as_ref());
        assert_eq!(resp.status, 403, "{method} {path}: {}", resp.text());
        assert_eq!(resp.code(), "forbidden", "{method} {path}");
    }
}

/// Backups, key management and the dashboard's overview refuse every key
/// but an unscoped admin.
fn probe_admin_routes(addr: SocketAddr) {
    let routes = [
        ("GET", "/v1/admin/backup", None),
        ("GET", "/v1/admin/overview", None),
        ("GET", "/v1/keys", None),
        ("POST", "/v1/keys", Some(json!({"role": "admin"}))),
        ("DELETE", "/v1/keys/key_00000000000000000000000001", None),
    ];
    for key in [ACME.read, ACME.write, GLOBEX.read, GLOBEX.write, ACME_ADMIN] {
        for (method, path, body) in &routes {
            let resp = call(addr, key, method, path, body.as_ref());
            assert_eq!(resp.status, 403, "{method} {path}: {}", resp.text());
            assert_eq!(resp.code(), "forbidden");
        }
    }
}

#[test]
fn each_tenant_is_refused_everything_of_the_other_and_nothing_changes() {
    let ok = Receiver::always(200);
    let bad = Receiver::always(500);
    let d = Daemon::start(&config());
    populate(d.addr, ACME.write, Some(ACME.name), &ok, &bad);
    populate(d.addr, GLOBEX.write, Some(GLOBEX.name), &ok, &bad);
    populate(d.addr, ADMIN, None, &ok, &bad);

    // Settled: every delivery attempted once (no retries configured), so
    // nothing moves on its own while the probes run.
    wait_until_settled(d.addr);
    let before = snapshot(d.addr);
    let requests_before = (ok.requests().len(), bad.requests().len());
    let [(_, acme), (_, globex), (_, global)] = owners(&before);
    // Herald's own delivery.exhausted events carry the failing endpoint's
    // tenant: 5 posted events and 5 reports of dead letters each.
    assert_eq!((acme.events.len(), globex.events.len()), (10, 10));

    let pairs = [
        (&ACME, &acme, &globex, GLOBEX.name),
        (&GLOBEX, &globex, &acme, ACME.name),
    ];
    for (attacker, own, victim, victim_name) in pairs {
        probe_ids(d.addr, attacker, victim);
        probe_ids(d.addr, attacker, &global);
        probe_naming(d.addr, attacker, &own.endpoints[0], victim_name);
        probe_lists(d.addr, attacker, own, victim, &before);
        probe_read_key_writes(d.addr, attacker, own);
        // A tenant key still reaches its own objects by id.
        for path in [
            format!("/v1/events/{}", own.events[0]),
            format!("/v1/endpoints/{}", own.endpoints[0]),
            format!("/v1/deliveries/{}", own.deliveries[0]),
        ] {
            expect(d.addr, attacker.read, "GET", &path, None, 200);
        }
    }
    probe_admin_routes(d.addr);

    assert_eq!(
        snapshot(d.addr),
        before,
        "a refused request changed something"
    );
    assert_eq!(
        (ok.requests().len(), bad.requests().len()),
        requests_before,
        "a refused request made a delivery attempt"
    );
}
