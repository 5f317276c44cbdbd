//! The retention passes on PostgreSQL: the phases, settings and rules of
//! the redb passes (`crate::retention`, `crate::tracking::retention`), as
//! bounded statements on a connection of the node's own, with a short
//! pause between batches so that requests keep flowing.
//!
//! Every node runs this task, and one node prunes at a time: a pass starts
//! by taking a session advisory lock with `pg_try_advisory_lock`, and a node
//! that does not get it skips that pass (another node is doing the work)
//! and tries again an interval later. The lock lives with the session, so a
//! node that dies or loses its connection mid-pass frees it at once. The
//! lock only saves work: every batch re-checks, in the statement that
//! deletes or rewrites, what it decided from its earlier read (a row's
//! version, or what keeps an event), so two passes at once would do some
//! work twice and nothing worse.
//!
//! The horizons are taken from the database's clock, as event receipt
//! times and the messageId window of ingest are: one node's clock running
//! ahead must not expire what the others still count as recent.

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::{Client, Transaction};

use super::log::LOCK_HEAD;
use super::webhooks::status_code;
use super::PgError;
use crate::config::store::PostgresSettings;
use crate::retention::{Horizons, Phase, RetentionSettings, BREATHER, BUDGET, PHASES};
use crate::store::codec;
use crate::store::records::{DeliveryRecord, DeliveryStatus, EmailRecord, EventRecord};
use crate::store::retention::{plan_body_slice, settled_delivery_fate, Fate, BODIES_PURGED_TO};
use crate::store::streams::RECENT_SENDS;
use crate::tracking::retention::{BATCH as CALLS_BATCH, BREATHER as CALLS_BREATHER, DEDUP_CURSOR};
use crate::tracking::settings::TrackingSettings;

/// Advisory lock keys, beside the migrations' (`schema::MIGRATION_LOCK`).
const RETENTION_LOCK: i64 = 0x6865_7261_6c64_0002;
const TRACKING_UPKEEP_LOCK: i64 = 0x6865_7261_6c64_0003;

/// Message bytes one mail-body slice reads at most (but always one
/// message): a thousand messages of a megabyte each are not read at once.
const BODY_SLICE_BYTES: i64 = 16 << 20;

const DATABASE_NOW: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// What keeps an event from the retention of events, as an SQL condition
/// on `e`: a delivery pending or failed (a dead letter can be retried), or
/// a tracked call (tracking's own pass deletes those). The deliveries'
/// test matches the partial index `herald_deliveries_unsettled_by_event`.
macro_rules! event_still_needed {
    () => {
        "(EXISTS (SELECT 1 FROM herald_deliveries d \
                  WHERE d.event_seq = e.seq AND d.status <> 1) \
          OR EXISTS (SELECT 1 FROM herald_tracked t WHERE t.seq = e.seq))"
    };
}

/// The log's last seq, which no pass deletes whatever its age. On redb
/// sequence numbers resume from it; here the head row keeps the next one,
/// but a log that retention could empty on one backend only would be one
/// more difference for clients to meet.
macro_rules! last_seq {
    () => {
        "(SELECT next_seq - 1 FROM herald_log_head WHERE id = 1)"
    };
}

/// Starts the node's retention task; it stops at the next batch once
/// `true` is sent, and is awaited after that.
pub fn start(
    settings: PostgresSettings,
    retention: RetentionSettings,
    tracking: TrackingSettings,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopping) = watch::channel(false);
    let task = PgRetention {
        settings,
        retention,
        tracking,
    };
    (stop, tokio::spawn(task.run(Stop(stopping))))
}

struct PgRetention {
    settings: PostgresSettings,
    retention: RetentionSettings,
    tracking: TrackingSettings,
}

/// Whether the node is stopping, and pauses that end early when it is.
struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Waits until `at`; false when the node is stopping.
    async fn wait_until(&mut self, at: Instant) -> bool {
        if *self.0.borrow() {
            return false;
        }
        tokio::select! {
            // A dropped sender is a node going away too.
            _ = self.0.changed() => false,
            () = tokio::time::sleep_until(at) => true,
        }
    }

    async fn pause(&mut self, pause: Duration) -> bool {
        self.wait_until(Instant::now() + pause).await
    }
}

