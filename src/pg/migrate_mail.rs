//! `herald migrate`'s mail part: messages, their ESP feedback, idempotency
//! keys, suppression lists, soft-bounce days, the relay's ids, the
//! reputation guard's state per stream; and the keys of the links Herald
//! hands out (unsubscribe and portal links).
//!
//! As with deliveries, every run goes over all of them and writes only the
//! rows that differ, a chunk per transaction checked against the import's
//! position (`migrate::hold`): a repeated run rewrites nothing it wrote.
//! Messages keep their ids, so API ids and links in sent mail stay valid.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::import::{hold, Halt};
use super::PgError;
use crate::store::codec;
use crate::store::feedback::FeedbackFilter;
use crate::store::mail::{email_status_code, EmailFilter};
use crate::store::ReadTxn;

/// Rows per transaction.
const CHUNK: usize = 2_000;

/// What the mail part wrote, and what the file holds.
#[derive(Debug, Default)]
pub struct MailCopied {
    pub emails: u64,
    pub file_emails: u64,
    pub suppressions: u64,
    pub file_suppressions: u64,
    pub feedback: u64,
    /// Keys, soft bounces, relay ids and stream rows together.
    pub other_rows: u64,
}

/// Runs `sql` with `params` (one array per column) in a transaction that
/// first checks the import stands at `expected`; the rows it wrote.
pub(super) async fn upsert(
    client: &mut Client,
    expected: Option<u64>,
    sql: &str,
    types: &[Type],
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, Halt> {
    let txn = client.transaction().await.map_err(PgError::from)?;
    hold(&txn, expected).await?.map_err(Halt::Refused)?;
    let statement = txn.prepare_typed(sql, types).await.map_err(PgError::from)?;
    let written = txn
        .execute(&statement, params)
        .await
        .map_err(PgError::from)?;
    txn.commit().await.map_err(PgError::from)?;
    Ok(written)
}

pub(super) fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

const UPSERT_EMAILS: &str = "INSERT INTO herald_emails \
       (id, tenant, recipient, stream, status, next_attempt_ms, record) \
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::smallint[], \
       $6::bigint[], $7::bytea[]) \
     ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, \
       next_attempt_ms = EXCLUDED.next_attempt_ms, record = EXCLUDED.record, \
       lease_token = NULL, lease_until_ms = 0 \
     WHERE herald_emails.record IS DISTINCT FROM EXCLUDED.record";

const UPSERT_FEEDBACK: &str = "INSERT INTO herald_feedback \
       (id, provider, event_id, kind, address, email_id, tenant, received_at_ms, record) \
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], \
       $6::bigint[], $7::text[], $8::bigint[], $9::bytea[]) \
     ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record \
     WHERE herald_feedback.record IS DISTINCT FROM EXCLUDED.record";

const UPSERT_SUPPRESSIONS: &str = "INSERT INTO herald_suppressions \
       (tenant, address, stream, reason, record) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[]) \
     ON CONFLICT (tenant, address, stream) DO UPDATE SET reason = EXCLUDED.reason, \
       record = EXCLUDED.record \
     WHERE herald_suppressions.record IS DISTINCT FROM EXCLUDED.record";

const UPSERT_KEYS: &str = "INSERT INTO herald_email_keys \
       (tenant, key, first_id, count, fingerprint) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::integer[], $5::bigint[]) \
     ON CONFLICT (tenant, key) DO NOTHING";

const UPSERT_SOFT_BOUNCES: &str = "INSERT INTO herald_soft_bounces (address, record) \
     SELECT * FROM unnest($1::text[], $2::bytea[]) \
     ON CONFLICT (address) DO UPDATE SET record = EXCLUDED.record \
     WHERE herald_soft_bounces.record IS DISTINCT FROM EXCLUDED.record";

const UPSERT_PROVIDER_IDS: &str = "INSERT INTO herald_provider_message_ids \
       (provider_id, email_id) SELECT * FROM unnest($1::text[], $2::bigint[]) \
     ON CONFLICT (provider_id) DO NOTHING";

const UPSERT_STREAM_STATES: &str = "INSERT INTO herald_stream_states (stream, paused, record) \
     SELECT * FROM unnest($1::text[], $2::boolean[], $3::bytea[]) \
     ON CONFLICT (stream) DO UPDATE SET paused = EXCLUDED.paused, record = EXCLUDED.record \
     WHERE herald_stream_states.record IS DISTINCT FROM EXCLUDED.record";

const UPSERT_STREAM_TALLY: &str = "INSERT INTO herald_stream_tally \
       (stream, bucket_ms, sent, hard_bounces, complaints) \
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::integer[], $4::integer[], $5::integer[]) \
     ON CONFLICT (stream, bucket_ms) DO UPDATE SET sent = EXCLUDED.sent, \
       hard_bounces = EXCLUDED.hard_bounces, complaints = EXCLUDED.complaints";

const UPSERT_STREAM_SENDS: &str = "INSERT INTO herald_stream_sends (stream, email_id, outcome) \
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::smallint[]) \
     ON CONFLICT (stream, email_id) DO UPDATE SET outcome = EXCLUDED.outcome";

/// Copies the mail state of `snapshot`.
pub(super) async fn copy_mail(
    client: &mut Client,
    snapshot: &ReadTxn,
    expected: Option<u64>,
) -> Result<MailCopied, Halt> {
    let mut copied = MailCopied::default();
    let mut after = 0;
    loop {
        let page = snapshot.scan_emails(&EmailFilter::default(), after, CHUNK)?;
        let Some(&(last, _)) = page.emails.last() else {
            break;
        };
        let rows = &page.emails;
        let ids: Vec<i64> = rows.iter().map(|(id, _)| i64_of(*id)).collect();
        let tenants: Vec<Option<&str>> = rows.iter().map(|(_, r)| r.tenant.as_deref()).collect();
        let to: Vec<&str> = rows.iter().map(|(_, r)| r.to.as_str()).collect();
        let streams: Vec<&str> = rows.iter().map(|(_, r)| r.stream.as_str()).collect();
        let statuses: Vec<i16> = rows
            .iter()
            .map(|(_, r)| i16::from(email_status_code(r.status)))
            .collect();
        let due: Vec<Option<i64>> = rows.iter().map(|(_, r)| r.next_attempt_ms).collect();
        let records: Vec<Vec<u8>> = rows.iter().map(|(_, r)| codec::encode(r)).collect();
        copied.file_emails += rows.len() as u64;
        copied.emails += upsert(
            client,
            expected,
            UPSERT_EMAILS,
            &[
                Type::INT8_ARRAY,
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
                Type::INT2_ARRAY,
                Type::INT8_ARRAY,
                Type::BYTEA_ARRAY,
            ],
            &[&ids, &tenants, &to, &streams, &statuses, &due, &records],
        )
        .await?;
        after = last;
        eprintln!(
            "herald migrate: emails through id {last}: {} read, {} new or changed",
            copied.file_emails, copied.emails
        );
    }
    let mut after = 0;
    loop {
        let page = snapshot.scan_feedback(&FeedbackFilter::default(), after, CHUNK)?;
        let Some(&(last, _)) = page.feedback.last() else {
            break;
        };
        let rows = &page.feedback;
        let ids: Vec<i64> = rows.iter().map(|(id, _)| i64_of(*id)).collect();
        let text = |f: fn(&crate::store::records::FeedbackRecord) -> &str| -> Vec<&str> {
            rows.iter().map(|(_, r)| f(r)).collect()
        };
        let providers = text(|r| r.provider.as_str());
        let event_ids = text(|r| r.event_id.as_str());
        let kinds = text(|r| r.kind.as_str());
        let addresses = text(|r| r.address.as_str());
        let emails: Vec<Option<i64>> = rows.iter().map(|(_, r)| r.email_id.map(i64_of)).collect();
        let tenants: Vec<Option<&str>> = rows.iter().map(|(_, r)| r.tenant.as_deref()).collect();
        let received: Vec<i64> = rows.iter().map(|(_, r)| r.received_at_ms).collect();
        let records: Vec<Vec<u8>> = rows.iter().map(|(_, r)| codec::encode(r)).collect();
        copied.feedback += upsert(
            client,
            expected,
            UPSERT_FEEDBACK,
            &[
                Type::INT8_ARRAY,
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
                Type::INT8_ARRAY,
                Type::TEXT_ARRAY,
                Type::INT8_ARRAY,
                Type::BYTEA_ARRAY,
            ],
            &[
                &ids, &providers, &event_ids, &kinds, &addresses, &emails, &tenants, &received,
                &records,
            ],
        )
        .await?;
        after = last;
    }

    let tables = snapshot.mail_tables()?;
    copied.file_suppressions = tables.suppressions.len() as u64;
    for chunk in tables.suppressions.chunks(CHUNK) {
        let tenants: Vec<&str> = chunk
            .iter()
            .map(|(t, ..)| super::mail_txn::tenant_column(t.as_deref()))
            .collect();
        let addresses: Vec<&str> = chunk.iter().map(|(_, a, ..)| a.as_str()).collect();
        let streams: Vec<&str> = chunk.iter().map(|(_, _, s, _)| s.as_str()).collect();
        let reasons: Vec<&str> = chunk.iter().map(|(.., r)| r.reason.as_str()).collect();
        let records: Vec<Vec<u8>> = chunk.iter().map(|(.., r)| codec::encode(r)).collect();
        copied.suppressions += upsert(
            client,
            expected,
            UPSERT_SUPPRESSIONS,
            &[
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
                Type::BYTEA_ARRAY,
            ],
            &[&tenants, &addresses, &streams, &reasons, &records],
        )
        .await?;
    }
    for chunk in tables.email_keys.chunks(CHUNK) {
        let tenants: Vec<&str> = chunk
            .iter()
            .map(|(t, ..)| super::mail_txn::tenant_column(t.as_deref()))
            .collect();
        let keys: Vec<&str> = chunk.iter().map(|(_, k, ..)| k.as_str()).collect();
        let firsts: Vec<i64> = chunk.iter().map(|(_, _, f, ..)| i64_of(*f)).collect();
        let counts: Vec<i32> = chunk.iter().map(|(.., c, _)| *c as i32).collect();
        let fingerprints: Vec<i64> = chunk.iter().map(|(.., f)| *f as i64).collect();
        copied.other_rows += upsert(
            client,
            expected,
            UPSERT_KEYS,
            &[
                Type::TEXT_ARRAY,
                Type::TEXT_ARRAY,
                Type::INT8_ARRAY,
                Type::INT4_ARRAY,
                Type::INT8_ARRAY,
            ],
            &[&tenants, &keys, &firsts, &counts, &fingerprints],
        )
        .await?;
    }
    for chunk in tables.soft_bounces.chunks(CHUNK) {
        let addresses: Vec<&str> = chunk.iter().map(|(a, _)| a.as_str()).collect();
        let records: Vec<Vec<u8>> = chunk.iter().map(|(_, r)| codec::encode(r)).collect();
        copied.other_rows += upsert(
            client,
            expected,
            UPSERT_SOFT_BOUNCES,
            &[Type::TEXT_ARRAY, Type::BYTEA_ARRAY],
            &[&addresses, &records],
        )
        .await?;
    }
    for chunk in tables.provider_ids.chunks(CHUNK) {
        let provider_ids: Vec<&str> = chunk.iter().map(|(p, _)| p.as_str()).collect();
        let emails: Vec<i64> = chunk.iter().map(|(_, e)| i64_of(*e)).collect();
        copied.other_rows += upsert(
            client,
            expected,
            UPSERT_PROVIDER_IDS,
            &[Type::TEXT_ARRAY, Type::INT8_ARRAY],
            &[&provider_ids, &emails],
        )
        .await?;
    }
    for chunk in tables.stream_states.chunks(CHUNK) {
        let streams: Vec<&str> = chunk.iter().map(|(s, _)| s.as_str()).collect();
        let paused: Vec<bool> = chunk.iter().map(|(_, r)| r.paused).collect();
        let records: Vec<Vec<u8>> = chunk.iter().map(|(_, r)| codec::encode(r)).collect();
        copied.other_rows += upsert(
            client,
            expected,
            UPSERT_STREAM_STATES,
            &[Type::TEXT_ARRAY, Type::BOOL_ARRAY, Type::BYTEA_ARRAY],
            &[&streams, &paused, &records],
        )
        .await?;
    }
    for chunk in tables.stream_tally.chunks(CHUNK) {
        let streams: Vec<&str> = chunk.iter().map(|(s, ..)| s.as_str()).collect();
        let buckets: Vec<i64> = chunk.iter().map(|(_, b, _)| *b).collect();
        let count = |pick: fn(&(u32, u32, u32)) -> u32| -> Vec<i32> {
            chunk.iter().map(|(.., c)| pick(c) as i32).collect()
        };
        let (sent, hard, complaints) = (count(|c| c.0), count(|c| c.1), count(|c| c.2));
        copied.other_rows += upsert(
            client,
            expected,
            UPSERT_STREAM_TALLY,
            &[
                Type::TEXT_ARRAY,
                Type::INT8_ARRAY,
                Type::INT4_ARRAY,
                Type::INT4_ARRAY,
                Type::INT4_ARRAY,
            ],
            &[&streams, &buckets, &sent, &hard, &complaints],
        )
        .await?;
    }
    for chunk in tables.stream_sends.chunks(CHUNK) {
        let streams: Vec<&str> = chunk.iter().map(|(s, ..)| s.as_str()).collect();
        let ids: Vec<i64> = chunk.iter().map(|(_, id, _)| i64_of(*id)).collect();
        let outcomes: Vec<i16> = chunk.iter().map(|(.., o)| i16::from(*o)).collect();
        copied.other_rows += upsert(
            client,
            expected,
            UPSERT_STREAM_SENDS,
            &[Type::TEXT_ARRAY, Type::INT8_ARRAY, Type::INT2_ARRAY],
            &[&streams, &ids, &outcomes],
        )
        .await?;
    }
    Ok(copied)
}

/// The keys that sign links Herald hands out (unsubscribe links in mail,
/// portal links), copied so links the file's install made keep working.
const LINK_KEYS: [&str; 2] = ["unsubscribe", "portal"];

/// Copies the file's link keys over the database's.
pub(super) async fn copy_link_keys(client: &Client, snapshot: &ReadTxn) -> Result<(), Halt> {
    for name in LINK_KEYS {
        let Some(secret) = snapshot.stored_secret(name)? else {
            continue;
        };
        let replaced = client
            .query_opt(
                "SELECT secret <> $2 FROM herald_secrets WHERE name = $1",
                &[&name, &secret.as_slice()],
            )
            .await
            .map_err(PgError::from)?
            .is_some_and(|row| row.get::<_, bool>(0));
        client
            .execute(
                "INSERT INTO herald_secrets (name, secret) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET secret = EXCLUDED.secret",
                &[&name, &secret.as_slice()],
            )
            .await
            .map_err(PgError::from)?;
        if replaced {
            eprintln!(
                "herald migrate: warning: the database's {name} key was replaced by the \
                 file's; restart any node started before this run, or its links will not verify"
            );
        }
    }
    Ok(())
}
