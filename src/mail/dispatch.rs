//! Sending mail: the scheduler's dispatch for the mail queue (a token
//! bucket per stream, a bounded hand-off to the workers) and the worker
//! threads, each composing, signing and relaying one message at a time and
//! recording the outcome through the writer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{select, Receiver, Sender, TryRecvError, TrySendError};

use super::gates::{Passage, StreamGates};
use super::ledger;
use super::sending::{Relayer, Sending};
use super::settings::{MailSettings, PublicSettings};
use super::unsubscribe::TokenKey;
use crate::clock;
use crate::scheduler::{Admit, Dispatch, Ended, Inbox, Job, TokenBucket};
use crate::store::due::stream_key;
use crate::store::records::EmailStatus;
use crate::store::writer::WriteOp;
use crate::store::{Store, Writer};
use crate::worker::{Step, Stop, Worker};

/// Everything a worker needs; shared by all of them.
pub struct MailContext {
    pub sending: Sending,
    store: Store,
    writer: Writer,
}

impl MailContext {
    pub fn new(
        settings: MailSettings,
        public: PublicSettings,
        tokens: TokenKey,
        store: Store,
        writer: Writer,
    ) -> Result<Self, String> {
        Ok(MailContext {
            sending: Sending::new(settings, public, tokens)?,
            store,
            writer,
        })
    }
}

/// Messages released ahead per worker: enough for a commit's worth of
/// relaying (a few milliseconds at thousands of messages a second).
const HAND_OFF_PER_WORKER: usize = 32;

/// The mail queue's half of the scheduler: a stream's rate limit, and a
/// hand-off to the workers that takes only what they can start at once.
pub struct Releases {
    buckets: HashMap<u128, TokenBucket>,
    /// Paused streams and warm-up caps.
    gates: StreamGates,
    jobs: Sender<Job>,
    inbox: Sender<Inbox>,
    /// Whose health decides whether outcomes can be recorded.
    writer: Writer,
}

impl Releases {
    /// Releases to `workers` workers; returns what they take jobs from.
    pub fn new(
        settings: &MailSettings,
        workers: usize,
        inbox: Sender<Inbox>,
        store: Store,
        writer: Writer,
    ) -> (Releases, Receiver<Job>) {
        let now = Instant::now();
        let buckets = settings
            .streams
            .iter()
            .filter_map(|(name, s)| {
                s.rate_limit_per_sec
                    .map(|rate| (stream_key(name), TokenBucket::new(rate, now)))
            })
            .collect();
        // The scheduler hears a message ended only once its outcome is
        // durable, one commit later, and refills the hand-off then: it must
        // hold what the workers get through meanwhile, or they idle through
        // every fsync (with one slot a worker, 4 workers relayed a quarter
        // of what they could). More would only sit out of the scheduler's
        // sight.
        let (jobs, taken) = crossbeam_channel::bounded(workers * HAND_OFF_PER_WORKER);
        (
            Releases {
                buckets,
                gates: StreamGates::new(store, settings),
                jobs,
                inbox,
                writer,
            },
            taken,
        )
    }
}

impl Dispatch for Releases {
    fn admit(&mut self, key: u128, now: Instant) -> Admit {
        if self.jobs.is_full() {
            return Admit::Later;
        }
        match self.gates.passage(key, now) {
            Passage::Open => {}
            Passage::Closed => return Admit::Later,
            Passage::Until(at) => return Admit::At(at),
        }
        if let Some(Err(at)) = self.buckets.get_mut(&key).map(|b| b.take(now)) {
            return Admit::At(at);
        }
        self.gates.released(key);
        Admit::Now
    }

    fn start(&mut self, job: Job) {
        // `admit` saw room, and the scheduler is the only sender.
        if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) =
            self.jobs.try_send(job)
        {
            let _ = self.inbox.send(Inbox::Ended {
                job,
                ended: Ended::Unrecorded,
            });
        }
    }

    fn ended(&mut self, key: u128, ended: Ended, _now: Instant) {
        // Nothing went to the relay: the day's warm-up cap is not used.
        if matches!(ended, Ended::Skipped | Ended::NotDue | Ended::Unrecorded) {
            self.gates.unreleased(key);
        }
    }

    /// A commit changed a stream's state (paused, resumed, a complaint on
    /// a warming stream).
    fn keys_changed(&mut self) {
        self.gates.refresh(clock::now_ms());
    }

    fn recording(&self) -> bool {
        self.writer.is_alive()
    }
}

