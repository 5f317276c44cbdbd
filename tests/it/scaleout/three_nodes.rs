//! Three `herald serve` nodes on one PostgreSQL database, under load from
//! every side while one node is killed with SIGKILL and another restarted:
//! what any node acknowledged is in the log exactly once, every node pages
//! through the same log in the same order, a reader tailing the log during
//! the load never skipped an event, every event reached the webhook
//! receiver (which fails one request in ten) at least once, and every
//! message a node accepted reached the SMTP sink.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::mail::smtp::{Script, SmtpSink};
use crate::support::*;
use crate::webhooks::receiver::{Receiver, Reply};

const WRITERS: usize = 6;
/// Requests each writer makes: singles and batches of ten, alternating.
const REQUESTS_PER_WRITER: usize = 120;
const BATCH: usize = 10;
const POLL_PAUSE: Duration = Duration::from_millis(5);

/// A message queued by every `MAIL_EVERY`th request of a writer.
const MAIL_EVERY: usize = 4;

/// Retries quick enough for the test, leases short enough that the killed
/// node's attempts and sends are made again within it.
fn node_toml(url: &str, smtp_port: u16) -> String {
    format!(
        "[store]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\n\
         [webhooks]\nallow_networks = [\"127.0.0.1/32\"]\nrequire_https = false\n\
         retry_schedule = [\"100ms\", \"200ms\", \"400ms\", \"1s\", \"2s\"]\n\
         min_throttle_delay = \"100ms\"\ntimeout = \"2s\"\ncircuit_failures = 1000\n\
         [mail]\nworkers = 2\ntimeout = \"2s\"\nretry_schedule = [\"100ms\", \"200ms\", \"400ms\"]\n\
         [mail.streams.transactional]\nfrom_domains = [\"example.com\"]\n\
         relay = \"smtp://127.0.0.1:{smtp_port}\"\n"
    )
}

/// The nodes' current addresses; a restarted node may come back on another.
type Nodes = Arc<RwLock<Vec<SocketAddr>>>;

/// Posts `body` to the nodes in turn from `first` until one answers with a
/// status other than 503 (or the deadline passes): a client retrying with
/// the same idempotency keys after a node died under it.
fn post_until_answered(nodes: &Nodes, first: usize, path: &str, body: &Value) -> Response {
    let deadline = deadline(Duration::from_secs(60));
    let mut attempt = first;
    loop {
        let addr = nodes.read().unwrap()[attempt % 3];
        match try_post_json(addr, path, body) {
            Ok(resp) if resp.status != 503 => return resp,
            _ if Instant::now() > deadline => panic!("no node answered {path} in time"),
            _ => attempt += 1,
        }
    }
}

