//! What tracking's rules and queries need from a backend, so that both are
//! written once: `TrackTxn` for ingest (deduplication, the appended call,
//! its index rows, identity), `TrackRead` for the query routes. The redb
//! file implements them here; PostgreSQL in `pg::tracking`.

use std::collections::HashMap;

use crate::store::log::NewEventRow;
use crate::store::records::{EventRecord, ProfileRecord};
use crate::store::tracking::{EventHits, PersonKind, TrackedRow};
use crate::store::{ReadTxn, StoreError, WriteTxn};
use crate::tracking::analysis::Resolver;

/// The writes of one ingest request, inside one transaction of its backend.
pub trait TrackTxn {
    /// The seq a message key was stored at, if seen since `not_before_ms`
    /// (earlier in the same transaction included).
    fn tracked_message(
        &mut self,
        message_key: u128,
        not_before_ms: i64,
    ) -> Result<Option<u64>, StoreError>;

    /// Appends a call to the shared event log (with its webhook fan-out).
    fn append_event(
        &mut self,
        row: NewEventRow,
        now_ms: i64,
    ) -> Result<(u64, EventRecord), StoreError>;

    fn index_tracked(&mut self, row: &TrackedRow<'_>) -> Result<(), StoreError>;

    /// As `WriteTxn::link`: true when the link is news.
    fn link(
        &mut self,
        tenant: Option<&str>,
        other_id: &str,
        user_id: &str,
        kinds: &[PersonKind],
    ) -> Result<bool, StoreError>;

    fn profile(
        &mut self,
        tenant: Option<&str>,
        user_id: &str,
    ) -> Result<Option<ProfileRecord>, StoreError>;

    fn put_profile(
        &mut self,
        tenant: Option<&str>,
        user_id: &str,
        record: &ProfileRecord,
    ) -> Result<(), StoreError>;
}

impl TrackTxn for WriteTxn<'_> {
    fn tracked_message(
        &mut self,
        message_key: u128,
        not_before_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        WriteTxn::tracked_message(self, message_key, not_before_ms)
    }

    fn append_event(
        &mut self,
        row: NewEventRow,
        now_ms: i64,
    ) -> Result<(u64, EventRecord), StoreError> {
        WriteTxn::append_event(self, row, now_ms)
    }

    fn index_tracked(&mut self, row: &TrackedRow<'_>) -> Result<(), StoreError> {
        WriteTxn::index_tracked(self, row)
    }

    fn link(
        &mut self,
        tenant: Option<&str>,
        other_id: &str,
        user_id: &str,
        kinds: &[PersonKind],
    ) -> Result<bool, StoreError> {
        WriteTxn::link(self, tenant, other_id, user_id, kinds)
    }

    fn profile(
        &mut self,
        tenant: Option<&str>,
        user_id: &str,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        WriteTxn::profile(self, tenant, user_id)
    }

    fn put_profile(
        &mut self,
        tenant: Option<&str>,
        user_id: &str,
        record: &ProfileRecord,
    ) -> Result<(), StoreError> {
        WriteTxn::put_profile(self, tenant, user_id, record)
    }
}

/// A person's calls in summary: how many, and the (timestamp, seq) of the
/// first and the last.
pub type Span = (u64, Option<(i64, u64)>, Option<(i64, u64)>);

/// The reads of one query, on one snapshot of its backend.
pub trait TrackRead {
    fn profile(
        &self,
        tenant: Option<&str>,
        user_id: &str,
    ) -> Result<Option<ProfileRecord>, StoreError>;

    /// `user` and every person linked to it (`Resolver::persons_of`).
    fn persons_of(&self, user: u64) -> Result<Vec<u64>, StoreError>;

    /// A resolver that answers `person` for each of `persons`, and with
    /// `linked` also `persons_of` for the users they resolve to, as one
    /// built over every link would. A backend may load only those links.
    fn resolver_for(&self, persons: &[u64], linked: bool) -> Result<Resolver, StoreError>;

    /// As `ReadTxn::person_seqs`.
    fn person_seqs(&self, person: u64, after: u64, limit: usize) -> Result<Vec<u64>, StoreError>;

    /// The calls of all of `persons` (each call has one person).
    fn person_span(&self, persons: &[u64]) -> Result<Span, StoreError>;

