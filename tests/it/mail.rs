//! Transactional mail end to end: the real daemon relaying to a real SMTP
//! server (tests/smtp_sink.py, aiosmtpd) on loopback. Replies are scripted
//! per recipient, so each outcome (sent, deferred, bounced, failed) is driven
//! by what the peer says, exactly as a relay would say it. DKIM signatures
//! are judged by dkimpy, STARTTLS by a certificate from a CA of our own.
//! Completion is polled with deadlines; nothing is timed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::smtp::{make_pki, verify_dkim, Received, Script, SmtpSink, Tls};
use crate::support::*;

/// Generous: a debug build on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(30);

/// Short retries so a deferral is retried within the test.
const MAIL: &str = r#"
[mail]
workers = 4
retry_schedule = ["100ms", "200ms", "300ms"]
"#;

const FROM: &str = "Acme <no-reply@example.com>";

/// `MAIL` plus one stream per `(name, extra keys)`, each relaying to `sink`
/// and allowed to send from example.com.
fn config(sink: &SmtpSink, streams: &[(&str, &str)]) -> String {
    let mut toml = MAIL.to_owned();
    for (name, extra) in streams {
        toml.push_str(&format!(
            "\n[mail.streams.{name}]\nfrom_domains = [\"example.com\"]\nrelay = \"smtp://127.0.0.1:{}\"\n{extra}\n",
            sink.port
        ));
    }
    toml
}

fn transactional(sink: &SmtpSink) -> String {
    config(sink, &[("transactional", "")])
}

/// `transactional` with these TOML lines added to `[mail]`; a key given here
/// replaces the one in `MAIL`.
fn transactional_with(sink: &SmtpSink, mail_keys: &str) -> String {
    let mut table: toml::Table = transactional(sink).parse().unwrap();
    let extra: toml::Table = mail_keys.parse().expect("mail keys are TOML");
    let mail = table["mail"].as_table_mut().unwrap();
    mail.extend(extra);
    toml::to_string(&table).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string: {v}"))
}

/// The request body of a plain one-recipient message.
fn message(to: &str) -> Value {
    json!({"from": FROM, "to": to, "subject": "Your receipt", "text": "Thanks for your order."})
}

/// Queues `body`, expecting 202, and returns the message ids in order.
fn send(addr: SocketAddr, body: &Value) -> Vec<String> {
    let resp = post_json(addr, "/v1/emails", body);
    assert_eq!(resp.status, 202, "POST /v1/emails {body}: {}", resp.text());
    let v = resp.json();
    let messages = v["messages"].as_array().expect("messages array");
    for m in messages {
        assert_eq!(m["status"], "queued", "{v}");
        let id = s(&m["id"]);
        assert!(
            id.len() == 20
                && id.starts_with("msg_")
                && id[4..].bytes().all(|b| b.is_ascii_hexdigit()),
            "id shape: {id}"
        );
    }
    messages.iter().map(|m| s(&m["id"]).to_owned()).collect()
}

fn send_one(addr: SocketAddr, body: &Value) -> String {
    let ids = send(addr, body);
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids.into_iter().next().unwrap()
}

fn email(addr: SocketAddr, id: &str) -> Value {
    let resp = get(addr, &format!("/v1/emails/{id}"));
    assert_eq!(resp.status, 200, "GET /v1/emails/{id}: {}", resp.text());
    resp.json()
}

const FINAL: [&str; 3] = ["sent", "failed", "bounced"];

/// Waits until the message reaches a final status and checks it is `want`.
fn settled(addr: SocketAddr, id: &str, want: &str) -> Value {
    let mut last = Value::Null;
    let done = wait_until(deadline(SETTLE), || {
        last = email(addr, id);
        FINAL.contains(&s(&last["status"]))
    });
    assert!(done, "{id} never settled; last seen: {last}");
    assert_eq!(last["status"], want, "{last}");
    last
}

