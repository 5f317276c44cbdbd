//! ESP feedback end to end: the real daemon relays mail to a real SMTP sink
//! with each provider's metadata header, then receives that provider's
//! webhooks about it, signed by tests/esp_peer.py with keys of its own
//! (ECDSA for SendGrid, RSA with a certificate from the test CA served over
//! HTTPS for SNS, HMAC for Mailgun, Standard Webhooks for Resend) and
//! judged by what the API shows afterwards: suppressions, `email.*` events,
//! the feedback listing and stream health.

mod durability;
mod fixtures;
mod guard;
mod kinds;
mod providers;
mod replay;
mod sns;
mod soft_bounces;
mod tenancy;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, ChildStdin};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::mail::smtp::{Pki, Received, SmtpSink};
use crate::support::*;

/// Generous: a debug build on a loaded 2-core machine.
const SETTLE: Duration = Duration::from_secs(30);

/// Starting Python, making an RSA key and importing the libraries can be
/// slow on a loaded machine.
const PEER_START: Duration = Duration::from_secs(60);

/// The only topic the daemon takes SNS messages from.
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:herald-feedback";
const OTHER_TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:someone-else";

const POSTMARK_USER: &str = "postmark-hooks";
const POSTMARK_PASSWORD: &str = "pm-0123456789abcdefghijkl";

const FROM: &str = "Acme <no-reply@example.com>";

/// The providers, as routes and config name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esp {
    Ses,
    Sendgrid,
    Postmark,
    Mailgun,
    Resend,
}

impl Esp {
    const ALL: [Esp; 5] = [
        Esp::Ses,
        Esp::Sendgrid,
        Esp::Postmark,
        Esp::Mailgun,
        Esp::Resend,
    ];

    fn name(self) -> &'static str {
        match self {
            Esp::Ses => "ses",
            Esp::Sendgrid => "sendgrid",
            Esp::Postmark => "postmark",
            Esp::Mailgun => "mailgun",
            Esp::Resend => "resend",
        }
    }

    fn route(self) -> String {
        format!("/feedback/{}", self.name())
    }

    /// The stream's `esp` setting for mail this provider relays. Resend
    /// echoes the `X-Herald-Id` header every message carries, so it needs
    /// none of its own.
    fn stream_esp(self) -> Option<&'static str> {
        match self {
            Esp::Resend => None,
            other => Some(other.name()),
        }
    }
}

/// A running tests/esp_peer.py, killed when dropped.
struct EspPeer {
    /// The SNS signing certificate's URL, on a host the daemon allows.
    cert_url: String,
    /// The SubscribeURL endpoint, without its query.
    confirm_url: String,
    port: u16,
    sendgrid_public_key: String,
    resend_secret: String,
    mailgun_signing_key: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    log_file: tempfile::NamedTempFile,
}

impl EspPeer {
    fn start(pki: &Pki) -> EspPeer {
        let pki_dir = pki.ca.parent().expect("the PKI has a directory");
        let log = tempfile::NamedTempFile::new().expect("peer log");
        let stderr = log.reopen().expect("peer log handle");
        let LinePeer {
            child,
            stdin,
            lines,
        } = spawn_line_peer("esp_peer.py", &[pki_dir.as_ref()], stderr.into());
        let mut peer = EspPeer {
            cert_url: String::new(),
            confirm_url: String::new(),
            port: 0,
            sendgrid_public_key: String::new(),
            resend_secret: String::new(),
            mailgun_signing_key: String::new(),
            child,
            stdin,
            stdout: lines,
            log_file: log,
        };
        let hello = peer.read_answer();
        let text = |key: &str| s(&hello[key]).to_owned();
        peer.cert_url = text("cert_url");
        peer.confirm_url = text("confirm_url");
        peer.sendgrid_public_key = text("sendgrid_public_key");
        peer.resend_secret = text("resend_secret");
        peer.mailgun_signing_key = text("mailgun_signing_key");
        peer.port = hello["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("no port in {hello}"));
        peer
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_file.path()).unwrap_or_default()
    }

