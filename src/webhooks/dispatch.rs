//! Delivering webhooks: the scheduler's dispatch for the webhook queue
//! (per-endpoint gates, attempts started on the async runtime) and one
//! attempt from start to recorded outcome: load the delivery, sign its
//! payload, send it, and hand what happened to the ledger.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::client::{self, Client, Outcome};
use super::endpoint::{signing_secrets, REDACTED};
use super::gate::{self, Gate};
use super::owner_alert::OwnerAlerts;
use super::policy::{Policy, Report};
use super::settings::WebhookSettings;
use super::target;
use super::{ledger, payload, signing};
use crate::clock;
use crate::events::ID_PREFIX as EVENT_ID_PREFIX;
use crate::ids;
use crate::metrics::{self, DeliveryOutcome};
use crate::retry::{self, RetryPolicy};
use crate::scheduler::{Admit, Dispatch, Ended, Inbox, Job};
use crate::store::records::{AttemptRecord, DeliveryRecord, DeliveryStatus, EndpointRecord};
use crate::store::{ReadTxn, Store, StoreError, Writer};

/// What every attempt needs; shared by the dispatcher and the API (manual
/// retries, test sends).
pub struct AttemptContext {
    pub store: Store,
    pub writer: Writer,
    pub client: Client,
    pub settings: WebhookSettings,
    pub policy: Policy,
    /// How owners are emailed; `None`: they are not.
    pub owner_alerts: Option<Arc<OwnerAlerts>>,
}

impl AttemptContext {
    pub fn new(
        store: Store,
        writer: Writer,
        settings: &WebhookSettings,
        owner_alerts: Option<OwnerAlerts>,
    ) -> Self {
        AttemptContext {
            client: client_for(settings),
            policy: policy_for(settings),
            owner_alerts: owner_alerts.map(Arc::new),
            store,
            writer,
            settings: settings.clone(),
        }
    }
}

/// The HTTP client attempts go through, reaching only what `settings` allow.
pub fn client_for(settings: &WebhookSettings) -> Client {
    Client::new(super::ssrf::Policy {
        allow: settings.allow_networks.clone(),
    })
}

/// What decides each attempt's sequel under `settings`.
pub fn policy_for(settings: &WebhookSettings) -> Policy {
    Policy {
        retry: RetryPolicy::new(settings.retry_schedule.clone(), settings.min_throttle_delay),
        disable_after: settings.disable_after,
        failing_threshold: settings.failing_threshold,
    }
}

/// The webhook queue's half of the scheduler: a gate per endpoint, and
/// attempts run as tasks that report to the scheduler's inbox.
pub struct Deliveries {
    ctx: Arc<AttemptContext>,
    runtime: tokio::runtime::Handle,
    inbox: Sender<Inbox>,
    limits: gate::Limits,
    /// One per endpoint; an endpoint heard of nowhere (deleted) admits
    /// nothing.
    gates: HashMap<u128, Gate>,
    /// Jobs started since the last launch, loaded in one read.
    starting: Vec<Job>,
}

impl Deliveries {
    pub fn new(
        ctx: Arc<AttemptContext>,
        runtime: tokio::runtime::Handle,
        inbox: Sender<Inbox>,
    ) -> Result<Self, StoreError> {
        let limits = gate::Limits {
            max_in_flight: ctx.settings.max_in_flight_per_endpoint,
            circuit_failures: ctx.settings.circuit_failures,
            circuit_cooldown: ctx.settings.circuit_cooldown,
        };
        let mut deliveries = Deliveries {
            ctx,
            runtime,
            inbox,
            limits,
            gates: HashMap::new(),
            starting: Vec::new(),
        };
        deliveries.load_endpoints()?;
        Ok(deliveries)
    }

    /// Configures every gate from the endpoints' current settings.
    fn load_endpoints(&mut self) -> Result<(), StoreError> {
        let endpoints: HashMap<u128, EndpointRecord> = self
            .ctx
            .store
            .read()?
            .endpoints()?
            .into_iter()
            .map(|e| (e.id, e))
            .collect();
        let now = Instant::now();
        for (id, gate) in &mut self.gates {
            gate.configure(endpoints.get(id), now);
        }
        for (id, endpoint) in &endpoints {
            self.gates
                .entry(*id)
                .or_insert_with(|| Gate::new(Some(endpoint), now));
        }
        Ok(())
    }
}

