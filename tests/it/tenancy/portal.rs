//! The customer portal against the real daemon: links minted only by
//! unscoped admins; the link's token the only credential of the page and
//! its API, on both listeners; every portal route probed with the other
//! tenant's ids answering exactly as a missing id, with nothing changed;
//! altered and expired links refused.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use herald::clock::{now_ms, parse_rfc3339};
use herald::portal_link::PortalKey;
use serde_json::{json, Value};

use super::{
    all_pages, call, config, expect, ids, wait_until_settled, ACME, ACME_ADMIN, ADMIN, GLOBEX,
};
use crate::support::*;
use crate::webhooks::receiver::Receiver;

const MISSING_ENDPOINT: &str = "ep_00000000000000000000000001";
const MISSING_DELIVERY: &str = "dlv_00000000000f4240";

/// The tenancy keys, and a public listener beside the private one.
pub(super) fn portal_config() -> String {
    format!("{}\n[public]\nlisten = \"127.0.0.1:0\"\n", config())
}

fn mint(addr: SocketAddr, key: &str, body: &Value) -> Response {
    call(addr, key, "POST", "/v1/portal-links", Some(body))
}

/// A link's token: the last segment of its URL.
fn token_of(url: &str) -> String {
    url.rsplit('/').next().expect("a URL").to_owned()
}

pub(super) fn link(addr: SocketAddr, tenant: &str) -> String {
    let resp = mint(addr, ADMIN, &json!({"tenant": tenant}));
    assert_eq!(resp.status, 201, "{}", resp.text());
    token_of(s(&resp.json()["url"]))
}

/// A portal API call: no API key, only the token in the path.
fn portal(
    addr: SocketAddr,
    token: &str,
    method: &str,
    rest: &str,
    body: Option<&Value>,
) -> Response {
    let text = body.map(Value::to_string).unwrap_or_default();
    let headers: &[(&str, &str)] = if body.is_some() { &[JSON] } else { &[] };
    request(
        addr,
        method,
        &format!("/portal/{token}/api/{rest}"),
        headers,
        text.as_bytes(),
    )
}

fn portal_ok(
    addr: SocketAddr,
    token: &str,
    method: &str,
    rest: &str,
    body: Option<&Value>,
    status: u16,
) -> Value {
    let resp = portal(addr, token, method, rest, body);
    assert_eq!(resp.status, status, "{method} {rest}: {}", resp.text());
    if resp.body.is_empty() {
        Value::Null
    } else {
        resp.json()
    }
}

