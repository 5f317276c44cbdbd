//! Keys created through the API: shown once, listed without the key,
//! scoped like configured keys, revoked at once, kept across restarts, and
//! never leaving keys in place without an admin key.

use serde_json::json;

use super::{call, config, expect, ACME, ADMIN};
use crate::support::*;

#[test]
fn a_created_key_is_shown_once_scoped_and_refused_at_once_when_revoked() {
    let mut d = Daemon::start(&config());
    let created = expect(
        d.addr,
        ADMIN,
        "POST",
        "/v1/keys",
        Some(&json!({"role": "write", "tenant": "acme", "description": "billing service"})),
        201,
    );
    let id = s(&created["id"]).to_owned();
    let key = s(&created["key"]).to_owned();
    assert!(id.starts_with("key_"), "{created}");
    assert!(key.len() >= 32, "{created}");
    assert_eq!(
        (
            &created["role"],
            &created["tenant"],
            &created["description"]
        ),
        (&json!("write"), &json!("acme"), &json!("billing service"))
    );

    let listed = expect(d.addr, ADMIN, "GET", "/v1/keys", None, 200);
    let listed = listed["keys"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], created["id"]);
    assert!(
        listed[0].get("key").is_none(),
        "the key is shown once: {listed:?}"
    );
    assert!(!listed[0].to_string().contains(&key));
    assert_eq!(listed[0]["created_at"], created["created_at"]);

    // Scoped like a configured acme write key.
    let event = expect(
        d.addr,
        &key,
        "POST",
        "/v1/events",
        Some(&json!({"type": "a"})),
        201,
    );
    assert_eq!(event["tenant"], "acme");
    let other = call(
        d.addr,
        &key,
        "POST",
        "/v1/events",
        Some(&json!({"type": "a", "tenant": "globex"})),
    );
    assert_eq!(other.status, 403, "{}", other.text());
    assert_eq!(call(d.addr, &key, "GET", "/v1/keys", None).status, 403);

    // Kept across a restart: the daemon loads stored keys at start.
    assert!(d.sigterm().success());
    d.restart();
    expect(d.addr, &key, "GET", "/v1/events", None, 200);

    expect(
        d.addr,
        ADMIN,
        "DELETE",
        &format!("/v1/keys/{id}"),
        None,
        204,
    );
    let refused = call(d.addr, &key, "GET", "/v1/events", None);
    assert_eq!(
        (refused.status, refused.code()),
        (401, "unauthorized".into())
    );
    let again = call(d.addr, ADMIN, "DELETE", &format!("/v1/keys/{id}"), None);
    assert_eq!((again.status, again.code()), (404, "key_not_found".into()));
    let listed = expect(d.addr, ADMIN, "GET", "/v1/keys", None, 200);
    assert_eq!(listed["keys"], json!([]));

    assert!(d.sigterm().success());
    d.restart();
    assert_eq!(call(d.addr, &key, "GET", "/v1/events", None).status, 401);
    // Configured keys are untouched by any of it.
    expect(d.addr, ACME.read, "GET", "/v1/events", None, 200);
}

#[test]
fn bad_key_requests_name_the_field_and_create_nothing() {
    let d = Daemon::start(&config());
    for (body, status, field) in [
        (json!({}), 422, Some("role")),
        (json!({"role": "owner"}), 422, Some("role")),
        (
            json!({"role": "read", "tenant": "a b"}),
            422,
            Some("tenant"),
        ),
        (
            json!({"role": "read", "description": "x".repeat(1025)}),
            422,
            Some("description"),
        ),
        (
            json!({"role": "read", "description": "a\nb"}),
            422,
            Some("description"),
        ),
        (json!({"role": "read", "scope": "all"}), 400, None),
        (json!({"role": 7}), 400, None),
    ] {
        let resp = call(d.addr, ADMIN, "POST", "/v1/keys", Some(&body));
        assert_eq!(resp.status, status, "{body}: {}", resp.text());
        assert_eq!(resp.json()["error"]["field"].as_str(), field, "{body}");
    }
    let not_json = request(
        d.addr,
        "POST",
        "/v1/keys",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
        b"role=admin",
    );
    assert_eq!(not_json.status, 415);
    for id in ["nope", "key_", "ep_00000000000000000000000001"] {
        let resp = call(d.addr, ADMIN, "DELETE", &format!("/v1/keys/{id}"), None);
        assert_eq!(resp.status, 404, "{id}");
    }
    assert_eq!(
        call(d.addr, ADMIN, "GET", "/v1/keys?role=admin", None).status,
        400
    );
    let listed = expect(d.addr, ADMIN, "GET", "/v1/keys", None, 200);
    assert_eq!(listed["keys"], json!([]));
}

/// Without any key the loopback API is open; the first key closes it, so
/// it must be one that can manage keys, and the last admin key cannot be
/// revoked while other keys remain.
#[test]
fn a_keyless_install_is_closed_by_its_first_key_which_must_be_an_admin() {
    let d = Daemon::start("");
    let open = |method: &str, path: &str, body: Option<serde_json::Value>| {
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        let headers: &[(&str, &str)] = if text.is_empty() { &[] } else { &[JSON] };
        request(d.addr, method, path, headers, text.as_bytes())
    };
    for body in [
        json!({"role": "write"}),
        json!({"role": "admin", "tenant": "acme"}),
    ] {
        let resp = open("POST", "/v1/keys", Some(body.clone()));
        assert_eq!(resp.status, 409, "{body}: {}", resp.text());
        assert_eq!(resp.code(), "no_admin_key_left");
    }
    assert_eq!(open("GET", "/v1/events", None).status, 200, "still open");

    let admin = open("POST", "/v1/keys", Some(json!({"role": "admin"})));
    assert_eq!(admin.status, 201, "{}", admin.text());
    let admin = admin.json();
    let admin_key = s(&admin["key"]).to_owned();
    assert_eq!(
        open("GET", "/v1/events", None).status,
        401,
        "closed by the first key"
    );
    let reader = expect(
        d.addr,
        &admin_key,
        "POST",
        "/v1/keys",
        Some(&json!({"role": "read"})),
        201,
    );

    let admin_path = format!("/v1/keys/{}", s(&admin["id"]));
    let refused = call(d.addr, &admin_key, "DELETE", &admin_path, None);
    assert_eq!(
        (refused.status, refused.code()),
        (409, "no_admin_key_left".into())
    );
    expect(d.addr, s(&reader["key"]), "GET", "/v1/events", None, 200);

    expect(
        d.addr,
        &admin_key,
        "DELETE",
        &format!("/v1/keys/{}", s(&reader["id"])),
        None,
        204,
    );
    // Revoking the very last key opens the loopback API again.
    expect(d.addr, &admin_key, "DELETE", &admin_path, None, 204);
    assert_eq!(open("GET", "/v1/events", None).status, 200);
}
