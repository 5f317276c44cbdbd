//! Mail tables: messages, idempotency keys, the suppression list and
//! soft-bounce counts. A message's schedule row lives in `due`.

use redb::ReadableTable;

use super::codec::{decode, encode};
use super::due::{stream_key, Queue};
use super::records::{EmailRecord, EmailStatus, SuppressionReason, SuppressionRecord};
use super::tables::{
    EMAILS, EMAILS_BY_STATUS, EMAILS_BY_STREAM_STATUS, EMAILS_BY_TO, EMAIL_KEYS, SOFT_BOUNCES,
    SUPPRESSIONS,
};
use super::{ReadTxn, StoreError, WriteTxn, EXAMINE_BUDGET};

/// A message status's byte in index keys: part of the file format.
pub(crate) fn email_status_code(status: EmailStatus) -> u8 {
    match status {
        EmailStatus::Queued => 1,
        EmailStatus::Deferred => 2,
        EmailStatus::Sent => 3,
        EmailStatus::Failed => 4,
        EmailStatus::Bounced => 5,
    }
}

const EMAIL_STATUSES: [EmailStatus; 5] = [
    EmailStatus::Queued,
    EmailStatus::Deferred,
    EmailStatus::Sent,
    EmailStatus::Failed,
    EmailStatus::Bounced,
];

/// Moves message `id` of `stream` from status `from` (`None`: new) to `to`
/// in the status indexes.
pub(super) fn index_email_status(
    txn: &redb::WriteTransaction,
    stream: &str,
    id: u64,
    from: Option<EmailStatus>,
    to: EmailStatus,
) -> Result<(), StoreError> {
    let mut by_status = txn.open_table(EMAILS_BY_STATUS)?;
    let mut by_stream_status = txn.open_table(EMAILS_BY_STREAM_STATUS)?;
    if let Some(from) = from {
        by_status.remove((email_status_code(from), id))?;
        by_stream_status.remove((stream, email_status_code(from), id))?;
    }
    by_status.insert((email_status_code(to), id), ())?;
    by_stream_status.insert((stream, email_status_code(to), id), ())?;
    Ok(())
}

/// The stream column of a suppression covering every stream.
pub const ALL_STREAMS: &str = "";

