//! `herald migrate`: a redb install's event log and webhooks copied into
//! PostgreSQL, served from there by a node as they were by the redb daemon,
//! resumed after the file gained events and its deliveries moved on, and
//! refused where it would mix two logs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;
use crate::webhooks::receiver::{Receiver, Reply};

/// Names its backend, so the PostgreSQL pass leaves these daemons on redb.
const REDB: &str = "[store]\nbackend = \"redb\"\n";

const MIGRATE_RUN: Duration = Duration::from_secs(120);

fn node_toml(url: &str) -> String {
    format!("[store]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\n")
}

fn migrate(url: &str, file: &Path) -> Output {
    let mut cmd = herald();
    cmd.arg("migrate")
        .arg("--to")
        .arg(url)
        .arg("--from")
        .arg(file);
    run_with_deadline(&mut cmd, MIGRATE_RUN)
}

/// Runs `herald migrate`, failing unless it succeeds, and returns its
/// summary line.
fn migrate_summary(url: &str, file: &Path) -> String {
    let out = migrate(url, file);
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "herald migrate failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `herald migrate`, failing unless it succeeds, and returns how many
/// events it says it copied.
fn migrate_ok(url: &str, file: &Path) -> u64 {
    let summary = migrate_summary(url, file);
    summary
        .strip_prefix("copied ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of copied events in {summary:?}"))
}

/// The endpoints and deliveries a summary says were new or changed.
fn hooks_written(summary: &str) -> (u64, u64) {
    let counts = summary
        .split("; ")
        .find(|part| part.ends_with(")") && part.contains(" new or changed"))
        .and_then(|part| {
            let words: Vec<&str> = part.split(' ').collect();
            Some((words.first()?.parse().ok()?, words.get(3)?.parse().ok()?))
        });
    counts.unwrap_or_else(|| panic!("no webhook counts in {summary:?}"))
}

/// Runs `herald migrate`, failing unless it is refused, and returns its stderr.
fn migrate_refused(url: &str, file: &Path) -> String {
    let out = migrate(url, file);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "herald migrate should have been refused; stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn database_file(d: &Daemon) -> PathBuf {
    d.data_dir().join("herald.redb")
}

/// The request bodies of keyed events, by key, so a test can send one again.
type Sent = HashMap<String, Value>;

/// `n` events in round `round`: singles with and without an idempotency
/// key, with tenants and without, and batches of ten that mix keyed and
/// unkeyed ones.
fn post_mix(addr: std::net::SocketAddr, round: &str, n: usize, sent: &mut Sent) {
    let tenant = |i: usize| match i % 3 {
        0 => Value::Null,
        1 => json!("acme"),
        _ => json!("globex"),
    };
    let mut i = 0;
    while i < n {
        if i % 40 == 30 && i + 10 <= n {
            let events: Vec<Value> = (i..i + 10)
                .map(|j| {
                    let mut e = json!({"type": "order.batched", "tenant": tenant(j),
                                       "data": {"round": round, "j": j}});
                    if j % 2 == 0 {
                        e["idempotency_key"] = json!(format!("{round}-b{j}"));
                    }
                    e
                })
                .collect();
            let resp = post_json(addr, "/v1/events/batch", &json!({ "events": events }));
            assert_eq!(resp.status, 200, "{}", resp.text());
            for e in events {
                if let Some(key) = e["idempotency_key"].as_str() {
                    sent.insert(key.to_owned(), e.clone());
                }
            }
            i += 10;
            continue;
        }
        let mut e = json!({"type": if i % 2 == 0 { "order.placed" } else { "user.seen" },
                           "tenant": tenant(i), "data": {"round": round, "i": i}});
        if i % 4 != 3 {
            e["idempotency_key"] = json!(format!("{round}-s{i}"));
            sent.insert(format!("{round}-s{i}"), e.clone());
        }
        create(addr, &e);
        i += 1;
    }
}

fn stop(d: &mut Daemon) {
    let status = d.sigterm();
    assert!(status.success(), "the daemon exited with {status}");
}

