//! An independent computation of funnels, attribution and counts over a
//! generated data set, for `queries.rs` to hold the daemon's answers to.

use std::collections::{BTreeMap, HashMap, HashSet};

use herald::clock::format_rfc3339;
use serde_json::{json, Value};

use super::{DAY, HOUR};

/// splitmix64: a fixed seed gives the same data set on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

pub(super) type Campaign = (String, String, String);

/// One generated call, as the test understands it.
#[derive(Debug, Clone)]
pub(super) struct Sent {
    pub(super) kind: &'static str,
    event: Option<String>,
    pub(super) user: Option<String>,
    anon: Option<String>,
    previous: Option<String>,
    pub(super) ts: i64,
    campaign: Option<Campaign>,
}

impl Sent {
    fn new(kind: &'static str, user: Option<&str>, anon: Option<&str>, ts: i64) -> Sent {
        Sent {
            kind,
            event: None,
            user: user.map(str::to_owned),
            anon: anon.map(str::to_owned),
            previous: None,
            ts,
            campaign: None,
        }
    }

    fn track(event: &str, user: Option<&str>, anon: Option<&str>, ts: i64) -> Sent {
        Sent {
            event: Some(event.to_owned()),
            ..Sent::new("track", user, anon, ts)
        }
    }

    fn alias(previous: &str, user: &str, ts: i64) -> Sent {
        Sent {
            previous: Some(previous.to_owned()),
            ..Sent::new("alias", Some(user), None, ts)
        }
    }

    fn with_campaign(mut self, c: &Campaign) -> Sent {
        self.campaign = Some(c.clone());
        self
    }

    fn event_type(&self) -> &str {
        self.event.as_deref().unwrap_or(self.kind)
    }

    pub(super) fn to_json(&self, message_id: &str) -> Value {
        let mut m = json!({"type": self.kind, "messageId": message_id, "timestamp": format_rfc3339(self.ts)});
        if let Some(u) = &self.user {
            m["userId"] = json!(u);
        }
        if let Some(a) = &self.anon {
            m["anonymousId"] = json!(a);
        }
        if let Some(p) = &self.previous {
            m["previousId"] = json!(p);
        }
        if let Some(e) = &self.event {
            m["event"] = json!(e);
        }
        if self.kind == "identify" {
            m["traits"] = json!({"seen": self.ts});
        }
        if let Some((source, medium, name)) = &self.campaign {
            m["context"] = json!({"campaign": {"source": source, "medium": medium, "name": name}});
        }
        m
    }
}

/// Who a call belongs to: a userId, with anonymous ids tied to one by a
/// call carrying both or by alias; an id never tied stays its own person.
pub(super) struct People {
    pub(super) links: HashMap<String, String>,
}

impl People {
    pub(super) fn new(calls: &[Sent]) -> People {
        // Every generated id is tied to at most one user, so the order in
        // which the ties were made cannot matter.
        let mut links = HashMap::new();
        for c in calls {
            let other = match c.kind {
                "alias" => c.previous.as_ref(),
                _ => c.anon.as_ref(),
            };
            if let (Some(user), Some(other)) = (&c.user, other) {
                let before = links.insert(other.clone(), user.clone());
                assert!(
                    before.is_none_or(|b| b == *user),
                    "the generator tied {other} to two users"
                );
            }
        }
        People { links }
    }

    pub(super) fn of(&self, c: &Sent) -> String {
        match (&c.user, &c.anon) {
            (Some(u), _) => format!("u:{}", self.links.get(u).unwrap_or(u)),
            (None, Some(a)) => match self.links.get(a) {
                Some(u) => format!("u:{u}"),
                None => format!("a:{a}"),
            },
            (None, None) => unreachable!("every generated call names someone"),
        }
    }
}

pub(super) fn expected_funnel(
    calls: &[Sent],
    people: &People,
    steps: &[&str],
    within: i64,
    since: i64,
    until: i64,
) -> Vec<u64> {
    let person: Vec<String> = calls.iter().map(|c| people.of(c)).collect();
    // person → (entered step 1, entered the latest step)
    let mut current: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (c, p) in calls.iter().zip(&person) {
        if c.event_type() == steps[0] && since <= c.ts && c.ts < until {
            let entry = current.entry(p.clone()).or_insert((c.ts, c.ts));
            if c.ts < entry.0 {
                *entry = (c.ts, c.ts);
            }
        }
    }
    let mut counts = vec![current.len() as u64];
    for step in &steps[1..] {
        let mut next = BTreeMap::new();
        for (p, (start, previous)) in &current {
            let entered = calls
                .iter()
                .zip(&person)
                .filter(|(c, q)| {
                    *q == p
                        && c.event_type() == *step
                        && c.ts >= *previous
                        && c.ts <= start + within
                })
                .map(|(c, _)| c.ts)
                .min();
            if let Some(t) = entered {
                next.insert(p.clone(), (*start, t));
            }
        }
        counts.push(next.len() as u64);
        current = next;
    }
    counts
}

