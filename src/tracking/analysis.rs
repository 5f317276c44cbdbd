//! The questions asked of tracked calls, as pure functions over index rows:
//! who a person belongs to, funnels, and first/last-touch attribution.
//! People are the 64-bit hashes the indexes use (`store::tracking::person_hash`).

use std::collections::{BTreeMap, HashMap, HashSet};

/// Resolves persons to the user they belong to, through the links identify
/// and alias made.
pub struct Resolver {
    links: HashMap<u64, u64>,
    /// user → persons linked to it, built on first use.
    linked: Option<HashMap<u64, Vec<u64>>>,
}

/// Chains of aliases longer than this are cut: a loop must not hang a query.
const MAX_HOPS: usize = 8;
/// Persons gathered for one user at most.
const MAX_LINKED: usize = 10_000;

impl Resolver {
    pub fn new(links: HashMap<u64, u64>) -> Self {
        Resolver {
            links,
            linked: None,
        }
    }

    /// The user `person` belongs to, or `person` itself when not linked.
    pub fn person(&self, person: u64) -> u64 {
        let mut current = person;
        for _ in 0..MAX_HOPS {
            match self.links.get(&current) {
                Some(&user) if user != current => current = user,
                _ => break,
            }
        }
        current
    }

    /// `user` and every person linked to it, directly or through aliases.
    pub fn persons_of(&mut self, user: u64) -> Vec<u64> {
        let links = &self.links;
        let linked = self.linked.get_or_insert_with(|| {
            let mut inverse: HashMap<u64, Vec<u64>> = HashMap::new();
            for (&other, &user) in links {
                inverse.entry(user).or_default().push(other);
            }
            inverse
        });
        let mut out = vec![user];
        let mut seen: HashSet<u64> = HashSet::from([user]);
        let mut pending = vec![user];
        while let Some(p) = pending.pop() {
            for &other in linked.get(&p).into_iter().flatten() {
                if out.len() < MAX_LINKED && seen.insert(other) {
                    out.push(other);
                    pending.push(other);
                }
            }
        }
        out
    }
}

/// Step `k` of a funnel: (timestamp ms, person) of its calls, in time order.
/// Step 0 covers [since, until); later steps run to until + within.
pub type StepHits = Vec<(i64, u64)>;

/// People entering each step, in order. A person enters step 1 at their
/// first step-1 call, and step k at their first step-k call at or after
/// entering step k−1 and no later than `within_ms` after entering step 1.
pub fn funnel(steps: &[StepHits], within_ms: i64, resolver: &Resolver) -> Vec<u64> {
    let Some(first) = steps.first() else {
        return Vec::new();
    };
    // person → (entered step 1, entered the current step)
    let mut current: HashMap<u64, (i64, i64)> = HashMap::with_capacity(first.len());
    for &(ts, person) in first {
        current.entry(resolver.person(person)).or_insert((ts, ts));
    }
    let mut counts = vec![current.len() as u64];
    for hits in &steps[1..] {
        let mut next: HashMap<u64, (i64, i64)> = HashMap::with_capacity(current.len());
        // Hits come in time order, so the first qualifying one per person
        // is the earliest.
        for &(ts, person) in hits {
            let person = resolver.person(person);
            if next.contains_key(&person) {
                continue;
            }
            if let Some(&(start, previous)) = current.get(&person) {
                if ts >= previous && ts <= start.saturating_add(within_ms) {
                    next.insert(person, (start, ts));
                }
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
    conversions: &[(i64, u64)],
    model: Model,
    resolver: &mut Resolver,
    mut touches_of: impl FnMut(u64) -> Vec<(i64, CampaignKey)>,
) -> BTreeMap<Option<CampaignKey>, u64> {
    let mut by_person: HashMap<u64, Vec<(i64, CampaignKey)>> = HashMap::new();
    let mut out: BTreeMap<Option<CampaignKey>, u64> = BTreeMap::new();
    for &(ts, person) in conversions {
        let person = resolver.person(person);
        let touches = by_person.entry(person).or_insert_with(|| {
            let mut all: Vec<(i64, CampaignKey)> = resolver
                .persons_of(person)
                .into_iter()
                .flat_map(&mut touches_of)
                .collect();
            all.sort_by_key(|t| t.0);
            all
        });
        let eligible = touches.iter().filter(|(t, _)| *t <= ts);
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

    fn resolver(pairs: &[(u64, u64)]) -> Resolver {
        Resolver::new(pairs.iter().copied().collect())
    }

    #[test]
    fn linked_persons_resolve_to_the_user_and_back() {
        // 10 and 11 are linked to user 1; 12 is on its own.
        let mut r = resolver(&[(10, 1), (11, 1)]);
        assert_eq!(r.person(10), 1);
        assert_eq!(r.person(11), 1);
        assert_eq!(r.person(12), 12);
        assert_eq!(r.person(1), 1);
        let mut persons = r.persons_of(1);
        persons.sort_unstable();
        assert_eq!(persons, [1, 10, 11]);
        // A loop of aliases ends.
        let looped = resolver(&[(1, 2), (2, 1)]);
        assert!([1, 2].contains(&looped.person(1)));
    }

    #[test]
    fn funnels_follow_order_and_the_window() {
        // Persons 1, 2, 4 are users; 30 is an anonymous id linked to user 3.
        let r = resolver(&[(30, 3)]);
        let steps = vec![
            vec![(10, 1), (11, 2), (12, 30), (13, 4)],
            // 2's second step comes before its first: it does not count.
            vec![(5, 2), (20, 1), (25, 3), (200, 4)],
            vec![(26, 3), (30, 1)],
        ];
        assert_eq!(funnel(&steps, 100, &r), vec![4, 2, 2]);
        assert_eq!(funnel(&steps, 15, &r), vec![4, 2, 1]);
        assert_eq!(funnel(&[], 15, &r), Vec::<u64>::new());
    }

    #[test]
    fn first_and_last_touch_pick_touches_before_the_conversion() {
        let mut r = resolver(&[(10, 1)]);
        let camp = |s: &str| (s.to_string(), "cpc".to_string(), String::new());
        let touches = |person: u64| -> Vec<(i64, CampaignKey)> {
            match person {
                10 => vec![(1, camp("google"))],
                1 => vec![(5, camp("newsletter")), (50, camp("late"))],
                _ => vec![],
            }
        };
        let conversions = vec![(10, 1), (10, 2)];
        let first = attribute(&conversions, Model::FirstTouch, &mut r, touches);
        assert_eq!(first[&Some(camp("google"))], 1);
        assert_eq!(first[&None], 1);
        let last = attribute(&conversions, Model::LastTouch, &mut r, touches);
        assert_eq!(last[&Some(camp("newsletter"))], 1);
        assert!(!last.contains_key(&Some(camp("late"))));
    }
}