#[test]
fn a_redb_log_moved_to_postgres_is_served_as_it_was() {
    if !super::postgres_or_skip() {
        return;
    }
    let mut redb = Daemon::start(REDB);
    let mut sent = Sent::new();
    post_mix(redb.addr, "r1", 300, &mut sent);
    let before = list_all(redb.addr, "", &[]);
    let before_acme = list_all(redb.addr, "tenant=acme", &[]);
    let before_type = list_all(redb.addr, "type=order.batched", &[]);
    assert_eq!(before.len(), 300);
    stop(&mut redb);

    let url = fresh_database();
    assert_eq!(migrate_ok(&url, &database_file(&redb)), 300);
    assert_eq!(psql(&url, "SELECT count(*) FROM herald_events"), "300");
    assert_eq!(
        psql(&url, "SELECT count(*) FROM herald_event_keys"),
        sent.len().to_string()
    );

    let mut node = Daemon::start(&node_toml(&url));
    // Every field, seq and id included, as the redb daemon answered it;
    // pages of seven cross every batch boundary.
    assert_eq!(
        list_pages(node.addr, "/v1/events", "events", 7, &[]),
        before
    );
    assert_eq!(list_all(node.addr, "tenant=acme", &[]), before_acme);
    assert_eq!(list_all(node.addr, "type=order.batched", &[]), before_type);
    let some = &before[150];
    let got = get(node.addr, &format!("/v1/events/{}", s(&some["id"])));
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(&got.json(), some);

    // Keys came along with their fingerprints: the same request is a
    // repeat of the stored event, the same key with other data a conflict.
    for (key, body) in [("r1-s0", &sent["r1-s0"]), ("r1-b30", &sent["r1-b30"])] {
        let original = before
            .iter()
            .find(|e| e["idempotency_key"] == key)
            .expect("the keyed event is listed");
        let again = post_json(node.addr, "/v1/events", body);
        assert_eq!(again.status, 200, "{key}: {}", again.text());
        assert_eq!(again.json()["id"], original["id"], "{key}");
        assert_eq!(again.json()["seq"], original["seq"], "{key}");
        let mut changed = body.clone();
        changed["data"] = json!({"changed": true});
        let conflict = post_json(node.addr, "/v1/events", &changed);
        assert_eq!(conflict.status, 409, "{key}: {}", conflict.text());
    }
    let last_seq = before.last().unwrap()["seq"].as_u64().unwrap();
    let new = create(
        node.addr,
        &json!({"type": "order.placed", "data": {"after": true}}),
    );
    assert_eq!(new["seq"].as_u64(), Some(last_seq + 1));
    stop(&mut node);

    // The node has appended since: more of the file would clash with it.
    let stderr = migrate_refused(&url, &database_file(&redb));
    assert!(stderr.contains("appended"), "{stderr}");
    assert_eq!(psql(&url, "SELECT count(*) FROM herald_events"), "301");
}

#[test]
fn a_second_run_copies_only_what_the_file_gained() {
    if !super::postgres_or_skip() {
        return;
    }
    let url = fresh_database();
    let mut redb = Daemon::start(REDB);
    let mut sent = Sent::new();
    post_mix(redb.addr, "r1", 80, &mut sent);

    // The live file is locked while the daemon runs; a backup is not.
    let stderr = migrate_refused(&url, &database_file(&redb));
    assert!(stderr.contains("herald backup"), "{stderr}");
    let backup = redb.data_dir().with_file_name("backup.redb");
    let mut cmd = herald();
    cmd.arg("backup")
        .arg("--out")
        .arg(&backup)
        .arg("--url")
        .arg(format!("http://{}", redb.addr));
    let out = run_with_deadline(&mut cmd, MIGRATE_RUN);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(migrate_ok(&url, &backup), 80);

    // The short write pause: events keep coming until the daemon stops,
    // then the live file brings the rest.
    post_mix(redb.addr, "r2", 40, &mut sent);
    stop(&mut redb);
    assert_eq!(migrate_ok(&url, &database_file(&redb)), 40);

    redb.restart();
    post_mix(redb.addr, "r3", 25, &mut sent);
    let before = list_all(redb.addr, "", &[]);
    stop(&mut redb);
    assert_eq!(migrate_ok(&url, &database_file(&redb)), 25);
    assert_eq!(migrate_ok(&url, &database_file(&redb)), 0);
    // The older backup holds nothing the database lacks.
    assert_eq!(migrate_ok(&url, &backup), 0);

    let last_seq = before.last().unwrap()["seq"].as_u64().unwrap();
    assert_eq!(
        psql(
            &url,
            "SELECT copied_through_seq, events_copied, keys_copied, finished_at IS NOT NULL \
             FROM herald_import"
        ),
        format!("{last_seq}|145|{}|t", sent.len())
    );
    let mut node = Daemon::start(&node_toml(&url));
    assert_eq!(list_all(node.addr, "", &[]), before);
    let new = create(node.addr, &json!({"type": "order.placed"}));
    assert_eq!(new["seq"].as_u64(), Some(last_seq + 1));
    stop(&mut node);
}