/// How far one batch got.
struct Slice {
    removed: usize,
    /// Where the next batch continues; `None`: the phase is done.
    next_after: Option<i64>,
}

impl Slice {
    /// A batch of a phase that deletes from the oldest on: another follows
    /// while a batch takes a whole budget.
    fn from_front(removed: u64) -> Slice {
        let removed = removed as usize;
        Slice {
            removed,
            next_after: (removed == BUDGET).then_some(0),
        }
    }
}

fn budget() -> i64 {
    BUDGET as i64
}

impl PgRetention {
    async fn run(self, mut stop: Stop) {
        let mut session: Option<Client> = None;
        let mut retention_due = Instant::now();
        let mut upkeep_due = Instant::now();
        while stop.wait_until(retention_due.min(upkeep_due)).await {
            if session.as_ref().is_none_or(Client::is_closed) {
                match super::connect(&self.settings).await {
                    Ok(client) => session = Some(client),
                    Err(e) => {
                        tracing::warn!(error = %e, "retention cannot connect; retrying at the next interval");
                        retention_due = Instant::now() + self.retention.interval;
                        upkeep_due = Instant::now() + self.tracking.prune_interval;
                        continue;
                    }
                }
            }
            let Some(client) = session.as_mut() else {
                continue;
            };
            let failed = if retention_due <= upkeep_due {
                let outcome = self.retention_pass(client, &mut stop).await;
                retention_due = Instant::now() + self.retention.interval;
                outcome.err().inspect(|e| {
                    tracing::warn!(error = %e, "retention failed; retrying at the next interval");
                })
            } else {
                let outcome = self.upkeep_pass(client, &mut stop).await;
                upkeep_due = Instant::now() + self.tracking.prune_interval;
                outcome.err().inspect(|e| {
                    tracing::warn!(error = %e, "tracking upkeep failed; retrying at the next interval");
                })
            };
            if failed.is_some() {
                // Its advisory lock goes with the session.
                session = None;
            }
        }
    }

    /// `crate::retention`'s pass: every phase in order, when no other node
    /// is running it.
    async fn retention_pass(&self, client: &mut Client, stop: &mut Stop) -> Result<(), PgError> {
        if !try_lock(client, RETENTION_LOCK).await? {
            return Ok(());
        }
        self.retention_phases(client, stop).await?;
        unlock(client, RETENTION_LOCK).await
    }

    async fn retention_phases(&self, client: &mut Client, stop: &mut Stop) -> Result<(), PgError> {
        for phase in PHASES {
            let mut after = 0;
            let mut removed = 0;
            loop {
                let horizons = self.retention.horizons(database_now(client).await?);
                let Some(slice) = slice(client, phase, &horizons, after).await? else {
                    break;
                };
                removed += slice.removed;
                let Some(next) = slice.next_after else {
                    break;
                };
                after = next;
                if !stop.pause(BREATHER).await {
                    return Ok(());
                }
            }
            if removed > 0 {
                tracing::info!(phase = ?phase, removed, "retention removed what aged out");
            }
        }
        Ok(())
    }

    /// `tracking::retention`'s upkeep: messageId keys past the dedup window
    /// expire, then calls past the tracking retention go.
    async fn upkeep_pass(&self, client: &mut Client, stop: &mut Stop) -> Result<(), PgError> {
        if !try_lock(client, TRACKING_UPKEEP_LOCK).await? {
            return Ok(());
        }
        self.upkeep(client, stop).await?;
        unlock(client, TRACKING_UPKEEP_LOCK).await
    }

