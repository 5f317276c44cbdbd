//! Sending mail queued in PostgreSQL, on every node at once. Each sender
//! thread claims one due message at a time with `FOR UPDATE SKIP LOCKED`
//! and a lease, relays it, and records the outcome through the shared
//! rules, only while its lease holds. A node that dies holding a lease
//! loses nothing: the lease runs out and another node sends the message.
//!
//! A stream's limits hold across nodes because they live in its row of
//! `herald_stream_gates`, read and changed only under that row's lock in
//! the claiming transaction: the rate limit's token bucket and the
//! messages released today against the warm-up cap. A paused stream
//! releases nothing; its state is read afresh at every claim.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::runtime::Handle;
use tokio::sync::Notify;

use super::mail_txn::{self, tenant_column};
use super::PgError;
use crate::clock;
use crate::ids;
use crate::mail::ledger::{self, format_email_id};
use crate::mail::sending::{Relayer, Sending};
use crate::mail::soft_bounces::day_of;
use crate::mail::warmup;
use crate::store::codec;
use crate::store::records::{EmailRecord, StreamStateRecord, SuppressionReason};
use crate::store::streams::DAY_MS;

/// How long a sender waits for a wake-up before it looks for due mail
/// again (mail queued on another node, a retry coming due).
const POLL: Duration = Duration::from_millis(200);

/// A lease outlives the attempt it covers: the relay's whole conversation
/// is bounded by the mail timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// What a claim found.
enum Claim {
    /// Leased to this sender until its lease runs out.
    Send {
        id: u64,
        record: Box<EmailRecord>,
        token: i64,
    },
    /// Its recipient was suppressed after it was queued: it fails unsent.
    Suppressed {
        id: u64,
        token: i64,
        reason: SuppressionReason,
    },
    /// Nothing due that may go now; streams that must wait, and until when.
    Nothing(Vec<(String, i64)>),
}

/// Starts `count` sender threads; they end once `stop` is set.
/// `recording_time` bounds how long recording an outcome may take (a
/// pooled connection, then the log head's lock, each within the statement
/// timeout): a lease is renewed for that long once the relay answered.
pub fn start(
    sending: Arc<Sending>,
    pool: Pool,
    runtime: Handle,
    (wake, stop): (Arc<Notify>, Arc<AtomicBool>),
    count: usize,
    recording_time: Duration,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    (0..count)
        .map(|number| {
            let relayer = Relayer::new(&sending)?;
            let sender = Sender {
                sending: sending.clone(),
                pool: pool.clone(),
                runtime: runtime.clone(),
                relayer,
                held: HashMap::new(),
                recording_time,
            };
            let (wake, stop) = (wake.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("mail-{number}"))
                .spawn(move || sender.run(&wake, &stop))
        })
        .collect()
}

struct Sender {
    sending: Arc<Sending>,
    pool: Pool,
    runtime: Handle,
    relayer: Relayer,
    /// Streams this sender skips until a time: paused, capped for the
    /// day, or out of tokens.
    held: HashMap<String, i64>,
    recording_time: Duration,
}

impl Sender {
    fn run(mut self, wake: &Notify, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let now_ms = clock::now_ms();
            self.held.retain(|_, until| *until > now_ms);
            let held: Vec<String> = self.held.keys().cloned().collect();
            match self.runtime.block_on(self.claim(&held, now_ms)) {
                Ok(Claim::Send { id, record, token }) => self.send(id, &record, token),
                Ok(Claim::Suppressed { id, token, reason }) => {
                    self.record(id, token, move |txn| {
                        ledger::cancel_suppressed(txn, id, reason)
                    });
                }
                // A stream that must wait is set aside and the others are
                // looked at at once: its message came first, theirs may
                // be due too.
                Ok(Claim::Nothing(wait)) if !wait.is_empty() => self.held.extend(wait),
                Ok(Claim::Nothing(_)) => {
                    let next_hold = self.held.values().min().map(|until| until - now_ms);
                    let pause = next_hold
                        .map_or(POLL, |ms| Duration::from_millis(ms.max(1) as u64))
                        .min(POLL);
                    self.runtime.block_on(async {
                        let _ = tokio::time::timeout(pause, wake.notified()).await;
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, "claiming due mail failed; trying again shortly");
                    std::thread::sleep(POLL);
                }
            }
        }
    }

