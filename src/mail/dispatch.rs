//! Sending: a scheduler thread that releases due messages (per-stream rate
//! limits, one attempt per message at a time) to a pool of worker threads,
//! each composing, signing and relaying one message and recording the
//! outcome through the writer.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use super::classify::{verdict, Verdict};
use super::compose::{Composer, DkimCache};
use super::ledger::{self, format_email_id, AttemptReport, MailRetry};
use super::relay::{Destination, RelayClient, RelayTlsConfig, Reply};
use super::unsubscribe::TokenKey;
use crate::clock;
use crate::config::mail::{MailSettings, PublicSettings};
use crate::store::codec::EmailStatus;
use crate::store::mail::DueEmail;
use crate::store::{Store, StoreError, SubmitError, Writer};

pub enum Note {
    Due(Vec<DueEmail>),
    Done(u64),
    Stop,
}

/// Tells the scheduler about messages that became due. Cheap to clone.
#[derive(Clone)]
pub struct MailQueue {
    notes: Sender<Note>,
}

impl MailQueue {
    pub fn due(&self, due: Vec<DueEmail>) {
        if !due.is_empty() {
            let _ = self.notes.send(Note::Due(due));
        }
    }
}

/// Everything a worker needs; shared by all of them.
pub struct MailContext {
    pub settings: MailSettings,
    pub public: PublicSettings,
    pub tokens: TokenKey,
    pub retry: MailRetry,
    store: Store,
    writer: Writer,
    /// TLS settings per stream with a relay, checked at start.
    relay_tls: HashMap<String, RelayTlsConfig>,
}

impl MailContext {
    pub fn new(
        settings: MailSettings,
        public: PublicSettings,
        tokens: TokenKey,
        store: Store,
        writer: Writer,
    ) -> Result<Self, String> {
        let mut relay_tls = HashMap::new();
        for (name, stream) in &settings.streams {
            if let Some(relay) = &stream.relay {
                let tls = RelayTlsConfig::new(relay)
                    .map_err(|e| format!("mail.streams.{name}.relay: {e}"))?;
                relay_tls.insert(name.clone(), tls);
            }
        }
        Ok(MailContext {
            retry: MailRetry::new(&settings),
            settings,
            public,
            tokens,
            store,
            writer,
            relay_tls,
        })
    }

    /// A worker's own destinations: each holds its own relay connection.
    fn destinations(&self) -> HashMap<String, Destination> {
        self.settings
            .streams
            .iter()
            .map(|(name, stream)| {
                let destination = match (&stream.relay, self.relay_tls.get(name)) {
                    (Some(relay), Some(tls)) => Destination::Smtp(Box::new(RelayClient::new(
                        relay.clone(),
                        tls.clone(),
                        self.settings.timeout,
                    ))),
                    _ => Destination::Outbox(self.settings.outbox.clone()),
                };
                (name.clone(), destination)
            })
            .collect()
    }
}

/// What one worker thread owns.
struct Worker {
    dkim: DkimCache,
    destinations: HashMap<String, Destination>,
    /// Drives the SMTP conversations of this thread.
    runtime: tokio::runtime::Runtime,
}

/// The running scheduler and workers.
pub struct MailThreads {
    queue: MailQueue,
    /// Set by `stop`: workers then leave jobs already handed out untouched
    /// (their schedule rows keep them for the restart) instead of starting
    /// attempts whose outcome the stopping writer might not record.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    scheduler: JoinHandle<()>,
    workers_exited: Receiver<()>,
    workers: usize,
}

impl MailThreads {
    pub fn queue(&self) -> MailQueue {
        self.queue.clone()
    }

    /// Stops releasing messages and waits up to `grace` for attempts in
    /// flight; one still running then is retried after the restart.
    pub fn stop(self, grace: Duration) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.queue.notes.send(Note::Stop);
        let _ = self.scheduler.join();
        let deadline = Instant::now() + grace;
        for _ in 0..self.workers {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.workers_exited.recv_timeout(left).is_err() {
                tracing::warn!("a mail attempt outlived the grace period; it will be retried");
                break;
            }
        }
    }
}

/// Starts the scheduler (from the durable due index) and the workers.
pub fn start(context: Arc<MailContext>) -> Result<MailThreads, StoreError> {
    let (notes_tx, notes_rx) = crossbeam_channel::unbounded();
    let queue = MailQueue { notes: notes_tx };
    let workers = context.settings.workers;
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<(u64, String)>(workers * 2);
    let (exited_tx, exited_rx) = crossbeam_channel::bounded(workers);
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for n in 0..workers {
        let stopping = stopping.clone();
        let context = context.clone();
        let jobs = jobs_rx.clone();
        let queue = queue.clone();
        let exited = exited_tx.clone();
        std::thread::Builder::new()
            .name(format!("herald-mail-{n}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building a mail worker's runtime");
                let mut worker = Worker {
                    dkim: DkimCache::new(),
                    destinations: context.destinations(),
                    runtime,
                };
                for (id, stream) in jobs.iter() {
                    if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                        continue;
                    }
                    attempt(&context, &queue, id, &stream, &mut worker);
                }
                let _ = exited.send(());
            })
            .expect("spawning a mail worker");
    }
    let mut scheduler = Scheduler::new(context.clone());
    for due in context.store.read()?.due_emails()? {
        scheduler.add(due);
    }
    let handle = std::thread::Builder::new()
        .name("herald-mail-scheduler".into())
        .spawn(move || scheduler.run(&notes_rx, jobs_tx))
        .expect("spawning the mail scheduler");
    Ok(MailThreads {
        queue,
        stopping,
        scheduler: handle,
        workers_exited: exited_rx,
        workers,
    })
}

