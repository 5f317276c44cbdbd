//! Endpoint owners are emailed, through Herald's own mail path to a real
//! SMTP sink, when their endpoint keeps failing or is disabled: once a day
//! per endpoint. `delivery.failing` follows the same run of failures.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use base64::Engine;
use herald::clock::parse_rfc3339;
use serde_json::{json, Value};

use super::receiver::{Receiver, Reply};
use super::{config, create_endpoint, post_empty, settled, SETTLE, WEBHOOKS};
use crate::mail::smtp::{Received, Script, SmtpSink};
use crate::support::*;

const ALERTS_FROM: &str = "Herald <alerts@herald.example>";

/// `WEBHOOKS` (three retries: four attempts a delivery) with owner alerts
/// going out through a stream relaying to `sink`.
fn alerting(sink: &SmtpSink) -> String {
    format!(
        r#"{WEBHOOKS}
[webhooks.owner_alerts]
stream = "alerts"
from = "{ALERTS_FROM}"

[mail]
workers = 2
retry_schedule = ["100ms"]

[mail.streams.alerts]
from_domains = ["herald.example"]
relay = "smtp://127.0.0.1:{}"
"#,
        sink.port
    )
}

/// The messages Herald queued to `to`, as the API lists them.
fn emails_to(addr: std::net::SocketAddr, to: &str) -> Vec<Value> {
    list_pages(addr, &format!("/v1/emails?to={to}"), "emails", 100, &[])
}

/// The messages the sink accepted for `to`.
fn received_by(sink: &SmtpSink, to: &str) -> Vec<Received> {
    sink.received()
        .into_iter()
        .filter(|m| m.rcpt_tos.iter().any(|r| r == to))
        .collect()
}

/// One more message on the alert stream, waited for at the sink, and then
/// every message queued before it settled: with two senders, the one
/// before it may still be on its way when it arrives.
fn barrier(addr: std::net::SocketAddr, sink: &SmtpSink, round: u32) {
    let to = format!("barrier{round}@customer.example");
    let resp = post_json(
        addr,
        "/v1/emails",
        &json!({"stream": "alerts", "from": ALERTS_FROM, "to": to,
                "subject": "barrier", "text": "barrier"}),
    );
    assert_eq!(resp.status, 202, "{}", resp.text());
    let id = s(&resp.json()["messages"][0]["id"]).to_owned();
    sink.wait_for_id(&id, deadline(SETTLE));
    let settled = wait_until(deadline(SETTLE), || {
        list_pages(addr, "/v1/emails?status=queued", "emails", 100, &[])
            .iter()
            .all(|e| s(&e["id"]) > id.as_str())
    });
    assert!(settled, "messages queued before {id} did not settle");
}

/// The message as text, its body's quoted-printable soft line breaks and
/// `=XX` escapes undone (a long line, such as a portal link, is split).
fn readable(message: &Received) -> String {
    let raw = message.text().replace("=\r\n", "");
    let mut out = Vec::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'=')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn failing_events(addr: std::net::SocketAddr) -> Vec<Value> {
    list_all(addr, "type=delivery.failing", &[])
}

