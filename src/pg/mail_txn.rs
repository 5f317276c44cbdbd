//! The mail rules' transaction on PostgreSQL. The rules (`mail::ledger`,
//! `mail::guard`, `mail::feedback`) are synchronous, written once for both
//! backends; here they run on a blocking thread whose every read and write
//! is one query of an open PostgreSQL transaction.
//!
//! Every mail transaction takes the log head's lock first, as a group
//! commit does: the events it appends get their positions in log order,
//! message and feedback ids can be the next after the highest, and no two
//! mail transactions can lock rows in opposite orders.

use deadpool_postgres::Pool;
use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, Transaction};

use super::log::{append_own_events, LOCK_HEAD};
use super::PgError;
use crate::events::NewEvent;
use crate::store::codec::{self, Record};
use crate::store::mail::{email_status_code, Blocking, ALL_STREAMS};
use crate::store::mail_txn::MailTxn;
use crate::store::records::{
    EmailRecord, FeedbackRecord, SoftBounceRecord, StreamStateRecord, SuppressionRecord,
};
use crate::store::streams::{SendOutcome, Window, Windows, DAY_MS, RECENT_SENDS, TALLY_BUCKET_MS};
use crate::store::StoreError;

/// The global list's and a message without a tenant's key in tenant columns.
pub const NO_TENANT: &str = "";

/// An ESP's words in a text column: PostgreSQL text holds no NUL, and one
/// must not fail the batch it came in (the record keeps them as sent).
fn text_column(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

pub fn tenant_column(tenant: Option<&str>) -> &str {
    tenant.unwrap_or(NO_TENANT)
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        StoreError::Database(e.to_string())
    }
}

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::from(PgError::from(e))
}

/// Runs `change` in one transaction on a blocking thread and commits it;
/// an error rolls everything back.
pub async fn write<T, F>(pool: &Pool, change: F) -> Result<T, StoreError>
where
    F: FnOnce(&mut PgMailTxn<'_>) -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    let pool = pool.clone();
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut client = handle.block_on(pool.get()).map_err(PgError::from)?;
        let txn = handle.block_on(client.transaction()).map_err(db)?;
        handle.block_on(txn.query_one(LOCK_HEAD, &[])).map_err(db)?;
        let mut mail = PgMailTxn {
            txn: &txn,
            handle: &handle,
            events: Vec::new(),
        };
        let answer = change(&mut mail)?;
        let events = std::mem::take(&mut mail.events);
        for (exclude, rows) in events {
            handle.block_on(append_own_events(&txn, rows, exclude))?;
        }
        handle.block_on(txn.commit()).map_err(db)?;
        Ok(answer)
    })
    .await
    .map_err(|e| StoreError::Database(format!("a mail transaction's thread failed: {e}")))?
}

/// Runs `change` inside `txn`, a transaction an async task holds open for
/// something else (an attempt's outcome, an endpoint's change), so that
/// the mail it queues commits or rolls back with that. It blocks the
/// task's thread: for rare work only (an owner's alert), and only on the
/// daemon's multi-threaded runtime. Takes the head lock, as every mail
/// transaction does, so the caller must hold no lock a group commit takes
/// after it.
pub fn within<T>(
    txn: &Transaction<'_>,
    change: impl FnOnce(&mut PgMailTxn<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    tokio::task::block_in_place(|| {
        let handle = Handle::current();
        handle.block_on(txn.query_one(LOCK_HEAD, &[])).map_err(db)?;
        let mut mail = PgMailTxn {
            txn,
            handle: &handle,
            events: Vec::new(),
        };
        let answer = change(&mut mail)?;
        for (exclude, rows) in std::mem::take(&mut mail.events) {
            handle.block_on(append_own_events(txn, rows, exclude))?;
        }
        Ok(answer)
    })
}

/// A stream's pause and warning, as the guard last left them.
pub async fn stream_state(
    client: &impl GenericClient,
    stream: &str,
) -> Result<StreamStateRecord, PgError> {
    match client
        .query_opt(
            "SELECT record FROM herald_stream_states WHERE stream = $1",
            &[&stream],
        )
        .await?
    {
        Some(row) => Ok(codec::decode(row.get::<_, &[u8]>(0))?),
        None => Ok(StreamStateRecord::default()),
    }
}

/// A stream's windows, the reputation guard's view of it.
pub async fn stream_windows(
    client: &impl GenericClient,
    stream: &str,
    now_ms: i64,
) -> Result<Windows, PgError> {
    let since = now_ms - DAY_MS;
    let from = since - since.rem_euclid(TALLY_BUCKET_MS);
    let day = client
        .query_one(
            "SELECT coalesce(sum(sent), 0)::bigint, coalesce(sum(hard_bounces), 0)::bigint, \
                    coalesce(sum(complaints), 0)::bigint \
             FROM herald_stream_tally WHERE stream = $1 AND bucket_ms >= $2",
            &[&stream, &from],
        )
        .await?;
    let recent = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE outcome = 1), \
                    count(*) FILTER (WHERE outcome = 2) \
             FROM (SELECT outcome FROM herald_stream_sends WHERE stream = $1 \
                   ORDER BY email_id DESC LIMIT $2) recent",
            &[&stream, &i64::from(RECENT_SENDS)],
        )
        .await?;
    let window = |row: &Row| Window {
        sent: row.get::<_, i64>(0) as u64,
        hard_bounces: row.get::<_, i64>(1) as u64,
        complaints: row.get::<_, i64>(2) as u64,
    };
    Ok(Windows {
        last_24h: window(&day),
        last_1000: window(&recent),
    })
}

