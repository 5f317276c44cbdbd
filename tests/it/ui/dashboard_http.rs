//! The dashboard's sign-in, session cookie and CSRF rule, spoken over
//! plain HTTP: what a browser would be sent, and what a forged or
//! headerless request gets.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

pub const ADMIN_KEY: &str = "dashboard-admin-key-0123456789";
const TENANT_KEY: &str = "dashboard-acme-writer-0123456789";

pub fn config() -> String {
    format!(
        "[server]\napi_keys = [\"{ADMIN_KEY}\"]\n\
         [[server.keys]]\nkey = \"{TENANT_KEY}\"\nrole = \"write\"\ntenant = \"acme\"\n\
         [public]\nlisten = \"127.0.0.1:0\"\n"
    )
}

/// A signed-in session: the cookie's value and the CSRF token.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
    pub set_cookie: String,
}

pub fn sign_in(d: &Daemon, key: &str) -> Response {
    request(
        d.addr,
        "POST",
        "/admin/session",
        &[JSON],
        json!({ "key": key }).to_string().as_bytes(),
    )
}

pub fn signed_in(d: &Daemon) -> Session {
    let resp = sign_in(d, ADMIN_KEY);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let set_cookie = resp.header("set-cookie").expect("a Set-Cookie").to_owned();
    let value = set_cookie
        .split(';')
        .next()
        .and_then(|pair| pair.strip_prefix("herald_session="))
        .unwrap_or_else(|| panic!("no herald_session in {set_cookie}"))
        .to_owned();
    Session {
        cookie: format!("herald_session={value}"),
        csrf: s(&resp.json()["csrf_token"]).to_owned(),
        set_cookie,
    }
}

pub fn with_session(
    d: &Daemon,
    method: &str,
    path: &str,
    session: &Session,
    csrf: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let mut headers = vec![("Cookie", session.cookie.as_str())];
    if let Some(token) = csrf {
        headers.push(("X-CSRF-Token", token));
    }
    if body.is_some() {
        headers.push(JSON);
    }
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    request(d.addr, method, path, &headers, bytes.as_bytes())
}

fn assert_hardened(resp: &Response) {
    let csp = resp.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("script-src 'self'"), "CSP: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "CSP: {csp}");
    assert!(!csp.contains("unsafe-inline"), "CSP: {csp}");
    assert_eq!(resp.header("x-frame-options"), Some("DENY"));
    assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
}

#[test]
fn the_sign_in_page_and_assets_are_served_hardened_and_only_on_the_private_listener() {
    let d = Daemon::start(&config());
    let page = get(d.addr, "/admin");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(page.text().contains("id=\"signin\""), "{}", page.text());
    assert!(!page.text().contains("<script>"), "no inline script");
    assert_hardened(&page);

    for (name, kind) in [
        ("app.js", "text/javascript"),
        ("charts.js", "text/javascript"),
        ("signin.js", "text/javascript"),
        ("app.css", "text/css"),
    ] {
        let asset = get(d.addr, &format!("/admin/assets/{name}"));
        assert_eq!(asset.status, 200, "{name}");
        assert!(asset.header("content-type").unwrap().starts_with(kind));
        assert!(!asset.body.is_empty());
        assert_hardened(&asset);
        let etag = asset.header("etag").expect("an ETag").to_owned();
        let again = request(
            d.addr,
            "GET",
            &format!("/admin/assets/{name}"),
            &[("If-None-Match", &etag)],
            b"",
        );
        assert_eq!(again.status, 304, "{name}");
    }
    assert_eq!(get(d.addr, "/admin/assets/secrets.txt").status, 404);

    let public = d.logged_addr("public listening");
    assert_eq!(get(public, "/admin").status, 404);
    assert_eq!(get(public, "/admin/assets/app.js").status, 404);
    let posted = request(
        public,
        "POST",
        "/admin/session",
        &[JSON],
        json!({ "key": ADMIN_KEY }).to_string().as_bytes(),
    );
    assert_eq!(posted.status, 404);
    assert!(posted.header("set-cookie").is_none());
}

