//! Questions asked of tracked calls: funnels, attribution, counts and user
//! profiles against the model's answers, and the NDJSON export.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use herald::clock::{format_rfc3339, now_ms};
use serde_json::{json, Value};

use super::model::{
    expected_attribution, expected_counts, expected_funnel, generate, Campaign, People, Sent, BASE,
    SINCE, STEPS, UNTIL, WITHIN,
};
use super::{
    config, enc, export, get_with, linked_ids, message_id, ms_of, track_ok, user_events, DAY, HOUR,
};
use crate::support::*;

fn campaign_key(v: &Value) -> Option<Campaign> {
    if v.is_null() {
        return None;
    }
    let s = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k} in {v}"))
            .to_owned()
    };
    Some((s("source"), s("medium"), s("name")))
}

#[test]
fn funnels_attribution_and_counts_match_an_independent_computation() {
    let d = Daemon::start(&config(""));
    let addr = d.addr;
    let calls = generate();
    assert!(calls.len() > 1000, "{} calls", calls.len());
    const BATCH: usize = 250;
    for (n, chunk) in calls.chunks(BATCH).enumerate() {
        let items: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, c)| c.to_json(&format!("gen-{}", n * BATCH + i)))
            .collect();
        let results = track_ok(addr, "/v1/batch", &json!({"batch": items}));
        assert_eq!(results.len(), chunk.len());
        assert!(
            results.iter().all(|r| r["status"] == "stored"),
            "{results:?}"
        );
    }
    let people = People::new(&calls);

    let range = |since: i64, until: i64| {
        format!(
            "since={}&until={}",
            enc(&format_rfc3339(since)),
            enc(&format_rfc3339(until))
        )
    };
    let funnels: Vec<(Vec<&str>, &str, i64, i64, i64)> = vec![
        (STEPS.to_vec(), "3d", WITHIN, SINCE, UNTIL),
        (STEPS.to_vec(), "14d", 14 * DAY, SINCE, UNTIL),
        (STEPS.to_vec(), "12h", 12 * HOUR, BASE, BASE + 20 * DAY),
        (
            vec!["Activated", "Subscribed"],
            "2d",
            2 * DAY,
            BASE + 2 * DAY + 7 * HOUR + 13 * 60_000,
            BASE + 11 * DAY + 5 * HOUR,
        ),
        (
            vec!["page", "Signed Up", "Subscribed"],
            "5d",
            5 * DAY,
            SINCE,
            UNTIL,
        ),
    ];
    let mut nonzero_last_steps = 0;
    for (steps, within_text, within, since, until) in &funnels {
        let path = format!(
            "/v1/funnels?steps={}&within={within_text}&{}",
            enc(&steps.join(",")),
            range(*since, *until)
        );
        let answer = get_with(addr, &path, &[]);
        let want = expected_funnel(&calls, &people, steps, *within, *since, *until);
        let got_steps = answer["steps"].as_array().expect("steps");
        let got: Vec<u64> = got_steps
            .iter()
            .map(|s| s["count"].as_u64().unwrap())
            .collect();
        assert_eq!(got, want, "{path}: {answer}");
        nonzero_last_steps += usize::from(*want.last().unwrap() > 0);
        for (i, s) in got_steps.iter().enumerate() {
            assert_eq!(s["event"], steps[i], "{path}");
            let rate = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
            let previous = if i == 0 { want[0] } else { want[i - 1] };
            assert_eq!(
                s["conversion_from_previous"].as_f64(),
                Some(rate(want[i], previous)),
                "{path}: {s}"
            );
            assert_eq!(
                s["conversion_from_first"].as_f64(),
                Some(rate(want[i], want[0])),
                "{path}: {s}"
            );
        }
    }
    assert!(
        nonzero_last_steps >= 3,
        "the data set exercises whole funnels"
    );

    for (event, since, until) in [
        ("Subscribed", SINCE, UNTIL),
        ("Subscribed", BASE, BASE + 21 * DAY),
        ("Signed Up", SINCE, UNTIL),
    ] {
        for (model, first) in [("first_touch", true), ("last_touch", false)] {
            let path = format!(
                "/v1/attribution?event={}&model={model}&{}",
                enc(event),
                range(since, until)
            );
            let answer = get_with(addr, &path, &[]);
            let (total, want) = expected_attribution(&calls, &people, event, first, since, until);
            assert_eq!(answer["conversions"], total, "{path}: {answer}");
            let mut got = BTreeMap::new();
            for row in answer["by_campaign"].as_array().expect("by_campaign") {
                let before = got.insert(
                    campaign_key(&row["campaign"]),
                    row["conversions"].as_u64().unwrap(),
                );
                assert!(
                    before.is_none(),
                    "{path}: a campaign listed twice: {answer}"
                );
            }
            assert_eq!(got, want, "{path}: {answer}");
            assert!(
                want.len() >= 4,
                "{path}: several campaigns and none: {want:?}"
            );
        }
    }

    for (event, interval, bucket, since, until) in [
        ("Signed Up", "day", DAY, BASE - 3 * DAY, BASE + 25 * DAY),
        ("Subscribed", "day", DAY, SINCE, UNTIL),
        ("page", "day", DAY, BASE, BASE + 21 * DAY),
        ("Activated", "hour", HOUR, SINCE, SINCE + 2 * DAY),
    ] {
        let path = format!(
            "/v1/stats/events?event={}&interval={interval}&{}",
            enc(event),
            range(since, until)
        );
        let answer = get_with(addr, &path, &[]);
        let want = expected_counts(&calls, event, bucket, since, until);
        let mut got = BTreeMap::new();
        for b in answer["series"].as_array().expect("series") {
            let start = ms_of(&b["start"]);
            assert_eq!(
                start.rem_euclid(bucket),
                0,
                "{path}: {b} is not on a UTC {interval}"
            );
            assert!(
                since <= start && start < until,
                "{path}: {b} is out of range"
            );
            let count = b["count"].as_u64().unwrap();
            if count > 0 {
                got.insert(start, count);
            }
        }
        assert_eq!(got, want, "{path}: {answer}");
        assert_eq!(answer["total"], want.values().sum::<u64>(), "{path}");
    }

    // Every user as the same computation sees them: their calls (anonymous
    // ones included), the ids tied to them, traits, first and last seen.
    let users: BTreeSet<&str> = calls.iter().filter_map(|c| c.user.as_deref()).collect();
    assert!(users.len() > 200, "{} users", users.len());
    for user in users {
        let person = format!("u:{user}");
        let theirs: Vec<(usize, &Sent)> = calls
            .iter()
            .enumerate()
            .filter(|(_, c)| people.of(c) == person)
            .collect();
        let profile = get_with(addr, &format!("/v1/users/{}", enc(user)), &[]);
        assert_eq!(profile["event_count"], theirs.len(), "{profile}");
        let first = theirs.iter().map(|(_, c)| c.ts).min().unwrap();
        let last = theirs.iter().map(|(_, c)| c.ts).max().unwrap();
        assert_eq!(ms_of(&profile["first_seen"]), first, "{profile}");
        assert_eq!(ms_of(&profile["last_seen"]), last, "{profile}");
        let want_linked: BTreeSet<&str> = people
            .links
            .iter()
            .filter(|(_, u)| *u == user)
            .map(|(other, _)| other.as_str())
            .collect();
        assert_eq!(linked_ids(&profile), want_linked, "{profile}");
        let traits = match theirs.iter().find(|(_, c)| c.kind == "identify") {
            Some((_, c)) => json!({"seen": c.ts}),
            None => json!({}),
        };
        assert_eq!(profile["traits"], traits, "{profile}");
        let history: BTreeSet<String> = user_events(addr, user, 4).iter().map(message_id).collect();
        let want_history: BTreeSet<String> =
            theirs.iter().map(|(k, _)| format!("gen-{k}")).collect();
        assert_eq!(history, want_history, "the history of {user}");
    }
}