    async fn upkeep(&self, client: &mut Client, stop: &mut Stop) -> Result<(), PgError> {
        let window = self.tracking.dedup_window.as_millis() as i64;
        loop {
            let before = database_now(client).await? - window;
            if expire_keys(client, before).await? < CALLS_BATCH {
                break;
            }
            if !stop.pause(CALLS_BREATHER).await {
                return Ok(());
            }
        }
        let Some(retention) = self.tracking.retention else {
            return Ok(());
        };
        let mut after = (i64::MIN, 0);
        loop {
            let before = database_now(client).await? - retention.as_millis() as i64;
            let (removed, last) = remove_old_calls(client, before, after).await?;
            if removed > 0 {
                tracing::info!(removed, "pruned tracked calls past retention");
            }
            let Some(last) = last else {
                return Ok(());
            };
            after = last;
            if !stop.pause(CALLS_BREATHER).await {
                return Ok(());
            }
        }
    }
}

async fn database_now(client: &Client) -> Result<i64, PgError> {
    Ok(client.query_one(DATABASE_NOW, &[]).await?.get(0))
}

async fn try_lock(client: &Client, key: i64) -> Result<bool, PgError> {
    Ok(client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await?
        .get(0))
}

async fn unlock(client: &Client, key: i64) -> Result<(), PgError> {
    client
        .query_one("SELECT pg_advisory_unlock($1)", &[&key])
        .await?;
    Ok(())
}

/// One batch of `phase`; `None` when its retention is not set.
async fn slice(
    client: &mut Client,
    phase: Phase,
    horizons: &Horizons,
    after: i64,
) -> Result<Option<Slice>, PgError> {
    let slice = match phase {
        Phase::Tallies => {
            let table = (
                "herald_attempt_tally",
                "endpoint_id, minute, shard",
                "minute",
            );
            delete_older(client, table, horizons.tally_minute).await?
        }
        Phase::StreamTallies => {
            let table = ("herald_stream_tally", "stream, bucket_ms", "bucket_ms");
            delete_older(client, table, horizons.stream_tally_ms).await?
        }
        // Every stream that ever sent has a state row; its sends older
        // than its newest 1,000 are read by nothing.
        Phase::StreamSends => Slice::from_front(
            client
                .execute(
                    "DELETE FROM herald_stream_sends s USING ( \
                       SELECT old.stream, old.email_id FROM herald_stream_states st \
                       CROSS JOIN LATERAL (SELECT email_id FROM herald_stream_sends \
                         WHERE stream = st.stream ORDER BY email_id DESC OFFSET $1 LIMIT 1) b \
                       CROSS JOIN LATERAL (SELECT stream, email_id FROM herald_stream_sends \
                         WHERE stream = st.stream AND email_id <= b.email_id \
                         ORDER BY email_id LIMIT $2) old \
                       LIMIT $2) beyond \
                     WHERE s.stream = beyond.stream AND s.email_id = beyond.email_id",
                    &[&i64::from(RECENT_SENDS), &budget()],
                )
                .await?,
        ),
        Phase::ReplayTokens => {
            let table = ("herald_replay_tokens", "provider, token", "spent_at_ms");
            delete_older(client, table, horizons.replay_token_ms).await?
        }
        Phase::Deliveries | Phase::DeadLetters => {
            let Some((status, before)) = horizons.settled(phase) else {
                return Ok(None);
            };
            settled_deliveries(client, status, before, after).await?
        }
        Phase::Events => {
            let Some(before) = horizons.events_ms else {
                return Ok(None);
            };
            aged_events(client, before, after).await?
        }
        Phase::MailBodies => {
            let Some(before) = horizons.mail_bodies_ms else {
                return Ok(None);
            };
            mail_bodies(client, before, after).await?
        }
        Phase::Feedback => {
            let Some(before) = horizons.feedback_ms else {
                return Ok(None);
            };
            old_feedback(client, before, after).await?
        }
    };
    Ok(Some(slice))
}