impl Dispatch for Deliveries {
    fn admit(&mut self, key: u128, now: Instant) -> Admit {
        self.gates
            .entry(key)
            .or_insert_with(|| Gate::new(None, now))
            .admit(now, &self.limits)
    }

    fn start(&mut self, job: Job) {
        self.starting.push(job);
    }

    /// One read of the store for every job started in the round, off the
    /// scheduler's thread, then a task per attempt.
    fn launch(&mut self) {
        if self.starting.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut self.starting);
        let ctx = self.ctx.clone();
        let inbox = self.inbox.clone();
        let runtime = self.runtime.clone();
        self.runtime.spawn_blocking(move || {
            // A panic while reading would leave every job of the round in
            // flight for good, holding its endpoint's slot: it counts as a
            // failed read instead.
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                load_due(&ctx.store, &jobs)
            }))
            .unwrap_or_else(|_| Err("reading the round's attempts panicked".to_owned()));
            let loaded = match read {
                Ok(loaded) => loaded,
                Err(e) => {
                    tracing::error!(error = %e, jobs = jobs.len(), "loading webhook attempts failed");
                    for job in jobs {
                        let ended = Ended::Unrecorded;
                        let _ = inbox.send(Inbox::Ended { job, ended });
                    }
                    return;
                }
            };
            for (job, loaded) in jobs.into_iter().zip(loaded) {
                let loaded = match loaded {
                    Ok(Ok(loaded)) => loaded,
                    Ok(Err(not_made)) => {
                        let ended = not_made.ended();
                        let _ = inbox.send(Inbox::Ended { job, ended });
                        continue;
                    }
                    // One damaged record holds back its own job only.
                    Err(e) => {
                        tracing::error!(error = %e, delivery = job.id, "loading a webhook attempt failed");
                        let ended = Ended::Unrecorded;
                        let _ = inbox.send(Inbox::Ended { job, ended });
                        continue;
                    }
                };
                let (ctx, inbox) = (ctx.clone(), inbox.clone());
                runtime.spawn(async move {
                    let ended = run_scheduled(&ctx, job, loaded, &inbox).await;
                    let _ = inbox.send(Inbox::Ended { job, ended });
                });
            }
        });
    }

    fn ended(&mut self, key: u128, ended: Ended, now: Instant) {
        if let Some(gate) = self.gates.get_mut(&key) {
            gate.ended(ended, now, &self.limits);
        }
    }

    fn keys_changed(&mut self) {
        if let Err(e) = self.load_endpoints() {
            tracing::error!(error = %e, "reloading endpoints failed; keeping the previous settings");
        }
    }

    fn recording(&self) -> bool {
        self.ctx.writer.is_alive()
    }
}

/// The attempt the schedule asked for. The scheduler hears that the
/// endpoint's slot is free as soon as the exchange is over, before its
/// outcome is durable: the slot bounds requests in flight, not commits, so
/// one endpoint is not held to its slots per commit time. The job's row
/// stays due until the outcome commits, so a crash in between still means
/// a retry.
async fn run_scheduled(
    ctx: &AttemptContext,
    job: Job,
    loaded: Loaded,
    inbox: &Sender<Inbox>,
) -> Ended {
    let release = |outcome: &Outcome| {
        let ended = if outcome.succeeded() {
            Ended::Succeeded
        } else {
            Ended::Failed
        };
        let _ = inbox.send(Inbox::Released { job, ended });
    };
    match make(ctx, job.id, loaded, false, release).await {
        Ok(outcome) if outcome.succeeded() => Ended::Succeeded,
        Ok(_) => Ended::Failed,
        Err(e) => {
            tracing::error!(error = %e, delivery = job.id, "webhook attempt could not be recorded");
            Ended::Unrecorded
        }
    }
}

/// A manual attempt (`POST /v1/deliveries/{id}/retry`): made now, whatever
/// the delivery's status; it does not advance the retry schedule. `None`
/// when there is no such delivery.
pub async fn run_manual(ctx: &AttemptContext, delivery_id: u64) -> Result<Option<Outcome>, String> {
    let store = ctx.store.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        load(&store.read()?, delivery_id, true, clock::now_ms())
    })
    .await
    .unwrap_or(Ok(Err(NotMade::Nothing)))
    .map_err(|e| e.to_string())?;
    match loaded {
        Ok(loaded) => Ok(Some(make(ctx, delivery_id, loaded, true, |_| {}).await?)),
        Err(_) => Ok(None),
    }
}