fn attempts(email: &Value) -> &Vec<Value> {
    email["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("attempts array in {email}"))
}

/// Follows `next_cursor` through a listing, collecting `key`'s items.
fn list(addr: SocketAddr, path: &str, key: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut p = format!("{path}{sep}limit=100");
        if let Some(c) = &cursor {
            p.push_str(&format!("&after={c}"));
        }
        let resp = get(addr, &p);
        assert_eq!(resp.status, 200, "GET {p}: {}", resp.text());
        let page = resp.json();
        items.extend(
            page[key]
                .as_array()
                .unwrap_or_else(|| panic!("{key} array in {page}"))
                .clone(),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
    panic!("{path} did not end");
}

fn emails(addr: SocketAddr, query: &str) -> Vec<Value> {
    list(addr, &format!("/v1/emails{query}"), "emails")
}

fn suppressions(addr: SocketAddr, query: &str) -> Vec<Value> {
    list(addr, &format!("/v1/suppressions{query}"), "suppressions")
}

/// The events of this type about message `id`.
fn events_about(addr: SocketAddr, kind: &str, id: &str) -> Vec<Value> {
    list_all(addr, &format!("type={kind}"), &[])
        .into_iter()
        .filter(|e| e["data"]["message_id"] == id)
        .collect()
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

/// Sends one more message and waits until the sink has it, so the sink's
/// record is read while the daemon is demonstrably delivering, not before it
/// got going. The refusals checked around it queued nothing (the API says
/// so), so nothing of theirs can still be on its way.
fn barrier(addr: SocketAddr, sink: &SmtpSink, to: &str) -> Received {
    let id = send_one(addr, &message(to));
    sink.wait_for_id(&id, deadline(SETTLE))
}

// ---------------------------------------------------------------------------
// Outcomes driven by the peer's reply

#[test]
fn a_250_is_sent_and_the_reply_is_kept() {
    let sink = SmtpSink::start(&Script::always("250"), None);
    let d = Daemon::start(&transactional(&sink));
    let id = send_one(
        d.addr,
        &json!({
            "from": FROM,
            "to": "  Ann@Example.NET ",
            "reply_to": "support@example.com",
            "subject": "Your receipt",
            "text": "Thanks for your order.",
            "headers": {"X-Campaign": "spring"},
            "tags": {"order": "1234"},
        }),
    );

    let got = sink.wait_for_id(&id, deadline(SETTLE));
    let e = settled(d.addr, &id, "sent");
    assert_eq!(e["to"], "ann@example.net", "addresses are normalised: {e}");
    assert_eq!(e["stream"], "transactional");
    assert_eq!(e["subject"], "Your receipt");
    assert_eq!(e["tags"], json!({"order": "1234"}));
    assert_eq!(e["flagged"], false);
    assert_eq!(e["next_attempt_at"], Value::Null);
    let tries = attempts(&e);
    assert_eq!(tries.len(), 1, "{e}");
    assert_eq!(tries[0]["code"], 250);
    assert_eq!(tries[0]["outcome"], "sent");
    assert_eq!(tries[0]["enhanced"], "2.0.0");
    assert!(
        s(&tries[0]["text"]).contains(&format!("queued as {}", got.queue_id)),
        "the relay's reply text, with its queue id, is kept: {e}"
    );
    assert!(
        s(&e["smtp_response"]).starts_with("250") && s(&e["smtp_response"]).contains(&got.queue_id),
        "{e}"
    );

    assert_eq!(got.rcpt_tos, ["ann@example.net"]);
    assert_eq!(got.mail_from, "no-reply@example.com");
    assert!(got
        .header("From")
        .unwrap_or_default()
        .contains("no-reply@example.com"));
    assert!(got
        .header("To")
        .unwrap_or_default()
        .contains("ann@example.net"));
    assert!(got
        .header("Reply-To")
        .unwrap_or_default()
        .contains("support@example.com"));
    assert_eq!(got.header("Subject"), Some("Your receipt"));
    assert_eq!(got.header("X-Campaign"), Some("spring"));
    assert_eq!(got.header("MIME-Version"), Some("1.0"));
    assert!(got.header("Date").is_some(), "{}", got.text());
    assert!(
        got.header("Content-Type")
            .unwrap_or_default()
            .starts_with("text/plain"),
        "text only is text/plain: {}",
        got.text()
    );
    assert_eq!(got.header("Message-ID"), e["message_id"].as_str(), "{e}");
    assert!(
        got.text().contains("Thanks for your order."),
        "{}",
        got.text()
    );
    assert!(
        got.header("List-Unsubscribe").is_none(),
        "a transactional stream has no unsubscribe link by default"
    );

    let listed = emails(
        d.addr,
        "?to=ann@example.net&status=sent&stream=transactional",
    );
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id);
    assert!(
        listed[0].get("attempts").is_none(),
        "listings leave attempts out: {listed:?}"
    );

    let queued = events_about(d.addr, "email.queued", &id);
    let sent = events_about(d.addr, "email.sent", &id);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["data"]["to"], "ann@example.net", "{sent:?}");
}

#[test]
fn a_450_is_deferred_and_retried_until_accepted() {
    let to = "later@example.net";
    let sink = SmtpSink::start(
        &Script::always("250").rcpt(to, &["450 4.2.0 try later", "250"]),
        None,
    );
    let d = Daemon::start(&transactional(&sink));
    let id = send_one(d.addr, &message(to));

    let e = settled(d.addr, &id, "sent");
    let tries = attempts(&e);
    assert_eq!(tries.len(), 2, "{e}");
    assert_eq!(tries[0]["code"], 450);
    assert_eq!(tries[0]["enhanced"], "4.2.0");
    assert_eq!(tries[0]["outcome"], "deferred");
    assert!(s(&tries[0]["text"]).contains("try later"), "{e}");
    assert_eq!(tries[1]["code"], 250);
    assert_eq!(tries[1]["outcome"], "sent");
    assert_eq!(events_about(d.addr, "email.deferred", &id).len(), 1);
    assert_eq!(events_about(d.addr, "email.sent", &id).len(), 1);

    assert_eq!(
        sink.transactions_for(to).len(),
        2,
        "{:?}",
        sink.transactions()
    );
    let got = sink.received();
    assert_eq!(got.len(), 1, "accepted once");
    assert_eq!(got[0].header("X-Herald-Id"), Some(id.as_str()));
}

#[test]
fn a_hard_bounce_suppresses_the_address_for_every_later_send() {
    let gone = "gone@example.net";
    let sink = SmtpSink::start(
        &Script::always("250").rcpt(gone, &["550 5.1.1 no such user"]),
        None,
    );
    let d = Daemon::start(&transactional(&sink));
    let id = send_one(d.addr, &message(gone));

    let e = settled(d.addr, &id, "bounced");
    let tries = attempts(&e);
    assert_eq!(tries.len(), 1, "a hard bounce is not retried: {e}");
    assert_eq!(tries[0]["code"], 550);
    assert_eq!(tries[0]["enhanced"], "5.1.1");
    assert_eq!(tries[0]["outcome"], "bounced");
    assert_eq!(events_about(d.addr, "email.bounced", &id).len(), 1);

    let list = suppressions(d.addr, "");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["address"], gone);
    assert_eq!(list[0]["reason"], "hard_bounce");
    assert_eq!(
        list[0]["stream"],
        Value::Null,
        "a hard bounce holds for all streams"
    );
    let suppressed = list_all(d.addr, "type=email.suppressed", &[]);
    assert!(
        suppressed
            .iter()
            .any(|e| e["data"]["address"] == gone || e["data"]["to"] == gone),
        "{suppressed:?}"
    );

    // Suppressed in any spelling, and one suppressed recipient refuses the
    // whole request.
    for to in [
        json!(gone),
        json!(" GONE@example.NET"),
        json!(["ok@example.net", gone]),
    ] {
        let resp = post_json(
            d.addr,
            "/v1/emails",
            &json!({"from": FROM, "to": to, "subject": "Again", "text": "again"}),
        );
        assert_eq!(resp.status, 422, "to {to}: {}", resp.text());
        let err = &resp.json()["error"];
        assert_eq!(err["code"], "recipient_suppressed", "{err}");
        assert_eq!(err["field"], "to", "{err}");
        assert_eq!(err["address"], gone, "{err}");
        assert_eq!(err["reason"], "hard_bounce", "{err}");
    }
    assert_eq!(
        emails(d.addr, &format!("?to={gone}")).len(),
        1,
        "nothing new queued"
    );
    assert!(
        emails(d.addr, "?to=ok@example.net").is_empty(),
        "nothing queued for the rest"
    );

    barrier(d.addr, &sink, "after@example.net");
    assert_eq!(
        sink.transactions_for(gone).len(),
        1,
        "{:?}",
        sink.transactions()
    );
    assert!(sink.transactions_for("ok@example.net").is_empty());
}

