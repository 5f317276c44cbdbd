//! The mail API: one message per recipient, idempotency keys, refusals
//! that name the field, and the suppression list.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::smtp::{Script, SmtpSink};
use super::{barrier, emails, message, suppressions, transactional, FROM, SETTLE};
use crate::support::*;

#[test]
fn one_message_per_recipient_and_an_idempotency_key_queues_once() {
    let sink = SmtpSink::start(&Script::always("250"), None);
    let d = Daemon::start(&transactional(&sink));
    let to = ["a@example.net", "b@example.org", "c@example.com"];
    let body = json!({
        "from": FROM, "to": to, "subject": "Hello", "text": "hi", "idempotency_key": "order-7",
    });
    let first = post_json(d.addr, "/v1/emails", &body);
    assert_eq!(first.status, 202, "{}", first.text());
    let messages = first.json()["messages"].clone();
    let listed: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| s(&m["to"]))
        .collect();
    assert_eq!(listed, to, "one message per recipient, in order");

    let again = post_json(d.addr, "/v1/emails", &body);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["messages"], messages);
    let mut changed = body.clone();
    changed["subject"] = json!("Hello again");
    let conflict = post_json(d.addr, "/v1/emails", &changed);
    assert_eq!(conflict.status, 409, "{}", conflict.text());
    assert_eq!(conflict.code(), "idempotency_conflict");

    let got = sink.wait_for_messages(3, deadline(SETTLE));
    barrier(d.addr, &sink, "barrier@example.net");
    assert_eq!(emails(d.addr, "").len(), 4, "the replay queued nothing");
    let got_all = sink.received();
    assert_eq!(
        got_all.len(),
        4,
        "the replay sent nothing: {:?}",
        sink.transactions()
    );
    let mut ids = HashSet::new();
    let mut message_ids = HashSet::new();
    for m in &got[..3] {
        assert_eq!(m.rcpt_tos.len(), 1, "one transaction per recipient");
        let rcpt = &m.rcpt_tos[0];
        let header_to = m.header("To").unwrap_or_default();
        assert!(header_to.contains(rcpt.as_str()), "{header_to}");
        for other in to.iter().filter(|o| **o != rcpt.as_str()) {
            assert!(
                !header_to.contains(other),
                "To names only its recipient: {header_to}"
            );
        }
        ids.insert(m.header("X-Herald-Id").unwrap_or_default().to_owned());
        message_ids.insert(m.header("Message-ID").unwrap_or_default().to_owned());
    }
    let expected: HashSet<String> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| s(&m["id"]).to_owned())
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(
        message_ids.len(),
        3,
        "each message has a Message-ID of its own"
    );
}

fn assert_4xx_naming(resp: &Response, field: &str, case: &str) {
    assert!(
        resp.status == 400 || resp.status == 422,
        "{case}: want 400 or 422, got {}: {}",
        resp.status,
        resp.text()
    );
    let named = resp.json()["error"]["field"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        named == field
            || named.starts_with(&format!("{field}."))
            || named.starts_with(&format!("{field}[")),
        "{case}: the error should name {field:?}: {}",
        resp.text()
    );
}

#[test]
fn bad_input_is_refused_naming_the_field_and_queues_nothing() {
    let sink = SmtpSink::start(&Script::always("250"), None);
    let d = Daemon::start(&transactional(&sink));
    let with = |key: &str, value: Value| {
        let mut body = message("user@example.net");
        body[key] = value;
        body
    };
    let mut no_text = message("user@example.net");
    no_text.as_object_mut().unwrap().remove("text");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("missing text", no_text, "text"),
        (
            "html but no text",
            {
                let mut b = message("user@example.net");
                b.as_object_mut().unwrap().remove("text");
                b["html"] = json!("<p>hi</p>");
                b
            },
            "text",
        ),
        (
            "CR LF in subject",
            with("subject", json!("Hi\r\nBcc: evil@example.org")),
            "subject",
        ),
        (
            "LF in subject",
            with("subject", json!("Hi\nBcc: evil@example.org")),
            "subject",
        ),
        ("bad address", with("to", json!("not-an-address")), "to"),
        (
            "one bad address among good",
            with("to", json!(["ok@example.net", "nope"])),
            "to",
        ),
        (
            "CR LF in to",
            with("to", json!("a@example.net\r\nBcc: evil@example.org")),
            "to",
        ),
        (
            "CR LF in from",
            with(
                "from",
                json!("Acme <no-reply@example.com>\r\nBcc: evil@example.org"),
            ),
            "from",
        ),
        ("bad reply_to", with("reply_to", json!("nope")), "reply_to"),
        ("unknown stream", with("stream", json!("nope")), "stream"),
        (
            "From domain not allowed",
            with("from", json!("Evil <ceo@evil.example.org>")),
            "from",
        ),
        (
            "CR LF in a header value",
            with("headers", json!({"X-Foo": "a\r\nBcc: evil@example.org"})),
            "headers",
        ),
        (
            "CR LF in a header name",
            with("headers", json!({"X-Foo\r\nBcc": "evil@example.org"})),
            "headers",
        ),
    ];
    for (case, body, field) in &cases {
        let resp = post_json(d.addr, "/v1/emails", body);
        assert_4xx_naming(&resp, field, case);
    }
    let not_json = request(d.addr, "POST", "/v1/emails", &[JSON], b"{\"to\":");
    assert_eq!(not_json.status, 400, "{}", not_json.text());

    assert!(emails(d.addr, "").is_empty(), "{:?}", emails(d.addr, ""));
    assert!(list_all(d.addr, "type=email.queued", &[]).is_empty());
    barrier(d.addr, &sink, "barrier@example.net");
    assert_eq!(sink.transactions().len(), 1, "{:?}", sink.transactions());
    assert_eq!(emails(d.addr, "").len(), 1);
}

