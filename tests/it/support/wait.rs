//! Deadlines and bounded polling: how every test waits for something.

use std::time::{Duration, Instant};

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