#[test]
fn a_policy_rejection_fails_flagged_without_suppressing() {
    let to = "strict@example.net";
    let sink = SmtpSink::start(&Script::always("250").rcpt(to, &["550 5.7.1 policy"]), None);
    let d = Daemon::start(&transactional(&sink));
    let id = send_one(d.addr, &message(to));

    let e = settled(d.addr, &id, "failed");
    assert_eq!(e["flagged"], true, "{e}");
    let tries = attempts(&e);
    assert_eq!(tries.len(), 1, "{e}");
    assert_eq!(tries[0]["code"], 550);
    assert_eq!(tries[0]["enhanced"], "5.7.1");
    assert_eq!(tries[0]["outcome"], "failed");
    assert_eq!(events_about(d.addr, "email.failed", &id).len(), 1);
    assert!(
        suppressions(d.addr, "").is_empty(),
        "5.7.x is about the message, not the address"
    );

    // The address may still be written to.
    send_one(d.addr, &message(to));
}

#[test]
fn repeated_soft_bounces_suppress_the_address() {
    let to = "full@example.net";
    let sink = SmtpSink::start(
        &Script::always("250").rcpt(to, &["452 4.2.2 mailbox full"]),
        None,
    );
    let d = Daemon::start(&transactional_with(&sink, "soft_bounce_limit = 2"));
    send_one(d.addr, &message(to));

    let mut list = Vec::new();
    let suppressed = wait_until(deadline(SETTLE), || {
        list = suppressions(d.addr, "");
        !list.is_empty()
    });
    assert!(
        suppressed,
        "never suppressed; transactions {:?}",
        sink.transactions()
    );
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["address"], to);
    assert_eq!(list[0]["reason"], "soft_bounce_limit");
    assert!(
        sink.transactions_for(to).len() >= 2,
        "{:?}",
        sink.transactions()
    );
}

#[test]
fn a_success_resets_the_soft_bounce_count() {
    let to = "flaky@example.net";
    let busy = "451 4.3.0 busy, try again";
    let sink = SmtpSink::start(
        &Script::always("250").rcpt(to, &[busy, "250", busy, "250"]),
        None,
    );
    let d = Daemon::start(&transactional_with(&sink, "soft_bounce_limit = 2"));
    // Two soft bounces in all, but a success between them.
    for _ in 0..2 {
        let id = send_one(d.addr, &message(to));
        let e = settled(d.addr, &id, "sent");
        assert_eq!(attempts(&e).len(), 2, "{e}");
    }
    assert!(
        suppressions(d.addr, "").is_empty(),
        "{:?}",
        suppressions(d.addr, "")
    );
}