#[test]
fn only_an_unscoped_admin_key_signs_in_and_the_cookie_counts_only_with_its_csrf_header() {
    let d = Daemon::start(&config());

    let wrong = sign_in(&d, "not-the-admin-key-0123456789");
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert!(wrong.header("set-cookie").is_none());
    let tenant = sign_in(&d, TENANT_KEY);
    assert_eq!(tenant.status, 403, "{}", tenant.text());
    assert!(tenant.header("set-cookie").is_none());
    // Without script the form posts itself and gets the page with the error.
    let form = request(
        d.addr,
        "POST",
        "/admin/session",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"key=wrong-key-0123456789",
    );
    assert_eq!(form.status, 401);
    assert!(form.text().contains("not valid"), "{}", form.text());
    let bad_body = request(d.addr, "POST", "/admin/session", &[JSON], b"{\"key\": 5}");
    assert_eq!(bad_body.status, 400);

    let session = signed_in(&d);
    let flags: Vec<&str> = session.set_cookie.split(';').map(str::trim).collect();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(
            flags.contains(&flag),
            "{flag} missing: {}",
            session.set_cookie
        );
    }
    assert!(
        !flags.contains(&"Secure"),
        "plain HTTP: {}",
        session.set_cookie
    );

    let no_header = with_session(&d, "GET", "/v1/events", &session, None, None);
    assert_eq!(no_header.status, 403);
    assert_eq!(no_header.code(), "csrf");
    let wrong_header = with_session(&d, "GET", "/v1/events", &session, Some("guess"), None);
    assert_eq!(wrong_header.code(), "csrf");
    let event = json!({"type": "dashboard.csrf", "data": {}});
    let refused = with_session(&d, "POST", "/v1/events", &session, None, Some(&event));
    assert_eq!(refused.status, 403);
    let bearer = format!("Bearer {ADMIN_KEY}");
    let stored = list_all(d.addr, "", &[("Authorization", &bearer)]);
    assert!(stored.is_empty(), "a refused write wrote nothing");

    let ok = with_session(&d, "GET", "/v1/events", &session, Some(&session.csrf), None);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let created = with_session(
        &d,
        "POST",
        "/v1/events",
        &session,
        Some(&session.csrf),
        Some(&event),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let stored_bytes = || {
        let storage = request(
            d.addr,
            "GET",
            "/v1/admin/storage",
            &[("Authorization", &bearer)],
            b"",
        );
        assert_eq!(storage.status, 200, "{}", storage.text());
        storage.json()["file_bytes"].as_u64().unwrap()
    };
    let storage_before = stored_bytes();
    let overview = with_session(
        &d,
        "GET",
        "/v1/admin/overview",
        &session,
        Some(&session.csrf),
        None,
    );
    assert_eq!(overview.status, 200, "{}", overview.text());
    let o = overview.json();
    assert_eq!(o["events_per_minute"].as_array().unwrap().len(), 60);
    let counted: u64 = o["events_per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 1, "{o}");
    // The size is the store's as `/v1/admin/storage` reports it: the
    // file's on redb, the database's on PostgreSQL (either may have grown
    // a little in between).
    let storage_after = stored_bytes();
    let file_bytes = o["file_bytes"].as_u64().unwrap();
    assert!(
        storage_before.min(storage_after) <= file_bytes
            && file_bytes <= storage_before.max(storage_after),
        "overview {file_bytes}, storage {storage_before} then {storage_after}"
    );
    assert!(file_bytes > 0, "{o}");
    assert_eq!(o["history"].as_array().unwrap().len(), 1, "{o}");
    assert_eq!(o["history"][0]["file_bytes"], o["file_bytes"], "{o}");

    let page = request(d.addr, "GET", "/admin", &[("Cookie", &session.cookie)], b"");
    assert!(
        page.text().contains(&session.csrf),
        "the app page carries the token"
    );
    assert!(page.text().contains("app.js"));

    let forged = Session {
        cookie: "herald_session=forged".into(),
        csrf: session.csrf.clone(),
        set_cookie: String::new(),
    };
    let unknown = with_session(&d, "GET", "/v1/events", &forged, Some(&forged.csrf), None);
    assert_eq!(unknown.status, 401);

    let logout_without = with_session(&d, "POST", "/admin/logout", &session, None, None);
    assert_eq!(logout_without.status, 403);
    let still = with_session(&d, "GET", "/v1/events", &session, Some(&session.csrf), None);
    assert_eq!(still.status, 200, "a refused logout ends nothing");
    let logout = with_session(
        &d,
        "POST",
        "/admin/logout",
        &session,
        Some(&session.csrf),
        None,
    );
    assert_eq!(logout.status, 204);
    assert!(logout.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = with_session(&d, "GET", "/v1/events", &session, Some(&session.csrf), None);
    assert_eq!(after.status, 401);
    let page = request(d.addr, "GET", "/admin", &[("Cookie", &session.cookie)], b"");
    assert!(page.text().contains("id=\"signin\""));
}

#[test]
fn a_revoked_key_ends_its_sessions() {
    let d = Daemon::start(&config());
    let bearer = format!("Bearer {ADMIN_KEY}");
    let made = request(
        d.addr,
        "POST",
        "/v1/keys",
        &[JSON, ("Authorization", &bearer)],
        json!({"role": "admin", "description": "dashboard"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let key = made.json();
    let resp = sign_in(&d, s(&key["key"]));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let cookie = resp
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = s(&resp.json()["csrf_token"]).to_owned();
    let headers = [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
    assert_eq!(
        request(d.addr, "GET", "/v1/endpoints", &headers, b"").status,
        200
    );
    let revoked = request(
        d.addr,
        "DELETE",
        &format!("/v1/keys/{}", s(&key["id"])),
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(revoked.status, 204);
    assert_eq!(
        request(d.addr, "GET", "/v1/endpoints", &headers, b"").status,
        401
    );
}

#[test]
fn a_session_ends_at_its_ttl() {
    let d = Daemon::start(&format!("{}[admin]\nsession_ttl = \"2s\"\n", config()));
    let session = signed_in(&d);
    assert!(
        session.set_cookie.contains("Max-Age=2"),
        "{}",
        session.set_cookie
    );
    let expired = wait_until(deadline(Duration::from_secs(20)), || {
        with_session(&d, "GET", "/v1/events", &session, Some(&session.csrf), None).status == 401
    });
    assert!(expired, "the session outlived its ttl");
}

#[test]
fn without_any_key_the_dashboard_needs_no_sign_in_and_says_so() {
    let d = Daemon::start("");
    let page = get(d.addr, "/admin");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("content=\"open\""), "{}", page.text());
    assert!(page.text().contains("needs no sign-in"));
    assert_eq!(sign_in(&d, "anything-at-all-0123456789").status, 409);
    assert_eq!(get(d.addr, "/v1/admin/overview").status, 200);
}