#[test]
fn a_log_that_is_not_this_files_is_refused_untouched() {
    if !super::postgres_or_skip() {
        return;
    }
    let mut one = Daemon::start(REDB);
    let mut other = Daemon::start(REDB);
    let mut sent = Sent::new();
    post_mix(one.addr, "one", 12, &mut sent);
    post_mix(other.addr, "other", 12, &mut sent);
    stop(&mut one);
    stop(&mut other);

    // A database a node already appended its own events to.
    let url = fresh_database();
    let mut node = Daemon::start(&node_toml(&url));
    create(
        node.addr,
        &json!({"type": "order.placed", "idempotency_key": "mine"}),
    );
    stop(&mut node);
    let stderr = migrate_refused(&url, &database_file(&one));
    assert!(stderr.contains("refused"), "{stderr}");
    assert_eq!(psql(&url, "SELECT count(*) FROM herald_events"), "1");
    assert_eq!(psql(&url, "SELECT count(*) FROM herald_import"), "0");

    // A database holding another file's import.
    let url = fresh_database();
    assert_eq!(migrate_ok(&url, &database_file(&one)), 12);
    let stderr = migrate_refused(&url, &database_file(&other));
    assert!(stderr.contains("another file"), "{stderr}");
    assert_eq!(psql(&url, "SELECT count(*) FROM herald_events"), "12");

    // A file that is not there is not created.
    let missing = one.data_dir().join("nothing.redb");
    let stderr = migrate_refused(&url, &missing);
    assert!(stderr.contains("no such file"), "{stderr}");
    assert!(!missing.exists());
}

/// Loopback receivers need the allow-list. A failed attempt waits an hour
/// for its retry, so a pending delivery stays as it is while the test
/// compares the two backends' answers.
const WEBHOOKS: &str = r#"
[webhooks]
allow_networks = ["127.0.0.1/32"]
require_https = false
retry_schedule = ["1h"]
timeout = "2s"
circuit_failures = 100
"#;

/// Generous: a debug build on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(60);

/// A receiver that answers `before` until the flag is set, then 200.
fn switched(before: Reply) -> (Receiver, Arc<AtomicBool>) {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let receiver = Receiver::start(move |_, _| {
        if set.load(Ordering::SeqCst) {
            Reply::status(200)
        } else {
            before.clone()
        }
    });
    (receiver, flag)
}

fn create_endpoint(addr: std::net::SocketAddr, body: Value) -> Value {
    let resp = post_json(addr, "/v1/endpoints", &body);
    assert_eq!(resp.status, 201, "{body}: {}", resp.text());
    resp.json()
}

fn endpoints(addr: std::net::SocketAddr) -> Value {
    let resp = get(addr, "/v1/endpoints");
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["endpoints"].clone()
}

/// Every delivery matching `query`, in id order, in pages of 16.
fn deliveries(addr: std::net::SocketAddr, query: &str) -> Vec<Value> {
    list_pages(
        addr,
        &format!("/v1/deliveries?{query}"),
        "deliveries",
        16,
        &[],
    )
}