pub struct PgMailTxn<'a> {
    txn: &'a Transaction<'a>,
    handle: &'a Handle,
    /// Events to append at the end, in order, grouped by whom they skip.
    events: Vec<(Option<u128>, Vec<NewEvent>)>,
}

impl PgMailTxn<'_> {
    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        self.handle
            .block_on(self.txn.query(sql, params))
            .map_err(db)
    }

    fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        self.handle
            .block_on(self.txn.query_opt(sql, params))
            .map_err(db)
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.handle
            .block_on(self.txn.execute(sql, params))
            .map_err(db)
    }

    fn record<R: Record>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<R>, StoreError> {
        match self.query_opt(sql, params)? {
            Some(row) => Ok(Some(codec::decode(row.get::<_, &[u8]>(0))?)),
            None => Ok(None),
        }
    }

    /// Whether this node still holds the lease `token` on message `id`,
    /// locking its row until the commit: an outcome is recorded only by
    /// the node whose lease did not run out.
    pub fn holds_lease(&self, id: u64, token: i64) -> Result<bool, StoreError> {
        Ok(self
            .query_opt(
                "SELECT 1 FROM herald_emails WHERE id = $1 AND lease_token = $2 FOR UPDATE",
                &[&(id as i64), &token],
            )?
            .is_some())
    }

    pub fn end_lease(&self, id: u64) -> Result<(), StoreError> {
        self.execute(
            "UPDATE herald_emails SET lease_token = NULL, lease_until_ms = 0 WHERE id = $1",
            &[&(id as i64)],
        )?;
        Ok(())
    }
}

fn outcome_code(outcome: SendOutcome) -> i16 {
    outcome as i16
}

