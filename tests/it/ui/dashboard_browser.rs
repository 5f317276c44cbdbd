//! The dashboard in headless Chromium: signing in, the overview's charts,
//! retrying a dead letter and following an email from the queue to the
//! ESP's report, with screenshots in `target/artifacts/`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::dashboard_http::ADMIN_KEY;
use crate::mail::smtp::{Script, SmtpSink};
use crate::support::*;
use crate::webhooks::receiver::{Receiver, Reply};

/// A debug build on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(30);
const POSTMARK_USER: &str = "postmark-hooks";
const POSTMARK_PASSWORD: &str = "pm-0123456789abcdefghijkl";

fn config(sink: &SmtpSink) -> String {
    format!(
        r#"
[server]
api_keys = ["{ADMIN_KEY}"]
[webhooks]
allow_networks = ["127.0.0.1/32"]
require_https = false
retry_schedule = []
timeout = "2s"
[mail]
retry_schedule = ["100ms"]
[mail.streams.transactional]
from_domains = ["example.com"]
relay = "smtp://127.0.0.1:{port}"
esp = "postmark"
[feedback.postmark]
username = "{POSTMARK_USER}"
password = "{POSTMARK_PASSWORD}"
"#,
        port = sink.port
    )
}

fn admin(d: &Daemon, method: &str, path: &str, body: Option<&Value>) -> Response {
    let bearer = format!("Bearer {ADMIN_KEY}");
    let mut headers = vec![("Authorization", bearer.as_str())];
    if body.is_some() {
        headers.push(JSON);
    }
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    request(d.addr, method, path, &headers, bytes.as_bytes())
}

/// A delivery that failed its only attempt, and its receiver, which
/// answers 204 once `healed` is set.
fn dead_letter(d: &Daemon, healed: Arc<AtomicBool>) -> (Receiver, String) {
    let receiver = Receiver::start(move |_, _| {
        if healed.load(Ordering::SeqCst) {
            Reply::status(204)
        } else {
            Reply::status(503).body("receiver down for maintenance")
        }
    });
    let url = format!("http://{}/hooks", receiver.addr);
    let made = admin(d, "POST", "/v1/endpoints", Some(&json!({ "url": url })));
    assert_eq!(made.status, 201, "{}", made.text());
    let event = json!({"type": "invoice.paid", "tenant": "acme", "data": {"amount": 4200}});
    assert_eq!(admin(d, "POST", "/v1/events", Some(&event)).status, 201);
    let mut id = None;
    let dead = wait_until(deadline(SETTLE), || {
        let page = admin(d, "GET", "/v1/dead-letters", None).json();
        id = page["deliveries"][0]["id"].as_str().map(str::to_owned);
        id.is_some()
    });
    assert!(dead, "the delivery never became a dead letter");
    (receiver, id.expect("a dead letter"))
}

/// A message the sink accepted, and Postmark's report that it arrived.
fn delivered_email(d: &Daemon, sink: &SmtpSink, to: &str) -> String {
    let body = json!({"from": "Acme <no-reply@example.com>", "to": to,
        "subject": "Reset your password", "text": "Open the link."});
    let queued = admin(d, "POST", "/v1/emails", Some(&body));
    assert_eq!(queued.status, 202, "{}", queued.text());
    let id = s(&queued.json()["messages"][0]["id"]).to_owned();
    sink.wait_for_id(&id, deadline(SETTLE));
    let sent = wait_until(deadline(SETTLE), || {
        admin(d, "GET", &format!("/v1/emails/{id}"), None).json()["status"] == "sent"
    });
    assert!(sent, "the message was never marked sent");
    let report = json!({
        "RecordType": "Delivery", "ServerID": 23, "MessageStream": "outbound",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Recipient": to,
        "Tag": "", "DeliveredAt": "2026-12-02T06:00:00Z",
        "Details": "Test delivery webhook details", "Metadata": {"herald-id": id},
    });
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{POSTMARK_USER}:{POSTMARK_PASSWORD}"))
    );
    let resp = request(
        d.addr,
        "POST",
        "/feedback/postmark",
        &[JSON, ("Authorization", &auth)],
        report.to_string().as_bytes(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["applied"], 1, "{}", resp.text());
    id
}

