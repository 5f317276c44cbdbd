//! The admin commands (`herald endpoints …`, `herald stats` …) run as the
//! real binary against a running daemon: what they print, in tables and
//! with `--json`, and what they change, read back through the API.

use std::net::SocketAddr;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;
use crate::webhooks::receiver::{Receiver, Reply};

const KEY: &str = "admin-cli-key-0123456789abcdef";
const CLI_TIMEOUT: Duration = Duration::from_secs(90);
/// Generous: a debug build on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(30);

/// One retry, quickly: a failing delivery is a dead letter within a second.
const WEBHOOKS: &str = r#"
[webhooks]
allow_networks = ["127.0.0.1/32"]
require_https = false
retry_schedule = ["100ms"]
circuit_failures = 100
"#;

fn keyed_daemon(extra: &str) -> Daemon {
    Daemon::start(&format!("[server]\napi_keys = [\"{KEY}\"]\n{extra}"))
}

/// `herald ARGS --url http://ADDR` with `key` in HERALD_API_KEY.
fn cli_with(addr: SocketAddr, key: &str, args: &[&str]) -> Output {
    let mut cmd = herald();
    cmd.args(args)
        .arg("--url")
        .arg(format!("http://{addr}"))
        .env("HERALD_API_KEY", key);
    run_with_deadline(&mut cmd, CLI_TIMEOUT)
}

