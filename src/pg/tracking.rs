//! Tracking on PostgreSQL: ingest appends Segment calls to the shared
//! event log with their index rows, and the query routes read those rows.
//! The rules are `tracking::ingest`'s and the questions
//! `tracking::analysis`'s, the same code as on redb (`tracking::txn`).
//!
//! Each ingest request is one transaction of its own, not a part of the
//! event log's group commit: it takes the log head's lock first, as
//! `pg::mail_txn::write` does, so its calls get positions in log order and
//! the messageId lookup sees every key committed by any node. The group
//! committer's batches are plain events, planned from idempotency keys
//! alone; teaching it messageIds, identity and profiles would put all of
//! tracking inside the log's hot path. The price: a commit per request
//! instead of per group, and the head lock held for a few round trips per
//! request (each request is a handful of statements however many calls it
//! carries, so a batch of 2,500 costs about what one call does).
//!
//! Tracking's upkeep runs in `pg::retention` without the head lock: it
//! deletes only keys older than the dedup window, which the lookup here
//! ignores anyway (the primary key arbitrates a takeover), and old calls,
//! whose positions stay handed out (the head row keeps the next one).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use deadpool_postgres::{Pool, Transaction};
use tokio::runtime::Handle;
use tokio::sync::{Notify, Semaphore};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::IsolationLevel;

use super::log::{INSERT_EVENTS, INSERT_EVENTS_TYPES, LOCK_HEAD};
use super::webhooks::{FanOut, NewDeliveries};
use super::PgError;
use crate::store::codec;
use crate::store::log::NewEventRow;
use crate::store::records::{EventRecord, ProfileRecord};
use crate::store::tracking::{person_hash, EventHits, PersonKind, TrackedRow};
use crate::store::StoreError;
use crate::tracking::analysis::Resolver;
use crate::tracking::ingest::{self, Prepared, Stored};
use crate::tracking::segment::Call;
use crate::tracking::txn::{partial_resolver, Span, TrackRead, TrackTxn};

/// Ingest transactions of one node at once: they queue on the head lock
/// anyway, and each one waiting holds a pooled connection that reads need.
const WRITERS: usize = 2;
/// Link chains are followed this deep: past what `Resolver` follows.
const CHAIN_DEPTH: i32 = 9;
/// The most links one query loads: a bound on memory, far above what the
/// people of one question link.
const MAX_LINKS: i64 = 1_000_000;

/// The profile key of users of sources bound to no tenant.
const NO_TENANT: &str = "";

/// Why an ingest request was not acknowledged; nothing of it is committed
/// (or its commit's fate is unknown).
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error("the tracking write queue is full")]
    Busy,
    #[error("{0}")]
    Failed(StoreError),
}

impl From<PgError> for TrackError {
    fn from(e: PgError) -> Self {
        TrackError::Failed(e.into())
    }
}

impl From<tokio_postgres::Error> for TrackError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::from(e).into()
    }
}

impl From<StoreError> for TrackError {
    fn from(e: StoreError) -> Self {
        TrackError::Failed(e)
    }
}

fn db(e: tokio_postgres::Error) -> StoreError {
    PgError::from(e).into()
}

/// A node's handle on the tracking tables.
#[derive(Clone)]
pub struct PgTracking {
    pool: Pool,
    /// Requests admitted (writing or waiting to); one more is refused with
    /// 429, as the redb writer's full queue is.
    admitted: Arc<Semaphore>,
    writers: Arc<Semaphore>,
    /// Enabled endpoints as last loaded, reloaded when their version moved.
    fan_out: Arc<Mutex<FanOut>>,
    /// Told when a request created deliveries, for this node's dispatcher.
    deliveries_due: Arc<Notify>,
}

impl PgTracking {
    pub fn new(pool: Pool, queue_capacity: usize, deliveries_due: Arc<Notify>) -> Self {
        PgTracking {
            pool,
            admitted: Arc::new(Semaphore::new(queue_capacity.max(1))),
            writers: Arc::new(Semaphore::new(WRITERS)),
            fan_out: Arc::default(),
            deliveries_due,
        }
    }

