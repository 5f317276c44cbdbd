//! Feedback and tenants: the providers post without an API key while keys
//! are required everywhere else; each tenant's key lists only the feedback
//! about its own messages and sees only its own `email.complained`
//! events; unmatched feedback and the shared streams are for keys without
//! a tenant.

use serde_json::{json, Value};

use super::fixtures::{hook, Report};
use super::*;
use crate::tenancy::{call, ACME, ACME_ADMIN, ADMIN, GLOBEX};

/// A read-only key for every tenant: it may look at streams, not pause them.
const OPS_READ: &str = "ops-read-0123456789abcdefghijk";

/// Every row of `GET /v1/feedback?query` that `key` sees.
fn feedback_seen_by(addr: SocketAddr, key: &str, query: &str) -> Vec<Value> {
    let auth = format!("Bearer {key}");
    let path = if query.is_empty() {
        "/v1/feedback".to_owned()
    } else {
        format!("/v1/feedback?{query}")
    };
    list_pages(addr, &path, "feedback", 100, &[("Authorization", &auth)])
}

/// The `message_id` of each row (null for unmatched ones).
fn message_ids(rows: &[Value]) -> Vec<Value> {
    rows.iter().map(|r| r["message_id"].clone()).collect()
}

/// Queues one message with `key` and waits until the sink has it.
fn relay_as(addr: SocketAddr, sink: &SmtpSink, key: &str, to: &str) -> Target {
    let mut body = message(to);
    body["stream"] = json!("transactional");
    let resp = call(addr, key, "POST", "/v1/emails", Some(&body));
    assert_eq!(resp.status, 202, "POST /v1/emails: {}", resp.text());
    let id = s(&resp.json()["messages"][0]["id"]).to_owned();
    let got = sink.wait_for_id(&id, deadline(SETTLE));
    let mut last = Value::Null;
    let sent = wait_until(deadline(SETTLE), || {
        last = call(addr, ADMIN, "GET", &format!("/v1/emails/{id}"), None).json();
        last["status"] == "sent"
    });
    assert!(sent, "{id} was not sent: {last}");
    Target::from_received(to, &got)
}

