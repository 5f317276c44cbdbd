//! Tracking benchmark: Segment-compatible ingestion and the questions asked
//! of it, against a real `herald serve` on loopback.
//!
//! `cargo bench --bench tracking` starts the release binary with a
//! `[[tracking.sources]]` entry, a fresh daemon and database per scenario so
//! one scenario's rows cannot slow or flatter the next, and runs:
//! - `batch100-c8`, `batch100-c32`: closed-loop keep-alive clients (each
//!   sends its next request when the previous answer arrived) POSTing
//!   `/v1/batch` with 100 `track` calls a request and the write key in the
//!   body, over 8 or 32 connections, for `HERALD_BENCH_SECS` after one
//!   unmeasured second. Every call has a `messageId` of its own, one of
//!   300,000 `userId`s, small properties and a `context`, a fifth of them
//!   with a UTM campaign.
//! - `track-c64`: the same calls one per request to `/v1/track`, with the
//!   write key as Basic auth, over 64 connections.
//! - `funnel-1m`: loads `HERALD_BENCH_FUNNEL_EVENTS` calls of a synthetic
//!   product through `/v1/batch` (500 calls a request, 16 connections) as
//!   fast as the daemon takes them, then times `GET /v1/funnels` (Signed
//!   Up → Trial Started → Subscribed within 14 days, over the whole range)
//!   five times, one first-touch attribution of `Subscribed` and one daily
//!   count of `Signed Up`. Each answer is compared with what the generator
//!   knows it sent.
//!
//! The product has one user per five calls or so (about 200,000 for a
//! million): one or two anonymous page views before signing up, the first
//! from a UTM campaign 40% of the time; `Signed Up` with both ids, which
//! links the anonymous history to the user; `Trial Started` for 40% of
//! users within a week; `Subscribed` for 40% of those up to two weeks
//! later, so some fall outside the funnel's window; and more page views
//! as the user. Signups are spread over the last 60 days and calls that
//! would lie in the future are never sent, as for a live product. Calls
//! go out in time order, as a live site would send them.
//!
//! Every 2xx counted here was fsynced by the daemon before it was sent.
//!
//! Environment:
//! - `HERALD_BENCH_SECS`: measured seconds per throughput scenario
//!   (default 8).
//! - `HERALD_BENCH_SCENARIOS`: comma-separated subset of
//!   `batch100-c8,batch100-c32,track-c64,funnel-1m`; `batch100` selects both
//!   batch scenarios.
//! - `HERALD_BENCH_FUNNEL_EVENTS`: calls loaded by `funnel-1m` (default
//!   1,000,000).
//! - `HERALD_BENCH_TARGET`: `http://IP:PORT` of an already running server to
//!   drive with the throughput scenarios instead of starting one, as
//!   `benches/ingest.rs` does; `funnel-1m` needs a daemon of its own and is
//!   skipped.
//! - `HERALD_BENCH_THREADS`: client threads (default 2, like `wrk -t2`).
//! - `HERALD_CEILING_BIN`: the ceiling probe's binary. Each throughput
//!   scenario then runs against a fresh probe right after Herald, with the
//!   same load and the same calls: in the probe's `{"events":[…]}` envelope
//!   against its batch mode (one row per call), or one call a request
//!   against its single mode for `track-c64`; the report gives Herald's
//!   calls/s and latencies as ratios to the probe's.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use herald::clock::{format_rfc3339, now_ms};
use serde_json::Value;

use common::ceiling::{self, Ceiling};
use common::daemon::Daemon;
use common::http::{self, connect, get_json, Connection};
use common::knobs::{self, env_parse, Selection};
use common::load::{self, Conversation, Load, Shares, Tally, Throughput};
use common::report::{cpu_note, cpu_sample, quantile_ms, THROUGHPUT_HEADER};

const WRITE_KEY: &str = "bench_write_key_0123456789";

const THROUGHPUT: &[Throughput] = &[
    Throughput::new("batch100-c8", 8, 100),
    Throughput::new("batch100-c32", 32, 100),
    Throughput::new("track-c64", 64, 1),
];
const FUNNEL: &str = "funnel-1m";

/// A cap on one ingest request, so a wedged server ends the run with an
/// error instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Queries scan every row of their range; a slow one is a finding, but
/// not one worth waiting on forever.
const QUERY_TIMEOUT: Duration = Duration::from_secs(300);
/// Distinct `userId`s in the throughput scenarios: enough that the
/// per-person index is not one hot page.
const THROUGHPUT_USERS: u64 = 300_000;