    /// Appends `calls` as `ingest::append` does on redb, deduplicating
    /// messageIds seen within `window_ms`; answers once committed.
    pub async fn append(
        &self,
        calls: Vec<Prepared>,
        window_ms: i64,
    ) -> Result<Vec<Stored>, TrackError> {
        let _admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| TrackError::Busy)?;
        let _writing = self.writers.acquire().await.map_err(|_| TrackError::Busy)?;
        let mut fan_out = std::mem::take(&mut *self.fan_out.lock().expect("not poisoned"));
        let outcome = self.append_in_txn(&mut fan_out, calls, window_ms).await;
        if outcome.is_err() {
            // A version read in a failed transaction proves nothing.
            fan_out.forget();
        }
        *self.fan_out.lock().expect("not poisoned") = fan_out;
        let (stored, delivered) = outcome?;
        if delivered {
            self.deliveries_due.notify_one();
        }
        Ok(stored)
    }

    async fn append_in_txn(
        &self,
        fan_out: &mut FanOut,
        calls: Vec<Prepared>,
        window_ms: i64,
    ) -> Result<(Vec<Stored>, bool), TrackError> {
        let wanted = Wanted::of(&calls);
        let mut client = self.pool.get().await.map_err(PgError::from)?;
        let txn = client.transaction().await?;
        let lock_head = txn.prepare_cached(LOCK_HEAD).await?;
        let find_keys = txn
            .prepare_typed_cached(
                "SELECT message_key, seq, received_ms FROM herald_track_keys \
                 WHERE message_key = ANY($1)",
                &[Type::BYTEA_ARRAY],
            )
            .await?;
        let find_links = txn
            .prepare_typed_cached(
                "SELECT person, user_person FROM herald_person_links WHERE person = ANY($1)",
                &[Type::INT8_ARRAY],
            )
            .await?;
        let find_profiles = txn
            .prepare_typed_cached(
                "SELECT p.tenant, p.user_id, p.record FROM herald_profiles p \
                 JOIN unnest($1::text[], $2::text[]) AS w(tenant, user_id) \
                 ON p.tenant = w.tenant AND p.user_id = w.user_id",
                &[Type::TEXT_ARRAY, Type::TEXT_ARRAY],
            )
            .await?;
        let endpoints_version = txn
            .prepare_cached("SELECT version FROM herald_endpoints_version WHERE id = 1")
            .await?;
        // `biased`: the head's lock is requested first; the lookups after it
        // on the same connection each take their snapshot once it is
        // granted, so they see every key, link and profile committed by
        // any node before this transaction's turn.
        let key_params: [&(dyn ToSql + Sync); 1] = [&wanted.keys];
        let link_params: [&(dyn ToSql + Sync); 1] = [&wanted.persons];
        let profile_params: [&(dyn ToSql + Sync); 2] =
            [&wanted.profile_tenants, &wanted.profile_users];
        let (head, keys, links, profiles, version) = tokio::try_join!(
            biased;
            txn.query_one(&lock_head, &[]),
            txn.query(&find_keys, &key_params),
            txn.query(&find_links, &link_params),
            txn.query(&find_profiles, &profile_params),
            txn.query_one(&endpoints_version, &[]),
        )?;
        fan_out.refresh(&*txn, version.get(0)).await?;

        let next_seq: i64 = head.get(0);
        let last_received_ms: i64 = head.get(1);
        // The database's clock, as the group committer stamps events.
        let received_at_ms = head.get::<_, i64>(2).max(last_received_ms);
        let mut staged = Staged::new(fan_out, next_seq, received_at_ms);
        for row in &keys {
            let key = key_of(row.get::<_, &[u8]>(0))?;
            let seq: i64 = row.get(1);
            staged.keys.insert(key, (seq as u64, row.get(2)));
        }
        for row in &links {
            staged
                .links
                .insert(row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64);
        }
        for (tenant, user) in wanted.profile_tenants.iter().zip(&wanted.profile_users) {
            staged.profiles.insert((tenant.clone(), user.clone()), None);
        }
        for row in &profiles {
            let record: ProfileRecord =
                codec::decode(row.get::<_, &[u8]>(2)).map_err(StoreError::from)?;
            staged
                .profiles
                .insert((row.get(0), row.get(1)), Some(record));
        }

        let not_before_ms = received_at_ms.saturating_sub(window_ms);
        let stored = ingest::append(&mut staged, calls, not_before_ms, received_at_ms)?;
        let delivered = !staged.deliveries.is_empty();
        staged.flush(&txn, not_before_ms).await?;
        txn.commit().await?;
        Ok((stored, delivered))
    }

    /// Runs `query` on one snapshot of the database; call it on a blocking
    /// thread, with a handle on the runtime.
    pub fn read<T>(
        &self,
        handle: &Handle,
        query: impl FnOnce(&dyn TrackRead) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = handle.block_on(self.pool.get()).map_err(PgError::from)?;
        // One snapshot, as a redb read transaction is: a page of seqs and
        // the events they name agree.
        let txn = handle
            .block_on(
                client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start(),
            )
            .map_err(db)?;
        let answer = query(&PgTrackRead { txn: &txn, handle })?;
        handle.block_on(txn.commit()).map_err(db)?;
        Ok(answer)
    }
}

