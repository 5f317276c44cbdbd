//! messageId deduplication: per source, inside a batch, and only within
//! the dedup window.

use std::time::Duration;

use herald::clock::now_ms;
use serde_json::{json, Value};

use super::{by_message_id, config, get_with, ms_of, post_tracking, track_ok, APP_KEY};
use crate::support::*;

#[test]
fn message_ids_deduplicate_per_source_answering_the_original_seq() {
    let d = Daemon::start(&config(""));
    let addr = d.addr;
    let call = json!({"userId": "dup-u", "event": "Paid", "messageId": "dup-1",
                      "properties": {"amount": 10}});
    let first = track_ok(addr, "/v1/track", &call);
    assert_eq!(first[0]["status"], "stored");
    let seq = first[0]["seq"].as_u64().expect("a seq");

    // A resend, even with other content, and the same id inside a batch.
    let changed = json!({"userId": "dup-u", "event": "Paid", "messageId": "dup-1",
                         "properties": {"amount": 99}});
    let again = track_ok(addr, "/v1/track", &changed);
    assert_eq!(
        again[0],
        json!({"messageId": "dup-1", "seq": seq, "status": "duplicate"})
    );
    let batch = json!({"batch": [
        {"type": "track", "userId": "dup-u", "event": "Paid", "messageId": "dup-2"},
        {"type": "track", "userId": "dup-u", "event": "Paid", "messageId": "dup-1"},
        {"type": "track", "userId": "dup-u", "event": "Paid", "messageId": "dup-2"},
    ]});
    let results = track_ok(addr, "/v1/batch", &batch);
    assert_eq!(results[0]["status"], "stored");
    assert_eq!(
        results[1],
        json!({"messageId": "dup-1", "seq": seq, "status": "duplicate"})
    );
    assert_eq!(
        results[2]["status"], "duplicate",
        "a repeat within one batch"
    );
    assert_eq!(results[2]["seq"], results[0]["seq"]);

    // Another source's dup-1 is a different call.
    let resp = post_tracking(
        addr,
        "/v1/track",
        &[("Authorization", &format!("Bearer {APP_KEY}"))],
        call.to_string().as_bytes(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["results"][0]["status"], "stored");

    let all = list_all(addr, "", &[]);
    assert_eq!(all.len(), 3, "{all:#?}");
    let web: Vec<&Value> = all
        .iter()
        .filter(|e| e["data"]["source"] == "web")
        .collect();
    assert_eq!(web.len(), 2);
    let original = web
        .iter()
        .find(|e| e["data"]["messageId"] == "dup-1")
        .unwrap();
    assert_eq!(original["seq"], seq);
    assert_eq!(
        original["data"]["properties"]["amount"], 10,
        "the first copy stays"
    );
    assert_eq!(get_with(addr, "/v1/users/dup-u", &[])["event_count"], 3);
}

#[test]
fn a_message_id_past_the_dedup_window_is_a_new_call() {
    let d = Daemon::start(&config("[tracking]\ndedup_window = \"300ms\"\n"));
    let addr = d.addr;
    let call = json!({"userId": "win-u", "event": "Pinged", "messageId": "win-1"});
    let first = track_ok(addr, "/v1/track", &call);
    assert_eq!(first[0]["status"], "stored");
    let stored = list_all(addr, "", &[]);
    // Past the window by the daemon's own record of receipt; the clock is
    // waited out, not guessed.
    let expires = ms_of(&stored[0]["received_at"]) + 300;
    assert!(wait_until(deadline(Duration::from_secs(10)), || now_ms() > expires));
    let again = track_ok(addr, "/v1/track", &call);
    assert_eq!(again[0]["status"], "stored", "{again:?}");
    assert_ne!(again[0]["seq"], first[0]["seq"]);
    let copies = by_message_id(&list_all(addr, "", &[]))["win-1"].len();
    assert_eq!(copies, 2);
}