/// Calls per `/v1/batch` while loading the funnel data: a bulk import
/// sends as many as Segment's 500 KB request limit comfortably holds.
/// Requests of 100 loaded about 40% slower here: the writer's group
/// commit is the limit, and larger groups spread its cost thinner.
const LOAD_BATCH: usize = 500;
/// Connections loading at once: enough that several requests wait behind
/// each commit and join the next group.
const LOAD_CONNECTIONS: usize = 16;
/// A batch that failed (429, a dropped connection) is sent again with the
/// same `messageId`s, which the daemon deduplicates, as Segment's
/// libraries do.
const LOAD_ATTEMPTS: u32 = 5;
const FUNNEL_RUNS: usize = 5;
const FUNNEL_STEPS: [&str; 3] = ["Signed Up", "Trial Started", "Subscribed"];
const WITHIN_MS: i64 = 14 * DAY_MS;
const DAY_MS: i64 = 24 * 3600 * 1000;
/// How far back the product's history reaches.
const HISTORY_MS: i64 = 60 * DAY_MS;

fn config() -> String {
    format!("[[tracking.sources]]\nname = \"bench\"\nwrite_key = \"{WRITE_KEY}\"\n")
}

/// splitmix64: the bench needs reproducible spread, not a crypto RNG or
/// another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// (utm source, medium, name).
const CAMPAIGNS: &[(&str, &str, &str)] = &[
    ("google", "cpc", "brand-search"),
    ("google", "cpc", "competitor-search"),
    ("newsletter", "email", "november-digest"),
    ("linkedin", "social", "launch-week"),
    ("twitter", "social", "launch-week"),
    ("partner", "referral", "integrations-directory"),
];

fn write_context(out: &mut String, ip: u64, campaign: Option<usize>, browser: bool) {
    let library = if browser {
        r#"{"name":"analytics.js","version":"next-1.70.0"}"#
    } else {
        r#"{"name":"analytics-node","version":"2.1.2"}"#
    };
    let _ = write!(
        out,
        r#""context":{{"library":{library},"ip":"203.0.{}.{}","locale":"en-US""#,
        ip % 250,
        (ip >> 8) % 250 + 1
    );
    if browser {
        out.push_str(
            r#","userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15""#,
        );
    }
    if let Some(c) = campaign {
        let (source, medium, name) = CAMPAIGNS[c % CAMPAIGNS.len()];
        let _ = write!(
            out,
            r#","campaign":{{"source":"{source}","medium":"{medium}","name":"{name}"}}"#
        );
    }
    out.push('}');
}

// ---------------------------------------------------------------------------
// Throughput scenarios

/// One `track` call of an e-commerce app's server: the event mix and the
/// sizes of real ones, with a `messageId` unique to the run.
fn write_track(out: &mut String, rng: &mut Rng, message_id: &str, timestamp: &str, batch: bool) {
    let user = rng.below(THROUGHPUT_USERS);
    let sku = rng.below(5000);
    let roll = rng.below(100);
    let (event, properties) = match roll {
        0..45 => (
            "Product Viewed",
            format!(
                r#"{{"product_id":"sku-{sku}","name":"Trail Runner {}","category":"shoes","price":{}.99,"currency":"EUR"}}"#,
                sku % 40,
                40 + sku % 90
            ),
        ),
        45..65 => (
            "Product Added",
            format!(
                r#"{{"product_id":"sku-{sku}","quantity":{},"price":{}.99,"currency":"EUR","cart_id":"cart-{user}"}}"#,
                1 + sku % 3,
                40 + sku % 90
            ),
        ),
        65..77 => (
            "Checkout Started",
            format!(
                r#"{{"order_id":"ord-{}","value":{}.50,"currency":"EUR","products":1}}"#,
                rng.next() % 10_000_000,
                40 + sku % 400
            ),
        ),
        77..85 => (
            "Order Completed",
            format!(
                r#"{{"order_id":"ord-{}","total":{}.50,"revenue":{}.00,"shipping":4.90,"currency":"EUR","coupon":"WELCOME10"}}"#,
                rng.next() % 10_000_000,
                40 + sku % 400,
                30 + sku % 380
            ),
        ),
        85..95 => (
            "Signed Up",
            r#"{"plan":"free","method":"email"}"#.to_owned(),
        ),
        _ => (
            "Subscribed",
            r#"{"plan":"pro","interval":"month","mrr":49}"#.to_owned(),
        ),
    };
    out.push('{');
    if batch {
        out.push_str(r#""type":"track","#);
    }
    let _ = write!(
        out,
        r#""userId":"user-{user}","event":"{event}","messageId":"{message_id}","timestamp":"{timestamp}","properties":{properties},"#
    );
    let campaign = rng
        .percent(20)
        .then(|| rng.below(CAMPAIGNS.len() as u64) as usize);
    write_context(out, user, campaign, false);
    out.push('}');
}

/// Who a throughput scenario's requests are for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Recipient {
    /// Segment's routes, authenticated by the write key.
    Herald,
    /// The ceiling probe: the same calls in its `{"events":[…]}` envelope,
    /// or one a request as its whole body.
    Ceiling,
}