/// Tracked calls' index rows, one array per column.
pub(super) const INSERT_TRACKED: &str = "INSERT INTO herald_tracked (seq, received_ms, \
     message_key, person, type_key, timestamp_ms, campaign_source, campaign_medium, \
     campaign_name) \
     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bigint[], $5::bigint[], \
       $6::bigint[], $7::text[], $8::text[], $9::text[])";

pub(super) const INSERT_TRACKED_TYPES: [Type; 9] = [
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::BYTEA_ARRAY,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
];

pub(super) fn key_bytes(key: u128) -> Vec<u8> {
    key.to_be_bytes().to_vec()
}

fn key_of(bytes: &[u8]) -> Result<u128, StoreError> {
    <[u8; 16]>::try_from(bytes)
        .map(u128::from_be_bytes)
        .map_err(|_| PgError::Damaged("a tracking key is not 16 bytes".into()).into())
}

/// What a request's calls may read: their keys, the persons they may link
/// and the profiles they may change.
struct Wanted {
    keys: Vec<Vec<u8>>,
    persons: Vec<i64>,
    profile_tenants: Vec<String>,
    profile_users: Vec<String>,
}

impl Wanted {
    /// Every row `ingest::append` can ask for about `calls`, whatever it
    /// decides: loaded up front, so the rules run without a round trip each.
    fn of(calls: &[Prepared]) -> Wanted {
        let mut keys = HashSet::new();
        let mut persons = HashSet::new();
        let mut profiles = HashSet::new();
        for call in calls {
            if call.message_key != 0 {
                keys.insert(call.message_key);
            }
            let t = &call.tracked;
            let tenant = call.tenant.as_deref();
            let Some(user) = t.user_id.as_deref() else {
                continue;
            };
            profiles.insert((tenant.unwrap_or(NO_TENANT).to_owned(), user.to_owned()));
            let other = match t.call {
                Call::Alias => t.previous_id.as_deref(),
                _ => t.anonymous_id.as_deref(),
            };
            if let Some(other) = other {
                for kind in [PersonKind::Anonymous, PersonKind::User] {
                    persons.insert(person_hash(tenant, kind, other) as i64);
                }
            }
        }
        let (profile_tenants, profile_users) = profiles.into_iter().unzip();
        Wanted {
            keys: keys.into_iter().map(key_bytes).collect(),
            persons: persons.into_iter().collect(),
            profile_tenants,
            profile_users,
        }
    }
}

/// One request's transaction as the rules see it: the rows they read,
/// loaded under the head lock, and what they write, kept here and written
/// by `flush` in a few statements.
struct Staged<'a> {
    fan_out: &'a FanOut,
    next_seq: i64,
    received_at_ms: i64,
    keys: HashMap<u128, (u64, i64)>,
    links: HashMap<u64, u64>,
    profiles: HashMap<(String, String), Option<ProfileRecord>>,
    events: Events,
    deliveries: NewDeliveries,
    tracked: Tracked,
    new_keys: Vec<u128>,
    changed_links: HashSet<u64>,
    changed_profiles: HashSet<(String, String)>,
}

#[derive(Default)]
struct Events {
    seqs: Vec<i64>,
    types: Vec<String>,
    tenants: Vec<Option<String>>,
    received: Vec<i64>,
    records: Vec<Vec<u8>>,
}

#[derive(Default)]
struct Tracked {
    seqs: Vec<i64>,
    received: Vec<i64>,
    message_keys: Vec<Option<Vec<u8>>>,
    persons: Vec<i64>,
    type_keys: Vec<i64>,
    timestamps: Vec<i64>,
    sources: Vec<Option<String>>,
    mediums: Vec<Option<String>>,
    names: Vec<Option<String>>,
}