#[test]
fn a_failing_endpoint_alerts_its_owner_once_a_day_and_only_an_owner_who_can_be_mailed() {
    let sink = SmtpSink::start(&Script::always("250"), None);
    let receiver = Receiver::start(|_, _| Reply::status(500).body("upstream is down"));
    let healthy = Receiver::always(200);
    let d = Daemon::start(&alerting(&sink));
    let suppressed = "blocked@customer.example";
    let resp = request(
        d.addr,
        "PUT",
        &format!("/v1/suppressions/{suppressed}"),
        &[JSON],
        json!({"reason": "manual"}).to_string().as_bytes(),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());

    let endpoint = |owner: Option<&str>, tenant: Option<&str>, url: String| {
        let mut body = json!({"url": url, "event_types": ["a"], "description": "billing sync"});
        if let Some(owner) = owner {
            body["owner_email"] = owner.into();
        }
        if let Some(tenant) = tenant {
            body["tenant"] = tenant.into();
        }
        let ep = create_endpoint(d.addr, body);
        let shown = owner.map(str::to_ascii_lowercase);
        assert_eq!(ep["owner_email"], shown.map_or(Value::Null, Value::from));
        s(&ep["id"]).to_owned()
    };
    let first = endpoint(
        Some("Owner@Customer.example"),
        Some("acme"),
        receiver.url("/1"),
    );
    let second = endpoint(Some("second@customer.example"), None, receiver.url("/2"));
    let ownerless = endpoint(None, None, receiver.url("/3"));
    let blocked = endpoint(Some(suppressed), None, receiver.url("/4"));
    let quiet = endpoint(Some("quiet@customer.example"), None, healthy.url("/"));

    // Five deliveries of four attempts each: 20 failures in a row, well past
    // the default threshold of 10, for each failing endpoint.
    let mut events = Vec::new();
    for i in 0..5 {
        events.push(create(
            d.addr,
            &json!({"type": "a", "tenant": "acme", "data": {"i": i}}),
        ));
    }
    for event in &events {
        let list = settled(d.addr, s(&event["id"]), 5);
        let failed = list.iter().filter(|x| x["status"] == "failed").count();
        assert_eq!(failed, 4, "{list:#?}");
    }

    // Every attempt is recorded, and an alert is queued in the transaction
    // of the attempt that called for it: the queue is complete now.
    let owner = emails_to(d.addr, "owner@customer.example");
    assert_eq!(owner.len(), 1, "{owner:#?}");
    assert_eq!(emails_to(d.addr, "second@customer.example").len(), 1);
    assert!(
        emails_to(d.addr, suppressed).is_empty(),
        "the mail path refused it"
    );
    let alert = &owner[0];
    assert_eq!(alert["stream"], "alerts");
    assert_eq!(alert["tenant"], "acme");
    assert_eq!(alert["tags"]["herald"], "endpoint_alert", "{alert}");
    assert_eq!(alert["tags"]["alert"], "failing");
    assert_eq!(alert["tags"]["endpoint_id"], first.as_str());

    barrier(d.addr, &sink, 1);
    let got = received_by(&sink, "owner@customer.example");
    assert_eq!(got.len(), 1, "exactly one alert reached the sink");
    let text = readable(&got[0]);
    assert!(
        got[0]
            .header("Subject")
            .is_some_and(|s| s.contains("failing")),
        "{text}"
    );
    for part in [
        first.as_str(),
        receiver.url("/1").as_str(),
        "billing sync",
        "Failed attempts in a row: 11",
        "HTTP 500",
        "upstream is down",
    ] {
        assert!(text.contains(part), "`{part}` in:\n{text}");
    }
    // A tenant's endpoint links to that tenant's portal, on the private
    // listener when no public URL is configured.
    let prefix = format!("http://{}/portal/", d.addr);
    let link = text
        .split_whitespace()
        .find(|w| w.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no portal link in:\n{text}"));
    // The token carries the tenant and an expiry `portal_link_ttl` (7 days)
    // ahead, before its MAC; whether it verifies is the portal's to say.
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&link[prefix.len()..])
        .unwrap_or_else(|e| panic!("{link}: {e}"));
    assert!(token.len() > 8 + 16, "{link}");
    let expires_at_ms = i64::from_be_bytes(token[..8].try_into().unwrap());
    assert_eq!(&token[8..token.len() - 16], b"acme", "{link}");
    let queued_ms = parse_rfc3339(s(&alert["created_at"])).expect("created_at");
    assert_eq!(expires_at_ms, queued_ms + 7 * 24 * 3600 * 1000, "{link}");
    let second_got = received_by(&sink, "second@customer.example");
    assert_eq!(second_got.len(), 1);
    assert!(
        !readable(&second_got[0]).contains("/portal/"),
        "an endpoint of no tenant has no portal"
    );
    assert!(received_by(&sink, suppressed).is_empty());

    // More failures the same day, and disabling it, send nothing new.
    let more = create(d.addr, &json!({"type": "a", "tenant": "acme"}));
    settled(d.addr, s(&more["id"]), 5);
    let disabled = post_empty(d.addr, &format!("/v1/endpoints/{first}/disable"));
    assert_eq!(disabled.status, 200, "{}", disabled.text());
    assert_eq!(disabled.json()["enabled"], false);
    assert_eq!(emails_to(d.addr, "owner@customer.example").len(), 1);
    // Disabling an endpoint with an owner not alerted today alerts it, and
    // one without an owner alerts nobody.
    assert_eq!(
        post_empty(d.addr, &format!("/v1/endpoints/{ownerless}/disable")).status,
        200
    );
    assert_eq!(
        post_empty(d.addr, &format!("/v1/endpoints/{quiet}/disable")).status,
        200
    );
    // A tenant disabling its own endpoint (here through its portal link)
    // knows already: no mail, or a link holder could mail any address.
    let own = endpoint(
        Some("self@customer.example"),
        Some("acme"),
        healthy.url("/own"),
    );
    let link = post_json(
        d.addr,
        "/v1/portal-links",
        &json!({"tenant": "acme", "ttl_secs": 600}),
    );
    assert_eq!(link.status, 201, "{}", link.text());
    let portal_path = s(&link.json()["url"])
        .split_once("/portal/")
        .map(|(_, token)| format!("/portal/{token}"))
        .expect("a portal URL");
    let by_tenant = post_empty(
        d.addr,
        &format!("{portal_path}/api/endpoints/{own}/disable"),
    );
    assert_eq!(by_tenant.status, 200, "{}", by_tenant.text());
    assert_eq!(by_tenant.json()["enabled"], false);
    assert!(emails_to(d.addr, "self@customer.example").is_empty());
    let quiet_mail = emails_to(d.addr, "quiet@customer.example");
    assert_eq!(quiet_mail.len(), 1, "{quiet_mail:#?}");
    assert_eq!(quiet_mail[0]["tags"]["alert"], "disabled");
    barrier(d.addr, &sink, 2);
    assert_eq!(received_by(&sink, "owner@customer.example").len(), 1);
    assert_eq!(received_by(&sink, "second@customer.example").len(), 1);
    let quiet_got = received_by(&sink, "quiet@customer.example");
    assert_eq!(quiet_got.len(), 1);
    assert!(readable(&quiet_got[0]).contains("disabled through the API"));
    let alerts: Vec<Received> = sink
        .received()
        .into_iter()
        .filter(|m| !m.rcpt_tos.iter().any(|r| r.starts_with("barrier")))
        .collect();
    assert_eq!(alerts.len(), 3, "one each for first, second and quiet");

    // At the default threshold, each failing endpoint's run was announced once.
    let failing = failing_events(d.addr);
    let mut announced: Vec<&str> = failing
        .iter()
        .map(|e| s(&e["data"]["endpoint_id"]))
        .collect();
    announced.sort_unstable();
    let mut expected = vec![
        first.as_str(),
        second.as_str(),
        ownerless.as_str(),
        blocked.as_str(),
    ];
    expected.sort_unstable();
    assert_eq!(announced, expected, "{failing:#?}");
    assert!(
        failing
            .iter()
            .all(|e| e["data"]["consecutive_failures"] == 11),
        "{failing:#?}"
    );
}