fn throughput_request(
    addr: SocketAddr,
    recipient: Recipient,
    calls: usize,
    rng: &mut Rng,
    prefix: &str,
    sent: &mut u64,
    basic_auth: &str,
) -> Vec<u8> {
    let now = format_rfc3339(now_ms());
    let mut body = String::with_capacity(560 * calls + 128);
    let next_id = |sent: &mut u64| {
        *sent += 1;
        format!("{prefix}-{sent}")
    };
    if calls == 1 {
        let id = next_id(sent);
        write_track(&mut body, rng, &id, &now, false);
        let auth = match recipient {
            Recipient::Herald => format!("Authorization: Basic {basic_auth}\r\n"),
            Recipient::Ceiling => String::new(),
        };
        http::post(addr, "/v1/track", &auth, &body)
    } else {
        match recipient {
            Recipient::Herald => {
                let _ = write!(
                    body,
                    r#"{{"writeKey":"{WRITE_KEY}","sentAt":"{now}","batch":["#
                );
            }
            Recipient::Ceiling => body.push_str(r#"{"events":["#),
        }
        for i in 0..calls {
            if i > 0 {
                body.push(',');
            }
            let id = next_id(sent);
            write_track(&mut body, rng, &id, &now, true);
        }
        body.push_str("]}");
        http::post(addr, "/v1/batch", "", &body)
    }
}

fn count_duplicates(answer: &[u8]) -> u64 {
    const NEEDLE: &[u8] = br#""status":"duplicate""#;
    answer
        .windows(NEEDLE.len())
        .filter(|w| *w == NEEDLE)
        .count() as u64
}

/// One connection of a throughput scenario: `track` calls with
/// `messageId`s of its own series.
struct Tracker {
    addr: SocketAddr,
    recipient: Recipient,
    calls: usize,
    rng: Rng,
    prefix: String,
    sent: u64,
    basic_auth: String,
    /// Calls the daemon answered `duplicate` for: a `messageId` clash, which
    /// would mean the bench measured less work than it claims.
    duplicates: u64,
}

impl Conversation for Tracker {
    async fn next_request(&mut self) -> Option<Vec<u8>> {
        Some(throughput_request(
            self.addr,
            self.recipient,
            self.calls,
            &mut self.rng,
            &self.prefix,
            &mut self.sent,
            &self.basic_auth,
        ))
    }

    fn answered(&mut self, body: &[u8]) -> Result<(), String> {
        self.duplicates += count_duplicates(body);
        Ok(())
    }
}

async fn drive(
    addr: SocketAddr,
    recipient: Recipient,
    scenario: &Throughput,
    secs: u64,
    run_id: u128,
) -> (Tally, u64) {
    let load = scenario.load(secs, REQUEST_TIMEOUT);
    let basic_auth = base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"));
    let outcome = load::run(addr, &load, |connection| Tracker {
        addr,
        recipient,
        calls: scenario.per_request,
        rng: Rng(mix(run_id as u64 ^ connection as u64)),
        prefix: format!("{}-{run_id}-{connection}", scenario.name),
        sent: 0,
        basic_auth: basic_auth.clone(),
        duplicates: 0,
    })
    .await;
    let duplicates = outcome.conversations.iter().map(|t| t.duplicates).sum();
    (outcome.tally, duplicates)
}

fn report_throughput(
    scenario: &Throughput,
    label: &str,
    secs: u64,
    (tally, duplicates): &(Tally, u64),
    notes: &mut Vec<String>,
) {
    println!("{}", scenario.row_as(label, secs, tally));
    if let Some(first) = &tally.first_failure {
        notes.push(format!("- {label}: first failure: {first}"));
    }
    if *duplicates > 0 {
        notes.push(format!(
            "- {label}: {duplicates} calls answered `duplicate`: messageIds clashed, so fewer calls were stored than counted"
        ));
    }
}

// ---------------------------------------------------------------------------
// The funnel scenario

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A page view; `anonymous` ones carry only the anonymousId.
    Page {
        page: u8,
        campaign: Option<u8>,
        anonymous: bool,
    },
    SignedUp,
    TrialStarted,
    Subscribed,
}

#[derive(Clone, Copy)]
struct Planned {
    ts_ms: i64,
    user: u32,
    kind: Kind,
}

/// (name, path, title).
const PAGES: &[(&str, &str, &str)] = &[
    ("Home", "/", "Acme: invoices that chase themselves"),
    ("Pricing", "/pricing", "Pricing | Acme"),
    ("Features", "/features", "Features | Acme"),
    (
        "Blog",
        "/blog/dunning-emails",
        "Dunning emails that work | Acme",
    ),
    (
        "Docs",
        "/docs/getting-started",
        "Getting started | Acme docs",
    ),
    ("Dashboard", "/app", "Dashboard | Acme"),
    ("Invoices", "/app/invoices", "Invoices | Acme"),
];

