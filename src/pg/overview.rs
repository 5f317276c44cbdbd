//! The dashboard overview's reading on PostgreSQL: the same figures as on
//! redb (`store::overview`), from one read-only snapshot of the tables
//! every node shares, each read bounded by an index: a seek into the log
//! per minute boundary, the hour's tally rows per endpoint, the queues and
//! each stream's waiting mail counted up to a cap.

use std::collections::BTreeMap;

use deadpool_postgres::Pool;
use tokio_postgres::GenericClient;

use super::backlog;
use super::mail_txn;
use super::PgError;
use crate::store::attempt_tally::AttemptTally;
use crate::store::due::Bounded;
use crate::store::mail::email_status_code;
use crate::store::overview::{OverviewReading, OverviewRequest, StreamNow};
use crate::store::records::EmailStatus;

/// The overview's reading and the database's size, read together.
pub async fn read(pool: &Pool, asked: &OverviewRequest) -> Result<(OverviewReading, u64), PgError> {
    let mut client = pool.get().await?;
    let txn = super::snapshot(&mut client).await?;
    let log_positions = log_positions_at(&*txn, &asked.boundaries()).await?;
    let per_minute = attempt_tallies(
        &*txn,
        asked.first_minute,
        asked.first_minute + asked.minutes,
    )
    .await?;
    let (webhooks, mail) = backlog::queues(&*txn, asked.count_cap).await?;
    let mut streams = Vec::with_capacity(asked.streams.len());
    for name in &asked.streams {
        streams.push(StreamNow {
            state: mail_txn::stream_state(&*txn, name).await?,
            windows: mail_txn::stream_windows(&*txn, name, asked.now_ms).await?,
            queued: stream_status_count(&*txn, name, EmailStatus::Queued, asked.count_cap).await?,
            deferred: stream_status_count(&*txn, name, EmailStatus::Deferred, asked.count_cap)
                .await?,
            name: name.clone(),
        });
    }
    let database_bytes = backlog::database_bytes(&*txn).await?;
    txn.commit().await?;
    let reading = OverviewReading {
        log_positions,
        per_minute,
        webhooks,
        mail,
        streams,
    };
    Ok((reading, database_bytes))
}

/// For each of `boundaries` (ascending Unix ms), the log position reached
/// by then, as `ReadTxn::log_positions_at` defines it: the first event
/// received at or after it, or the next position the head will hand out.
/// Received times never decrease along positions, so each boundary is one
/// seek into the received-time index.
async fn log_positions_at(
    client: &impl GenericClient,
    boundaries: &[i64],
) -> Result<Vec<u64>, PgError> {
    let rows = client
        .query(
            "SELECT coalesce( \
                 (SELECT e.seq FROM herald_events e WHERE e.received_at_ms >= b.at \
                  ORDER BY e.received_at_ms, e.seq LIMIT 1), \
                 (SELECT next_seq FROM herald_log_head WHERE id = 1)) \
             FROM unnest($1::bigint[]) WITH ORDINALITY AS b (at, n) ORDER BY b.n",
            &[&boundaries],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| row.get::<_, i64>(0).max(0) as u64)
        .collect())
}

/// Every endpoint's attempt tallies of minutes `from_minute` up to
/// `to_minute` (excluded), added up by minute: a range of the primary key
/// per endpoint, whatever history the table holds.
async fn attempt_tallies(
    client: &impl GenericClient,
    from_minute: i64,
    to_minute: i64,
) -> Result<BTreeMap<i64, AttemptTally>, PgError> {
    let rows = client
        .query(
            "SELECT a.minute, a.tally FROM herald_endpoints e \
             JOIN herald_attempt_tally a \
               ON a.endpoint_id = e.id AND a.minute >= $1 AND a.minute < $2",
            &[&from_minute, &to_minute],
        )
        .await?;
    let mut per_minute: BTreeMap<i64, AttemptTally> = BTreeMap::new();
    for row in rows {
        let tally = AttemptTally::decode(row.get::<_, &[u8]>(1))?;
        per_minute.entry(row.get(0)).or_default().merge(&tally);
    }
    Ok(per_minute)
}

/// The messages of `stream` now in `status`, counted up to `cap`.
async fn stream_status_count(
    client: &impl GenericClient,
    stream: &str,
    status: EmailStatus,
    cap: u64,
) -> Result<Bounded, PgError> {
    let cap = cap as i64;
    let code = i16::from(email_status_code(status));
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM herald_emails \
                 WHERE status = $1 AND stream = $2 LIMIT $3::bigint + 1) waiting",
            &[&code, &stream, &cap],
        )
        .await?
        .get(0);
    Ok(Bounded {
        count: count.min(cap) as u64,
        capped: count > cap,
    })
}
