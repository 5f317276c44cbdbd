//! What the reputation guard reads and keeps per mail stream: its state
//! (paused, warning, warm-up), 5-minute tallies for the 24-hour window,
//! and its last 1,000 sends with what became of each.

use redb::ReadableTable;

use super::codec::encode;
use super::records::StreamStateRecord;
use super::tables::{STREAM_SENDS, STREAM_STATES, STREAM_TALLY};
use super::{ReadTxn, StoreError, WriteTxn};

/// The width of a tally bucket.
pub const TALLY_BUCKET_MS: i64 = 5 * 60 * 1000;
/// The rolling window of `window_24h`.
pub const DAY_MS: i64 = 24 * 3600 * 1000;
/// Sends kept per stream for `window_last_1000`.
pub const RECENT_SENDS: u32 = 1000;

/// What became of a send, as `stream_sends` stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Sent = 0,
    HardBounce = 1,
    Complaint = 2,
}

/// Counts over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub sent: u64,
    pub hard_bounces: u64,
    pub complaints: u64,
}

impl Window {
    pub fn bounce_rate(&self) -> f64 {
        rate(self.hard_bounces, self.sent)
    }

    pub fn complaint_rate(&self) -> f64 {
        rate(self.complaints, self.sent)
    }
}

fn rate(count: u64, sent: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        count as f64 / sent as f64
    }
}

/// Both windows the guard judges a stream by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Windows {
    pub last_24h: Window,
    pub last_1000: Window,
}