#[test]
fn the_suppression_api_round_trips_normalised_addresses() {
    // No [mail] at all: "transactional" and "marketing" exist, mail goes to
    // the outbox, and no SMTP peer is needed.
    let d = Daemon::start("");
    let put = |path: &str, body: Value| {
        request(d.addr, "PUT", path, &[JSON], body.to_string().as_bytes())
    };

    // 201 for a new entry, 200 when it was there already.
    let bob = put("/v1/suppressions/%20%20Bob@Example.COM%20", json!({}));
    assert_eq!(bob.status, 201, "{}", bob.text());
    let entry = bob.json();
    assert_eq!(entry["address"], "bob@example.com", "{entry}");
    assert_eq!(entry["reason"], "manual", "{entry}");
    assert_eq!(entry["stream"], Value::Null, "{entry}");
    assert!(entry["created_at"].is_string(), "{entry}");

    let carol = put(
        "/v1/suppressions/Carol@example.com",
        json!({"reason": "complaint", "stream": "marketing"}),
    );
    assert_eq!(carol.status, 201, "{}", carol.text());
    assert_eq!(carol.json()["stream"], "marketing");
    assert_eq!(carol.json()["address"], "carol@example.com");

    // Putting the same entry again changes nothing.
    assert_eq!(
        put("/v1/suppressions/bob@example.com", json!({})).status,
        200
    );
    for (body, path) in [
        (
            json!({"reason": "because"}),
            "/v1/suppressions/dave@example.com",
        ),
        (json!({}), "/v1/suppressions/not-an-address"),
    ] {
        let resp = put(path, body.clone());
        assert!(
            (400..500).contains(&resp.status),
            "PUT {path} {body}: {} {}",
            resp.status,
            resp.text()
        );
    }

    let all = suppressions(d.addr, "");
    let by_address: HashMap<&str, &Value> = all.iter().map(|e| (s(&e["address"]), e)).collect();
    assert_eq!(by_address.len(), 2, "{all:?}");
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(by_address["bob@example.com"]["stream"], Value::Null);
    assert_eq!(by_address["carol@example.com"]["reason"], "complaint");
    let complaints = suppressions(d.addr, "?reason=complaint");
    assert_eq!(complaints.len(), 1, "{complaints:?}");
    assert_eq!(complaints[0]["address"], "carol@example.com");
    let marketing = suppressions(d.addr, "?stream=marketing");
    assert!(
        marketing
            .iter()
            .any(|e| e["address"] == "carol@example.com"),
        "{marketing:?}"
    );

    let try_send = |stream: &str, to: &str| {
        post_json(
            d.addr,
            "/v1/emails",
            &json!({"stream": stream, "from": "a@example.com", "to": to, "subject": "s", "text": "t"}),
        )
    };
    // An entry without a stream holds for all; one with a stream for that one.
    for stream in ["transactional", "marketing"] {
        let resp = try_send(stream, "BOB@example.com");
        assert_eq!(resp.status, 422, "{stream}: {}", resp.text());
        assert_eq!(resp.json()["error"]["reason"], "manual");
    }
    let resp = try_send("marketing", "carol@example.com");
    assert_eq!(resp.status, 422, "{}", resp.text());
    assert_eq!(resp.json()["error"]["reason"], "complaint");
    assert_eq!(try_send("transactional", "carol@example.com").status, 202);

    let delete = |path: &str| request(d.addr, "DELETE", path, &[], b"");
    let gone = delete("/v1/suppressions/%20BOB@example.com");
    assert_eq!(gone.status, 204, "{}", gone.text());
    assert_eq!(delete("/v1/suppressions/bob@example.com").status, 404);
    assert_eq!(try_send("transactional", "bob@example.com").status, 202);
    assert_eq!(
        delete("/v1/suppressions/carol@example.com?stream=marketing").status,
        204
    );
    assert!(suppressions(d.addr, "").is_empty());
    assert_eq!(try_send("marketing", "carol@example.com").status, 202);
}