#[test]
fn tenant_keys_see_their_own_feedback_and_providers_need_no_key() {
    let mut rig = Rig::start();
    let esps = [Esp::Postmark, Esp::Sendgrid, Esp::Mailgun];
    let toml = format!(
        "{}\n[[server.keys]]\nkey = \"{OPS_READ}\"\nrole = \"read\"\n\n{}{}",
        crate::tenancy::config(),
        rig.peer.config(&rig.pki, &esps),
        mail_config(&rig.sink, &[("transactional", "")])
    );
    let d = Daemon::start(&toml);
    let resp = get(d.addr, "/v1/feedback");
    assert_refused(&resp, 401, "unauthorized", "no key");

    let a = relay_as(d.addr, &rig.sink, ACME.write, "ann@example.net");
    let b = relay_as(d.addr, &rig.sink, GLOBEX.write, "bob@example.net");
    let a_email = call(
        d.addr,
        ADMIN,
        "GET",
        &format!("/v1/emails/{}", a.herald_id()),
        None,
    );
    assert_eq!(a_email.json()["tenant"], ACME.name, "{}", a_email.text());

    // Each provider's own scheme, and no API key: Postmark's basic auth,
    // SendGrid's signature, Mailgun's signature.
    let about_a = hook(
        &mut rig.peer,
        Esp::Postmark,
        Report::Complaint,
        &a,
        &event_id(Esp::Postmark, 1),
    );
    let about_b = hook(
        &mut rig.peer,
        Esp::Sendgrid,
        Report::Complaint,
        &b,
        &event_id(Esp::Sendgrid, 2),
    );
    let stranger = Target::stranger("carol@example.net");
    let unmatched = hook(
        &mut rig.peer,
        Esp::Mailgun,
        Report::Complaint,
        &stranger,
        &event_id(Esp::Mailgun, 3),
    );
    for (request, esp) in [
        (&about_a, Esp::Postmark),
        (&about_b, Esp::Sendgrid),
        (&unmatched, Esp::Mailgun),
    ] {
        assert!(
            header_value(&request.headers, "Authorization").is_none_or(|v| v.starts_with("Basic ")),
            "{esp:?} carries no API key"
        );
        assert_applied(&request.post(d.addr, esp), 1, 0);
    }

    let everything = feedback_seen_by(d.addr, ADMIN, "");
    assert_eq!(
        message_ids(&everything),
        [json!(a.herald_id()), json!(b.herald_id()), Value::Null],
        "{everything:?}"
    );
    assert_eq!(everything[0]["tenant"], ACME.name, "{everything:?}");
    assert_eq!(everything[1]["tenant"], GLOBEX.name, "{everything:?}");
    assert_eq!(everything[2]["tenant"], Value::Null, "{everything:?}");
    assert_eq!(everything[2]["matched"], false, "{everything:?}");

    for key in [ACME.read, ACME.write, ACME_ADMIN] {
        let seen = feedback_seen_by(d.addr, key, "");
        assert_eq!(message_ids(&seen), [json!(a.herald_id())], "{seen:?}");
        assert_eq!(seen[0]["address"], a.to.as_str(), "{seen:?}");
        assert_eq!(seen[0]["tenant"], ACME.name, "{seen:?}");
        let own = feedback_seen_by(d.addr, key, "tenant=acme");
        assert_eq!(own, seen);
        assert_eq!(
            feedback_seen_by(d.addr, key, "matched=false"),
            Vec::<Value>::new(),
            "unmatched feedback belongs to no tenant"
        );
        let resp = call(d.addr, key, "GET", "/v1/feedback?tenant=globex", None);
        assert_refused(&resp, 403, "forbidden", "naming another tenant");
    }
    let seen = feedback_seen_by(d.addr, GLOBEX.read, "");
    assert_eq!(message_ids(&seen), [json!(b.herald_id())], "{seen:?}");
    assert_eq!(
        message_ids(&feedback_seen_by(d.addr, ADMIN, "matched=false")),
        [Value::Null]
    );
    assert_eq!(
        message_ids(&feedback_seen_by(d.addr, ADMIN, "tenant=globex")),
        [json!(b.herald_id())]
    );

    let complained = |key: &str| {
        let auth = format!("Bearer {key}");
        list_all(d.addr, "type=email.complained", &[("Authorization", &auth)])
    };
    let acme_events = complained(ACME.read);
    assert_eq!(acme_events.len(), 1, "{acme_events:?}");
    assert_eq!(
        acme_events[0]["data"]["message_id"],
        a.herald_id(),
        "{acme_events:?}"
    );
    assert_eq!(acme_events[0]["tenant"], ACME.name, "{acme_events:?}");
    let globex_events = complained(GLOBEX.read);
    assert_eq!(globex_events.len(), 1, "{globex_events:?}");
    assert_eq!(
        globex_events[0]["data"]["message_id"],
        b.herald_id(),
        "{globex_events:?}"
    );
    assert_eq!(globex_events[0]["tenant"], GLOBEX.name, "{globex_events:?}");
    assert_eq!(complained(ADMIN).len(), 3);

    // Streams are every tenant's: no tenant key reaches them.
    for key in [ACME.read, ACME.write, ACME_ADMIN] {
        for (method, path) in [
            ("GET", "/v1/streams"),
            ("GET", "/v1/streams/transactional/health"),
            ("POST", "/v1/streams/transactional/pause"),
            ("POST", "/v1/streams/transactional/resume"),
        ] {
            let resp = call(d.addr, key, method, path, None);
            assert_refused(&resp, 403, "forbidden", &format!("{method} {path}"));
        }
    }
    let listed = call(d.addr, OPS_READ, "GET", "/v1/streams", None);
    assert_eq!(listed.status, 200, "{}", listed.text());
    let streams = listed.json()["streams"].clone();
    assert_eq!(streams.as_array().map(Vec::len), Some(1), "{streams}");
    assert_eq!(streams[0]["stream"], "transactional", "{streams}");
    let health = call(
        d.addr,
        OPS_READ,
        "GET",
        "/v1/streams/transactional/health",
        None,
    );
    assert_eq!(health.status, 200, "{}", health.text());
    for action in ["pause", "resume"] {
        let path = format!("/v1/streams/transactional/{action}");
        let resp = call(d.addr, OPS_READ, "POST", &path, None);
        assert_refused(&resp, 403, "forbidden", &format!("a read key: {path}"));
    }
    let health = call(
        d.addr,
        ADMIN,
        "GET",
        "/v1/streams/transactional/health",
        None,
    );
    assert_eq!(
        health.json()["paused"],
        false,
        "refused pauses change nothing"
    );
    let resp = call(
        d.addr,
        ADMIN,
        "POST",
        "/v1/streams/transactional/pause",
        None,
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["paused"], true, "{}", resp.text());
}
