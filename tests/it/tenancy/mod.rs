//! Tenants as a boundary, tried against the real daemon: two tenants, each
//! with a read and a write key, probing each other's objects on every
//! route; keys created and revoked through the API; webhooks that
//! carry a tenant's events to that tenant's endpoints only; and the
//! customer portal, over HTTP and in a browser.

mod isolation;
mod keys;
mod mail_and_tracking;
mod portal;
mod portal_ui;
mod routing;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// Generous: a debug build on a loaded 2-core machine.
pub const SETTLE: Duration = Duration::from_secs(30);

/// An unscoped admin key (`server.api_keys`).
pub const ADMIN: &str = "admin-key-0123456789abcdefghij";

/// An admin key confined to acme: admin routes still refuse it.
pub const ACME_ADMIN: &str = "acme-admin-0123456789abcdefghij";

pub struct Tenant {
    pub name: &'static str,
    pub write: &'static str,
    pub read: &'static str,
}

pub const ACME: Tenant = Tenant {
    name: "acme",
    write: "acme-write-0123456789abcdefghij",
    read: "acme-read-0123456789abcdefghijk",
};

pub const GLOBEX: Tenant = Tenant {
    name: "globex",
    write: "globex-write-0123456789abcdefgh",
    read: "globex-read-0123456789abcdefghi",
};

/// Both tenants' keys and an admin, loopback receivers allowed, and no
/// retries: a failing delivery is a dead letter at once. The breaker never
/// opens: how many failures the global endpoint sees depends on how many
/// `delivery.exhausted` events land after it was created, and an open
/// breaker would hold the rest pending past the settling deadline.
pub fn config() -> String {
    let mut toml = format!(
        r#"
[server]
api_keys = ["{ADMIN}"]

[[server.keys]]
key = "{ACME_ADMIN}"
role = "admin"
tenant = "acme"
"#
    );
    for tenant in [&ACME, &GLOBEX] {
        for (key, role) in [(tenant.write, "write"), (tenant.read, "read")] {
            toml.push_str(&format!(
                "\n[[server.keys]]\nkey = \"{key}\"\nrole = \"{role}\"\ntenant = \"{}\"\n",
                tenant.name
            ));
        }
    }
    toml.push_str(
        r#"
[webhooks]
allow_networks = ["127.0.0.1/32"]
require_https = false
retry_schedule = []
timeout = "2s"
circuit_failures = 1000000
"#,
    );
    toml
}

/// A request with `key` as its bearer and `body` (if any) as JSON.
pub fn call(
    addr: SocketAddr,
    key: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Response {
    let auth = format!("Bearer {key}");
    let text = body.map(Value::to_string).unwrap_or_default();
    let mut headers = vec![("Authorization", auth.as_str())];
    if body.is_some() {
        headers.push(JSON);
    }
    request(addr, method, path, &headers, text.as_bytes())
}

/// The JSON of a call that must answer `status`.
pub fn expect(
    addr: SocketAddr,
    key: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    status: u16,
) -> Value {
    let resp = call(addr, key, method, path, body);
    assert_eq!(resp.status, status, "{method} {path}: {}", resp.text());
    if resp.body.is_empty() {
        Value::Null
    } else {
        resp.json()
    }
}

/// Every item under `items` of the listing at `path` seen with `key`,
/// following `next_cursor`; every page that has a next one must be full.
pub fn all_pages(addr: SocketAddr, key: &str, path: &str, items: &str, limit: usize) -> Vec<Value> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let mut page_path = format!("{path}{separator}limit={limit}");
        if let Some(c) = &cursor {
            page_path.push_str(&format!("&after={c}"));
        }
        let page = expect(addr, key, "GET", &page_path, None, 200);
        let found = page[items]
            .as_array()
            .unwrap_or_else(|| panic!("{page_path}: no {items} in {page}"));
        out.extend(found.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(found.len(), limit, "{page_path}: a page short of full");
                cursor = Some(next.to_owned());
            }
            None => {
                assert!(found.len() <= limit, "{page_path}: {} items", found.len());
                return out;
            }
        }
    }
    panic!("{path} did not end");
}

/// Waits until no delivery is pending: every one attempted once (no
/// retries configured), so nothing moves on its own afterwards.
pub fn wait_until_settled(addr: SocketAddr) {
    let settled = wait_until(deadline(SETTLE), || {
        all_pages(
            addr,
            ADMIN,
            "/v1/deliveries?status=pending",
            "deliveries",
            1000,
        )
        .is_empty()
    });
    assert!(settled, "deliveries did not settle");
}

/// The ids of `items`.
pub fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| s(&i["id"]).to_owned()).collect()
}
