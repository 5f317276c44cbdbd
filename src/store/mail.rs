//! Mail tables: messages with their recipient and tenant indexes,
//! idempotency keys, the global and the tenants' suppression lists, and
//! soft-bounce counts. A message's schedule row lives in `due`.

use redb::ReadableTable;

use super::codec::{decode, encode};
use super::due::{stream_key, Queue};
use super::records::{
    EmailRecord, EmailStatus, SoftBounceRecord, SuppressionReason, SuppressionRecord,
};
use super::tables::{
    EMAILS, EMAILS_BY_STATUS, EMAILS_BY_STREAM_STATUS, EMAILS_BY_TENANT, EMAILS_BY_TENANT_TO,
    EMAILS_BY_TO, EMAIL_KEYS, PROVIDER_MESSAGE_IDS, SOFT_BOUNCE_DAYS, SUPPRESSIONS,
    TENANT_SUPPRESSIONS,
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

/// An entry that forbids a send, and how far it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocking {
    pub record: SuppressionRecord,
    /// It covers every stream, not only the message's.
    pub all_streams: bool,
}

/// The stored form of an idempotency key: a tenant's keys live apart from
/// other tenants' and from the keys of messages without a tenant.
fn scoped_email_key(tenant: Option<&str>, key: &str) -> String {
    match tenant {
        None => key.to_owned(),
        Some(tenant) => format!("{tenant}\0{key}"),
    }
}

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
            if let Some(tenant) = record.tenant.as_deref() {
                self.txn
                    .open_table(EMAILS_BY_TENANT)?
                    .insert((tenant, id), ())?;
                self.txn
                    .open_table(EMAILS_BY_TENANT_TO)?
                    .insert((tenant, record.to.as_str(), id), ())?;
            }
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

    pub(crate) fn email_key(
        &self,
        tenant: Option<&str>,
        key: &str,
    ) -> Result<Option<(u64, u32, u64)>, StoreError> {
        let table = self.txn.open_table(EMAIL_KEYS)?;
        let found = table.get(scoped_email_key(tenant, key).as_str())?;
        Ok(found.map(|v| v.value()))
    }

    pub(crate) fn put_email_key(
        &mut self,
        tenant: Option<&str>,
        key: &str,
        first_id: u64,
        count: u32,
        fingerprint: u64,
    ) -> Result<(), StoreError> {
        self.txn.open_table(EMAIL_KEYS)?.insert(
            scoped_email_key(tenant, key).as_str(),
            (first_id, count, fingerprint),
        )?;
        Ok(())
    }

    /// The entry that forbids sending `stream` mail of `tenant` to
    /// `address`, if any: the global list first, then the tenant's own.
    pub(crate) fn suppression_for(
        &self,
        tenant: Option<&str>,
        address: &str,
        stream: &str,
    ) -> Result<Option<Blocking>, StoreError> {
        let global = self.txn.open_table(SUPPRESSIONS)?;
        let own = self.txn.open_table(TENANT_SUPPRESSIONS)?;
        blocking_in(&global, &own, tenant, address, stream)
    }

    /// Adds or replaces an entry of `list` (a tenant's, or `None`: the
    /// global one); false when an identical reason was there.
    pub(crate) fn put_suppression(
        &mut self,
        list: Option<&str>,
        address: &str,
        stream: &str,
        record: &SuppressionRecord,
    ) -> Result<bool, StoreError> {
        let bytes = encode(record);
        let previous = match list {
            None => self
                .txn
                .open_table(SUPPRESSIONS)?
                .insert((address, stream), bytes.as_slice())?
                .map(|old| decode::<SuppressionRecord>(old.value())),
            Some(tenant) => self
                .txn
                .open_table(TENANT_SUPPRESSIONS)?
                .insert((tenant, address, stream), bytes.as_slice())?
                .map(|old| decode::<SuppressionRecord>(old.value())),
        }
        .transpose()?;
        Ok(previous.is_none_or(|p| p.reason != record.reason))
    }

    pub(crate) fn stored_suppression(
        &self,
        list: Option<&str>,
        address: &str,
        stream: &str,
    ) -> Result<Option<SuppressionRecord>, StoreError> {
        match list {
            None => super::get_record(&self.txn.open_table(SUPPRESSIONS)?, (address, stream)),
            Some(tenant) => super::get_record(
                &self.txn.open_table(TENANT_SUPPRESSIONS)?,
                (tenant, address, stream),
            ),
        }
    }

    pub(crate) fn delete_suppression(
        &mut self,
        list: Option<&str>,
        address: &str,
        stream: &str,
    ) -> Result<bool, StoreError> {
        let removed = match list {
            None => self
                .txn
                .open_table(SUPPRESSIONS)?
                .remove((address, stream))?
                .is_some(),
            Some(tenant) => self
                .txn
                .open_table(TENANT_SUPPRESSIONS)?
                .remove((tenant, address, stream))?
                .is_some(),
        };
        Ok(removed)
    }

    pub(crate) fn soft_bounce_days(&self, address: &str) -> Result<SoftBounceRecord, StoreError> {
        let found = super::get_record(&self.txn.open_table(SOFT_BOUNCE_DAYS)?, address)?;
        Ok(found.unwrap_or_default())
    }

    pub(crate) fn put_soft_bounce_days(
        &mut self,
        address: &str,
        record: &SoftBounceRecord,
    ) -> Result<(), StoreError> {
        let mut table = self.txn.open_table(SOFT_BOUNCE_DAYS)?;
        if record.days.is_empty() {
            table.remove(address)?;
        } else {
            table.insert(address, encode(record).as_slice())?;
        }
        Ok(())
    }

    /// Remembers that the relay knows message `id` as `provider_id`.
    pub(crate) fn put_provider_message_id(
        &mut self,
        provider_id: &str,
        id: u64,
    ) -> Result<(), StoreError> {
        self.txn
            .open_table(PROVIDER_MESSAGE_IDS)?
            .insert(provider_id, id)?;
        Ok(())
    }

    pub(crate) fn email_by_provider_id(
        &self,
        provider_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        let table = self.txn.open_table(PROVIDER_MESSAGE_IDS)?;
        let found = table.get(provider_id)?;
        Ok(found.map(|v| v.value()))
    }
}