#[test]
fn every_kind_of_permanent_reply_is_classified() {
    // (reply, status and whether flagged); every bounce suppresses.
    let cases = [
        ("550 5.1.1 no such user", "bounced"),
        ("553 5.1.3 bad address syntax", "bounced"),
        ("550 5.2.1 mailbox disabled", "bounced"),
        ("554 5.7.1 message refused as spam", "failed flagged"),
        ("550 5.7.26 unauthenticated mail", "failed flagged"),
        ("554 transaction failed", "failed"),
    ];
    let to = |i: usize| format!("r{i}@example.net");
    let script = cases
        .iter()
        .enumerate()
        .fold(Script::always("250"), |sc, (i, (reply, _))| {
            sc.rcpt(&to(i), &[reply])
        });
    let sink = SmtpSink::start(&script, None);
    let d = Daemon::start(&transactional(&sink));
    let ids: Vec<String> = (0..cases.len())
        .map(|i| send_one(d.addr, &message(&to(i))))
        .collect();
    let mut bounced = HashSet::new();
    for (i, ((reply, outcome), id)) in cases.iter().zip(&ids).enumerate() {
        let (status, flagged) = match outcome.split_once(' ') {
            Some((status, _)) => (status, true),
            None => (*outcome, false),
        };
        let e = settled(d.addr, id, status);
        assert_eq!(e["flagged"], flagged, "{reply}: {e}");
        let tries = attempts(&e);
        assert_eq!(tries.len(), 1, "a permanent reply is not retried: {e}");
        assert_eq!(tries[0]["outcome"], status, "{e}");
        assert_eq!(tries[0]["code"], reply[..3].parse::<u16>().unwrap(), "{e}");
        let enhanced = reply.split(' ').nth(1).filter(|c| c.starts_with('5'));
        assert_eq!(tries[0]["enhanced"].as_str(), enhanced, "{e}");
        assert_eq!(sink.transactions_for(&to(i)).len(), 1);
        if status == "bounced" {
            bounced.insert(to(i));
        }
    }
    let list = suppressions(d.addr, "");
    let got: HashSet<String> = list.iter().map(|e| s(&e["address"]).to_owned()).collect();
    assert_eq!(got, bounced, "{list:?}");
    assert!(
        list.iter().all(|e| e["reason"] == "hard_bounce"),
        "{list:?}"
    );
}

