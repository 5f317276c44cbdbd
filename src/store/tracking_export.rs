//! Tracking state read from one snapshot for `herald migrate`: each
//! tracked call with its index row as the file keeps it, the messageId
//! keys still deduplicating, person links and profiles. Calls and profiles
//! are paged; links are few beside them.

use std::ops::Bound;

use redb::ReadableTable;

use super::log::{read_event, IndexKeys};
use super::tables::{
    EVENTS, PERSON_LINKS, PROFILES, RECENT_TRACKED, TENANT_PROFILES, TOUCHES, TRACKED,
    TRACK_BY_EVENT, TRACK_KEYS,
};
use super::tracking::tracked_type_key;
use super::{ReadTxn, StoreError};

/// One tracked call as its index rows hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedCall {
    pub seq: u64,
    pub received_ms: i64,
    /// 0 when Herald made the messageId up.
    pub message_key: u128,
    pub person: u64,
    pub type_key: u64,
    pub timestamp_ms: i64,
    /// utm source, medium and name, when the call carried a campaign.
    pub campaign: Option<(String, String, String)>,
}

/// A profile's tenant (`None` for sources bound to none), userId and
/// encoded `ProfileRecord`.
pub type ProfileRow = (Option<String>, String, Vec<u8>);

impl ReadTxn {
    /// Up to `limit` tracked calls in arrival order after `after` (received
    /// ms, seq), and where the page ended. A call whose event or index row
    /// is gone (retention at work) is left out.
    #[allow(clippy::type_complexity)]
    pub fn tracked_calls(
        &self,
        after: Option<(i64, u64)>,
        limit: usize,
    ) -> Result<(Vec<ExportedCall>, Option<(i64, u64)>), StoreError> {
        let tracked = self.txn.open_table(TRACKED)?;
        let by_event = self.txn.open_table(TRACK_BY_EVENT)?;
        let touches = self.txn.open_table(TOUCHES)?;
        let events = self.txn.open_table(EVENTS)?;
        let start = match after {
            Some(at) => Bound::Excluded(at),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        let mut last = None;
        for row in tracked
            .range::<(i64, u64)>((start, Bound::Unbounded))?
            .take(limit)
        {
            let (key, message_key) = row?;
            let (received_ms, seq) = key.value();
            last = Some((received_ms, seq));
            let Some(event) = read_event(&events, seq)? else {
                continue;
            };
            let tenant = event.tenant.as_deref();
            let type_key =
                tracked_type_key(tenant, IndexKeys::of(&event.event_type, tenant).type_hash);
            let timestamp_ms = event.occurred_at_ms;
            let Some(person) = by_event.get((type_key, timestamp_ms, seq))? else {
                continue;
            };
            let person = person.value();
            let campaign = touches.get((person, timestamp_ms, seq))?.map(|c| {
                let (source, medium, name) = c.value();
                (source.to_owned(), medium.to_owned(), name.to_owned())
            });
            out.push(ExportedCall {
                seq,
                received_ms,
                message_key: message_key.value(),
                person,
                type_key,
                timestamp_ms,
                campaign,
            });
        }
        Ok((out, last))
    }

    /// Every messageId key still deduplicating: key → (seq, received ms),
    /// those held for a merge included.
    pub fn track_keys(&self) -> Result<Vec<(u128, u64, i64)>, StoreError> {
        let mut out = Vec::new();
        for row in self.txn.open_table(TRACK_KEYS)?.iter()? {
            let (key, value) = row?;
            let (seq, received_ms) = value.value();
            out.push((key.value(), seq, received_ms));
        }
        for row in self.txn.open_table(RECENT_TRACKED)?.iter()? {
            let (seq, value) = row?;
            let (key, _, received_ms) = value.value();
            if key != 0 {
                out.push((key, seq.value(), received_ms));
            }
        }
        Ok(out)
    }

    /// Every person → user link, in person order.
    pub fn person_link_rows(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut out = Vec::new();
        for row in self.txn.open_table(PERSON_LINKS)?.iter()? {
            let (person, user) = row?;
            out.push((person.value(), user.value()));
        }
        Ok(out)
    }

    /// Up to `limit` profiles after `after`: those of sources bound to no
    /// tenant first, then each tenant's.
    pub fn profiles_page(
        &self,
        after: Option<&(Option<String>, String)>,
        limit: usize,
    ) -> Result<Vec<ProfileRow>, StoreError> {
        let mut out = Vec::new();
        if !matches!(after, Some((Some(_), _))) {
            let global = self.txn.open_table(PROFILES)?;
            let start = match after {
                Some((None, user)) => Bound::Excluded(user.as_str()),
                _ => Bound::Unbounded,
            };
            for row in global.range::<&str>((start, Bound::Unbounded))?.take(limit) {
                let (user, record) = row?;
                out.push((None, user.value().to_owned(), record.value().to_vec()));
            }
        }
        if out.len() == limit {
            return Ok(out);
        }
        let tenants = self.txn.open_table(TENANT_PROFILES)?;
        let start = match after {
            Some((Some(tenant), user)) => Bound::Excluded((tenant.as_str(), user.as_str())),
            _ => Bound::Unbounded,
        };
        for row in tenants
            .range::<(&str, &str)>((start, Bound::Unbounded))?
            .take(limit - out.len())
        {
            let (key, record) = row?;
            let (tenant, user) = key.value();
            out.push((
                Some(tenant.to_owned()),
                user.to_owned(),
                record.value().to_vec(),
            ));
        }
        Ok(out)
    }
}
