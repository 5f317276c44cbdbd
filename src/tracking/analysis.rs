//! The questions asked of tracked calls, as pure functions over index rows:
//! who a person key belongs to, funnels, and first/last-touch attribution.

use std::collections::{BTreeMap, HashMap};

/// Resolves person keys (`u:ID`, `a:ID`) to the user they belong to, through
/// the links identify and alias made.
pub struct Resolver {
    links: HashMap<String, String>,
    /// userId → ids linked to it.
    linked: HashMap<String, Vec<String>>,
}

/// Chains of aliases longer than this are cut: a loop must not hang a query.
const MAX_HOPS: usize = 8;

impl Resolver {
    pub fn new(links: HashMap<String, String>) -> Self {
        let mut linked: HashMap<String, Vec<String>> = HashMap::new();
        for (other, user) in &links {
            linked.entry(user.clone()).or_default().push(other.clone());
        }
        Resolver { links, linked }
    }

    /// The userId (or, for an anonymous id never linked, the anonymous id
    /// itself with its `a:` prefix) that `key` stands for.
    pub fn person(&self, key: &str) -> String {
        let (kind, mut id) = key.split_at(key.len().min(2));
        let mut resolved = false;
        for _ in 0..MAX_HOPS {
            match self.links.get(id) {
                Some(user) if user != id => {
                    id = user;
                    resolved = true;
                }
                _ => break,
            }
        }
        if resolved || kind == "u:" {
            format!("u:{id}")
        } else {
            key.to_owned()
        }
    }

    /// Every person key whose calls belong to `user_id`, itself first.
    pub fn keys_of(&self, user_id: &str) -> Vec<String> {
        let mut keys = vec![format!("u:{user_id}")];
        let mut pending = vec![user_id.to_owned()];
        let mut seen = std::collections::HashSet::new();
        seen.insert(user_id.to_owned());
        while let Some(id) = pending.pop() {
            for other in self.linked.get(&id).into_iter().flatten() {
                if seen.insert(other.clone()) && seen.len() < 10_000 {
                    keys.push(format!("a:{other}"));
                    keys.push(format!("u:{other}"));
                    pending.push(other.clone());
                }
            }
        }
        keys
    }
}

/// Step `k` of a funnel: (timestamp ms, person key) of its calls, in time
/// order. Step 0 covers [since, until); later steps run to until + within.
pub type StepHits = Vec<(i64, String)>;

/// People entering each step, in order. A person enters step 1 at their
/// first step-1 call, and step k at their first step-k call at or after
/// entering step k−1 and no later than `within_ms` after entering step 1.
pub fn funnel(steps: &[StepHits], within_ms: i64, resolver: &Resolver) -> Vec<u64> {
    let Some(first) = steps.first() else {
        return Vec::new();
    };
    // person → (entered step 1, entered the current step)
    let mut current: HashMap<String, (i64, i64)> = HashMap::new();
    for (ts, key) in first {
        current.entry(resolver.person(key)).or_insert((*ts, *ts));
    }
    let mut counts = vec![current.len() as u64];
    for hits in &steps[1..] {
        let mut times: HashMap<String, Vec<i64>> = HashMap::new();
        for (ts, key) in hits {
            let person = resolver.person(key);
            if current.contains_key(&person) {
                times.entry(person).or_default().push(*ts);
            }
        }
        let mut next = HashMap::new();
        for (person, (start, previous)) in current {
            let Some(list) = times.get(&person) else {
                continue;
            };
            // Hits arrive in time order, so the first qualifying is earliest.
            if let Some(ts) = list
                .iter()
                .find(|ts| **ts >= previous && **ts <= start.saturating_add(within_ms))
            {
                next.insert(person, (start, *ts));
            }
        }
        counts.push(next.len() as u64);
        current = next;
    }
    counts
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    FirstTouch,
    LastTouch,
}

/// A campaign: (source, medium, name); empty strings for fields not set.
pub type CampaignKey = (String, String, String);