    fn send(&mut self, id: u64, record: &EmailRecord, token: i64) {
        let Some(report) = self.relayer.attempt(&self.sending, id, record) else {
            // Its stream is gone from the configuration: it waits, leased
            // for a while so that the senders do not spin on it.
            return;
        };
        let retry = self.sending.retry.clone();
        let guard = self.sending.settings.guard;
        self.record(id, token, move |txn| {
            ledger::record_attempt(txn, id, report, &retry, &guard)
        });
    }

    /// Records an outcome under the lease; a lease that ran out means
    /// another node has the message now, and its outcome is the one kept.
    fn record(
        &self,
        id: u64,
        token: i64,
        outcome: impl FnOnce(&mut mail_txn::PgMailTxn<'_>) -> Result<(), crate::store::StoreError>
            + Send
            + 'static,
    ) {
        // The relay may have taken most of the lease: it is renewed for the
        // recording, in a statement of its own that waits on no lock but
        // the row's. A lease another node took over meanwhile is not.
        match self.runtime.block_on(self.renew_lease(id, token)) {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(email = %format_email_id(id),
                    "a send outlived its lease; the node that took the message over records it");
                return;
            }
            Err(e) => tracing::warn!(email = %format_email_id(id), error = %e,
                "renewing a send's lease failed; recording it anyway"),
        }
        let recorded = self
            .runtime
            .block_on(mail_txn::write(&self.pool, move |txn| {
                if !txn.holds_lease(id, token)? {
                    return Ok(false);
                }
                outcome(txn)?;
                txn.end_lease(id)?;
                Ok(true)
            }));
        match recorded {
            Ok(true) => {}
            Ok(false) => tracing::warn!(email = %format_email_id(id),
                "a send outlived its lease; the node that took the message over records it"),
            // The lease runs out and the message is sent again: at least
            // once, never lost.
            Err(e) => tracing::error!(email = %format_email_id(id), error = %e,
                "recording a send failed; the message is attempted again when its lease runs out"),
        }
    }

    async fn renew_lease(&self, id: u64, token: i64) -> Result<bool, PgError> {
        let client = self.pool.get().await?;
        let renewed = client
            .execute(
                "UPDATE herald_emails SET lease_until_ms = $3 WHERE id = $1 AND lease_token = $2",
                &[
                    &(id as i64),
                    &token,
                    &(clock::now_ms() + self.recording_time.as_millis() as i64),
                ],
            )
            .await?;
        Ok(renewed == 1)
    }

