//! Tracking tables: `messageId` deduplication, the per-person and
//! per-event-name indexes that identity, stats, funnels and attribution read,
//! campaign touches, and profiles with their linked anonymous ids.

use redb::{ReadableTable, ReadableTableMetadata};

use super::codec::encode;
use super::log::IndexKeys;
use super::records::ProfileRecord;
use super::tables::{
    PERSON_LINKS, PROFILES, RECENT_TRACKED, TENANT_PROFILES, TOUCHES, TRACKED, TRACK_BY_EVENT,
    TRACK_BY_PERSON, TRACK_KEYS, TRACK_META,
};
use super::{digest, ReadTxn, StoreError, WriteTxn};

/// A person in the indexes: 64 bits of SHA-256 over `u:USERID` or
/// `a:ANONYMOUSID`, and for calls of a tenant's source over the tenant as
/// well, in a domain of its own: two tenants' `user_1` are two people, and
/// calls stored before tenants keep their hashes. Part of the file format;
/// with a million people the chance of any two colliding is about 1 in 40
/// million.
pub fn person_hash(tenant: Option<&str>, kind: PersonKind, id: &str) -> u64 {
    let prefix = match kind {
        PersonKind::User => "u",
        PersonKind::Anonymous => "a",
    };
    let d = match tenant {
        None => digest(3, &[prefix, id]),
        Some(tenant) => digest(6, &[tenant, prefix, id]),
    };
    u64::from_be_bytes(d[..8].try_into().expect("32 bytes"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonKind {
    User,
    Anonymous,
}

/// The person a call belongs to: its userId, else its anonymousId.
pub fn person_of(
    tenant: Option<&str>,
    user_id: Option<&str>,
    anonymous_id: Option<&str>,
) -> Option<u64> {
    match (user_id, anonymous_id) {
        (Some(u), _) => Some(person_hash(tenant, PersonKind::User, u)),
        (None, Some(a)) => Some(person_hash(tenant, PersonKind::Anonymous, a)),
        (None, None) => None,
    }
}

/// What `track_by_event` files an event name's calls under: the type hash
/// for calls without a tenant (as before tenants), else that hash mixed
/// with the tenant, so that counts, funnels and attribution of one tenant
/// read its own range and nobody else's.
pub fn tracked_type_key(tenant: Option<&str>, type_hash: u64) -> u64 {
    match tenant {
        None => type_hash,
        Some(tenant) => {
            let d = digest(7, &[tenant, &type_hash.to_string()]);
            u64::from_be_bytes(d[..8].try_into().expect("32 bytes"))
        }
    }
}

/// The deduplication key of (source, messageId); never 0.
pub fn message_key(source: &str, message_id: &str) -> u128 {
    let d = digest(4, &[source, message_id]);
    u128::from_be_bytes(d[..16].try_into().expect("32 bytes")).max(1)
}

/// The tables tracked calls write, opened on first use in a transaction.
pub(super) struct TrackTables<'txn> {
    keys: redb::Table<'txn, u128, (u64, i64)>,
    tracked: redb::Table<'txn, (i64, u64), u128>,
    by_event: redb::Table<'txn, (u64, i64, u64), u64>,
    touches: redb::Table<'txn, (u64, i64, u64), (&'static str, &'static str, &'static str)>,
    profiles: redb::Table<'txn, &'static str, &'static [u8]>,
    tenant_profiles: redb::Table<'txn, (&'static str, &'static str), &'static [u8]>,
    links: redb::Table<'txn, u64, u64>,
    /// Where dedup keys and person rows wait for a bulk merge.
    recent: redb::Table<'txn, u64, (u128, u64, i64)>,
}

/// What one tracked call adds to the indexes beside its log row.
pub struct TrackedRow<'a> {
    pub seq: u64,
    pub received_ms: i64,
    /// `message_key`, or 0 when Herald assigned the id.
    pub message_key: u128,
    pub person: u64,
    /// `tracked_type_key` of the call's tenant and type hash.
    pub type_key: u64,
    pub timestamp_ms: i64,
    pub campaign: Option<(&'a str, &'a str, &'a str)>,
}

impl<'txn> TrackTables<'txn> {
    fn open(t: &'txn redb::WriteTransaction) -> Result<Self, StoreError> {
        Ok(TrackTables {
            keys: t.open_table(TRACK_KEYS)?,
            tracked: t.open_table(TRACKED)?,
            by_event: t.open_table(TRACK_BY_EVENT)?,
            touches: t.open_table(TOUCHES)?,
            profiles: t.open_table(PROFILES)?,
            tenant_profiles: t.open_table(TENANT_PROFILES)?,
            links: t.open_table(PERSON_LINKS)?,
            recent: t.open_table(RECENT_TRACKED)?,
        })
    }
}

impl<'txn> WriteTxn<'txn> {
    fn track_tables(&mut self) -> Result<&mut TrackTables<'txn>, StoreError> {
        if self.track_tables.is_none() {
            self.track_tables = Some(TrackTables::open(self.txn)?);
        }
        Ok(self.track_tables.as_mut().expect("opened just above"))
    }

    /// Whether the event at `seq`, received at `received_ms`, is a tracked
    /// call (whose rows tracking's own retention deletes).
    pub(super) fn is_tracked_call(
        &mut self,
        received_ms: i64,
        seq: u64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .track_tables()?
            .tracked
            .get((received_ms, seq))?
            .is_some())
    }

    /// The seq a message key was stored at, if seen since `not_before_ms`.
    pub fn tracked_message(
        &mut self,
        message_key: u128,
        not_before_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        if let Some(seq) = self.memory.recent_tracked.seen(message_key, not_before_ms) {
            return Ok(Some(seq));
        }
        Ok(self
            .track_tables()?
            .keys
            .get(message_key)?
            .map(|v| v.value())
            .filter(|(_, received)| *received >= not_before_ms)
            .map(|(seq, _)| seq))
    }

    /// Writes the index rows of a call appended at `row.seq`. Its dedup key
    /// and person row wait in `recent_tracked` for a bulk merge.
    pub fn index_tracked(&mut self, row: &TrackedRow<'_>) -> Result<(), StoreError> {
        self.track_tables()?;
        let tables = self.track_tables.as_mut().expect("opened just above");
        self.memory.recent_tracked.insert(
            &mut tables.recent,
            row.seq,
            row.message_key,
            row.person,
            row.received_ms,
        )?;
        tables
            .tracked
            .insert((row.received_ms, row.seq), row.message_key)?;
        tables
            .by_event
            .insert((row.type_key, row.timestamp_ms, row.seq), row.person)?;
        if let Some((source, medium, name)) = row.campaign {
            tables.touches.insert(
                (row.person, row.timestamp_ms, row.seq),
                (source, medium, name),
            )?;
        }
        Ok(())
    }

    /// Links `other_id` to `user_id`; true when that is news. An
    /// anonymousId links only as anonymous: the same text may be another
    /// user's id. An alias's previousId may have been either, so both link.
    pub fn link(
        &mut self,
        tenant: Option<&str>,
        other_id: &str,
        user_id: &str,
        kinds: &[PersonKind],
    ) -> Result<bool, StoreError> {
        let user = person_hash(tenant, PersonKind::User, user_id);
        let links = &mut self.track_tables()?.links;
        let mut changed = false;
        for &kind in kinds {
            if kind == PersonKind::User && other_id == user_id {
                continue;
            }
            let other = person_hash(tenant, kind, other_id);
            // Most calls repeat a known link: reading first avoids rewriting
            // the page for nothing.
            if links.get(other)?.is_some_and(|v| v.value() == user) {
                continue;
            }
            links.insert(other, user)?;
            changed = true;
        }
        Ok(changed)
    }

    /// The profile of `user_id` among `tenant`'s users (`None`: users of
    /// sources bound to no tenant).
    pub fn profile(
        &mut self,
        tenant: Option<&str>,
        user_id: &str,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        let tables = self.track_tables()?;
        match tenant {
            None => super::get_record(&tables.profiles, user_id),
            Some(tenant) => super::get_record(&tables.tenant_profiles, (tenant, user_id)),
        }
    }

    pub fn put_profile(
        &mut self,
        tenant: Option<&str>,
        user_id: &str,
        record: &ProfileRecord,
    ) -> Result<(), StoreError> {
        let tables = self.track_tables()?;
        let bytes = encode(record);
        match tenant {
            None => tables.profiles.insert(user_id, bytes.as_slice())?,
            Some(tenant) => tables
                .tenant_profiles
                .insert((tenant, user_id), bytes.as_slice())?,
        };
        Ok(())
    }
}

