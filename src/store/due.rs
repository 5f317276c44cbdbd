//! The durable schedule: which webhook deliveries and mail messages are due
//! when. Writes move a job's row inside the transaction that changes the
//! job, and the writer announces each change once it is durable; readers
//! page through one key's jobs in due order.

use super::tables::DUE;
use super::{ReadTxn, StoreError, WriteTxn};

/// A count that may have stopped at its cap: then `count` is a lower bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounded {
    pub count: u64,
    pub capped: bool,
}

pub(super) fn count_up_to<I, T, E>(rows: I, cap: u64) -> Result<Bounded, StoreError>
where
    I: Iterator<Item = Result<T, E>>,
    StoreError: From<E>,
{
    let mut count = 0;
    for row in rows {
        row?;
        if count == cap {
            return Ok(Bounded {
                count,
                capped: true,
            });
        }
        count += 1;
    }
    Ok(Bounded {
        count,
        capped: false,
    })
}

/// The kinds of work the schedule holds; each has its own scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Webhook deliveries, keyed by endpoint id.
    Webhooks,
    /// Mail messages, keyed by `stream_key` of their stream.
    Mail,
}

impl Queue {
    pub const ALL: [Queue; 2] = [Queue::Webhooks, Queue::Mail];

    /// The queue's byte in the `due` key: part of the file format.
    pub(crate) fn code(self) -> u8 {
        match self {
            Queue::Webhooks => 1,
            Queue::Mail => 2,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Queue::Webhooks => 0,
            Queue::Mail => 1,
        }
    }
}

/// A job's place in its key's schedule: (due Unix ms, job id). Ordered as
/// the schedule is.
pub type DueAt = (i64, u64);

/// One committed change to the schedule of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueChange {
    pub id: u64,
    /// The endpoint (webhooks) or stream key (mail) the job belongs to.
    pub key: u128,
    /// When the job is due now; `None`: it left the schedule.
    pub due_ms: Option<i64>,
}

/// A queue's backlog at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueSummary {
    pub jobs: Bounded,
    /// `None` when the queue is empty.
    pub earliest_due_ms: Option<i64>,
}

/// What the writer tells a queue's scheduler after a commit.
#[derive(Debug)]
pub enum ScheduleNote {
    Changed(Vec<DueChange>),
    /// The keys' settings changed (an endpoint was created, edited or
    /// deleted): gates should be reconfigured.
    KeysChanged,
}

/// Receives a queue's notes on the writer thread, right after the commit:
/// it must only hand them on.
pub type ScheduleListener = Box<dyn Fn(ScheduleNote) + Send>;

/// The key of a mail stream in the schedule: 128 bits of `digest` of its
/// name. Part of the file format.
pub fn stream_key(stream: &str) -> u128 {
    let d = super::digest(5, &[stream]);
    u128::from_be_bytes(d[..16].try_into().expect("sha256 has 32 bytes"))
}

fn row(queue: Queue, key: u128, due_ms: i64, id: u64) -> (u8, u128, u64, u64) {
    (queue.code(), key, due_ms.max(0) as u64, id)
}

impl WriteTxn<'_> {
    /// Moves job `id` of `key` from `from` to `to` in `queue`'s schedule
    /// (`None`: not scheduled), and remembers the change for the scheduler.
    pub(crate) fn reschedule(
        &mut self,
        queue: Queue,
        key: u128,
        id: u64,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<(), StoreError> {
        if from == to {
            return Ok(());
        }
        if self.due.is_none() {
            self.due = Some(self.txn.open_table(DUE)?);
        }
        let due = self.due.as_mut().expect("opened just above");
        if let Some(from) = from {
            due.remove(row(queue, key, from, id))?;
        }
        if let Some(to) = to {
            due.insert(row(queue, key, to, id), ())?;
        }
        self.memory.schedule_changed(
            queue,
            DueChange {
                id,
                key,
                due_ms: to,
            },
        );
        Ok(())
    }

    /// Tells `queue`'s scheduler, after the commit, that its keys' settings
    /// changed.
    pub(crate) fn keys_changed(&mut self, queue: Queue) {
        self.memory.keys_changed(queue);
    }
}

impl ReadTxn {
    /// Every key with at least one job in `queue`, ascending.
    pub fn due_keys(&self, queue: Queue) -> Result<Vec<u128>, StoreError> {
        let mut keys = Vec::new();
        self.first_job_of_each_key(queue, |key, _| keys.push(key))?;
        Ok(keys)
    }

