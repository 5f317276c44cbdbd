//! Mail tables: messages, their durable send schedule, idempotency keys,
//! the suppression list and soft-bounce counts.

use redb::{ReadableTable, TableDefinition};

use super::codec::{
    decode, encode, EmailRecord, EmailStatus, SuppressionReason, SuppressionRecord,
};
use super::{ReadTxn, StoreError, WriteTxn, EXAMINE_BUDGET};

/// message id → encoded `EmailRecord`. Ids are dense and start at 1.
pub(crate) const EMAILS: TableDefinition<u64, &[u8]> = TableDefinition::new("emails");
/// (due Unix ms, message id) → stream: every message still to be attempted.
/// The row stays while an attempt is in flight, so a crash re-sends rather
/// than loses.
pub(crate) const EMAILS_DUE: TableDefinition<(u64, u64), &str> = TableDefinition::new("emails_due");
/// (recipient, message id) → (): a recipient's messages without a scan.
pub(crate) const EMAILS_BY_TO: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("emails_by_to");
/// idempotency key → (first message id, message count, request fingerprint).
/// One request's messages get consecutive ids.
pub(crate) const EMAIL_KEYS: TableDefinition<&str, (u64, u32, u64)> =
    TableDefinition::new("email_keys");
/// (address, stream or "" for every stream) → encoded `SuppressionRecord`.
pub(crate) const SUPPRESSIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("suppressions");
/// address → temporary failures since its last accepted message.
pub(crate) const SOFT_BOUNCES: TableDefinition<&str, u32> = TableDefinition::new("soft_bounces");

pub(crate) fn create_tables(txn: &redb::WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(EMAILS)?;
    txn.open_table(EMAILS_DUE)?;
    txn.open_table(EMAILS_BY_TO)?;
    txn.open_table(EMAIL_KEYS)?;
    txn.open_table(SUPPRESSIONS)?;
    txn.open_table(SOFT_BOUNCES)?;
    Ok(())
}

/// A message the mail scheduler should attempt at `due_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEmail {
    pub due_ms: i64,
    pub id: u64,
    pub stream: String,
}

fn due_key(due_ms: i64, id: u64) -> (u64, u64) {
    (due_ms.max(0) as u64, id)
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
    /// `previous_due` to `record.next_attempt_ms`; returns the new row.
    pub(crate) fn put_email(
        &mut self,
        id: u64,
        record: &EmailRecord,
        previous_due: Option<i64>,
        is_new: bool,
    ) -> Result<Option<DueEmail>, StoreError> {
        let mut due = self.txn.open_table(EMAILS_DUE)?;
        if let Some(previous) = previous_due {
            due.remove(due_key(previous, id))?;
        }
        let scheduled = record.next_attempt_ms.map(|due_ms| DueEmail {
            due_ms,
            id,
            stream: record.stream.clone(),
        });
        if let Some(s) = &scheduled {
            due.insert(due_key(s.due_ms, id), s.stream.as_str())?;
        }
        if is_new {
            self.txn
                .open_table(EMAILS_BY_TO)?
                .insert((record.to.as_str(), id), ())?;
        }
        self.txn
            .open_table(EMAILS)?
            .insert(id, encode(record).as_slice())?;
        Ok(scheduled)
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

    /// Every message still to be attempted, in due order.
    pub fn due_emails(&self) -> Result<Vec<DueEmail>, StoreError> {
        self.due_emails_until(i64::MAX, usize::MAX)
    }

    /// Up to `limit` messages due at or before `until_ms`, in due order.
    pub fn due_emails_until(
        &self,
        until_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueEmail>, StoreError> {
        let table = self.txn.open_table(EMAILS_DUE)?;
        let mut out = Vec::new();
        for row in table
            .range(..=(until_ms.max(0) as u64, u64::MAX))?
            .take(limit)
        {
            let (key, stream) = row?;
            let (due, id) = key.value();
            out.push(DueEmail {
                due_ms: due as i64,
                id,
                stream: stream.value().to_owned(),
            });
        }
        Ok(out)
    }

    /// Messages after id `after` matching `filter`, oldest first.
    pub fn scan_emails(
        &self,
        filter: &EmailFilter,
        after: u64,
        limit: usize,
    ) -> Result<EmailPage, StoreError> {
        let emails = self.txn.open_table(EMAILS)?;
        let ids: Box<dyn Iterator<Item = Result<u64, StoreError>>> = match &filter.to {
            Some(to) => {
                let index = self.txn.open_table(EMAILS_BY_TO)?;
                let rows: Vec<_> = index
                    .range((to.as_str(), after.saturating_add(1))..=(to.as_str(), u64::MAX))?
                    .take(limit + EXAMINE_BUDGET + 1)
                    .map(|r| r.map(|(k, _)| k.value().1).map_err(StoreError::from))
                    .collect();
                Box::new(rows.into_iter())
            }
            None => Box::new(
                emails
                    .range(after.saturating_add(1)..)?
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