/// One tracked call found by the maintenance pass.
pub struct TrackedEntry {
    pub received_ms: i64,
    pub seq: u64,
    /// 0 when the call has no deduplication key.
    pub message_key: u128,
}

impl WriteTxn<'_> {
    /// Merges the held dedup keys and person rows now, inside this
    /// transaction, so that upkeep sees every row in the sorted tables.
    pub(crate) fn flush_recent_tracked(&mut self) -> Result<(), StoreError> {
        // The merge opens these tables itself, and a table is open once at
        // a time in a transaction.
        self.track_tables = None;
        if !self.memory.recent_tracked.is_empty() {
            // An abort of this transaction reloads the copy from the file.
            self.memory.recent_tracked.merge_all(self.txn)?;
        }
        Ok(())
    }

    pub(crate) fn track_cursor(&self, name: &str) -> Result<Option<(i64, u64)>, StoreError> {
        let table = self.txn.open_table(TRACK_META)?;
        let found = table.get(name)?;
        Ok(found.map(|v| v.value()))
    }

    pub(crate) fn set_track_cursor(
        &mut self,
        name: &str,
        at: (i64, u64),
    ) -> Result<(), StoreError> {
        self.txn.open_table(TRACK_META)?.insert(name, at)?;
        Ok(())
    }

    /// Up to `limit` tracked calls received after `after`, and before `before_ms`.
    pub(crate) fn tracked_before(
        &mut self,
        after: Option<(i64, u64)>,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<TrackedEntry>, StoreError> {
        let table = &self.track_tables()?.tracked;
        let start = after.map_or((i64::MIN, 0), |(ms, seq)| (ms, seq.saturating_add(1)));
        let mut out = Vec::new();
        for row in table.range(start..(before_ms, 0))?.take(limit) {
            let (k, v) = row?;
            let (received_ms, seq) = k.value();
            out.push(TrackedEntry {
                received_ms,
                seq,
                message_key: v.value(),
            });
        }
        Ok(out)
    }

    /// Forgets a deduplication key if it still names `seq`.
    pub(crate) fn expire_track_key(
        &mut self,
        message_key: u128,
        seq: u64,
    ) -> Result<(), StoreError> {
        if message_key == 0 {
            return Ok(());
        }
        let keys = &mut self.track_tables()?.keys;
        let current = keys.get(message_key)?.map(|v| v.value().0);
        if current == Some(seq) {
            keys.remove(message_key)?;
        }
        Ok(())
    }

    /// Removes a tracked call and every index row of it.
    pub(crate) fn remove_tracked(
        &mut self,
        entry: &TrackedEntry,
        person: Option<u64>,
        index: IndexKeys,
        type_key: u64,
        timestamp_ms: i64,
    ) -> Result<(), StoreError> {
        self.expire_track_key(entry.message_key, entry.seq)?;
        let tables = self.track_tables()?;
        tables.tracked.remove((entry.received_ms, entry.seq))?;
        if let Some(person) = person {
            tables.touches.remove((person, timestamp_ms, entry.seq))?;
        }
        tables
            .by_event
            .remove((type_key, timestamp_ms, entry.seq))?;
        if let Some(person) = person {
            // Not among the cached tables: only merges write it.
            self.txn
                .open_table(TRACK_BY_PERSON)?
                .remove((person, entry.seq))?;
        }
        self.remove_event(entry.seq, index)?;
        Ok(())
    }
}