fn attempts(delivery: &Value) -> usize {
    delivery["attempts"].as_array().expect("attempts").len()
}

/// Events of the `order.` types, which the test's endpoints subscribe to.
fn orders(addr: std::net::SocketAddr) -> usize {
    list_all(addr, "", &[])
        .iter()
        .filter(|e| s(&e["type"]).starts_with("order."))
        .count()
}

#[test]
fn webhooks_move_with_the_log_and_a_second_run_brings_them_up_to_date() {
    if !super::postgres_or_skip() {
        return;
    }
    let url = fresh_database();
    let config = format!("{REDB}{WEBHOOKS}");
    let ok = Receiver::always(200);
    let (failing, failing_fixed) = switched(Reply::status(500));
    let mut redb = Daemon::start(&config);
    let order_types = json!(["order.*"]);
    create_endpoint(
        redb.addr,
        json!({"url": ok.url("/a"), "event_types": order_types}),
    );
    let b = create_endpoint(
        redb.addr,
        json!({"url": failing.url("/b"), "event_types": order_types}),
    );
    let mut sent = Sent::new();
    post_mix(redb.addr, "r1", 40, &mut sent);
    let first_orders = orders(redb.addr);
    // A's deliveries succeed; B's failed once and wait an hour, pending.
    let attempted = wait_until(deadline(SETTLE), || {
        let all = deliveries(redb.addr, "");
        all.len() == 2 * first_orders && all.iter().all(|d| attempts(d) == 1)
    });
    assert!(attempted, "{:#?}", deliveries(redb.addr, ""));
    stop(&mut redb);

    let summary = migrate_summary(&url, &database_file(&redb));
    assert_eq!(hooks_written(&summary), (2, 2 * first_orders as u64));
    assert_eq!(
        psql(
            &url,
            "SELECT string_agg(status || ':' || n, ',' ORDER BY status) FROM \
             (SELECT status, count(*) AS n FROM herald_deliveries GROUP BY status) AS c"
        ),
        format!("0:{first_orders},1:{first_orders}")
    );

    // The file moves on: one of B's pending deliveries succeeds by hand,
    // which also ends B's failing streak (its record changes); C's
    // receiver holds every attempt unanswered until the daemon is killed,
    // so C's deliveries stay pending and due; D answers 410 Gone: its one
    // delivery fails and it is disabled.
    redb.restart();
    failing_fixed.store(true, Ordering::SeqCst);
    let b_pending = deliveries(redb.addr, &format!("endpoint={}", s(&b["id"])));
    let retry = request(
        redb.addr,
        "POST",
        &format!("/v1/deliveries/{}/retry", s(&b_pending[0]["id"])),
        &[],
        b"",
    );
    assert_eq!(retry.status, 202, "{}", retry.text());
    assert_eq!(retry.json()["status"], "succeeded");
    let (hanging, hanging_open) = switched(Reply::Hang);
    let c = create_endpoint(
        redb.addr,
        json!({"url": hanging.url("/c"), "event_types": order_types, "timeout_secs": 30}),
    );
    let gone = Receiver::always(410);
    create_endpoint(
        redb.addr,
        json!({"url": gone.url("/d"), "event_types": ["refund.*"]}),
    );
    post_mix(redb.addr, "r2", 10, &mut sent);
    create(redb.addr, &json!({"type": "refund.made"}));
    let new_orders = orders(redb.addr) - first_orders;
    assert!(new_orders > 0);
    // Fewer than the in-flight cap: every one of C's attempts hangs at once.
    hanging.wait_for_requests(new_orders, deadline(SETTLE));
    let total = 2 * first_orders + 3 * new_orders + 1;
    let attempted = wait_until(deadline(SETTLE), || {
        let all = deliveries(redb.addr, "");
        all.len() == total
            && all
                .iter()
                .all(|d| d["endpoint_id"] == c["id"] || attempts(d) >= 1)
    });
    assert!(attempted, "{:#?}", deliveries(redb.addr, ""));
    let events_before = list_all(redb.addr, "", &[]);
    let endpoints_before = endpoints(redb.addr);
    let deliveries_before = deliveries(redb.addr, "");
    assert_eq!(endpoints_before.as_array().map(Vec::len), Some(4));
    assert!(
        endpoints_before
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["enabled"] == false),
        "410 disabled D: {endpoints_before:#}"
    );
    let c_pending: Vec<&Value> = deliveries_before
        .iter()
        .filter(|d| d["endpoint_id"] == c["id"])
        .collect();
    assert!(
        c_pending
            .iter()
            .all(|d| d["status"] == "pending" && attempts(d) == 0),
        "{c_pending:#?}"
    );
    let statuses: HashSet<&str> = deliveries_before.iter().map(|d| s(&d["status"])).collect();
    assert_eq!(
        statuses.len(),
        3,
        "pending, succeeded and failed: {statuses:?}"
    );
    redb.kill9();

    // Only what changed is written: B and the new endpoints C and D; the
    // retried delivery and the new ones. Again, nothing.
    let summary = migrate_summary(&url, &database_file(&redb));
    assert_eq!(hooks_written(&summary), (3, 1 + 3 * new_orders as u64 + 1));
    // An endpoint the file no longer holds (deleted there since) is left,
    // and the summary says so.
    psql(
        &url,
        "INSERT INTO herald_endpoints (id, enabled, record) \
         VALUES ('\\x00000000000000000000000000000001', false, '\\x00')",
    );
    let summary = migrate_summary(&url, &database_file(&redb));
    assert_eq!(hooks_written(&summary), (0, 0), "{summary}");
    assert!(summary.starts_with("copied 0 events"), "{summary}");
    assert!(
        summary.contains("; 1 endpoints the file no longer holds were left"),
        "{summary}"
    );
    psql(&url, "DELETE FROM herald_endpoints WHERE record = '\\x00'");
    let last_id: u64 = psql(&url, "SELECT max(id) FROM herald_deliveries")
        .parse()
        .unwrap();
    assert_eq!(
        psql(
            &url,
            "SELECT endpoints_copied, deliveries_copied, deliveries_through, \
             finished_at IS NOT NULL FROM herald_import"
        ),
        format!(
            "5|{}|{last_id}|t",
            2 * first_orders + 1 + 3 * new_orders + 1
        )
    );

    // On PostgreSQL: the same endpoints, and the same deliveries under the
    // same ids; C's pending ones are attempted again, with the same
    // webhook-id, and succeed.
    hanging_open.store(true, Ordering::SeqCst);
    let hung = hanging.requests().len();
    let mut node = Daemon::start(&format!("{}{WEBHOOKS}", node_toml(&url)));
    assert_eq!(list_all(node.addr, "", &[]), events_before);
    assert_eq!(endpoints(node.addr), endpoints_before);
    let arrived = hanging.wait_for_requests(hung + new_orders, deadline(SETTLE));
    let webhook_ids: HashSet<&str> = arrived[hung..]
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    let c_events: HashSet<&str> = c_pending.iter().map(|d| s(&d["event_id"])).collect();
    assert_eq!(webhook_ids, c_events);
    let mut after = Vec::new();
    let settled = wait_until(deadline(SETTLE), || {
        after = deliveries(node.addr, "");
        after
            .iter()
            .filter(|d| d["endpoint_id"] == c["id"])
            .all(|d| d["status"] == "succeeded")
    });
    assert!(settled, "{after:#?}");
    assert_eq!(after.len(), deliveries_before.len());
    for (now, was) in after.iter().zip(&deliveries_before) {
        if was["endpoint_id"] == c["id"] {
            assert_eq!(
                (&now["id"], &now["event_id"], attempts(now)),
                (&was["id"], &was["event_id"], 1),
                "{now:#}"
            );
        } else {
            assert_eq!(now, was);
        }
    }
    assert_eq!(endpoints(node.addr), endpoints_before);

    // New deliveries take ids after the copied ones: listed last.
    let new = create(node.addr, &json!({"type": "order.placed"}));
    let all = deliveries(node.addr, "");
    assert_eq!(all.len(), total + 3, "A, B and C; D is disabled");
    assert!(
        all[total..].iter().all(|d| d["event_id"] == new["id"]),
        "{:#?}",
        &all[total..]
    );
    stop(&mut node);
}

