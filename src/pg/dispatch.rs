//! Webhook delivery when several nodes share one database: each node
//! claims due deliveries under leases and makes the attempts. The
//! per-endpoint limits (in-flight cap, rate limit, circuit breaker) are
//! state in the endpoint's row, read and changed only while a claim holds
//! that row's lock, so they hold across nodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use super::log::append_own_events;
use super::owner_alerts;
use super::webhooks::{id_bytes, status_code};
use super::PgError;
use crate::clock;
use crate::events::ID_PREFIX as EVENT_ID_PREFIX;
use crate::ids;
use crate::metrics::{self, DeliveryOutcome};
use crate::store::attempt_tally::{minute_of, AttemptTally};
use crate::store::codec;
use crate::store::records::{
    AttemptRecord, DeliveryRecord, DeliveryStatus, EndpointRecord, EventRecord,
};
use crate::webhooks::client::Client;
use crate::webhooks::dispatch::{attempt_timeout, client_for, policy_for, recorded, send_with};
use crate::webhooks::ledger::{failure_summary, notice_events};
use crate::webhooks::owner_alert::OwnerAlerts;
use crate::webhooks::payload;
use crate::webhooks::policy::{self, Policy, Streak};
use crate::webhooks::settings::WebhookSettings;

/// How often a node looks for due work it was not told about: other
/// nodes' events, retries coming due, leases running out.
const POLL: Duration = Duration::from_millis(200);
/// Attempts one node makes at once, over all endpoints.
const NODE_IN_FLIGHT: usize = 256;
/// A lease outlives its attempt's timeout by this much: the time to record
/// the outcome. A node that dies holding one delays its delivery by the
/// attempt timeout plus this.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Endpoints one claim looks at.
const ENDPOINTS_PER_CLAIM: i64 = 64;

/// One delivery this node holds a lease on.
struct Claim {
    id: i64,
    token: i64,
    delivery: DeliveryRecord,
    endpoint: Arc<EndpointRecord>,
    event: EventRecord,
}

pub struct PgDispatcher {
    pool: Pool,
    client: Client,
    settings: WebhookSettings,
    policy: Policy,
    /// Mail to endpoints' owners, when `[webhooks.owner_alerts]` is set.
    alerts: Option<Arc<OwnerAlerts>>,
}

impl PgDispatcher {
    pub fn new(
        pool: Pool,
        settings: WebhookSettings,
        alerts: Option<Arc<OwnerAlerts>>,
    ) -> Arc<PgDispatcher> {
        Arc::new(PgDispatcher {
            pool,
            client: client_for(&settings),
            policy: policy_for(&settings),
            settings,
            alerts,
        })
    }

    /// What owner alerts need, when they are configured.
    pub fn owner_alerts(&self) -> Option<&Arc<OwnerAlerts>> {
        self.alerts.as_ref()
    }

    /// What attempts are sent through, for sends outside the leases (tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }

