//! The scheduler both webhooks and mail run on: it decides which due job
//! starts when. The `due` table is the truth; memory holds, per key
//! (endpoint or stream), only a window of that key's next jobs, refilled
//! from the table as it drains, so memory is bounded by the windows and
//! not by the backlog. What a job is and whether its key may start one now
//! (concurrency, rate, circuit breaker, free workers) is the [`Dispatch`]'s
//! business.
//!
//! Changes reach it in commit order: the writer's notes after each commit
//! and the dispatch's reports of finished jobs share one inbox.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use crate::clock;
use crate::store::due::DueAt;
use crate::store::{DueChange, Queue, ScheduleNote, Store, StoreError};
use crate::worker::{Step, Stop, Worker};

/// One job to start: a delivery or a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    pub id: u64,
    /// The endpoint or stream key it belongs to.
    pub key: u128,
    /// When it was due, as the scheduler knew it.
    pub due_ms: i64,
}

/// Whether a key may start a job now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Now,
    /// Not before this instant (a rate limit, an open circuit).
    At(Instant),
    /// Not until something changes: a job of the key finishes, its
    /// settings change.
    Later,
}

/// How a started job ended, for the key's gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Succeeded,
    Failed,
    /// Nothing was attempted: the job is gone or settled.
    Skipped,
    /// Nothing was attempted: by the clock the job is not due yet (the
    /// clock stepped back, or the job moved and its note is on the way).
    /// It stays where it is.
    NotDue,
    /// Attempted or not, its outcome could not be recorded: the job stays
    /// where it was in the table and is tried again after a pause.
    Unrecorded,
}

/// What the scheduler's inbox carries.
#[derive(Debug)]
pub enum Inbox {
    Schedule(ScheduleNote),
    /// A started job's exchange is over and its outcome on its way to the
    /// store: its key may start another, but the job stays in flight (its
    /// row is still due) until it reports `Ended`. Optional: a job that
    /// only reports `Ended` frees its key then.
    Released {
        job: Job,
        ended: Ended,
    },
    Ended {
        job: Job,
        ended: Ended,
    },
}

/// The queue-specific half: gates per key and how a job is started.
pub trait Dispatch: Send + 'static {
    /// Whether a job of `key` may start now; `Now` commits the key to
    /// start one (takes its token, counts it in flight). `Later` when
    /// every worker is busy: the next report wakes the scheduler.
    fn admit(&mut self, key: u128, now: Instant) -> Admit;
    /// Starts an admitted `job`, which reports back through the inbox
    /// when it ends.
    fn start(&mut self, job: Job);
    /// The jobs `start` was given since the last call may run now: a
    /// dispatch that prepares jobs together (one read for many) hands them
    /// over here.
    fn launch(&mut self) {}
    /// A started job of `key` released its key (or ended without doing
    /// so first): once per started job.
    fn ended(&mut self, key: u128, ended: Ended, now: Instant);
    /// The keys' settings changed in the store.
    fn keys_changed(&mut self);
    /// Whether outcomes can be recorded: while not (the writer stopped
    /// after a storage failure), no job starts, since its outcome would be
    /// lost and the job made again after the restart anyway.
    fn recording(&self) -> bool {
        true
    }
}

/// How much memory the windows may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Jobs held in memory across all keys, before in-flight ones.
    pub total: usize,
    /// No key's window is made smaller than this, however many keys.
    pub min_per_key: usize,
    /// Nor larger than this.
    pub max_per_key: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            total: 65_536,
            min_per_key: 64,
            max_per_key: 4_096,
        }
    }
}

/// After an unrecorded outcome, the job is tried again this much later.
const UNRECORDED_PAUSE: Duration = Duration::from_secs(1);
/// Inbox messages applied per piece of work, so that starting jobs is
/// never starved by a flood of notes.
const INBOX_BATCH: usize = 4_096;

/// One key's jobs in memory.
#[derive(Debug, Default)]
struct Window {
    /// Jobs not in flight, by (due, id).
    loaded: BTreeSet<DueAt>,
    /// Every row of the key in the table at or before this place is in
    /// `loaded` or in flight; rows after it are only in the table.
    loaded_to: Option<DueAt>,
    /// There are no rows after `loaded_to`: every row of the key is in
    /// memory or in flight.
    complete: bool,
}