#[test]
fn any_other_5xx_fails_at_once_and_keeps_the_address() {
    // Only 5.1.x and 5.2.1 bounce and 5.7.x is flagged; any other 5xx, with
    // or without an enhanced code, fails at once, without retries or
    // suppression. (5.2.2, mailbox full, is temporary: see the soft-bounce
    // tests and the unit tests of the classifier.)
    let cases = ["552 5.3.4 message too big", "550 mailbox unavailable"];
    let to = |i: usize| format!("r{i}@example.net");
    let script = cases
        .iter()
        .enumerate()
        .fold(Script::always("250"), |sc, (i, reply)| {
            sc.rcpt(&to(i), &[reply])
        });
    let sink = SmtpSink::start(&script, None);
    let d = Daemon::start(&transactional(&sink));
    let ids: Vec<String> = (0..cases.len())
        .map(|i| send_one(d.addr, &message(&to(i))))
        .collect();
    let mut wrong = Vec::new();
    for (reply, id) in cases.iter().zip(&ids) {
        let mut e = Value::Null;
        wait_until(deadline(SETTLE), || {
            e = email(d.addr, id);
            FINAL.contains(&s(&e["status"]))
        });
        let outcomes: Vec<&Value> = attempts(&e).iter().map(|a| &a["outcome"]).collect();
        if e["status"] != "failed" || e["flagged"] != false || outcomes != [&json!("failed")] {
            wrong.push(format!(
                "{reply:?}: status {}, attempt outcomes {outcomes:?}",
                e["status"]
            ));
        }
    }
    let list = suppressions(d.addr, "");
    if !list.is_empty() {
        wrong.push(format!("suppressed: {list:?}"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_relay_that_is_down_defers_and_retries() {
    // A port that was free a moment ago: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Daemon::start(&format!(
        "{MAIL}\n[mail.streams.transactional]\nrelay = \"smtp://127.0.0.1:{port}\"\n"
    ));
    let id = send_one(d.addr, &message("someone@example.net"));
    let mut last = Value::Null;
    let retried = wait_until(deadline(SETTLE), || {
        last = email(d.addr, &id);
        attempts(&last).len() >= 2
    });
    assert!(retried, "not retried: {last}");
    assert_eq!(last["status"], "deferred", "{last}");
    assert!(last["next_attempt_at"].is_string(), "{last}");
    for a in attempts(&last) {
        assert_eq!(a["outcome"], "deferred", "{last}");
    }
    assert!(!events_about(d.addr, "email.deferred", &id).is_empty());
    assert!(
        suppressions(d.addr, "").is_empty(),
        "a relay being down is not the address's fault"
    );
}

#[test]
fn a_message_still_deferred_after_give_up_after_fails() {
    let to = "never@example.net";
    let sink = SmtpSink::start(&Script::always("450 4.4.1 no answer from host"), None);
    let d = Daemon::start(&transactional_with(
        &sink,
        "give_up_after = \"500ms\"\nsoft_bounce_limit = 100000",
    ));
    let id = send_one(d.addr, &message(to));
    let e = settled(d.addr, &id, "failed");
    assert!(!attempts(&e).is_empty(), "{e}");
    assert_eq!(e["next_attempt_at"], Value::Null, "{e}");
    assert_eq!(events_about(d.addr, "email.failed", &id).len(), 1);
    assert!(sink.received().is_empty());
    assert!(suppressions(d.addr, "").is_empty());
}

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

// ---------------------------------------------------------------------------
// Transport security

#[test]
fn starttls_required_delivers_to_a_relay_with_a_private_ca() {
    let pki = make_pki();
    let sink = SmtpSink::start(&Script::always("250"), Some(&Tls::required(&pki)));
    let d = Daemon::start(&format!(
        "{MAIL}\n[mail.streams.transactional]\nrelay = \"smtp://localhost:{}?tls=required\"\nrelay_ca_file = {}\n",
        sink.port,
        toml_str(&pki.ca)
    ));
    let id = send_one(d.addr, &message("secure@example.net"));
    let got = sink.wait_for_id(&id, deadline(SETTLE));
    assert!(got.tls, "the message went through STARTTLS");
    settled(d.addr, &id, "sent");
}

#[test]
fn tls_required_never_falls_back_to_plain_text() {
    // A relay that offers no STARTTLS: the message must wait, not go in clear.
    let sink = SmtpSink::start(&Script::always("250"), None);
    let d = Daemon::start(&format!(
        "{MAIL}\n[mail.streams.transactional]\nrelay = \"smtp://localhost:{}?tls=required\"\n",
        sink.port
    ));
    let id = send_one(d.addr, &message("secure@example.net"));
    let mut last = Value::Null;
    let tried = wait_until(deadline(SETTLE), || {
        last = email(d.addr, &id);
        !attempts(&last).is_empty()
    });
    assert!(tried, "no attempt recorded: {last}");
    assert_ne!(last["status"], "sent", "{last}");
    assert_eq!(attempts(&last)[0]["outcome"], "deferred", "{last}");
    assert!(sink.transactions().is_empty(), "{:?}", sink.transactions());
}

#[test]
fn implicit_tls_with_a_login_delivers_and_keeps_the_password_out_of_sight() {
    let pki = make_pki();
    let password = "pw-7f3a9c";
    let sink = SmtpSink::start_with(
        &Script::always("250"),
        Some(&Tls::implicit(&pki)),
        Some(("relay-user", password)),
    );
    let d = Daemon::start(&format!(
        "{MAIL}\n[mail.streams.transactional]\nrelay = \"smtps://relay-user:{password}@localhost:{}\"\nrelay_ca_file = {}\n",
        sink.port,
        toml_str(&pki.ca)
    ));
    let id = send_one(d.addr, &message("secure@example.net"));
    let got = sink.wait_for_id(&id, deadline(SETTLE));
    assert!(got.tls);
    assert_eq!(got.auth.as_deref(), Some("relay-user"));
    let e = settled(d.addr, &id, "sent");
    assert!(!e.to_string().contains(password), "{e}");
    let logs = d.logs().join("\n");
    assert!(
        !logs.contains(password),
        "the relay password is logged:\n{logs}"
    );
}

// ---------------------------------------------------------------------------
// DKIM and List-Unsubscribe

/// A stream that signs with d=example.com for mail from news.example.com and
/// carries one-click unsubscribe links.
fn news_config(sink: &SmtpSink, dkim_key: &std::path::Path, public: &str) -> String {
    format!(
        "{public}\n{MAIL}\n[mail.streams.news]\nfrom_domains = [\"news.example.com\"]\nrelay = \"smtp://127.0.0.1:{}\"\n\
         dkim_selector = \"s1\"\ndkim_key_file = {}\ndkim_domain = \"example.com\"\nunsubscribe = true\n\
         unsubscribe_mailto = \"unsub@example.com\"\n",
        sink.port,
        toml_str(dkim_key)
    )
}

fn newsletter(to: &str) -> Value {
    json!({
        "stream": "news",
        "from": "Acme News <news@news.example.com>",
        "to": to,
        "subject": "Spring issue",
        "text": "Plain words for plain readers.",
        "html": "<p>Rich words for <b>rich</b> readers.</p>",
    })
}

/// The token in `<BASE/u/TOKEN>` of a List-Unsubscribe header.
fn unsubscribe_token(list_unsubscribe: &str, base: &str) -> String {
    let start = format!("<{base}/u/");
    let from = list_unsubscribe
        .find(&start)
        .unwrap_or_else(|| panic!("no {start}...> in {list_unsubscribe:?}"))
        + start.len();
    let len = list_unsubscribe[from..]
        .find('>')
        .unwrap_or_else(|| panic!("unterminated link in {list_unsubscribe:?}"));
    list_unsubscribe[from..from + len].to_owned()
}

#[test]
fn a_signed_multipart_newsletter_verifies_and_carries_one_click_unsubscribe() {
    let pki = make_pki();
    let sink = SmtpSink::start(&Script::always("250"), None);
    let base = "https://mail.example.com";
    let d = Daemon::start(&news_config(
        &sink,
        &pki.dkim_key,
        &format!("[public]\nurl = \"{base}\"\n"),
    ));
    let id = send_one(d.addr, &newsletter("reader@example.net"));
    let got = sink.wait_for_id(&id, deadline(SETTLE));

    let tags = verify_dkim(&got.raw, &pki.dkim_txt, "s1", "example.com")
        .unwrap_or_else(|why| panic!("dkimpy rejects the signature: {why}\n{}", got.text()));
    assert_eq!(tags["d"], "example.com", "{tags}");
    assert_eq!(tags["s"], "s1", "{tags}");
    assert_eq!(tags["a"], "rsa-sha256", "{tags}");
    assert_eq!(tags["c"], "relaxed/relaxed", "{tags}");
    let signed: Vec<String> = s(&tags["h"])
        .split(':')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for h in ["from", "subject"] {
        assert!(signed.iter().any(|x| x == h), "{h} is signed: {signed:?}");
    }

    let e = email(d.addr, &id);
    assert_eq!(got.header("X-Herald-Id"), Some(id.as_str()));
    let message_id = got.header("Message-ID").expect("Message-ID");
    assert!(
        message_id.starts_with('<') && message_id.ends_with("@news.example.com>"),
        "Message-ID in the From domain: {message_id}"
    );
    assert_eq!(e["message_id"], message_id);

    let list_unsubscribe = got.header("List-Unsubscribe").expect("List-Unsubscribe");
    let token = unsubscribe_token(list_unsubscribe, base);
    assert!(
        !token.is_empty() && !token.contains(['/', '?', ' ']),
        "{token:?}"
    );
    assert!(
        list_unsubscribe.contains("<mailto:unsub@example.com"),
        "{list_unsubscribe}"
    );
    assert_eq!(
        got.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );

    let content_type = got.header("Content-Type").unwrap_or_default();
    assert!(
        content_type.starts_with("multipart/alternative"),
        "text + html: {content_type}"
    );
    let body = String::from_utf8_lossy(got.body()).to_ascii_lowercase();
    let plain = body
        .find("content-type: text/plain")
        .expect("a text/plain part");
    let html = body
        .find("content-type: text/html")
        .expect("a text/html part");
    assert!(plain < html, "the richer part comes last (RFC 2046 5.1.4)");
}

#[test]
fn one_click_headers_are_covered_by_the_dkim_signature() {
    // RFC 8058 section 4: List-Unsubscribe and List-Unsubscribe-Post must be
    // signed, or a mailbox provider ignores one-click (and a relay could add a
    // link of its own).
    let pki = make_pki();
    let sink = SmtpSink::start(&Script::always("250"), None);
    let d = Daemon::start(&news_config(
        &sink,
        &pki.dkim_key,
        "[public]\nurl = \"https://mail.example.com\"\n",
    ));
    let id = send_one(d.addr, &newsletter("reader@example.net"));
    let got = sink.wait_for_id(&id, deadline(SETTLE));
    let tags = verify_dkim(&got.raw, &pki.dkim_txt, "s1", "example.com")
        .unwrap_or_else(|why| panic!("dkimpy rejects the signature: {why}"));
    let signed: Vec<String> = s(&tags["h"])
        .split(':')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for h in ["list-unsubscribe", "list-unsubscribe-post"] {
        assert!(signed.iter().any(|x| x == h), "{h} is signed: {signed:?}");
    }
}

/// The public listener's address from its log line.
fn public_addr(d: &Daemon) -> SocketAddr {
    let mut found = None;
    let logged = wait_until(deadline(SETTLE), || {
        found = d.logs().iter().find_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            if v["message"] != "public listening" {
                return None;
            }
            v["addr"].as_str()?.parse().ok()
        });
        found.is_some()
    });
    assert!(
        logged,
        "no \"public listening\" line:\n{}",
        d.logs().join("\n")
    );
    found.unwrap()
}