    /// Claims and attempts until `stop` is notified; then waits up to
    /// `grace` for attempts in flight. Those cut off keep their leases,
    /// which run out: another node (or this one, restarted) makes them again.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, stop: Arc<Notify>, grace: Duration) {
        let slots = Arc::new(Semaphore::new(NODE_IN_FLIGHT));
        let mut attempts = JoinSet::new();
        loop {
            let budget = slots.available_permits();
            let mut pause = POLL;
            if budget > 0 {
                match self.claim(budget).await {
                    Ok((claims, reopens_at)) => {
                        // A breaker closing before the next poll admits its
                        // probe then, not up to a poll later.
                        if let Some(at) = reopens_at {
                            let wait = (at - clock::now_ms()).max(1) as u64;
                            pause = pause.min(Duration::from_millis(wait));
                        }
                        for claim in claims {
                            let Ok(permit) = slots.clone().try_acquire_owned() else {
                                break;
                            };
                            let this = self.clone();
                            let wake = wake.clone();
                            attempts.spawn(async move {
                                this.attempt(claim).await;
                                drop(permit);
                                // The endpoint's slot is free again: claim
                                // its next delivery now, not at the next poll.
                                wake.notify_one();
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming due deliveries failed"),
                }
            }
            while attempts.try_join_next().is_some() {}
            tokio::select! {
                () = stop.notified() => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
        let _ = tokio::time::timeout(grace, async {
            while attempts.join_next().await.is_some() {}
        })
        .await;
    }

    /// Leases up to `budget` due deliveries, each endpoint at most as many
    /// as its limits admit now; with them, when the first open breaker
    /// among the endpoints left waiting closes.
    async fn claim(&self, budget: usize) -> Result<(Vec<Claim>, Option<i64>), PgError> {
        let now = clock::now_ms();
        let token = ids::new_id() as i64;
        let mut client = self.pool.get().await?;
        let txn = client.transaction().await?;
        // Endpoints with due work, locked: another node's claim skips them
        // rather than counting their leases at the same time.
        let endpoints = txn
            .query(
                "SELECT e.id, e.record, e.failed_attempts, e.open_until_ms, e.tokens, e.tokens_at_ms, \
                   (SELECT count(*) FROM herald_deliveries d \
                     WHERE d.endpoint_id = e.id AND d.status = 0 AND d.lease_until_ms > $1) \
                 FROM herald_endpoints e \
                 WHERE e.enabled AND EXISTS (SELECT 1 FROM herald_deliveries d \
                   WHERE d.endpoint_id = e.id AND d.status = 0 \
                     AND d.next_attempt_ms <= $1 AND d.lease_until_ms <= $1) \
                 ORDER BY random() LIMIT $2 FOR UPDATE OF e SKIP LOCKED",
                &[&now, &ENDPOINTS_PER_CLAIM],
            )
            .await?;
        let mut budget = budget as i64;
        let mut claims = Vec::new();
        let mut reopens_at: Option<i64> = None;
        for row in endpoints {
            if budget == 0 {
                break;
            }
            let key: Vec<u8> = row.get(0);
            let endpoint: Arc<EndpointRecord> = Arc::new(codec::decode(row.get::<_, &[u8]>(1))?);
            let open_until_ms: i64 = row.get(3);
            if open_until_ms > now {
                reopens_at = Some(reopens_at.map_or(open_until_ms, |at| at.min(open_until_ms)));
            }
            let admitted = Admission {
                failed_attempts: row.get::<_, i32>(2).max(0) as u32,
                open_until_ms,
                tokens: row.get(4),
                tokens_at_ms: row.get(5),
                in_flight: row.get(6),
            }
            .admit(&endpoint, &self.settings, now);
            let wanted = admitted.slots.min(budget);
            if wanted == 0 {
                continue;
            }
            let lease_until = now
                + (attempt_timeout(&self.settings, &endpoint) + LEASE_MARGIN).as_millis() as i64;
            let leased = txn
                .query(
                    "UPDATE herald_deliveries SET lease_token = $1, lease_until_ms = $2 \
                     WHERE id IN (SELECT id FROM herald_deliveries \
                       WHERE endpoint_id = $3 AND status = 0 \
                         AND next_attempt_ms <= $4 AND lease_until_ms <= $4 \
                       ORDER BY next_attempt_ms, id LIMIT $5 FOR UPDATE SKIP LOCKED) \
                     RETURNING id, record",
                    &[&token, &lease_until, &key, &now, &wanted],
                )
                .await?;
            let taken = leased.len() as i64;
            budget -= taken;
            if let Some(rate) = endpoint.rate_limit_per_sec {
                let tokens = (admitted.tokens - taken as f64)
                    .max(0.0)
                    .min(f64::from(rate));
                txn.execute(
                    "UPDATE herald_endpoints SET tokens = $1, tokens_at_ms = $2 WHERE id = $3",
                    &[&tokens, &now, &key],
                )
                .await?;
            }
            for row in leased {
                let delivery: DeliveryRecord = codec::decode(row.get::<_, &[u8]>(1))?;
                claims.push((row.get::<_, i64>(0), delivery, endpoint.clone()));
            }
        }
        txn.commit().await?;

        let seqs: Vec<i64> = claims.iter().map(|(_, d, _)| d.event_seq as i64).collect();
        let mut events: HashMap<u64, EventRecord> = HashMap::new();
        if !seqs.is_empty() {
            for row in client
                .query(
                    "SELECT seq, record FROM herald_events WHERE seq = ANY($1)",
                    &[&seqs],
                )
                .await?
            {
                let seq: i64 = row.get(0);
                events.insert(seq as u64, codec::decode(row.get::<_, &[u8]>(1))?);
            }
        }
        let claims = claims
            .into_iter()
            .filter_map(|(id, delivery, endpoint)| {
                // An event removed by retention has nothing left to send;
                // its lease runs out and the retention pass removes it.
                let event = events.get(&delivery.event_seq)?.clone();
                Some(Claim {
                    id,
                    token,
                    delivery,
                    endpoint,
                    event,
                })
            })
            .collect();
        Ok((claims, reopens_at))
    }

    /// `POST /v1/deliveries/{id}/retry`: one attempt now, outside the
    /// schedule, whatever the delivery's status. It takes the lease over
    /// from a node holding it, whose outcome then goes unrecorded (that
    /// attempt may still reach the receiver: at least once). `None`: no
    /// such delivery, or its endpoint or event is gone.
    pub async fn retry_now(&self, id: u64) -> Result<Option<DeliveryRecord>, PgError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        let client = self.pool.get().await?;
        let token = ids::new_id() as i64;
        let now = clock::now_ms();
        let Some(row) = client
            .query_opt(
                "SELECT d.record, e.record, ev.record FROM herald_deliveries d \
                 JOIN herald_endpoints e ON e.id = d.endpoint_id \
                 JOIN herald_events ev ON ev.seq = d.event_seq WHERE d.id = $1",
                &[&id],
            )
            .await?
        else {
            return Ok(None);
        };
        let delivery: DeliveryRecord = codec::decode(row.get::<_, &[u8]>(0))?;
        let endpoint: Arc<EndpointRecord> = Arc::new(codec::decode(row.get::<_, &[u8]>(1))?);
        let event: EventRecord = codec::decode(row.get::<_, &[u8]>(2))?;
        let lease_until =
            now + (attempt_timeout(&self.settings, &endpoint) + LEASE_MARGIN).as_millis() as i64;
        client
            .execute(
                "UPDATE herald_deliveries SET lease_token = $1, lease_until_ms = $2 WHERE id = $3",
                &[&token, &lease_until, &id],
            )
            .await?;
        drop(client);
        let claim = Claim {
            id,
            token,
            delivery,
            endpoint,
            event,
        };
        self.attempt_as(&claim, true).await?;
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT record FROM herald_deliveries WHERE id = $1", &[&id])
            .await?;
        row.map(|r| codec::decode(r.get::<_, &[u8]>(0)).map_err(PgError::from))
            .transpose()
    }

    async fn attempt(&self, claim: Claim) {
        if let Err(e) = self.attempt_as(&claim, false).await {
            // The lease runs out and the attempt is made again, with the
            // same webhook-id: at least once.
            tracing::warn!(error = %e, delivery = claim.id, "recording a webhook attempt failed");
        }
    }

    /// Makes the claimed attempt and records it.
    async fn attempt_as(&self, claim: &Claim, manual: bool) -> Result<(), PgError> {
        let msg_id = ids::format(EVENT_ID_PREFIX, claim.delivery.event_id);
        let body = payload::for_endpoint(
            claim.delivery.event_seq,
            &claim.event,
            &claim.endpoint.version_pins,
        );
        let number = u32::try_from(claim.delivery.attempts.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let started_ms = clock::now_ms();
        let outcome = send_with(
            &self.client,
            &self.settings,
            &claim.endpoint,
            &msg_id,
            body,
            number,
        )
        .await;
        self.record(claim, &outcome, started_ms, manual).await
    }

    /// Writes the attempt and what the policy makes of it, if this node
    /// still holds the lease; a node whose lease ran out records nothing.
    async fn record(
        &self,
        claim: &Claim,
        outcome: &crate::webhooks::client::Outcome,
        started_ms: i64,
        manual: bool,
    ) -> Result<(), PgError> {
        let (attempt, report) = recorded(outcome, started_ms, manual);
        let latency = outcome.latency;
        let counted = |status: DeliveryStatus| {
            metrics::WEBHOOKS.attempted(
                match status {
                    _ if report.succeeded() => DeliveryOutcome::Success,
                    DeliveryStatus::Failed if !manual => DeliveryOutcome::Dead,
                    _ => DeliveryOutcome::Failure,
                },
                latency,
            )
        };
        let mut client = self.pool.get().await?;
        let key = id_bytes(claim.delivery.endpoint_id);
        if report.succeeded()
            && self
                .record_plain_success(&mut client, claim, &key, &attempt)
                .await?
        {
            counted(DeliveryStatus::Succeeded);
            return Ok(());
        }
        let txn = client.transaction().await?;
        // The endpoint's row first, then the delivery's: the order every
        // transaction that locks both takes (claims, deletes), so two of
        // them never wait on each other.
        let Some(row) = txn
            .query_opt(
                &format!(
                    "SELECT record, open_until_ms, {} FROM herald_endpoints \
                     WHERE id = $1 FOR UPDATE",
                    owner_alerts::STREAK_COLUMNS
                ),
                &[&key],
            )
            .await?
        else {
            return Ok(());
        };
        let Some(delivery_row) = txn
            .query_opt(
                "SELECT record FROM herald_deliveries WHERE id = $1 AND lease_token = $2 FOR UPDATE",
                &[&claim.id, &claim.token],
            )
            .await?
        else {
            return Ok(());
        };
        let mut delivery: DeliveryRecord = codec::decode(delivery_row.get::<_, &[u8]>(0))?;
        let mut endpoint: EndpointRecord = codec::decode(row.get::<_, &[u8]>(0))?;
        let open_until_ms: i64 = row.get(1);
        let mut stored_streak = owner_alerts::streak(&row, 2);
        let streak = Streak {
            failed_attempts: stored_streak.failed_attempts,
            announced: stored_streak.announced,
        };
        let now = clock::now_ms();
        let decision = policy::decide(&delivery, &endpoint, streak, &report, &self.policy, now);
        stored_streak.failed_attempts = decision.streak.failed_attempts;
        stored_streak.announced = decision.streak.announced;
        stored_streak.last_failure = failure_summary(&attempt, &report);
        delivery.attempts.push(attempt);
        delivery.status = decision.status;
        delivery.next_attempt_ms = decision.next_attempt_ms;
        settle(&txn, claim.id, &delivery).await?;

        let failed = decision.streak.failed_attempts;
        let open_until_ms = if report.succeeded() {
            0
        } else if failed >= self.settings.circuit_failures {
            now + self.settings.circuit_cooldown.as_millis() as i64
        } else {
            open_until_ms
        };
        let mut changed = endpoint.failing_since_ms != decision.failing_since_ms;
        endpoint.failing_since_ms = decision.failing_since_ms;
        if let Some(reason) = decision.disable {
            endpoint.enabled = false;
            endpoint.disabled_reason = Some(reason.to_owned());
            changed = true;
        }
        txn.execute(
            "UPDATE herald_endpoints SET failed_attempts = $1, announced = $2, open_until_ms = $3, \
             last_failure = $4 WHERE id = $5",
            &[
                &(failed.min(i32::MAX as u32) as i32),
                &decision.streak.announced,
                &open_until_ms,
                &owner_alerts::last_failure_column(stored_streak.last_failure.as_ref()),
                &key,
            ],
        )
        .await?;
        let notices = notice_events(&decision, claim.id as u64, &delivery, &endpoint);
        if changed {
            endpoint.updated_at_ms = now;
            txn.execute(
                "UPDATE herald_endpoints SET record = $1, enabled = $2 WHERE id = $3",
                &[&codec::encode(&endpoint), &endpoint.enabled, &key],
            )
            .await?;
            txn.execute(
                "UPDATE herald_endpoints_version SET version = version + 1 WHERE id = 1",
                &[],
            )
            .await?;
        }
        // After the version row, before the events: the head lock the alert's
        // mail takes comes last, as in every transaction that takes both.
        if let (Some(alerts), Some(cause)) = (&self.alerts, decision.alert) {
            let alerted_day = stored_streak.alerted_day;
            owner_alerts::alert(&txn, alerts, &endpoint, &mut stored_streak, cause, now)?;
            if stored_streak.alerted_day != alerted_day {
                txn.execute(
                    "UPDATE herald_endpoints SET alerted_day = $1 WHERE id = $2",
                    &[&stored_streak.alerted_day, &key],
                )
                .await?;
            }
        }
        // In the same transaction as the outcome they report, as on redb.
        append_own_events(&txn, notices, Some(endpoint.id)).await?;
        txn.commit().await?;
        counted(delivery.status);
        Ok(())
    }
}

impl PgDispatcher {
    /// Records a success on an endpoint with no failing streak without
    /// locking the endpoint's row: it changes nothing there, and every
    /// outcome taking that lock would record one endpoint's attempts one
    /// commit at a time across the cluster. `false`: the endpoint has a
    /// streak (or is gone), and the caller records the success in full.
    async fn record_plain_success(
        &self,
        client: &mut deadpool_postgres::Object,
        claim: &Claim,
        key: &[u8],
        attempt: &crate::store::records::AttemptRecord,
    ) -> Result<bool, PgError> {
        let Some(row) = client
            .query_opt(
                "SELECT record, failed_attempts, announced FROM herald_endpoints WHERE id = $1",
                &[&key],
            )
            .await?
        else {
            return Ok(false);
        };
        let endpoint: EndpointRecord = codec::decode(row.get::<_, &[u8]>(0))?;
        if row.get::<_, i32>(1) != 0 || row.get::<_, bool>(2) || endpoint.failing_since_ms.is_some()
        {
            return Ok(false);
        }
        let txn = client.transaction().await?;
        let Some(row) = txn
            .query_opt(
                "SELECT record FROM herald_deliveries WHERE id = $1 AND lease_token = $2 FOR UPDATE",
                &[&claim.id, &claim.token],
            )
            .await?
        else {
            return Ok(true);
        };
        let mut delivery: DeliveryRecord = codec::decode(row.get::<_, &[u8]>(0))?;
        delivery.attempts.push(attempt.clone());
        delivery.status = crate::store::records::DeliveryStatus::Succeeded;
        delivery.next_attempt_ms = None;
        settle(&txn, claim.id, &delivery).await?;
        txn.commit().await?;
        Ok(true)
    }
}

/// Writes `delivery` after an attempt and releases its lease.
async fn settle(
    txn: &tokio_postgres::Transaction<'_>,
    id: i64,
    delivery: &DeliveryRecord,
) -> Result<(), PgError> {
    if let Some(attempt) = delivery.attempts.last() {
        tally_attempt(txn, delivery.endpoint_id, id, attempt).await?;
    }
    txn.execute(
        "UPDATE herald_deliveries SET status = $1, next_attempt_ms = $2, lease_token = NULL, \
         lease_until_ms = 0, record = $3 WHERE id = $4",
        &[
            &status_code(delivery.status),
            &delivery.next_attempt_ms,
            &codec::encode(delivery),
            &id,
        ],
    )
    .await?;
    Ok(())
}

/// Shards of a minute's attempt tally (see `herald_attempt_tally`).
const TALLY_SHARDS: i64 = 8;

/// Adds `attempt` to its endpoint's tally for its minute.
async fn tally_attempt(
    txn: &tokio_postgres::Transaction<'_>,
    endpoint_id: u128,
    delivery_id: i64,
    attempt: &AttemptRecord,
) -> Result<(), PgError> {
    let endpoint = super::webhooks::id_bytes(endpoint_id);
    let minute = minute_of(attempt.at_ms);
    let shard = delivery_id.rem_euclid(TALLY_SHARDS) as i16;
    // The row first exists, then is locked: a lock on a row not there yet
    // would let two recordings both start from an empty tally.
    txn.execute(
        "INSERT INTO herald_attempt_tally (endpoint_id, minute, shard, tally) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        &[
            &endpoint,
            &minute,
            &shard,
            &AttemptTally::default().encode(),
        ],
    )
    .await?;
    let row = txn
        .query_one(
            "SELECT tally FROM herald_attempt_tally \
             WHERE endpoint_id = $1 AND minute = $2 AND shard = $3 FOR UPDATE",
            &[&endpoint, &minute, &shard],
        )
        .await?;
    let mut tally = AttemptTally::decode(row.get::<_, &[u8]>(0))?;
    tally.add(attempt.status_code, attempt.latency_ms);
    txn.execute(
        "UPDATE herald_attempt_tally SET tally = $4 \
         WHERE endpoint_id = $1 AND minute = $2 AND shard = $3",
        &[&endpoint, &minute, &shard, &tally.encode()],
    )
    .await?;
    Ok(())
}

/// An endpoint's row as a claim reads it.
struct Admission {
    failed_attempts: u32,
    open_until_ms: i64,
    tokens: f64,
    tokens_at_ms: i64,
    in_flight: i64,
}

struct Admitted {
    /// Attempts that may start now.
    slots: i64,
    /// The rate limit's bucket after refilling to now.
    tokens: f64,
}

impl Admission {
    /// What the endpoint's limits admit at `now`: the in-flight cap less
    /// what every node holds, one probe at a time while the breaker is
    /// half open and none while it is open, and no more than its bucket.
    fn admit(&self, endpoint: &EndpointRecord, settings: &WebhookSettings, now: i64) -> Admitted {
        let breaker_open = self.failed_attempts >= settings.circuit_failures;
        let cap = if !breaker_open {
            settings.max_in_flight_per_endpoint as i64
        } else if now < self.open_until_ms {
            0
        } else {
            1
        };
        let mut slots = (cap - self.in_flight).max(0);
        let mut tokens = self.tokens;
        if let Some(rate) = endpoint.rate_limit_per_sec {
            let rate = f64::from(rate);
            let elapsed = (now - self.tokens_at_ms).max(0) as f64 / 1000.0;
            // A bucket never used starts full.
            tokens = if self.tokens_at_ms == 0 {
                rate
            } else {
                (tokens + elapsed * rate).min(rate)
            };
            slots = slots.min(tokens.floor() as i64);
        }
        Admitted { slots, tokens }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebhookSettings {
        crate::config::validate(Default::default(), None)
            .expect("the embedded defaults are valid")
            .webhooks
    }

    fn admission(failed: u32, open_until_ms: i64, in_flight: i64) -> Admission {
        Admission {
            failed_attempts: failed,
            open_until_ms,
            tokens: 0.0,
            tokens_at_ms: 0,
            in_flight,
        }
    }

    #[test]
    fn the_cap_counts_every_nodes_leases_and_the_breaker_admits_one_probe() {
        let s = settings();
        let endpoint = crate::webhooks::endpoint::new_record(0);
        let cap = s.max_in_flight_per_endpoint as i64;
        assert_eq!(admission(0, 0, 0).admit(&endpoint, &s, 1_000).slots, cap);
        assert_eq!(
            admission(0, 0, cap - 1).admit(&endpoint, &s, 1_000).slots,
            1
        );
        assert_eq!(
            admission(0, 0, cap + 3).admit(&endpoint, &s, 1_000).slots,
            0
        );
        let open = s.circuit_failures;
        assert_eq!(
            admission(open, 5_000, 0).admit(&endpoint, &s, 1_000).slots,
            0
        );
        assert_eq!(
            admission(open, 5_000, 0).admit(&endpoint, &s, 6_000).slots,
            1
        );
        assert_eq!(
            admission(open, 5_000, 1).admit(&endpoint, &s, 6_000).slots,
            0
        );
    }

    #[test]
    fn the_rate_limit_refills_with_time_and_starts_full() {
        let s = settings();
        let mut endpoint = crate::webhooks::endpoint::new_record(0);
        endpoint.rate_limit_per_sec = Some(10);
        let fresh = admission(0, 0, 0).admit(&endpoint, &s, 1_000);
        assert_eq!(fresh.slots, 10.min(s.max_in_flight_per_endpoint as i64));
        let spent = Admission {
            tokens: 0.0,
            tokens_at_ms: 1_000,
            ..admission(0, 0, 0)
        };
        assert_eq!(spent.admit(&endpoint, &s, 1_050).slots, 0);
        assert_eq!(spent.admit(&endpoint, &s, 1_300).slots, 3);
        assert_eq!(
            spent.admit(&endpoint, &s, 9_000).slots,
            10.min(s.max_in_flight_per_endpoint as i64)
        );
    }
}