type GlobalList = (&'static str, &'static str);
type TenantList = (&'static str, &'static str, &'static str);

/// The global list's entry for `address` (every stream, then `stream`),
/// else the tenant's.
fn blocking_in(
    global: &impl ReadableTable<GlobalList, &'static [u8]>,
    tenants: &impl ReadableTable<TenantList, &'static [u8]>,
    tenant: Option<&str>,
    address: &str,
    stream: &str,
) -> Result<Option<Blocking>, StoreError> {
    for column in [ALL_STREAMS, stream] {
        if let Some(bytes) = global.get((address, column))? {
            return Ok(Some(Blocking {
                record: decode(bytes.value())?,
                all_streams: column == ALL_STREAMS,
            }));
        }
    }
    let Some(tenant) = tenant else {
        return Ok(None);
    };
    for column in [ALL_STREAMS, stream] {
        if let Some(bytes) = tenants.get((tenant, address, column))? {
            return Ok(Some(Blocking {
                record: decode(bytes.value())?,
                all_streams: column == ALL_STREAMS,
            }));
        }
    }
    Ok(None)
}

#[derive(Debug, Default, Clone)]
pub struct EmailFilter {
    /// Only this tenant's messages, read through its own index.
    pub tenant: Option<String>,
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
        tenant: Option<&str>,
        address: &str,
        stream: &str,
    ) -> Result<Option<Blocking>, StoreError> {
        let global = self.txn.open_table(SUPPRESSIONS)?;
        let own = self.txn.open_table(TENANT_SUPPRESSIONS)?;
        blocking_in(&global, &own, tenant, address, stream)
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
        // Index rows of a tenant or a recipient are collected, not
        // streamed: at most a page and the examine budget of them; status
        // and stream are then checked per message.
        let bounded = limit + EXAMINE_BUDGET + 1;
        let ids: Box<dyn Iterator<Item = Result<u64, StoreError>>> = match (
            filter.tenant.as_deref(),
            &filter.to,
            filter.status,
            &filter.stream,
        ) {
            (Some(tenant), Some(to), _, _) => {
                let index = self.txn.open_table(EMAILS_BY_TENANT_TO)?;
                let rows: Vec<_> = index
                    .range((tenant, to.as_str(), from)..=(tenant, to.as_str(), u64::MAX))?
                    .take(bounded)
                    .map(|r| r.map(|(k, _)| k.value().2).map_err(StoreError::from))
                    .collect();
                Box::new(rows.into_iter())
            }
            (Some(tenant), None, _, _) => {
                let index = self.txn.open_table(EMAILS_BY_TENANT)?;
                let rows: Vec<_> = index
                    .range((tenant, from)..=(tenant, u64::MAX))?
                    .take(bounded)
                    .map(|r| r.map(|(k, _)| k.value().1).map_err(StoreError::from))
                    .collect();
                Box::new(rows.into_iter())
            }
            (None, Some(to), _, _) => {
                let index = self.txn.open_table(EMAILS_BY_TO)?;
                let rows: Vec<_> = index
                    .range((to.as_str(), from)..=(to.as_str(), u64::MAX))?
                    .take(bounded)
                    .map(|r| r.map(|(k, _)| k.value().1).map_err(StoreError::from))
                    .collect();
                Box::new(rows.into_iter())
            }
            (None, None, Some(status), Some(stream)) => {
                let code = email_status_code(status);
                let index = self.txn.open_table(EMAILS_BY_STREAM_STATUS)?;
                let rows: Vec<_> = index
                    .range((stream.as_str(), code, from)..=(stream.as_str(), code, u64::MAX))?
                    .take(limit + 1)
                    .map(|r| r.map(|(k, _)| k.value().2).map_err(StoreError::from))
                    .collect();
                Box::new(rows.into_iter())
            }
            (None, None, Some(status), None) => {
                let code = email_status_code(status);
                let index = self.txn.open_table(EMAILS_BY_STATUS)?;
                Box::new(
                    index
                        .range((code, from)..=(code, u64::MAX))?
                        .map(|r| r.map(|(k, _)| k.value().1).map_err(StoreError::from)),
                )
            }
            (None, None, None, Some(stream)) => {
                // One stream in every status: the first `limit + 1` ids
                // of each status, merged, are the first of the stream.
                let index = self.txn.open_table(EMAILS_BY_STREAM_STATUS)?;
                let mut ids = Vec::new();
                for status in EMAIL_STATUSES {
                    let code = email_status_code(status);
                    for row in index
                        .range((stream.as_str(), code, from)..=(stream.as_str(), code, u64::MAX))?
                        .take(limit + 1)
                    {
                        ids.push(row?.0.value().2);
                    }
                }
                ids.sort_unstable();
                ids.truncate(limit + 1);
                Box::new(ids.into_iter().map(Ok))
            }
            (None, None, None, None) => Box::new(
                emails
                    .range(from..)?
                    .map(|r| r.map(|(k, _)| k.value()).map_err(StoreError::from)),
            ),
        };
        let (emails, next_after) =
            super::page_by_ids(ids, &emails, after, limit, |record: &EmailRecord| {
                filter.status.is_none_or(|s| s == record.status)
                    && filter.stream.as_deref().is_none_or(|s| s == record.stream)
                    && (filter.tenant.is_none() || filter.tenant == record.tenant)
            })?;
        Ok(EmailPage { emails, next_after })
    }

    /// Entries of `list` (a tenant's, or `None`: the global one) after
    /// (address, stream) `after`, in address order.
    pub fn scan_suppressions(
        &self,
        list: Option<&str>,
        filter: &SuppressionFilter,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<SuppressionPage, StoreError> {
        let (address, stream) = after.unwrap_or(("", ""));
        match list {
            None => {
                let table = self.txn.open_table(SUPPRESSIONS)?;
                let rows = table.range((address, stream)..)?.map(|row| {
                    let (key, value) = row?;
                    let (address, stream) = key.value();
                    Ok((
                        address.to_owned(),
                        stream.to_owned(),
                        decode(value.value())?,
                    ))
                });
                page_suppressions(rows, filter, after, limit)
            }
            Some(tenant) => {
                let table = self.txn.open_table(TENANT_SUPPRESSIONS)?;
                let rows = table
                    .range((tenant, address, stream)..)?
                    .map(|row| {
                        let (key, value) = row?;
                        let (owner, address, stream) = key.value();
                        Ok((owner == tenant)
                            .then(|| (address.to_owned(), stream.to_owned(), value)))
                    })
                    .map_while(|row: Result<_, StoreError>| row.transpose())
                    .map(|row| {
                        let (address, stream, value) = row?;
                        Ok((address, stream, decode(value.value())?))
                    });
                page_suppressions(rows, filter, after, limit)
            }
        }
    }
}

/// A page of suppression entries read from `rows` (in key order, from
/// `after` on) that match `filter`, examining a bounded number.
fn page_suppressions(
    rows: impl Iterator<Item = Result<(String, String, SuppressionRecord), StoreError>>,
    filter: &SuppressionFilter,
    after: Option<(&str, &str)>,
    limit: usize,
) -> Result<SuppressionPage, StoreError> {
    let mut entries = Vec::new();
    let mut last: Option<(String, String)> = None;
    let mut more = false;
    for (examined, row) in rows.enumerate() {
        let (address, stream, record) = row?;
        if Some((address.as_str(), stream.as_str())) == after {
            continue;
        }
        if examined == limit + EXAMINE_BUDGET {
            more = true;
            break;
        }
        let wanted = filter.reason.is_none_or(|r| r == record.reason)
            && filter.stream.as_deref().is_none_or(|s| s == stream);
        if wanted && entries.len() == limit {
            more = true;
            break;
        }
        last = Some((address.clone(), stream.clone()));
        if wanted {
            entries.push((address, stream, record));
        }
    }
    Ok(SuppressionPage {
        entries,
        next_after: if more { last } else { None },
    })
}
