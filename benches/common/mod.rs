//! What the benchmarks share: a `herald serve` of their own on loopback,
//! a minimal keep-alive HTTP/1.1 client, and environment knobs.
#![allow(dead_code)] // each bench uses a different part

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

const MAX_HEAD_BYTES: usize = 16 * 1024;

pub async fn connect(addr: SocketAddr) -> std::io::Result<BufStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(BufStream::new(stream))
}

/// One request and its answer on a keep-alive connection. A hand-rolled
/// HTTP/1.1 client, like wrk's, so that the load generator sharing the
/// machine's cores takes as little of them as it can; it understands the
/// `Content-Length` answers both Herald and the ceiling send.
pub async fn exchange(
    stream: &mut BufStream<TcpStream>,
    request: &[u8],
) -> Result<Vec<u8>, String> {
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream
            .read_until(b'\n', &mut head)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before an answer".to_owned());
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err("answer head too large".to_owned());
        }
    }
    let head = String::from_utf8_lossy(&head);
    let status = head
        .get(9..12)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    let mut body = vec![0; length];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}

pub fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// `herald serve` on an ephemeral loopback port with a database of its own.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Daemon {
    /// `extra_toml` is appended to the config (sections of its own).
    pub fn start(extra_toml: &str) -> Daemon {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("bench-data-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the bench data dir");
        let config = dir.join("herald.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n{extra_toml}"
            ),
        )
        .expect("writing the bench config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
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
        // Keep draining so the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Daemon { child, addr, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child, which has not been reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields").unwrap_or(&v);
    if fields.get("message")?.as_str()? != "listening" {
        return None;
    }
    fields.get("addr")?.as_str()?.parse().ok()
}

/// POSTs a JSON body on a keep-alive connection; the answer's body on 2xx.
pub async fn post_json(
    stream: &mut BufStream<TcpStream>,
    addr: SocketAddr,
    path: &str,
    body: &str,
) -> Result<Vec<u8>, String> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(stream, request.as_bytes()).await
}

/// The `q` quantile of sorted samples in microseconds, as milliseconds.
pub fn quantile_ms(sorted_us: &[u32], q: f64) -> String {
    if sorted_us.is_empty() {
        return "-".to_owned();
    }
    let index = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    format!("{:.2}", f64::from(sorted_us[index]) / 1000.0)
}

/// Machine-wide CPU time, this process's and the daemon's: daemon and bench
/// share the cores, and other processes on the machine may take some too.
pub struct CpuSample {
    at: std::time::Instant,
    busy_s: f64,
    own_s: f64,
    daemon_s: Option<f64>,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// The fields of `/proc/PID/stat` after the command name, which may hold
/// spaces: state, ppid, … utime is the 12th, stime the 13th.
fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// A process's peak and current resident memory, in MiB.
fn resident_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    };
    Some((kib("VmHWM:")? / 1024.0, kib("VmRSS:")? / 1024.0))
}

pub fn cpu_sample(daemon: Option<u32>) -> Option<CpuSample> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and
    // iowait is work.
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    // SAFETY: getrusage only writes to the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_SELF, &mut usage) == 0).then_some(usage)
    }?;
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let daemon_s = daemon.and_then(proc_stat).and_then(|f| {
        let utime: u64 = f.get(11)?.parse().ok()?;
        let stime: u64 = f.get(12)?.parse().ok()?;
        Some((utime + stime) as f64 / clock_ticks())
    });
    Some(CpuSample {
        at: std::time::Instant::now(),
        busy_s: busy as f64 / clock_ticks(),
        own_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        daemon_s,
    })
}

/// Where the cores went between two samples; `own` names what this bench
/// process runs (client, sink…). Adds the daemon's memory when `daemon` is
/// given.
pub fn cpu_note(
    before: Option<CpuSample>,
    after: Option<CpuSample>,
    own: &str,
    daemon: Option<u32>,
) -> Option<String> {
    use std::fmt::Write;
    let (before, after) = (before?, after?);
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let busy = (after.busy_s - before.busy_s) / wall;
    let own_cores = (after.own_s - before.own_s) / wall;
    let mut note = format!("CPU {busy:.2} cores busy machine-wide, {own_cores:.2} of them {own}");
    match (before.daemon_s, after.daemon_s) {
        (Some(b), Some(a)) => {
            let daemon_cores = (a - b) / wall;
            let _ = write!(
                note,
                ", {daemon_cores:.2} the daemon, {:.2} other processes",
                (busy - own_cores - daemon_cores).max(0.0)
            );
        }
        _ => {
            let _ = write!(
                note,
                ", {:.2} the server and anything else",
                (busy - own_cores).max(0.0)
            );
        }
    }
    if let Some((peak, now)) = daemon.and_then(resident_mib) {
        let _ = write!(
            note,
            "; daemon resident memory {now:.0} MiB, peak {peak:.0} MiB"
        );
    }
    Some(note)
}

/// `HERALD_BENCH_SCENARIOS`: a comma-separated list of scenario names, or
/// of prefixes before a `-` (`batch100` selects `batch100-c8` and
/// `batch100-c32`); unset selects every scenario.
pub struct Selection(Option<Vec<String>>);

impl Selection {
    pub fn from_env() -> Self {
        Selection(
            std::env::var("HERALD_BENCH_SCENARIOS")
                .ok()
                .map(|s| s.split(',').map(|x| x.trim().to_owned()).collect()),
        )
    }

    pub fn wants(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|v| {
            v.iter().any(|n| {
                n == name
                    || name
                        .strip_prefix(n.as_str())
                        .is_some_and(|r| r.starts_with('-'))
            })
        })
    }

    /// Exits with status 2 when no scenario of `known` is selected.
    pub fn require_any(&self, known: &[&str]) {
        if !known.iter().any(|k| self.wants(k)) {
            eprintln!("HERALD_BENCH_SCENARIOS selects none of {}", known.join(","));
            std::process::exit(2);
        }
    }

    /// The selection as given, for the report's header.
    pub fn describe(&self) -> String {
        self.0.as_ref().map_or("(all)".to_owned(), |v| v.join(","))
    }
}