    /// The events at `seqs`, in the order given; `None` where one is gone.
    fn events_at(&self, seqs: &[u64]) -> Result<Vec<(u64, Option<EventRecord>)>, StoreError>;

    /// As `ReadTxn::event_hits`.
    fn event_hits(
        &self,
        type_key: u64,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<EventHits, StoreError>;

    /// As `ReadTxn::event_counts`.
    fn event_counts(
        &self,
        type_key: u64,
        since_ms: i64,
        until_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<u64>, StoreError>;

    /// As `ReadTxn::touches`.
    fn touches(
        &self,
        person: u64,
        until_ms: i64,
    ) -> Result<Vec<(i64, String, String, String)>, StoreError>;

    /// As `ReadTxn::tracked_seqs`.
    fn tracked_seqs(
        &self,
        since_ms: i64,
        until_ms: i64,
        after: Option<(i64, u64)>,
        limit: usize,
    ) -> Result<Vec<(i64, u64)>, StoreError>;
}

impl TrackRead for ReadTxn {
    fn profile(
        &self,
        tenant: Option<&str>,
        user_id: &str,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        ReadTxn::profile(self, tenant, user_id)
    }

    fn persons_of(&self, user: u64) -> Result<Vec<u64>, StoreError> {
        Ok(Resolver::new(self.person_links()?).persons_of(user))
    }

    // The file is local: reading every link is cheaper than walking them.
    fn resolver_for(&self, _persons: &[u64], _linked: bool) -> Result<Resolver, StoreError> {
        Ok(Resolver::new(self.person_links()?))
    }

    fn person_seqs(&self, person: u64, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        ReadTxn::person_seqs(self, person, after, limit)
    }

    fn person_span(&self, persons: &[u64]) -> Result<Span, StoreError> {
        let mut first: Option<(i64, u64)> = None;
        let mut last: Option<(i64, u64)> = None;
        let mut count = 0u64;
        for &person in persons {
            for seq in ReadTxn::person_seqs(self, person, 0, usize::MAX)? {
                count += 1;
                if let Some(event) = self.event_at_seq(seq)? {
                    let t = (event.occurred_at_ms, seq);
                    first = Some(first.map_or(t, |f| f.min(t)));
                    last = Some(last.map_or(t, |l| l.max(t)));
                }
            }
        }
        Ok((count, first, last))
    }

    fn events_at(&self, seqs: &[u64]) -> Result<Vec<(u64, Option<EventRecord>)>, StoreError> {
        seqs.iter()
            .map(|&seq| Ok((seq, self.event_at_seq(seq)?)))
            .collect()
    }

    fn event_hits(
        &self,
        type_key: u64,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<EventHits, StoreError> {
        ReadTxn::event_hits(self, type_key, since_ms, until_ms)
    }

    fn event_counts(
        &self,
        type_key: u64,
        since_ms: i64,
        until_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<u64>, StoreError> {
        ReadTxn::event_counts(self, type_key, since_ms, until_ms, bucket_ms)
    }

    fn touches(
        &self,
        person: u64,
        until_ms: i64,
    ) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        ReadTxn::touches(self, person, until_ms)
    }

    fn tracked_seqs(
        &self,
        since_ms: i64,
        until_ms: i64,
        after: Option<(i64, u64)>,
        limit: usize,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        ReadTxn::tracked_seqs(self, since_ms, until_ms, after, limit)
    }
}

/// The links a resolver for `persons` needs, given a way to read the links
/// of some persons (`up`) and those pointing at some users (`down`): the
/// chains above each person, then everyone linked to where they end.
pub fn partial_resolver(
    persons: &[u64],
    linked: bool,
    up: impl FnOnce(&[u64]) -> Result<Vec<(u64, u64)>, StoreError>,
    down: impl FnOnce(&[u64]) -> Result<Vec<(u64, u64)>, StoreError>,
) -> Result<Resolver, StoreError> {
    let mut links: HashMap<u64, u64> = up(persons)?.into_iter().collect();
    if linked {
        let chains = Resolver::new(links.clone());
        let mut users: Vec<u64> = persons.iter().map(|&p| chains.person(p)).collect();
        users.sort_unstable();
        users.dedup();
        links.extend(down(&users)?);
    }
    Ok(Resolver::new(links))
}