impl<'a> Staged<'a> {
    fn new(fan_out: &'a FanOut, next_seq: i64, received_at_ms: i64) -> Self {
        Staged {
            fan_out,
            next_seq,
            received_at_ms,
            keys: HashMap::new(),
            links: HashMap::new(),
            profiles: HashMap::new(),
            events: Events::default(),
            deliveries: NewDeliveries::default(),
            tracked: Tracked::default(),
            new_keys: Vec::new(),
            changed_links: HashSet::new(),
            changed_profiles: HashSet::new(),
        }
    }

    /// Writes what the rules decided. `not_before_ms` is the dedup window's
    /// start: a stored key older than it may be taken over, a newer one
    /// may not, and the primary key has the last word on that.
    async fn flush(&self, txn: &Transaction<'_>, not_before_ms: i64) -> Result<(), TrackError> {
        if self.events.seqs.is_empty() {
            // Every call was a repeat: nothing to write.
            return Ok(());
        }
        let insert_events = txn
            .prepare_typed_cached(INSERT_EVENTS, &INSERT_EVENTS_TYPES)
            .await?;
        let insert_tracked = txn
            .prepare_typed_cached(INSERT_TRACKED, &INSERT_TRACKED_TYPES)
            .await?;
        let claim_keys = txn
            .prepare_typed_cached(
                "INSERT INTO herald_track_keys (message_key, seq, received_ms) \
                 SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[]) \
                 ON CONFLICT (message_key) DO UPDATE \
                 SET seq = EXCLUDED.seq, received_ms = EXCLUDED.received_ms \
                 WHERE herald_track_keys.received_ms < $4",
                &[
                    Type::BYTEA_ARRAY,
                    Type::INT8_ARRAY,
                    Type::INT8_ARRAY,
                    Type::INT8,
                ],
            )
            .await?;
        let put_links = txn
            .prepare_typed_cached(
                "INSERT INTO herald_person_links (person, user_person) \
                 SELECT * FROM unnest($1::bigint[], $2::bigint[]) \
                 ON CONFLICT (person) DO UPDATE SET user_person = EXCLUDED.user_person",
                &[Type::INT8_ARRAY, Type::INT8_ARRAY],
            )
            .await?;
        let put_profiles = txn
            .prepare_typed_cached(
                "INSERT INTO herald_profiles (tenant, user_id, record) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) \
                 ON CONFLICT (tenant, user_id) DO UPDATE SET record = EXCLUDED.record",
                &[Type::TEXT_ARRAY, Type::TEXT_ARRAY, Type::BYTEA_ARRAY],
            )
            .await?;
        let advance_head = txn
            .prepare_typed_cached(
                "UPDATE herald_log_head SET next_seq = $1, last_received_ms = $2 WHERE id = 1",
                &[Type::INT8, Type::INT8],
            )
            .await?;

        let mut key_bytes_list = Vec::with_capacity(self.new_keys.len());
        let mut key_seqs = Vec::with_capacity(self.new_keys.len());
        let mut key_received = Vec::with_capacity(self.new_keys.len());
        for key in &self.new_keys {
            let (seq, received) = self.keys[key];
            key_bytes_list.push(key_bytes(*key));
            key_seqs.push(seq as i64);
            key_received.push(received);
        }
        let (link_persons, link_users): (Vec<i64>, Vec<i64>) = self
            .changed_links
            .iter()
            .map(|p| (*p as i64, self.links[p] as i64))
            .unzip();
        let mut profile_tenants = Vec::new();
        let mut profile_users = Vec::new();
        let mut profile_records = Vec::new();
        for key in &self.changed_profiles {
            if let Some(Some(record)) = self.profiles.get(key) {
                profile_tenants.push(key.0.clone());
                profile_users.push(key.1.clone());
                profile_records.push(codec::encode(record));
            }
        }
        let e = &self.events;
        let t = &self.tracked;
        let event_columns: [&(dyn ToSql + Sync); 5] =
            [&e.seqs, &e.types, &e.tenants, &e.received, &e.records];
        let tracked_columns: [&(dyn ToSql + Sync); 9] = [
            &t.seqs,
            &t.received,
            &t.message_keys,
            &t.persons,
            &t.type_keys,
            &t.timestamps,
            &t.sources,
            &t.mediums,
            &t.names,
        ];
        let key_columns: [&(dyn ToSql + Sync); 4] =
            [&key_bytes_list, &key_seqs, &key_received, &not_before_ms];
        let link_columns: [&(dyn ToSql + Sync); 2] = [&link_persons, &link_users];
        let profile_columns: [&(dyn ToSql + Sync); 3] =
            [&profile_tenants, &profile_users, &profile_records];
        let events = txn.execute(&insert_events, &event_columns);
        let tracked = txn.execute(&insert_tracked, &tracked_columns);
        let claimed = txn.execute(&claim_keys, &key_columns);
        let links = txn.execute(&put_links, &link_columns);
        let profiles = txn.execute(&put_profiles, &profile_columns);
        let head_columns: [&(dyn ToSql + Sync); 2] = [&self.next_seq, &self.received_at_ms];
        let head = txn.execute(&advance_head, &head_columns);
        let fanned = self.deliveries.insert(txn);
        let (events, tracked, claimed, links, profiles, head, fanned) =
            tokio::join!(events, tracked, claimed, links, profiles, head, fanned);
        events?;
        tracked?;
        links?;
        profiles?;
        head?;
        fanned?;
        if claimed? != self.new_keys.len() as u64 {
            // Another transaction stored one of these messageIds within the
            // window after all: nothing of this request is committed, and
            // its retry is answered as a repeat.
            return Err(TrackError::Failed(StoreError::Database(
                "a messageId of the request was stored meanwhile".into(),
            )));
        }
        Ok(())
    }
}

