//! The Python that runs the test peers, and running its scripts.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// Starting Python and importing a peer's libraries can be slow on a loaded
/// machine; what the scripts then do (RSA keys, a verification, a client's
/// upload interval) fits well within this too.
pub const PYTHON_RUN: Duration = Duration::from_secs(60);

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

/// A script beside the tests, e.g. `smtp_sink.py`.
pub fn python_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

/// Runs tests/`script` with `args`, `input` on its stdin, to completion;
/// fails the test if it is still running after `PYTHON_RUN`.
pub fn run_python(script: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(python())
        .arg(python_script(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {script} with {}: {e}", python().display()));
    // Dropped at the end of the statement: the script sees end of input.
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input)
        .unwrap_or_else(|e| panic!("writing to {script}: {e}"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(PYTHON_RUN)
        .unwrap_or_else(|_| panic!("{script} {args:?} did not finish within {PYTHON_RUN:?}"))
        .unwrap_or_else(|e| panic!("waiting for {script}: {e}"))
}

/// A long-running peer that answers on stdout, one line at a time.
pub struct LinePeer {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    /// Its stdout, read on a thread of its own so that a long pipeline of
    /// commands never fills both pipes at once.
    pub lines: Receiver<String>,
}

/// Starts tests/`script` with `args`, its stderr to `stderr`.
pub fn spawn_line_peer(script: &str, args: &[&OsStr], stderr: Stdio) -> LinePeer {
    let mut child = Command::new(python())
        .arg(python_script(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {script} with {}: {e}", python().display()));
    let stdin = child.stdin.take();
    let out = child.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    LinePeer {
        child,
        stdin,
        lines,
    }
}
