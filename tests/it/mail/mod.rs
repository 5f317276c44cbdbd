//! Transactional mail end to end: the real daemon relaying to a real SMTP
//! server (tests/smtp_sink.py, aiosmtpd) on loopback. Replies are scripted
//! per recipient, so each outcome (sent, deferred, bounced, failed) is driven
//! by what the peer says, exactly as a relay would say it. DKIM signatures
//! are judged by dkimpy, STARTTLS by a certificate from a CA of our own.
//! Completion is polled with deadlines; nothing is timed.

mod api;
mod durability;
pub(crate) mod newsletters;
mod replies;
pub(crate) mod smtp;
mod transport;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;
use smtp::{Received, SmtpSink};

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

fn emails(addr: SocketAddr, query: &str) -> Vec<Value> {
    list_pages(addr, &format!("/v1/emails{query}"), "emails", 100, &[])
}

fn suppressions(addr: SocketAddr, query: &str) -> Vec<Value> {
    list_pages(
        addr,
        &format!("/v1/suppressions{query}"),
        "suppressions",
        100,
        &[],
    )
}

/// The events of this type about message `id`.
fn events_about(addr: SocketAddr, kind: &str, id: &str) -> Vec<Value> {
    list_all(addr, &format!("type={kind}"), &[])
        .into_iter()
        .filter(|e| e["data"]["message_id"] == id)
        .collect()
}

/// Sends one more message and waits until the sink has it, so the sink's
/// record is read while the daemon is demonstrably delivering, not before it
/// got going. The refusals checked around it queued nothing (the API says
/// so), so nothing of theirs can still be on its way.
fn barrier(addr: SocketAddr, sink: &SmtpSink, to: &str) -> Received {
    let id = send_one(addr, &message(to));
    sink.wait_for_id(&id, deadline(SETTLE))
}