    fn read_answer(&self) -> Value {
        match self.stdout.recv_timeout(PEER_START) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("esp_peer said {line:?} ({e}); log:\n{}", self.log())
                });
                assert!(v.get("error").is_none(), "esp_peer refused: {v}");
                v
            }
            Err(e) => panic!("no answer from esp_peer.py ({e}); log:\n{}", self.log()),
        }
    }

    /// Sends every command, then reads their answers in order: the peer
    /// works through a pipeline without a round trip each.
    fn call_many(&mut self, commands: &[Value]) -> Vec<Value> {
        let stdin = self.stdin.as_mut().expect("peer stdin open");
        let mut text = String::new();
        for c in commands {
            text.push_str(&c.to_string());
            text.push('\n');
        }
        stdin
            .write_all(text.as_bytes())
            .expect("writing to esp_peer");
        stdin.flush().expect("flushing esp_peer's stdin");
        commands.iter().map(|_| self.read_answer()).collect()
    }

    fn call(&mut self, command: Value) -> Value {
        self.call_many(&[command]).remove(0)
    }

    /// Tokens of the SubscribeURLs fetched so far.
    fn confirmations(&mut self) -> Vec<String> {
        let stats = self.call(json!({"op": "stats"}));
        strings(&stats["confirmations"])
    }

    /// Every path requested from the peer's HTTPS server so far.
    fn requests(&mut self) -> Vec<String> {
        let stats = self.call(json!({"op": "stats"}));
        strings(&stats["requests"])
    }

    /// The `[feedback.*]` tables that enable `esps` with the peer's keys;
    /// SNS fetches from `localhost` only, trusting the test CA.
    fn config(&self, pki: &Pki, esps: &[Esp]) -> String {
        let mut toml = String::new();
        for esp in esps {
            toml.push_str(&match esp {
                Esp::Ses => format!(
                    "[feedback.ses]\ntopic_arns = [\"{TOPIC}\"]\ncert_hosts = [\"localhost\"]\nca_file = {}\n",
                    toml_str(&pki.ca)
                ),
                Esp::Sendgrid => format!(
                    "[feedback.sendgrid]\npublic_key = \"{}\"\n",
                    self.sendgrid_public_key
                ),
                Esp::Postmark => format!(
                    "[feedback.postmark]\nusername = \"{POSTMARK_USER}\"\npassword = \"{POSTMARK_PASSWORD}\"\n"
                ),
                Esp::Mailgun => format!(
                    "[feedback.mailgun]\nsigning_key = \"{}\"\n",
                    self.mailgun_signing_key
                ),
                Esp::Resend => format!("[feedback.resend]\nsecret = \"{}\"\n", self.resend_secret),
            });
        }
        toml
    }
}

impl Drop for EspPeer {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A webhook request as the provider would send it.
#[derive(Debug, Clone)]
struct Hook {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Hook {
    fn json(body: &str) -> Hook {
        Hook {
            headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
            body: body.as_bytes().to_vec(),
        }
    }