impl Window {
    /// Whether a job at `at` belongs in memory.
    fn covers(&self, at: DueAt) -> bool {
        self.complete || self.loaded_to.is_some_and(|to| at <= to)
    }
}

/// Reads a queue's schedule.
pub trait DueSource: Send + 'static {
    fn keys(&self) -> Result<Vec<u128>, StoreError>;
    fn after(
        &self,
        key: u128,
        after: Option<DueAt>,
        limit: usize,
    ) -> Result<Vec<DueAt>, StoreError>;
}

/// A queue's schedule in the store.
pub struct StoreSource {
    pub store: Store,
    pub queue: Queue,
}

impl DueSource for StoreSource {
    fn keys(&self) -> Result<Vec<u128>, StoreError> {
        self.store.read()?.due_keys(self.queue)
    }

    fn after(
        &self,
        key: u128,
        after: Option<DueAt>,
        limit: usize,
    ) -> Result<Vec<DueAt>, StoreError> {
        self.store.read()?.due_after(self.queue, key, after, limit)
    }
}

/// The scheduler of one queue, run as a [`Worker`].
pub struct Scheduler<D: Dispatch, S: DueSource = StoreSource> {
    name: &'static str,
    source: S,
    dispatch: D,
    inbox: Receiver<Inbox>,
    limits: Limits,
    /// False until the keys were read from the table.
    started: bool,
    windows: HashMap<u128, Window>,
    /// Every loaded job: (due, id) → key. The earliest is the next to
    /// fire.
    timers: BTreeSet<(i64, u64, u128)>,
    /// Where each loaded job is, to find and drop stale entries.
    positions: HashMap<u64, (u128, i64)>,
    /// Due jobs waiting for their key's gate, in due order.
    ready: HashMap<u128, VecDeque<u64>>,
    /// Started jobs whose outcome is not yet recorded → whether the job
    /// already released its key.
    in_flight: HashMap<u64, bool>,
    /// Changes to jobs that were in flight, applied when they end.
    after_flight: HashMap<u64, DueChange>,
    /// Keys whose window fell below half and may have more in the table.
    to_refill: BTreeSet<u128>,
    /// Set by a failed read: retry refills no sooner than this.
    refill_pause_until: Option<Instant>,
    /// Jobs whose outcome could not be recorded: held at their place in
    /// their window, but not started again before the instant.
    paused: BTreeSet<(Instant, u64)>,
    stopping: bool,
}

impl<D: Dispatch> Scheduler<D, StoreSource> {
    /// The scheduler of `queue` in `store`, with the default limits.
    pub fn for_queue(store: Store, queue: Queue, dispatch: D, inbox: Receiver<Inbox>) -> Self {
        let name = match queue {
            Queue::Webhooks => "webhooks",
            Queue::Mail => "mail",
        };
        Scheduler::new(
            name,
            StoreSource { store, queue },
            dispatch,
            inbox,
            Limits::default(),
        )
    }
}

impl<D: Dispatch, S: DueSource> Scheduler<D, S> {
    pub fn new(
        name: &'static str,
        source: S,
        dispatch: D,
        inbox: Receiver<Inbox>,
        limits: Limits,
    ) -> Self {
        Scheduler {
            name,
            source,
            dispatch,
            inbox,
            limits,
            started: false,
            windows: HashMap::new(),
            timers: BTreeSet::new(),
            positions: HashMap::new(),
            ready: HashMap::new(),
            in_flight: HashMap::new(),
            after_flight: HashMap::new(),
            to_refill: BTreeSet::new(),
            refill_pause_until: None,
            paused: BTreeSet::new(),
            stopping: false,
        }
    }

