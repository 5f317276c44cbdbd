//! A real HTTP/1.1 webhook receiver on loopback: keep-alive, scripted
//! answers (status, hang, dropped connection) and a record of every request.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{deadline, wait_until};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    /// Lower-cased names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook bodies are JSON")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Status(u16),
    /// Keep the connection open without answering until the receiver drops.
    Hang,
    /// Close the connection without an answer.
    Drop,
}

type Script = Box<dyn FnMut(usize, &Recorded) -> Reply + Send>;

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<Script>,
    stopping: AtomicBool,
}

pub struct HookReceiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl HookReceiver {
    /// `script(n, request)` decides the answer to the n-th request (from 0).
    pub fn start(script: impl FnMut(usize, &Recorded) -> Reply + Send + 'static) -> HookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the receiver");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(Box::new(script)),
            stopping: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let shared = accept_shared.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        HookReceiver { addr, shared }
    }

    pub fn always(status: u16) -> HookReceiver {
        HookReceiver::start(move |_, _| Reply::Status(status))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived; returns them all.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Recorded> {
        let ok = wait_until(deadline(within), || self.requests().len() >= n);
        let got = self.requests();
        assert!(
            ok,
            "expected {n} requests within {within:?}, got {}",
            got.len()
        );
        got
    }
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let Some(request) = read_request(&mut reader, shared) else {
            return;
        };
        let reply = {
            let mut requests = shared.requests.lock().unwrap();
            let n = requests.len();
            requests.push(request.clone());
            drop(requests);
            (shared.script.lock().unwrap())(n, &request)
        };
        match reply {
            Reply::Status(code) => {
                let body = b"ok";
                let head = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nLocation: /elsewhere\r\n\r\n",
                    body.len()
                );
                if writer.write_all(head.as_bytes()).is_err() || writer.write_all(body).is_err() {
                    return;
                }
            }
            Reply::Hang => {
                while !shared.stopping.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Reply::Drop => return,
        }
    }
}

/// One request, or None when the peer closed or the receiver stops.
fn read_request(reader: &mut BufReader<TcpStream>, shared: &Shared) -> Option<Recorded> {
    let mut head = Vec::new();
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return None;
        }
        match reader.read_until(b'\n', &mut head) {
            Ok(0) => return None,
            Ok(_) if head.ends_with(b"\r\n\r\n") => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    let at = Instant::now();
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; length];
    let mut read = 0;
    while read < length {
        match reader.read(&mut body[read..]) {
            Ok(0) => return None,
            Ok(n) => read += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    Some(Recorded {
        path,
        headers,
        body,
        at,
    })
}