/// The headers every portal answer carries: the token is in the address.
fn assert_guarded(resp: &Response, what: &str) {
    let policy = resp.header("content-security-policy").unwrap_or_default();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(part), "{what}: CSP {policy:?} lacks {part}");
    }
    assert!(!policy.contains("unsafe-inline"), "{what}: {policy}");
    assert_eq!(
        resp.header("referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
    assert_eq!(resp.header("cache-control"), Some("no-store"), "{what}");
    assert_eq!(resp.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        resp.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
}

#[test]
fn links_are_minted_by_unscoped_admins_only_and_open_the_page_on_both_listeners() {
    let d = Daemon::start(&portal_config());
    let public = d.logged_addr("public listening");

    let before = now_ms();
    let resp = mint(d.addr, ADMIN, &json!({"tenant": ACME.name}));
    let after = now_ms();
    assert_eq!(resp.status, 201, "{}", resp.text());
    let answer = resp.json();
    let url = s(&answer["url"]);
    assert!(
        url.starts_with(&format!("http://{public}/portal/")),
        "{url} is not on the public listener {public}"
    );
    let expires = parse_rfc3339(s(&answer["expires_at"])).expect("RFC 3339");
    assert!(
        (before + 3_600_000..=after + 3_600_000).contains(&expires),
        "the default lifetime is an hour: {answer}"
    );
    let keys: BTreeSet<&str> = answer
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["url", "expires_at"]));
    for ttl in [60, 604_800] {
        let resp = mint(
            d.addr,
            ADMIN,
            &json!({"tenant": ACME.name, "ttl_secs": ttl}),
        );
        assert_eq!(resp.status, 201, "ttl {ttl}: {}", resp.text());
    }

    // Refused: bad fields, other keys, no key, the public listener.
    for (body, status, code, field) in [
        (
            json!({"tenant": "a", "ttl_secs": 59}),
            422,
            "invalid_field",
            Some("ttl_secs"),
        ),
        (
            json!({"tenant": "a", "ttl_secs": 604_801}),
            422,
            "invalid_field",
            Some("ttl_secs"),
        ),
        (
            json!({"tenant": "a", "ttl_secs": -1}),
            400,
            "invalid_body",
            None,
        ),
        (
            json!({"tenant": "no spaces"}),
            422,
            "invalid_field",
            Some("tenant"),
        ),
        (json!({"tenant": ""}), 422, "invalid_field", Some("tenant")),
        (json!({"ttl_secs": 60}), 400, "invalid_body", None),
        (
            json!({"tenant": "a", "role": "admin"}),
            400,
            "invalid_body",
            None,
        ),
        (json!(["a"]), 400, "invalid_body", None),
    ] {
        let resp = mint(d.addr, ADMIN, &body);
        assert_eq!(
            (resp.status, resp.code()),
            (status, code.to_owned()),
            "{body}: {}",
            resp.text()
        );
        assert_eq!(resp.json()["error"]["field"].as_str(), field, "{body}");
    }
    let plain = request(
        d.addr,
        "POST",
        "/v1/portal-links",
        &[
            ("Authorization", &format!("Bearer {ADMIN}")),
            ("Content-Type", "text/plain"),
        ],
        br#"{"tenant": "a"}"#,
    );
    assert_eq!(plain.status, 415, "{}", plain.text());
    for key in [ACME.write, ACME.read, GLOBEX.write, ACME_ADMIN] {
        let resp = mint(d.addr, key, &json!({"tenant": ACME.name}));
        assert_eq!(
            (resp.status, resp.code()),
            (403, "forbidden".into()),
            "{}",
            resp.text()
        );
    }
    let keyless = request(
        d.addr,
        "POST",
        "/v1/portal-links",
        &[JSON],
        br#"{"tenant": "acme"}"#,
    );
    assert_eq!(keyless.status, 401);
    let on_public = request(
        public,
        "POST",
        "/v1/portal-links",
        &[("Authorization", &format!("Bearer {ADMIN}")), JSON],
        br#"{"tenant": "acme"}"#,
    );
    assert_eq!(on_public.status, 404, "{}", on_public.text());

    // The page, its assets and its API answer on both listeners.
    let token = token_of(url);
    for addr in [public, d.addr] {
        let page = request(addr, "GET", &format!("/portal/{token}"), &[], b"");
        assert_eq!(page.status, 200, "{}", page.text());
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_guarded(&page, "page");
        let html = page.text();
        assert!(!html.contains(&token), "the page does not repeat the token");
        for tag in html.split("<script").skip(1) {
            let head = tag.split('>').next().unwrap_or_default();
            assert!(head.contains("src="), "inline script: <script{head}>");
        }
        for (asset, kind) in [
            ("/portal-assets/portal.js", "text/javascript"),
            ("/portal-assets/portal.css", "text/css"),
        ] {
            let resp = request(addr, "GET", asset, &[], b"");
            assert_eq!(resp.status, 200, "{asset}");
            assert!(resp
                .header("content-type")
                .unwrap_or_default()
                .starts_with(kind));
            assert_guarded(&resp, asset);
            assert!(
                html.contains(&format!("..{asset}")),
                "the page loads {asset}"
            );
        }
        let session = portal(addr, &token, "GET", "session", None);
        assert_eq!(session.status, 200, "{}", session.text());
        assert_guarded(&session, "api");
        assert_eq!(session.json()["tenant"], ACME.name);
        assert_eq!(session.json()["expires_at"], answer["expires_at"]);
    }

    // Methods a path does not take.
    for (method, path) in [
        ("POST", format!("/portal/{token}")),
        (
            "DELETE",
            format!("/portal/{token}/api/endpoints/{MISSING_ENDPOINT}"),
        ),
        ("PUT", format!("/portal/{token}/api/endpoints")),
        (
            "GET",
            format!("/portal/{token}/api/deliveries/{MISSING_DELIVERY}/retry"),
        ),
        ("POST", "/portal-assets/portal.js".to_owned()),
    ] {
        let resp = request(public, method, &path, &[], b"");
        assert_eq!(resp.status, 405, "{method} {path}: {}", resp.text());
    }
}

