//! Real SMTP peers for the mail tests: tests/smtp_sink.py (aiosmtpd) run
//! from the test venv, the test PKI from tests/make_test_pki.py and the
//! reference DKIM check tests/verify_dkim.py (dkimpy). A Python peer rather
//! than a Rust one so that what the daemon speaks is judged by an
//! implementation it shares no code with.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{header_value, run_python, spawn_line_peer, wait_until, LinePeer};

/// Starting Python and importing aiosmtpd can be slow on a loaded machine.
const PYTHON_START: Duration = Duration::from_secs(30);

/// What the sink answers at the end of DATA. A list's last reply repeats once
/// it is used up; a bare code gets a text ("250" -> "250 2.0.0 Ok: queued as
/// <ID>").
#[derive(Debug, Clone, Default)]
pub struct Script {
    replies: Vec<String>,
    per_rcpt: Vec<(String, Vec<String>)>,
}

impl Script {
    /// The same reply to every transaction.
    pub fn always(reply: &str) -> Script {
        Script::replies(&[reply])
    }

    /// One reply per transaction, in order, for addresses without a script of
    /// their own.
    pub fn replies(replies: &[&str]) -> Script {
        Script {
            replies: replies.iter().map(|r| r.to_string()).collect(),
            per_rcpt: Vec::new(),
        }
    }

    /// One reply per transaction naming `address`, in order.
    pub fn rcpt(mut self, address: &str, replies: &[&str]) -> Script {
        self.per_rcpt.push((
            address.to_owned(),
            replies.iter().map(|r| r.to_string()).collect(),
        ));
        self
    }

    fn to_json(&self) -> Value {
        let per_rcpt: serde_json::Map<String, Value> = self
            .per_rcpt
            .iter()
            .map(|(a, r)| (a.clone(), json!(r)))
            .collect();
        json!({"replies": self.replies, "per_rcpt": per_rcpt})
    }
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// STARTTLS offered and required before MAIL.
    pub require: bool,
    /// TLS from the first byte (smtps), no STARTTLS.
    pub implicit: bool,
}

impl Tls {
    pub fn required(pki: &Pki) -> Tls {
        Tls {
            cert: pki.cert.clone(),
            key: pki.key.clone(),
            require: true,
            implicit: false,
        }
    }

    pub fn implicit(pki: &Pki) -> Tls {
        Tls {
            implicit: true,
            require: false,
            ..Tls::required(pki)
        }
    }
}

/// One message the sink accepted (a 2xx at the end of DATA).
#[derive(Debug, Clone)]
pub struct Received {
    /// The DATA bytes as received, after dot-unstuffing.
    pub raw: Vec<u8>,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The queue id in the sink's 250 reply.
    pub queue_id: String,
    /// Whether the transaction ran inside TLS.
    pub tls: bool,
    /// The user the client logged in as, if it did.
    pub auth: Option<String>,
    headers: Vec<(String, String)>,
}

impl Received {
    fn load(sidecar: &Path) -> Option<Received> {
        let meta: Value = serde_json::from_slice(&std::fs::read(sidecar).ok()?).ok()?;
        let raw = std::fs::read(sidecar.with_file_name(meta["eml"].as_str()?)).ok()?;
        let headers = parse_headers(&raw);
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Some(Received {
            mail_from: meta["mail_from"].as_str().unwrap_or_default().to_owned(),
            rcpt_tos: strings(&meta["rcpt_tos"]),
            queue_id: meta["id"].as_str().unwrap_or_default().to_owned(),
            tls: meta["tls"].as_bool().unwrap_or(false),
            auth: meta["auth"].as_str().map(str::to_owned),
            raw,
            headers,
        })
    }

