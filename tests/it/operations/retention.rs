//! Retention of every kind of record and what the storage route reports:
//! with tiny retentions set, what aged out disappears (polled for) while
//! what is still needed stays. On both backends: where the storage route
//! reports what only a redb file has, PostgreSQL's tables are read instead.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;
use crate::webhooks::receiver::{Receiver, Reply};

/// Generous: a debug build on a loaded machine.
const SETTLE: Duration = Duration::from_secs(60);

fn storage(addr: SocketAddr) -> Value {
    let resp = get(addr, "/v1/admin/storage");
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()
}

fn table(storage: &Value, name: &str) -> Value {
    storage["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {storage}"))
        .clone()
}

/// `toml` on the run's backend, and on PostgreSQL the database it names,
/// for `psql`.
fn on_this_backend(toml: &str) -> (String, Option<String>) {
    if !postgres_backend() {
        return (toml.to_owned(), None);
    }
    let url = fresh_database();
    let store = format!("\n[store]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\n");
    (format!("{toml}{store}"), Some(url))
}

/// The bytes a message to `to` takes: its stored record on PostgreSQL;
/// on redb, where the file keeps no per-row size, every message's.
fn message_bytes(addr: SocketAddr, database: Option<&str>, to: &str) -> u64 {
    match database {
        Some(url) => psql(
            url,
            &format!("SELECT octet_length(record) FROM herald_emails WHERE recipient = '{to}'"),
        )
        .parse()
        .expect("a message's size"),
        None => table(&storage(addr), "emails")["stored_bytes"]
            .as_u64()
            .expect("stored_bytes"),
    }
}

