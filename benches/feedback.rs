//! ESP feedback benchmark: signed provider webhooks posted to a real
//! `herald serve`, over loopback.
//!
//! `cargo bench --bench feedback` starts the release binary with SES (SNS)
//! and SendGrid feedback enabled. The requests are signed before the clock
//! starts by tests/esp_peer.py (the integration tests' peer, run by the
//! tests' Python: `HERALD_TEST_PYTHON` or tests/.venv), which also serves
//! the SNS signing certificate over HTTPS from a CA of its own; the daemon
//! fetches it once and caches it. Every event is a complaint about an
//! address of its own, so each one writes a feedback row, a suppression
//! and an `email.complained` event in the commit that acknowledges it.
//! Scenarios:
//! - `sns-single-c1`, `sns-single-c16`: one SNS notification a request
//!   (RSA SHA256 signature), closed loop over 1 or 16 connections;
//!   events/s from the first request to the last answer.
//! - `sendgrid-batch100-c4`, `sendgrid-batch100-c16`: SendGrid's shape,
//!   100 events a request (ECDSA P-256 over the whole body).
//! - `complaint-to-suppression`: one complaint at a time; from the moment
//!   its POST is sent until a `POST /v1/emails` to that address is refused
//!   as suppressed (the first send after the 200; a send answered 202 would
//!   be retried, and counted).
//!
//! Every answer is checked: a 200 must report each event of its request as
//! applied, so a figure never counts refused or duplicate work.
//!
//! Environment:
//! - `HERALD_BENCH_EVENTS`: events per SNS scenario (default 2,000; signing
//!   them takes the peer about a millisecond each, before the clock).
//! - `HERALD_BENCH_BATCHES`: requests per SendGrid scenario (default 300).
//! - `HERALD_BENCH_ROUNDS`: complaints in the latency scenario (default 200).
//! - `HERALD_BENCH_SCENARIOS`: comma-separated names or prefixes (`sns`).
//! - `HERALD_BENCH_THREADS`: threads of the bench's client (default 2).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use herald::clock::{format_rfc3339, now_ms};
use serde_json::{json, Value};

use common::daemon::Daemon;
use common::http::{connect, exchange_within};
use common::knobs::{env_parse, Selection};
use common::load::{self, Conversation, Load, Shares};
use common::report::{micros, quantile_ms, THROUGHPUT_HEADER};

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:herald-feedback";
const SCENARIOS: &[&str] = &[
    "sns-single-c1",
    "sns-single-c16",
    "sendgrid-batch100-c4",
    "sendgrid-batch100-c16",
    "complaint-to-suppression",
];
const BATCH: usize = 100;
/// A cap on one request, so a wedged daemon ends the run with an error
/// instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Sends tried per complaint before the latency scenario gives up on it.
const MAX_PROBES: usize = 100;
/// Starting Python and signing a few thousand requests.
const PEER_TIMEOUT: Duration = Duration::from_secs(300);