    /// The first header with this name, unfolded, value trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    pub fn body(&self) -> &[u8] {
        match find(&self.raw, b"\r\n\r\n") {
            Some(i) => &self.raw[i + 4..],
            None => &[],
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// RFC 5322 header fields: up to the first empty line, continuation lines
/// (starting with white space) unfolded into the field before them.
pub fn parse_headers(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n") {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    fields
}

/// A running tests/smtp_sink.py, killed when dropped.
pub struct SmtpSink {
    pub port: u16,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    pub fn start(script: &Script, tls: Option<&Tls>) -> SmtpSink {
        SmtpSink::start_with(script, tls, None)
    }

    /// With `auth` = (user, password), MAIL is refused until the client
    /// has logged in with them.
    pub fn start_with(script: &Script, tls: Option<&Tls>, auth: Option<(&str, &str)>) -> SmtpSink {
        let dir = tempfile::tempdir().expect("tempdir");
        let msg_dir = dir.path().join("messages");
        let mut opts = script.to_json();
        opts["dir"] = json!(msg_dir.to_str().expect("utf-8 temp path"));
        if let Some(tls) = tls {
            opts["tls"] = json!({
                "cert": tls.cert.to_str().expect("utf-8 path"),
                "key": tls.key.to_str().expect("utf-8 path"),
                "require": tls.require,
                "implicit": tls.implicit,
            });
        }
        if let Some((user, password)) = auth {
            opts["auth"] = json!({"user": user, "password": password});
        }
        let log = File::create(dir.path().join("sink.log")).expect("sink log");
        let options = opts.to_string();
        let LinePeer {
            child,
            stdin,
            lines,
        } = spawn_line_peer("smtp_sink.py", &[options.as_ref()], log.into());
        let mut sink = SmtpSink {
            port: 0,
            child,
            stdin,
            stdout: lines,
            dir,
        };
        let ready = sink.read_line(PYTHON_START);
        sink.port = ready["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("no port in the sink's first line {ready}"));
        sink
    }

    fn read_line(&self, timeout: Duration) -> Value {
        match self.stdout.recv_timeout(timeout) {
            Ok(line) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("sink said {line:?} ({e}); log:\n{}", self.log())),
            Err(e) => panic!("no answer from the SMTP sink ({e}); log:\n{}", self.log()),
        }
    }

    /// What the sink wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sink.log")).unwrap_or_default()
    }

    /// Replaces the reply script (its counters start over) and waits until
    /// the sink has taken it.
    pub fn set_script(&mut self, script: &Script) {
        let stdin = self.stdin.as_mut().expect("sink stdin open");
        writeln!(stdin, "{}", script.to_json()).expect("writing to the sink");
        stdin.flush().expect("flushing the sink's stdin");
        let answer = self.read_line(PYTHON_START);
        assert_eq!(answer["ok"], true, "the sink refused the script: {answer}");
    }

    /// Every accepted message so far, in the order the sink accepted them.
    pub fn received(&self) -> Vec<Received> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("messages")) else {
            return Vec::new();
        };
        let mut sidecars: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        sidecars.sort();
        sidecars.iter().filter_map(|p| Received::load(p)).collect()
    }

    /// Every finished DATA, accepted or not: mail_from, rcpt_tos, reply,
    /// accepted, tls.
    pub fn transactions(&self) -> Vec<Value> {
        let path = self.dir.path().join("messages").join("transactions.jsonl");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        // The last line may be half written while we read.
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The transactions that named `address`.
    pub fn transactions_for(&self, address: &str) -> Vec<Value> {
        self.transactions()
            .into_iter()
            .filter(|t| {
                t["rcpt_tos"].as_array().is_some_and(|r| {
                    r.iter()
                        .any(|a| a.as_str().is_some_and(|a| a.eq_ignore_ascii_case(address)))
                })
            })
            .collect()
    }

    /// Waits until at least `n` messages were accepted; fails at `deadline`.
    pub fn wait_for_messages(&self, n: usize, deadline: Instant) -> Vec<Received> {
        let mut got = Vec::new();
        let ok = wait_until(deadline, || {
            got = self.received();
            got.len() >= n
        });
        assert!(
            ok,
            "the sink accepted {} of {n} messages in time; transactions: {:?}; log:\n{}",
            got.len(),
            self.transactions(),
            self.log()
        );
        got
    }

    /// The accepted message with this `X-Herald-Id`, waiting for it.
    pub fn wait_for_id(&self, herald_id: &str, deadline: Instant) -> Received {
        let mut found = None;
        let ok = wait_until(deadline, || {
            found = self
                .received()
                .into_iter()
                .find(|m| m.header("X-Herald-Id") == Some(herald_id));
            found.is_some()
        });
        assert!(
            ok,
            "the sink never accepted {herald_id}; transactions: {:?}; log:\n{}",
            self.transactions(),
            self.log()
        );
        found.expect("found")
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA, a server certificate it signed for localhost and 127.0.0.1,
/// and an RSA DKIM key with its DNS TXT value; removed when dropped.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PKCS#1 PEM ("BEGIN RSA PRIVATE KEY").
    pub dkim_key: PathBuf,
    /// `v=DKIM1; k=rsa; p=...`
    pub dkim_txt: String,
    _dir: tempfile::TempDir,
}

pub fn make_pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_python(
        "make_test_pki.py",
        &[dir.path().to_str().expect("utf-8 temp path")],
        b"",
    );
    assert!(
        out.status.success(),
        "make_test_pki.py failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let p = |name: &str| dir.path().join(name);
    Pki {
        ca: p("ca.pem"),
        cert: p("cert.pem"),
        key: p("key.pem"),
        dkim_key: p("dkim.pem"),
        dkim_txt: std::fs::read_to_string(p("dkim.txt")).expect("dkim.txt"),
        _dir: dir,
    }
}

/// dkimpy's verdict on `raw` with `txt` published at
/// `selector._domainkey.domain` and nowhere else: the signature's tags, or
/// dkimpy's reason.
pub fn verify_dkim(raw: &[u8], txt: &str, selector: &str, domain: &str) -> Result<Value, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let msg = dir.path().join("message.eml");
    std::fs::write(&msg, raw).expect("writing the message");
    let out = run_python(
        "verify_dkim.py",
        &[
            msg.to_str().expect("utf-8 temp path"),
            txt,
            selector,
            domain,
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.code() {
        Some(0) => Ok(serde_json::from_slice(&out.stdout).expect("verify_dkim.py prints JSON")),
        Some(1) => Err(stderr),
        _ => panic!("verify_dkim.py itself failed ({}): {stderr}", out.status),
    }
}
