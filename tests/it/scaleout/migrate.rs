//! `herald migrate`: a redb install's event log copied into PostgreSQL,
//! served from there by a node as it was by the redb daemon, resumed after
//! the file gained events, and refused where it would mix two logs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

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

/// Runs `herald migrate`, failing unless it succeeds, and returns how many
/// events it says it copied.
fn migrate_ok(url: &str, file: &Path) -> u64 {
    let out = migrate(url, file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "herald migrate failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .trim()
        .strip_prefix("copied ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of copied events in {stdout:?}"))
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