    async fn claim(&self, held: &[String], now_ms: i64) -> Result<Claim, PgError> {
        let streams: Vec<&str> = self
            .sending
            .settings
            .streams
            .keys()
            .map(String::as_str)
            .filter(|name| !held.iter().any(|h| h == name))
            .collect();
        let mut client = self.pool.get().await?;
        let txn = client.transaction().await?;
        // The earliest due message of each stream that may send, through
        // the stream's own index, then the earliest of those: a paused
        // stream's backlog is never read past. A message of a stream no
        // longer configured stays queued, as on redb.
        let Some(row) = txn
            .query_opt(
                "SELECT m.id, m.record FROM unnest($2::text[]) s(name) \
                 CROSS JOIN LATERAL (SELECT id, record, next_attempt_ms FROM herald_emails \
                   WHERE stream = s.name AND status IN (1, 2) AND next_attempt_ms <= $1 \
                     AND lease_until_ms <= $1 \
                   ORDER BY next_attempt_ms, id LIMIT 1 FOR UPDATE SKIP LOCKED) m \
                 ORDER BY m.next_attempt_ms, m.id LIMIT 1",
                &[&now_ms, &streams],
            )
            .await?
        else {
            return Ok(Claim::Nothing(Vec::new()));
        };
        let id = row.get::<_, i64>(0) as u64;
        let record: EmailRecord = codec::decode(row.get::<_, &[u8]>(1))?;
        let token = ids::new_id() as i64;
        let lease_until =
            now_ms + (self.sending.settings.timeout + LEASE_MARGIN).as_millis() as i64;
        const LEASE: &str =
            "UPDATE herald_emails SET lease_token = $2, lease_until_ms = $3 WHERE id = $1";
        let lease_params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&(id as i64), &token, &lease_until];
        let suppressed = txn
            .query_opt(
                "SELECT reason FROM herald_suppressions \
                 WHERE address = $1 AND tenant IN ('', $2) AND stream IN ('', $3) \
                 ORDER BY tenant <> '', stream <> '' LIMIT 1",
                &[
                    &record.to,
                    &tenant_column(record.tenant.as_deref()),
                    &record.stream,
                ],
            )
            .await?
            .and_then(|row| SuppressionReason::parse(row.get(0)));
        if let Some(reason) = suppressed {
            txn.execute(LEASE, &lease_params).await?;
            txn.commit().await?;
            return Ok(Claim::Suppressed { id, token, reason });
        }
        if let Some(until) = self.gate(&txn, &record.stream, now_ms).await? {
            return Ok(Claim::Nothing(vec![(record.stream.clone(), until)]));
        }
        txn.execute(LEASE, &lease_params).await?;
        txn.commit().await?;
        Ok(Claim::Send {
            id,
            record: Box::new(record),
            token,
        })
    }

    /// Passes one message of `stream` through its gate row, under the
    /// row's lock; `Some(until)`: it may not go before then.
    async fn gate(
        &self,
        txn: &tokio_postgres::Transaction<'_>,
        stream: &str,
        now_ms: i64,
    ) -> Result<Option<i64>, PgError> {
        let state: StreamStateRecord = match txn
            .query_opt(
                "SELECT record FROM herald_stream_states WHERE stream = $1",
                &[&stream],
            )
            .await?
        {
            Some(row) => codec::decode(row.get::<_, &[u8]>(0))?,
            None => StreamStateRecord::default(),
        };
        if state.paused {
            return Ok(Some(now_ms + POLL.as_millis() as i64));
        }
        let Some(settings) = self.sending.settings.streams.get(stream) else {
            // The relay step says so in the log and leaves it queued.
            return Ok(None);
        };
        let today = day_of(now_ms);
        let cap = warmup::cap(&settings.warmup, warmup::step_on(&state, today));
        let rate = settings.rate_limit_per_sec.map(f64::from);
        if cap.is_none() && rate.is_none() {
            return Ok(None);
        }
        txn.execute(
            "INSERT INTO herald_stream_gates (stream) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&stream],
        )
        .await?;
        let gate = txn
            .query_one(
                "SELECT tokens, tokens_at_ms, day, released_on_day FROM herald_stream_gates \
                 WHERE stream = $1 FOR UPDATE",
                &[&stream],
            )
            .await?;
        let released = if gate.get::<_, i64>(2) == today {
            gate.get::<_, i64>(3)
        } else {
            0
        };
        if cap.is_some_and(|cap| released as u64 >= cap) {
            return Ok(Some(now_ms - now_ms.rem_euclid(DAY_MS) + DAY_MS));
        }
        let mut tokens: f64 = gate.get(0);
        if let Some(rate) = rate {
            let elapsed = (now_ms - gate.get::<_, i64>(1)).max(0) as f64 / 1000.0;
            tokens = (tokens + elapsed * rate).min(rate.max(1.0));
            if tokens < 1.0 {
                let wait_ms = ((1.0 - tokens) / rate * 1000.0).ceil() as i64;
                return Ok(Some(now_ms + wait_ms.max(1)));
            }
            tokens -= 1.0;
        }
        txn.execute(
            "UPDATE herald_stream_gates SET tokens = $2, tokens_at_ms = $3, day = $4, \
             released_on_day = $5 WHERE stream = $1",
            &[&stream, &tokens, &now_ms, &today, &(released + 1)],
        )
        .await?;
        Ok(None)
    }
}
