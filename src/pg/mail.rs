//! Mail on PostgreSQL as the API reads it: messages, suppression lists and
//! a message's ESP feedback, with the same filters and pages as on redb.
//! Changes go through the shared rules (`mail_txn::write`).

use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

use super::mail_txn::{self, tenant_column, PgMailTxn};
use super::PgError;
use crate::store::codec;
use crate::store::feedback::{FeedbackFilter, FeedbackPage};
use crate::store::mail::{
    email_status_code, EmailFilter, EmailPage, SuppressionFilter, SuppressionPage,
};
use crate::store::records::{EmailRecord, FeedbackRecord, StreamStateRecord};
use crate::store::streams::{Windows, TALLY_BUCKET_MS};
use crate::store::StoreError;

#[derive(Clone)]
pub struct PgMail {
    pool: Pool,
}

impl PgMail {
    pub fn new(pool: Pool) -> PgMail {
        PgMail { pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub async fn write<T, F>(&self, change: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut PgMailTxn<'_>) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        mail_txn::write(&self.pool, change).await
    }

    /// Message `id` and up to `max_feedback` of its ESP reports, oldest first.
    pub async fn email_with_feedback(
        &self,
        id: u64,
        max_feedback: usize,
    ) -> Result<Option<(EmailRecord, Vec<FeedbackRecord>)>, PgError> {
        let client = self.pool.get().await?;
        let Some(row) = client
            .query_opt(
                "SELECT record FROM herald_emails WHERE id = $1",
                &[&(id as i64)],
            )
            .await?
        else {
            return Ok(None);
        };
        let record: EmailRecord = codec::decode(row.get::<_, &[u8]>(0))?;
        let rows = client
            .query(
                "SELECT record FROM herald_feedback WHERE email_id = $1 ORDER BY id LIMIT $2",
                &[&(id as i64), &(max_feedback as i64)],
            )
            .await?;
        let feedback = rows
            .iter()
            .map(|r| codec::decode(r.get::<_, &[u8]>(0)))
            .collect::<Result<_, _>>()?;
        Ok(Some((record, feedback)))
    }

    /// Messages after id `after` matching `filter`, oldest first.
    pub async fn scan_emails(
        &self,
        filter: &EmailFilter,
        after: u64,
        limit: usize,
    ) -> Result<EmailPage, PgError> {
        let mut sql = String::from("SELECT id, record FROM herald_emails WHERE id > $1");
        let after_param = after as i64;
        let status = filter.status.map(|s| i16::from(email_status_code(s)));
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after_param];
        if let Some(tenant) = &filter.tenant {
            params.push(tenant);
            sql.push_str(&format!(" AND tenant = ${}", params.len()));
        }
        if let Some(to) = &filter.to {
            params.push(to);
            sql.push_str(&format!(" AND recipient = ${}", params.len()));
        }
        if let Some(status) = &status {
            params.push(status);
            sql.push_str(&format!(" AND status = ${}", params.len()));
        }
        if let Some(stream) = &filter.stream {
            params.push(stream);
            sql.push_str(&format!(" AND stream = ${}", params.len()));
        }
        let fetch = limit as i64 + 1;
        params.push(&fetch);
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", params.len()));
        let client = self.pool.get().await?;
        let rows = client.query(sql.as_str(), &params).await?;
        let mut emails = Vec::with_capacity(rows.len().min(limit));
        for row in rows.iter().take(limit) {
            emails.push((
                row.get::<_, i64>(0) as u64,
                codec::decode(row.get::<_, &[u8]>(1))?,
            ));
        }
        let next_after = (rows.len() > limit)
            .then(|| emails.last().map(|(id, _)| *id))
            .flatten();
        Ok(EmailPage { emails, next_after })
    }

    /// Each stream's state, windows and messages sent since `midnight`.
    pub async fn stream_healths(
        &self,
        names: Vec<String>,
        now_ms: i64,
        midnight: i64,
    ) -> Result<Vec<(String, StreamStateRecord, Windows, u64)>, PgError> {
        let mut client = self.pool.get().await?;
        // One snapshot for all of them, as on redb.
        let txn = super::snapshot(&mut client).await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let state = mail_txn::stream_state(&*txn, &name).await?;
            let windows = mail_txn::stream_windows(&*txn, &name, now_ms).await?;
            let from = midnight - midnight.rem_euclid(TALLY_BUCKET_MS);
            let sent_today: i64 = txn
                .query_one(
                    "SELECT coalesce(sum(sent), 0)::bigint FROM herald_stream_tally \
                     WHERE stream = $1 AND bucket_ms >= $2",
                    &[&name, &from],
                )
                .await?
                .get(0);
            out.push((name, state, windows, sent_today as u64));
        }
        txn.commit().await?;
        Ok(out)
    }

    /// ESP feedback after id `after` matching `filter`, oldest first.
    pub async fn scan_feedback(
        &self,
        filter: &FeedbackFilter,
        after: u64,
        limit: usize,
    ) -> Result<FeedbackPage, PgError> {
        let fetch = limit as i64 + 1;
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, record FROM herald_feedback WHERE id > $1 \
                   AND ($2::boolean IS NULL OR (email_id IS NOT NULL) = $2) \
                   AND ($3::text IS NULL OR provider = $3) AND ($4::text IS NULL OR kind = $4) \
                   AND ($5::text IS NULL OR address = $5) AND ($6::text IS NULL OR tenant = $6) \
                 ORDER BY id LIMIT $7",
                &[
                    &(after as i64),
                    &filter.matched,
                    &filter.provider,
                    &filter.kind,
                    &filter.address,
                    &filter.tenant,
                    &fetch,
                ],
            )
            .await?;
        let mut feedback = Vec::with_capacity(rows.len().min(limit));
        for row in rows.iter().take(limit) {
            feedback.push((
                row.get::<_, i64>(0) as u64,
                codec::decode(row.get::<_, &[u8]>(1))?,
            ));
        }
        let next_after = (rows.len() > limit)
            .then(|| feedback.last().map(|(id, _)| *id))
            .flatten();
        Ok(FeedbackPage {
            feedback,
            next_after,
        })
    }

    /// Entries of `list` (a tenant's, or `None`: the global one) after
    /// (address, stream) `after`, in address order.
    pub async fn scan_suppressions(
        &self,
        list: Option<&str>,
        filter: &SuppressionFilter,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<SuppressionPage, PgError> {
        let (after_address, after_stream) = after.unwrap_or(("", ""));
        let reason = filter.reason.map(|r| r.as_str());
        let fetch = limit as i64 + 1;
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT address, stream, record FROM herald_suppressions \
                 WHERE tenant = $1 AND (address, stream) > ($2, $3) \
                   AND ($4::text IS NULL OR stream = $4) AND ($5::text IS NULL OR reason = $5) \
                 ORDER BY address, stream LIMIT $6",
                &[
                    &tenant_column(list),
                    &after_address,
                    &after_stream,
                    &filter.stream,
                    &reason,
                    &fetch,
                ],
            )
            .await?;
        let mut entries = Vec::with_capacity(rows.len().min(limit));
        for row in rows.iter().take(limit) {
            entries.push((
                row.get::<_, String>(0),
                row.get::<_, String>(1),
                codec::decode(row.get::<_, &[u8]>(2))?,
            ));
        }
        let next_after = (rows.len() > limit)
            .then(|| entries.last().map(|(a, s, _)| (a.clone(), s.clone())))
            .flatten();
        Ok(SuppressionPage {
            entries,
            next_after,
        })
    }
}