#[test]
fn an_admin_signs_in_reads_the_overview_retries_a_dead_letter_and_follows_an_email() {
    let sink = SmtpSink::start(&Script::always("250"), None);
    let d = Daemon::start(&config(&sink));
    let healed = Arc::new(AtomicBool::new(false));
    let (_receiver, delivery) = dead_letter(&d, healed.clone());
    let to = "reset-reader@example.net";
    let email = delivered_email(&d, &sink, to);
    let base = format!("http://{}", d.addr);

    let browser = Browser::start(1280, 1400);
    browser.goto(&format!("{base}/admin"));
    browser
        .find("#key")
        .send_keys("not-the-admin-key-0123456789");
    browser.find("#signin button[type=submit]").click();
    browser.wait_for_text("that key is not valid");
    assert!(
        browser.find_all("#main").is_empty(),
        "a wrong key stays outside"
    );

    browser.find("#key").clear();
    browser.find("#key").send_keys(ADMIN_KEY);
    browser.find("#signin button[type=submit]").click();
    browser.find("[data-view=overview] .card");
    browser.wait_for_text("Events per minute");
    // Drawn, not tabulated: bars for the events, a point or line for the
    // one failed attempt's success rate and latency.
    let bars = browser.wait_for_count("[data-view=overview] svg.chart rect.bar", 1);
    assert!(
        bars.iter().any(|bar| bar
            .attribute("height")
            .and_then(|h| h.parse::<f64>().ok())
            .is_some_and(|h| h > 0.0)),
        "a bar with a height is drawn"
    );
    browser.wait_for_count(
        "[data-view=overview] svg.chart .series, [data-view=overview] svg.chart .point",
        3,
    );
    assert!(browser.find_all("[data-view=overview] svg.chart").len() >= 5);
    assert!(
        browser.find_all("table").is_empty(),
        "the overview has no tables"
    );
    browser.screenshot("admin-overview");
    browser.set_window_size(390, 844);
    browser.find("[data-view=overview] svg.chart");
    browser.screenshot("admin-overview-phone");
    browser.set_window_size(1280, 1400);

    browser.goto(&format!("{base}/admin#/dead-letters"));
    let retry = browser.find(&format!("button[data-retry=\"{delivery}\"]"));
    healed.store(true, Ordering::SeqCst);
    retry.click();
    browser.wait_for_count("[data-view=delivery] .attempt", 2);
    browser.wait_for_text("succeeded");
    let second = browser.find("[data-view=delivery] .attempt[data-attempt=\"2\"]");
    assert!(second.text().contains("204"), "{}", second.text());
    assert!(
        second.text().contains("webhook-signature"),
        "request headers shown"
    );
    let first = browser.find("[data-view=delivery] .attempt[data-attempt=\"1\"]");
    assert!(
        first.text().contains("receiver down for maintenance"),
        "{}",
        first.text()
    );
    let stored = admin(&d, "GET", &format!("/v1/deliveries/{delivery}"), None).json();
    assert_eq!(stored["status"], "succeeded", "{stored}");
    browser.screenshot("admin-delivery");

    browser.goto(&format!("{base}/admin#/emails"));
    browser.find("input[name=to]").send_keys(to);
    browser.find("form.filters button[type=submit]").click();
    browser
        .find(&format!("a[href=\"#/emails/{email}\"]"))
        .click();
    browser.wait_for_text("relay: sent");
    browser.wait_for_text("postmark: delivered");
    let steps = browser.wait_for_count(".timeline li", 3);
    let order: Vec<String> = steps
        .iter()
        .map(|li| li.attribute("class").unwrap_or_default())
        .collect();
    assert!(
        order[0].contains("queued") && order[1].contains("relay") && order[2].contains("esp"),
        "{order:?}"
    );
    browser.screenshot("admin-email");

    // Every other view draws from the API without an error.
    for (view, shows) in [
        ("events", "invoice.paid"),
        ("endpoints", "success, last hour"),
        ("suppressions", "Add an address"),
        ("streams", "transactional"),
        ("storage", "Tables"),
    ] {
        browser.goto(&format!("{base}/admin#/{view}"));
        browser.find(&format!("[data-view=\"{view}\"]"));
        browser.wait_for_text(shows);
        assert!(
            browser.find_all(".notice.bad").is_empty(),
            "{view}: {}",
            browser.page_text()
        );
        if view == "storage" {
            // Table sizes are counted on request: they read the whole file.
            browser.find("#count-tables").click();
            browser.wait_for_text("deliveries");
            browser.find("[data-view=storage] table");
        }
        browser.screenshot(&format!("admin-{view}"));
    }

    browser.find("#sign-out").click();
    browser.find("#signin");
}
