//! What every node of a cluster must agree on besides the log: a key
//! created on one node opens every node, a key revoked on one closes every
//! node, an event type defined on one is checked by every node, and a
//! portal link made by one opens on every node.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use crate::support::*;
use crate::tenancy::call;

const ADMIN: &str = "configured-admin-key-for-the-shared-state-test";

fn node_toml(url: &str) -> String {
    format!(
        "[server]\napi_keys = [\"{ADMIN}\"]\n\
         [store]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\n"
    )
}

/// Whether `addr` answers `key` with `status` before the deadline: the
/// other nodes follow a change within a second, not at once.
fn eventually(addr: SocketAddr, key: &str, path: &str, status: u16) -> bool {
    wait_until(deadline(Duration::from_secs(15)), || {
        call(addr, key, "GET", path, None).status == status
    })
}

#[test]
fn keys_and_event_types_changed_on_one_node_hold_on_every_node() {
    if !super::postgres_or_skip() {
        return;
    }
    let url = fresh_database();
    let a = Daemon::start(&node_toml(&url));
    let b = Daemon::start(&node_toml(&url));

    let created = call(
        a.addr,
        ADMIN,
        "POST",
        "/v1/keys",
        Some(&json!({"role": "read", "tenant": "acme"})),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let key = s(&created.json()["key"]).to_owned();
    let id = s(&created.json()["id"]).to_owned();
    assert_eq!(call(a.addr, &key, "GET", "/v1/events", None).status, 200);
    assert!(
        eventually(b.addr, &key, "/v1/events", 200),
        "node b never accepted the key node a created"
    );
    let listed = call(b.addr, ADMIN, "GET", "/v1/keys", None).json();
    assert_eq!(listed["keys"][0]["id"], json!(id), "{listed}");

    let revoked = call(a.addr, ADMIN, "DELETE", &format!("/v1/keys/{id}"), None);
    assert_eq!(revoked.status, 204, "{}", revoked.text());
    // At once on the node that revoked it, within the follow interval on
    // the other.
    assert_eq!(call(a.addr, &key, "GET", "/v1/events", None).status, 401);
    assert!(
        eventually(b.addr, &key, "/v1/events", 401),
        "node b still accepts a key node a revoked"
    );

    let schema = json!({"versions": {"1": {
        "schema": {"type": "object", "required": ["total"],
                   "properties": {"total": {"type": "integer"}}},
        "sample": {"total": 1}}}});
    let put = call(
        a.addr,
        ADMIN,
        "PUT",
        "/v1/event-types/order.placed",
        Some(&schema),
    );
    assert!(put.status == 201, "{}", put.text());
    let bad = json!({"type": "order.placed", "data": {"total": "lots"}});
    let refused_on_b = wait_until(deadline(Duration::from_secs(15)), || {
        call(b.addr, ADMIN, "POST", "/v1/events", Some(&bad)).status == 422
    });
    assert!(refused_on_b, "node b never checked the type node a defined");
    // Until node b heard of the type its probes were plain events; from
    // then on a refused one leaves the log as it was.
    let logged = || {
        let log = call(a.addr, ADMIN, "GET", "/v1/events?limit=1000", None).json();
        log["events"].as_array().map_or(0, Vec::len)
    };
    let before = logged();
    let refused = call(b.addr, ADMIN, "POST", "/v1/events", Some(&bad));
    assert_eq!(refused.status, 422, "{}", refused.text());
    let good = json!({"type": "order.placed", "data": {"total": 3}});
    let accepted = call(b.addr, ADMIN, "POST", "/v1/events", Some(&good));
    assert_eq!(accepted.status, 201, "{}", accepted.text());
    assert_eq!(logged(), before + 1);
}

#[test]
fn a_portal_link_made_on_one_node_opens_on_every_node() {
    if !super::postgres_or_skip() {
        return;
    }
    let url = fresh_database();
    let a = Daemon::start(&node_toml(&url));
    let b = Daemon::start(&node_toml(&url));
    let made = call(
        a.addr,
        ADMIN,
        "POST",
        "/v1/portal-links",
        Some(&json!({"tenant": "acme"})),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let link = s(&made.json()["url"]).to_owned();
    let path = &link[link.find("/portal/").expect("a portal path")..];
    for node in [a.addr, b.addr] {
        let page = request(node, "GET", path, &[], b"");
        assert_eq!(page.status, 200, "{}", page.text());
        let session = request(node, "GET", &format!("{path}/api/session"), &[], b"");
        assert_eq!(session.json()["tenant"], "acme", "{}", session.text());
    }
    // An endpoint made through the portal on one node is the tenant's on
    // the other.
    let created = request(
        b.addr,
        "POST",
        &format!("{path}/api/endpoints"),
        &[("content-type", "application/json")],
        json!({"url": "https://hooks.example.com/acme"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let listed = call(a.addr, ADMIN, "GET", "/v1/endpoints?tenant=acme", None).json();
    assert_eq!(
        listed["endpoints"][0]["id"],
        created.json()["id"],
        "{listed}"
    );
}