#[test]
fn delivery_failing_is_recorded_once_per_run_at_the_configured_threshold() {
    let failing = Arc::new(AtomicBool::new(true));
    let flag = failing.clone();
    let receiver = Receiver::start(move |_, _| {
        Reply::status(if flag.load(Ordering::SeqCst) {
            500
        } else {
            204
        })
    });
    // No retries: each event is one attempt, so the run is counted across
    // deliveries.
    let d = Daemon::start(&config(&[
        ("retry_schedule", "[]"),
        ("failing_threshold", "2"),
    ]));
    let ep = create_endpoint(
        d.addr,
        json!({"url": receiver.url("/"), "event_types": ["a"]}),
    );
    let id = s(&ep["id"]).to_owned();
    let attempt = |expect: &str| {
        let event = create(d.addr, &json!({"type": "a"}));
        let list = settled(d.addr, s(&event["id"]), 1);
        assert_eq!(list[0]["status"], expect, "{list:#?}");
        list[0]["id"].clone()
    };

    let mut deliveries = Vec::new();
    for _ in 0..2 {
        deliveries.push(attempt("failed"));
    }
    assert!(
        failing_events(d.addr).is_empty(),
        "two failures are not past 2"
    );
    deliveries.push(attempt("failed"));
    for _ in 0..3 {
        attempt("failed");
    }
    let first_run = failing_events(d.addr);
    assert_eq!(first_run.len(), 1, "{first_run:#?}");
    let data = &first_run[0]["data"];
    assert_eq!(data["endpoint_id"], id.as_str());
    assert_eq!(data["consecutive_failures"], 3);
    assert_eq!(data["delivery_id"], deliveries[2]);
    assert!(list_all(d.addr, "type=delivery.recovered", &[]).is_empty());

    failing.store(false, Ordering::SeqCst);
    attempt("succeeded");
    let recovered = list_all(d.addr, "type=delivery.recovered", &[]);
    assert_eq!(recovered.len(), 1, "{recovered:#?}");
    assert_eq!(recovered[0]["data"]["endpoint_id"], id.as_str());

    // A new run is announced again once it passes the threshold.
    failing.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        attempt("failed");
    }
    assert_eq!(failing_events(d.addr).len(), 1);
    attempt("failed");
    let runs = failing_events(d.addr);
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(runs[1]["data"]["consecutive_failures"], 3);
}