    /// Calls `visit` with each key of `queue` and its earliest due time,
    /// ascending by key. One seek per key, not one step per job: a key with
    /// a million jobs costs the same as a key with one.
    fn first_job_of_each_key(
        &self,
        queue: Queue,
        mut visit: impl FnMut(u128, u64),
    ) -> Result<(), StoreError> {
        let table = self.txn.open_table(DUE)?;
        let code = queue.code();
        let mut from = 0u128;
        loop {
            let next = table
                .range((code, from, 0, 0)..=(code, u128::MAX, u64::MAX, u64::MAX))?
                .next();
            let Some(entry) = next else { break };
            let (_, key, due_ms, _) = entry?.0.value();
            visit(key, due_ms);
            match key.checked_add(1) {
                Some(after) => from = after,
                None => break,
            }
        }
        Ok(())
    }

    /// How many jobs `queue` holds, counted up to `cap` (every counted job
    /// is a step), and the earliest time one is due (one seek per key).
    pub fn due_summary(&self, queue: Queue, cap: u64) -> Result<DueSummary, StoreError> {
        let table = self.txn.open_table(DUE)?;
        let code = queue.code();
        let jobs = count_up_to(
            table.range((code, 0u128, 0u64, 0u64)..=(code, u128::MAX, u64::MAX, u64::MAX))?,
            cap,
        )?;
        let mut earliest_due_ms: Option<i64> = None;
        self.first_job_of_each_key(queue, |_, due_ms| {
            let due_ms = i64::try_from(due_ms).unwrap_or(i64::MAX);
            earliest_due_ms = Some(earliest_due_ms.map_or(due_ms, |e| e.min(due_ms)));
        })?;
        Ok(DueSummary {
            jobs,
            earliest_due_ms,
        })
    }

    /// Up to `limit` jobs of `key` in `queue` after `after` (from the start
    /// when `None`), in due order.
    pub fn due_after(
        &self,
        queue: Queue,
        key: u128,
        after: Option<DueAt>,
        limit: usize,
    ) -> Result<Vec<DueAt>, StoreError> {
        let table = self.txn.open_table(DUE)?;
        let code = queue.code();
        let start = match after {
            None => (code, key, 0, 0),
            Some((due_ms, id)) => match id.checked_add(1) {
                Some(next) => (code, key, due_ms.max(0) as u64, next),
                None => (code, key, (due_ms.max(0) as u64).saturating_add(1), 0),
            },
        };
        let mut out = Vec::new();
        for entry in table
            .range(start..=(code, key, u64::MAX, u64::MAX))?
            .take(limit)
        {
            let (_, _, due_ms, id) = entry?.0.value();
            out.push((i64::try_from(due_ms).unwrap_or(i64::MAX), id));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_are_stable() {
        // Part of the file format: this value must never change.
        assert_ne!(stream_key("transactional"), stream_key("marketing"));
        assert_eq!(
            format!("{:032x}", stream_key("marketing")),
            GOLDEN_MARKETING
        );
    }

    #[test]
    fn a_summary_counts_one_queue_and_finds_its_earliest_job_across_keys() {
        use crate::store::writer::Listeners;
        use crate::store::{Store, Writer};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.redb")).unwrap();
        let empty = store.read().unwrap().due_summary(Queue::Mail, 10).unwrap();
        assert_eq!(
            empty,
            DueSummary {
                jobs: Bounded {
                    count: 0,
                    capped: false
                },
                earliest_due_ms: None
            }
        );
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        writer
            .write_blocking(|txn| {
                txn.reschedule(Queue::Webhooks, 7, 1, None, Some(5_000))?;
                txn.reschedule(Queue::Webhooks, 3, 2, None, Some(9_000))?;
                txn.reschedule(Queue::Webhooks, 3, 3, None, Some(4_000))?;
                txn.reschedule(Queue::Webhooks, 3, 4, None, Some(1_000))?;
                txn.reschedule(Queue::Webhooks, 3, 4, Some(1_000), None)?;
                txn.reschedule(Queue::Mail, 1, 5, None, Some(100))
            })
            .unwrap();
        thread.stop();
        let txn = store.read().unwrap();
        assert_eq!(
            txn.due_summary(Queue::Webhooks, 10).unwrap(),
            DueSummary {
                jobs: Bounded {
                    count: 3,
                    capped: false
                },
                earliest_due_ms: Some(4_000)
            }
        );
        assert_eq!(txn.due_summary(Queue::Mail, 10).unwrap().jobs.count, 1);
        assert_eq!(
            txn.due_summary(Queue::Webhooks, 2).unwrap().jobs,
            Bounded {
                count: 2,
                capped: true
            }
        );
    }

    const GOLDEN_MARKETING: &str = "a681ac6a8374a7ee4747a3cbd3aae9d3";
}