fn main() {
    let events = env_parse("HERALD_BENCH_EVENTS", 2000usize);
    let batches = env_parse("HERALD_BENCH_BATCHES", 300usize);
    let rounds = env_parse("HERALD_BENCH_ROUNDS", 200usize);
    let threads = env_parse("HERALD_BENCH_THREADS", 2usize);
    let selected = Selection::from_env();
    selected.require_any(SCENARIOS);

    let pki = tempfile_dir("pki");
    run_python("make_test_pki.py", &[pki.to_str().expect("utf-8 path")]);
    let mut peer = Peer::start(&pki);
    let mut daemon = Daemon::start(&format!(
        "[feedback.ses]\ntopic_arns = [\"{TOPIC}\"]\ncert_hosts = [\"localhost\"]\nca_file = \"{}\"\n\
         [feedback.sendgrid]\npublic_key = \"{}\"\n",
        pki.join("ca.pem").display(),
        peer.sendgrid_public_key
    ));
    let addr = daemon.addr;
    let runtime = load::runtime(threads);
    let run_id = load::run_id();

    println!(
        "feedback against {addr}, {events} SNS events and {batches} SendGrid requests of {BATCH} \
         per scenario, {threads} client threads\n\n{THROUGHPUT_HEADER}"
    );
    for (name, connections, per_request) in [
        ("sns-single-c1", 1, 1),
        ("sns-single-c16", 16, 1),
        ("sendgrid-batch100-c4", 4, BATCH),
        ("sendgrid-batch100-c16", 16, BATCH),
    ] {
        if !selected.wants(name) {
            continue;
        }
        let requests = if per_request == 1 {
            sns_complaints(&mut peer, &format!("{name}-{run_id}"), events)
        } else {
            sendgrid_batches(&mut peer, &format!("{name}-{run_id}"), batches)
        };
        let load = Load {
            connections,
            warmup: Duration::ZERO,
            limit: None,
            request_timeout: REQUEST_TIMEOUT,
        };
        let shares = Shares::new(requests.len() as u64);
        let requests = std::sync::Arc::new(requests);
        let outcome = runtime.block_on(load::run(addr, &load, |_| Poster {
            addr,
            requests: requests.clone(),
            shares: shares.clone(),
            per_request,
        }));
        let tally = &outcome.tally;
        let secs = outcome.elapsed.as_secs_f64();
        let answered = tally.latencies_us.len();
        println!(
            "| {name} | {connections} | {:.0} | {:.0} | {} | {} | {} | {} |",
            answered as f64 / secs,
            (answered * per_request) as f64 / secs,
            quantile_ms(&tally.latencies_us, 0.50),
            quantile_ms(&tally.latencies_us, 0.99),
            quantile_ms(&tally.latencies_us, 0.999),
            tally.failures,
        );
        if let Some(first) = &tally.first_failure {
            println!("  first failure: {first}");
        }
    }

    if selected.wants("complaint-to-suppression") {
        let complaints = sns_complaints(&mut peer, &format!("latency-{run_id}"), rounds);
        let report = runtime.block_on(complaint_to_suppression(addr, complaints));
        println!(
            "\n| complaint to suppression | rounds | p50 ms | p99 ms | max ms | complaint POST p50 ms | \
             sends answered 202 first | failed |\n|---|---:|---:|---:|---:|---:|---:|---:|\n\
             | SNS, one at a time | {rounds} | {} | {} | {} | {} | {} | {} |",
            quantile_ms(&report.effective_us, 0.50),
            quantile_ms(&report.effective_us, 0.99),
            quantile_ms(&report.effective_us, 1.0),
            quantile_ms(&report.post_us, 0.50),
            report.early_sends,
            report.failures.len(),
        );
        if let Some(first) = report.failures.first() {
            println!("  first failure: {first}");
        }
    }
    daemon.stop();
    let _ = std::fs::remove_dir_all(&pki);
}

/// A signed webhook: the path it goes to, its headers and body.
struct Signed {
    path: &'static str,
    headers: Vec<(String, String)>,
    body: String,
    /// The address the (first) event is about.
    address: String,
}

impl Signed {
    fn request(&self, addr: SocketAddr) -> Vec<u8> {
        let mut head = format!("POST {} HTTP/1.1\r\nHost: {addr}\r\n", self.path);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

/// One connection of a throughput scenario: the next unsent request.
struct Poster {
    addr: SocketAddr,
    requests: std::sync::Arc<Vec<Signed>>,
    shares: Shares,
    per_request: usize,
}

impl Conversation for Poster {
    async fn next_request(&mut self) -> Option<Vec<u8>> {
        let i = self.shares.take()?;
        Some(self.requests[i as usize].request(self.addr))
    }

    fn answered(&mut self, body: &[u8]) -> Result<(), String> {
        all_applied(body, self.per_request)
    }
}

/// Whether a 200 says every event was applied (none refused, none a
/// duplicate).
fn all_applied(body: &[u8], events: usize) -> Result<(), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("answer: {e}"))?;
    if v["applied"].as_u64() == Some(events as u64) {
        Ok(())
    } else {
        Err(format!("expected {events} applied: {v}"))
    }
}