/// One mail worker thread: its own relay connections and DKIM keys.
pub struct MailWorker {
    number: usize,
    context: Arc<MailContext>,
    jobs: Receiver<Job>,
    inbox: Sender<Inbox>,
    /// Taken from `jobs` while waiting, worked next.
    next: Option<Job>,
    relayer: Relayer,
}

impl MailWorker {
    pub fn new(
        number: usize,
        context: Arc<MailContext>,
        jobs: Receiver<Job>,
        inbox: Sender<Inbox>,
    ) -> std::io::Result<Self> {
        Ok(MailWorker {
            number,
            relayer: Relayer::new(&context.sending)?,
            context,
            jobs,
            inbox,
            next: None,
        })
    }

    /// One attempt at `job`. The scheduler hears that it ended once the
    /// outcome is durable (or at once when there was nothing to do), never
    /// before: until then the message is not released again.
    fn attempt(&mut self, job: Job) {
        let inbox = self.inbox.clone();
        let report = move |ended| {
            let _ = inbox.send(Inbox::Ended { job, ended });
        };
        match self.attempt_inner(job.id) {
            Attempted::Submitted(op) => {
                self.context.writer.submit(op, move |committed| {
                    report(if committed {
                        Ended::Succeeded
                    } else {
                        Ended::Unrecorded
                    })
                });
            }
            Attempted::Nothing(ended) => report(ended),
        }
    }

    fn attempt_inner(&mut self, id: u64) -> Attempted {
        let context = self.context.clone();
        // The message and its recipient's suppression entry, from one snapshot.
        let read = context.store.read().and_then(|snapshot| {
            let Some(record) = snapshot.email(id)? else {
                return Ok(None);
            };
            let suppression =
                snapshot.suppression_for(record.tenant.as_deref(), &record.to, &record.stream)?;
            let paused = snapshot.stream_state(&record.stream)?.paused;
            Ok(Some((record, suppression, paused)))
        });
        let (record, suppression, paused) = match read {
            Ok(Some(found)) => found,
            Ok(None) => return Attempted::Nothing(Ended::Skipped),
            Err(e) => {
                // Never send without knowing: it is looked at again shortly.
                tracing::error!(error = %e, "reading a queued message failed; it waits");
                return Attempted::Nothing(Ended::Unrecorded);
            }
        };
        let now_ms = clock::now_ms();
        if !matches!(record.status, EmailStatus::Queued | EmailStatus::Deferred) {
            return Attempted::Nothing(Ended::Skipped);
        }
        // Moved since the scheduler read it (its note is on the way), or
        // the clock stepped back: it stays where it is.
        if record.next_attempt_ms.is_none_or(|due| due > now_ms + 50) {
            return Attempted::Nothing(Ended::NotDue);
        }
        if paused {
            // Released just before the pause: it goes back to wait.
            return Attempted::Nothing(Ended::NotDue);
        }
        if let Some(entry) = suppression {
            let reason = entry.record.reason;
            return Attempted::Submitted(Box::new(move |txn| {
                ledger::cancel_suppressed(txn, id, reason)
            }));
        }
        let Some(report) = self.relayer.attempt(&context.sending, id, &record) else {
            return Attempted::Nothing(Ended::Skipped);
        };
        let retry = context.sending.retry.clone();
        let guard = context.sending.settings.guard;
        Attempted::Submitted(Box::new(move |txn| {
            ledger::record_attempt(txn, id, report, &retry, &guard)
        }))
    }
}

enum Attempted {
    /// An outcome to record.
    Submitted(WriteOp),
    /// Nothing to record; how the job ended.
    Nothing(Ended),
}

impl Worker for MailWorker {
    fn name(&self) -> String {
        format!("mail-{}", self.number)
    }

    fn work(&mut self) -> Step {
        let job = match self.next.take() {
            Some(job) => job,
            None => match self.jobs.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty) => return Step::Idle(None),
                Err(TryRecvError::Disconnected) => return Step::Done,
            },
        };
        self.attempt(job);
        Step::Busy
    }

    fn wait_for_work(&mut self, _until: Option<Instant>, stop: &Stop) {
        let jobs = self.jobs.clone();
        select! {
            recv(jobs) -> job => self.next = job.ok(),
            recv(stop.receiver()) -> _ => {}
        }
    }

    /// Hands back the jobs released but not started, so the scheduler
    /// need not wait for them; their rows keep them for the restart.
    fn stop(&mut self, _deadline: Instant) {
        for job in self.next.take().into_iter().chain(self.jobs.try_iter()) {
            let _ = self.inbox.send(Inbox::Ended {
                job,
                ended: Ended::Skipped,
            });
        }
    }
}