#[test]
fn aged_records_are_deleted_and_what_is_still_needed_stays() {
    let healthy = Receiver::start(|_, _| Reply::status(200));
    let failing = Receiver::start(|_, _| Reply::status(500));
    let (toml, database) = on_this_backend(&format!(
        r#"
[events]
retention = "2s"
[webhooks]
allow_networks = ["127.0.0.1/32"]
require_https = false
retry_schedule = ["1h"]
retention = "1s"
dead_letter_retention = "1s"
[mail]
body_retention = "1s"
feedback_retention = "7d"
retry_schedule = ["1h"]
[mail.streams.transactional]
[mail.streams.stuck]
from_domains = ["example.com"]
relay = "smtp://127.0.0.1:{}"
[storage]
prune_interval = "100ms"
"#,
        unused_port()
    ));
    let d = Daemon::start(&toml);
    let database = database.as_deref();
    let resp = post_json(
        d.addr,
        "/v1/endpoints",
        &json!({"url": healthy.url("/"), "event_types": ["a"]}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let resp = post_json(
        d.addr,
        "/v1/endpoints",
        &json!({"url": failing.url("/"), "event_types": ["keep"]}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let batch: Vec<Value> = (0..20)
        .map(|i| json!({"type": "a", "data": {"i": i}}))
        .collect();
    let resp = post_json(d.addr, "/v1/events/batch", &json!({ "events": batch }));
    assert_eq!(resp.status, 200, "{}", resp.text());
    // Its delivery stays pending for an hour, and so the event stays.
    let kept = create(d.addr, &json!({"type": "keep"}));
    let body = "x".repeat(200_000);
    let resp = post_json(
        d.addr,
        "/v1/emails",
        &json!({"from": "a@example.com", "to": "b@example.net", "subject": "s", "text": body}),
    );
    assert_eq!(resp.status, 202, "{}", resp.text());
    let message = s(&resp.json()["messages"][0]["id"]).to_owned();
    // Its `email.sent` event comes before the last one.
    let sent = wait_until(deadline(SETTLE), || {
        get(d.addr, &format!("/v1/emails/{message}")).json()["status"] == "sent"
    });
    assert!(sent, "the message was not written to the outbox");
    // Its relay is down: deferred for an hour, so it keeps its body. Its
    // `email.deferred` event too comes before the last one.
    let resp = post_json(
        d.addr,
        "/v1/emails",
        &json!({"stream": "stuck", "from": "a@example.com", "to": "c@example.net",
                "subject": "s", "text": body}),
    );
    assert_eq!(resp.status, 202, "{}", resp.text());
    let unsettled = s(&resp.json()["messages"][0]["id"]).to_owned();
    let deferred = wait_until(deadline(SETTLE), || {
        get(d.addr, &format!("/v1/emails/{unsettled}")).json()["status"] == "deferred"
    });
    assert!(
        deferred,
        "the message to a relay that is down was not deferred"
    );
    // The log's last event always stays: sequence numbers resume from it.
    let last = create(d.addr, &json!({"type": "last"}));

    let mut remaining = Vec::new();
    let pruned = wait_until(deadline(SETTLE), || {
        remaining = list_all(d.addr, "", &[]);
        remaining.len() == 2
    });
    let ids: Vec<&Value> = remaining.iter().map(|e| &e["id"]).collect();
    assert!(pruned, "events left: {ids:?}");
    assert_eq!(ids, [&kept["id"], &last["id"]]);
    let gone = wait_until(deadline(SETTLE), || {
        get(d.addr, "/v1/deliveries?status=succeeded").json()["deliveries"] == json!([])
    });
    assert!(gone, "succeeded deliveries were not deleted");
    let pending = get(d.addr, "/v1/deliveries?status=pending").json();
    assert_eq!(
        pending["deliveries"].as_array().unwrap().len(),
        1,
        "{pending}"
    );

    // The sent message keeps its metadata; its 200 KB body goes. The
    // deferred one keeps its body: on redb, where the table's bytes are
    // both messages', one body is left.
    let purged_below = if database.is_some() { 20_000 } else { 220_000 };
    let purged = wait_until(deadline(SETTLE), || {
        message_bytes(d.addr, database, "b@example.net") < purged_below
    });
    assert!(purged, "{}", table(&storage(d.addr), "emails"));
    let email = get(d.addr, &format!("/v1/emails/{message}"));
    assert_eq!(email.status, 200);
    assert_eq!(email.json()["status"], "sent", "{}", email.text());
    let stuck = get(d.addr, &format!("/v1/emails/{unsettled}")).json();
    assert_eq!(stuck["status"], "deferred", "{stuck}");
    assert!(
        message_bytes(d.addr, database, "c@example.net") > 200_000,
        "a message still to be attempted lost its body: {}",
        table(&storage(d.addr), "emails")
    );

    let events = table(&storage(d.addr), "events");
    assert_eq!(events["rows"], 2, "{events}");
    // Every phase ran, those with nothing to show for it too.
    assert!(
        !d.has_logged("retention failed; retrying at the next interval"),
        "{}",
        d.logs().join("\n")
    );
    match database {
        // The database's storage report has no oldest rows: the table does.
        Some(url) => assert_eq!(
            psql(url, "SELECT min(seq) FROM herald_events"),
            kept["seq"].to_string()
        ),
        None => {
            assert_eq!(events["oldest"]["id"], kept["seq"], "{events}");
            assert_eq!(events["oldest"]["at"], kept["received_at"], "{events}");
        }
    }
}

#[test]
fn storage_reports_the_file_and_every_table() {
    let (toml, database) = on_this_backend("");
    let d = Daemon::start(&toml);
    let first = create(d.addr, &json!({"type": "a"}));
    create(d.addr, &json!({"type": "b"}));
    let report = storage(d.addr);
    // A typo in the query is an error, as on every other route.
    let typo = get(d.addr, "/v1/admin/storage?table=events");
    assert_eq!(
        (typo.status, typo.code()),
        (400, "invalid_query".to_owned())
    );
    // On PostgreSQL the file is the database.
    let file_bytes = report["file_bytes"].as_u64().expect("file_bytes");
    let stored = report["stored_bytes"].as_u64().expect("stored_bytes");
    assert!(stored > 0 && stored <= file_bytes, "{report}");
    let tables = report["tables"].as_array().expect("tables");
    let (names, every_table) = match database.as_deref() {
        Some(url) => {
            let herald_tables: usize = psql(
                url,
                "SELECT count(*) FROM pg_tables \
                 WHERE schemaname = current_schema() AND tablename LIKE 'herald\\_%'",
            )
            .parse()
            .expect("a count");
            (
                [
                    "log_head",
                    "events",
                    "deliveries",
                    "emails",
                    "tracked",
                    "attempt_tally",
                ],
                herald_tables,
            )
        }
        None => (
            [
                "meta",
                "events",
                "deliveries",
                "emails",
                "tracked",
                "endpoint_attempts",
            ],
            30,
        ),
    };
    for name in names {
        let t = table(&report, name);
        assert!(t["rows"].is_u64() && t["fragmented_bytes"].is_u64(), "{t}");
    }
    assert!(tables.len() >= every_table, "{report}");
    let events = table(&report, "events");
    assert_eq!(events["rows"], 2);
    assert!(events["stored_bytes"].as_u64() > Some(0), "{events}");
    if database.is_none() {
        // Only the file tells its tables' oldest rows.
        assert_eq!(
            events["oldest"],
            json!({"id": 1, "at": first["received_at"]})
        );
        assert_eq!(table(&report, "deliveries")["oldest"], Value::Null);
    }
    assert_eq!(table(&report, "deliveries")["rows"], 0);
    assert_eq!(
        request(d.addr, "POST", "/v1/admin/storage", &[], b"").status,
        405
    );
}
