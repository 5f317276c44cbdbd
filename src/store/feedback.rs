//! Feedback tables: each ESP event once (by the provider's id), the
//! unmatched ones and each message's, and the single-use tokens a
//! provider's signature covers.

use redb::ReadableTable;

use super::codec::encode;
use super::records::FeedbackRecord;
use super::retention::Sweep;
use super::tables::{
    FEEDBACK, FEEDBACK_BY_EMAIL, FEEDBACK_SEEN, FEEDBACK_UNMATCHED, REPLAY_TOKENS,
};
use super::{ReadTxn, StoreError, WriteTxn};

#[derive(Debug, Default, Clone)]
pub struct FeedbackFilter {
    /// `Some(false)`: only events no message matched, read through their index.
    pub matched: Option<bool>,
    pub provider: Option<String>,
    pub kind: Option<String>,
    pub address: Option<String>,
    /// Only this tenant's (matched) events.
    pub tenant: Option<String>,
}

impl FeedbackFilter {
    fn wants(&self, record: &FeedbackRecord) -> bool {
        self.matched.is_none_or(|m| m == record.email_id.is_some())
            && self
                .provider
                .as_deref()
                .is_none_or(|p| p == record.provider)
            && self.kind.as_deref().is_none_or(|k| k == record.kind)
            && self.address.as_deref().is_none_or(|a| a == record.address)
            && (self.tenant.is_none() || self.tenant == record.tenant)
    }
}

pub struct FeedbackPage {
    pub feedback: Vec<(u64, FeedbackRecord)>,
    /// Where the next page starts, when there may be one.
    pub next_after: Option<u64>,
}

impl WriteTxn<'_> {
    /// The feedback id an event of `provider` with `event_id` was stored
    /// as, if it was.
    pub(crate) fn feedback_seen(
        &self,
        provider: &str,
        event_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        let table = self.txn.open_table(FEEDBACK_SEEN)?;
        let found = table.get((provider, event_id))?;
        Ok(found.map(|v| v.value()))
    }

    /// Stores `record` with its dedupe row and indexes; returns its id.
    pub(crate) fn add_feedback(&mut self, record: &FeedbackRecord) -> Result<u64, StoreError> {
        let mut table = self.txn.open_table(FEEDBACK)?;
        let id = super::last_u64_key(&table)?.map_or(1, |id| id + 1);
        table.insert(id, encode(record).as_slice())?;
        self.txn
            .open_table(FEEDBACK_SEEN)?
            .insert((record.provider.as_str(), record.event_id.as_str()), id)?;
        match record.email_id {
            Some(email) => {
                self.txn
                    .open_table(FEEDBACK_BY_EMAIL)?
                    .insert((email, id), ())?;
            }
            None => {
                self.txn.open_table(FEEDBACK_UNMATCHED)?.insert(id, ())?;
            }
        }
        Ok(id)
    }

    /// Spends a single-use token of `provider`: false when it was spent
    /// before.
    pub(crate) fn spend_replay_token(
        &mut self,
        provider: &str,
        token: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut table = self.txn.open_table(REPLAY_TOKENS)?;
        let fresh = table.insert((provider, token), now_ms)?.is_none();
        Ok(fresh)
    }

    /// Forgets tokens spent before `before_ms`, at most `limit` of them;
    /// returns how many went. The table holds only the last minutes' tokens.
    pub(crate) fn prune_replay_tokens(
        &mut self,
        before_ms: i64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut table = self.txn.open_table(REPLAY_TOKENS)?;
        let mut stale = Vec::new();
        for row in table.iter()? {
            let (key, spent) = row?;
            if spent.value() < before_ms {
                let (provider, token) = key.value();
                stale.push((provider.to_owned(), token.to_owned()));
                if stale.len() == limit {
                    break;
                }
            }
        }
        for (provider, token) in &stale {
            table.remove((provider.as_str(), token.as_str()))?;
        }
        Ok(stale.len())
    }
}

impl WriteTxn<'_> {
    /// Deletes feedback received before `before_ms` with its dedupe and
    /// index rows, examining at most `budget` after id `after`. The newest
    /// record stays whatever its age: ids resume from it.
    pub(crate) fn sweep_feedback(
        &mut self,
        before_ms: i64,
        after: u64,
        budget: usize,
    ) -> Result<Sweep, StoreError> {
        let mut records = self.txn.open_table(FEEDBACK)?;
        let newest = super::last_u64_key(&records)?.unwrap_or(0);
        let mut old: Vec<(u64, FeedbackRecord)> = Vec::new();
        let mut examined = 0;
        let mut reached_young = false;
        for row in records.range(after.saturating_add(1)..newest)?.take(budget) {
            let (id, bytes) = row?;
            examined += 1;
            let record: FeedbackRecord = super::codec::decode(bytes.value())?;
            if record.received_at_ms >= before_ms {
                reached_young = true;
                break;
            }
            old.push((id.value(), record));
        }
        let mut seen = self.txn.open_table(FEEDBACK_SEEN)?;
        let mut by_email = self.txn.open_table(FEEDBACK_BY_EMAIL)?;
        let mut unmatched = self.txn.open_table(FEEDBACK_UNMATCHED)?;
        for (id, record) in &old {
            records.remove(*id)?;
            seen.remove((record.provider.as_str(), record.event_id.as_str()))?;
            match record.email_id {
                Some(email) => by_email.remove((email, *id))?,
                None => unmatched.remove(*id)?,
            };
        }
        Ok(Sweep {
            removed: old.len(),
            next_after: (!reached_young && examined == budget)
                .then(|| old.last().map(|(id, _)| *id))
                .flatten(),
        })
    }
}