struct LatencyReport {
    /// Complaint POST sent → first refused send, per round, sorted.
    effective_us: Vec<u32>,
    /// The complaint POST's own answer time, sorted.
    post_us: Vec<u32>,
    /// Sends answered 202 after the complaint's 200: the suppression was
    /// not yet in effect.
    early_sends: usize,
    failures: Vec<String>,
}

async fn complaint_to_suppression(addr: SocketAddr, complaints: Vec<Signed>) -> LatencyReport {
    let mut report = LatencyReport {
        effective_us: Vec::new(),
        post_us: Vec::new(),
        early_sends: 0,
        failures: Vec::new(),
    };
    let mut conn = match connect(addr).await {
        Ok(c) => c,
        Err(e) => {
            report.failures.push(format!("connect: {e}"));
            return report;
        }
    };
    'rounds: for complaint in &complaints {
        let sent = Instant::now();
        if let Err(e) = exchange_within(&mut conn, &complaint.request(addr), REQUEST_TIMEOUT)
            .await
            .and_then(|body| all_applied(&body, 1))
        {
            report.failures.push(e);
            conn = match connect(addr).await {
                Ok(c) => c,
                Err(_) => break,
            };
            continue;
        }
        report.post_us.push(micros(sent.elapsed()));
        let email = json!({"from": "Acme <no-reply@example.com>", "to": complaint.address,
                           "subject": "Still there?", "text": "A message after a complaint."})
        .to_string();
        let send = common::http::post(addr, "/v1/emails", "", &email);
        for _ in 0..MAX_PROBES {
            match exchange_within(&mut conn, &send, REQUEST_TIMEOUT).await {
                Ok(_) => report.early_sends += 1,
                Err(e) if e.starts_with("422") && e.contains("recipient_suppressed") => {
                    report.effective_us.push(micros(sent.elapsed()));
                    continue 'rounds;
                }
                Err(e) => {
                    report
                        .failures
                        .push(format!("send to {}: {e}", complaint.address));
                    conn = match connect(addr).await {
                        Ok(c) => c,
                        Err(_) => break 'rounds,
                    };
                    continue 'rounds;
                }
            }
        }
        report
            .failures
            .push(format!("{} never suppressed", complaint.address));
    }
    report.effective_us.sort_unstable();
    report.post_us.sort_unstable();
    report
}

/// `count` SNS notifications, each an SES complaint about an address of
/// its own.
fn sns_complaints(peer: &mut Peer, tag: &str, count: usize) -> Vec<Signed> {
    let now = format_rfc3339(now_ms());
    let addresses: Vec<String> = (0..count)
        .map(|i| format!("{tag}-{i}@example.org"))
        .collect();
    let commands: Vec<Value> = addresses
        .iter()
        .enumerate()
        .map(|(i, to)| {
            let message = json!({
                "notificationType": "Complaint",
                "complaint": {
                    "userAgent": "ExampleCorp Feedback Loop (V0.01)",
                    "complainedRecipients": [{"emailAddress": to}],
                    "complaintFeedbackType": "abuse",
                    "arrivalDate": now,
                    "timestamp": now,
                    "feedbackId": format!("0100018c5f9e3c4d-{tag}-{i}"),
                },
                "mail": {
                    "timestamp": now,
                    "source": "no-reply@example.com",
                    "messageId": format!("0100018c5f9e1a2b-{tag}-{i}"),
                    "destination": [to],
                },
            });
            json!({"op": "sns", "version": "2", "envelope": {
                "Type": "Notification",
                "MessageId": format!("{tag}-{i}"),
                "TopicArn": TOPIC,
                "Message": message.to_string(),
                "Timestamp": now,
            }})
        })
        .collect();
    peer.call_many(&commands)
        .into_iter()
        .zip(addresses)
        .map(|(answer, address)| Signed {
            path: "/feedback/ses",
            headers: vec![
                (
                    "Content-Type".to_owned(),
                    "text/plain; charset=UTF-8".to_owned(),
                ),
                (
                    "x-amz-sns-message-type".to_owned(),
                    "Notification".to_owned(),
                ),
            ],
            body: answer["body"].as_str().expect("signed SNS body").to_owned(),
            address,
        })
        .collect()
}