/// A stream relaying to `smtp_port`, allowed to send from example.com.
fn mail_toml(smtp_port: u16) -> String {
    format!(
        "[mail]\nworkers = 2\nretry_schedule = [\"100ms\"]\n\
         [mail.streams.transactional]\nfrom_domains = [\"example.com\"]\n\
         relay = \"smtp://127.0.0.1:{smtp_port}\"\n"
    )
}

fn message(to: &str, key: Option<&str>) -> Value {
    let mut body = json!({"from": "Acme <no-reply@example.com>", "to": to,
                          "subject": "Your receipt", "text": "Thanks.", "tags": {"order": "42"}});
    if let Some(key) = key {
        body["idempotency_key"] = json!(key);
    }
    body
}

/// Every message, every suppression entry of the global list and of
/// tenant acme, and the stream's health, as `addr` answers them.
fn mail_state(addr: std::net::SocketAddr) -> (Vec<Value>, Vec<Value>, Vec<Value>, Value) {
    let emails = list_pages(addr, "/v1/emails", "emails", 3, &[]);
    let global = list_pages(addr, "/v1/suppressions", "suppressions", 2, &[]);
    let acme = list_pages(addr, "/v1/suppressions?tenant=acme", "suppressions", 2, &[]);
    let health = get(addr, "/v1/streams/transactional/health").json();
    (emails, global, acme, health)
}