    /// Jobs in memory and in flight: what the windows cost.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        (self.positions.len(), self.in_flight.len())
    }

    fn per_key_limit(&self) -> usize {
        let keys = self.windows.len().max(1);
        (self.limits.total / keys).clamp(self.limits.min_per_key, self.limits.max_per_key)
    }

    /// Reads which keys have jobs; each window then fills from the table.
    fn start_up(&mut self) -> Result<(), StoreError> {
        for key in self.source.keys()? {
            self.windows.entry(key).or_default();
            self.to_refill.insert(key);
        }
        self.started = true;
        Ok(())
    }

    fn apply(&mut self, message: Inbox) {
        match message {
            Inbox::Schedule(ScheduleNote::Changed(changes)) => {
                for change in changes {
                    self.change(change);
                }
            }
            Inbox::Schedule(ScheduleNote::KeysChanged) => self.dispatch.keys_changed(),
            Inbox::Released { job, ended } => self.released(job, ended),
            Inbox::Ended { job, ended } => self.ended(job, ended),
        }
    }

    /// A job's key may start another; the job itself is still in flight.
    fn released(&mut self, job: Job, ended: Ended) {
        if let Some(released @ false) = self.in_flight.get_mut(&job.id) {
            *released = true;
            self.dispatch.ended(job.key, ended, Instant::now());
        }
    }

    /// A committed change to job `change.id`.
    fn change(&mut self, change: DueChange) {
        if self.in_flight.contains_key(&change.id) {
            self.after_flight.insert(change.id, change);
            return;
        }
        self.unload(change.id);
        if let Some(due_ms) = change.due_ms {
            self.offer(change.key, (due_ms, change.id));
        }
    }

    fn ended(&mut self, job: Job, ended: Ended) {
        let Some(released) = self.in_flight.remove(&job.id) else {
            return;
        };
        if !released {
            self.dispatch.ended(job.key, ended, Instant::now());
        }
        if let Some(change) = self.after_flight.remove(&job.id) {
            self.change(change);
            return;
        }
        match ended {
            // The row is still where it was: the job goes back to its
            // place, so the window's bookkeeping stays true.
            Ended::NotDue => self.offer(job.key, (job.due_ms, job.id)),
            Ended::Unrecorded => {
                self.offer(job.key, (job.due_ms, job.id));
                if self.positions.contains_key(&job.id) {
                    self.timers.remove(&(job.due_ms, job.id, job.key));
                    self.paused
                        .insert((Instant::now() + UNRECORDED_PAUSE, job.id));
                }
            }
            Ended::Succeeded | Ended::Failed | Ended::Skipped => {}
        }
    }

    /// Keeps a job of `key` in memory at `at`, with a timer.
    fn hold(&mut self, key: u128, at: DueAt) {
        if let Some(window) = self.windows.get_mut(&key) {
            window.loaded.insert(at);
        }
        self.timers.insert((at.0, at.1, key));
        self.positions.insert(at.1, (key, at.0));
    }

    /// Holds the job in memory if its key's window covers its place.
    fn offer(&mut self, key: u128, at: DueAt) {
        let limit = self.per_key_limit();
        let window = self.windows.entry(key).or_insert_with(|| Window {
            // A key first heard of after start had no rows then: every row
            // it has came with a note.
            complete: self.started,
            ..Window::default()
        });
        if !window.covers(at) {
            return;
        }
        self.hold(key, at);
        let window = self.windows.get_mut(&key).expect("made above");
        if window.loaded.len() > limit {
            // Give the latest back to the table.
            if let Some(last) = window.loaded.pop_last() {
                window.complete = false;
                window.loaded_to = window.loaded.last().copied();
                self.timers.remove(&(last.0, last.1, key));
                self.positions.remove(&last.1);
            }
        }
    }

    /// Forgets a loaded job (it moved, ended or started).
    fn unload(&mut self, id: u64) {
        let Some((key, due_ms)) = self.positions.remove(&id) else {
            return;
        };
        self.timers.remove(&(due_ms, id, key));
        let half = self.per_key_limit() / 2;
        if let Some(window) = self.windows.get_mut(&key) {
            window.loaded.remove(&(due_ms, id));
            if window.complete {
                if window.loaded.is_empty() {
                    // Heard of again, it starts complete: nothing of it
                    // is in the table but what is in flight.
                    self.windows.remove(&key);
                }
            } else if window.loaded.len() < half {
                self.to_refill.insert(key);
            }
        }
    }

    /// Loads the next jobs of keys whose windows ran low.
    fn refill(&mut self) {
        if self
            .refill_pause_until
            .is_some_and(|until| Instant::now() < until)
        {
            return;
        }
        let limit = self.per_key_limit();
        while let Some(key) = self.to_refill.pop_first() {
            let Some(window) = self.windows.get(&key) else {
                continue;
            };
            if window.complete || window.loaded.len() >= limit / 2 {
                continue;
            }
            let want = limit - window.loaded.len();
            let rows = match self.source.after(key, window.loaded_to, want) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(scheduler = self.name, error = %e, "reading the schedule failed; retrying shortly");
                    self.to_refill.insert(key);
                    self.refill_pause_until = Some(Instant::now() + UNRECORDED_PAUSE);
                    return;
                }
            };
            let window = self.windows.get_mut(&key).expect("looked up above");
            window.complete = rows.len() < want;
            if let Some(last) = rows.last() {
                window.loaded_to = Some(*last);
            }
            for at in rows {
                if !self.in_flight.contains_key(&at.1) && !self.positions.contains_key(&at.1) {
                    self.hold(key, at);
                }
            }
        }
        self.refill_pause_until = None;
    }

    /// Moves due jobs to their key's ready queue and starts what the gates
    /// admit. Returns when to look again.
    fn start_due(&mut self) -> Option<Instant> {
        let now = Instant::now();
        while let Some(&(until, id)) = self.paused.first() {
            if until > now {
                break;
            }
            self.paused.pop_first();
            if let Some(&(key, due_ms)) = self.positions.get(&id) {
                self.timers.insert((due_ms, id, key));
            }
        }
        let now_ms = clock::now_ms();
        while let Some(&(due_ms, id, key)) = self.timers.first() {
            if due_ms > now_ms {
                break;
            }
            self.timers.pop_first();
            if self.positions.get(&id) == Some(&(key, due_ms)) {
                self.ready.entry(key).or_default().push_back(id);
            }
        }
        let mut wake = self.timers.first().map(|&(due_ms, _, _)| {
            now + Duration::from_millis(u64::try_from(due_ms - now_ms).unwrap_or(0))
        });
        if let Some(&(until, _)) = self.paused.first() {
            wake = Some(wake.map_or(until, |w| w.min(until)));
        }
        if self.stopping {
            return wake;
        }
        if !self.dispatch.recording() {
            // Looked at again shortly; the daemon is on its way down.
            return Some(now + UNRECORDED_PAUSE);
        }
        let keys: Vec<u128> = self.ready.keys().copied().collect();
        for key in keys {
            while let Some(&id) = self.ready.get(&key).and_then(VecDeque::front) {
                let Some(&(_, due_ms)) = self
                    .positions
                    .get(&id)
                    .filter(|(k, due)| *k == key && *due <= now_ms)
                else {
                    // Moved or ended since it became ready.
                    self.pop_ready(key);
                    continue;
                };
                match self.dispatch.admit(key, now) {
                    Admit::Now => {}
                    Admit::At(at) => {
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                        break;
                    }
                    Admit::Later => break,
                }
                let job = Job { id, key, due_ms };
                self.pop_ready(key);
                self.unload(id);
                self.in_flight.insert(id, false);
                self.dispatch.start(job);
            }
        }
        self.dispatch.launch();
        self.ready.retain(|_, queue| !queue.is_empty());
        wake
    }

    fn pop_ready(&mut self, key: u128) {
        if let Some(queue) = self.ready.get_mut(&key) {
            queue.pop_front();
        }
    }
}