    fn header(mut self, name: &str, value: &str) -> Hook {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn without_header(mut self, name: &str) -> Hook {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    fn header_value(&self, name: &str) -> &str {
        header_value(&self.headers, name).unwrap_or_else(|| panic!("no {name} in {self:?}"))
    }

    /// The same request with `from` replaced by `to` (once) in its body,
    /// which stays readable.
    fn body_replaced(mut self, from: &str, to: &str) -> Hook {
        let text = String::from_utf8(self.body).expect("fixture bodies are UTF-8");
        assert!(text.contains(from), "{from:?} is not in {text}");
        self.body = text.replacen(from, to, 1).into_bytes();
        self
    }

    fn try_post(&self, addr: SocketAddr, esp: Esp) -> std::io::Result<Response> {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        try_request(addr, "POST", &esp.route(), &headers, &self.body)
    }

    fn post(&self, addr: SocketAddr, esp: Esp) -> Response {
        self.try_post(addr, esp)
            .unwrap_or_else(|e| panic!("POST {} on {addr}: {e}", esp.route()))
    }
}

/// Swaps one character in the middle of a signature (base64 or hex) for
/// another of the same alphabet, so it still decodes but no longer verifies.
fn altered_signature(sig: &str) -> String {
    let mut chars: Vec<char> = sig.chars().collect();
    let i = chars.len() / 2;
    chars[i] = match chars[i] {
        'a' => 'b',
        '0' => '1',
        'A' => 'B',
        _ => {
            if chars[i].is_ascii_digit() {
                '0'
            } else {
                'a'
            }
        }
    };
    chars.into_iter().collect()
}

fn basic_auth(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// Now, in Unix seconds.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// `secs` (Unix seconds) as RFC 3339 with milliseconds, as SNS and
/// Postmark write times.
fn rfc3339(secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).expect("a valid timestamp");
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Mail config: short retries, and each `(stream, extra keys)` relaying to
/// `sink` from example.com.
fn mail_config(sink: &SmtpSink, streams: &[(&str, &str)]) -> String {
    let mut toml =
        "[mail]\nworkers = 2\nretry_schedule = [\"100ms\", \"200ms\", \"300ms\"]\n".to_owned();
    for (name, extra) in streams {
        toml.push_str(&format!(
            "\n[mail.streams.{name}]\nfrom_domains = [\"example.com\"]\nrelay = \"smtp://127.0.0.1:{}\"\n{extra}\n",
            sink.port
        ));
    }
    toml
}

/// The config's `esp` line for a stream relaying `esp`'s mail.
fn esp_line(esp: Esp) -> String {
    esp.stream_esp()
        .map(|name| format!("esp = \"{name}\""))
        .unwrap_or_default()
}

/// A public listener too: the feedback routes are on both.
const PUBLIC: &str = "[public]\nlisten = \"127.0.0.1:0\"\n";

fn message(to: &str) -> Value {
    json!({"from": FROM, "to": to, "subject": "Your receipt", "text": "Thanks for your order."})
}

/// Queues one message on `stream`, expecting 202; its id.
fn send(addr: SocketAddr, stream: &str, to: &str) -> String {
    let mut body = message(to);
    body["stream"] = json!(stream);
    let resp = post_json(addr, "/v1/emails", &body);
    assert_eq!(resp.status, 202, "POST /v1/emails {body}: {}", resp.text());
    let v = resp.json();
    s(&v["messages"][0]["id"]).to_owned()
}

fn email(addr: SocketAddr, id: &str) -> Value {
    let resp = get(addr, &format!("/v1/emails/{id}"));
    assert_eq!(resp.status, 200, "GET /v1/emails/{id}: {}", resp.text());
    resp.json()
}

/// Waits until the message has the status `want`.
fn wait_status(addr: SocketAddr, id: &str, want: &str) -> Value {
    let mut last = Value::Null;
    let done = wait_until(deadline(SETTLE), || {
        last = email(addr, id);
        last["status"] == want
    });
    assert!(done, "{id} never became {want}; last seen: {last}");
    last
}

/// A message Herald relayed, as the provider saw it: what its webhooks
/// quote to name it.
#[derive(Debug, Clone)]
struct Target {
    to: String,
    /// `msg_…`, as the metadata header carried it; `None` for an address
    /// Herald never mailed.
    herald_id: Option<String>,
    /// The `Message-ID` header, with its angle brackets.
    message_id: Option<String>,
    /// The id in the relay's 250 reply, which ESPs use as their own.
    queue_id: Option<String>,
}

impl Target {
    fn stranger(to: &str) -> Target {
        Target {
            to: to.to_owned(),
            herald_id: None,
            message_id: None,
            queue_id: None,
        }
    }

    fn from_received(to: &str, got: &Received) -> Target {
        Target {
            to: to.to_owned(),
            herald_id: got.header("X-Herald-Id").map(str::to_owned),
            message_id: got.header("Message-ID").map(str::to_owned),
            queue_id: Some(got.queue_id.clone()),
        }
    }

    fn herald_id(&self) -> &str {
        self.herald_id.as_deref().expect("a message Herald sent")
    }
}

/// Sends one message on `stream` and waits until the sink accepted it.
fn relay_one(addr: SocketAddr, sink: &SmtpSink, stream: &str, to: &str) -> Target {
    let id = send(addr, stream, to);
    let got = sink.wait_for_id(&id, deadline(SETTLE));
    wait_status(addr, &id, "sent");
    Target::from_received(to, &got)
}

/// Every row of `GET /v1/feedback` matching `query` (may be empty).
fn feedback(addr: SocketAddr, query: &str) -> Vec<Value> {
    let path = if query.is_empty() {
        "/v1/feedback".to_owned()
    } else {
        format!("/v1/feedback?{query}")
    };
    list_pages(addr, &path, "feedback", 100, &[])
}

fn suppressions(addr: SocketAddr) -> Vec<Value> {
    list_pages(addr, "/v1/suppressions", "suppressions", 100, &[])
}

/// The suppression of `address` on the global list, if any.
fn suppression_of(addr: SocketAddr, address: &str) -> Option<Value> {
    suppressions(addr)
        .into_iter()
        .find(|s| s["address"] == address && s["tenant"].is_null())
}

/// Events of `kind` whose data names recipient `to`.
fn events_to(addr: SocketAddr, kind: &str, to: &str) -> Vec<Value> {
    list_all(addr, &format!("type={kind}"), &[])
        .into_iter()
        .filter(|e| e["data"]["to"] == to)
        .collect()
}

/// Asserts a `200` that applied `applied` new events and recognised
/// `duplicates` old ones.
fn assert_applied(resp: &Response, applied: u64, duplicates: u64) -> Value {
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["applied"], applied, "{v}");
    assert_eq!(v["duplicates"], duplicates, "{v}");
    assert_eq!(v["received"], applied + duplicates, "{v}");
    v
}

/// Asserts an error answer with this status and code.
fn assert_refused(resp: &Response, status: u16, code: &str, what: &str) {
    assert_eq!(resp.status, status, "{what}: {}", resp.text());
    assert_eq!(resp.code(), code, "{what}: {}", resp.text());
}

/// A fresh daemon, feedback peer and sink: what every test here starts with.
struct Rig {
    pki: Pki,
    peer: EspPeer,
    sink: SmtpSink,
}

impl Rig {
    fn start() -> Rig {
        let pki = crate::mail::smtp::make_pki();
        let peer = EspPeer::start(&pki);
        let sink = SmtpSink::start(&crate::mail::smtp::Script::always("250"), None);
        Rig { pki, peer, sink }
    }
}

/// A unique event id of the shape `esp` uses (Postmark's are numbers).
fn event_id(esp: Esp, n: u64) -> String {
    match esp {
        Esp::Ses => format!("5d8e2a1c-7b3f-5e9a-b1c4-{n:012x}"),
        Esp::Sendgrid => format!("ZGVsaXZlcnktZXZlbnQt{n:08}"),
        Esp::Postmark => format!("{}", 4_323_372_036_854_000_000u64 + n),
        Esp::Mailgun => format!("G9Bn5sl1TC6nu79C8C0b{n:04}"),
        Esp::Resend => format!("msg_2ZbR8pK1fJx3{n:06}"),
    }
}

/// The id Herald keeps for an event: SNS and Resend name a notification,
/// which may cover several recipients, so theirs add the recipient.
fn stored_event_id(esp: Esp, id: &str, to: &str) -> String {
    match esp {
        Esp::Ses | Esp::Resend => format!("{id}:{to}"),
        _ => id.to_owned(),
    }
}
