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
use tokio::sync::oneshot;

use super::event_log::LogState;
use super::{Store, StoreError, WriteTxn};

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
    #[error("nothing was written: {0}")]
    Failed(Arc<StoreError>),
}

/// Handle used by request handlers to submit writes.
#[derive(Clone)]
pub struct Writer {
    queue: Sender<Message>,
    alive: Arc<AtomicBool>,
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
    pub fn start(
        store: &Store,
        queue_capacity: usize,
        max_batch: usize,
    ) -> Result<(Writer, WriterThread), StoreError> {
        let state = LogState::load(store.database())?;
        let (tx, rx) = crossbeam_channel::bounded(queue_capacity);
        let alive = Arc::new(AtomicBool::new(true));
        let store = store.clone();
        let thread_alive = alive.clone();
        let handle = std::thread::Builder::new()
            .name("herald-writer".into())
            .spawn(move || {
                run(&store, &rx, state, max_batch);
                thread_alive.store(false, Ordering::SeqCst);
            })
            .expect("spawning the writer thread");
        Ok((
            Writer {
                queue: tx.clone(),
                alive,
            },
            WriterThread { handle, queue: tx },
        ))
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Queues `op` for the next group commit and resolves once that commit is
    /// durable. `op` must only write after it has decided to succeed: a
    /// logical refusal belongs in `T`, while `Err` aborts the whole group.
    pub async fn write<T, F>(&self, op: F) -> Result<T, SubmitError>
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
        match self.queue.try_send(Message::Op(apply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SubmitError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(SubmitError::Closed),
        }
        // A dropped reply means the writer exited before reaching this op.
        answer.await.unwrap_or(Err(SubmitError::Closed))
    }
}

fn run(store: &Store, queue: &Receiver<Message>, mut state: LogState, max_batch: usize) {
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
            commit_group(store, &mut batch, &mut state);
        }
    }
    // Drain what arrived alongside Stop so no accepted request is left hanging.
    while let Ok(Message::Op(op)) = queue.try_recv() {
        batch.push(op);
        if batch.len() == max_batch {
            commit_group(store, &mut batch, &mut state);
        }
    }
    if !batch.is_empty() {
        commit_group(store, &mut batch, &mut state);
    }
}

fn commit_group(store: &Store, batch: &mut Vec<Apply>, state: &mut LogState) {
    let started = Instant::now();
    let size = batch.len();
    let before = *state;
    let mut completions: Vec<Complete> = Vec::with_capacity(size);
    let result = apply_and_commit(store, batch, state, &mut completions);
    let outcome = match result {
        Ok(()) => Ok(()),
        Err(e) => {
            *state = before;
            tracing::error!(error = %e, ops = size, "group commit failed; nothing in it was written");
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
}

fn apply_and_commit(
    store: &Store,
    batch: &mut Vec<Apply>,
    state: &mut LogState,
    completions: &mut Vec<Complete>,
) -> Result<(), StoreError> {
    let mut txn = store.database().begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| StoreError::Redb(e.into()))?;
    {
        let mut tables = WriteTxn::open(&txn, state)?;
        for op in batch.drain(..) {
            completions.push(op(&mut tables)?);
        }
    }
    txn.commit()?;
    Ok(())
}