impl<D: Dispatch, S: DueSource> Worker for Scheduler<D, S> {
    fn name(&self) -> String {
        format!("{}-scheduler", self.name)
    }

    fn work(&mut self) -> Step {
        if !self.started {
            if let Err(e) = self.start_up() {
                tracing::error!(scheduler = self.name, error = %e, "reading the schedule failed; retrying shortly");
                return Step::Idle(Some(Instant::now() + UNRECORDED_PAUSE));
            }
            tracing::info!(
                scheduler = self.name,
                keys = self.windows.len(),
                "scheduler started"
            );
        }
        for _ in 0..INBOX_BATCH {
            match self.inbox.try_recv() {
                Ok(message) => self.apply(message),
                Err(_) => break,
            }
        }
        self.refill();
        let wake = self.start_due();
        if !self.inbox.is_empty() {
            return Step::Busy;
        }
        let wake = match self.refill_pause_until {
            Some(pause) if !self.to_refill.is_empty() => Some(wake.map_or(pause, |w| w.min(pause))),
            _ => wake,
        };
        Step::Idle(wake)
    }

    fn wait_for_work(&mut self, until: Option<Instant>, stop: &Stop) {
        let tick = until.map_or_else(crossbeam_channel::never, crossbeam_channel::at);
        let inbox = self.inbox.clone();
        select! {
            recv(inbox) -> message => {
                if let Ok(message) = message {
                    self.apply(message);
                }
            }
            recv(stop.receiver()) -> _ => {}
            recv(tick) -> _ => {}
        }
    }

