//! `herald migrate`'s tracking part: each tracked call's index row (the
//! calls themselves are events, copied with the log), the messageId keys
//! still deduplicating, person links and profiles, so every tracked user
//! reads on PostgreSQL as on the file.
//!
//! As with mail, every run goes over all of them, a chunk per transaction
//! checked against the import's position; index rows and keys are written
//! only where missing, links and profiles where they differ.

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::import::Halt;
use super::mail_txn::tenant_column;
use super::migrate_mail::{i64_of, upsert};
use super::tracking::{key_bytes, INSERT_TRACKED, INSERT_TRACKED_TYPES};
use crate::store::ReadTxn;

/// Rows per transaction.
const CHUNK: usize = 2_000;

/// What the tracking part wrote, and what the file holds.
#[derive(Debug, Default)]
pub struct TrackingCopied {
    pub calls: u64,
    pub file_calls: u64,
    pub profiles: u64,
    pub file_profiles: u64,
    /// messageId keys and person links together.
    pub other_rows: u64,
}

/// A key the database already holds stays: it names the same call or, on
/// a node that took new calls since, a newer one.
const INSERT_TRACK_KEYS: &str = "INSERT INTO herald_track_keys (message_key, seq, received_ms) \
     SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[]) \
     ON CONFLICT (message_key) DO NOTHING";

const UPSERT_LINKS: &str = "INSERT INTO herald_person_links (person, user_person) \
     SELECT * FROM unnest($1::bigint[], $2::bigint[]) \
     ON CONFLICT (person) DO UPDATE SET user_person = EXCLUDED.user_person \
     WHERE herald_person_links.user_person IS DISTINCT FROM EXCLUDED.user_person";

const UPSERT_PROFILES: &str = "INSERT INTO herald_profiles (tenant, user_id, record) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) \
     ON CONFLICT (tenant, user_id) DO UPDATE SET record = EXCLUDED.record \
     WHERE herald_profiles.record IS DISTINCT FROM EXCLUDED.record";

/// Persons and type keys are 64-bit hashes kept as the bigint of their bits.
fn bits(hash: u64) -> i64 {
    hash as i64
}

/// Copies the tracking state of `snapshot`.
pub(super) async fn copy_tracking(
    client: &mut Client,
    snapshot: &ReadTxn,
    expected: Option<u64>,
) -> Result<TrackingCopied, Halt> {
    let mut copied = TrackingCopied::default();
    let mut after = None;
    // Index rows already there (an earlier run, or calls a node took) stay.
    let insert_tracked = format!("{INSERT_TRACKED} ON CONFLICT (seq) DO NOTHING");
    loop {
        let (calls, last) = snapshot.tracked_calls(after, CHUNK)?;
        let Some(last) = last else { break };
        after = Some(last);
        if calls.is_empty() {
            continue;
        }
        copied.file_calls += calls.len() as u64;
        let seqs: Vec<i64> = calls.iter().map(|c| i64_of(c.seq)).collect();
        let received: Vec<i64> = calls.iter().map(|c| c.received_ms).collect();
        let message_keys: Vec<Option<Vec<u8>>> = calls
            .iter()
            .map(|c| (c.message_key != 0).then(|| key_bytes(c.message_key)))
            .collect();
        let persons: Vec<i64> = calls.iter().map(|c| bits(c.person)).collect();
        let type_keys: Vec<i64> = calls.iter().map(|c| bits(c.type_key)).collect();
        let timestamps: Vec<i64> = calls.iter().map(|c| c.timestamp_ms).collect();
        let campaign = |part: fn(&(String, String, String)) -> &String| -> Vec<Option<&str>> {
            calls
                .iter()
                .map(|c| c.campaign.as_ref().map(|t| part(t).as_str()))
                .collect()
        };
        let (sources, mediums, names) =
            (campaign(|t| &t.0), campaign(|t| &t.1), campaign(|t| &t.2));
        copied.calls += upsert(
            client,
            expected,
            &insert_tracked,
            &INSERT_TRACKED_TYPES,
            &[
                &seqs,
                &received,
                &message_keys,
                &persons,
                &type_keys,
                &timestamps,
                &sources,
                &mediums,
                &names,
            ],
        )
        .await?;
    }
    for chunk in snapshot.track_keys()?.chunks(CHUNK) {
        let keys: Vec<Vec<u8>> = chunk.iter().map(|(k, ..)| key_bytes(*k)).collect();
        let seqs: Vec<i64> = chunk.iter().map(|(_, seq, _)| i64_of(*seq)).collect();
        let received: Vec<i64> = chunk.iter().map(|(.., at)| *at).collect();
        copied.other_rows += upsert(
            client,
            expected,
            INSERT_TRACK_KEYS,
            &[Type::BYTEA_ARRAY, Type::INT8_ARRAY, Type::INT8_ARRAY],
            &[&keys, &seqs, &received],
        )
        .await?;
    }
    for chunk in snapshot.person_link_rows()?.chunks(CHUNK) {
        let persons: Vec<i64> = chunk.iter().map(|(p, _)| bits(*p)).collect();
        let users: Vec<i64> = chunk.iter().map(|(_, u)| bits(*u)).collect();
        copied.other_rows += upsert(
            client,
            expected,
            UPSERT_LINKS,
            &[Type::INT8_ARRAY, Type::INT8_ARRAY],
            &[&persons, &users],
        )
        .await?;
    }
    let mut after: Option<(Option<String>, String)> = None;
    loop {
        let page = snapshot.profiles_page(after.as_ref(), CHUNK)?;
        let Some((tenant, user, _)) = page.last() else {
            break;
        };
        after = Some((tenant.clone(), user.clone()));
        copied.file_profiles += page.len() as u64;
        let tenants: Vec<&str> = page
            .iter()
            .map(|(t, ..)| tenant_column(t.as_deref()))
            .collect();
        let users: Vec<&str> = page.iter().map(|(_, u, _)| u.as_str()).collect();
        let records: Vec<&[u8]> = page.iter().map(|(.., r)| r.as_slice()).collect();
        copied.profiles += upsert(
            client,
            expected,
            UPSERT_PROFILES,
            &[Type::TEXT_ARRAY, Type::TEXT_ARRAY, Type::BYTEA_ARRAY],
            &[&tenants, &users, &records],
        )
        .await?;
        if page.len() < CHUNK {
            break;
        }
    }
    Ok(copied)
}