#[test]
fn three_nodes_keep_one_log_through_a_kill_and_a_restart() {
    if !super::postgres_or_skip() {
        return;
    }
    let url = fresh_database();
    let sink = SmtpSink::start(&Script::always("250 2.0.0 queued"), None);
    let mut daemons: Vec<Daemon> = (0..3)
        .map(|_| Daemon::start(&node_toml(&url, sink.port)))
        .collect();
    let nodes: Nodes = Arc::new(RwLock::new(daemons.iter().map(|d| d.addr).collect()));
    // Every tenth request fails: those deliveries are retried, by
    // whichever node claims them next.
    let receiver = Receiver::start(|n, _| {
        if n % 10 == 9 {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    });
    let endpoint = post_json(
        daemons[0].addr,
        "/v1/endpoints",
        &json!({"url": receiver.url("/hook"), "event_types": ["load.*"]}),
    );
    assert_eq!(endpoint.status, 201, "{}", endpoint.text());

    // Acknowledged keys and what the acknowledging node said about them.
    let acked: Arc<Mutex<HashMap<String, (String, u64)>>> = Arc::default();
    // Message ids a node answered 202 (or 200, a repeat) with.
    let mail_acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));

    // The tailer follows the log on node 2 with `tail_cursor`, as a
    // consumer polling for new events would, while appends commit on all
    // three nodes.
    let tailer = {
        let nodes = nodes.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen: Vec<(u64, String)> = Vec::new();
            let mut cursor: Option<String> = None;
            let mut last_round = false;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let addr = nodes.read().unwrap()[2];
                let path = match &cursor {
                    Some(c) => format!("/v1/events?limit=500&after={c}"),
                    None => "/v1/events?limit=500".to_owned(),
                };
                let page = match try_request(addr, "GET", &path, &[], b"") {
                    Ok(resp) if resp.status == 200 => resp.json(),
                    _ => {
                        std::thread::sleep(POLL_PAUSE);
                        continue;
                    }
                };
                for e in page["events"].as_array().unwrap() {
                    seen.push((e["seq"].as_u64().unwrap(), s(&e["id"]).to_owned()));
                }
                let more = !page["next_cursor"].is_null();
                if page["events"].as_array().unwrap().is_empty() {
                    // A consumer's polling interval, not a wait for anything.
                    std::thread::sleep(POLL_PAUSE);
                }
                cursor = page["tail_cursor"].as_str().map(str::to_owned);
                if !more && last_round {
                    return seen;
                }
                // One full pass after the writers stopped reads the rest.
                last_round = finished && !more;
            }
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let nodes = nodes.clone();
            let acked = acked.clone();
            let mail_acked = mail_acked.clone();
            std::thread::spawn(move || {
                for r in 0..REQUESTS_PER_WRITER {
                    let node = w + r;
                    if r % MAIL_EVERY == 0 {
                        let body = json!({"from": "Acme <no-reply@example.com>",
                                          "to": format!("w{w}-r{r}@example.net"),
                                          "subject": "Your receipt", "text": "Thanks.",
                                          "idempotency_key": format!("mail-w{w}-r{r}")});
                        let resp = post_until_answered(&nodes, node + 1, "/v1/emails", &body);
                        assert!(resp.status == 202 || resp.status == 200, "{}", resp.text());
                        let v = resp.json();
                        mail_acked
                            .lock()
                            .unwrap()
                            .insert(s(&v["messages"][0]["id"]).to_owned());
                    }
                    if r % 2 == 0 {
                        let key = format!("w{w}-r{r}");
                        let body = json!({"type": "load.single", "tenant": format!("t{}", w % 3),
                                          "idempotency_key": key, "data": {"w": w, "r": r}});
                        let resp = post_until_answered(&nodes, node, "/v1/events", &body);
                        assert!(resp.status == 201 || resp.status == 200, "{}", resp.text());
                        let v = resp.json();
                        acked
                            .lock()
                            .unwrap()
                            .insert(key, (s(&v["id"]).to_owned(), v["seq"].as_u64().unwrap()));
                    } else {
                        let keys: Vec<String> =
                            (0..BATCH).map(|i| format!("w{w}-r{r}-{i}")).collect();
                        let events: Vec<Value> = keys
                            .iter()
                            .map(
                                |k| json!({"type": "load.batch", "idempotency_key": k, "data": {}}),
                            )
                            .collect();
                        let resp = post_until_answered(
                            &nodes,
                            node,
                            "/v1/events/batch",
                            &json!({ "events": events }),
                        );
                        assert_eq!(resp.status, 200, "{}", resp.text());
                        let results = resp.json()["results"].as_array().unwrap().clone();
                        let mut acked = acked.lock().unwrap();
                        for (k, res) in keys.into_iter().zip(results) {
                            acked.insert(
                                k,
                                (s(&res["id"]).to_owned(), res["seq"].as_u64().unwrap()),
                            );
                        }
                    }
                }
            })
        })
        .collect();

    // Mid-load: node 0 dies without a chance to finish anything, node 1
    // restarts cleanly; both come back while the writers go on.
    let total = WRITERS * REQUESTS_PER_WRITER / 2 * (1 + BATCH);
    let quarter = total / 4;
    assert!(
        wait_until(deadline(Duration::from_secs(60)), || acked
            .lock()
            .unwrap()
            .len()
            >= quarter),
        "the load did not get going"
    );
    daemons[0].kill9();
    assert!(
        wait_until(deadline(Duration::from_secs(60)), || acked
            .lock()
            .unwrap()
            .len()
            >= 2 * quarter),
        "the load stalled after the kill"
    );
    daemons[1].sigterm();
    daemons[1].restart();
    nodes.write().unwrap()[1] = daemons[1].addr;
    daemons[0].restart();
    nodes.write().unwrap()[0] = daemons[0].addr;

    for w in writers {
        w.join().expect("a writer failed");
    }
    done.store(true, Ordering::SeqCst);
    let tailed = tailer.join().expect("the tailer failed");

    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), total);

    // Every node pages through the same log in the same order.
    let logs: Vec<Vec<Value>> = daemons.iter().map(|d| list_all(d.addr, "", &[])).collect();
    let order = |log: &[Value]| -> Vec<(u64, String)> {
        log.iter()
            .map(|e| (e["seq"].as_u64().unwrap(), s(&e["id"]).to_owned()))
            .collect()
    };
    let first = order(&logs[0]);
    for (n, log) in logs.iter().enumerate().skip(1) {
        assert!(
            order(log) == first,
            "node {n} pages through a different log"
        );
    }
    assert!(
        first.windows(2).all(|w| w[0].0 < w[1].0),
        "seqs are not ascending"
    );

    // Exactly once: each acknowledged key names one event, the one the
    // acknowledging node answered with; no key appears twice.
    let mut by_key: HashMap<String, (String, u64)> = HashMap::new();
    for e in &logs[0] {
        if let Some(key) = e["idempotency_key"].as_str() {
            let earlier = by_key.insert(
                key.to_owned(),
                (s(&e["id"]).to_owned(), e["seq"].as_u64().unwrap()),
            );
            assert!(earlier.is_none(), "key {key} is in the log twice");
        }
    }
    for (key, answer) in &acked {
        assert_eq!(by_key.get(key), Some(answer), "acknowledged key {key}");
    }

    // The tailer saw the same log, in order, without a gap: positions are
    // visible only in order, whichever node committed them. The log goes
    // on after the writers stopped (mail outcomes, delivery notices), so
    // what the tailer read last is a prefix of it, holding every
    // acknowledged event.
    assert!(
        first.starts_with(&tailed),
        "the tailer skipped or reordered events: saw {} of {}",
        tailed.len(),
        first.len()
    );
    let tailed_ids: HashSet<&str> = tailed.iter().map(|(_, id)| id.as_str()).collect();
    let untailed = acked
        .values()
        .filter(|(id, _)| !tailed_ids.contains(id.as_str()))
        .count();
    assert_eq!(untailed, 0, "acknowledged events the tailer never saw");
    let unique: HashSet<&String> = tailed.iter().map(|(_, id)| id).collect();
    assert_eq!(unique.len(), tailed.len());

    // At least once: every event reached the receiver under its own
    // webhook-id, including those whose attempt was in flight on the
    // killed node (its lease ran out and another node made it).
    // The log holds the mail's `email.*` events too; the endpoint takes
    // `load.*`.
    let wanted: HashSet<String> = logs[0]
        .iter()
        .filter(|e| s(&e["type"]).starts_with("load."))
        .map(|e| s(&e["id"]).to_owned())
        .collect();
    let mut missing = wanted.len();
    let all_arrived = wait_until(deadline(Duration::from_secs(120)), || {
        let got: HashSet<String> = receiver
            .requests()
            .iter()
            .filter(|r| r.json()["type"].as_str().is_some())
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        missing = wanted.difference(&got).count();
        missing == 0
    });
    assert!(
        all_arrived,
        "{missing} of {} events never reached the receiver",
        wanted.len()
    );
    let failed = get(daemons[2].addr, "/v1/deliveries?status=failed&limit=10").json();
    assert_eq!(failed["deliveries"], json!([]), "a delivery gave up");

    // No mail lost: every accepted message reached the sink (a send in
    // flight on the killed node is made again when its lease runs out).
    let mail_acked = mail_acked.lock().unwrap().clone();
    assert_eq!(mail_acked.len(), WRITERS * REQUESTS_PER_WRITER / MAIL_EVERY);
    let mut unsent = mail_acked.len();
    let all_sent = wait_until(deadline(Duration::from_secs(120)), || {
        let got: HashSet<String> = sink
            .received()
            .iter()
            .filter_map(|m| m.header("X-Herald-Id").map(str::to_owned))
            .collect();
        unsent = mail_acked.difference(&got).count();
        unsent == 0
    });
    assert!(
        all_sent,
        "{unsent} of {} accepted messages never reached the sink",
        mail_acked.len()
    );
    // Recorded too: a send outlives its record by one commit.
    let mut not_sent: Vec<Value> = Vec::new();
    let all_recorded = wait_until(deadline(Duration::from_secs(60)), || {
        not_sent = mail_acked
            .iter()
            .map(|id| get(daemons[1].addr, &format!("/v1/emails/{id}")).json())
            .filter(|email| email["status"] != "sent")
            .collect();
        not_sent.is_empty()
    });
    assert!(all_recorded, "not recorded as sent: {not_sent:?}");
}