    /// Starts nothing more and waits for the jobs in flight to report,
    /// until `deadline`; the rest are redone after the restart.
    fn stop(&mut self, deadline: Instant) {
        self.stopping = true;
        while !self.in_flight.is_empty() {
            match self.inbox.recv_deadline(deadline) {
                Ok(message) => self.apply(message),
                Err(_) => break,
            }
        }
        if !self.in_flight.is_empty() {
            tracing::warn!(
                scheduler = self.name,
                in_flight = self.in_flight.len(),
                "jobs still in flight at the deadline; they run again after the restart"
            );
        }
    }
}

/// The inbox of a scheduler: the writer's listener feeds it, and so does
/// whatever runs the jobs.
pub fn inbox() -> (Sender<Inbox>, Receiver<Inbox>) {
    crossbeam_channel::unbounded()
}

/// A token bucket: `rate` starts a second, with a burst of one second's
/// worth (at least one).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u32, now: Instant) -> Self {
        let rate = f64::from(rate_per_sec);
        TokenBucket {
            rate,
            tokens: rate.max(1.0),
            refilled: now,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Takes a token if there is one; otherwise says when there will be.
    pub fn take(&mut self, now: Instant) -> Result<(), Instant> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if self.rate <= 0.0 {
            return Err(now + Duration::from_secs(3600));
        }
        let wait = (1.0 - self.tokens) / self.rate;
        Err(now + Duration::from_secs_f64(wait))
    }

    /// A new rate keeps at most the new burst.
    pub fn set_rate(&mut self, rate_per_sec: u32) {
        self.rate = f64::from(rate_per_sec);
        self.tokens = self.tokens.min(self.rate.max(1.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The `due` table, as the tests change it.
    #[derive(Clone, Default)]
    struct Table(Arc<Mutex<BTreeSet<(u128, i64, u64)>>>);

    impl Table {
        /// Jobs `ids` of `key`, each due at its id in ms.
        fn with(key: u128, ids: std::ops::RangeInclusive<u64>) -> Table {
            let table = Table::default();
            for id in ids {
                table.insert(key, id as i64, id);
            }
            table
        }

        fn insert(&self, key: u128, due_ms: i64, id: u64) {
            self.0.lock().unwrap().insert((key, due_ms, id));
        }
        fn remove(&self, key: u128, due_ms: i64, id: u64) {
            self.0.lock().unwrap().remove(&(key, due_ms, id));
        }
    }

    impl DueSource for Table {
        fn keys(&self) -> Result<Vec<u128>, StoreError> {
            let mut keys: Vec<u128> = self.0.lock().unwrap().iter().map(|k| k.0).collect();
            keys.dedup();
            Ok(keys)
        }
        fn after(
            &self,
            key: u128,
            after: Option<DueAt>,
            limit: usize,
        ) -> Result<Vec<DueAt>, StoreError> {
            let table = self.0.lock().unwrap();
            let start = match after {
                None => (key, i64::MIN, 0),
                Some((due, id)) => (key, due, id + 1),
            };
            Ok(table
                .range(start..=(key, i64::MAX, u64::MAX))
                .take(limit)
                .map(|(_, due, id)| (*due, *id))
                .collect())
        }
    }

    /// Admits by key as the test says, up to `cap` jobs at once when set;
    /// remembers what it started.
    #[derive(Default)]
    struct Recorder {
        blocked: std::collections::HashSet<u128>,
        cap: Option<usize>,
        admitted: usize,
        started: Arc<Mutex<Vec<Job>>>,
    }

    impl Dispatch for Recorder {
        fn admit(&mut self, key: u128, _now: Instant) -> Admit {
            if self.blocked.contains(&key) || self.cap.is_some_and(|cap| self.admitted >= cap) {
                Admit::Later
            } else {
                self.admitted += 1;
                Admit::Now
            }
        }
        fn start(&mut self, job: Job) {
            self.started.lock().unwrap().push(job);
        }
        fn ended(&mut self, _key: u128, _ended: Ended, _now: Instant) {
            self.admitted -= 1;
        }
        fn keys_changed(&mut self) {}
    }

    struct Rig {
        table: Table,
        started: Arc<Mutex<Vec<Job>>>,
        inbox: Sender<Inbox>,
        scheduler: Scheduler<Recorder, Table>,
    }

    fn rig(blocked: &[u128], limits: Limits, table: Table) -> Rig {
        let (inbox, received) = inbox();
        let started = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            blocked: blocked.iter().copied().collect(),
            started: started.clone(),
            ..Recorder::default()
        };
        Rig {
            scheduler: Scheduler::new("test", table.clone(), recorder, received, limits),
            table,
            started,
            inbox,
        }
    }

    impl Rig {
        /// Works until the scheduler idles.
        fn settle(&mut self) {
            for _ in 0..10_000 {
                if let Step::Idle(_) = self.scheduler.work() {
                    return;
                }
            }
            panic!("the scheduler never idled");
        }

        /// Moves job `id` of `key` from `from` to `to` in the table, and
        /// the writer says so.
        fn moved(&self, key: u128, id: u64, from: i64, to: Option<i64>) {
            self.table.remove(key, from, id);
            if let Some(to) = to {
                self.table.insert(key, to, id);
            }
            let change = DueChange {
                id,
                key,
                due_ms: to,
            };
            let note = ScheduleNote::Changed(vec![change]);
            self.inbox.send(Inbox::Schedule(note)).unwrap();
        }

        /// A started job reports how it ended.
        fn report(&self, job: Job, ended: Ended) {
            self.inbox.send(Inbox::Ended { job, ended }).unwrap();
        }

        /// Ends every started job as the store would: its row leaves the
        /// table and the writer says so, then the job reports.
        fn end_all(&mut self) -> Vec<Job> {
            let started = std::mem::take(&mut *self.started.lock().unwrap());
            for job in &started {
                self.moved(job.key, job.id, job.due_ms, None);
                self.report(*job, Ended::Succeeded);
            }
            started
        }

        /// Starts and ends jobs until none is left to start; what started,
        /// in order.
        fn run_dry(&mut self) -> Vec<Job> {
            let mut seen = Vec::new();
            for _ in 0..100 {
                self.settle();
                let ended = self.end_all();
                if ended.is_empty() {
                    return seen;
                }
                seen.extend(ended);
            }
            panic!("jobs kept coming");
        }
    }

    fn small() -> Limits {
        Limits {
            total: 1_000,
            min_per_key: 8,
            max_per_key: 100,
        }
    }

    #[test]
    fn a_backlog_costs_one_window_of_memory_not_the_backlog() {
        let mut rig = rig(&[7], small(), Table::with(7, 1..=200_000));
        rig.settle();
        let (held, in_flight) = rig.scheduler.held();
        assert!(held <= 100, "{held} jobs held for one blocked key");
        assert_eq!(in_flight, 0);
    }

    #[test]
    fn a_blocked_key_does_not_hold_up_another() {
        let table = Table::with(1, 1..=5_000);
        for id in 10_001..=10_010 {
            table.insert(2, id as i64, id);
        }
        let mut rig = rig(&[1], small(), table);
        rig.settle();
        let started: Vec<u64> = rig.end_all().iter().map(|j| j.id).collect();
        assert_eq!(started, (10_001..=10_010).collect::<Vec<_>>());
    }

    #[test]
    fn every_job_of_a_long_backlog_starts_once_in_due_order() {
        let table = Table::default();
        // Due times out of id order, so order comes from the due time.
        for id in 1..=1_000u64 {
            table.insert(3, ((id * 7919) % 1_000) as i64, id);
        }
        let mut rig = rig(&[], small(), table);
        let seen: Vec<DueAt> = rig.run_dry().iter().map(|j| (j.due_ms, j.id)).collect();
        assert_eq!(seen.len(), 1_000);
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted, "started out of due order");
    }

    #[test]
    fn a_job_moved_beyond_the_window_is_found_in_the_table_later() {
        let mut rig = rig(&[5], small(), Table::with(5, 1..=300));
        rig.settle();
        // Job 1 moves to the end of the key's schedule; the window does not
        // reach there, so memory drops it and the table keeps it.
        rig.moved(5, 1, 1, Some(1_000));
        rig.scheduler.dispatch.blocked.clear();
        let seen: Vec<u64> = rig.run_dry().iter().map(|j| j.id).collect();
        assert_eq!(seen.len(), 300);
        assert_eq!(seen.last(), Some(&1), "the moved job runs last, once");
    }

    #[test]
    fn a_change_while_in_flight_waits_for_the_end_and_unrecorded_jobs_return() {
        let table = Table::default();
        table.insert(9, 1, 1);
        table.insert(9, 2, 2);
        let mut rig = rig(&[], small(), table);
        rig.settle();
        let started = std::mem::take(&mut *rig.started.lock().unwrap());
        assert_eq!(started.len(), 2);
        // Job 1's outcome moves it to now (a retry due at once) before it
        // reports; job 2 could not record its outcome.
        rig.moved(9, 1, 1, Some(clock::now_ms()));
        rig.settle();
        assert!(rig.started.lock().unwrap().is_empty(), "still in flight");
        rig.report(started[0], Ended::Failed);
        rig.report(started[1], Ended::Unrecorded);
        rig.settle();
        let again: Vec<u64> = rig.started.lock().unwrap().iter().map(|j| j.id).collect();
        assert_eq!(again, vec![1], "the retry starts; the unrecorded job waits");
        assert_eq!(rig.scheduler.held(), (1, 1));
    }

    #[test]
    fn a_released_job_frees_its_key_once_and_stays_in_flight_until_it_ends() {
        let mut rig = rig(&[], small(), Table::with(6, 1..=3));
        rig.scheduler.dispatch.cap = Some(1);
        rig.settle();
        let first = std::mem::take(&mut *rig.started.lock().unwrap());
        assert_eq!(first.iter().map(|j| j.id).collect::<Vec<_>>(), vec![1]);
        // Its exchange is over, its outcome not yet recorded: the next
        // job may start, and a change to the first waits for its end.
        let job = first[0];
        rig.inbox
            .send(Inbox::Released {
                job,
                ended: Ended::Succeeded,
            })
            .unwrap();
        rig.moved(6, 1, 1, Some(clock::now_ms()));
        rig.settle();
        let second = std::mem::take(&mut *rig.started.lock().unwrap());
        assert_eq!(second.iter().map(|j| j.id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(
            rig.scheduler.held(),
            (1, 2),
            "job 3 held, 1 and 2 in flight"
        );
        // Its end frees nothing more: job 2 holds the only slot. The change
        // that waited applies now, behind job 3.
        rig.report(job, Ended::Failed);
        rig.settle();
        assert!(rig.started.lock().unwrap().is_empty());
        assert_eq!(rig.scheduler.held(), (2, 1));
        rig.moved(6, 2, 2, None);
        rig.report(second[0], Ended::Succeeded);
        let rest: Vec<u64> = rig.run_dry().iter().map(|j| j.id).collect();
        assert_eq!(rest, vec![3, 1]);
    }

    #[test]
    fn an_unrecorded_job_inside_a_long_backlog_is_started_again() {
        let mut rig = rig(&[], small(), Table::with(4, 1..=1_000));
        rig.settle();
        let mut started = std::mem::take(&mut *rig.started.lock().unwrap());
        let first = started.remove(0);
        // The first could not record its outcome: its row stays. The
        // others end normally.
        rig.report(first, Ended::Unrecorded);
        rig.started.lock().unwrap().extend(started);
        let rest = rig.run_dry();
        assert!(rest.iter().all(|j| j.id != first.id));
        assert_eq!(rest.len(), 999, "every other job ran once");
        // It waits out a pause first.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut again = false;
        while !again && Instant::now() < deadline {
            rig.settle();
            again = rig.started.lock().unwrap().iter().any(|j| j.id == first.id);
            if !again {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        assert!(again, "the unrecorded job never started again");
    }

    #[test]
    fn the_bucket_allows_a_burst_then_paces() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(2, t0);
        assert!(bucket.take(t0).is_ok());
        assert!(bucket.take(t0).is_ok());
        let Err(next) = bucket.take(t0) else {
            panic!("the third in the same instant waits");
        };
        assert_eq!(next, t0 + Duration::from_millis(500));
        assert!(bucket.take(next).is_ok());
    }
}
