//! The daemon under test: starting, signalling, killing and restarting the
//! real `herald` binary, its config file, and reading its log.

use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::postgres::{fresh_database, postgres_backend};
use super::wait::{deadline, wait_until};

/// Debug builds on a loaded 2-core machine can be slow to open a file and bind.
pub const STARTUP: Duration = Duration::from_secs(20);
/// Longer than the default `server.shutdown_grace` (20 s) plus the runtime's
/// own 2 s, so a slow but correct shutdown is not mistaken for a hang.
pub const SHUTDOWN: Duration = Duration::from_secs(30);

/// The binary under test with an environment that cannot leak the caller's
/// settings into it: keys, a database or a log filter from the shell would
/// change results.
pub fn herald() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    for var in [
        "HERALD_API_KEYS",
        "HERALD_API_KEY",
        "HERALD_POSTGRES_URL",
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
        .unwrap_or_else(|e| panic!("spawning {:?}: {e}", cmd.get_program()));
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

/// The address in a JSON log line `{"message": MESSAGE, "addr": ...}`.
fn logged_addr(line: &str, message: &str) -> Option<SocketAddr> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["message"] != message {
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
    /// out get loopback port 0, data in the tempdir and JSON logs, and the
    /// store the run's backend calls for (see `write_config`).
    ///
    /// A `[store]` table that names its backend is taken as it is, whatever
    /// the backend of the run, so several daemons can share one PostgreSQL
    /// database:
    ///
    /// ```ignore
    /// let url = fresh_database();
    /// let toml = format!("[store]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\n");
    /// let a = Daemon::start_with(Options { toml: toml.clone(), ..Options::default() });
    /// let b = Daemon::start_with(Options { toml, ..Options::default() });
    /// ```
    pub toml: String,
    pub env: Vec<(String, String)>,
    /// Extra arguments after `serve --config FILE`.
    pub args: Vec<String>,
}

/// Writes `dir/config.toml`: `extra` with the test defaults filled in
/// wherever `extra` leaves a key out.
///
/// On the PostgreSQL pass (`postgres_backend()`, HERALD_TEST_BACKEND=postgres)
/// a config that names no backend gets a database of its own: `[store]`
/// `backend = "postgres"` and, unless `extra` gives one, `postgres_url =
/// fresh_database()`; the other defaults (`storage.data_dir` too) stay as
/// they are. A `[store]` table that names its backend is never touched, on
/// either pass: that is how a test starts a daemon on a given database (or
/// on redb even on the PostgreSQL pass).
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
    if postgres_backend() {
        let store = table
            .entry("store")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("config sections are tables");
        if !store.contains_key("backend") {
            store.insert("backend".into(), toml::Value::String("postgres".into()));
            if !store.contains_key("postgres_url") {
                let url = fresh_database();
                store.insert("postgres_url".into(), toml::Value::String(url));
            }
        }
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
        match proc.wait_for_line(deadline(STARTUP), |l| logged_addr(l, "listening")) {
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

    /// The database of a daemon on PostgreSQL; `None` on redb.
    pub fn postgres_url(&self) -> Option<String> {
        let table: toml::Table = std::fs::read_to_string(&self.config).ok()?.parse().ok()?;
        let store = table.get("store")?.as_table()?;
        if store.get("backend")?.as_str()? != "postgres" {
            return None;
        }
        Some(store.get("postgres_url")?.as_str()?.to_owned())
    }

    /// A secret the daemon keeps for itself (`portal`, `unsubscribe`), read
    /// from its file or its database; best called while it is stopped.
    pub fn stored_secret(&self, name: &str) -> [u8; 32] {
        match self.postgres_url() {
            Some(url) => {
                let hex = super::postgres::psql(
                    &url,
                    &format!(
                        "SELECT encode(secret, 'hex') FROM herald_secrets WHERE name = '{name}'"
                    ),
                );
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                    .collect();
                bytes.try_into().expect("a 32-byte secret")
            }
            None => {
                let store = herald::store::Store::open(&self.data_dir.join("herald.redb"))
                    .expect("opening the file");
                store.persistent_secret(name).expect("the secret")
            }
        }
    }

    /// Every stderr line of every run of this daemon so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Whether a JSON log line with this message has been written.
    pub fn has_logged(&self, message: &str) -> bool {
        self.logs().iter().any(|l| is_log_message(l, message))
    }

    /// The address in the log line with this message (such as
    /// "public listening"), waiting for the line to be written.
    pub fn logged_addr(&self, message: &str) -> SocketAddr {
        let mut found = None;
        let logged = wait_until(deadline(STARTUP), || {
            found = self.logs().iter().find_map(|l| logged_addr(l, message));
            found.is_some()
        });
        assert!(
            logged,
            "no {message:?} line with an address:\n{}",
            self.logs().join("\n")
        );
        found.expect("found")
    }
}