impl TrackTxn for Staged<'_> {
    fn tracked_message(
        &mut self,
        message_key: u128,
        not_before_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self
            .keys
            .get(&message_key)
            .filter(|(_, received)| *received >= not_before_ms)
            .map(|(seq, _)| *seq))
    }

    fn append_event(
        &mut self,
        row: NewEventRow,
        _now_ms: i64,
    ) -> Result<(u64, EventRecord), StoreError> {
        let seq = self.next_seq as u64;
        self.next_seq += 1;
        let (record, _, _) = row.into_record(seq, self.received_at_ms);
        self.fan_out
            .deliveries_of(seq, &record, None, &mut self.deliveries);
        let e = &mut self.events;
        e.seqs.push(seq as i64);
        e.types.push(record.event_type.clone());
        e.tenants.push(record.tenant.clone());
        e.received.push(record.received_at_ms);
        e.records.push(codec::encode(&record));
        Ok((seq, record))
    }

    fn index_tracked(&mut self, row: &TrackedRow<'_>) -> Result<(), StoreError> {
        let t = &mut self.tracked;
        t.seqs.push(row.seq as i64);
        t.received.push(row.received_ms);
        t.message_keys
            .push((row.message_key != 0).then(|| key_bytes(row.message_key)));
        t.persons.push(row.person as i64);
        t.type_keys.push(row.type_key as i64);
        t.timestamps.push(row.timestamp_ms);
        let campaign = row.campaign;
        t.sources.push(campaign.map(|c| c.0.to_owned()));
        t.mediums.push(campaign.map(|c| c.1.to_owned()));
        t.names.push(campaign.map(|c| c.2.to_owned()));
        if row.message_key != 0 {
            self.keys
                .insert(row.message_key, (row.seq, row.received_ms));
            self.new_keys.push(row.message_key);
        }
        Ok(())
    }

    fn link(
        &mut self,
        tenant: Option<&str>,
        other_id: &str,
        user_id: &str,
        kinds: &[PersonKind],
    ) -> Result<bool, StoreError> {
        let user = person_hash(tenant, PersonKind::User, user_id);
        let mut changed = false;
        for &kind in kinds {
            if kind == PersonKind::User && other_id == user_id {
                continue;
            }
            let other = person_hash(tenant, kind, other_id);
            if self.links.get(&other) == Some(&user) {
                continue;
            }
            self.links.insert(other, user);
            self.changed_links.insert(other);
            changed = true;
        }
        Ok(changed)
    }

    fn profile(
        &mut self,
        tenant: Option<&str>,
        user_id: &str,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        let key = (tenant.unwrap_or(NO_TENANT).to_owned(), user_id.to_owned());
        match self.profiles.get(&key) {
            Some(found) => Ok(found.clone()),
            None => Err(StoreError::Database(format!(
                "the profile of `{user_id}` was not loaded with the request"
            ))),
        }
    }

    fn put_profile(
        &mut self,
        tenant: Option<&str>,
        user_id: &str,
        record: &ProfileRecord,
    ) -> Result<(), StoreError> {
        let key = (tenant.unwrap_or(NO_TENANT).to_owned(), user_id.to_owned());
        self.profiles.insert(key.clone(), Some(record.clone()));
        self.changed_profiles.insert(key);
        Ok(())
    }
}