/// The token with the character at `at` (from the start, or from the end when
/// negative) changed to another of its class: once in what is likely the
/// payload, once in what is likely the MAC.
fn altered(token: &str, at: isize) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let mut i = if at < 0 {
        chars.len().saturating_sub(at.unsigned_abs())
    } else {
        at.unsigned_abs().min(chars.len() - 1)
    };
    while i > 0 && !chars[i].is_ascii_alphanumeric() {
        i -= 1;
    }
    chars[i] = match chars[i] {
        'z' => 'y',
        'Z' => 'Y',
        '9' => '8',
        c => char::from(c as u8 + 1),
    };
    chars.into_iter().collect()
}

const ONE_CLICK: &[u8] = b"List-Unsubscribe=One-Click";
const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

#[test]
fn one_click_unsubscribe_on_the_public_listener() {
    let sink = SmtpSink::start(&Script::always("250"), None);
    let base = "https://mail.example.com";
    let pki = make_pki();
    let mut toml = news_config(
        &sink,
        &pki.dkim_key,
        &format!("[public]\nurl = \"{base}\"\nlisten = \"127.0.0.1:0\"\n"),
    );
    toml.push_str(&format!(
        "\n[mail.streams.transactional]\nrelay = \"smtp://127.0.0.1:{}\"\n",
        sink.port
    ));
    let d = Daemon::start(&toml);
    let public = public_addr(&d);
    assert_ne!(public, d.addr);
    let reader = "reader@example.net";
    let id = send_one(d.addr, &newsletter(reader));
    let got = sink.wait_for_id(&id, deadline(SETTLE));
    let token = unsubscribe_token(
        got.header("List-Unsubscribe").expect("List-Unsubscribe"),
        base,
    );
    let path = format!("/u/{token}");

    // Link scanners fetch with GET: that must change nothing.
    let page = get(public, &path);
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.header("Content-Type")
            .unwrap_or_default()
            .starts_with("text/html"),
        "{:?}",
        page.headers
    );
    assert!(
        page.text().to_ascii_lowercase().contains("post"),
        "a form that posts: {}",
        page.text()
    );
    assert!(suppressions(d.addr, "").is_empty());

    // A forged token is refused and changes nothing.
    for at in [2, -5] {
        let forged = format!("/u/{}", altered(&token, at));
        assert_ne!(forged, path);
        for method in ["GET", "POST"] {
            let resp = request(public, method, &forged, &[FORM], ONE_CLICK);
            assert!(
                resp.status == 404 || resp.status == 400,
                "{method} {forged}: {} {}",
                resp.status,
                resp.text()
            );
        }
    }
    assert!(suppressions(d.addr, "").is_empty());

    // The private API is not on the public listener.
    for (method, p) in [
        ("GET", "/v1/emails"),
        ("POST", "/v1/emails"),
        ("GET", "/v1/suppressions"),
        ("GET", "/v1/events"),
    ] {
        let resp = request(public, method, p, &[JSON], b"{}");
        assert_eq!(
            resp.status,
            404,
            "{method} {p} on the public listener: {}",
            resp.text()
        );
    }

    // Mailbox providers post urlencoded or multipart (RFC 8058 section 3.1);
    // the second post finds the address already suppressed.
    let multipart = b"--b0\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b0--\r\n";
    let bodies = [
        (FORM.1, ONE_CLICK),
        ("multipart/form-data; boundary=b0", &multipart[..]),
    ];
    for (round, (content_type, body)) in bodies.into_iter().enumerate() {
        let resp = request(
            public,
            "POST",
            &path,
            &[("Content-Type", content_type)],
            body,
        );
        assert_eq!(resp.status, 200, "round {round}: {}", resp.text());
        assert!(
            resp.header("Location").is_none(),
            "no redirect: {:?}",
            resp.headers
        );
        let list = suppressions(d.addr, "");
        assert_eq!(list.len(), 1, "round {round}: {list:?}");
        assert_eq!(list[0]["address"], reader);
        assert_eq!(list[0]["stream"], "news");
        assert_eq!(list[0]["reason"], "unsubscribe");
    }
    let unsubscribed = list_all(d.addr, "type=email.unsubscribed", &[]);
    assert_eq!(unsubscribed.len(), 1, "{unsubscribed:?}");

    let refused = post_json(d.addr, "/v1/emails", &newsletter(reader));
    assert_eq!(refused.status, 422, "{}", refused.text());
    assert_eq!(refused.code(), "recipient_suppressed");
    assert_eq!(refused.json()["error"]["reason"], "unsubscribe");
    // Only that stream: receipts still reach the reader.
    let receipt = send_one(d.addr, &message(reader));
    sink.wait_for_id(&receipt, deadline(SETTLE));
    let news = emails(d.addr, "?stream=news");
    let receipts = emails(d.addr, "?stream=transactional");
    assert_eq!(
        (news.len(), receipts.len()),
        (1, 1),
        "{news:?} {receipts:?}"
    );
    assert_eq!(news[0]["id"], id);
    assert_eq!(receipts[0]["id"], receipt);
}