#[test]
fn altered_links_are_refused_on_the_page_and_every_api_route() {
    let d = Daemon::start(&portal_config());
    let token = link(d.addr, ACME.name);
    let bytes = URL_SAFE_NO_PAD.decode(&token).expect("base64url");
    let mut altered = Vec::new();
    // Every byte: the expiry, the tenant and the MAC.
    for i in 0..bytes.len() {
        for flip in [0x01, 0x80] {
            let mut copy = bytes.clone();
            copy[i] ^= flip;
            altered.push(URL_SAFE_NO_PAD.encode(&copy));
        }
    }
    altered.push(token[..token.len() - 1].to_owned());
    altered.push(format!("{token}A"));
    altered.push("A".repeat(600));
    altered.push("not-a-token".to_owned());
    for bad in &altered {
        let page = request(d.addr, "GET", &format!("/portal/{bad}"), &[], b"");
        assert_eq!(page.status, 401, "{bad}: {}", page.text());
        assert!(
            page.text().contains("expired or is not valid"),
            "{}",
            page.text()
        );
        assert_guarded(&page, "refusal page");
        let api = portal(d.addr, bad, "GET", "endpoints", None);
        assert_eq!(
            (api.status, api.code()),
            (401, "unauthorized".into()),
            "{bad}"
        );
    }
    // Unaltered, it still works.
    portal_ok(d.addr, &token, "GET", "endpoints", None, 200);
}

