//! Every row of mail state beside the messages and their feedback, read
//! from one snapshot for `herald migrate`: idempotency keys, both kinds of
//! suppression list, soft-bounce days, the relay's ids, and what the
//! reputation guard keeps per stream. Messages and feedback are paged with
//! `scan_emails` and `scan_feedback`; these tables are small beside them.

use redb::ReadableTable;

use super::codec::decode;
use super::records::{SoftBounceRecord, StreamStateRecord, SuppressionRecord};
use super::tables::{
    EMAIL_KEYS, META, PROVIDER_MESSAGE_IDS, SOFT_BOUNCE_DAYS, STREAM_SENDS, STREAM_STATES,
    STREAM_TALLY, SUPPRESSIONS, TENANT_SUPPRESSIONS,
};
use super::{ReadTxn, StoreError};

/// A send request's key: tenant, key, first message id, count, fingerprint.
pub type EmailKeyRow = (Option<String>, String, u64, u32, u64);
/// A suppression entry: its list's tenant (`None`: the global one),
/// address, stream ("" for all), entry.
pub type SuppressionRow = (Option<String>, String, String, SuppressionRecord);

#[derive(Default)]
pub struct MailTables {
    pub email_keys: Vec<EmailKeyRow>,
    pub suppressions: Vec<SuppressionRow>,
    pub soft_bounces: Vec<(String, SoftBounceRecord)>,
    pub provider_ids: Vec<(String, u64)>,
    pub stream_states: Vec<(String, StreamStateRecord)>,
    /// Stream, bucket start, (sent, hard bounces, complaints).
    pub stream_tally: Vec<(String, i64, (u32, u32, u32))>,
    /// Stream, message id, outcome code.
    pub stream_sends: Vec<(String, u64, u8)>,
}

impl ReadTxn {
    pub fn mail_tables(&self) -> Result<MailTables, StoreError> {
        let mut out = MailTables::default();
        for row in self.txn.open_table(EMAIL_KEYS)?.iter()? {
            let (key, value) = row?;
            let (first, count, fingerprint) = value.value();
            // The stored key is the tenant's scope, a NUL, then the key.
            let (tenant, key) = match key.value().split_once('\0') {
                Some((tenant, key)) => (Some(tenant.to_owned()), key.to_owned()),
                None => (None, key.value().to_owned()),
            };
            out.email_keys
                .push((tenant, key, first, count, fingerprint));
        }
        for row in self.txn.open_table(SUPPRESSIONS)?.iter()? {
            let (key, value) = row?;
            let (address, stream) = key.value();
            out.suppressions.push((
                None,
                address.to_owned(),
                stream.to_owned(),
                decode(value.value())?,
            ));
        }
        for row in self.txn.open_table(TENANT_SUPPRESSIONS)?.iter()? {
            let (key, value) = row?;
            let (tenant, address, stream) = key.value();
            out.suppressions.push((
                Some(tenant.to_owned()),
                address.to_owned(),
                stream.to_owned(),
                decode(value.value())?,
            ));
        }
        for row in self.txn.open_table(SOFT_BOUNCE_DAYS)?.iter()? {
            let (key, value) = row?;
            out.soft_bounces
                .push((key.value().to_owned(), decode(value.value())?));
        }
        for row in self.txn.open_table(PROVIDER_MESSAGE_IDS)?.iter()? {
            let (key, value) = row?;
            out.provider_ids
                .push((key.value().to_owned(), value.value()));
        }
        for row in self.txn.open_table(STREAM_STATES)?.iter()? {
            let (key, value) = row?;
            out.stream_states
                .push((key.value().to_owned(), decode(value.value())?));
        }
        for row in self.txn.open_table(STREAM_TALLY)?.iter()? {
            let (key, value) = row?;
            let (stream, bucket) = key.value();
            out.stream_tally
                .push((stream.to_owned(), bucket, value.value()));
        }
        for row in self.txn.open_table(STREAM_SENDS)?.iter()? {
            let (key, value) = row?;
            let (stream, id) = key.value();
            out.stream_sends
                .push((stream.to_owned(), id, value.value()));
        }
        Ok(out)
    }

    /// The secret `name` the file keeps, if it made one; never makes one.
    pub fn stored_secret(&self, name: &str) -> Result<Option<[u8; 32]>, StoreError> {
        let meta = self.txn.open_table(META)?;
        let found = meta.get(format!("secret.{name}").as_str())?;
        Ok(found.and_then(|bytes| <[u8; 32]>::try_from(bytes.value()).ok()))
    }
}
