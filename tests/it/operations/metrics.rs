//! `GET /metrics` read by the reference Prometheus text parser
//! (tests/metrics_parse.py, prometheus_client): its counters move with real
//! traffic (requests, commits, deliveries to a receiver, mail to an SMTP
//! sink), its labels never carry an id, URL, address or tenant, and only a
//! key for every tenant may read it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::mail::smtp::{Script, SmtpSink};
use crate::support::*;
use crate::webhooks::receiver::{Receiver, Reply};

const SETTLE: Duration = Duration::from_secs(30);

const ADMIN: &str = "metrics-admin-0123456789abcdef";
const READER: &str = "metrics-reader-0123456789abcdef";
const ACME_READER: &str = "metrics-acme-reader-0123456789ab";

fn config(sink: &SmtpSink) -> String {
    let mut toml = format!(
        r#"
[server]
api_keys = ["{ADMIN}"]

[[server.keys]]
key = "{READER}"
role = "read"

[[server.keys]]
key = "{ACME_READER}"
role = "read"
tenant = "acme"

[webhooks]
allow_networks = ["127.0.0.1/32"]
require_https = false
retry_schedule = ["100ms", "200ms", "300ms"]
min_throttle_delay = "100ms"
timeout = "2s"
circuit_failures = 100

[mail]
workers = 2
"#
    );
    for stream in ["transactional", "marketing", "held"] {
        toml.push_str(&format!(
            "\n[mail.streams.{stream}]\nfrom_domains = [\"example.com\"]\nrelay = \"smtp://127.0.0.1:{}\"\nunsubscribe = false\n",
            sink.port
        ));
    }
    toml
}

/// One sample as the parser read it.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

struct Scrape(Vec<Sample>);

impl Scrape {
    /// The sum of `name`'s samples whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.name == name)
    }
}

fn with_key<'a>(key: &'a str, bearer: &'a mut String) -> [(&'a str, &'a str); 1] {
    *bearer = format!("Bearer {key}");
    [("Authorization", bearer.as_str())]
}

fn scrape_text(addr: SocketAddr, key: &str) -> Response {
    let mut bearer = String::new();
    request(addr, "GET", "/metrics", &with_key(key, &mut bearer), b"")
}

/// Scrapes with `key` and parses the answer with prometheus_client.
fn scrape(addr: SocketAddr, key: &str) -> Scrape {
    let resp = scrape_text(addr, key);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let media = resp.header("content-type").unwrap_or_default().to_owned();
    assert!(
        media.starts_with("text/plain; version=0.0.4"),
        "content type {media}"
    );
    parse(&resp.text())
}

fn parse(text: &str) -> Scrape {
    let out = run_python("metrics_parse.py", &[], text.as_bytes());
    assert!(
        out.status.success(),
        "the Prometheus parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("a JSON line");
            Sample {
                name: s(&v["name"]).to_owned(),
                labels: v["labels"]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), s(v).to_owned()))
                    .collect(),
                value: v["value"].as_f64().expect("a number"),
            }
        })
        .collect();
    Scrape(samples)
}

fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Response {
    let mut bearer = String::new();
    let auth = with_key(ADMIN, &mut bearer);
    let mut headers = auth.to_vec();
    let bytes = body.map(Value::to_string).unwrap_or_default();
    if body.is_some() {
        headers.push(JSON);
    }
    request(addr, method, path, &headers, bytes.as_bytes())
}

fn email(addr: SocketAddr, stream: &str, to: &str) {
    let body = json!({
        "stream": stream, "from": "no-reply@example.com", "to": to,
        "subject": "Receipt", "text": "Thanks.",
    });
    let resp = call(addr, "POST", "/v1/emails", Some(&body));
    assert_eq!(resp.status, 202, "{}", resp.text());
}