// ---------------------------------------------------------------------------
// Input checks and the suppression API

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

// ---------------------------------------------------------------------------
// Durability and the default install

#[test]
fn mail_queued_before_kill_9_is_delivered_after_the_restart() {
    const N: usize = 50;
    // Every attempt is deferred until the relay is "fixed" below; a long
    // schedule and a high soft-bounce limit keep every message waiting.
    let mut sink = SmtpSink::start(&Script::always("450 4.3.2 not now"), None);
    let schedule = vec!["\"200ms\""; 30].join(", ");
    let toml = transactional_with(
        &sink,
        &format!(
            "retry_schedule = [{schedule}]\nsoft_bounce_limit = 100000\ngive_up_after = \"1h\""
        ),
    );
    let mut d = Daemon::start(&toml);
    let mut acked = Vec::new();
    for i in 0..N {
        acked.push(send_one(d.addr, &message(&format!("user{i}@example.net"))));
    }
    // Half the recipients have been tried and deferred, so the kill finds
    // retries pending as well as messages never tried.
    let tried = || {
        sink.transactions()
            .iter()
            .filter_map(|t| t["rcpt_tos"][0].as_str().map(str::to_owned))
            .collect::<HashSet<String>>()
            .len()
    };
    assert!(
        wait_until(deadline(SETTLE), || tried() >= N / 2),
        "only {} recipients were tried",
        tried()
    );
    let tried_before_kill = sink.transactions().len();
    d.kill9();
    assert!(sink.received().is_empty());

    sink.set_script(&Script::always("250"));
    d.restart();
    let acked_set: HashSet<&str> = acked.iter().map(String::as_str).collect();
    let mut arrived: Vec<String> = Vec::new();
    let all = wait_until(deadline(Duration::from_secs(60)), || {
        arrived = sink
            .received()
            .iter()
            .filter_map(|m| m.header("X-Herald-Id").map(str::to_owned))
            .collect();
        let got: HashSet<&str> = arrived.iter().map(String::as_str).collect();
        acked_set.is_subset(&got)
    });
    let unique: HashSet<&str> = arrived.iter().map(String::as_str).collect();
    let missing: Vec<&&str> = acked_set.difference(&unique).collect();
    assert!(
        all,
        "acknowledged {N}, arrived {} ({} distinct); missing {missing:?}",
        arrived.len(),
        unique.len()
    );
    eprintln!(
        "kill -9 with {N} acknowledged after {tried_before_kill} deferred attempts: \
         {} arrived after the restart, {} distinct",
        arrived.len(),
        unique.len()
    );
    let strangers: Vec<&&str> = unique.difference(&acked_set).collect();
    assert!(strangers.is_empty(), "never acknowledged: {strangers:?}");

    let mut sent = 0;
    let settled_all = wait_until(deadline(SETTLE), || {
        sent = emails(d.addr, "?status=sent").len();
        sent == N
    });
    assert!(settled_all, "{sent} of {N} marked sent");
    for id in &acked {
        assert_eq!(email(d.addr, id)["status"], "sent", "{id}");
    }
}

