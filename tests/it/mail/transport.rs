//! Reaching the relay: TLS as configured, relays that are down or refuse
//! the session, and the outbox when no relay is configured at all.

use serde_json::{json, Value};

use super::smtp::{make_pki, Script, SmtpSink, Tls};
use super::{
    attempts, email, events_about, message, send_one, settled, suppressions, MAIL, SETTLE,
};
use crate::support::*;

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

#[test]
fn a_relay_that_is_down_defers_and_retries() {
    let port = unused_port();
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
    let headers = super::smtp::parse_headers(&raw);
    let header = |name: &str| header_value(&headers, name);
    assert_eq!(header("Subject"), Some("Hi"));
    assert!(header("To").unwrap_or_default().contains("x@example.net"));
}