impl MailTxn for PgMailTxn<'_> {
    fn next_email_id(&mut self) -> Result<u64, StoreError> {
        let rows = self.query("SELECT coalesce(max(id), 0) + 1 FROM herald_emails", &[])?;
        Ok(rows[0].get::<_, i64>(0) as u64)
    }

    fn email(&mut self, id: u64) -> Result<Option<EmailRecord>, StoreError> {
        self.record(
            "SELECT record FROM herald_emails WHERE id = $1",
            &[&(id as i64)],
        )
    }

    fn put_email(
        &mut self,
        id: u64,
        record: &EmailRecord,
        _previous_due: Option<i64>,
        _is_new: bool,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO herald_emails (id, tenant, recipient, stream, status, next_attempt_ms, record) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET status = $5, next_attempt_ms = $6, record = $7",
            &[
                &(id as i64),
                &record.tenant,
                &record.to,
                &record.stream,
                &i16::from(email_status_code(record.status)),
                &record.next_attempt_ms,
                &codec::encode(record),
            ],
        )?;
        Ok(())
    }

    fn email_key(
        &mut self,
        tenant: Option<&str>,
        key: &str,
    ) -> Result<Option<(u64, u32, u64)>, StoreError> {
        Ok(self
            .query_opt(
                "SELECT first_id, count, fingerprint FROM herald_email_keys \
                 WHERE tenant = $1 AND key = $2",
                &[&tenant_column(tenant), &key],
            )?
            .map(|row| {
                (
                    row.get::<_, i64>(0) as u64,
                    row.get::<_, i32>(1) as u32,
                    row.get::<_, i64>(2) as u64,
                )
            }))
    }

    fn put_email_key(
        &mut self,
        tenant: Option<&str>,
        key: &str,
        first_id: u64,
        count: u32,
        fingerprint: u64,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO herald_email_keys (tenant, key, first_id, count, fingerprint) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, key) DO UPDATE \
             SET first_id = $3, count = $4, fingerprint = $5",
            &[
                &tenant_column(tenant),
                &key,
                &(first_id as i64),
                &(count as i32),
                &(fingerprint as i64),
            ],
        )?;
        Ok(())
    }

    fn suppression_for(
        &mut self,
        tenant: Option<&str>,
        address: &str,
        stream: &str,
    ) -> Result<Option<Blocking>, StoreError> {
        let rows = self.query(
            "SELECT tenant, stream, record FROM herald_suppressions \
             WHERE address = $1 AND tenant IN ('', $2) AND stream IN ('', $3)",
            &[&address, &tenant_column(tenant), &stream],
        )?;
        // The global list first, then the tenant's; in each, every stream
        // before the message's own.
        let mut found: Vec<(bool, bool, &Row)> = rows
            .iter()
            .map(|row| {
                let list: &str = row.get(0);
                let row_stream: &str = row.get(1);
                (list != NO_TENANT, row_stream != ALL_STREAMS, row)
            })
            .collect();
        found.sort_by_key(|(own, one_stream, _)| (*own, *one_stream));
        match found.first() {
            Some((_, one_stream, row)) => Ok(Some(Blocking {
                record: codec::decode(row.get::<_, &[u8]>(2))?,
                all_streams: !one_stream,
            })),
            None => Ok(None),
        }
    }

    fn put_suppression(
        &mut self,
        list: Option<&str>,
        address: &str,
        stream: &str,
        record: &SuppressionRecord,
    ) -> Result<bool, StoreError> {
        let previous = self.stored_suppression(list, address, stream)?;
        self.execute(
            "INSERT INTO herald_suppressions (tenant, address, stream, reason, record) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, address, stream) \
             DO UPDATE SET reason = $4, record = $5",
            &[
                &tenant_column(list),
                &address,
                &stream,
                &record.reason.as_str(),
                &codec::encode(record),
            ],
        )?;
        Ok(previous.is_none_or(|p| p.reason != record.reason))
    }

    fn stored_suppression(
        &mut self,
        list: Option<&str>,
        address: &str,
        stream: &str,
    ) -> Result<Option<SuppressionRecord>, StoreError> {
        self.record(
            "SELECT record FROM herald_suppressions \
             WHERE tenant = $1 AND address = $2 AND stream = $3",
            &[&tenant_column(list), &address, &stream],
        )
    }

    fn delete_suppression(
        &mut self,
        list: Option<&str>,
        address: &str,
        stream: &str,
    ) -> Result<bool, StoreError> {
        let removed = self.execute(
            "DELETE FROM herald_suppressions WHERE tenant = $1 AND address = $2 AND stream = $3",
            &[&tenant_column(list), &address, &stream],
        )?;
        Ok(removed > 0)
    }

    fn soft_bounce_days(&mut self, address: &str) -> Result<SoftBounceRecord, StoreError> {
        Ok(self
            .record(
                "SELECT record FROM herald_soft_bounces WHERE address = $1",
                &[&address],
            )?
            .unwrap_or_default())
    }

    fn put_soft_bounce_days(
        &mut self,
        address: &str,
        record: &SoftBounceRecord,
    ) -> Result<(), StoreError> {
        if record.days.is_empty() {
            self.execute(
                "DELETE FROM herald_soft_bounces WHERE address = $1",
                &[&address],
            )?;
        } else {
            self.execute(
                "INSERT INTO herald_soft_bounces (address, record) VALUES ($1, $2) \
                 ON CONFLICT (address) DO UPDATE SET record = $2",
                &[&address, &codec::encode(record)],
            )?;
        }
        Ok(())
    }

    fn put_provider_message_id(&mut self, provider_id: &str, id: u64) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO herald_provider_message_ids (provider_id, email_id) VALUES ($1, $2) \
             ON CONFLICT (provider_id) DO UPDATE SET email_id = $2",
            &[&text_column(provider_id), &(id as i64)],
        )?;
        Ok(())
    }

    fn email_by_provider_id(&mut self, provider_id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .query_opt(
                "SELECT email_id FROM herald_provider_message_ids WHERE provider_id = $1",
                &[&text_column(provider_id)],
            )?
            .map(|row| row.get::<_, i64>(0) as u64))
    }

    fn stream_state(&mut self, stream: &str) -> Result<StreamStateRecord, StoreError> {
        Ok(self
            .record(
                "SELECT record FROM herald_stream_states WHERE stream = $1",
                &[&stream],
            )?
            .unwrap_or_default())
    }

    fn put_stream_state(
        &mut self,
        stream: &str,
        state: &StreamStateRecord,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO herald_stream_states (stream, paused, record) VALUES ($1, $2, $3) \
             ON CONFLICT (stream) DO UPDATE SET paused = $2, record = $3",
            &[&stream, &state.paused, &codec::encode(state)],
        )?;
        Ok(())
    }

    fn tally_stream(
        &mut self,
        stream: &str,
        at_ms: i64,
        outcome: SendOutcome,
    ) -> Result<(), StoreError> {
        let bucket = at_ms - at_ms.rem_euclid(TALLY_BUCKET_MS);
        let one = |o: SendOutcome| i32::from(outcome == o);
        self.execute(
            "INSERT INTO herald_stream_tally AS t (stream, bucket_ms, sent, hard_bounces, complaints) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (stream, bucket_ms) DO UPDATE \
             SET sent = t.sent + $3, hard_bounces = t.hard_bounces + $4, \
                 complaints = t.complaints + $5",
            &[
                &stream,
                &bucket,
                &one(SendOutcome::Sent),
                &one(SendOutcome::HardBounce),
                &one(SendOutcome::Complaint),
            ],
        )?;
        Ok(())
    }

    fn add_stream_send(&mut self, stream: &str, id: u64) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO herald_stream_sends (stream, email_id, outcome) VALUES ($1, $2, $3) \
             ON CONFLICT (stream, email_id) DO UPDATE SET outcome = $3",
            &[&stream, &(id as i64), &outcome_code(SendOutcome::Sent)],
        )?;
        Ok(())
    }

    fn mark_stream_send(
        &mut self,
        stream: &str,
        id: u64,
        outcome: SendOutcome,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE herald_stream_sends SET outcome = $3 \
             WHERE stream = $1 AND email_id = $2 AND outcome < $3",
            &[&stream, &(id as i64), &outcome_code(outcome)],
        )?;
        Ok(())
    }

    fn stream_windows(&mut self, stream: &str, now_ms: i64) -> Result<Windows, StoreError> {
        Ok(self
            .handle
            .block_on(stream_windows(self.txn, stream, now_ms))?)
    }

    /// Nothing to tell: every claim reads its stream's state afresh under
    /// the stream's gate row.
    fn mail_gates_changed(&mut self) {}

    fn append_system_event(
        &mut self,
        row: NewEvent,
        _now_ms: i64,
        exclude: Option<u128>,
    ) -> Result<(), StoreError> {
        match self.events.last_mut() {
            Some((skips, rows)) if *skips == exclude => rows.push(row),
            _ => self.events.push((exclude, vec![row])),
        }
        Ok(())
    }

    fn spend_replay_token(
        &mut self,
        provider: &str,
        token: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let added = self.execute(
            "INSERT INTO herald_replay_tokens (provider, token, spent_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            &[&text_column(provider), &text_column(token), &now_ms],
        )?;
        Ok(added == 1)
    }

    fn feedback_seen(&mut self, provider: &str, event_id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .query_opt(
                "SELECT id FROM herald_feedback WHERE provider = $1 AND event_id = $2",
                &[&text_column(provider), &text_column(event_id)],
            )?
            .map(|row| row.get::<_, i64>(0) as u64))
    }

    fn add_feedback(&mut self, record: &FeedbackRecord) -> Result<u64, StoreError> {
        let id = self.query("SELECT coalesce(max(id), 0) + 1 FROM herald_feedback", &[])?[0]
            .get::<_, i64>(0);
        self.execute(
            "INSERT INTO herald_feedback \
             (id, provider, event_id, kind, address, email_id, tenant, received_at_ms, record) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &id,
                &text_column(&record.provider),
                &text_column(&record.event_id),
                &text_column(&record.kind),
                &text_column(&record.address),
                &record.email_id.map(|e| e as i64),
                &record.tenant,
                &record.received_at_ms,
                &codec::encode(record),
            ],
        )?;
        Ok(id as u64)
    }
}
