//! The single writer thread. Every write in Herald is an operation submitted
//! here; the thread drains whatever is waiting, applies it all in one redb
//! transaction, commits durably (one fsync for the whole group) and only then
//! answers each submitter. Many requests share one fsync: that is where ingest
//! throughput comes from.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use redb::Durability;
use tokio::sync::{oneshot, Notify};

use super::due::{DueChange, Queue, ScheduleListener, ScheduleNote};
use super::log::LogState;
use super::recent_keys::RecentKeys;
use super::recent_tracked::RecentTracked;
use super::webhooks::HookState;
use super::{Store, StoreError, WriteTxn};

/// A write whose only answer is whether it committed (see `Writer::submit`).
pub type WriteOp = Box<dyn for<'t> FnOnce(&mut WriteTxn<'t>) -> Result<(), StoreError> + Send>;

/// Runs inside the group transaction; returns what to do once the commit's
/// fate is known.
type Apply = Box<dyn for<'t> FnOnce(&mut WriteTxn<'t>) -> Result<Complete, StoreError> + Send>;
type Complete = Box<dyn FnOnce(Result<(), Arc<StoreError>>) + Send>;

enum Message {
    Op(Apply),
    /// Commit what is queued, then exit.
    Stop,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full: the caller should back off and retry.
    #[error("the write queue is full")]
    Busy,
    #[error("the store is shutting down")]
    Closed,
    /// The commit failed: the write was not acknowledged. Its data may or may
    /// not have reached the file, so clients retry with the same idempotency key.
    #[error("the write was not acknowledged: {0}")]
    Failed(Arc<StoreError>),
}

/// Handle used by request handlers to submit writes.
#[derive(Clone)]
pub struct Writer {
    queue: Sender<Message>,
    alive: Arc<AtomicBool>,
    /// Signalled when the writer stopped because storage failed.
    failed: Arc<Notify>,
}

pub struct WriterThread {
    handle: JoinHandle<()>,
    queue: Sender<Message>,
}

impl WriterThread {
    /// Asks the writer to commit everything already queued and waits for it
    /// to exit. Submissions after this are answered with `Closed`.
    pub fn stop(self) {
        let _ = self.queue.send(Message::Stop);
        if self.handle.join().is_err() {
            tracing::error!("writer thread panicked during shutdown");
        }
    }
}

