//! Shared machinery: starting the real daemon, reading its log, a tiny
//! blocking HTTP/1.1 client, and bounded polling.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Debug builds on a loaded 2-core machine can be slow to open a file and bind.
pub const STARTUP: Duration = Duration::from_secs(20);
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longer than the default `server.shutdown_grace` (20 s) plus the runtime's
/// own 2 s, so a slow but correct shutdown is not mistaken for a hang.
pub const SHUTDOWN: Duration = Duration::from_secs(30);
/// Caps every "follow the cursor" loop so a cursor bug fails instead of spinning.
const MAX_PAGES: usize = 100_000;

pub fn deadline(after: Duration) -> Instant {
    Instant::now() + after
}

/// Polls `cond` until it holds or `deadline` passes; returns whether it held.
/// The short pause between polls only saves CPU: correctness never depends on it.
pub fn wait_until(deadline: Instant, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The binary under test with an environment that cannot leak the caller's
/// settings into it: keys or a log filter from the shell would change results.
pub fn herald() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    for var in [
        "HERALD_API_KEYS",
        "HERALD_API_KEY",
        "RUST_LOG",
        "NOTIFY_SOCKET",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs a command that is expected to exit by itself, killing it (and
/// failing) if it is still running at the deadline.
pub fn run_with_deadline(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning herald");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let mut status = None;
    let exited = wait_until(deadline(timeout), || {
        status = child.try_wait().expect("polling the child");
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    let output = Output {
        status: status.unwrap_or_else(|| child.wait().expect("reaping the child")),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    assert!(
        exited,
        "{cmd:?} still ran after {timeout:?}; stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A child's stderr, read line by line on a thread of its own so the pipe
/// never fills up and blocks the child.
pub struct LogReader {
    lines: Receiver<String>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
pub enum WaitEnd {
    TimedOut,
    /// The child closed stderr: it exited.
    Closed,
}

impl LogReader {
    pub fn start(stderr: ChildStderr, all: Arc<Mutex<Vec<String>>>) -> LogReader {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                all.lock().unwrap().push(line.clone());
                // Nobody may be listening any more; `all` keeps the line anyway.
                let _ = tx.send(line);
            }
        });
        LogReader {
            lines: rx,
            thread: Some(thread),
        }
    }

    /// The first line not yet consumed that `pred` maps to `Some`.
    pub fn wait_for<T>(
        &self,
        deadline: Instant,
        mut pred: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, WaitEnd> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(found) = pred(&line) {
                        return Ok(found);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err(WaitEnd::TimedOut),
                Err(RecvTimeoutError::Disconnected) => return Err(WaitEnd::Closed),
            }
        }
    }

    /// Waits for the reader to reach end of file; call once the child exited
    /// so that its last lines are in the shared log.
    fn finish(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A long-running child (a daemon) whose stderr is collected; killed when
/// dropped so a failing test leaves no process behind.
pub struct Spawned {
    child: Option<Child>,
    reader: LogReader,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Spawned {
    pub fn spawn(cmd: &mut Command, logs: Arc<Mutex<Vec<String>>>) -> Spawned {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning herald");
        let reader = LogReader::start(child.stderr.take().expect("piped stderr"), logs.clone());
        Spawned {
            child: Some(child),
            reader,
            logs,
        }
    }

    pub fn wait_for_line<T>(
        &self,
        deadline: Instant,
        pred: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, WaitEnd> {
        self.reader.wait_for(deadline, pred)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the child is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child, not reaped yet, so the pid
        // cannot belong to another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({signal}): {}", io::Error::last_os_error());
    }

    /// Sends SIGTERM once the child has taken over SIGTERM from the default
    /// action (which kills). Herald installs its handler late, after it has
    /// announced `listening` (see the test
    /// `sigterm_right_after_listening_is_announced_is_a_graceful_stop`); waiting
    /// keeps the tests that use this about draining, not about that race.
    pub fn terminate(&self) {
        let pid = self.child.as_ref().expect("the child is running").id();
        let handled = wait_until(deadline(STARTUP), || sigterm_is_handled(pid));
        assert!(handled, "herald never installed a SIGTERM handler");
        self.signal(libc::SIGTERM);
    }

    /// Waits for the child to exit by itself; `None` if it still runs at the
    /// deadline (it is left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let mut status = None;
        wait_until(deadline(timeout), || {
            status = child.try_wait().expect("polling the child");
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
            self.reader.finish();
        }
        status
    }

    /// The exit status if the child has exited (reaping it), without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self
            .child
            .as_mut()?
            .try_wait()
            .expect("polling the child")?;
        self.child = None;
        self.reader.finish();
        Some(status)
    }

    /// SIGKILL, then reap. `None` if it had already been reaped.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        let status = child.wait().ok();
        self.reader.finish();
        status
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether process `pid` catches or blocks SIGTERM, per /proc/PID/status
/// (`SigCgt`/`SigBlk` are hex masks, bit N-1 for signal N).
fn sigterm_is_handled(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let bit = 1u64 << (libc::SIGTERM - 1);
    status.lines().any(|line| {
        ["SigCgt:", "SigBlk:"].iter().any(|name| {
            line.strip_prefix(name)
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .is_some_and(|mask| mask & bit != 0)
        })
    })
}

/// The address in a JSON log line `{"message":"listening","addr":...}`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["message"] != "listening" {
        return None;
    }
    v["addr"].as_str()?.parse().ok()
}

/// Whether `line` is a JSON log line with this `message`.
pub fn is_log_message(line: &str, message: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| v["message"] == message)
}

#[derive(Default, Clone)]
pub struct Options {
    /// TOML merged over the test defaults: keys given here win, keys left
    /// out get loopback port 0, data in the tempdir and JSON logs.
    pub toml: String,
    pub env: Vec<(String, String)>,
    /// Extra arguments after `serve --config FILE`.
    pub args: Vec<String>,
}

/// Writes `dir/config.toml`: `extra` with the test defaults filled in
/// wherever `extra` leaves a key out.
pub fn write_config(dir: &Path, extra: &str) -> (PathBuf, toml::Table) {
    let mut table: toml::Table = extra.parse().expect("the test's TOML parses");
    let data_dir = dir
        .join("data")
        .to_str()
        .expect("utf-8 temp path")
        .to_owned();
    for (section, key, value) in [
        ("server", "listen", "127.0.0.1:0".to_owned()),
        ("storage", "data_dir", data_dir),
        ("log", "format", "json".to_owned()),
    ] {
        let entry = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        entry
            .as_table_mut()
            .expect("config sections are tables")
            .entry(key)
            .or_insert(toml::Value::String(value));
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, toml::to_string(&table).expect("TOML serialises")).unwrap();
    (path, table)
}

/// A path as a TOML string literal, quoted and escaped.
pub fn toml_str(path: &Path) -> String {
    toml::Value::String(path.to_str().expect("utf-8 path").to_owned()).to_string()
}

/// A running `herald serve` on its own tempdir, killed when dropped.
pub struct Daemon {
    pub addr: SocketAddr,
    config: PathBuf,
    data_dir: PathBuf,
    options: Options,
    proc: Option<Spawned>,
    logs: Arc<Mutex<Vec<String>>>,
    // Dropped last: the child must be gone before its files are removed.
    _dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start(extra_toml: &str) -> Daemon {
        Daemon::start_with(Options {
            toml: extra_toml.to_owned(),
            ..Options::default()
        })
    }

    pub fn start_with(options: Options) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let (config, table) = write_config(dir.path(), &options.toml);
        let data_dir = PathBuf::from(
            table["storage"]["data_dir"]
                .as_str()
                .expect("storage.data_dir is a string"),
        );
        let mut daemon = Daemon {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            config,
            data_dir,
            options,
            proc: None,
            logs: Arc::default(),
            _dir: dir,
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        let mut cmd = herald();
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .args(&self.options.args)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)));
        let mut proc = Spawned::spawn(&mut cmd, self.logs.clone());
        match proc.wait_for_line(deadline(STARTUP), listening_addr) {
            Ok(addr) => {
                self.addr = addr;
                self.proc = Some(proc);
            }
            Err(end) => {
                let status = proc.kill();
                panic!(
                    "herald serve did not start ({end:?}, exit status {status:?}); stderr:\n{}",
                    self.logs().join("\n")
                );
            }
        }
    }

    fn proc(&mut self) -> &mut Spawned {
        self.proc.as_mut().expect("the daemon is running")
    }

    /// Same config and data directory; the port may change.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "stop the daemon before restarting it");
        self.spawn();
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill9(&mut self) {
        let status = self.proc().kill().expect("the daemon was running");
        assert!(!status.success(), "SIGKILL cannot end in success");
        self.proc = None;
    }

    /// Sends SIGTERM (once it is handled) without waiting; see `wait_exit`.
    pub fn send_sigterm(&mut self) {
        self.proc().terminate();
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        match self.proc().wait_exit(SHUTDOWN) {
            Some(status) => {
                self.proc = None;
                status
            }
            None => {
                self.proc().kill();
                self.proc = None;
                panic!(
                    "herald did not exit within {SHUTDOWN:?}; stderr:\n{}",
                    self.logs().join("\n")
                );
            }
        }
    }

    /// The exit status if the daemon has already exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.proc().try_wait()?;
        self.proc = None;
        Some(status)
    }

    pub fn sigterm(&mut self) -> ExitStatus {
        self.send_sigterm();
        self.wait_exit()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Every stderr line of every run of this daemon so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Whether a JSON log line with this message has been written.
    pub fn has_logged(&self, message: &str) -> bool {
        self.logs().iter().any(|l| is_log_message(l, message))
    }
}

// ---------------------------------------------------------------------------
// HTTP/1.1 client

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response {} is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `error.code` of an error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}: {}", self.status, self.text()))
            .to_owned()
    }
}

