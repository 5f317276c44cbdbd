//! The dashboard behind a load balancer: two nodes on one database, and a
//! browser's requests landing on either. A session one node started works
//! on the other, with the same CSRF rule, and a sign-out on either node
//! ends it on both, at once.

use crate::support::*;
use crate::ui::dashboard_http::{config, signed_in, with_session, Session};

fn node_toml(url: &str) -> String {
    format!(
        "{}[store]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\n",
        config()
    )
}

/// `GET /v1/events` with the session's cookie and its CSRF header.
fn events_status(d: &Daemon, session: &Session) -> u16 {
    with_session(d, "GET", "/v1/events", session, Some(&session.csrf), None).status
}

fn signs_out(d: &Daemon, session: &Session) {
    let out = with_session(
        d,
        "POST",
        "/admin/logout",
        session,
        Some(&session.csrf),
        None,
    );
    assert_eq!(out.status, 204, "{}", out.text());
}

#[test]
fn a_session_started_on_one_node_works_on_another_until_either_signs_it_out() {
    if !super::postgres_or_skip() {
        return;
    }
    let url = fresh_database();
    let a = Daemon::start(&node_toml(&url));
    let b = Daemon::start(&node_toml(&url));

    let session = signed_in(&a);
    // No follow interval to wait out: node b asks the database.
    assert_eq!(events_status(&b, &session), 200);
    let page = request(b.addr, "GET", "/admin", &[("Cookie", &session.cookie)], b"");
    assert!(
        page.text().contains(&session.csrf),
        "node b's page carries the session's CSRF token: {}",
        page.text()
    );
    let headerless = with_session(&b, "GET", "/v1/events", &session, None, None);
    assert_eq!(headerless.status, 403, "{}", headerless.text());
    assert_eq!(headerless.code(), "csrf");
    let overview = with_session(
        &b,
        "GET",
        "/v1/admin/overview",
        &session,
        Some(&session.csrf),
        None,
    );
    assert_eq!(overview.status, 200, "{}", overview.text());

    // Signed out on the node that did not start it: over on both.
    signs_out(&b, &session);
    assert_eq!(events_status(&b, &session), 401);
    assert_eq!(events_status(&a, &session), 401);
    let page = request(a.addr, "GET", "/admin", &[("Cookie", &session.cookie)], b"");
    assert!(page.text().contains("id=\"signin\""), "{}", page.text());

    // And the other way round.
    let second = signed_in(&b);
    assert_eq!(events_status(&a, &second), 200);
    // The database keeps the cookie's hash, never the cookie.
    let token = second.cookie.trim_start_matches("herald_session=");
    let kept = psql(
        &url,
        &format!(
            "SELECT count(*) FILTER (WHERE token_hash = sha256(convert_to('{token}', 'UTF8'))), \
                    count(*) FILTER (WHERE position(convert_to('{token}', 'UTF8') IN token_hash) > 0 \
                                     OR csrf = '{token}') \
             FROM herald_sessions"
        ),
    );
    assert_eq!(kept, "1|0");
    signs_out(&a, &second);
    assert_eq!(events_status(&b, &second), 401);
    assert_eq!(
        psql(&url, "SELECT count(*) FROM herald_sessions"),
        "0",
        "a sign-out deletes the session's row"
    );
}

#[test]
fn a_sign_in_clears_expired_sessions_and_at_the_cap_the_one_closest_to_expiry_gives_way() {
    if !super::postgres_or_skip() {
        return;
    }
    let url = fresh_database();
    let a = Daemon::start(&node_toml(&url));
    // 1,024 live sessions (the cap), other nodes' as far as this one
    // knows; the soonest to expire has ten minutes left. And five expired.
    psql(
        &url,
        "INSERT INTO herald_sessions (token_hash, key_hash, csrf, expires_at) \
         SELECT sha256(convert_to('live-' || i, 'UTF8')), sha256('\\x00'::bytea), 'c', \
                now() + interval '1 hour' + i * interval '1 second' \
         FROM generate_series(1, 1023) i; \
         INSERT INTO herald_sessions VALUES \
             (sha256(convert_to('soonest', 'UTF8')), sha256('\\x00'::bytea), 'c', \
              now() + interval '10 minutes'); \
         INSERT INTO herald_sessions (token_hash, key_hash, csrf, expires_at) \
         SELECT sha256(convert_to('expired-' || i, 'UTF8')), sha256('\\x00'::bytea), 'c', \
                now() - interval '1 minute' \
         FROM generate_series(1, 5) i",
    );

    let session = signed_in(&a);
    assert_eq!(events_status(&a, &session), 200);
    let left = psql(
        &url,
        "SELECT count(*), \
                count(*) FILTER (WHERE expires_at <= now()), \
                count(*) FILTER (WHERE token_hash = sha256(convert_to('soonest', 'UTF8'))) \
         FROM herald_sessions",
    );
    assert_eq!(left, "1024|0|0", "(rows, expired, the soonest to expire)");
}