impl Writer {
    /// Starts the writer thread. `listeners` hear about schedule changes
    /// once they are durable.
    pub fn start(
        store: &Store,
        queue_capacity: usize,
        max_batch: usize,
        listeners: Listeners,
    ) -> Result<(Writer, WriterThread), StoreError> {
        let state = LogState::load(store.database())?;
        let recent_keys = RecentKeys::load(store.database())?;
        let recent_tracked = RecentTracked::load(store.database())?;
        let hooks = HookState::load(store.database())?;
        let (tx, rx) = crossbeam_channel::bounded(queue_capacity);
        let alive = Arc::new(AtomicBool::new(true));
        let failed = Arc::new(Notify::new());
        let store = store.clone();
        let (thread_alive, thread_failed) = (alive.clone(), failed.clone());
        let handle = std::thread::Builder::new()
            .name("herald-writer".into())
            .spawn(move || {
                let mut memory = WriterMemory {
                    log: state,
                    recent_keys,
                    recent_tracked,
                    hooks,
                    schedule: Default::default(),
                    listeners,
                };
                let outcome = run(&store, &rx, &mut memory, max_batch);
                thread_alive.store(false, Ordering::SeqCst);
                if outcome.is_err() {
                    thread_failed.notify_one();
                    refuse_until_stopped(&rx);
                }
            })
            .expect("spawning the writer thread");
        Ok((
            Writer {
                queue: tx.clone(),
                alive,
                failed,
            },
            WriterThread { handle, queue: tx },
        ))
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Resolves if the writer stops because storage failed. The daemon then
    /// exits non-zero so its supervisor restarts it and redb recovers the
    /// file: after a failed fsync the page cache cannot be trusted.
    pub async fn storage_failed(&self) {
        self.failed.notified().await
    }

    /// Queues `op` for the next group commit and resolves once that commit is
    /// durable. `op` must only write after it has decided to succeed: a
    /// logical refusal belongs in `T`, while `Err` aborts the whole group.
    /// A full queue answers `Busy` at once, so a request can be shed.
    pub async fn write<T, F>(&self, op: F) -> Result<T, SubmitError>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&mut WriteTxn<'t>) -> Result<T, StoreError> + Send + 'static,
    {
        let (apply, answer) = replying(op);
        match self.queue.try_send(Message::Op(apply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SubmitError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(SubmitError::Closed),
        }
        answer.await.unwrap_or(Err(SubmitError::Closed))
    }

    /// As `write`, and `committed` runs on the writer thread once the
    /// commit is durable, before the answer: in commit order, and whether
    /// or not the caller still waits. Memory kept beside the file (the
    /// compiled event catalog) changes there, so it applies changes in the
    /// order the file did. `committed` must be quick: the next group waits.
    pub async fn write_then<T, F, C>(&self, op: F, committed: C) -> Result<T, SubmitError>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&mut WriteTxn<'t>) -> Result<T, StoreError> + Send + 'static,
        C: FnOnce(&T) + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T, SubmitError>>();
        let apply: Apply = Box::new(move |txn| {
            let value = op(txn)?;
            Ok(Box::new(move |outcome: Result<(), Arc<StoreError>>| {
                let answer = match outcome {
                    Ok(()) => {
                        committed(&value);
                        Ok(value)
                    }
                    Err(e) => Err(SubmitError::Failed(e)),
                };
                let _ = reply.send(answer);
            }))
        });
        match self.queue.try_send(Message::Op(apply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SubmitError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(SubmitError::Closed),
        }
        answer.await.unwrap_or(Err(SubmitError::Closed))
    }

    /// As `write`, but a full queue is waited out: for writes that must
    /// not be shed, such as the outcome of a request already made.
    pub async fn write_waiting<T, F>(&self, op: F) -> Result<T, SubmitError>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&mut WriteTxn<'t>) -> Result<T, StoreError> + Send + 'static,
    {
        let (apply, answer) = replying(op);
        let mut message = Message::Op(apply);
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    message = back;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(100));
                }
                Err(TrySendError::Disconnected(_)) => return Err(SubmitError::Closed),
            }
        }
        answer.await.unwrap_or(Err(SubmitError::Closed))
    }

    /// As `write`, for threads outside the async runtime (background
    /// workers): it waits while the queue is full rather than refusing.
    pub fn write_blocking<T, F>(&self, op: F) -> Result<T, SubmitError>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&mut WriteTxn<'t>) -> Result<T, StoreError> + Send + 'static,
    {
        let (apply, answer) = replying(op);
        if self.queue.send(Message::Op(apply)).is_err() {
            return Err(SubmitError::Closed);
        }
        answer.blocking_recv().unwrap_or(Err(SubmitError::Closed))
    }

    /// Queues `op` from a worker thread, waiting while the queue is full but
    /// not for the commit, so a worker need not idle through each fsync.
    /// `done` runs exactly once, on the writer thread: `true` once the
    /// commit is durable, `false` if it is not (the group failed, or the
    /// writer stopped first).
    pub fn submit<F>(&self, op: F, done: impl FnOnce(bool) + Send + 'static)
    where
        F: for<'t> FnOnce(&mut WriteTxn<'t>) -> Result<(), StoreError> + Send + 'static,
    {
        let done = Completion(Some(Box::new(done)));
        let apply: Apply = Box::new(move |txn| {
            op(txn)?;
            Ok(Box::new(move |committed: Result<(), Arc<StoreError>>| {
                done.finish(committed.is_ok())
            }))
        });
        // If the writer is gone the operation is dropped here, and with it
        // `done`, which then reports `false`.
        let _ = self.queue.send(Message::Op(apply));
    }
}

/// `op` as the writer runs it, and where its answer arrives.
fn replying<T, F>(op: F) -> (Apply, oneshot::Receiver<Result<T, SubmitError>>)
where
    T: Send + 'static,
    F: for<'t> FnOnce(&mut WriteTxn<'t>) -> Result<T, StoreError> + Send + 'static,
{
    let (reply, answer) = oneshot::channel::<Result<T, SubmitError>>();
    let apply: Apply = Box::new(move |txn| {
        let value = op(txn)?;
        Ok(Box::new(move |committed: Result<(), Arc<StoreError>>| {
            let _ = reply.send(committed.map(|()| value).map_err(SubmitError::Failed));
        }))
    });
    (apply, answer)
}

/// A `submit` caller's callback, called with `false` if it is dropped
/// uncalled: whatever path an operation takes, its submitter hears once.
struct Completion(Option<Box<dyn FnOnce(bool) + Send>>);