/// Sends raw bytes and reads the answer until the server closes.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    if let Err(e) = stream.write_all(bytes) {
        // A server refusing a body early (413) may close before reading all
        // of it; its answer can still be waiting in our receive buffer.
        if !matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ) {
            return Err(e);
        }
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // The same early close can arrive as a reset after the answer.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !buf.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    parse_response(&buf)
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn parse_response(buf: &[u8]) -> io::Result<Response> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("no complete response head in {} bytes", buf.len()),
            )
        })?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &buf[end + 4..];
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        if rest.len() < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("body cut short: {} of {len} bytes", rest.len()),
            ));
        }
        rest[..len].to_vec()
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    // Each round consumes at least one chunk header, so `rest` shrinks.
    for _ in 0..=rest.len() {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("chunk header"))?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| bad("chunk size"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad("chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(bad("chunk cut short"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    Err(bad("unterminated chunked body"))
}

pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut msg = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() || method == "POST" || method == "PUT" {
        msg.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        msg.push_str(&format!("{name}: {value}\r\n"));
    }
    msg.push_str("\r\n");
    let mut bytes = msg.into_bytes();
    bytes.extend_from_slice(body);
    send_raw(addr, &bytes)
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

pub const JSON: (&str, &str) = ("Content-Type", "application/json");

pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], b"")
}