/// One event name's calls in a time range: (timestamp, person).
pub type EventHits = Vec<(i64, u64)>;

impl ReadTxn {
    /// As `WriteTxn::profile`.
    pub fn profile(
        &self,
        tenant: Option<&str>,
        user_id: &str,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        match tenant {
            None => super::get_record(&self.txn.open_table(PROFILES)?, user_id),
            Some(tenant) => {
                super::get_record(&self.txn.open_table(TENANT_PROFILES)?, (tenant, user_id))
            }
        }
    }

    /// Every person → user link (anonymous ids and aliases).
    pub fn person_links(&self) -> Result<std::collections::HashMap<u64, u64>, StoreError> {
        let table = self.txn.open_table(PERSON_LINKS)?;
        let mut out = std::collections::HashMap::with_capacity(table.len()? as usize);
        for row in table.iter()? {
            let (k, v) = row?;
            out.insert(k.value(), v.value());
        }
        Ok(out)
    }

    /// Seqs of a person's calls after `after`, oldest first, including
    /// those still held for a merge.
    pub fn person_seqs(
        &self,
        person: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError> {
        let table = self.txn.open_table(TRACK_BY_PERSON)?;
        let mut out = Vec::new();
        for row in table
            .range((person, after.saturating_add(1))..=(person, u64::MAX))?
            .take(limit)
        {
            out.push(row?.0.value().1);
        }
        let recent = self.txn.open_table(RECENT_TRACKED)?;
        for row in recent.range(after.saturating_add(1)..)? {
            let (seq, value) = row?;
            if value.value().1 == person {
                out.push(seq.value());
            }
        }
        // A call merged by a sweep stays held until the sweep ends.
        out.sort_unstable();
        out.dedup();
        out.truncate(limit);
        Ok(out)
    }

    /// Calls of one event name (its `tracked_type_key`) with timestamps in
    /// [since, until), in time order.
    pub fn event_hits(
        &self,
        type_key: u64,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<EventHits, StoreError> {
        let table = self.txn.open_table(TRACK_BY_EVENT)?;
        let mut out = Vec::new();
        for row in table.range((type_key, since_ms, 0)..(type_key, until_ms, 0))? {
            let (k, v) = row?;
            out.push((k.value().1, v.value()));
        }
        Ok(out)
    }

    /// Counts calls of one event name per bucket of `bucket_ms`, from `since`.
    pub fn event_counts(
        &self,
        type_key: u64,
        since_ms: i64,
        until_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<u64>, StoreError> {
        let table = self.txn.open_table(TRACK_BY_EVENT)?;
        let buckets = ((until_ms - since_ms + bucket_ms - 1) / bucket_ms).max(0) as usize;
        let mut counts = vec![0u64; buckets];
        for row in table.range((type_key, since_ms, 0)..(type_key, until_ms, 0))? {
            let (k, _) = row?;
            let index = ((k.value().1 - since_ms) / bucket_ms) as usize;
            if let Some(c) = counts.get_mut(index) {
                *c += 1;
            }
        }
        Ok(counts)
    }

    /// A person's campaign touches at or before `until_ms`, oldest first.
    pub fn touches(
        &self,
        person: u64,
        until_ms: i64,
    ) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        let table = self.txn.open_table(TOUCHES)?;
        let mut out = Vec::new();
        for row in table.range((person, i64::MIN, 0)..=(person, until_ms, u64::MAX))? {
            let (k, v) = row?;
            let (s, m, n) = v.value();
            out.push((k.value().1, s.to_owned(), m.to_owned(), n.to_owned()));
        }
        Ok(out)
    }

    /// Tracked calls received in [since, until), in arrival order, from `after`.
    pub fn tracked_seqs(
        &self,
        since_ms: i64,
        until_ms: i64,
        after: Option<(i64, u64)>,
        limit: usize,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        let table = self.txn.open_table(TRACKED)?;
        let start = match after {
            Some((ms, seq)) => (ms, seq.saturating_add(1)),
            None => (since_ms, 0),
        };
        let mut out = Vec::new();
        for row in table.range(start..(until_ms, 0))?.take(limit) {
            out.push(row?.0.value());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls stored before tenants were indexed under these hashes; calls
    /// of sources without a tenant must keep landing on them.
    #[test]
    fn people_without_a_tenant_keep_their_hashes_and_tenants_get_their_own() {
        assert_eq!(
            person_hash(None, PersonKind::User, "user_1"),
            8_749_725_298_756_159_637,
            "the hash of a tenant-less user is part of the file format"
        );
        let type_hash = crate::store::log::type_hash("Signed Up");
        assert_eq!(tracked_type_key(None, type_hash), type_hash);
        let people = [
            person_hash(None, PersonKind::User, "user_1"),
            person_hash(Some("acme"), PersonKind::User, "user_1"),
            person_hash(Some("globex"), PersonKind::User, "user_1"),
            person_hash(Some("acme"), PersonKind::Anonymous, "user_1"),
        ];
        for (i, a) in people.iter().enumerate() {
            for b in &people[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_ne!(
            tracked_type_key(Some("acme"), type_hash),
            tracked_type_key(Some("globex"), type_hash)
        );
        assert_ne!(tracked_type_key(Some("acme"), type_hash), type_hash);
    }
}
