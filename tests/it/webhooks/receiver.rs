//! A scriptable HTTP/1.1 webhook receiver on loopback.
//!
//! An answer can carry its own headers and body (`Retry-After`, large
//! bodies for the response excerpt), be slow, hang or drop. Keep-alive is
//! supported (the daemon pools connections); bodies are read by
//! `Content-Length` or chunked encoding, answers always carry a
//! `Content-Length`. Every request is recorded with its arrival time.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::wait_until;

/// How often a blocked connection thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Lower-cased names; repeated headers joined with ", ".
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// When the request head was complete.
    pub at: Instant,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "webhook body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The header's value, "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map_or("", String::as_str)
    }
}

#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer with this status, extra headers and body, after `delay`.
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        delay: Duration,
    },
    /// Keep the connection open without answering until the peer closes it
    /// or the receiver is dropped.
    Hang,
    /// Close the connection without an answer.
    Drop,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply::Answer {
            status,
            headers: Vec::new(),
            body: b"ok".to_vec(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Answer { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Reply {
        if let Reply::Answer { body, .. } = &mut self {
            *body = bytes.into();
        }
        self
    }

    /// Answers only after `wait` (a slow receiver).
    pub fn after(mut self, wait: Duration) -> Reply {
        if let Reply::Answer { delay, .. } = &mut self {
            *delay = wait;
        }
        self
    }
}

type Script = Box<dyn FnMut(usize, &Recorded) -> Reply + Send>;

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<Script>,
    stopping: AtomicBool,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    /// `script(n, request)` decides the answer to the n-th request (from 0,
    /// counted over all connections in arrival order).
    pub fn start(script: impl FnMut(usize, &Recorded) -> Reply + Send + 'static) -> Receiver {
        Receiver::start_on(0, script).expect("binding the receiver")
    }

    /// Like `start`, on a given loopback port (0: any).
    pub fn start_on(
        port: u16,
        script: impl FnMut(usize, &Recorded) -> Reply + Send + 'static,
    ) -> io::Result<Receiver> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(Box::new(script)),
            stopping: AtomicBool::new(false),
        });
        let accept = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let shared = accept.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Ok(Receiver { addr, shared })
    }

    pub fn always(status: u16) -> Receiver {
        Receiver::start(move |_, _| Reply::status(status))
    }

    /// The replies in order, then `rest` for every later request.
    pub fn sequence(replies: Vec<Reply>, rest: Reply) -> Receiver {
        Receiver::start(move |n, _| replies.get(n).cloned().unwrap_or_else(|| rest.clone()))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests have arrived; returns all of them.
    pub fn wait_for_requests(&self, n: usize, deadline: Instant) -> Vec<Recorded> {
        let arrived = wait_until(deadline, || self.shared.requests.lock().unwrap().len() >= n);
        let got = self.requests();
        assert!(
            arrived,
            "expected {n} requests at {}, got {}: {:?}",
            self.addr,
            got.len(),
            got.iter()
                .map(|r| format!("{} {} {}", r.method, r.path, r.header("webhook-id")))
                .collect::<Vec<_>>()
        );
        got
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn serve(stream: TcpStream, shared: &Shared) {
    if stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let Some(request) = read_request(&mut reader, shared) else {
            return;
        };
        let close = request.header("connection").eq_ignore_ascii_case("close");
        let reply = {
            let mut requests = shared.requests.lock().unwrap();
            let n = requests.len();
            requests.push(request.clone());
            drop(requests);
            (shared.script.lock().unwrap())(n, &request)
        };
        match reply {
            Reply::Answer {
                status,
                headers,
                body,
                delay,
            } => {
                let until = Instant::now() + delay;
                while Instant::now() < until {
                    if shared.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(until.saturating_duration_since(Instant::now()).min(POLL));
                }
                let mut head = format!(
                    "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n",
                    reason(status),
                    body.len()
                );
                for (name, value) in &headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                if close {
                    head.push_str("Connection: close\r\n");
                }
                head.push_str("\r\n");
                if writer.write_all(head.as_bytes()).is_err()
                    || writer.write_all(&body).is_err()
                    || writer.flush().is_err()
                    || close
                {
                    return;
                }
            }
            Reply::Hang => {
                // Hold the connection until the peer gives up on it.
                let mut sink = [0u8; 1024];
                while !shared.stopping.load(Ordering::SeqCst) {
                    match reader.read(&mut sink) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => return,
                    }
                }
                return;
            }
            Reply::Drop => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Reads one line (up to `\n`), riding out read timeouts; `None` at EOF, on
/// an error or when the receiver stops.
fn read_line(reader: &mut BufReader<TcpStream>, shared: &Shared, line: &mut Vec<u8>) -> Option<()> {
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return None;
        }
        match reader.read_until(b'\n', line) {
            Ok(0) => return None,
            Ok(_) if line.ends_with(b"\n") => return Some(()),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return None,
        }
    }
}

fn read_exact(reader: &mut BufReader<TcpStream>, shared: &Shared, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0; len];
    let mut filled = 0;
    while filled < len {
        if shared.stopping.load(Ordering::SeqCst) {
            return None;
        }
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(e) if is_timeout(&e) => {}
            Err(_) => return None,
        }
    }
    Some(buf)
}

/// One request, or `None` when the peer closed, sent garbage or the
/// receiver stops.
fn read_request(reader: &mut BufReader<TcpStream>, shared: &Shared) -> Option<Recorded> {
    let mut request_line = Vec::new();
    // Tolerate stray empty lines between keep-alive requests.
    while request_line.iter().all(u8::is_ascii_whitespace) {
        request_line.clear();
        read_line(reader, shared, &mut request_line)?;
    }
    let request_line = String::from_utf8_lossy(&request_line).trim_end().to_owned();
    let mut parts = request_line.split(' ');
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();

    let mut headers: HashMap<String, String> = HashMap::new();
    loop {
        let mut line = Vec::new();
        read_line(reader, shared, &mut line)?;
        let line = String::from_utf8_lossy(&line).trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_owned();
        headers
            .entry(name)
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let at = Instant::now();

    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let mut size_line = Vec::new();
            read_line(reader, shared, &mut size_line)?;
            let text = String::from_utf8_lossy(&size_line);
            let size = usize::from_str_radix(text.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let mut trailer = Vec::new();
                    read_line(reader, shared, &mut trailer)?;
                    if trailer.iter().all(u8::is_ascii_whitespace) {
                        break;
                    }
                }
                break body;
            }
            body.extend(read_exact(reader, shared, size)?);
            read_exact(reader, shared, 2)?; // CRLF after the chunk
        }
    } else {
        let length: usize = match headers.get("content-length") {
            Some(v) => v.parse().ok()?,
            None => 0,
        };
        read_exact(reader, shared, length)?
    };
    Some(Recorded {
        method,
        path,
        headers,
        body,
        at,
    })
}
