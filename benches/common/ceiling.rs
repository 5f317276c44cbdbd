//! The ceiling probe run beside Herald in the same bench: a bare hyper +
//! redb group-commit server that acknowledges after fsync and does nothing
//! else. Herald's ingest figures are reported as ratios to it, measured one
//! right after the other under the same load, because this machine's fsync
//! rate drifts by a factor of two between days.
//!
//! `HERALD_CEILING_BIN` names its binary (built from the ceiling's own
//! crate, which lives outside this repository); unset, benches print
//! Herald's figures alone.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The probe's two durable modes: one row per request, or one row per
/// event of a `{"events":[…]}` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Single,
    Batch,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Single => "redb",
            Mode::Batch => "batch",
        }
    }
}

pub struct Ceiling {
    child: Child,
    pub addr: SocketAddr,
    file: PathBuf,
}

impl Ceiling {
    /// The probe in `mode` on a fresh file, if `HERALD_CEILING_BIN` is set.
    pub fn start(mode: Mode) -> Option<Ceiling> {
        let binary = std::env::var_os("HERALD_CEILING_BIN").filter(|b| !b.is_empty())?;
        // The probe takes an address, not a listener: ask the kernel for a
        // free port and hand it over. Nothing else binds loopback here.
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("finding a free loopback port");
        let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "ceiling-{}-{}.redb",
            mode.arg(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&file);
        let child = Command::new(&binary)
            .arg(mode.arg())
            .arg(addr.to_string())
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the ceiling {binary:?}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the ceiling did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(Ceiling { child, addr, file })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// `herald / ceiling`, as the reports print it.
pub fn ratio(herald: f64, ceiling: Option<f64>) -> String {
    match ceiling {
        Some(c) if c > 0.0 => format!("{:.2}", herald / c),
        _ => "-".to_owned(),
    }
}