/// A query's snapshot: every method is one statement of a read-only
/// transaction, run from a blocking thread.
struct PgTrackRead<'a> {
    txn: &'a Transaction<'a>,
    handle: &'a Handle,
}

fn limit_param(limit: usize) -> i64 {
    limit.min(i64::MAX as usize) as i64
}

impl PgTrackRead<'_> {
    fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.handle
            .block_on(async {
                let statement = self.txn.prepare_cached(sql).await?;
                self.txn.query(&statement, params).await
            })
            .map_err(db)
    }

    /// Every link into `users`, directly or through others, at most
    /// `MAX_LINKS`.
    fn links_down(&self, users: &[u64]) -> Result<Vec<(u64, u64)>, StoreError> {
        let users: Vec<i64> = users.iter().map(|u| *u as i64).collect();
        // UNION, not UNION ALL: a loop of aliases adds nothing new and ends.
        let rows = self.query(
            "WITH RECURSIVE down(person, user_person) AS ( \
                 SELECT person, user_person FROM herald_person_links \
                 WHERE user_person = ANY($1::bigint[]) \
               UNION \
                 SELECT l.person, l.user_person FROM herald_person_links l \
                 JOIN down ON l.user_person = down.person) \
             SELECT person, user_person FROM down LIMIT $2",
            &[&users, &MAX_LINKS],
        )?;
        Ok(pairs(&rows))
    }

    /// The chains of links above `persons`.
    fn links_up(&self, persons: &[u64]) -> Result<Vec<(u64, u64)>, StoreError> {
        let persons: Vec<i64> = persons.iter().map(|p| *p as i64).collect();
        let rows = self.query(
            "WITH RECURSIVE up(person, user_person, depth) AS ( \
                 SELECT person, user_person, 1 FROM herald_person_links \
                 WHERE person = ANY($1::bigint[]) \
               UNION ALL \
                 SELECT l.person, l.user_person, up.depth + 1 FROM herald_person_links l \
                 JOIN up ON l.person = up.user_person WHERE up.depth < $2) \
             SELECT DISTINCT person, user_person FROM up",
            &[&persons, &CHAIN_DEPTH],
        )?;
        Ok(pairs(&rows))
    }
}

fn pairs(rows: &[tokio_postgres::Row]) -> Vec<(u64, u64)> {
    rows.iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
        .collect()
}