/// Calls of a synthetic product in time order, exactly `total` of them,
/// none later than `now_ms`; and how many users they belong to.
fn plan_product(total: usize, now_ms: i64, seed: u64) -> (Vec<Planned>, u32) {
    let mut calls = Vec::with_capacity(total + 16);
    let mut user = 0u32;
    let mut mine = Vec::with_capacity(16);
    while calls.len() < total {
        let mut rng = Rng(mix(seed ^ u64::from(user)));
        let pre = 1 + rng.below(2) as usize;
        let signup =
            now_ms - HISTORY_MS + 3 * DAY_MS + rng.below((HISTORY_MS - 3 * DAY_MS) as u64) as i64;
        mine.clear();
        // Generated in the user's own order, so a cut at `total` keeps a
        // consistent history: no conversion without its signup.
        let mut pre_times: Vec<i64> = (0..pre)
            .map(|_| signup - 1 - rng.below(3 * DAY_MS as u64) as i64)
            .collect();
        pre_times.sort_unstable();
        for (i, ts) in pre_times.into_iter().enumerate() {
            let campaign =
                (i == 0 && rng.percent(40)).then(|| rng.below(CAMPAIGNS.len() as u64) as u8);
            let page = if i == 0 { rng.below(4) as u8 } else { 1 };
            mine.push(Planned {
                ts_ms: ts,
                user,
                kind: Kind::Page {
                    page,
                    campaign,
                    anonymous: true,
                },
            });
        }
        mine.push(Planned {
            ts_ms: signup,
            user,
            kind: Kind::SignedUp,
        });
        if rng.percent(40) {
            let trial = signup + 1 + rng.below(7 * DAY_MS as u64) as i64;
            mine.push(Planned {
                ts_ms: trial,
                user,
                kind: Kind::TrialStarted,
            });
            if rng.percent(40) {
                let subscribed = trial + 1 + rng.below(14 * DAY_MS as u64) as i64;
                mine.push(Planned {
                    ts_ms: subscribed,
                    user,
                    kind: Kind::Subscribed,
                });
            }
        }
        for _ in 0..rng.below(5) {
            let ts = signup + 1 + rng.below(20 * DAY_MS as u64) as i64;
            let campaign = rng.percent(10).then(|| 2 + rng.below(2) as u8);
            mine.push(Planned {
                ts_ms: ts,
                user,
                kind: Kind::Page {
                    page: 4 + rng.below(3) as u8,
                    campaign,
                    anonymous: false,
                },
            });
        }
        for call in mine.iter().filter(|c| c.ts_ms <= now_ms) {
            if calls.len() == total {
                break;
            }
            calls.push(*call);
        }
        user += 1;
    }
    calls.sort_by_key(|c| (c.ts_ms, c.user));
    (calls, user)
}

