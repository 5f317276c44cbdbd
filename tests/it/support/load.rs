//! Bursts of concurrent requests, for filling the daemon's write queue.

use std::sync::{Arc, Barrier};

/// Sends bursts of `threads` requests released together until a burst has
/// one that its sender reports as refused (`true`), at most `bursts` times;
/// how many the last burst had refused. Each thread first calls
/// `prepare(burst, thread)` for its sender, so building a request is not
/// what spreads the burst out. Whether a burst overflows a queue is down to
/// scheduling, hence the repeats.
pub fn burst_until_refused<P, S>(bursts: usize, threads: usize, prepare: P) -> usize
where
    P: Fn(usize, usize) -> S + Send + Sync + 'static,
    S: FnOnce() -> bool,
{
    let prepare = Arc::new(prepare);
    for burst in 0..bursts {
        let start = Arc::new(Barrier::new(threads));
        let senders: Vec<_> = (0..threads)
            .map(|t| {
                let (start, prepare) = (start.clone(), prepare.clone());
                std::thread::spawn(move || {
                    let send = prepare(burst, t);
                    start.wait();
                    send()
                })
            })
            .collect();
        let refused = senders
            .into_iter()
            .map(|s| usize::from(s.join().expect("sender thread")))
            .sum();
        if refused > 0 {
            return refused;
        }
    }
    0
}