impl TrackRead for PgTrackRead<'_> {
    fn profile(
        &self,
        tenant: Option<&str>,
        user_id: &str,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        let rows = self.query(
            "SELECT record FROM herald_profiles WHERE tenant = $1 AND user_id = $2",
            &[&tenant.unwrap_or(NO_TENANT), &user_id],
        )?;
        match rows.first() {
            Some(row) => Ok(Some(codec::decode(row.get::<_, &[u8]>(0))?)),
            None => Ok(None),
        }
    }

    fn persons_of(&self, user: u64) -> Result<Vec<u64>, StoreError> {
        let links = self.links_down(&[user])?;
        Ok(Resolver::new(links.into_iter().collect()).persons_of(user))
    }

    fn resolver_for(&self, persons: &[u64], linked: bool) -> Result<Resolver, StoreError> {
        partial_resolver(
            persons,
            linked,
            |p| self.links_up(p),
            |u| self.links_down(u),
        )
    }

    fn person_seqs(&self, person: u64, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        let rows = self.query(
            "SELECT seq FROM herald_tracked WHERE person = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[
                &(person as i64),
                &(after.min(i64::MAX as u64) as i64),
                &limit_param(limit),
            ],
        )?;
        Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
    }

    fn person_span(&self, persons: &[u64]) -> Result<Span, StoreError> {
        let persons: Vec<i64> = persons.iter().map(|p| *p as i64).collect();
        let rows = self.query(
            "SELECT (SELECT count(*) FROM herald_tracked WHERE person = ANY($1::bigint[])), \
               (SELECT ARRAY[timestamp_ms, seq] FROM herald_tracked \
                WHERE person = ANY($1::bigint[]) ORDER BY timestamp_ms, seq LIMIT 1), \
               (SELECT ARRAY[timestamp_ms, seq] FROM herald_tracked \
                WHERE person = ANY($1::bigint[]) ORDER BY timestamp_ms DESC, seq DESC LIMIT 1)",
            &[&persons],
        )?;
        let row = &rows[0];
        let at = |i: usize| {
            row.get::<_, Option<Vec<i64>>>(i)
                .filter(|v| v.len() == 2)
                .map(|v| (v[0], v[1] as u64))
        };
        Ok((row.get::<_, i64>(0) as u64, at(1), at(2)))
    }

    fn events_at(&self, seqs: &[u64]) -> Result<Vec<(u64, Option<EventRecord>)>, StoreError> {
        let wanted: Vec<i64> = seqs.iter().map(|s| *s as i64).collect();
        let rows = self.query(
            "SELECT seq, record FROM herald_events WHERE seq = ANY($1::bigint[])",
            &[&wanted],
        )?;
        let mut found: HashMap<u64, EventRecord> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.get(0);
            found.insert(seq as u64, codec::decode(row.get::<_, &[u8]>(1))?);
        }
        Ok(seqs.iter().map(|s| (*s, found.remove(s))).collect())
    }

    fn event_hits(
        &self,
        type_key: u64,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<EventHits, StoreError> {
        let rows = self.query(
            "SELECT timestamp_ms, person FROM herald_tracked \
             WHERE type_key = $1 AND timestamp_ms >= $2 AND timestamp_ms < $3 \
             ORDER BY timestamp_ms, seq",
            &[&(type_key as i64), &since_ms, &until_ms],
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    fn event_counts(
        &self,
        type_key: u64,
        since_ms: i64,
        until_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<u64>, StoreError> {
        let buckets = ((until_ms - since_ms + bucket_ms - 1) / bucket_ms).max(0) as usize;
        let mut counts = vec![0u64; buckets];
        let rows = self.query(
            "SELECT (timestamp_ms - $2) / $4, count(*) FROM herald_tracked \
             WHERE type_key = $1 AND timestamp_ms >= $2 AND timestamp_ms < $3 \
             GROUP BY 1",
            &[&(type_key as i64), &since_ms, &until_ms, &bucket_ms],
        )?;
        for row in &rows {
            let index: i64 = row.get(0);
            if let Some(c) = usize::try_from(index).ok().and_then(|i| counts.get_mut(i)) {
                *c += row.get::<_, i64>(1) as u64;
            }
        }
        Ok(counts)
    }

    fn touches(
        &self,
        person: u64,
        until_ms: i64,
    ) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        let rows = self.query(
            "SELECT timestamp_ms, campaign_source, campaign_medium, campaign_name \
             FROM herald_tracked \
             WHERE person = $1 AND timestamp_ms <= $2 AND campaign_source IS NOT NULL \
             ORDER BY timestamp_ms, seq",
            &[&(person as i64), &until_ms],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                let text = |i: usize| r.get::<_, Option<String>>(i).unwrap_or_default();
                (r.get(0), text(1), text(2), text(3))
            })
            .collect())
    }

    fn tracked_seqs(
        &self,
        since_ms: i64,
        until_ms: i64,
        after: Option<(i64, u64)>,
        limit: usize,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        let limit = limit_param(limit);
        let rows = match after {
            Some((ms, seq)) => self.query(
                "SELECT received_ms, seq FROM herald_tracked \
                 WHERE (received_ms, seq) > ($1, $2) AND received_ms < $3 \
                 ORDER BY received_ms, seq LIMIT $4",
                &[&ms, &(seq.min(i64::MAX as u64) as i64), &until_ms, &limit],
            )?,
            None => self.query(
                "SELECT received_ms, seq FROM herald_tracked \
                 WHERE received_ms >= $1 AND received_ms < $2 \
                 ORDER BY received_ms, seq LIMIT $3",
                &[&since_ms, &until_ms, &limit],
            )?,
        };
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1) as u64))
            .collect())
    }
}