impl Completion {
    fn finish(mut self, committed: bool) {
        if let Some(done) = self.0.take() {
            done(committed);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(false);
        }
    }
}

/// The storage itself failed (I/O, a poisoned database): nothing more can be
/// committed by this process.
#[derive(Debug)]
struct StorageFailed;

/// Who hears about each queue's schedule changes.
#[derive(Default)]
pub struct Listeners([Option<ScheduleListener>; 2]);

impl Listeners {
    /// `listener` hears `queue`'s notes.
    pub fn on(mut self, queue: Queue, listener: ScheduleListener) -> Self {
        self.0[queue.index()] = Some(listener);
        self
    }
}

/// Schedule changes of the transaction in progress, per queue.
#[derive(Default)]
struct PendingNotes {
    changes: [Vec<DueChange>; 2],
    keys_changed: [bool; 2],
}

/// What the writer thread keeps between commits.
pub(super) struct WriterMemory {
    /// Where the log continues.
    pub(super) log: LogState,
    /// Idempotency keys not yet merged into their sorted table.
    pub(super) recent_keys: RecentKeys,
    /// Tracking index rows not yet merged into their sorted tables.
    pub(super) recent_tracked: RecentTracked,
    /// Endpoints, for fan-out without reading their table.
    pub(super) hooks: HookState,
    /// Announced to `listeners` once the transaction is durable.
    schedule: PendingNotes,
    listeners: Listeners,
}

impl WriterMemory {
    pub(super) fn schedule_changed(&mut self, queue: Queue, change: DueChange) {
        self.schedule.changes[queue.index()].push(change);
    }

    pub(super) fn keys_changed(&mut self, queue: Queue) {
        self.schedule.keys_changed[queue.index()] = true;
    }

    /// After a commit: schedulers learn about changes only once they are
    /// durable, so none attempts a job that could vanish.
    fn announce(&mut self) {
        let PendingNotes {
            changes,
            keys_changed,
        } = std::mem::take(&mut self.schedule);
        // `Queue::ALL` is in `Queue::index` order, as the arrays are.
        for ((queue, changes), keys_changed) in
            Queue::ALL.into_iter().zip(changes).zip(keys_changed)
        {
            let Some(listener) = &self.listeners.0[queue.index()] else {
                continue;
            };
            if keys_changed {
                listener(ScheduleNote::KeysChanged);
            }
            if !changes.is_empty() {
                listener(ScheduleNote::Changed(changes));
            }
        }
    }

    /// After an aborted group: forget what its operations did in memory.
    /// Fails when the writer's memory cannot be made to match the file again.
    fn roll_back(&mut self, store: &Store, before: LogState) -> Result<(), StorageFailed> {
        self.log = before;
        self.schedule = PendingNotes::default();
        // The group may also have moved held keys or merged (and cleared)
        // held rows: the file is the truth after an abort.
        // Keeping the aborted group's held keys or rows would map them to
        // seqs that other events are about to take.
        let reloaded = RecentKeys::load(store.database())
            .and_then(|keys| RecentTracked::load(store.database()).map(|tracked| (keys, tracked)));
        match reloaded {
            Ok((keys, tracked)) => {
                self.recent_keys = keys;
                self.recent_tracked = tracked;
            }
            Err(e) => {
                tracing::error!(error = %e, "reloading held keys after an abort failed: the writer stops");
                return Err(StorageFailed);
            }
        }
        match HookState::load(store.database()) {
            Ok(hooks) => self.hooks = hooks,
            // Keep going with the old copy; the next storage error stops
            // the writer anyway.
            Err(e) => tracing::error!(error = %e, "reloading endpoints after an abort failed"),
        }
        Ok(())
    }
}

fn run(
    store: &Store,
    queue: &Receiver<Message>,
    memory: &mut WriterMemory,
    max_batch: usize,
) -> Result<(), StorageFailed> {
    let mut stopping = false;
    let mut batch: Vec<Apply> = Vec::with_capacity(max_batch);
    while !stopping {
        match queue.recv() {
            Ok(Message::Op(op)) => batch.push(op),
            Ok(Message::Stop) | Err(_) => stopping = true,
        }
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(Message::Op(op)) => batch.push(op),
                Ok(Message::Stop) => stopping = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_group(store, &mut batch, memory)?;
        }
    }
    // Drain what arrived alongside Stop so no accepted request is left hanging.
    while let Ok(Message::Op(op)) = queue.try_recv() {
        batch.push(op);
        if batch.len() == max_batch {
            commit_group(store, &mut batch, memory)?;
        }
    }
    if !batch.is_empty() {
        commit_group(store, &mut batch, memory)?;
    }
    Ok(())
}