#[test]
fn mail_moves_with_the_log_and_keeps_its_suppressions_keys_and_link_keys() {
    if !super::postgres_or_skip() {
        return;
    }
    let sink = crate::mail::smtp::SmtpSink::start(
        &crate::mail::smtp::Script::always("250")
            .rcpt("gone@example.net", &["550 5.1.1 no such mailbox"]),
        None,
    );
    let mut redb = Daemon::start(&format!("{REDB}{}", mail_toml(sink.port)));
    let mut ids = Vec::new();
    for (to, key) in [
        ("ann@example.net", Some("receipt-1")),
        ("bob@example.net", None),
        ("gone@example.net", None),
    ] {
        let resp = post_json(redb.addr, "/v1/emails", &message(to, key));
        assert_eq!(resp.status, 202, "{}", resp.text());
        ids.push(s(&resp.json()["messages"][0]["id"]).to_owned());
    }
    let resp = post_json(
        redb.addr,
        "/v1/emails",
        &json!({"from": "Acme <no-reply@example.com>", "to": "cat@example.net",
                "subject": "Hi", "text": "Hello.", "tenant": "acme"}),
    );
    assert_eq!(resp.status, 202, "{}", resp.text());
    ids.push(s(&resp.json()["messages"][0]["id"]).to_owned());
    for (path, body) in [
        ("/v1/suppressions/manual%40example.net", json!({})),
        (
            "/v1/suppressions/left%40example.net?tenant=acme",
            json!({"reason": "unsubscribe", "stream": "transactional"}),
        ),
    ] {
        let resp = request(
            redb.addr,
            "PUT",
            path,
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(resp.status, 201, "{path}: {}", resp.text());
    }
    let settled = wait_until(deadline(Duration::from_secs(30)), || {
        ids.iter().all(|id| {
            let status = get(redb.addr, &format!("/v1/emails/{id}")).json()["status"].clone();
            status == "sent" || status == "bounced"
        })
    });
    assert!(settled, "the messages did not settle on redb");
    let before = mail_state(redb.addr);
    assert_eq!(before.0.len(), 4);
    // The bounce put gone@ on the global list beside the manual entry.
    assert_eq!(before.1.len(), 2, "{:?}", before.1);
    assert_eq!(before.2.len(), 1, "{:?}", before.2);
    let portal_link = post_json(redb.addr, "/v1/portal-links", &json!({"tenant": "acme"}));
    assert_eq!(portal_link.status, 201, "{}", portal_link.text());
    let portal_url = s(&portal_link.json()["url"]).to_owned();
    let portal_path = &portal_url[portal_url.find("/portal/").expect("a portal path")..];
    stop(&mut redb);

    let url = fresh_database();
    let summary = migrate_summary(&url, &database_file(&redb));
    assert!(
        summary.contains("4 emails, 3 suppression entries"),
        "{summary}"
    );
    let mut node = Daemon::start(&format!("{}{}", node_toml(&url), mail_toml(sink.port)));
    let after = mail_state(node.addr);
    assert_eq!(after.0, before.0, "the messages");
    assert_eq!(after.1, before.1, "the global list");
    assert_eq!(after.2, before.2, "acme's list");
    assert_eq!(after.3, before.3, "the stream's health");
    // The link keys moved too: a portal link the file's install made opens.
    let session = get(node.addr, &format!("{portal_path}/api/session"));
    assert_eq!(session.status, 200, "{}", session.text());
    assert_eq!(session.json()["tenant"], "acme");
    for id in &ids {
        let was = get(node.addr, &format!("/v1/emails/{id}"));
        assert_eq!(was.status, 200, "{}", was.text());
        assert!(was.json()["attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty()));
    }

    // The lists still hold on the new backend: nothing is queued for a
    // suppressed address, and the request's key still names its message.
    for to in ["gone@example.net", "manual@example.net"] {
        let refused = post_json(node.addr, "/v1/emails", &message(to, None));
        assert_eq!(refused.status, 422, "{to}: {}", refused.text());
        assert_eq!(refused.json()["error"]["code"], "recipient_suppressed");
    }
    let again = post_json(
        node.addr,
        "/v1/emails",
        &message("ann@example.net", Some("receipt-1")),
    );
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(s(&again.json()["messages"][0]["id"]), ids[0]);
    let next = post_json(node.addr, "/v1/emails", &message("dan@example.net", None));
    assert_eq!(next.status, 202, "{}", next.text());
    let next_id = s(&next.json()["messages"][0]["id"]).to_owned();
    assert!(next_id > ids[3], "{next_id} after {}", ids[3]);
    sink.wait_for_id(&next_id, deadline(Duration::from_secs(30)));
    stop(&mut node);
}

const TRACKING_ADMIN: &str = "configured-admin-key-for-the-tracking-move";
const WRITE_KEY: &str = "wk_migrate_0123456789abcdef";

fn tracking_toml() -> String {
    format!(
        "[server]\napi_keys = [\"{TRACKING_ADMIN}\"]\n\
         [[tracking.sources]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n\
         [[tracking.sources]]\nname = \"acme-web\"\nwrite_key = \"{WRITE_KEY}-acme\"\n\
         tenant = \"acme\"\n"
    )
}

/// Posts a Segment batch with `write_key`; every call must be accepted.
fn segment(addr: std::net::SocketAddr, write_key: &str, batch: &[Value]) {
    use base64::Engine;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"))
    );
    let resp = request(
        addr,
        "POST",
        "/v1/batch",
        &[JSON, ("authorization", &auth)],
        json!({ "batch": batch }).to_string().as_bytes(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
}

/// Everything the tracking queries answer about the calls `tracked_calls`
/// posts, read with `key`.
fn tracking_answers(addr: std::net::SocketAddr, key: &str) -> Vec<Value> {
    use crate::tenancy::call;
    [
        "/v1/users/ann",
        "/v1/users/ann/events",
        "/v1/users/bob/events",
        "/v1/stats/events?event=Order%20Placed&interval=day",
        "/v1/funnels?steps=Signed%20Up,Order%20Placed&within=7d",
        "/v1/attribution?event=Order%20Placed&model=first_touch",
        "/v1/users/cat?tenant=acme",
    ]
    .iter()
    .map(|path| {
        let resp = call(addr, key, "GET", path, None);
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        let mut answer = resp.json();
        // A default range ends now, and a query says how long it took.
        if let Some(fields) = answer.as_object_mut() {
            for moving in ["since", "until", "took_ms"] {
                fields.remove(moving);
            }
        }
        answer
    })
    .collect()
}

#[test]
fn tracked_users_stored_keys_and_the_catalog_move_with_the_log() {
    use crate::tenancy::call;
    if !super::postgres_or_skip() {
        return;
    }
    let mut redb = Daemon::start(&format!("{REDB}{}", tracking_toml()));
    let campaign = json!({"campaign": {"source": "news", "medium": "email", "name": "launch"}});
    segment(
        redb.addr,
        WRITE_KEY,
        &[
            json!({"type": "track", "anonymousId": "anon-9", "event": "Signed Up",
                   "messageId": "m-1", "context": campaign}),
            json!({"type": "identify", "userId": "ann", "anonymousId": "anon-9",
                   "traits": {"plan": "pro", "email": "ann@example.net"}, "messageId": "m-2"}),
            json!({"type": "track", "userId": "ann", "event": "Order Placed",
                   "properties": {"total": 30}, "messageId": "m-3"}),
            json!({"type": "track", "userId": "bob", "event": "Signed Up", "messageId": "m-4"}),
            json!({"type": "alias", "previousId": "bob-old", "userId": "bob", "messageId": "m-5"}),
        ],
    );
    segment(
        redb.addr,
        &format!("{WRITE_KEY}-acme"),
        &[
            json!({"type": "identify", "userId": "cat", "traits": {"team": "blue"},
                 "messageId": "m-1"}),
        ],
    );
    let key = call(
        redb.addr,
        TRACKING_ADMIN,
        "POST",
        "/v1/keys",
        Some(&json!({"role": "read"})),
    );
    assert_eq!(key.status, 201, "{}", key.text());
    let stored_key = s(&key.json()["key"]).to_owned();
    let schema = json!({"versions": {"1": {"schema": {"type": "object", "required": ["amount"],
        "properties": {"amount": {"type": "integer"}}}, "sample": {"amount": 1}}}});
    let put = call(
        redb.addr,
        TRACKING_ADMIN,
        "PUT",
        "/v1/event-types/invoice.paid",
        Some(&schema),
    );
    assert!(put.status == 200 || put.status == 201, "{}", put.text());
    let before = tracking_answers(redb.addr, TRACKING_ADMIN);
    assert_eq!(before[0]["traits"]["plan"], "pro", "{}", before[0]);
    assert_eq!(before[1]["events"].as_array().map(Vec::len), Some(3));
    stop(&mut redb);

    let url = fresh_database();
    let summary = migrate_summary(&url, &database_file(&redb));
    assert!(
        summary.contains("6 tracked calls and 3 profiles indexed anew"),
        "{summary}"
    );
    assert!(
        summary.contains("2 API keys and event types new or changed"),
        "{summary}"
    );
    let node = Daemon::start(&format!("{}{}", node_toml(&url), tracking_toml()));
    assert_eq!(
        tracking_answers(node.addr, TRACKING_ADMIN),
        before,
        "the tracking queries answer on PostgreSQL as on the file"
    );
    // The key made through the file's API opens the node, and the type it
    // catalogued is checked there.
    assert_eq!(
        call(node.addr, &stored_key, "GET", "/v1/users/ann", None).status,
        200
    );
    let refused = call(
        node.addr,
        TRACKING_ADMIN,
        "POST",
        "/v1/events",
        Some(&json!({"type": "invoice.paid", "data": {"amount": "lots"}})),
    );
    assert_eq!(refused.status, 422, "{}", refused.text());
    // A messageId the file saw is still a repeat within the window.
    segment(
        node.addr,
        WRITE_KEY,
        &[
            json!({"type": "track", "userId": "ann", "event": "Order Placed",
                 "properties": {"total": 30}, "messageId": "m-3"}),
        ],
    );
    let events = call(
        node.addr,
        TRACKING_ADMIN,
        "GET",
        "/v1/users/ann/events",
        None,
    );
    assert_eq!(events.json()["events"].as_array().map(Vec::len), Some(3));
    // A second run finds everything in place.
    let again = migrate_summary(&url, &database_file(&redb));
    assert!(
        again.contains("0 tracked calls and 0 profiles indexed anew"),
        "{again}"
    );
}