#[test]
fn with_no_mail_config_messages_land_in_the_outbox() {
    let d = Daemon::start("");
    let id = send_one(
        d.addr,
        &json!({"from": "Someone <someone@anything.example>", "to": "x@example.net", "subject": "Hi", "text": "Hello."}),
    );
    let outbox = d.data_dir().join("outbox");
    let needle = format!("X-Herald-Id: {id}");
    let mut found = None;
    let landed = wait_until(deadline(SETTLE), || {
        found = std::fs::read_dir(&outbox).ok().and_then(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .find(|p| {
                    std::fs::read(p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(&needle))
                })
        });
        found.is_some()
    });
    assert!(landed, "no .eml with {needle} in {}", outbox.display());
    let raw = std::fs::read(found.unwrap()).unwrap();
    let headers = crate::smtp::parse_headers(&raw);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("Subject"), Some("Hi"));
    assert!(header("To").unwrap_or_default().contains("x@example.net"));
}

/// A relay that refuses every session at the greeting, as during
/// maintenance: `421` and close.
fn refusing_relay() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = std::io::Write::write_all(
                &mut stream,
                b"421 4.3.2 Service not available, closing channel\r\n",
            );
        }
    });
    port
}

#[test]
fn a_relay_refusing_the_session_defers_without_counting_against_the_recipient() {
    let port = refusing_relay();
    let d = Daemon::start(&format!(
        "{MAIL}soft_bounce_limit = 2\n[mail.streams.transactional]\nrelay = \"smtp://127.0.0.1:{port}\"\n"
    ));
    let id = send_one(d.addr, &message("bob@example.net"));
    // More refusals than the soft-bounce limit.
    let mut e = Value::Null;
    let retried = wait_until(deadline(SETTLE), || {
        e = email(d.addr, &id);
        attempts(&e).len() >= 4
    });
    assert!(retried, "{e}");
    assert!(
        attempts(&e).iter().all(|a| a["code"] == 421),
        "every attempt met the refusal: {e}"
    );
    assert!(
        ["queued", "deferred"].contains(&e["status"].as_str().unwrap_or("")),
        "a refused session never ends the message early: {e}"
    );
    assert!(
        suppressions(d.addr, "").is_empty(),
        "the recipient did nothing wrong"
    );
}