fn write_planned(out: &mut String, call: &Planned, message_id: usize, run_id: u128) {
    let user = call.user;
    let anonymous_id = format!("{:016x}", mix(u64::from(user) ^ 0xA11CE));
    let timestamp = format_rfc3339(call.ts_ms);
    out.push('{');
    match call.kind {
        Kind::Page {
            page,
            campaign,
            anonymous,
        } => {
            let (name, path, title) = PAGES[usize::from(page) % PAGES.len()];
            if anonymous {
                let _ = write!(out, r#""type":"page","anonymousId":"{anonymous_id}","#);
            } else {
                let _ = write!(out, r#""type":"page","userId":"u{user}","#);
            }
            let referrer = if campaign.is_some() {
                "https://www.google.com/"
            } else {
                ""
            };
            let _ = write!(
                out,
                r#""name":"{name}","properties":{{"path":"{path}","url":"https://acme.example{path}","title":"{title}","referrer":"{referrer}"}},"#
            );
            write_context(out, u64::from(user), campaign.map(usize::from), true);
        }
        Kind::SignedUp => {
            let _ = write!(
                out,
                r#""type":"track","event":"Signed Up","userId":"u{user}","anonymousId":"{anonymous_id}","properties":{{"plan":"free","method":"{}"}},"#,
                if user % 3 == 0 { "google" } else { "email" }
            );
            write_context(out, u64::from(user), None, false);
        }
        Kind::TrialStarted => {
            let _ = write!(
                out,
                r#""type":"track","event":"Trial Started","userId":"u{user}","properties":{{"plan":"pro","trial_days":14}},"#
            );
            write_context(out, u64::from(user), None, false);
        }
        Kind::Subscribed => {
            let _ = write!(
                out,
                r#""type":"track","event":"Subscribed","userId":"u{user}","properties":{{"plan":"pro","interval":"{}","mrr":49}},"#,
                if user % 4 == 0 { "year" } else { "month" }
            );
            write_context(out, u64::from(user), None, false);
        }
    }
    let _ = write!(
        out,
        r#","timestamp":"{timestamp}","messageId":"load-{run_id}-{message_id}"}}"#
    );
}

/// What the queries should answer, worked out from the planned calls with
/// the semantics the API documents.
struct Expected {
    funnel: [u64; 3],
    signed_up: u64,
    subscribed: u64,
    /// First-touch conversions per campaign index; `None` for no touch.
    first_touch: BTreeMap<Option<u8>, u64>,
}

fn expected(calls: &[Planned], users: u32, within_ms: i64) -> Expected {
    let n = users as usize;
    let mut signup = vec![None::<i64>; n];
    let mut trial = vec![None::<i64>; n];
    let mut subscribed = vec![None::<i64>; n];
    let mut touches: Vec<Vec<(i64, u8, bool)>> = vec![Vec::new(); n];
    for c in calls {
        let u = c.user as usize;
        match c.kind {
            Kind::SignedUp => signup[u] = signup[u].or(Some(c.ts_ms)),
            Kind::TrialStarted => trial[u] = trial[u].or(Some(c.ts_ms)),
            Kind::Subscribed => subscribed[u] = subscribed[u].or(Some(c.ts_ms)),
            Kind::Page {
                campaign: Some(campaign),
                anonymous,
                ..
            } => touches[u].push((c.ts_ms, campaign, anonymous)),
            Kind::Page { .. } => {}
        }
    }
    let mut out = Expected {
        funnel: [0; 3],
        signed_up: 0,
        subscribed: 0,
        first_touch: BTreeMap::new(),
    };
    for u in 0..n {
        let Some(entered) = signup[u] else { continue };
        out.signed_up += 1;
        out.funnel[0] += 1;
        let deadline = entered + within_ms;
        let Some(second) = trial[u].filter(|t| *t >= entered && *t <= deadline) else {
            continue;
        };
        out.funnel[1] += 1;
        if subscribed[u].is_some_and(|t| t >= second && t <= deadline) {
            out.funnel[2] += 1;
        }
    }
    for u in 0..n {
        let Some(converted) = subscribed[u] else {
            continue;
        };
        out.subscribed += 1;
        // Anonymous touches count once Signed Up linked them.
        let first = touches[u]
            .iter()
            .filter(|(t, _, anonymous)| *t <= converted && (!anonymous || signup[u].is_some()))
            .min_by_key(|(t, _, _)| *t)
            .map(|(_, c, _)| *c);
        *out.first_touch.entry(first).or_default() += 1;
    }
    out
}

/// What loading the product came to.
struct Loaded {
    calls: usize,
    elapsed: Duration,
    /// Per successful request, sorted.
    latencies_us: Vec<u32>,
    failed_batches: u64,
    retries: u64,
    duplicates: u64,
    first_failure: Option<String>,
}

/// One connection of the load: batches of `LOAD_BATCH` planned calls,
/// taken in turn with the others, each retried until `LOAD_ATTEMPTS`.
struct Loader {
    addr: SocketAddr,
    calls: Arc<Vec<Planned>>,
    run_id: u128,
    batches: Shares,
    body: String,
    /// The batch in flight: its index and the attempts it has had.
    batch: Option<(usize, u32)>,
    stored: usize,
    failed_batches: u64,
    retries: u64,
    duplicates: u64,
}

impl Loader {
    fn range(&self, batch: usize) -> std::ops::Range<usize> {
        batch * LOAD_BATCH..((batch + 1) * LOAD_BATCH).min(self.calls.len())
    }
}

impl Conversation for Loader {
    async fn next_request(&mut self) -> Option<Vec<u8>> {
        let batch = match self.batch {
            Some((batch, _)) => batch,
            None => {
                let batch = self.batches.take()? as usize;
                self.batch = Some((batch, 0));
                batch
            }
        };
        let range = self.range(batch);
        self.body.clear();
        let _ = write!(self.body, r#"{{"writeKey":"{WRITE_KEY}","batch":["#);
        for (i, call) in self.calls[range.clone()].iter().enumerate() {
            if i > 0 {
                self.body.push(',');
            }
            write_planned(&mut self.body, call, range.start + i, self.run_id);
        }
        self.body.push_str("]}");
        Some(http::post(self.addr, "/v1/batch", "", &self.body))
    }

    fn answered(&mut self, body: &[u8]) -> Result<(), String> {
        if let Some((batch, _)) = self.batch.take() {
            self.stored += self.range(batch).len();
        }
        self.duplicates += count_duplicates(body);
        Ok(())
    }

    fn failed(&mut self, error: String) -> (String, Duration) {
        if let Some((batch, attempts)) = self.batch.take() {
            if attempts + 1 < LOAD_ATTEMPTS {
                self.retries += 1;
                self.batch = Some((batch, attempts + 1));
            } else {
                self.failed_batches += 1;
            }
        }
        // The daemon asks for a second on 429.
        let pause = if error.starts_with("429") { 1000 } else { 200 };
        (error, Duration::from_millis(pause))
    }
}

async fn load_product(addr: SocketAddr, calls: Arc<Vec<Planned>>, run_id: u128) -> Loaded {
    let load = Load {
        connections: LOAD_CONNECTIONS,
        warmup: Duration::ZERO,
        limit: None,
        request_timeout: REQUEST_TIMEOUT,
    };
    let batches = Shares::new(calls.len().div_ceil(LOAD_BATCH) as u64);
    let outcome = load::run(addr, &load, |_| Loader {
        addr,
        calls: calls.clone(),
        run_id,
        batches: batches.clone(),
        body: String::with_capacity(LOAD_BATCH * 600),
        batch: None,
        stored: 0,
        failed_batches: 0,
        retries: 0,
        duplicates: 0,
    })
    .await;
    let loaders = &outcome.conversations;
    Loaded {
        calls: loaders.iter().map(|l| l.stored).sum(),
        elapsed: outcome.elapsed,
        failed_batches: loaders.iter().map(|l| l.failed_batches).sum(),
        retries: loaders.iter().map(|l| l.retries).sum(),
        duplicates: loaders.iter().map(|l| l.duplicates).sum(),
        latencies_us: outcome.tally.latencies_us,
        first_failure: outcome.tally.first_failure,
    }
}

/// One GET with a deadline: wall time and the parsed answer.
async fn query(
    stream: &mut Connection,
    addr: SocketAddr,
    path: &str,
) -> Result<(Duration, Value), String> {
    let started = Instant::now();
    let value = get_json(stream, addr, path, QUERY_TIMEOUT).await?;
    Ok((started.elapsed(), value))
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// min / median / max of a few samples.
fn spread(mut samples: Vec<f64>, decimals: usize) -> String {
    if samples.is_empty() {
        return "-".to_owned();
    }
    samples.sort_by(f64::total_cmp);
    format!(
        "{:.decimals$} / {:.decimals$} / {:.decimals$}",
        samples[0],
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    )
}

fn funnel_counts(answer: &Value) -> Vec<u64> {
    answer["steps"]
        .as_array()
        .map(|steps| steps.iter().filter_map(|s| s["count"].as_u64()).collect())
        .unwrap_or_default()
}

fn first_touch_counts(answer: &Value) -> BTreeMap<Option<u8>, u64> {
    let mut out = BTreeMap::new();
    for row in answer["by_campaign"].as_array().into_iter().flatten() {
        let campaign = &row["campaign"];
        let key = if campaign.is_null() {
            None
        } else {
            let found = CAMPAIGNS.iter().position(|(s, m, n)| {
                campaign["source"] == *s && campaign["medium"] == *m && campaign["name"] == *n
            });
            // An unknown campaign cannot match the expectation; 255 marks it.
            Some(found.map_or(u8::MAX, |i| i as u8))
        };
        *out.entry(key).or_default() += row["conversions"].as_u64().unwrap_or(0);
    }
    out
}

/// What `funnel-1m` prints: its load row, its query rows, and notes.
#[derive(Default)]
struct FunnelReport {
    load: String,
    queries: Vec<String>,
    notes: Vec<String>,
}

fn verdict(matches: bool, expected: String) -> String {
    if matches {
        "matches the data sent".to_owned()
    } else {
        format!("MISMATCH: expected {expected}")
    }
}

/// Loads the product, then asks its questions.
async fn funnel_scenario(
    addr: SocketAddr,
    total: usize,
    run_id: u128,
    pid: Option<u32>,
) -> FunnelReport {
    let mut report = FunnelReport::default();
    // A minute back, so no call is in the future by the daemon's clock.
    let now = now_ms() - 60_000;
    let (calls, users) = plan_product(total, now, run_id as u64);
    let want = expected(&calls, users, WITHIN_MS);
    let calls = Arc::new(calls);

    let cpu_before = cpu_sample(pid);
    let loaded = load_product(addr, calls.clone(), run_id).await;
    let label = format!("{FUNNEL} load");
    report.notes.extend(
        cpu_note(cpu_before, cpu_sample(pid), "this client", pid)
            .map(|n| format!("- {}: {n}", &label)),
    );
    let q = |p: f64| quantile_ms(&loaded.latencies_us, p);
    report.load = format!(
        "| {} | {users} | {:.2} | {:.0} | {} | {} | {} | {} | {} |",
        calls.len(),
        loaded.elapsed.as_secs_f64(),
        loaded.calls as f64 / loaded.elapsed.as_secs_f64(),
        q(0.50),
        q(0.99),
        q(1.0),
        loaded.calls,
        loaded.failed_batches,
    );
    if loaded.retries > 0 || loaded.duplicates > 0 {
        report.notes.push(format!(
            "- {label}: {} requests retried, {} calls answered `duplicate` (stored by an earlier attempt)",
            loaded.retries, loaded.duplicates
        ));
    }
    if let Some(first) = &loaded.first_failure {
        report
            .notes
            .push(format!("- {label}: first failure: {first}"));
    }

    let cpu_before = cpu_sample(pid);
    let since = format_rfc3339(now - HISTORY_MS - DAY_MS);
    let until = format_rfc3339(now_ms() + 60_000);
    let range = format!("since={since}&until={until}");
    let mut stream = match connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            report
                .notes
                .push(format!("- {FUNNEL}: connecting for the queries: {e}"));
            return report;
        }
    };

    let steps = FUNNEL_STEPS.join(",").replace(' ', "%20");
    let path = format!("/v1/funnels?steps={steps}&within=14d&{range}");
    let (mut walls, mut took, mut counts) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..FUNNEL_RUNS {
        match query(&mut stream, addr, &path).await {
            Ok((wall, answer)) => {
                walls.push(wall.as_secs_f64() * 1000.0);
                took.extend(answer["took_ms"].as_f64());
                counts = funnel_counts(&answer);
            }
            Err(e) => {
                report
                    .notes
                    .push(format!("- {FUNNEL}: funnel query failed: {e}"));
                stream = match connect(addr).await {
                    Ok(s) => s,
                    Err(_) => return report,
                };
            }
        }
    }
    let shown: Vec<String> = counts.iter().map(u64::to_string).collect();
    report.queries.push(format!(
        "| funnel: {}, within 14d, since {} days ago | {} | {} | {} | {} ({}) |",
        FUNNEL_STEPS.join(" → "),
        (HISTORY_MS + DAY_MS) / DAY_MS,
        walls.len(),
        spread(walls, 1),
        spread(took, 0),
        shown.join(" → "),
        verdict(counts == want.funnel, format!("{:?}", want.funnel)),
    ));

    let path = format!("/v1/attribution?event=Subscribed&model=first_touch&{range}");
    match query(&mut stream, addr, &path).await {
        Ok((wall, answer)) => {
            let conversions = answer["conversions"].as_u64().unwrap_or(0);
            let by = first_touch_counts(&answer);
            let untouched = |m: &BTreeMap<Option<u8>, u64>| m.get(&None).copied().unwrap_or(0);
            report.queries.push(format!(
                "| attribution: Subscribed, first touch | 1 | {} | - | {conversions} conversions, {} from {} campaigns ({}) |",
                ms(wall),
                conversions - untouched(&by).min(conversions),
                by.keys().filter(|k| k.is_some()).count(),
                verdict(
                    conversions == want.subscribed && by == want.first_touch,
                    format!(
                        "{} conversions, {} without a touch",
                        want.subscribed,
                        untouched(&want.first_touch)
                    ),
                ),
            ));
        }
        Err(e) => {
            report
                .notes
                .push(format!("- {FUNNEL}: attribution query failed: {e}"));
            stream = match connect(addr).await {
                Ok(s) => s,
                Err(_) => return report,
            };
        }
    }

    let path = format!("/v1/stats/events?event=Signed%20Up&interval=day&{range}");
    match query(&mut stream, addr, &path).await {
        Ok((wall, answer)) => {
            let total = answer["total"].as_u64().unwrap_or(0);
            let buckets = answer["series"].as_array().map_or(0, Vec::len);
            report.queries.push(format!(
                "| stats: Signed Up per day | 1 | {} | - | {total} in {buckets} days ({}) |",
                ms(wall),
                verdict(total == want.signed_up, want.signed_up.to_string()),
            ));
        }
        Err(e) => report
            .notes
            .push(format!("- {FUNNEL}: stats query failed: {e}")),
    }
    let label = format!("{FUNNEL} queries");
    report.notes.extend(
        cpu_note(cpu_before, cpu_sample(pid), "this client", pid)
            .map(|n| format!("- {}: {n}", &label)),
    );
    report
}

// ---------------------------------------------------------------------------

fn main() {
    let secs = env_parse("HERALD_BENCH_SECS", 8u64);
    let threads = env_parse("HERALD_BENCH_THREADS", 2usize);
    let funnel_events = env_parse("HERALD_BENCH_FUNNEL_EVENTS", 1_000_000usize);
    let selected = Selection::from_env();
    let wanted = |name: &str| selected.wants(name);
    let throughput: Vec<&Throughput> = THROUGHPUT.iter().filter(|s| wanted(s.name)).collect();
    let funnel = wanted(FUNNEL);
    selected.require_any(&["batch100-c8", "batch100-c32", "track-c64", FUNNEL]);
    if secs == 0 || funnel_events == 0 {
        eprintln!("HERALD_BENCH_SECS and HERALD_BENCH_FUNNEL_EVENTS must be positive");
        std::process::exit(2);
    }
    let target = knobs::target();

    let runtime = load::runtime(threads);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let run_id = load::run_id();

    println!(
        "`cargo bench --bench tracking`: HERALD_BENCH_SECS={secs} HERALD_BENCH_FUNNEL_EVENTS={funnel_events} \
         HERALD_BENCH_THREADS={threads} HERALD_BENCH_SCENARIOS={}\n\
         {}; {cores} cores shared by the server and this client ({threads} runtime threads), \
         so client CPU is server CPU lost",
        selected.describe(),
        match target {
            Some(addr) => format!("against {addr} (HERALD_BENCH_TARGET)"),
            None => "a fresh `herald serve` per scenario on loopback".to_owned(),
        },
    );
    let mut notes = Vec::new();
    let mut ratios = Vec::new();
    if !throughput.is_empty() {
        println!("\n{THROUGHPUT_HEADER}");
    }
    for &scenario in &throughput {
        let mut daemon = target.is_none().then(|| Daemon::start(&config()));
        let addr = target
            .or(daemon.as_ref().map(|d| d.addr))
            .expect("an address");
        let pid = daemon.as_ref().map(Daemon::pid);
        let cpu_before = cpu_sample(pid);
        let herald = runtime.block_on(drive(addr, Recipient::Herald, scenario, secs, run_id));
        notes.extend(
            cpu_note(cpu_before, cpu_sample(pid), "this client", pid)
                .map(|n| format!("- {}: {n}", scenario.name)),
        );
        report_throughput(scenario, scenario.name, secs, &herald, &mut notes);
        if let Some(daemon) = daemon.as_mut() {
            daemon.stop();
        }
        // A fresh probe per scenario, as Herald gets a fresh daemon.
        let mode = if scenario.per_request > 1 {
            ceiling::Mode::Batch
        } else {
            ceiling::Mode::Single
        };
        let Some(probe) = Ceiling::start(mode) else {
            continue;
        };
        let label = format!("{} (ceiling)", scenario.name);
        let pid = Some(probe.pid());
        let cpu_before = cpu_sample(pid);
        let measured = runtime.block_on(drive(
            probe.addr,
            Recipient::Ceiling,
            scenario,
            secs,
            run_id,
        ));
        notes.extend(
            cpu_note(cpu_before, cpu_sample(pid), "this client", pid)
                .map(|n| format!("- {label}: {n}")),
        );
        report_throughput(scenario, &label, secs, &measured, &mut notes);
        let (ours, limit) = (&herald.0, &measured.0);
        ratios.push(format!(
            "| {} | {} | {} | {} |",
            scenario.name,
            ceiling::ratio(ours.answered(), Some(limit.answered())),
            ceiling::ratio(ours.quantile_us(0.99), Some(limit.quantile_us(0.99))),
            ceiling::ratio(ours.quantile_us(0.999), Some(limit.quantile_us(0.50))),
        ));
    }
    if !ratios.is_empty() {
        println!(
            "\n| scenario | calls/s / ceiling events/s | p99 / ceiling p99 | p99.9 / ceiling p50 |\n|---|---:|---:|---:|"
        );
        for row in &ratios {
            println!("{row}");
        }
    } else if !throughput.is_empty() {
        println!("\n(no ceiling: set HERALD_CEILING_BIN to run it beside Herald)");
    }
    if funnel {
        if target.is_some() {
            notes.push(format!(
                "- {FUNNEL}: skipped: it needs an empty daemon of its own, not HERALD_BENCH_TARGET"
            ));
        } else {
            let mut daemon = Daemon::start(&config());
            let pid = Some(daemon.pid());
            let report = runtime.block_on(funnel_scenario(daemon.addr, funnel_events, run_id, pid));
            daemon.stop();
            println!(
                "\n{FUNNEL}: load through /v1/batch, {LOAD_BATCH} calls a request over \
                 {LOAD_CONNECTIONS} connections\n\n\
                 | calls | users | seconds | calls/s | p50 ms | p99 ms | max ms | stored | failed requests |\n\
                 |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n{}",
                report.load
            );
            println!(
                "\n| {FUNNEL} query | runs | wall ms (min / median / max) | server took_ms (min / median / max) | answer |\n\
                 |---|---:|---:|---:|---|"
            );
            for row in &report.queries {
                println!("{row}");
            }
            notes.extend(report.notes);
        }
    }
    // Notes wait until after the tables so they do not break them.
    if !notes.is_empty() {
        println!("\n{}", notes.join("\n"));
    }
}