pub fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Response {
    request(addr, "POST", path, &[JSON], body.to_string().as_bytes())
}

pub fn try_post_json(addr: SocketAddr, path: &str, body: &Value) -> io::Result<Response> {
    try_request(addr, "POST", path, &[JSON], body.to_string().as_bytes())
}

/// Every event matching `query` (without `after`/`limit`), oldest first,
/// following `next_cursor` to the end.
pub fn list_all(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut path = format!("/v1/events?limit=1000{}{query}", sep(query));
        if let Some(c) = &cursor {
            path.push_str(&format!("&after={c}"));
        }
        let resp = request(addr, "GET", &path, headers, b"");
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        let page = resp.json();
        events.extend(page["events"].as_array().expect("events array").clone());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return events,
        }
    }
    panic!("listing {query:?} did not end after {MAX_PAGES} pages");
}

fn sep(query: &str) -> &'static str {
    if query.is_empty() {
        ""
    } else {
        "&"
    }
}

pub fn count_events(addr: SocketAddr) -> usize {
    list_all(addr, "", &[]).len()
}

/// Creates one event and returns it, failing unless the answer is 201.
pub fn create(addr: SocketAddr, event: &Value) -> Value {
    let resp = post_json(addr, "/v1/events", event);
    assert_eq!(resp.status, 201, "creating {event}: {}", resp.text());
    resp.json()
}

/// The Python with the test peers (tests/requirements.txt): the one tests/run
/// names in HERALD_TEST_PYTHON, else tests/.venv's.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HERALD_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python");
    assert!(
        venv.exists(),
        "HERALD_TEST_PYTHON is unset and {} is missing: run tests/run, which installs \
         tests/requirements.txt into tests/.venv",
        venv.display()
    );
    venv
}