/// After a storage failure: answers every operation still queued, and every
/// one queued later, with a failure at once, until told to stop. Dropping the
/// receiver instead would leave queued operations unanswered, since a
/// channel keeps its messages while any sender lives, and request handlers
/// and workers hold senders until the process ends.
fn refuse_until_stopped(queue: &Receiver<Message>) {
    let mut refused = 0u64;
    while let Ok(Message::Op(op)) = queue.recv() {
        // Dropping an operation unrun drops its reply channel or its
        // `Completion`: its submitter hears that nothing was acknowledged.
        drop(op);
        refused += 1;
    }
    // Operations that raced with `Stop` hear it the same way.
    while let Ok(message) = queue.try_recv() {
        drop(message);
        refused += 1;
    }
    tracing::info!(refused, "writer stopped after a storage failure");
}

fn commit_group(
    store: &Store,
    batch: &mut Vec<Apply>,
    memory: &mut WriterMemory,
) -> Result<(), StorageFailed> {
    let started = Instant::now();
    let size = batch.len();
    let before = memory.log;
    let mut completions: Vec<Complete> = Vec::with_capacity(size);
    let result = apply_and_commit(store, batch, memory, &mut completions);
    crate::metrics::WRITER.committed(size, started.elapsed(), result.is_ok());
    let mut fatal = matches!(result, Err(StoreError::Redb(_)));
    let outcome = match result {
        Ok(()) => {
            memory.announce();
            Ok(())
        }
        Err(e) => {
            fatal |= memory.roll_back(store, before).is_err();
            tracing::error!(error = %e, ops = size, "group commit failed; nothing in it is acknowledged");
            Err(Arc::new(e))
        }
    };
    // Ops that never ran because the group aborted were dropped with their
    // reply channel, so their submitters hear `Closed` rather than hang.
    for complete in completions {
        complete(outcome.clone());
    }
    tracing::trace!(
        ops = size,
        elapsed_us = started.elapsed().as_micros() as u64,
        "group committed"
    );
    if fatal {
        tracing::error!("storage failed: the writer stops and accepts no more writes");
        return Err(StorageFailed);
    }
    Ok(())
}