/// Why no request was made.
enum NotMade {
    /// Pending, but by the clock not due yet.
    NotDue,
    /// Gone or settled: nothing to attempt.
    Nothing,
}

impl NotMade {
    fn ended(&self) -> Ended {
        match self {
            NotMade::NotDue => Ended::NotDue,
            NotMade::Nothing => Ended::Skipped,
        }
    }
}

struct Loaded {
    delivery: DeliveryRecord,
    endpoint: EndpointRecord,
    body: String,
}

/// Each job's attempt, in one read of the store; an error reading one
/// job's records is that job's alone.
type LoadedJob = Result<Result<Loaded, NotMade>, StoreError>;

/// What each of `jobs` needs for its attempt, in one read of the store.
fn load_due(store: &Store, jobs: &[Job]) -> Result<Vec<LoadedJob>, String> {
    let txn = store.read().map_err(|e| e.to_string())?;
    let now_ms = clock::now_ms();
    Ok(jobs
        .iter()
        .map(|job| load(&txn, job.id, false, now_ms))
        .collect())
}

/// The delivery with what its attempt needs. A scheduled attempt finds
/// nothing to do when the delivery is settled, and `NotDue` when it is
/// pending but later than `now_ms` (the scheduler acted on a window read
/// before the delivery moved, or the clock stepped back).
fn load(
    txn: &ReadTxn,
    delivery_id: u64,
    manual: bool,
    now_ms: i64,
) -> Result<Result<Loaded, NotMade>, StoreError> {
    let Some(delivery) = txn.delivery(delivery_id)? else {
        return Ok(Err(NotMade::Nothing));
    };
    if !manual {
        if delivery.status != DeliveryStatus::Pending {
            return Ok(Err(NotMade::Nothing));
        }
        if delivery.next_attempt_ms.is_none_or(|due| due > now_ms) {
            return Ok(Err(NotMade::NotDue));
        }
    }
    let Some(endpoint) = txn.endpoint(delivery.endpoint_id)? else {
        return Ok(Err(NotMade::Nothing));
    };
    let Some((seq, event)) = txn.event_by_id(delivery.event_id)? else {
        return Ok(Err(NotMade::Nothing));
    };
    Ok(Ok(Loaded {
        body: payload::for_endpoint(seq, &event, &endpoint.version_pins),
        delivery,
        endpoint,
    }))
}

/// The request headers of one attempt, signature included. `attempt`
/// counts this delivery's attempts from 1 (`webhook-attempt`); it is not
/// signed, as Standard Webhooks signs the id, timestamp and body only.
pub fn request_headers(
    endpoint: &EndpointRecord,
    msg_id: &str,
    body: &str,
    now_ms: i64,
    attempt: u32,
) -> Vec<(String, String)> {
    let timestamp = now_ms.div_euclid(1000);
    let secrets = signing_secrets(endpoint, now_ms);
    let refs: Vec<&signing::Secret> = secrets.iter().collect();
    let signature = signing::signature_header(&refs, msg_id, timestamp, body.as_bytes());
    let mut headers = herald_headers(msg_id, timestamp, signature, attempt);
    headers.extend(endpoint.headers.iter().cloned());
    headers
}

/// The request headers of the `attempt`-th attempt, made at `at_ms`, as an
/// operator may see them: the signature and the endpoint's own header
/// values, which are its receiver's credentials, redacted.
pub fn shown_request_headers(
    endpoint: Option<&EndpointRecord>,
    msg_id: &str,
    at_ms: i64,
    attempt: u32,
) -> Vec<(String, String)> {
    let mut headers = herald_headers(msg_id, at_ms.div_euclid(1000), REDACTED.to_owned(), attempt);
    if let Some(endpoint) = endpoint {
        headers.extend(
            endpoint
                .headers
                .iter()
                .map(|(name, _)| (name.clone(), REDACTED.to_owned())),
        );
    }
    headers
}

fn herald_headers(
    msg_id: &str,
    timestamp: i64,
    signature: String,
    attempt: u32,
) -> Vec<(String, String)> {
    vec![
        ("webhook-id".to_owned(), msg_id.to_owned()),
        ("webhook-timestamp".to_owned(), timestamp.to_string()),
        ("webhook-signature".to_owned(), signature),
        ("webhook-attempt".to_owned(), attempt.to_string()),
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            "user-agent".to_owned(),
            concat!("Herald/", env!("CARGO_PKG_VERSION")).to_owned(),
        ),
    ]
}

