//! What tracked calls survive: every acknowledged batch across kill -9,
//! and past retention only the newest call.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::clock::{format_rfc3339, now_ms};
use serde_json::{json, Value};

use super::{
    by_message_id, config, enc, export, get_with, message_id, post_tracking, track_ok, user_events,
    web_auth, DAY,
};
use crate::support::*;

const LOAD_THREADS: usize = 4;

const LOAD_BATCH: usize = 25;

/// The body of batch `b` of thread `t`, the same bytes every time it is built.
fn load_batch(t: usize, b: usize) -> Vec<u8> {
    let items: Vec<Value> = (0..LOAD_BATCH)
        .map(|i| {
            json!({"type": "track", "userId": format!("load-{t}"), "event": "Bulk Ingested",
                   "messageId": format!("load-{t}-{b}-{i}"), "properties": {"i": i}})
        })
        .collect();
    json!({"batch": items}).to_string().into_bytes()
}

#[derive(Default)]
struct Load {
    /// (thread, batch) → the results of its 200.
    acked: Mutex<HashMap<(usize, usize), Vec<Value>>>,
    /// Batches sent without an answer (or with a refusal under load).
    unanswered: Mutex<Vec<(usize, usize)>>,
    acked_count: AtomicUsize,
    stop: AtomicBool,
}

#[test]
fn kill9_during_batched_ingestion_keeps_every_acknowledged_batch_exactly_once() {
    let mut d = Daemon::start(&config(""));
    let addr = d.addr;
    let load = Arc::new(Load::default());
    let threads: Vec<_> = (0..LOAD_THREADS)
        .map(|t| {
            let load = load.clone();
            std::thread::spawn(move || {
                let auth = web_auth();
                for b in 0..10_000 {
                    if load.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let headers = [JSON, ("Authorization", auth.as_str())];
                    match try_request(addr, "POST", "/v1/batch", &headers, &load_batch(t, b)) {
                        Ok(resp) if resp.status == 200 => {
                            let results = resp.json()["results"].as_array().unwrap().clone();
                            load.acked.lock().unwrap().insert((t, b), results);
                            load.acked_count.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(resp) if resp.status == 429 || resp.status == 503 => {
                            load.unanswered.lock().unwrap().push((t, b));
                        }
                        Ok(resp) => panic!("batch {t}/{b}: {} {}", resp.status, resp.text()),
                        Err(_) => {
                            load.unanswered.lock().unwrap().push((t, b));
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    let busy = wait_until(deadline(Duration::from_secs(60)), || {
        load.acked_count.load(Ordering::SeqCst) >= 40
    });
    assert!(busy, "40 batches were not acknowledged in time");
    d.kill9();
    load.stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("client thread");
    }
    d.restart();
    let addr = d.addr;

    let acked = load.acked.lock().unwrap().clone();
    let unanswered = load.unanswered.lock().unwrap().clone();
    let stored = by_message_id(&list_all(addr, "", &[]));
    let sent: HashSet<String> = acked
        .keys()
        .chain(&unanswered)
        .flat_map(|(t, b)| (0..LOAD_BATCH).map(move |i| format!("load-{t}-{b}-{i}")))
        .collect();
    for (id, copies) in &stored {
        assert!(sent.contains(id), "{id} was never sent");
        assert_eq!(copies.len(), 1, "{id} stored {} times", copies.len());
    }
    for ((t, b), results) in &acked {
        for (i, r) in results.iter().enumerate() {
            let id = format!("load-{t}-{b}-{i}");
            assert_eq!(r["messageId"], id.as_str());
            let copy = stored
                .get(&id)
                .unwrap_or_else(|| panic!("{id} was acknowledged but is gone after kill -9"));
            assert_eq!(copy[0]["seq"], r["seq"], "{id}");
        }
    }

    // A client that did not hear back sends everything again.
    for (t, b) in acked.keys().chain(&unanswered) {
        let auth = web_auth();
        let resp = post_tracking(
            addr,
            "/v1/batch",
            &[("Authorization", &auth)],
            &load_batch(*t, *b),
        );
        assert_eq!(resp.status, 200, "{}", resp.text());
        for (i, r) in resp.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let id = format!("load-{t}-{b}-{i}");
            match stored.get(&id) {
                Some(copy) => {
                    assert_eq!(r["status"], "duplicate", "{id}: {r}");
                    assert_eq!(r["seq"], copy[0]["seq"], "{id}");
                }
                None => assert_eq!(r["status"], "stored", "{id}: {r}"),
            }
        }
    }
    let after = by_message_id(&list_all(addr, "", &[]));
    assert_eq!(after.len(), sent.len());
    assert!(after.values().all(|copies| copies.len() == 1));
}

#[test]
fn retention_prunes_old_calls_from_the_log_and_the_user_but_keeps_the_last() {
    let d = Daemon::start(&config(
        "[tracking]\nretention = \"1s\"\ndedup_window = \"1s\"\nprune_interval = \"200ms\"\n",
    ));
    let addr = d.addr;
    let old = json!({"batch": [
        {"type": "identify", "userId": "ret-u", "anonymousId": "ret-anon", "messageId": "old-1"},
        {"type": "page", "anonymousId": "ret-anon", "messageId": "old-2"},
        {"type": "track", "userId": "ret-u", "event": "Old Thing", "messageId": "old-3"},
        {"type": "track", "userId": "someone-else", "event": "Old Thing", "messageId": "old-4"},
    ]});
    track_ok(addr, "/v1/batch", &old);
    // The newest call is the log's last event, which retention never
    // deletes, so it stays however slow this machine is.
    track_ok(
        addr,
        "/v1/track",
        &json!({"userId": "ret-u", "event": "Recent Thing", "messageId": "recent-1"}),
    );
    let mut remaining = Vec::new();
    let pruned = wait_until(deadline(Duration::from_secs(30)), || {
        remaining = list_all(addr, "", &[]).iter().map(message_id).collect();
        remaining == ["recent-1"]
    });
    assert!(pruned, "still stored: {remaining:?}");
    let history: Vec<String> = user_events(addr, "ret-u", 100)
        .iter()
        .map(message_id)
        .collect();
    assert_eq!(history, ["recent-1"]);
    let user = get_with(addr, "/v1/users/ret-u", &[]);
    assert_eq!(user["event_count"], 1, "{user}");
    let stats = get_with(
        addr,
        &format!(
            "/v1/stats/events?event={}&since={}",
            enc("Old Thing"),
            enc(&format_rfc3339(now_ms() - DAY))
        ),
        &[],
    );
    assert_eq!(stats["total"], 0, "{stats}");
    let exported: Vec<String> = export(addr, "").iter().map(message_id).collect();
    assert_eq!(exported, ["recent-1"]);
    assert!(
        !d.has_logged("tracking upkeep failed; retrying at the next interval"),
        "{}",
        d.logs().join("\n")
    );
}