impl ReadTxn {
    /// Feedback after id `after` matching `filter`, oldest first.
    pub fn scan_feedback(
        &self,
        filter: &FeedbackFilter,
        after: u64,
        limit: usize,
    ) -> Result<FeedbackPage, StoreError> {
        let records = self.txn.open_table(FEEDBACK)?;
        let from = after.saturating_add(1);
        let ids: Box<dyn Iterator<Item = Result<u64, StoreError>>> =
            if filter.matched == Some(false) {
                let index = self.txn.open_table(FEEDBACK_UNMATCHED)?;
                Box::new(
                    index
                        .range(from..)?
                        .map(|r| r.map(|(k, _)| k.value()).map_err(StoreError::from)),
                )
            } else {
                Box::new(
                    records
                        .range(from..)?
                        .map(|r| r.map(|(k, _)| k.value()).map_err(StoreError::from)),
                )
            };
        let (feedback, next_after) =
            super::page_by_ids(ids, &records, after, limit, |r| filter.wants(r))?;
        Ok(FeedbackPage {
            feedback,
            next_after,
        })
    }

    /// Message `email`'s feedback, oldest first (at most `limit`).
    pub fn email_feedback(
        &self,
        email: u64,
        limit: usize,
    ) -> Result<Vec<FeedbackRecord>, StoreError> {
        let index = self.txn.open_table(FEEDBACK_BY_EMAIL)?;
        let records = self.txn.open_table(FEEDBACK)?;
        let mut out = Vec::new();
        for row in index.range((email, 0)..=(email, u64::MAX))?.take(limit) {
            let id = row?.0.value().1;
            if let Some(record) = super::get_record(&records, id)? {
                out.push(record);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::writer::Listeners;
    use crate::store::{Store, Writer};

    fn record(event_id: &str, email_id: Option<u64>, received_at_ms: i64) -> FeedbackRecord {
        FeedbackRecord {
            provider: "postmark".into(),
            event_id: event_id.into(),
            kind: "complaint".into(),
            address: "bob@example.com".into(),
            email_id,
            stream: None,
            tenant: None,
            occurred_at_ms: None,
            received_at_ms,
            detail: String::new(),
            raw: "{}".into(),
        }
    }

    #[test]
    fn a_sweep_forgets_old_feedback_with_its_dedupe_rows_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("h.redb")).unwrap();
        let (writer, thread) = Writer::start(&store, 16, 16, Listeners::default()).unwrap();
        writer
            .write_blocking(|txn| {
                txn.add_feedback(&record("a", Some(7), 10))?;
                txn.add_feedback(&record("b", None, 20))?;
                txn.add_feedback(&record("c", None, 30))?;
                txn.add_feedback(&record("d", None, 40))
            })
            .unwrap();
        let sweep = writer
            .write_blocking(|txn| txn.sweep_feedback(35, 0, 1000))
            .unwrap();
        assert_eq!(sweep.removed, 3);
        assert_eq!(sweep.next_after, None);
        let seen = writer
            .write_blocking(|txn| {
                ["a", "b", "c", "d"]
                    .iter()
                    .map(|id| txn.feedback_seen("postmark", id).map(|s| s.is_some()))
                    .collect::<Result<Vec<bool>, _>>()
            })
            .unwrap();
        assert_eq!(seen, [false, false, false, true]);
        let read = store.read().unwrap();
        assert!(read.email_feedback(7, 10).unwrap().is_empty());
        let unmatched = FeedbackFilter {
            matched: Some(false),
            ..Default::default()
        };
        let left: Vec<u64> = read
            .scan_feedback(&unmatched, 0, 10)
            .unwrap()
            .feedback
            .iter()
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(left, [4]);
        drop(read);
        // The newest stays whatever its age: ids go on from it.
        let sweep = writer
            .write_blocking(|txn| txn.sweep_feedback(i64::MAX, 0, 1000))
            .unwrap();
        assert_eq!(sweep.removed, 0);
        thread.stop();
    }
}
