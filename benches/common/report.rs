//! What the benches measure besides their own clocks, and how they print
//! it: latency quantiles, CPU shares, the daemon's resident memory, and the
//! failures and notes under a table.

use std::time::{Duration, Instant};

use super::load::Tally;

/// Microseconds, saturating: latency samples are kept as `u32`.
pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The `q` quantile of sorted samples in microseconds, as milliseconds.
pub fn quantile_ms(sorted_us: &[u32], q: f64) -> String {
    quantile_us(sorted_us, q).map_or("-".to_owned(), |us| {
        format!("{:.2}", f64::from(us) / 1000.0)
    })
}

/// The `q` quantile of sorted samples in microseconds, if there are any.
pub fn quantile_us(sorted_us: &[u32], q: f64) -> Option<u32> {
    if sorted_us.is_empty() {
        return None;
    }
    let index = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    Some(sorted_us[index])
}

/// The table a closed-loop throughput bench prints, a
/// `Throughput::row` per scenario.
pub const THROUGHPUT_HEADER: &str =
    "| scenario | connections | requests/s | events/s | p50 ms | p99 ms | p99.9 ms | failed |\n\
     |---|---:|---:|---:|---:|---:|---:|---:|";

/// A scenario's failure count and the notes printed under its table.
#[derive(Default)]
pub struct Findings {
    pub failures: u64,
    pub notes: Vec<String>,
}

impl Findings {
    pub fn fail(&mut self, message: String) {
        if self.failures == 0 {
            self.notes.push(format!("first failure: {message}"));
        }
        self.failures += 1;
    }

    /// Takes on a load's failures.
    pub fn count(&mut self, tally: &Tally) {
        if let Some(first) = &tally.first_failure {
            self.fail(first.clone());
            self.failures += tally.failures.saturating_sub(1);
        }
    }
}

/// Machine-wide CPU time, this process's and the daemon's: daemon and bench
/// share the cores, and other processes on the machine may take some too.
pub struct CpuSample {
    at: Instant,
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

/// A process's peak and current resident memory (VmHWM, VmRSS), in MiB.
pub fn resident_mib(pid: u32) -> Option<(f64, f64)> {
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
        at: Instant::now(),
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
