//! `herald serve` of the bench's own on an ephemeral loopback port: started
//! on a fresh data directory, restarted on the same one, stopped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;

pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    /// When this process was spawned: where a restart's timings start.
    pub spawned: Instant,
    /// When it logged `listening`, its store open and its schedulers
    /// started.
    pub listening: Instant,
    /// Holds the config and the data directory; kept across restarts.
    dir: PathBuf,
}

impl Daemon {
    /// `extra_toml` is appended to the config (sections of its own).
    pub fn start(extra_toml: &str) -> Daemon {
        // Several daemons of one bench (nodes on one database) each get
        // a directory of their own.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("bench-data-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the bench data dir");
        std::fs::write(
            config_path(&dir),
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n{extra_toml}"
            ),
        )
        .expect("writing the bench config");
        Daemon::spawn(dir)
    }

    /// Runs `herald serve` on `dir`'s config and data; returns once it
    /// listens.
    fn spawn(dir: PathBuf) -> Daemon {
        let spawned = Instant::now();
        // Another build can be measured with this bench's load, such as
        // an older release for a before-and-after on one machine.
        let binary = std::env::var_os("HERALD_BENCH_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_herald").into());
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(config_path(&dir))
            .arg("--data")
            .arg(dir.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting herald serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("herald serve exited before it listened");
            };
            if let Some(addr) = listening_addr(&line) {
                break addr;
            }
        };
        let listening = Instant::now();
        // Keep draining so the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Daemon {
            child,
            addr,
            spawned,
            listening,
            dir,
        }
    }

    /// Where the daemon keeps `herald.redb`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, as systemd stops it, and the wait for its exit; the data
    /// directory stays.
    pub fn terminate(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        // SAFETY: kill(2) on our own child, which has not been reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.child.wait()
    }

    /// Stops this process and starts another on the same config and data;
    /// how the stopped one exited.
    pub fn restart(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.terminate()?;
        *self = Daemon::spawn(self.dir.clone());
        Ok(status)
    }

    pub fn stop(&mut self) {
        let _ = self.terminate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn config_path(dir: &Path) -> PathBuf {
    dir.join("herald.toml")
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields").unwrap_or(&v);
    if fields.get("message")?.as_str()? != "listening" {
        return None;
    }
    fields.get("addr")?.as_str()?.parse().ok()
}