/// A token bucket allowing `rate` messages per second with a burst of one
/// second's worth.
struct Bucket {
    rate: f64,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        Bucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            updated: Instant::now(),
        }
    }

    fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Scheduler {
    context: Arc<MailContext>,
    due: BTreeSet<(i64, u64)>,
    streams: HashMap<u64, String>,
    /// Released messages and when: an attempt whose outcome never arrives
    /// (its commit group aborted) is reclaimed after `lost_after`.
    in_flight: HashMap<u64, Instant>,
    buckets: HashMap<String, Bucket>,
    last_rescan: Instant,
    lost_after: Duration,
}

/// How long the scheduler sleeps at most.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How often the durable schedule is read again for due messages the
/// scheduler does not hold: one put aside after a read error, a wall clock
/// that stepped back, an attempt whose outcome was lost. The index is the
/// truth; memory is only the fast path.
const RESCAN_EVERY: Duration = Duration::from_secs(30);

impl Scheduler {
    fn new(context: Arc<MailContext>) -> Self {
        let buckets = context
            .settings
            .streams
            .iter()
            .filter_map(|(name, s)| s.rate_limit_per_sec.map(|r| (name.clone(), Bucket::new(r))))
            .collect();
        let lost_after = context.settings.timeout * 2 + Duration::from_secs(60);
        Scheduler {
            context,
            due: BTreeSet::new(),
            streams: HashMap::new(),
            in_flight: HashMap::new(),
            buckets,
            last_rescan: Instant::now(),
            lost_after,
        }
    }