impl WriteTxn<'_> {
    pub(crate) fn next_email_id(&self) -> Result<u64, StoreError> {
        let table = self.txn.open_table(EMAILS)?;
        Ok(super::last_u64_key(&table)?.map_or(1, |id| id + 1))
    }

    pub(crate) fn email(&self, id: u64) -> Result<Option<EmailRecord>, StoreError> {
        super::get_record(&self.txn.open_table(EMAILS)?, id)
    }

    /// Stores `record` as message `id`, moving its schedule row from
    /// `previous_due` to `record.next_attempt_ms`.
    pub(crate) fn put_email(
        &mut self,
        id: u64,
        record: &EmailRecord,
        previous_due: Option<i64>,
        is_new: bool,
    ) -> Result<(), StoreError> {
        self.reschedule(
            Queue::Mail,
            stream_key(&record.stream),
            id,
            previous_due,
            record.next_attempt_ms,
        )?;
        if is_new {
            self.txn
                .open_table(EMAILS_BY_TO)?
                .insert((record.to.as_str(), id), ())?;
        }
        let previous: Option<EmailStatus> = match self
            .txn
            .open_table(EMAILS)?
            .insert(id, encode(record).as_slice())?
        {
            Some(old) => Some(decode::<EmailRecord>(old.value())?.status),
            None => None,
        };
        if previous != Some(record.status) {
            index_email_status(self.txn, &record.stream, id, previous, record.status)?;
        }
        Ok(())
    }

    pub(crate) fn email_key(&self, key: &str) -> Result<Option<(u64, u32, u64)>, StoreError> {
        let table = self.txn.open_table(EMAIL_KEYS)?;
        let found = table.get(key)?;
        Ok(found.map(|v| v.value()))
    }

    pub(crate) fn put_email_key(
        &mut self,
        key: &str,
        first_id: u64,
        count: u32,
        fingerprint: u64,
    ) -> Result<(), StoreError> {
        self.txn
            .open_table(EMAIL_KEYS)?
            .insert(key, (first_id, count, fingerprint))?;
        Ok(())
    }

    /// The entry that forbids sending `stream` mail to `address`, if any.
    pub(crate) fn suppression_for(
        &self,
        address: &str,
        stream: &str,
    ) -> Result<Option<SuppressionRecord>, StoreError> {
        let table = self.txn.open_table(SUPPRESSIONS)?;
        suppression_in(&table, address, stream)
    }

    /// Adds or replaces an entry; false when an identical reason was there.
    pub(crate) fn put_suppression(
        &mut self,
        address: &str,
        stream: &str,
        record: &SuppressionRecord,
    ) -> Result<bool, StoreError> {
        let mut table = self.txn.open_table(SUPPRESSIONS)?;
        let previous = table
            .insert((address, stream), encode(record).as_slice())?
            .map(|old| decode::<SuppressionRecord>(old.value()))
            .transpose()?;
        Ok(previous.is_none_or(|p| p.reason != record.reason))
    }

    pub(crate) fn stored_suppression(
        &self,
        address: &str,
        stream: &str,
    ) -> Result<Option<SuppressionRecord>, StoreError> {
        super::get_record(&self.txn.open_table(SUPPRESSIONS)?, (address, stream))
    }

    pub(crate) fn delete_suppression(
        &mut self,
        address: &str,
        stream: &str,
    ) -> Result<bool, StoreError> {
        let mut table = self.txn.open_table(SUPPRESSIONS)?;
        let removed = table.remove((address, stream))?.is_some();
        Ok(removed)
    }

    pub(crate) fn soft_bounces(&self, address: &str) -> Result<u32, StoreError> {
        let table = self.txn.open_table(SOFT_BOUNCES)?;
        let found = table.get(address)?;
        Ok(found.map_or(0, |v| v.value()))
    }

    pub(crate) fn set_soft_bounces(&mut self, address: &str, count: u32) -> Result<(), StoreError> {
        let mut table = self.txn.open_table(SOFT_BOUNCES)?;
        if count == 0 {
            table.remove(address)?;
        } else {
            table.insert(address, count)?;
        }
        Ok(())
    }
}

fn suppression_in(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    address: &str,
    stream: &str,
) -> Result<Option<SuppressionRecord>, StoreError> {
    for column in [ALL_STREAMS, stream] {
        if let Some(bytes) = table.get((address, column))? {
            return Ok(Some(decode(bytes.value())?));
        }
    }
    Ok(None)
}

#[derive(Debug, Default, Clone)]
pub struct EmailFilter {
    pub to: Option<String>,
    pub status: Option<EmailStatus>,
    pub stream: Option<String>,
}

pub struct EmailPage {
    pub emails: Vec<(u64, EmailRecord)>,
    /// Where the next page starts, when there may be one.
    pub next_after: Option<u64>,
}

#[derive(Debug, Default, Clone)]
pub struct SuppressionFilter {
    pub stream: Option<String>,
    pub reason: Option<SuppressionReason>,
}

pub struct SuppressionPage {
    /// (address, stream or "" for all, entry)
    pub entries: Vec<(String, String, SuppressionRecord)>,
    /// The last (address, stream) examined, when there may be more.
    pub next_after: Option<(String, String)>,
}

impl ReadTxn {
    pub fn email(&self, id: u64) -> Result<Option<EmailRecord>, StoreError> {
        super::get_record(&self.txn.open_table(EMAILS)?, id)
    }

    pub fn suppression_for(
        &self,
        address: &str,
        stream: &str,
    ) -> Result<Option<SuppressionRecord>, StoreError> {
        let table = self.txn.open_table(SUPPRESSIONS)?;
        suppression_in(&table, address, stream)
    }