pub(super) fn expected_attribution(
    calls: &[Sent],
    people: &People,
    event: &str,
    first_touch: bool,
    since: i64,
    until: i64,
) -> (u64, BTreeMap<Option<Campaign>, u64>) {
    let mut total = 0;
    let mut by: BTreeMap<Option<Campaign>, u64> = BTreeMap::new();
    for conversion in calls
        .iter()
        .filter(|c| c.event_type() == event && since <= c.ts && c.ts < until)
    {
        total += 1;
        let who = people.of(conversion);
        let touches = calls
            .iter()
            .filter(|c| c.campaign.is_some() && c.ts <= conversion.ts && people.of(c) == who);
        let chosen = if first_touch {
            touches.min_by_key(|c| c.ts)
        } else {
            touches.max_by_key(|c| c.ts)
        };
        *by.entry(chosen.and_then(|c| c.campaign.clone()))
            .or_default() += 1;
    }
    (total, by)
}

pub(super) fn expected_counts(
    calls: &[Sent],
    event: &str,
    bucket: i64,
    since: i64,
    until: i64,
) -> BTreeMap<i64, u64> {
    let mut out = BTreeMap::new();
    for c in calls
        .iter()
        .filter(|c| c.event_type() == event && since <= c.ts && c.ts < until)
    {
        *out.entry(c.ts.div_euclid(bucket) * bucket).or_default() += 1;
    }
    out
}

/// A Monday, long enough ago that no timestamp is in the future.
pub(super) const BASE: i64 = 1_740_960_000_000; // 2025-03-03T00:00:00Z
pub(super) const SINCE: i64 = BASE + 3 * DAY;
pub(super) const UNTIL: i64 = BASE + 14 * DAY;
pub(super) const WITHIN: i64 = 3 * DAY;
pub(super) const STEPS: [&str; 3] = ["Signed Up", "Activated", "Subscribed"];