#[test]
fn export_streams_the_tracked_calls_received_in_range_as_stored() {
    let d = Daemon::start(&config(""));
    let addr = d.addr;
    // Not a tracked call: the export leaves it out.
    create(addr, &json!({"type": "invoice.paid", "data": {"n": 1}}));
    let first: Vec<Value> = (0..1500)
        .map(|i| {
            let mut item = json!({"type": "track", "userId": format!("exp-{}", i % 7),
                                  "event": "Exported", "messageId": format!("a-{i}"),
                                  "properties": {"i": i, "text": "line \"quoted\"\nnext ünï"}});
            if i % 3 == 0 {
                item["context"] = json!({"campaign": {"source": "s", "medium": "m", "name": "n"}});
            }
            item
        })
        .collect();
    track_ok(addr, "/v1/batch", &json!({"batch": first}));
    // Every call of the first batch was received before `split`, every one
    // of the second at or after it: the clock is waited out, not guessed.
    let split = now_ms() + 1;
    assert!(wait_until(deadline(Duration::from_secs(5)), || now_ms() >= split));
    let second = json!({"batch": [
        {"type": "identify", "userId": "exp-0", "traits": {"x": 1}, "messageId": "b-0"},
        {"type": "page", "anonymousId": "exp-anon", "name": "Landing", "messageId": "b-1"},
        {"type": "alias", "previousId": "exp-anon", "userId": "exp-0", "messageId": "b-2"},
    ]});
    track_ok(addr, "/v1/batch", &second);

    let stored: BTreeMap<u64, Value> = list_all(addr, "", &[])
        .into_iter()
        .filter(|e| e["type"] != "invoice.paid")
        .map(|e| (e["seq"].as_u64().unwrap(), e))
        .collect();
    assert_eq!(stored.len(), 1503);
    let check = |lines: &[Value], prefix: Option<&str>| {
        let mut seen = BTreeSet::new();
        for line in lines {
            let seq = line["seq"].as_u64().expect("seq");
            assert!(seen.insert(seq), "seq {seq} exported twice");
            assert_eq!(
                Some(line),
                stored.get(&seq),
                "the export line matches the stored call"
            );
        }
        let want: BTreeSet<u64> = stored
            .iter()
            .filter(|(_, e)| prefix.is_none_or(|p| message_id(e).starts_with(p)))
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(seen, want, "exported {prefix:?}");
    };
    // By default the last 24 hours: everything.
    check(&export(addr, ""), None);
    let since = format!("?since={}", enc(&format_rfc3339(split)));
    check(&export(addr, &since), Some("b-"));
    let until = format!("?until={}", enc(&format_rfc3339(split)));
    check(&export(addr, &until), Some("a-"));
    let window = format!(
        "?since={}&until={}",
        enc(&format_rfc3339(split - DAY)),
        enc(&format_rfc3339(split + DAY))
    );
    check(&export(addr, &window), None);
    let later = format!(
        "?since={}&until={}",
        enc(&format_rfc3339(split + DAY)),
        enc(&format_rfc3339(split + 2 * DAY))
    );
    assert!(export(addr, &later).is_empty());
    let exported = export(addr, "");
    let campaign = exported
        .iter()
        .find(|e| e["data"]["messageId"] == "a-3")
        .expect("a-3 exported");
    assert_eq!(campaign["data"]["context"]["campaign"]["source"], "s");
    assert_eq!(
        campaign["data"]["properties"]["text"],
        "line \"quoted\"\nnext ünï"
    );
}