#[test]
fn counters_move_with_traffic_and_labels_name_no_id_url_address_or_tenant() {
    let sink = SmtpSink::start(&Script::always("250"), None);
    let healthy = Receiver::always(204);
    let broken = Receiver::start(|_, _| Reply::status(500));
    let d = Daemon::start(&config(&sink));

    let before = scrape(d.addr, ADMIN);
    assert!(before.has("herald_start_time_seconds"));
    assert!(before.value("herald_start_time_seconds", &[]) > 1.7e9);

    for (receiver, types) in [(&healthy, "ok.*"), (&broken, "bad.*")] {
        let body = json!({"url": receiver.url("/hook"), "event_types": [types], "tenant": "acme"});
        let resp = call(d.addr, "POST", "/v1/endpoints", Some(&body));
        assert_eq!(resp.status, 201, "{}", resp.text());
    }
    for t in ["ok.one", "ok.two", "bad.one"] {
        let body = json!({"type": t, "tenant": "acme", "data": {"to": "someone@example.org"}});
        let resp = call(d.addr, "POST", "/v1/events", Some(&body));
        assert_eq!(resp.status, 201, "{}", resp.text());
    }
    assert_eq!(
        call(
            d.addr,
            "GET",
            "/v1/events/evt_00000000000000000000000099",
            None
        )
        .status,
        404
    );
    assert_eq!(call(d.addr, "GET", "/no/such/path/acme", None).status, 404);
    let paused = call(d.addr, "POST", "/v1/streams/held/pause", None);
    assert_eq!(paused.status, 200, "{}", paused.text());
    email(d.addr, "transactional", "ann@example.net");
    email(d.addr, "transactional", "bob@example.net");
    email(d.addr, "marketing", "cy@example.net");
    email(d.addr, "held", "dee@example.net");

    healthy.wait_for_requests(2, deadline(SETTLE));
    sink.wait_for_messages(3, deadline(SETTLE));
    // Attempts are counted once durable, a commit after the request; a
    // message leaves the schedule a commit after its send is counted.
    let mut after = scrape(d.addr, ADMIN);
    let settled = wait_until(deadline(SETTLE), || {
        after = scrape(d.addr, ADMIN);
        after.value("herald_webhook_attempts_total", &[("outcome", "success")]) >= 2.0
            && after.value("herald_webhook_attempts_total", &[("outcome", "dead")]) >= 1.0
            && after.value("herald_webhook_deliveries_pending", &[]) == 0.0
            && after.value("herald_mail_sends_total", &[("outcome", "sent")]) >= 3.0
            && after.value("herald_mail_messages_pending", &[]) <= 1.0
            && after.value("herald_mail_messages_oldest_due_lag_seconds", &[]) > 0.0
    });
    assert!(settled, "{:?}", after.0);

    let requests = |m: &Scrape, method: &str, route: &str, status: &str| {
        m.value(
            "herald_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(requests(&after, "POST", "/v1/events", "201"), 3.0);
    assert_eq!(requests(&after, "POST", "/v1/endpoints", "201"), 2.0);
    assert_eq!(requests(&after, "GET", "/v1/events/{id}", "404"), 1.0);
    assert_eq!(requests(&after, "GET", "unmatched", "404"), 1.0);
    assert_eq!(requests(&after, "POST", "/v1/emails", "202"), 4.0);
    assert_eq!(
        after.value(
            "herald_http_request_duration_seconds_count",
            &[("route", "/v1/events"), ("status", "201")]
        ),
        3.0
    );
    assert!(requests(&after, "GET", "/metrics", "200") >= 1.0);

    // Every acknowledged write above went through a group commit: on
    // redb every write does; on PostgreSQL the event log's appends do, and
    // the rest commit transactions of their own.
    let commits = after.value("herald_writer_batch_size_count", &[]);
    let grouped = if postgres_backend() { 3.0 } else { 9.0 };
    assert!(
        commits >= grouped + before.value("herald_writer_batch_size_count", &[]),
        "{commits}"
    );
    assert_eq!(
        after.value("herald_writer_commit_duration_seconds_count", &[]),
        commits
    );
    assert!(after.value("herald_writer_batch_size_sum", &[]) >= commits);

    assert_eq!(
        after.value("herald_webhook_attempts_total", &[("outcome", "success")]),
        2.0
    );
    assert_eq!(
        after.value("herald_webhook_attempts_total", &[("outcome", "failure")]),
        3.0,
        "three retries before the schedule ran out"
    );
    assert_eq!(
        after.value("herald_webhook_attempts_total", &[("outcome", "dead")]),
        1.0
    );
    assert_eq!(
        broken.requests().len(),
        4,
        "the dead letter's attempts all reached the receiver"
    );
    assert_eq!(after.value("herald_webhook_deliveries_pending", &[]), 0.0);

    let sends = |stream: &str, outcome: &str| {
        after.value(
            "herald_mail_sends_total",
            &[("stream", stream), ("outcome", outcome)],
        )
    };
    assert_eq!(sends("transactional", "sent"), 2.0);
    assert_eq!(sends("marketing", "sent"), 1.0);
    assert_eq!(sends("held", "sent"), 0.0);
    assert_eq!(
        after.value(
            "herald_mail_send_duration_seconds_count",
            &[("stream", "transactional")]
        ),
        2.0
    );
    // The paused stream holds its message: one pending, overdue.
    assert_eq!(after.value("herald_mail_messages_pending", &[]), 1.0);
    assert_eq!(
        after.value("herald_mail_stream_paused", &[("stream", "held")]),
        1.0
    );
    assert_eq!(
        after.value(
            "herald_mail_stream_bounce_rate_24h",
            &[("stream", "transactional")]
        ),
        0.0
    );
    assert!(after.has("herald_mail_stream_complaint_rate_last_1000"));
    assert!(after.value("herald_database_file_bytes", &[]) > 0.0);

    let allowed: BTreeSet<&str> = ["method", "route", "status", "stream", "outcome", "le"].into();
    let routes: BTreeSet<&str> = herald::api::routes::ROUTES
        .iter()
        .map(|r| r.path)
        .chain(["unmatched"])
        .collect();
    for sample in &after.0 {
        for (name, value) in &sample.labels {
            assert!(
                allowed.contains(name.as_str()),
                "label {name} on {sample:?}"
            );
            for leak in [
                "evt_",
                "ep_",
                "msg_",
                "dlv_",
                "@",
                "http",
                "127.0.0.1",
                "acme",
                "hook",
            ] {
                assert!(!value.contains(leak), "{leak} in {sample:?}");
            }
            if name == "route" {
                assert!(routes.contains(value.as_str()), "{sample:?}");
            }
        }
    }
}

#[test]
fn only_a_key_for_every_tenant_reads_metrics_and_an_api_without_keys_is_open() {
    let sink = SmtpSink::start(&Script::always("250"), None);
    let d = Daemon::start(&config(&sink));
    let keyless = request(d.addr, "GET", "/metrics", &[], b"");
    assert_eq!(keyless.status, 401, "{}", keyless.text());
    assert_eq!(keyless.code(), "unauthorized");
    let tenant = scrape_text(d.addr, ACME_READER);
    assert_eq!(tenant.status, 403, "{}", tenant.text());
    assert_eq!(tenant.code(), "forbidden");
    assert_eq!(
        scrape_text(d.addr, "metrics-wrong-key-0123456789abc").status,
        401
    );
    scrape(d.addr, READER);
    let refused = scrape(d.addr, ADMIN);
    assert_eq!(
        refused.value(
            "herald_http_requests_total",
            &[("route", "/metrics"), ("status", "403")]
        ),
        1.0
    );

    let open = Daemon::start("");
    let resp = get(open.addr, "/metrics");
    assert_eq!(resp.status, 200, "{}", resp.text());
    parse(&resp.text());
    assert_eq!(
        request(open.addr, "POST", "/metrics", &[], b"").status,
        405,
        "a read-only route"
    );
}