    /// Messages after id `after` matching `filter`, oldest first. The
    /// recipient's index drives a `to` filter (a recipient has few
    /// messages), the status indexes drive `status` and `stream`, so a page
    /// is full unless nothing more matches.
    pub fn scan_emails(
        &self,
        filter: &EmailFilter,
        after: u64,
        limit: usize,
    ) -> Result<EmailPage, StoreError> {
        let emails = self.txn.open_table(EMAILS)?;
        let from = after.saturating_add(1);
        let ids: Box<dyn Iterator<Item = Result<u64, StoreError>>> =
            match (&filter.to, filter.status, &filter.stream) {
                (Some(to), _, _) => {
                    let index = self.txn.open_table(EMAILS_BY_TO)?;
                    let rows: Vec<_> = index
                        .range((to.as_str(), from)..=(to.as_str(), u64::MAX))?
                        .take(limit + EXAMINE_BUDGET + 1)
                        .map(|r| r.map(|(k, _)| k.value().1).map_err(StoreError::from))
                        .collect();
                    Box::new(rows.into_iter())
                }
                (None, Some(status), Some(stream)) => {
                    let code = email_status_code(status);
                    let index = self.txn.open_table(EMAILS_BY_STREAM_STATUS)?;
                    let rows: Vec<_> = index
                        .range((stream.as_str(), code, from)..=(stream.as_str(), code, u64::MAX))?
                        .take(limit + 1)
                        .map(|r| r.map(|(k, _)| k.value().2).map_err(StoreError::from))
                        .collect();
                    Box::new(rows.into_iter())
                }
                (None, Some(status), None) => {
                    let code = email_status_code(status);
                    let index = self.txn.open_table(EMAILS_BY_STATUS)?;
                    Box::new(
                        index
                            .range((code, from)..=(code, u64::MAX))?
                            .map(|r| r.map(|(k, _)| k.value().1).map_err(StoreError::from)),
                    )
                }
                (None, None, Some(stream)) => {
                    // One stream in every status: the first `limit + 1` ids
                    // of each status, merged, are the first of the stream.
                    let index = self.txn.open_table(EMAILS_BY_STREAM_STATUS)?;
                    let mut ids = Vec::new();
                    for status in EMAIL_STATUSES {
                        let code = email_status_code(status);
                        for row in index
                            .range(
                                (stream.as_str(), code, from)..=(stream.as_str(), code, u64::MAX),
                            )?
                            .take(limit + 1)
                        {
                            ids.push(row?.0.value().2);
                        }
                    }
                    ids.sort_unstable();
                    ids.truncate(limit + 1);
                    Box::new(ids.into_iter().map(Ok))
                }
                (None, None, None) => Box::new(
                    emails
                        .range(from..)?
                        .map(|r| r.map(|(k, _)| k.value()).map_err(StoreError::from)),
                ),
            };
        let (emails, next_after) =
            super::page_by_ids(ids, &emails, after, limit, |record: &EmailRecord| {
                filter.status.is_none_or(|s| s == record.status)
                    && filter.stream.as_deref().is_none_or(|s| s == record.stream)
            })?;
        Ok(EmailPage { emails, next_after })
    }

    /// Suppression entries after (address, stream) `after`, in address order.
    pub fn scan_suppressions(
        &self,
        filter: &SuppressionFilter,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<SuppressionPage, StoreError> {
        let table = self.txn.open_table(SUPPRESSIONS)?;
        let rows = match after {
            Some(key) => table.range(key..)?,
            None => table.range::<(&str, &str)>(..)?,
        };
        let mut entries = Vec::new();
        let mut last: Option<(String, String)> = None;
        let mut more = false;
        for (examined, row) in rows.enumerate() {
            let (key, value) = row?;
            let (address, stream) = key.value();
            if Some((address, stream)) == after {
                continue;
            }
            if examined == limit + EXAMINE_BUDGET {
                more = true;
                break;
            }
            let record: SuppressionRecord = decode(value.value())?;
            let wanted = filter.reason.is_none_or(|r| r == record.reason)
                && filter.stream.as_deref().is_none_or(|s| s == stream);
            if wanted && entries.len() == limit {
                more = true;
                break;
            }
            last = Some((address.to_owned(), stream.to_owned()));
            if wanted {
                entries.push((address.to_owned(), stream.to_owned(), record));
            }
        }
        Ok(SuppressionPage {
            entries,
            next_after: if more { last } else { None },
        })
    }
}