/// Deletes deliveries in `status` that settled before `before_ms`, as the
/// redb sweep decides (`settled_delivery_fate`), examining at most a
/// budget after id `after`. A delivery is deleted only in the version that
/// was judged: one a recover put back on the schedule, or a manual retry
/// attempted, since stays. The endpoint's counts are counted from the rows
/// and its attempt tallies stay, as on redb.
async fn settled_deliveries(
    client: &Client,
    status: DeliveryStatus,
    before_ms: i64,
    after: i64,
) -> Result<Slice, PgError> {
    let rows = client
        .query(
            "SELECT id, xmin::text, record FROM herald_deliveries \
             WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&status_code(status), &after, &budget()],
        )
        .await?;
    let mut ids: Vec<i64> = Vec::new();
    let mut versions: Vec<String> = Vec::new();
    let mut reached_young = false;
    for row in &rows {
        let record: DeliveryRecord = codec::decode(row.get::<_, &[u8]>(2))?;
        match settled_delivery_fate(&record, before_ms) {
            Fate::Stop => {
                reached_young = true;
                break;
            }
            Fate::Keep => {}
            Fate::Delete => {
                ids.push(row.get(0));
                versions.push(row.get(1));
            }
        }
    }
    let removed = if ids.is_empty() {
        0
    } else {
        client
            .execute(
                "DELETE FROM herald_deliveries d \
                 USING unnest($1::bigint[], $2::text[]) AS c(id, version) \
                 WHERE d.id = c.id AND d.xmin = c.version::xid",
                &[&ids, &versions],
            )
            .await?
    };
    Ok(Slice {
        removed: removed as usize,
        next_after: (!reached_young && rows.len() == BUDGET)
            .then(|| rows.last().map(|r| r.get::<_, i64>(0)))
            .flatten(),
    })
}

/// Deletes a budget of the rows of `table` (its name, its key's columns
/// and the column it ages by) older than `before`: rows nothing reads once
/// past a horizon, whose order of deletion does not matter.
async fn delete_older(
    client: &Client,
    (table, key, aged_by): (&str, &str, &str),
    before: i64,
) -> Result<Slice, PgError> {
    let removed = client
        .execute(
            &format!(
                "DELETE FROM {table} WHERE ({key}) IN \
                 (SELECT {key} FROM {table} WHERE {aged_by} < $1 LIMIT $2)"
            ),
            &[&before, &budget()],
        )
        .await?;
    Ok(Slice::from_front(removed))
}

/// Deletes log events received before `before_ms` with their idempotency
/// keys, examining at most a budget after seq `after`, except what
/// `event_still_needed!` keeps and the log's last event. Received times
/// never decrease along the log, so the first young event bounds the scan.
/// A deleted event's position simply disappears: cursors go by seq and
/// pass over the gap.
async fn aged_events(client: &mut Client, before_ms: i64, after: i64) -> Result<Slice, PgError> {
    let rows = client
        .query(
            concat!(
                "SELECT e.seq, NOT ",
                event_still_needed!(),
                " FROM herald_events e WHERE e.seq > $1 AND e.seq < least(",
                "coalesce((SELECT seq FROM herald_events WHERE received_at_ms >= $2 \
                 ORDER BY received_at_ms, seq LIMIT 1), 9223372036854775807), ",
                last_seq!(),
                ") ORDER BY e.seq LIMIT $3"
            ),
            &[&after, &before_ms, &budget()],
        )
        .await?;
    let free: Vec<i64> = rows
        .iter()
        .filter(|row| row.get::<_, bool>(1))
        .map(|row| row.get(0))
        .collect();
    let mut removed = 0;
    if !free.is_empty() {
        let txn = client.transaction().await?;
        removed = delete_events(&txn, &free, Keep::StillNeeded).await?.len();
        txn.commit().await?;
    }
    Ok(Slice {
        removed,
        next_after: (rows.len() == BUDGET)
            .then(|| rows.last().map(|r| r.get::<_, i64>(0)))
            .flatten(),
    })
}

/// What spares an event a deletion of `delete_events`.
#[derive(Clone, Copy)]
enum Keep {
    /// The retention of events: `event_still_needed!`.
    StillNeeded,
    /// Tracking's upkeep deleting its own calls: nothing, as on redb.
    Nothing,
}