/// Sends `body` to `endpoint` now as the delivery's `attempt`-th attempt
/// (from 1) and returns how it went.
pub async fn send(
    ctx: &AttemptContext,
    endpoint: &EndpointRecord,
    msg_id: &str,
    body: String,
    attempt: u32,
) -> Outcome {
    send_with(&ctx.client, &ctx.settings, endpoint, msg_id, body, attempt).await
}

/// How long one attempt to `endpoint` may take.
pub fn attempt_timeout(settings: &WebhookSettings, endpoint: &EndpointRecord) -> Duration {
    endpoint
        .timeout_secs
        .map_or(settings.timeout, |s| Duration::from_secs(u64::from(s)))
}

/// As `send`, with the client and settings given: what every backend's
/// dispatcher sends through.
pub async fn send_with(
    client: &Client,
    settings: &WebhookSettings,
    endpoint: &EndpointRecord,
    msg_id: &str,
    body: String,
    attempt: u32,
) -> Outcome {
    let now_ms = clock::now_ms();
    let timeout = attempt_timeout(settings, endpoint);
    let target = match target::parse(&endpoint.url, settings.require_https) {
        Ok(t) => t,
        Err(e) => {
            return Outcome::failed(client::Failure::Refused(format!(
                "endpoint URL refused: {e}"
            )))
        }
    };
    let headers = request_headers(endpoint, msg_id, &body, now_ms, attempt);
    client
        .send(client::Attempt {
            target: &target,
            headers,
            body: bytes::Bytes::from(body),
            timeout,
        })
        .await
}

/// What an attempt started at `started_ms` leaves: its record, and the
/// report the policy decides on.
pub fn recorded(outcome: &Outcome, started_ms: i64, manual: bool) -> (AttemptRecord, Report) {
    let failure = outcome.failure.as_ref().map(client::Failure::kind);
    let attempt = AttemptRecord {
        at_ms: started_ms,
        status_code: outcome.status,
        error: outcome.error_text(),
        failure,
        latency_ms: u32::try_from(outcome.latency.as_millis()).unwrap_or(u32::MAX),
        response: outcome.response_excerpt.clone(),
        manual,
    };
    let report = Report {
        status_code: outcome.status,
        failure,
        retry_after: outcome
            .retry_after
            .as_deref()
            .and_then(|v| retry::parse_retry_after(v, started_ms.div_euclid(1000))),
        manual,
        random_unit: ids::random_unit(),
    };
    (attempt, report)
}

/// Makes the loaded attempt and records its outcome; `answered` runs once
/// the request is over, before its outcome is written.
async fn make(
    ctx: &AttemptContext,
    delivery_id: u64,
    loaded: Loaded,
    manual: bool,
    answered: impl FnOnce(&Outcome),
) -> Result<Outcome, String> {
    let msg_id = ids::format(EVENT_ID_PREFIX, loaded.delivery.event_id);
    let started_ms = clock::now_ms();
    let number = u32::try_from(loaded.delivery.attempts.len())
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    let outcome = send(ctx, &loaded.endpoint, &msg_id, loaded.body, number).await;
    answered(&outcome);
    let (attempt, report) = recorded(&outcome, started_ms, manual);
    // The request was made: its outcome must be recorded, not shed (an
    // unrecorded attempt is made again).
    let policy = ctx.policy.clone();
    let alerts = ctx.owner_alerts.clone();
    let succeeded = report.succeeded();
    let status = ctx
        .writer
        .write_waiting(move |txn| {
            ledger::record_attempt(
                txn,
                delivery_id,
                attempt,
                &report,
                &policy,
                alerts.as_deref(),
            )
        })
        .await
        .map_err(|e| format!("the attempt's outcome was not written: {e}"))?;
    if let Some(status) = status {
        let latency = outcome.latency;
        let outcome = match status {
            _ if succeeded => DeliveryOutcome::Success,
            DeliveryStatus::Failed if !manual => DeliveryOutcome::Dead,
            _ => DeliveryOutcome::Failure,
        };
        metrics::WEBHOOKS.attempted(outcome, latency);
    }
    Ok(outcome)
}