/// Expiry is proved twice: `src/api/portal` unit-tests the token check at
/// an injected time; here a genuine token whose expiry has passed is made
/// with the daemon's own key, read from its store while it is stopped (the
/// shortest link the API mints lives 60 s, and tests do not sleep).
#[test]
fn a_genuine_link_past_its_expiry_is_refused() {
    let mut d = Daemon::start(&config());
    let minted = link(d.addr, ACME.name);
    assert!(d.sigterm().success());
    let (expired, fresh) = {
        let key = PortalKey::new(d.stored_secret("portal"));
        let now = now_ms();
        (
            key.mint(ACME.name, now - 1),
            key.mint(ACME.name, now + 600_000),
        )
    };
    d.restart();
    for token in [&fresh, &minted] {
        let page = request(d.addr, "GET", &format!("/portal/{token}"), &[], b"");
        assert_eq!(page.status, 200, "a genuine link works across restarts");
        portal_ok(d.addr, token, "GET", "endpoints", None, 200);
    }
    let page = request(d.addr, "GET", &format!("/portal/{expired}"), &[], b"");
    assert_eq!(page.status, 401, "{}", page.text());
    assert!(page.text().contains("expired or is not valid"));
    for rest in ["session", "endpoints", "deliveries", "event-types"] {
        let resp = portal(d.addr, &expired, "GET", rest, None);
        assert_eq!(
            (resp.status, resp.code()),
            (401, "unauthorized".into()),
            "{rest}"
        );
    }
    let create = portal(
        d.addr,
        &expired,
        "POST",
        "endpoints",
        Some(&json!({"url": "http://127.0.0.1:9/"})),
    );
    assert_eq!(create.status, 401);
    assert!(
        expect(d.addr, ADMIN, "GET", "/v1/endpoints", None, 200)["endpoints"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// Everything the admin sees, secrets included: what the probes must not change.
fn snapshot(addr: SocketAddr) -> Value {
    let endpoints = expect(addr, ADMIN, "GET", "/v1/endpoints", None, 200);
    let mut one_by_one = Vec::new();
    for id in ids(endpoints["endpoints"].as_array().unwrap()) {
        let at = format!("/v1/endpoints/{id}");
        one_by_one.push(json!({
            "endpoint": expect(addr, ADMIN, "GET", &at, None, 200),
            "secret": expect(addr, ADMIN, "GET", &format!("{at}/secret"), None, 200),
            "stats": expect(addr, ADMIN, "GET", &format!("{at}/stats"), None, 200)["deliveries"],
        }));
    }
    json!({
        "events": all_pages(addr, ADMIN, "/v1/events", "events", 1000),
        "endpoints": endpoints,
        "one_by_one": one_by_one,
        "deliveries": all_pages(addr, ADMIN, "/v1/deliveries", "deliveries", 1000),
    })
}

/// Every portal request about one object by id, with a body where it needs one.
fn id_probes(kind: &str, id: &str) -> Vec<(&'static str, String, Option<Value>)> {
    match kind {
        "endpoint" => {
            let at = format!("endpoints/{id}");
            vec![
                ("GET", at.clone(), None),
                ("PATCH", at.clone(), Some(json!({"description": "taken"}))),
                (
                    "PATCH",
                    at.clone(),
                    Some(json!({"url": "http://127.0.0.1:9/"})),
                ),
                ("GET", format!("{at}/stats"), None),
                ("GET", format!("{at}/secret"), None),
                ("POST", format!("{at}/rotate-secret"), Some(json!({}))),
                ("POST", format!("{at}/test"), None),
                ("POST", format!("{at}/enable"), None),
                ("POST", format!("{at}/disable"), None),
            ]
        }
        "delivery" => vec![
            ("GET", format!("deliveries/{id}"), None),
            ("POST", format!("deliveries/{id}/retry"), None),
        ],
        _ => unreachable!("{kind}"),
    }
}

/// A healthy and a failing endpoint made through the portal (or the admin
/// key for objects of no tenant), and events for them.
fn populate(addr: SocketAddr, token: Option<&str>, key: &str, ok: &Receiver, bad: &Receiver) {
    for receiver in [ok, bad] {
        let body = json!({"url": receiver.url("/"), "event_types": ["invoice.*"]});
        match token {
            Some(token) => {
                let created = portal_ok(addr, token, "POST", "endpoints", Some(&body), 201);
                assert!(s(&created["secret"]).starts_with("whsec_"), "{created}");
            }
            None => {
                expect(addr, key, "POST", "/v1/endpoints", Some(&body), 201);
            }
        }
    }
    for i in 0..2 {
        let event = json!({"type": "invoice.paid", "data": {"i": i}});
        expect(addr, key, "POST", "/v1/events", Some(&event), 201);
    }
}

#[test]
fn every_portal_route_answers_another_tenants_ids_as_missing_and_changes_nothing() {
    let ok = Receiver::always(200);
    let bad = Receiver::always(500);
    let d = Daemon::start(&portal_config());
    let public = d.logged_addr("public listening");
    let acme = link(d.addr, ACME.name);
    let globex = link(d.addr, GLOBEX.name);
    populate(d.addr, Some(&acme), ACME.write, &ok, &bad);
    populate(d.addr, Some(&globex), GLOBEX.write, &ok, &bad);
    populate(d.addr, None, ADMIN, &ok, &bad);
    wait_until_settled(d.addr);

    let before = snapshot(d.addr);
    let received = (ok.requests().len(), bad.requests().len());
    let owned = |tenant: Option<&str>| {
        let tenant = tenant.map(Value::from).unwrap_or(Value::Null);
        let endpoints: Vec<String> = before["endpoints"]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["tenant"] == tenant)
            .map(|e| s(&e["id"]).to_owned())
            .collect();
        let deliveries: Vec<String> = before["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| endpoints.iter().any(|e| d["endpoint_id"] == *e))
            .map(|d| s(&d["id"]).to_owned())
            .collect();
        (endpoints, deliveries)
    };
    let (acme_endpoints, acme_deliveries) = owned(Some(ACME.name));
    let (globex_endpoints, globex_deliveries) = owned(Some(GLOBEX.name));
    let (global_endpoints, global_deliveries) = owned(None);
    assert_eq!(
        acme_endpoints.len(),
        2,
        "made through the portal, for its tenant"
    );
    assert_eq!(acme_deliveries.len(), 4);
    // Every probe list below is full, so no loop over victims is empty.
    assert_eq!(globex_endpoints.len(), 2);
    assert_eq!(globex_deliveries.len(), 4);
    assert_eq!(global_endpoints.len(), 2);
    assert!(!global_deliveries.is_empty());

    for (token, own_endpoints, own_deliveries, victims) in [
        (
            &acme,
            &acme_endpoints,
            &acme_deliveries,
            [
                (&globex_endpoints, &globex_deliveries),
                (&global_endpoints, &global_deliveries),
            ],
        ),
        (
            &globex,
            &globex_endpoints,
            &globex_deliveries,
            [
                (&acme_endpoints, &acme_deliveries),
                (&global_endpoints, &global_deliveries),
            ],
        ),
    ] {
        for addr in [public, d.addr] {
            for (endpoints, deliveries) in victims {
                for (kind, victim_ids, missing) in [
                    ("endpoint", endpoints, MISSING_ENDPOINT),
                    ("delivery", deliveries, MISSING_DELIVERY),
                ] {
                    for id in victim_ids.iter() {
                        for ((method, rest, body), (_, missing_rest, _)) in id_probes(kind, id)
                            .into_iter()
                            .zip(id_probes(kind, missing))
                        {
                            let expected =
                                portal(addr, token, method, &missing_rest, body.as_ref());
                            let got = portal(addr, token, method, &rest, body.as_ref());
                            assert_eq!(
                                (got.status, got.code()),
                                (expected.status, expected.code()),
                                "{method} {rest}"
                            );
                            assert_eq!(got.status, 404, "{method} {rest}: {}", got.text());
                        }
                    }
                }
                // A list filtered by another's endpoint holds nothing.
                let filtered = format!("deliveries?endpoint={}", endpoints[0]);
                let found = portal_ok(addr, token, "GET", &filtered, None, 200);
                assert_eq!(found["deliveries"], json!([]), "{filtered}");
            }
            // Naming another tenant, or none, is forbidden.
            let victim = if token == &acme {
                GLOBEX.name
            } else {
                ACME.name
            };
            let url = "http://127.0.0.1:9/";
            for (method, rest, body) in [
                (
                    "POST",
                    "endpoints".to_owned(),
                    json!({"url": url, "tenant": victim}),
                ),
                (
                    "POST",
                    "endpoints".to_owned(),
                    json!({"url": url, "tenant": null}),
                ),
                (
                    "PATCH",
                    format!("endpoints/{}", own_endpoints[0]),
                    json!({"tenant": victim}),
                ),
                (
                    "PATCH",
                    format!("endpoints/{}", own_endpoints[0]),
                    json!({"tenant": null}),
                ),
            ] {
                let resp = portal(addr, token, method, &rest, Some(&body));
                assert_eq!(
                    (resp.status, resp.code()),
                    (403, "forbidden".into()),
                    "{method} {rest} {body}"
                );
            }
            let named = portal(
                addr,
                token,
                "GET",
                &format!("endpoints?tenant={victim}"),
                None,
            );
            assert_eq!((named.status, named.code()), (403, "forbidden".into()));

            // Lists hold exactly the tenant's own.
            let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
            let listed = portal_ok(addr, token, "GET", "endpoints", None, 200);
            assert_eq!(
                set(&ids(listed["endpoints"].as_array().unwrap())),
                set(own_endpoints)
            );
            let listed = portal_ok(addr, token, "GET", "deliveries", None, 200);
            assert_eq!(
                set(&ids(listed["deliveries"].as_array().unwrap())),
                set(own_deliveries)
            );
        }
    }

    assert_eq!(
        snapshot(d.addr),
        before,
        "a refused portal request changed something"
    );
    assert_eq!(
        (ok.requests().len(), bad.requests().len()),
        received,
        "a refused portal request reached a receiver"
    );

    // The same routes act on the tenant's own objects.
    // The tenant's endpoint at the receiver that answers 200.
    let own = before["endpoints"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["tenant"] == ACME.name && e["url"].as_str() == Some(&ok.url("/")))
        .map(|e| s(&e["id"]).to_owned())
        .expect("acme's endpoint at the healthy receiver");
    let own = &own;
    let test = portal_ok(
        d.addr,
        &acme,
        "POST",
        &format!("endpoints/{own}/test"),
        None,
        200,
    );
    assert_eq!(test["status_code"], 200, "{test}");
    assert_eq!(ok.requests().len(), received.0 + 1);
    assert_eq!(
        ok.requests().len() + bad.requests().len(),
        received.0 + received.1 + 1
    );
    let secret = portal_ok(
        d.addr,
        &acme,
        "GET",
        &format!("endpoints/{own}/secret"),
        None,
        200,
    );
    let rotated = portal_ok(
        d.addr,
        &acme,
        "POST",
        &format!("endpoints/{own}/rotate-secret"),
        Some(&json!({})),
        200,
    );
    assert_ne!(rotated["secret"], secret["secret"]);
    let patched = portal_ok(
        d.addr,
        &acme,
        "PATCH",
        &format!("endpoints/{own}"),
        Some(&json!({"description": "mine"})),
        200,
    );
    assert_eq!(patched["description"], "mine");
    assert_eq!(patched["tenant"], ACME.name);
    let failed = before["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["status"] == "failed" && acme_deliveries.iter().any(|a| d["id"] == *a))
        .expect("acme has a dead letter");
    let retried = portal_ok(
        d.addr,
        &acme,
        "POST",
        &format!("deliveries/{}/retry", s(&failed["id"])),
        None,
        202,
    );
    assert_eq!(
        retried["attempts"].as_array().unwrap().len(),
        2,
        "{retried}"
    );
    assert_eq!(retried["attempts"][1]["trigger"], "manual");
    let catalog = portal_ok(d.addr, &acme, "GET", "event-types", None, 200);
    assert!(catalog["event_types"].is_array(), "{catalog}");
}