/// `count` SendGrid requests of `BATCH` spam reports each.
fn sendgrid_batches(peer: &mut Peer, tag: &str, count: usize) -> Vec<Signed> {
    let now = now_ms() / 1000;
    let bodies: Vec<(String, String)> = (0..count)
        .map(|b| {
            let events: Vec<Value> = (0..BATCH)
                .map(|i| {
                    json!({
                        "email": format!("{tag}-{b}-{i}@example.org"),
                        "timestamp": now,
                        "event": "spamreport",
                        "sg_event_id": format!("{tag}-{b}-{i}"),
                        "sg_message_id": format!("14c5d75ce93.dfd.64b469.{tag}-{b}-{i}.0"),
                    })
                })
                .collect();
            (
                json!(events).to_string(),
                format!("{tag}-{b}-0@example.org"),
            )
        })
        .collect();
    let commands: Vec<Value> = bodies
        .iter()
        .map(|(body, _)| json!({"op": "sendgrid", "body": body}))
        .collect();
    peer.call_many(&commands)
        .into_iter()
        .zip(bodies)
        .map(|(sig, (body, address))| Signed {
            path: "/feedback/sendgrid",
            headers: vec![
                ("Content-Type".to_owned(), "application/json".to_owned()),
                (
                    "X-Twilio-Email-Event-Webhook-Signature".to_owned(),
                    sig["signature"].as_str().expect("signature").to_owned(),
                ),
                (
                    "X-Twilio-Email-Event-Webhook-Timestamp".to_owned(),
                    sig["timestamp"].as_str().expect("timestamp").to_owned(),
                ),
            ],
            body,
            address,
        })
        .collect()
}

fn python() -> PathBuf {
    std::env::var_os("HERALD_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python"))
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

fn tempfile_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-feedback-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a bench directory");
    dir
}

fn run_python(name: &str, args: &[&str]) {
    let out = Command::new(python())
        .arg(script(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {name} with {}: {e}", python().display()));
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// tests/esp_peer.py: signs requests and serves the SNS certificate.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
    sendgrid_public_key: String,
}

impl Peer {
    fn start(pki: &std::path::Path) -> Peer {
        let mut child = Command::new(python())
            .arg(script("esp_peer.py"))
            .arg(pki)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting esp_peer.py with {}: {e}", python().display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, answers) = mpsc::channel();
        // Read on a thread of its own so that a long pipeline of commands
        // never fills both pipes at once.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peer = Peer {
            child,
            stdin,
            answers,
            sendgrid_public_key: String::new(),
        };
        let hello = peer.answer();
        peer.sendgrid_public_key = hello["sendgrid_public_key"]
            .as_str()
            .expect("the peer's SendGrid key")
            .to_owned();
        peer
    }

    fn answer(&self) -> Value {
        let line = self
            .answers
            .recv_timeout(PEER_TIMEOUT)
            .expect("an answer from esp_peer.py");
        let v: Value = serde_json::from_str(&line).expect("esp_peer.py answers JSON");
        assert!(v.get("error").is_none(), "esp_peer.py: {v}");
        v
    }

    fn call_many(&mut self, commands: &[Value]) -> Vec<Value> {
        let mut text = String::new();
        for c in commands {
            text.push_str(&c.to_string());
            text.push('\n');
        }
        self.stdin
            .write_all(text.as_bytes())
            .expect("writing to esp_peer.py");
        self.stdin.flush().expect("flushing esp_peer.py's stdin");
        commands.iter().map(|_| self.answer()).collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