/// Deletes the events at `seqs` that `keep` does not spare, with the
/// idempotency keys that name them; answers the seqs deleted.
///
/// The events are locked first and checked in a statement after that: a
/// replay locks the events it delivers again (`FOR KEY SHARE`) before it
/// inserts their deliveries, so either it waits for this deletion and
/// finds the event gone, or its deliveries are committed before the check
/// reads. Events a replay holds right now are skipped until a later pass.
async fn delete_events(
    txn: &Transaction<'_>,
    seqs: &[i64],
    keep: Keep,
) -> Result<Vec<i64>, PgError> {
    let locked: Vec<i64> = txn
        .query(
            "SELECT seq FROM herald_events WHERE seq = ANY($1) \
             ORDER BY seq FOR UPDATE SKIP LOCKED",
            &[&seqs],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if locked.is_empty() {
        return Ok(Vec::new());
    }
    let delete = match keep {
        Keep::StillNeeded => concat!(
            "DELETE FROM herald_events e WHERE e.seq = ANY($1) AND NOT ",
            event_still_needed!(),
            " RETURNING e.seq, e.record"
        ),
        Keep::Nothing => {
            "DELETE FROM herald_events e WHERE e.seq = ANY($1) RETURNING e.seq, e.record"
        }
    };
    let deleted = txn.query(delete, &[&locked]).await?;
    let mut gone = Vec::with_capacity(deleted.len());
    let (mut key_tenants, mut keys, mut key_seqs) = (Vec::new(), Vec::new(), Vec::new());
    for row in &deleted {
        let seq: i64 = row.get(0);
        gone.push(seq);
        let event: EventRecord = codec::decode(row.get::<_, &[u8]>(1))?;
        if let Some(key) = event.idempotency_key {
            key_tenants.push(event.tenant.unwrap_or_default());
            keys.push(key);
            key_seqs.push(seq);
        }
    }
    if !keys.is_empty() {
        // Under the head's lock, which a group commit holds from its key
        // lookup to its commit: no group finds a key here and then misses
        // the event it names. Taken last, it is held only for this.
        txn.query_one(LOCK_HEAD, &[]).await?;
        txn.execute(
            "DELETE FROM herald_event_keys k \
             USING unnest($1::text[], $2::text[], $3::bigint[]) AS g(tenant, key, seq) \
             WHERE k.tenant = g.tenant AND k.key = g.key AND k.seq = g.seq",
            &[&key_tenants, &keys, &key_seqs],
        )
        .await?;
    }
    Ok(gone)
}

/// Where a sweep got to, from `herald_retention_marks`: (ms, id or seq).
async fn mark(client: &Client, name: &str) -> Result<Option<(i64, i64)>, PgError> {
    Ok(client
        .query_opt(
            "SELECT at_ms, through FROM herald_retention_marks WHERE name = $1",
            &[&name],
        )
        .await?
        .map(|row| (row.get(0), row.get(1))))
}

/// Moves a mark forward (never back: a slower pass must not undo a faster).
async fn advance_mark(
    txn: &Transaction<'_>,
    name: &str,
    at_ms: i64,
    through: i64,
) -> Result<(), PgError> {
    txn.execute(
        "INSERT INTO herald_retention_marks (name, at_ms, through) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET at_ms = EXCLUDED.at_ms, through = EXCLUDED.through \
         WHERE (herald_retention_marks.at_ms, herald_retention_marks.through) \
             < (EXCLUDED.at_ms, EXCLUDED.through)",
        &[&name, &at_ms, &through],
    )
    .await?;
    Ok(())
}

/// Empties the text and HTML of settled messages queued before
/// `before_ms`, as the redb sweep decides (`plan_body_slice`), after id
/// `after` or the mark below which every message is settled and bodiless.
/// A message is rewritten only in the version that was judged: one that
/// changed meanwhile (feedback marked it bounced, say) keeps its body until
/// a later pass, and the mark stays below it.
async fn mail_bodies(client: &mut Client, before_ms: i64, after: i64) -> Result<Slice, PgError> {
    let purged_to = mark(client, BODIES_PURGED_TO)
        .await?
        .map_or(0, |(_, id)| id);
    let from = after.max(purged_to);
    let sizes = client
        .query(
            "SELECT id, octet_length(record) FROM herald_emails \
             WHERE id > $1 ORDER BY id LIMIT $2",
            &[&from, &budget()],
        )
        .await?;
    let mut through = None;
    let mut bytes = 0i64;
    let mut taken = 0;
    for row in &sizes {
        let size = i64::from(row.get::<_, i32>(1));
        if taken > 0 && bytes + size > BODY_SLICE_BYTES {
            break;
        }
        bytes += size;
        taken += 1;
        through = Some(row.get::<_, i64>(0));
    }
    let Some(through) = through else {
        return Ok(Slice {
            removed: 0,
            next_after: None,
        });
    };
    let rows = client
        .query(
            "SELECT id, xmin::text, record FROM herald_emails \
             WHERE id > $1 AND id <= $2 ORDER BY id",
            &[&from, &through],
        )
        .await?;
    let mut records = Vec::with_capacity(rows.len());
    let mut versions = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let id = row.get::<_, i64>(0) as u64;
        let record: EmailRecord = codec::decode(row.get::<_, &[u8]>(2))?;
        versions.insert(id, row.get::<_, String>(1));
        records.push((id, record));
    }
    // A slice cut short by its bytes has more after it, as a full one does.
    let budget = if taken < sizes.len() {
        records.len()
    } else {
        BUDGET
    };
    let plan = plan_body_slice(records, purged_to as u64, after as u64, before_ms, budget);
    let txn = client.transaction().await?;
    let mut rewritten: HashSet<i64> = HashSet::new();
    if !plan.emptied.is_empty() {
        let ids: Vec<i64> = plan.emptied.iter().map(|(id, _)| *id as i64).collect();
        let judged: Vec<&str> = plan
            .emptied
            .iter()
            .map(|(id, _)| versions.get(id).map_or("", String::as_str))
            .collect();
        let emptied: Vec<Vec<u8>> = plan.emptied.iter().map(|(_, r)| codec::encode(r)).collect();
        rewritten = txn
            .query(
                "UPDATE herald_emails e SET record = c.record \
                 FROM unnest($1::bigint[], $2::text[], $3::bytea[]) AS c(id, version, record) \
                 WHERE e.id = c.id AND e.xmin = c.version::xid RETURNING e.id",
                &[&ids, &judged, &emptied],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
    }
    let missed = plan
        .emptied
        .iter()
        .map(|(id, _)| *id as i64)
        .find(|id| !rewritten.contains(id));
    let mark_to = match missed {
        Some(missed) => (plan.purged_to as i64).min(missed - 1),
        None => plan.purged_to as i64,
    };
    if mark_to > purged_to {
        advance_mark(&txn, BODIES_PURGED_TO, 0, mark_to).await?;
    }
    txn.commit().await?;
    Ok(Slice {
        removed: rewritten.len(),
        next_after: plan.next_after.map(|id| id as i64),
    })
}

/// Deletes feedback received before `before_ms`, examining at most a
/// budget after id `after`; its dedupe key is the row's own, and goes with
/// it. The newest record stays whatever its age: ids go on from it.
async fn old_feedback(client: &Client, before_ms: i64, after: i64) -> Result<Slice, PgError> {
    let rows = client
        .query(
            "SELECT id, received_at_ms FROM herald_feedback \
             WHERE id > $1 AND id < (SELECT max(id) FROM herald_feedback) \
             ORDER BY id LIMIT $2",
            &[&after, &budget()],
        )
        .await?;
    let old: Vec<i64> = rows
        .iter()
        .take_while(|row| row.get::<_, i64>(1) < before_ms)
        .map(|row| row.get(0))
        .collect();
    let reached_young = old.len() < rows.len();
    let removed = if old.is_empty() {
        0
    } else {
        client
            .execute("DELETE FROM herald_feedback WHERE id = ANY($1)", &[&old])
            .await?
    };
    Ok(Slice {
        removed: removed as usize,
        next_after: (!reached_young && rows.len() == BUDGET)
            .then(|| old.last().copied())
            .flatten(),
    })
}

/// Tracked calls received before `before_ms` after (ms, seq) `after`, in
/// arrival order, at most a batch; `below_last` leaves out the log's last
/// event.
async fn calls_before(
    client: &Client,
    before_ms: i64,
    after: (i64, i64),
    below_last: bool,
) -> Result<Vec<(i64, i64, Option<Vec<u8>>)>, PgError> {
    let sql = if below_last {
        concat!(
            "SELECT received_ms, seq, message_key FROM herald_tracked \
             WHERE (received_ms, seq) > ($1, $2) AND received_ms < $3 AND seq < ",
            last_seq!(),
            " ORDER BY received_ms, seq LIMIT $4"
        )
    } else {
        "SELECT received_ms, seq, message_key FROM herald_tracked \
         WHERE (received_ms, seq) > ($1, $2) AND received_ms < $3 \
         ORDER BY received_ms, seq LIMIT $4"
    };
    Ok(client
        .query(
            sql,
            &[&after.0, &after.1, &before_ms, &(CALLS_BATCH as i64)],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect())
}

/// Forgets the messageId keys of calls received before `before_ms` that
/// still name them, from where the last expiry stopped; answers the calls
/// looked at. Ingest ignores a key older than the window anyway, and takes
/// one over; the primary key decides between the two.
async fn expire_keys(client: &mut Client, before_ms: i64) -> Result<usize, PgError> {
    let after = mark(client, DEDUP_CURSOR).await?.unwrap_or((i64::MIN, 0));
    let calls = calls_before(client, before_ms, after, false).await?;
    let Some(&(last_ms, last_seq, _)) = calls.last() else {
        return Ok(0);
    };
    let (keys, seqs): (Vec<Vec<u8>>, Vec<i64>) = calls
        .iter()
        .filter_map(|(_, seq, key)| key.clone().map(|key| (key, *seq)))
        .unzip();
    let txn = client.transaction().await?;
    forget_keys(&txn, &keys, &seqs).await?;
    advance_mark(&txn, DEDUP_CURSOR, last_ms, last_seq).await?;
    txn.commit().await?;
    Ok(calls.len())
}

/// Deletes the messageId keys that still name the call at the same place.
async fn forget_keys(txn: &Transaction<'_>, keys: &[Vec<u8>], seqs: &[i64]) -> Result<(), PgError> {
    if keys.is_empty() {
        return Ok(());
    }
    txn.execute(
        "DELETE FROM herald_track_keys k \
         USING unnest($1::bytea[], $2::bigint[]) AS g(message_key, seq) \
         WHERE k.message_key = g.message_key AND k.seq = g.seq",
        &[&keys, &seqs],
    )
    .await?;
    Ok(())
}

/// Deletes one batch of calls received before `before_ms` after `after`,
/// each with its event, its index row and its messageId key, except the
/// log's last event; answers how many went and, when the batch was full,
/// where the next continues.
async fn remove_old_calls(
    client: &mut Client,
    before_ms: i64,
    after: (i64, i64),
) -> Result<(usize, Option<(i64, i64)>), PgError> {
    let calls = calls_before(client, before_ms, after, true).await?;
    let Some(&(last_ms, last_seq, _)) = calls.last() else {
        return Ok((0, None));
    };
    let seqs: Vec<i64> = calls.iter().map(|(_, seq, _)| *seq).collect();
    let txn = client.transaction().await?;
    let gone: HashSet<i64> = delete_events(&txn, &seqs, Keep::Nothing)
        .await?
        .into_iter()
        .collect();
    let gone_seqs: Vec<i64> = gone.iter().copied().collect();
    txn.execute(
        "DELETE FROM herald_tracked WHERE seq = ANY($1)",
        &[&gone_seqs],
    )
    .await?;
    let (keys, key_seqs): (Vec<Vec<u8>>, Vec<i64>) = calls
        .iter()
        .filter(|(_, seq, _)| gone.contains(seq))
        .filter_map(|(_, seq, key)| key.clone().map(|key| (key, *seq)))
        .unzip();
    forget_keys(&txn, &keys, &key_seqs).await?;
    txn.commit().await?;
    let next = (calls.len() == CALLS_BATCH).then_some((last_ms, last_seq));
    Ok((gone.len(), next))
}