fn windows_in(
    tally: &impl ReadableTable<(&'static str, i64), (u32, u32, u32)>,
    sends: &impl ReadableTable<(&'static str, u64), u8>,
    stream: &str,
    now_ms: i64,
) -> Result<Windows, StoreError> {
    let mut last_24h = Window::default();
    let since = now_ms - DAY_MS;
    for row in
        tally.range((stream, since - since.rem_euclid(TALLY_BUCKET_MS))..=(stream, i64::MAX))?
    {
        let (sent, hard, complaints) = row?.1.value();
        last_24h.sent += u64::from(sent);
        last_24h.hard_bounces += u64::from(hard);
        last_24h.complaints += u64::from(complaints);
    }
    let mut last_1000 = Window::default();
    for row in sends
        .range((stream, 0)..=(stream, u64::MAX))?
        .rev()
        .take(RECENT_SENDS as usize)
    {
        last_1000.sent += 1;
        match row?.1.value() {
            1 => last_1000.hard_bounces += 1,
            2 => last_1000.complaints += 1,
            _ => {}
        }
    }
    Ok(Windows {
        last_24h,
        last_1000,
    })
}

impl WriteTxn<'_> {
    pub(crate) fn stream_state(&self, stream: &str) -> Result<StreamStateRecord, StoreError> {
        let found = super::get_record(&self.txn.open_table(STREAM_STATES)?, stream)?;
        Ok(found.unwrap_or_default())
    }

    pub(crate) fn put_stream_state(
        &mut self,
        stream: &str,
        state: &StreamStateRecord,
    ) -> Result<(), StoreError> {
        self.txn
            .open_table(STREAM_STATES)?
            .insert(stream, encode(state).as_slice())?;
        Ok(())
    }

    /// Adds to the 24-hour window's bucket holding `at_ms`.
    pub(crate) fn tally_stream(
        &mut self,
        stream: &str,
        at_ms: i64,
        outcome: SendOutcome,
    ) -> Result<(), StoreError> {
        let bucket = at_ms - at_ms.rem_euclid(TALLY_BUCKET_MS);
        let mut table = self.txn.open_table(STREAM_TALLY)?;
        let (mut sent, mut hard, mut complaints) = table
            .get((stream, bucket))?
            .map_or((0, 0, 0), |v| v.value());
        match outcome {
            SendOutcome::Sent => sent = sent.saturating_add(1),
            SendOutcome::HardBounce => hard = hard.saturating_add(1),
            SendOutcome::Complaint => complaints = complaints.saturating_add(1),
        }
        table.insert((stream, bucket), (sent, hard, complaints))?;
        Ok(())
    }

    /// Adds message `id` to the stream's last sends. Rows beyond the
    /// newest 1,000 are read by nothing and go in the retention pass
    /// (`prune_stream_sends`), not at every send.
    pub(crate) fn add_stream_send(&mut self, stream: &str, id: u64) -> Result<(), StoreError> {
        self.txn
            .open_table(STREAM_SENDS)?
            .insert((stream, id), SendOutcome::Sent as u8)?;
        Ok(())
    }

    /// Deletes up to `limit` rows older than each stream's newest 1,000;
    /// returns how many went. Every stream that ever sent has a state row.
    pub(crate) fn prune_stream_sends(&mut self, limit: usize) -> Result<usize, StoreError> {
        let streams: Vec<String> = {
            let states = self.txn.open_table(STREAM_STATES)?;
            let mut names = Vec::new();
            for row in states.iter()? {
                names.push(row?.0.value().to_owned());
            }
            names
        };
        let mut removed = 0;
        for stream in streams {
            removed += self.prune_sends_of(&stream, limit - removed)?;
            if removed == limit {
                break;
            }
        }
        Ok(removed)
    }

    fn prune_sends_of(&mut self, stream: &str, limit: usize) -> Result<usize, StoreError> {
        let mut table = self.txn.open_table(STREAM_SENDS)?;
        let Some(boundary) = table
            .range((stream, 0)..=(stream, u64::MAX))?
            .rev()
            .nth(RECENT_SENDS as usize)
            .transpose()?
            .map(|(k, _)| k.value().1)
        else {
            return Ok(0);
        };
        let mut old = Vec::new();
        for row in table.range((stream, 0)..=(stream, boundary))?.take(limit) {
            old.push(row?.0.value().1);
        }
        for id in &old {
            table.remove((stream, *id))?;
        }
        Ok(old.len())
    }

    /// Records what became of message `id`, if it is among the stream's
    /// last sends and nothing worse was recorded for it.
    pub(crate) fn mark_stream_send(
        &mut self,
        stream: &str,
        id: u64,
        outcome: SendOutcome,
    ) -> Result<(), StoreError> {
        let mut table = self.txn.open_table(STREAM_SENDS)?;
        let current = table.get((stream, id))?.map(|v| v.value());
        if current.is_some_and(|c| c < outcome as u8) {
            table.insert((stream, id), outcome as u8)?;
        }
        Ok(())
    }

    pub(crate) fn stream_windows(&self, stream: &str, now_ms: i64) -> Result<Windows, StoreError> {
        let tally = self.txn.open_table(STREAM_TALLY)?;
        let sends = self.txn.open_table(STREAM_SENDS)?;
        windows_in(&tally, &sends, stream, now_ms)
    }

    /// Drops tally buckets older than `before_ms`, at most `limit`.
    pub(crate) fn prune_stream_tally(
        &mut self,
        before_ms: i64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut table = self.txn.open_table(STREAM_TALLY)?;
        let mut stale = Vec::new();
        for row in table.iter()? {
            let row = row?;
            let (stream, bucket) = row.0.value();
            if bucket < before_ms {
                stale.push((stream.to_owned(), bucket));
                if stale.len() == limit {
                    break;
                }
            }
        }
        for (stream, bucket) in &stale {
            table.remove((stream.as_str(), *bucket))?;
        }
        Ok(stale.len())
    }
}

/// Messages `stream` sent since `since_ms`, by its tally.
fn sent_since(
    tally: &impl ReadableTable<(&'static str, i64), (u32, u32, u32)>,
    stream: &str,
    since_ms: i64,
) -> Result<u64, StoreError> {
    let from = since_ms - since_ms.rem_euclid(TALLY_BUCKET_MS);
    let mut sent = 0;
    for row in tally.range((stream, from)..=(stream, i64::MAX))? {
        sent += u64::from(row?.1.value().0);
    }
    Ok(sent)
}

impl ReadTxn {
    /// Messages `stream` sent since `since_ms` (a day's start, for warm-up).
    pub fn stream_sent_since(&self, stream: &str, since_ms: i64) -> Result<u64, StoreError> {
        sent_since(&self.txn.open_table(STREAM_TALLY)?, stream, since_ms)
    }

    pub fn stream_state(&self, stream: &str) -> Result<StreamStateRecord, StoreError> {
        let found = super::get_record(&self.txn.open_table(STREAM_STATES)?, stream)?;
        Ok(found.unwrap_or_default())
    }

    pub fn stream_windows(&self, stream: &str, now_ms: i64) -> Result<Windows, StoreError> {
        let tally = self.txn.open_table(STREAM_TALLY)?;
        let sends = self.txn.open_table(STREAM_SENDS)?;
        windows_in(&tally, &sends, stream, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::writer::Listeners;
    use crate::store::{Store, Writer};

    #[test]
    fn sends_beyond_the_last_thousand_are_pruned_and_never_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.redb")).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        writer
            .write_blocking(|txn| {
                txn.put_stream_state("news", &StreamStateRecord::default())?;
                for id in 1..=1005 {
                    txn.add_stream_send("news", id)?;
                }
                txn.mark_stream_send("news", 3, SendOutcome::Complaint)?;
                txn.mark_stream_send("news", 1005, SendOutcome::HardBounce)
            })
            .unwrap();
        let windows = store.read().unwrap().stream_windows("news", 0).unwrap();
        assert_eq!(windows.last_1000.sent, 1000);
        assert_eq!(
            windows.last_1000.complaints, 0,
            "message 3 is out of the window"
        );
        assert_eq!(windows.last_1000.hard_bounces, 1);
        let removed = writer
            .write_blocking(|txn| txn.prune_stream_sends(2))
            .unwrap();
        assert_eq!(removed, 2);
        let removed = writer
            .write_blocking(|txn| txn.prune_stream_sends(1000))
            .unwrap();
        assert_eq!(removed, 3);
        assert_eq!(
            store.read().unwrap().stream_windows("news", 0).unwrap(),
            windows
        );
        thread.stop();
    }
}