/// A few hundred people, some anonymous for good, some tied to a user by
/// identify, by alias or by a track call carrying both ids; campaign touches
/// on page calls (and on some sign-ups); plus hand-made people on every
/// boundary of the funnel window and of attribution.
pub(super) fn generate() -> Vec<Sent> {
    let campaigns: Vec<Campaign> = [
        ("google", "cpc", "spring-sale"),
        ("newsletter", "email", "weekly-42"),
        ("twitter", "social", "launch"),
        ("partner", "referral", "acme"),
        ("google", "organic", "brand"),
    ]
    .iter()
    .map(|(s, m, n)| (s.to_string(), m.to_string(), n.to_string()))
    .collect();
    let mut calls = Vec::new();

    // Hand-made edges: (since, until, within) = (SINCE, UNTIL, WITHIN).
    calls.extend([
        // Enters at exactly `since`; step 2 at exactly start + within; step 3 a ms late.
        Sent::track("Signed Up", Some("edge-a"), None, SINCE),
        Sent::track("Activated", Some("edge-a"), None, SINCE + WITHIN),
        Sent::track("Subscribed", Some("edge-a"), None, SINCE + WITHIN + 1),
        // Outside [since, until) on both sides: never enters.
        Sent::track("Signed Up", Some("edge-b"), None, SINCE - 1),
        Sent::track("Signed Up", Some("edge-b"), None, UNTIL),
        Sent::track("Activated", Some("edge-b"), None, UNTIL + 1),
        // Its first sign-up in range counts; an earlier step 2 does not.
        Sent::track("Signed Up", Some("edge-c"), None, SINCE - 1),
        Sent::track("Signed Up", Some("edge-c"), None, SINCE + 5 * HOUR),
        Sent::track("Activated", Some("edge-c"), None, SINCE + HOUR),
        Sent::track("Activated", Some("edge-c"), None, SINCE + 6 * HOUR),
        Sent::track("Subscribed", Some("edge-c"), None, SINCE + 6 * HOUR),
        Sent::track("Signed Up", Some("edge-c"), None, SINCE + 7 * HOUR),
        // Signs up anonymously, then alias ties the anonymous id to the user.
        Sent::track("Signed Up", None, Some("edge-d-anon"), SINCE + DAY),
        Sent::alias("edge-d-anon", "edge-d", BASE + 19 * DAY),
        Sent::track("Activated", Some("edge-d"), None, SINCE + DAY + HOUR),
        Sent::track(
            "Subscribed",
            None,
            Some("edge-d-anon"),
            SINCE + DAY + 2 * HOUR,
        ),
        // Enters a ms before `until`; later steps after `until` but in the window.
        Sent::track("Signed Up", Some("edge-e"), None, UNTIL - 1),
        Sent::track("Activated", Some("edge-e"), None, UNTIL + WITHIN - 2),
        Sent::track("Subscribed", Some("edge-e"), None, UNTIL + WITHIN - 1),
        // A touch at the very ms of the conversion counts, one a ms later not.
        Sent::new("page", Some("edge-f"), None, SINCE + 2 * DAY).with_campaign(&campaigns[3]),
        Sent::track("Subscribed", Some("edge-f"), None, SINCE + 2 * DAY),
        Sent::new("page", Some("edge-f"), None, SINCE + 2 * DAY + 1).with_campaign(&campaigns[2]),
        // A touch long before `since`, anonymous, tied by identify.
        Sent::new("page", None, Some("edge-g-anon"), SINCE - 5 * DAY).with_campaign(&campaigns[1]),
        Sent::new(
            "identify",
            Some("edge-g"),
            Some("edge-g-anon"),
            SINCE - 4 * DAY,
        ),
        Sent::track("Subscribed", Some("edge-g"), None, SINCE + 3 * DAY),
        Sent::new("page", Some("edge-g"), None, SINCE + 2 * DAY).with_campaign(&campaigns[0]),
        // Converts with no touch at all, and with only a later one.
        Sent::track("Subscribed", Some("edge-h"), None, SINCE + 4 * DAY),
        Sent::track("Subscribed", Some("edge-i"), None, SINCE + 4 * DAY),
        Sent::new("page", Some("edge-i"), None, SINCE + 4 * DAY + 1).with_campaign(&campaigns[0]),
    ]);

    let mut rng = Rng(0x5EED_F00D_4E4A_1D00);
    for i in 0..300 {
        let user = format!("user-{i}");
        let anon = format!("anon-{i}");
        let second_anon = format!("anon-{i}-b");
        let kind = rng.below(100);
        let (has_user, has_anon) = match kind {
            0..60 => (true, true),
            60..85 => (false, true),
            _ => (true, false),
        };
        // Activity clusters around a moment so that windows matter.
        let anchor = BASE + rng.below(20 * DAY as u64) as i64;
        let when = |rng: &mut Rng| anchor - 2 * DAY + rng.below(8 * DAY as u64) as i64;
        if kind < 40 {
            calls.push(Sent::new(
                "identify",
                Some(&user),
                Some(&anon),
                when(&mut rng),
            ));
        } else if kind < 60 {
            calls.push(Sent::alias(&anon, &user, when(&mut rng)));
        }
        let tied_second = has_user && rng.percent(30);
        if tied_second {
            calls.push(Sent::track(
                "Clicked",
                Some(&user),
                Some(&second_anon),
                when(&mut rng),
            ));
        }
        let mut ids: Vec<(Option<&str>, Option<&str>)> = Vec::new();
        if has_user {
            ids.push((Some(&user), None));
        }
        if has_anon {
            ids.push((None, Some(&anon)));
        }
        if tied_second {
            ids.push((None, Some(&second_anon)));
        }
        for (event, max) in [("Signed Up", 2), ("Activated", 3), ("Subscribed", 2)] {
            for _ in 0..rng.below(max + 1) {
                let (u, a) = *rng.pick(&ids);
                let mut c = Sent::track(event, u, a, when(&mut rng));
                if event == "Signed Up" && rng.percent(10) {
                    c = c.with_campaign(rng.pick(&campaigns));
                }
                calls.push(c);
            }
        }
        for _ in 0..rng.below(4) {
            let (u, a) = *rng.pick(&ids);
            let c = Sent::new("page", u, a, when(&mut rng)).with_campaign(rng.pick(&campaigns));
            calls.push(c);
        }
        for _ in 0..rng.below(3) {
            let (u, a) = *rng.pick(&ids);
            calls.push(Sent::new("page", u, a, when(&mut rng)));
        }
    }

    // Two touches of one person at the same ms would make first and last
    // touch a matter of tie-breaking, which the contract leaves open.
    let mut touch_times = HashSet::new();
    for c in calls.iter_mut().filter(|c| c.campaign.is_some()) {
        while !touch_times.insert(c.ts) {
            c.ts += 1;
        }
    }
    // Shuffled, so that log order says nothing about time or person.
    for i in (1..calls.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        calls.swap(i, j);
    }
    calls
}