/// Stdout of a command that must succeed.
fn ok(addr: SocketAddr, args: &[&str]) -> String {
    let out = cli_with(addr, KEY, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "herald {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The JSON a command printed with `--json`.
fn ok_json(addr: SocketAddr, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let text = ok(addr, &args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("herald {args:?}: {e}: {text}"))
}

fn auth() -> String {
    format!("Bearer {KEY}")
}

fn api(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Response {
    let bearer = auth();
    let text = body.map(Value::to_string).unwrap_or_default();
    let mut headers = vec![("Authorization", bearer.as_str())];
    if body.is_some() {
        headers.push(JSON);
    }
    request(addr, method, path, &headers, text.as_bytes())
}

fn api_get(addr: SocketAddr, path: &str) -> Value {
    let resp = api(addr, "GET", path, None);
    assert_eq!(resp.status, 200, "GET {path}: {}", resp.text());
    resp.json()
}

/// The line of a table whose first cell is `first`.
fn line_of<'a>(table: &'a str, first: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no line for {first} in:\n{table}"))
}

fn dead_letters(addr: SocketAddr) -> Vec<Value> {
    api_get(addr, "/v1/dead-letters")["deliveries"]
        .as_array()
        .expect("deliveries")
        .clone()
}

/// Posts an event and waits until its one delivery has run out of retries.
fn dead_letter_of(addr: SocketAddr, event_type: &str) -> (String, String) {
    let resp = api(
        addr,
        "POST",
        "/v1/events",
        Some(&json!({"type": event_type})),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let event_id = s(&resp.json()["id"]).to_owned();
    let mut found = None;
    let dead = wait_until(deadline(SETTLE), || {
        found = dead_letters(addr)
            .into_iter()
            .find(|d| d["event_id"] == event_id.as_str());
        found.is_some()
    });
    assert!(dead, "{event_id} never became a dead letter");
    (event_id, s(&found.unwrap()["id"]).to_owned())
}

#[test]
fn endpoint_delivery_and_dead_letter_commands_show_and_change_what_the_api_does() {
    let healthy = Arc::new(AtomicBool::new(false));
    let answer = healthy.clone();
    let receiver = Receiver::start(move |_, _| {
        if answer.load(Ordering::SeqCst) {
            Reply::status(200)
        } else {
            Reply::status(500).body("the receiver is down")
        }
    });
    let d = keyed_daemon(WEBHOOKS);
    let addr = d.addr;
    let created = api(
        addr,
        "POST",
        "/v1/endpoints",
        Some(&json!({"url": receiver.url("/hook"), "description": "billing hooks"})),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let ep = s(&created.json()["id"]).to_owned();
    let (event_id, delivery) = dead_letter_of(addr, "invoice.paid");

    // Lists and lookups: a table with the facts, and the API's JSON as is.
    let listed = ok(addr, &["endpoints", "list"]);
    assert!(listed.starts_with("ID "), "{listed}");
    let row = line_of(&listed, &ep);
    assert!(
        row.contains("enabled")
            && row.contains(&receiver.url("/hook"))
            && row.contains("billing hooks"),
        "{row}"
    );
    assert_eq!(
        ok_json(addr, &["endpoints", "list"]),
        api_get(addr, "/v1/endpoints")
    );

    let shown = ok(addr, &["endpoints", "show", &ep]);
    assert!(
        shown.contains("deliveries: 0 pending, 0 succeeded, 1 failed"),
        "{shown}"
    );
    assert!(line_of(&shown, "id:").contains(&ep), "{shown}");
    let shown_json = ok_json(addr, &["endpoints", "show", &ep]);
    assert_eq!(
        shown_json["endpoint"],
        api_get(addr, &format!("/v1/endpoints/{ep}"))
    );
    assert_eq!(shown_json["stats"]["deliveries"]["failed"], 1);

    let dlq = ok(addr, &["dlq", "list"]);
    let row = line_of(&dlq, &delivery);
    assert!(
        row.contains(&ep) && row.contains("invoice.paid") && row.contains("500"),
        "{row}"
    );
    assert!(row.contains("the receiver is down"), "{row}");
    assert_eq!(
        ok_json(addr, &["dlq", "list", "--endpoint", &ep]),
        api_get(addr, &format!("/v1/dead-letters?endpoint={ep}"))
    );

    let one = ok(addr, &["deliveries", "show", &delivery]);
    assert!(line_of(&one, "status:").contains("failed"), "{one}");
    assert!(
        line_of(&one, "1").contains("500") && line_of(&one, "2").contains("scheduled"),
        "{one}"
    );
    assert_eq!(
        ok_json(addr, &["deliveries", "show", &delivery]),
        api_get(addr, &format!("/v1/deliveries/{delivery}"))
    );

    // The summary, while there is a dead letter to report.
    let stats = ok(addr, &["stats"]);
    assert!(stats.contains("\ndead letters: 1\n"), "{stats}");
    assert!(line_of(&stats, &ep).contains("enabled"), "{stats}");
    assert!(
        stats.contains("transactional") && stats.contains("schema version"),
        "{stats}"
    );
    let stats_json = ok_json(addr, &["stats"]);
    assert_eq!(stats_json["endpoint_stats"][&ep]["deliveries"]["failed"], 1);
    assert!(stats_json["storage"]["file_bytes"].as_u64().unwrap() > 0);
    assert!(stats_json["events_last_hour"]["count"].as_u64().unwrap() >= 1);

    // A retry is a real attempt that reaches the receiver.
    healthy.store(true, Ordering::SeqCst);
    let before = receiver.requests().len();
    let retried = ok(addr, &["deliveries", "retry", &delivery]);
    assert!(retried.contains("attempt 3 answered 200"), "{retried}");
    assert!(retried.contains("the delivery is succeeded"), "{retried}");
    let got = receiver.wait_for_requests(before + 1, deadline(SETTLE));
    assert_eq!(got[before].header("webhook-id"), event_id);
    assert_eq!(
        api_get(addr, &format!("/v1/deliveries/{delivery}"))["status"],
        "succeeded"
    );

    // Disable and enable, seen through the API.
    let disabled = ok(addr, &["endpoints", "disable", &ep]);
    assert!(
        disabled.starts_with(&format!("{ep}: disabled")),
        "{disabled}"
    );
    assert_eq!(
        api_get(addr, &format!("/v1/endpoints/{ep}"))["enabled"],
        false
    );
    let enabled = ok_json(addr, &["endpoints", "enable", &ep]);
    assert_eq!(enabled["enabled"], true);
    assert_eq!(
        api_get(addr, &format!("/v1/endpoints/{ep}"))["enabled"],
        true
    );

    // A test send reaches the receiver.
    let before = receiver.requests().len();
    let tested = ok(addr, &["endpoints", "test", &ep]);
    assert!(
        tested.starts_with(&format!("{ep}: answered 200")),
        "{tested}"
    );
    let got = receiver.wait_for_requests(before + 1, deadline(SETTLE));
    assert_eq!(got[before].json()["type"], "herald.test");

    // Recovering re-queues what failed since the time given.
    healthy.store(false, Ordering::SeqCst);
    let (second_event, second) = dead_letter_of(addr, "invoice.voided");
    healthy.store(true, Ordering::SeqCst);
    let refused = cli_with(
        addr,
        KEY,
        &["dlq", "recover", &ep, "--since", "last tuesday"],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--since"));
    let recovered = ok(addr, &["dlq", "recover", &ep, "--since", "1h"]);
    assert!(
        recovered.starts_with(&format!("{ep}: 1 failed deliveries since ")),
        "{recovered}"
    );
    let arrived = wait_until(deadline(SETTLE), || {
        receiver.requests().iter().any(|r| {
            r.header("webhook-id") == second_event
                && r.body.starts_with(b"{")
                && r.json()["type"] == "invoice.voided"
        }) && api_get(addr, &format!("/v1/deliveries/{second}"))["status"] == "succeeded"
    });
    assert!(arrived, "the recovered delivery did not succeed");
    assert_eq!(ok(addr, &["dlq", "list"]), "no dead letters\n");

    // An unknown id is the API's refusal: its message, exit 1.
    let missing = cli_with(addr, KEY, &["deliveries", "show", "dlv_00000000000000ff"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stdout.is_empty());
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("no delivery has id `dlv_00000000000000ff`"));
}

#[test]
fn email_and_suppression_commands_show_the_timeline_and_change_the_lists() {
    let d = keyed_daemon("");
    let addr = d.addr;
    let sent = api(
        addr,
        "POST",
        "/v1/emails",
        Some(
            &json!({"from": "Acme <no-reply@example.com>", "to": "zed@example.net",
                     "subject": "Your receipt", "text": "Thanks.", "tags": {"kind": "receipt"}}),
        ),
    );
    assert_eq!(sent.status, 202, "{}", sent.text());
    let id = s(&sent.json()["messages"][0]["id"]).to_owned();
    let settled = wait_until(deadline(SETTLE), || {
        api_get(addr, &format!("/v1/emails/{id}"))["status"] == "sent"
    });
    assert!(settled, "{id} was not sent");

    let shown = ok(addr, &["emails", "show", &id]);
    assert!(
        line_of(&shown, "subject:").contains("Your receipt"),
        "{shown}"
    );
    assert!(line_of(&shown, "tags:").contains("kind=receipt"), "{shown}");
    let queued = shown.find("queued").expect("a queued step");
    let relayed = shown.find("relay: sent").expect("a relay step");
    assert!(queued < relayed, "{shown}");
    assert_eq!(
        ok_json(addr, &["emails", "show", &id]),
        api_get(addr, &format!("/v1/emails/{id}"))
    );

    // Add: new, then already there; seen by the API and refusing a send.
    let added = ok(
        addr,
        &[
            "suppressions",
            "add",
            "Bob+Tag@Example.net",
            "--stream",
            "marketing",
        ],
    );
    assert_eq!(
        added,
        "bob+tag@example.net: suppressed for stream marketing on the global list (manual)\n"
    );
    let again = ok(
        addr,
        &[
            "suppressions",
            "add",
            "bob+tag@example.net",
            "--stream",
            "marketing",
        ],
    );
    assert!(again.contains("already suppressed"), "{again}");
    let listed = api_get(addr, "/v1/suppressions");
    assert_eq!(listed["suppressions"][0]["address"], "bob+tag@example.net");
    assert_eq!(listed["suppressions"][0]["stream"], "marketing");
    let refused = api(
        addr,
        "POST",
        "/v1/emails",
        Some(
            &json!({"stream": "marketing", "from": "a@example.com", "to": "bob+tag@example.net",
                     "subject": "News", "text": "Hello"}),
        ),
    );
    assert_eq!(refused.status, 422, "{}", refused.text());
    let table = ok(addr, &["suppressions", "list"]);
    let row = line_of(&table, "bob+tag@example.net");
    assert!(row.contains("marketing") && row.contains("manual"), "{row}");
    assert_eq!(ok_json(addr, &["suppressions", "list"]), listed);

    // A tenant's list is its own.
    ok(
        addr,
        &[
            "suppressions",
            "add",
            "carol@example.net",
            "--tenant",
            "acme",
        ],
    );
    let acme = ok_json(addr, &["suppressions", "list", "--tenant", "acme"]);
    assert_eq!(acme["suppressions"].as_array().unwrap().len(), 1);
    assert_eq!(acme["suppressions"][0]["tenant"], "acme");

    // Remove, then nothing left to remove: the API's message, exit 1.
    let removed = ok(
        addr,
        &[
            "suppressions",
            "remove",
            "bob+tag@example.net",
            "--stream",
            "marketing",
        ],
    );
    assert!(removed.contains("removed"), "{removed}");
    assert_eq!(api_get(addr, "/v1/suppressions")["suppressions"], json!([]));
    assert_eq!(ok(addr, &["suppressions", "list"]), "no suppressions\n");
    let gone = cli_with(
        addr,
        KEY,
        &[
            "suppressions",
            "remove",
            "bob+tag@example.net",
            "--stream",
            "marketing",
        ],
    );
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&gone.stderr)
            .contains("bob+tag@example.net is not suppressed for stream `marketing`"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
}

#[test]
fn keys_config_files_and_refusals() {
    let d = keyed_daemon("");
    let addr = d.addr;

    // The key is printed once, alone on its line, and works at once.
    let made = ok(
        addr,
        &[
            "keys",
            "create",
            "--role",
            "write",
            "--tenant",
            "acme",
            "--description",
            "billing",
        ],
    );
    let key = made
        .lines()
        .find(|l| l.starts_with("hk_"))
        .unwrap_or_else(|| panic!("no key in:\n{made}"))
        .to_owned();
    let key_id = made.split_whitespace().next().unwrap().to_owned();
    assert!(key_id.starts_with("key_"), "{made}");
    let bearer = format!("Bearer {key}");
    let event = request(
        addr,
        "POST",
        "/v1/events",
        &[("Authorization", bearer.as_str()), JSON],
        br#"{"type": "made.with.a.new.key"}"#,
    );
    assert_eq!(event.status, 201, "{}", event.text());
    assert_eq!(event.json()["tenant"], "acme");
    let row = line_of(&ok(addr, &["keys", "list"]), &key_id).to_owned();
    assert!(
        row.contains("write") && row.contains("acme") && row.contains("billing"),
        "{row}"
    );
    assert!(
        !ok(addr, &["keys", "list"]).contains(&key),
        "a listed key shows its secret"
    );
    let by_json = ok_json(addr, &["keys", "create", "--role", "read"]);
    assert!(s(&by_json["key"]).starts_with("hk_"), "{by_json}");

    // A tenant key sees its part of the summary and is told about the rest.
    let tenant_stats = cli_with(addr, &key, &["stats"]);
    assert_eq!(tenant_stats.status.code(), Some(0));
    let text = String::from_utf8_lossy(&tenant_stats.stdout);
    assert!(
        line_of(&text, "storage:").contains("not shown to this key"),
        "{text}"
    );

    // Revoked: refused from the next request on.
    assert_eq!(
        ok(addr, &["keys", "revoke", &key_id]),
        format!("{key_id}: revoked\n")
    );
    let after = request(
        addr,
        "GET",
        "/v1/events",
        &[("Authorization", bearer.as_str())],
        b"",
    );
    assert_eq!(after.status, 401);

    // A wrong key: the API's message on stderr, nothing on stdout, exit 1.
    let wrong = cli_with(addr, "not-the-key-0123456789abcdef", &["stats"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(wrong.stdout.is_empty());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("401") && err.contains("send a valid API key"),
        "{err}"
    );

    // Address and key from a configuration file, as `herald backup` reads them.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        format!("[server]\nlisten = \"{addr}\"\napi_keys = [\"{KEY}\"]\n"),
    )
    .unwrap();
    let mut cmd = herald();
    cmd.args(["endpoints", "list", "--config"]).arg(&file);
    let from_file = run_with_deadline(&mut cmd, CLI_TIMEOUT);
    assert_eq!(
        from_file.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&from_file.stdout), "no endpoints\n");

    // Nobody listening: exit 1. A bad URL or configuration: exit 2.
    let port = unused_port();
    let down = run_with_deadline(
        herald().args(["stats", "--url", &format!("http://127.0.0.1:{port}")]),
        CLI_TIMEOUT,
    );
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot reach the daemon"));
    let bad_url = run_with_deadline(
        herald().args(["stats", "--url", "https://example.com"]),
        CLI_TIMEOUT,
    );
    assert_eq!(bad_url.status.code(), Some(2));
    let missing = run_with_deadline(
        herald()
            .args(["keys", "list", "--config"])
            .arg(dir.path().join("none.toml")),
        CLI_TIMEOUT,
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("none.toml"));
    let no_role = run_with_deadline(
        herald().args(["keys", "create", "--url", &format!("http://{addr}")]),
        CLI_TIMEOUT,
    );
    assert_eq!(no_role.status.code(), Some(2));
}
