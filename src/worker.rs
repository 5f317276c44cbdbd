//! Background workers and the one way they stop. Each runs on a thread of
//! its own, alternating a bounded piece of work with waiting for more; on
//! SIGTERM every one gets the same deadline to finish or hand back what it
//! holds, and the daemon joins them all.

use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

/// What a worker wants after a piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More is ready now: work again.
    Busy,
    /// Nothing to do until new work arrives or, when given, this instant.
    Idle(Option<Instant>),
    /// Finished for good: its inputs are closed.
    Done,
}

/// A background job of the daemon: the webhook and mail schedulers, the
/// mail workers, upkeep passes.
pub trait Worker: Send + 'static {
    /// For logs: which worker this is.
    fn name(&self) -> String;

    /// Does one bounded piece of work. Called again at once after `Busy`.
    fn work(&mut self) -> Step;

    /// Blocks until new work may have arrived, `until` passes, or `stop` is
    /// raised. Workers fed by a channel wait on it here; the default only
    /// waits for the time or the stop.
    fn wait_for_work(&mut self, until: Option<Instant>, stop: &Stop) {
        stop.wait(until);
    }

    /// Stop was raised: finish or hand back what is in hand by `deadline`.
    /// Anything durable left undone is redone after the restart.
    fn stop(&mut self, _deadline: Instant) {}
}

/// The signal every worker watches; raised once, for all of them.
#[derive(Clone)]
pub struct Stop {
    /// Disconnected (never sent to) when stop is raised, so a worker's
    /// `select!` over its own channel and this one wakes at once.
    raised: Receiver<()>,
    deadline: Arc<OnceLock<Instant>>,
}

impl Stop {
    pub fn is_raised(&self) -> bool {
        matches!(self.raised.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Ready (with an error) once stop is raised: for `select!`.
    pub fn receiver(&self) -> &Receiver<()> {
        &self.raised
    }

    /// Sleeps until `until` (forever when `None`) or until stop is raised.
    pub fn wait(&self, until: Option<Instant>) {
        match until {
            Some(at) => {
                let _ = self.raised.recv_deadline(at);
            }
            None => {
                let _ = self.raised.recv();
            }
        }
    }

    /// When stopping workers must be done; `now` if stop was never raised.
    pub fn deadline(&self) -> Instant {
        self.deadline.get().copied().unwrap_or_else(Instant::now)
    }
}

/// How long past the stop deadline joining waits for a worker to return.
const JOIN_MARGIN: Duration = Duration::from_millis(500);

struct Running {
    name: String,
    handle: JoinHandle<()>,
    /// Disconnected when the thread ends, so joining can wait with a
    /// deadline.
    exited: Receiver<()>,
}

/// The daemon's workers: spawned one by one, stopped and joined together.
pub struct Workers {
    raise: Option<Sender<()>>,
    stop: Stop,
    running: Vec<Running>,
}

impl Default for Workers {
    fn default() -> Self {
        Self::new()
    }
}

impl Workers {
    pub fn new() -> Workers {
        let (raise, raised) = crossbeam_channel::bounded(0);
        Workers {
            raise: Some(raise),
            stop: Stop {
                raised,
                deadline: Arc::new(OnceLock::new()),
            },
            running: Vec::new(),
        }
    }

    /// The stop signal, for code that runs beside the workers.
    pub fn stop_signal(&self) -> Stop {
        self.stop.clone()
    }

    /// Runs `worker` on a thread of its own until it is done or stopped.
    pub fn spawn(&mut self, mut worker: impl Worker) -> std::io::Result<()> {
        let name = worker.name();
        let stop = self.stop.clone();
        let (exited_tx, exited) = crossbeam_channel::bounded::<()>(0);
        let handle = std::thread::Builder::new()
            .name(format!("herald-{name}"))
            .spawn(move || {
                let _exited = exited_tx;
                run(&mut worker, &stop);
            })?;
        self.running.push(Running {
            name,
            handle,
            exited,
        });
        Ok(())
    }

    /// Raises stop, gives every worker until `deadline`, and joins those
    /// that ended; a worker still running then is named in the log and left
    /// behind (its work is durable and redone after the restart).
    pub fn stop(mut self, deadline: Instant) {
        let _ = self.stop.deadline.set(deadline);
        drop(self.raise.take());
        // Workers hand back what they hold by `deadline`; returning from
        // that takes a moment more.
        let join_by = deadline + JOIN_MARGIN;
        let (mut joined, mut left) = (0usize, 0usize);
        for running in self.running.drain(..) {
            match running.exited.recv_deadline(join_by) {
                Err(RecvTimeoutError::Disconnected) | Ok(()) => {
                    if running.handle.join().is_err() {
                        tracing::error!(worker = %running.name, "worker panicked");
                    }
                    joined += 1;
                }
                Err(RecvTimeoutError::Timeout) => {
                    tracing::warn!(worker = %running.name, "worker did not stop in time; leaving it");
                    left += 1;
                }
            }
        }
        tracing::info!(joined, left, "background workers stopped");
    }
}

fn run(worker: &mut impl Worker, stop: &Stop) {
    while !stop.is_raised() {
        match worker.work() {
            Step::Busy => {}
            Step::Idle(until) => worker.wait_for_work(until, stop),
            Step::Done => return,
        }
    }
    worker.stop(stop.deadline());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its pieces of work; idles between them.
    struct Counter {
        done: Arc<AtomicUsize>,
        stopped: Arc<AtomicUsize>,
    }

    impl Worker for Counter {
        fn name(&self) -> String {
            "counter".into()
        }
        fn work(&mut self) -> Step {
            self.done.fetch_add(1, Ordering::SeqCst);
            Step::Idle(Some(Instant::now() + Duration::from_millis(1)))
        }
        fn stop(&mut self, _deadline: Instant) {
            self.stopped.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Never looks at the stop signal while it works: it waits for the
    /// test to let it go.
    struct Stuck {
        release: Receiver<()>,
        finished: Arc<AtomicUsize>,
    }

    impl Worker for Stuck {
        fn name(&self) -> String {
            "stuck".into()
        }
        fn work(&mut self) -> Step {
            let _ = self.release.recv_timeout(Duration::from_secs(60));
            self.finished.fetch_add(1, Ordering::SeqCst);
            Step::Done
        }
    }

    #[test]
    fn stop_reaches_every_worker_and_each_is_joined() {
        let mut workers = Workers::new();
        let done = Arc::new(AtomicUsize::new(0));
        let stopped = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            workers
                .spawn(Counter {
                    done: done.clone(),
                    stopped: stopped.clone(),
                })
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while done.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        workers.stop(Instant::now() + Duration::from_secs(10));
        assert_eq!(stopped.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_worker_past_the_deadline_is_left_behind_not_waited_for() {
        let mut workers = Workers::new();
        let (release_tx, release) = crossbeam_channel::bounded(0);
        let finished = Arc::new(AtomicUsize::new(0));
        workers
            .spawn(Stuck {
                release,
                finished: finished.clone(),
            })
            .unwrap();
        workers.stop(Instant::now() + Duration::from_millis(50));
        // Had stop waited for it, the worker would have finished first.
        assert_eq!(finished.load(Ordering::SeqCst), 0);
        drop(release_tx);
    }
}
