//! Mail headers over HTTP: only headers safe to pass on reach the message,
//! the rest (and any line break, tags included) are refused naming what is
//! wrong, and a refusal queues nothing.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// Long enough for a message to reach the outbox on a loaded machine.
const SETTLE: Duration = Duration::from_secs(30);

fn email(headers: Value, tags: Value) -> Value {
    json!({"from": "Acme <no-reply@acme.example>", "to": "bob@example.net",
           "subject": "Hi", "text": "Hello.", "headers": headers, "tags": tags})
}

/// The text of the `.eml` in `outbox` holding `needle`, once it is there.
fn outbox_message(outbox: &Path, needle: &str) -> Option<String> {
    let mut found = None;
    wait_until(deadline(SETTLE), || {
        found = std::fs::read_dir(outbox).ok().and_then(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .filter_map(|p| std::fs::read(p).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .find(|text| text.contains(needle))
        });
        found.is_some()
    });
    found
}

#[test]
fn only_headers_safe_to_pass_on_reach_the_message_and_tags_refuse_line_breaks() {
    let d = Daemon::start("");
    for name in [
        "Resent-Bcc",
        "Errors-To",
        "Disposition-Notification-To",
        "Return-Receipt-To",
        "Cc",
        "List-Unsubscribe",
        "X-SMTPAPI",
    ] {
        let resp = post_json(
            d.addr,
            "/v1/emails",
            &email(json!({ name: "evil@example.org" }), json!({})),
        );
        assert_eq!(resp.status, 422, "{name}: {}", resp.text());
        let error = &resp.json()["error"];
        assert_eq!(error["field"], "headers", "{name}: {error}");
        assert!(
            error["message"].as_str().unwrap_or_default().contains(name),
            "the refusal names {name}: {error}"
        );
    }
    for tags in [
        json!({"kind": "reset\r\nBcc: evil@example.org"}),
        json!({"kind": "reset\nBcc: evil@example.org"}),
        json!({"kind\r\nBcc": "evil@example.org"}),
    ] {
        let resp = post_json(d.addr, "/v1/emails", &email(json!({}), tags.clone()));
        assert_eq!(resp.status, 422, "{tags}: {}", resp.text());
        assert_eq!(resp.json()["error"]["field"], "tags", "{tags}");
    }
    let queued = get(d.addr, "/v1/emails");
    assert_eq!(queued.status, 200, "{}", queued.text());
    assert_eq!(
        queued.json()["emails"].as_array().map(Vec::len),
        Some(0),
        "a refusal queues nothing: {}",
        queued.text()
    );

    let passed = json!({"X-Campaign": "spring", "List-Id": "<news.acme.example>",
                        "In-Reply-To": "<a1@acme.example>", "References": "<a1@acme.example>",
                        "Auto-Submitted": "auto-generated"});
    let resp = post_json(
        d.addr,
        "/v1/emails",
        &email(passed, json!({"kind": "digest"})),
    );
    assert_eq!(resp.status, 202, "{}", resp.text());
    let message = outbox_message(&d.data_dir().join("outbox"), "X-Campaign")
        .expect("the accepted message reaches the outbox");
    for line in [
        "X-Campaign: spring",
        "List-Id: <news.acme.example>",
        "In-Reply-To: <a1@acme.example>",
        "References: <a1@acme.example>",
        "Auto-Submitted: auto-generated",
    ] {
        assert!(message.contains(line), "{line} missing from:\n{message}");
    }
}