/// Conversions per campaign. Each conversion counts once, for the first
/// (or last) campaign touch of the same person at or before it; `None`
/// collects conversions with no touch.
pub fn attribute(
    conversions: &[(i64, String)],
    model: Model,
    resolver: &Resolver,
    mut touches_of: impl FnMut(&str) -> Vec<(i64, CampaignKey)>,
) -> BTreeMap<Option<CampaignKey>, u64> {
    let mut by_person: HashMap<String, Vec<(i64, CampaignKey)>> = HashMap::new();
    let mut out: BTreeMap<Option<CampaignKey>, u64> = BTreeMap::new();
    for (ts, key) in conversions {
        let person = resolver.person(key);
        let touches = by_person.entry(person.clone()).or_insert_with(|| {
            let mut all: Vec<(i64, CampaignKey)> = match person.strip_prefix("u:") {
                Some(user) => resolver
                    .keys_of(user)
                    .iter()
                    .flat_map(|k| touches_of(k))
                    .collect(),
                None => touches_of(&person),
            };
            all.sort_by_key(|a| a.0);
            all
        });
        let eligible = touches.iter().filter(|(t, _)| t <= ts);
        let chosen = match model {
            Model::FirstTouch => eligible.min_by_key(|(t, _)| *t),
            Model::LastTouch => eligible.max_by_key(|(t, _)| *t),
        };
        *out.entry(chosen.map(|(_, c)| c.clone())).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(pairs: &[(&str, &str)]) -> Resolver {
        Resolver::new(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    fn hits(list: &[(i64, &str)]) -> StepHits {
        list.iter().map(|(t, k)| (*t, k.to_string())).collect()
    }

    #[test]
    fn anonymous_history_resolves_to_the_user() {
        let r = resolver(&[("anon-1", "u1"), ("old-id", "u1")]);
        assert_eq!(r.person("a:anon-1"), "u:u1");
        assert_eq!(r.person("u:old-id"), "u:u1");
        assert_eq!(r.person("a:anon-2"), "a:anon-2");
        assert_eq!(r.person("u:u2"), "u:u2");
        let mut keys = r.keys_of("u1");
        keys.sort();
        assert_eq!(
            keys,
            ["a:anon-1", "a:old-id", "u:anon-1", "u:old-id", "u:u1"]
        );
        // A loop of aliases ends.
        let looped = resolver(&[("a", "b"), ("b", "a")]);
        let _ = looped.person("u:a");
    }

    #[test]
    fn funnels_follow_order_and_the_window() {
        let r = resolver(&[("anon-3", "u3")]);
        let steps = vec![
            hits(&[(10, "u:u1"), (11, "u:u2"), (12, "a:anon-3"), (13, "u:u4")]),
            // u2's second step comes before its first: it does not count.
            hits(&[(5, "u:u2"), (20, "u:u1"), (25, "u:u3"), (200, "u:u4")]),
            hits(&[(30, "u:u1"), (26, "u:u3")]),
        ];
        assert_eq!(funnel(&steps, 100, &r), vec![4, 2, 2]);
        assert_eq!(funnel(&steps, 15, &r), vec![4, 2, 1]);
        assert_eq!(funnel(&[], 15, &r), Vec::<u64>::new());
    }

    #[test]
    fn first_and_last_touch_pick_touches_before_the_conversion() {
        let r = resolver(&[("anon-1", "u1")]);
        let camp = |s: &str| (s.to_string(), "cpc".to_string(), String::new());
        let touches = |key: &str| -> Vec<(i64, CampaignKey)> {
            match key {
                "a:anon-1" => vec![(1, camp("google"))],
                "u:u1" => vec![(5, camp("newsletter")), (50, camp("late"))],
                _ => vec![],
            }
        };
        let conversions = vec![(10, "u:u1".to_string()), (10, "u:u2".to_string())];
        let first = attribute(&conversions, Model::FirstTouch, &r, touches);
        assert_eq!(first[&Some(camp("google"))], 1);
        assert_eq!(first[&None], 1);
        let last = attribute(&conversions, Model::LastTouch, &r, touches);
        assert_eq!(last[&Some(camp("newsletter"))], 1);
        assert!(!last.contains_key(&Some(camp("late"))));
    }
}