fn apply_and_commit(
    store: &Store,
    batch: &mut Vec<Apply>,
    memory: &mut WriterMemory,
    completions: &mut Vec<Complete>,
) -> Result<(), StoreError> {
    let mut txn = store.database().begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Redb(e.into()))?;
    {
        let mut tables = WriteTxn::open(&txn, memory)?;
        for op in batch.drain(..) {
            completions.push(op(&mut tables)?);
        }
        tables.sweep_held_keys()?;
    }
    memory.recent_tracked.merge_slice(&txn)?;
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events;
    use crate::store::fault::FaultyFile;

    fn current_thread_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn append_one(
        writer: &Writer,
        rt: &tokio::runtime::Runtime,
        key: &str,
    ) -> Result<u64, SubmitError> {
        let body = format!(r#"{{"type":"t","idempotency_key":"{key}"}}"#);
        let event = events::parse_event(body.as_bytes()).unwrap();
        let appended = rt.block_on(
            writer.write(move |txn| events::append(txn, events::AppendBatch::one(event))),
        )?;
        Ok(appended.unwrap()[0].seq)
    }

    /// Appends `keys` in batches of 1,000 and returns (created, seq) per key.
    fn append_keys(
        writer: &Writer,
        rt: &tokio::runtime::Runtime,
        keys: &[String],
    ) -> Vec<(bool, u64)> {
        let mut out = Vec::new();
        for chunk in keys.chunks(1000) {
            let events = chunk
                .iter()
                .map(|key| {
                    let body = format!(r#"{{"type":"t","idempotency_key":"{key}"}}"#);
                    events::parse_event(body.as_bytes()).unwrap()
                })
                .collect();
            let batch = events::AppendBatch::new(events).unwrap();
            let appended = rt
                .block_on(writer.write(move |txn| events::append(txn, batch)))
                .unwrap()
                .unwrap();
            out.extend(appended.iter().map(|a| (a.created, a.seq)));
        }
        out
    }

    fn key_table_sizes(store: &Store) -> (u64, u64) {
        use redb::{ReadableDatabase, ReadableTableMetadata};
        let txn = store.database().begin_read().unwrap();
        let moved = txn
            .open_table(crate::store::tables::EVENT_KEYS)
            .unwrap()
            .len()
            .unwrap();
        let journal = txn
            .open_table(crate::store::tables::RECENT_EVENT_KEYS)
            .unwrap()
            .len()
            .unwrap();
        (moved, journal)
    }

    #[test]
    fn idempotency_keys_are_found_before_during_and_after_a_sweep_and_across_restarts() {
        use crate::store::recent_keys::MERGE_THRESHOLD;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.redb");
        let rt = current_thread_runtime();
        // Enough keys for one whole sweep, then some held by the next.
        let total = 3 * MERGE_THRESHOLD;
        let keys: Vec<String> = (0..total).map(|i| format!("k{:x}", i * 7919)).collect();
        let expected: Vec<(bool, u64)> = (1..=total as u64).map(|seq| (false, seq)).collect();

        let store = Store::open(&path).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        let first = append_keys(&writer, &rt, &keys);
        assert!(first.iter().all(|(created, _)| *created));
        let (moved, journal) = key_table_sizes(&store);
        assert!(moved >= MERGE_THRESHOLD as u64, "{moved} moved");
        assert!(
            journal < total as u64,
            "{journal} journal rows: none dropped"
        );
        // Every key is in one table or the other, or both mid-sweep.
        assert!(moved + journal >= total as u64, "{moved} + {journal}");
        assert_eq!(append_keys(&writer, &rt, &keys), expected);
        thread.stop();
        drop((writer, store));

        // After a restart both moved and held keys still name their event.
        let store = Store::open(&path).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        assert_eq!(append_keys(&writer, &rt, &keys), expected);
        let fresh = append_keys(&writer, &rt, &["new".to_owned()]);
        assert_eq!(fresh, vec![(true, total as u64 + 1)]);
        thread.stop();
    }

    #[test]
    fn a_restart_in_the_middle_of_a_sweep_loses_no_key() {
        use crate::store::recent_keys::MERGE_THRESHOLD;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.redb");
        let rt = current_thread_runtime();
        // Single events add one key a group, so once the sweep's sorted
        // snapshot is back, each group moves its smallest slice: stop at
        // the first group that moved any.
        let keys: Vec<String> = (0..2 * MERGE_THRESHOLD)
            .map(|i| format!("r{:x}", i * 104_729))
            .collect();
        let store = Store::open(&path).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        append_keys(&writer, &rt, &keys[..MERGE_THRESHOLD - 1]);
        let mut appended = MERGE_THRESHOLD - 1;
        let moved = loop {
            append_one(&writer, &rt, &keys[appended]).unwrap();
            appended += 1;
            let (moved, _) = key_table_sizes(&store);
            if moved > 0 || appended == keys.len() {
                break moved;
            }
        };
        let keys = &keys[..appended];
        let (_, journal) = key_table_sizes(&store);
        assert!(
            moved > 0 && moved < keys.len() as u64,
            "{moved}: the sweep has begun and not ended"
        );
        assert_eq!(
            journal,
            keys.len() as u64,
            "and has not yet dropped a journal row"
        );
        thread.stop();
        drop((writer, store));

        let store = Store::open(&path).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        let expected: Vec<(bool, u64)> = (1..=keys.len() as u64).map(|seq| (false, seq)).collect();
        assert_eq!(append_keys(&writer, &rt, keys), expected);
        thread.stop();
    }

    /// Submits an operation that, once running, holds the writer until the
    /// returned sender is dropped and then does `then`; returns once it runs.
    fn hold_writer(
        writer: &Writer,
        then: impl for<'t> FnOnce(&mut WriteTxn<'t>) -> Result<(), StoreError> + Send + 'static,
    ) -> crossbeam_channel::Sender<()> {
        let (entered_tx, entered) = crossbeam_channel::bounded(1);
        let (release, held) = crossbeam_channel::bounded::<()>(0);
        writer.submit(
            move |txn| {
                let _ = entered_tx.send(());
                let _ = held.recv();
                then(txn)
            },
            |_| {},
        );
        entered.recv().unwrap();
        release
    }

    #[test]
    fn a_full_queue_refuses_write_but_write_waiting_waits_its_turn() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("herald.redb")).unwrap();
        let (writer, thread) = Writer::start(&store, 1, 16, Listeners::default()).unwrap();
        let rt = current_thread_runtime();
        // The first operation holds the writer; the second fills the queue.
        let release = hold_writer(&writer, |_| Ok(()));
        writer.submit(|_| Ok(()), |_| {});
        rt.block_on(async {
            assert!(matches!(
                writer.write(|_| Ok(1)).await,
                Err(SubmitError::Busy)
            ));
            let waiting = writer.write_waiting(|_| Ok(7));
            tokio::pin!(waiting);
            let first_look = tokio::time::timeout(std::time::Duration::ZERO, &mut waiting).await;
            assert!(first_look.is_err(), "it waits instead of refusing");
            drop(release);
            assert_eq!(waiting.await.unwrap(), 7);
        });
        thread.stop();
    }

    #[test]
    fn a_failed_commit_answers_every_queued_operation_at_once() {
        use std::sync::atomic::AtomicUsize;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.redb");
        let (backend, fail_sync) = FaultyFile::open(&path);
        let store = Store::open_on(backend, &path).unwrap();
        let (writer, thread) = Writer::start(&store, 1024, 16, Listeners::default()).unwrap();
        let rt = current_thread_runtime();
        // The first operation holds the writer while the others queue up
        // behind it, more of them than one group takes.
        let release = hold_writer(&writer, |txn| {
            let event = events::parse_event(br#"{"type":"t"}"#).unwrap();
            let _ = events::append(txn, events::AppendBatch::one(event))?;
            Ok(())
        });
        const QUEUED: usize = 100;
        let refused = Arc::new(AtomicUsize::new(0));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        for _ in 0..QUEUED {
            let (refused, acknowledged) = (refused.clone(), acknowledged.clone());
            writer.submit(
                |_| Ok(()),
                move |committed| {
                    let counter = if committed { &acknowledged } else { &refused };
                    counter.fetch_add(1, Ordering::SeqCst);
                },
            );
        }
        let mut writes: Vec<_> = (0..QUEUED)
            .map(|i| Box::pin(writer.write(move |_| Ok(i))))
            .collect();
        // One poll queues each write; its answer is still to come.
        for write in &mut writes {
            let first_look =
                rt.block_on(async { tokio::time::timeout(std::time::Duration::ZERO, write).await });
            assert!(first_look.is_err(), "answered before the commit");
        }
        fail_sync.store(true, Ordering::SeqCst);
        drop(release);
        rt.block_on(writer.storage_failed());
        // `stop` is queued behind everything above and returns once the
        // writer thread is gone: whatever is unanswered by then never will be.
        thread.stop();
        assert_eq!(acknowledged.load(Ordering::SeqCst), 0);
        assert_eq!(refused.load(Ordering::SeqCst), QUEUED);
        for write in &mut writes {
            let answered = rt
                .block_on(async { tokio::time::timeout(std::time::Duration::ZERO, write).await })
                .expect("the write was answered before the writer stopped");
            assert!(answered.is_err(), "{answered:?}");
        }
        assert!(!writer.is_alive());
    }

    #[test]
    fn a_failed_fsync_acknowledges_nothing_and_stops_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.redb");
        let (backend, fail_sync) = FaultyFile::open(&path);
        let store = Store::open_on(backend, &path).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        let rt = current_thread_runtime();

        assert_eq!(append_one(&writer, &rt, "before").unwrap(), 1);
        fail_sync.store(true, Ordering::SeqCst);
        assert!(matches!(
            append_one(&writer, &rt, "during"),
            Err(SubmitError::Failed(_))
        ));
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), writer.storage_failed())
                .await
                .expect("the writer reports the storage failure")
        });
        assert!(!writer.is_alive());
        assert!(matches!(
            append_one(&writer, &rt, "after"),
            Err(SubmitError::Closed)
        ));
        thread.stop();
        drop((writer, store));

        let reopened = Store::open(&path).unwrap();
        let page = reopened
            .read()
            .unwrap()
            .scan_events(&Default::default(), Default::default(), 10)
            .unwrap();
        let keys: Vec<_> = page
            .events
            .iter()
            .map(|(_, r)| r.idempotency_key.clone().unwrap())
            .collect();
        // The failed commit's pages may still reach the file through the page
        // cache, so "during" may or may not be there: it was never
        // acknowledged, and a client retry with its key dedupes it. What was
        // acknowledged must be.
        assert_eq!(keys.first().map(String::as_str), Some("before"));
        assert!(
            keys.len() <= 2 && keys[1..].iter().all(|k| k == "during"),
            "{keys:?}"
        );
    }
}