    /// Re-reads what is due now from the index and reclaims lost attempts.
    fn rescan(&mut self) {
        self.last_rescan = Instant::now();
        let lost_after = self.lost_after;
        self.in_flight
            .retain(|_, released| released.elapsed() < lost_after);
        let now_ms = clock::now_ms();
        let due = self
            .context
            .store
            .read()
            .and_then(|r| r.due_emails_until(now_ms, 100_000));
        match due {
            Ok(rows) => {
                for row in rows {
                    if !self.in_flight.contains_key(&row.id) {
                        self.add(row);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "re-reading the mail schedule failed"),
        }
    }

    fn add(&mut self, due: DueEmail) {
        self.due.insert((due.due_ms, due.id));
        self.streams.insert(due.id, due.stream);
    }

    fn run(mut self, notes: &Receiver<Note>, jobs: Sender<(u64, String)>) {
        let mut wait = Duration::ZERO;
        loop {
            match notes.recv_timeout(wait) {
                Ok(note) => {
                    if !self.take(note) {
                        return;
                    }
                    // Take everything queued before releasing work.
                    while let Ok(note) = notes.try_recv() {
                        if !self.take(note) {
                            return;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.last_rescan.elapsed() >= RESCAN_EVERY {
                self.rescan();
            }
            wait = self.release(&jobs);
        }
    }

    /// False on Stop.
    fn take(&mut self, note: Note) -> bool {
        match note {
            Note::Due(items) => items.into_iter().for_each(|d| self.add(d)),
            Note::Done(id) => {
                self.in_flight.remove(&id);
            }
            Note::Stop => return false,
        }
        true
    }

    /// Hands out what is due; returns how long to wait for the next.
    fn release(&mut self, jobs: &Sender<(u64, String)>) -> Duration {
        let now_ms = clock::now_ms();
        let now = Instant::now();
        let mut held_back = Vec::new();
        let mut wait = IDLE_WAIT;
        while let Some(&(due_ms, id)) = self.due.first() {
            if due_ms > now_ms {
                wait = wait.min(Duration::from_millis((due_ms - now_ms) as u64));
                break;
            }
            self.due.pop_first();
            if self.in_flight.contains_key(&id) {
                // Rescheduled before its attempt reported Done: the Done
                // note wakes us to release it.
                held_back.push((due_ms, id));
                continue;
            }
            let Some(stream) = self.streams.get(&id).cloned() else {
                continue;
            };
            if let Some(bucket) = self.buckets.get_mut(&stream) {
                if !bucket.try_take(now) {
                    held_back.push((due_ms, id));
                    wait = wait.min(Duration::from_millis(20));
                    continue;
                }
            }
            match jobs.try_send((id, stream)) {
                Ok(()) => {
                    self.in_flight.insert(id, Instant::now());
                    self.streams.remove(&id);
                }
                Err(TrySendError::Full(_)) => {
                    // Every worker is busy: a Done note wakes us.
                    held_back.push((due_ms, id));
                    wait = IDLE_WAIT;
                    break;
                }
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
        self.due.extend(held_back);
        wait
    }
}

/// One attempt at message `id`. The scheduler hears `Done` once the outcome
/// is durable (or at once when there was nothing to do), never before: until
/// then the message is not released again.
fn attempt(context: &MailContext, queue: &MailQueue, id: u64, stream: &str, worker: &mut Worker) {
    let done = |queue: &MailQueue| {
        let _ = queue.notes.send(Note::Done(id));
    };
    if !attempt_inner(context, queue, id, stream, worker) {
        done(queue);
    }
}

/// True when an outcome was submitted whose commit will report `Done`.
fn attempt_inner(
    context: &MailContext,
    queue: &MailQueue,
    id: u64,
    stream: &str,
    worker: &mut Worker,
) -> bool {
    // The message and its recipient's suppression entry, from one snapshot.
    let read = context.store.read().and_then(|snapshot| {
        let Some(record) = snapshot.email(id)? else {
            return Ok(None);
        };
        let suppression = snapshot.suppression_for(&record.to, &record.stream)?;
        Ok(Some((record, suppression)))
    });
    let (record, suppression) = match read {
        Ok(Some(found)) => found,
        Ok(None) => return false,
        Err(e) => {
            // Never send without knowing: the periodic rescan retries it.
            tracing::error!(error = %e, "reading a queued message failed; it waits");
            return false;
        }
    };
    let now_ms = clock::now_ms();
    let pending = matches!(record.status, EmailStatus::Queued | EmailStatus::Deferred);
    // A stale note (the message was rescheduled or settled since).
    if !pending || record.next_attempt_ms.is_none_or(|due| due > now_ms + 50) {
        return false;
    }
    if let Some(entry) = suppression {
        let reason = entry.reason;
        let queue = queue.clone();
        return write(
            context,
            move |txn| ledger::cancel_suppressed(txn, id, reason),
            move |_| {
                let _ = queue.notes.send(Note::Done(id));
            },
        );
    }
    let Some(settings) = context.settings.streams.get(stream) else {
        tracing::warn!(stream, email = %format_email_id(id), "the message's stream is no longer configured; it stays queued");
        return false;
    };
    let composer = Composer {
        stream: settings,
        public_url: &context.public.url,
        tokens: &context.tokens,
    };
    let started = Instant::now();
    let at_ms = clock::now_ms();
    let reply = match composer.build(id, &record) {
        Ok(mut message) => match composer.sign(&mut message, &record, &mut worker.dkim) {
            Ok(()) => {
                let bytes = message.formatted();
                match worker.destinations.get_mut(stream) {
                    Some(destination) => destination.send(
                        &worker.runtime,
                        &format_email_id(id),
                        message.envelope(),
                        &bytes,
                    ),
                    None => Reply {
                        code: 0,
                        text: format!("stream `{stream}` has no destination"),
                        about_recipient: false,
                    },
                }
            }
            Err(e) => Reply {
                code: 0,
                text: e.to_string(),
                about_recipient: false,
            },
        },
        // Validated at queueing, so only a bug or a changed rule gets here.
        Err(e) => Reply {
            code: 554,
            text: format!("5.6.0 {e}"),
            about_recipient: false,
        },
    };
    let report = AttemptReport {
        at_ms,
        code: reply.code,
        text: reply.text,
        about_recipient: reply.about_recipient,
        latency_ms: started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32,
        random_unit: crate::ids::random_unit(),
    };
    if verdict(report.code, &report.text, report.about_recipient) == Verdict::SenderProblem {
        tracing::warn!(email = %format_email_id(id), code = report.code, reply = %report.text,
                       "the relay refused our mail for a sender-side reason; check the stream's domain, DKIM and relay account");
    }
    let retry = context.retry.clone();
    let queue = queue.clone();
    write(
        context,
        move |txn| ledger::record_attempt(txn, id, report, &retry),
        move |next| {
            if let Some(next) = next {
                queue.due(vec![next.clone()]);
            }
            let _ = queue.notes.send(Note::Done(id));
        },
    )
}

/// Submits an outcome from a worker thread without waiting for its commit,
/// waiting out a full write queue. False when the store is closing: the
/// message's due row then makes it retry after the restart.
fn write<T, F, C>(context: &MailContext, op: F, on_commit: C) -> bool
where
    T: Send + 'static,
    F: for<'t> FnOnce(&mut crate::store::WriteTxn<'t>) -> Result<T, StoreError>
        + Send
        + Clone
        + 'static,
    C: FnOnce(&T) + Send + Clone + 'static,
{
    let mut backoff = Duration::from_millis(5);
    loop {
        match context.writer.submit_then(op.clone(), on_commit.clone()) {
            Ok(()) => return true,
            Err(SubmitError::Busy) => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording a mail attempt failed; it will be retried");
                return false;
            }
        }
    }
}
