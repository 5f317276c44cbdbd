//! Size limits on calls and batches (413, gzip included) and a full write
//! queue (429): refused requests write nothing.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{config, gzip, message_id, post_tracking, web_auth};
use crate::support::*;

/// A track call serialised to exactly `len` bytes.
fn call_of_len(id: &str, len: usize) -> Vec<u8> {
    let bare = json!({"type": "track", "userId": "u", "event": "Big", "messageId": id,
                      "properties": {"pad": ""}})
    .to_string();
    assert!(bare.len() <= len);
    let body = json!({"type": "track", "userId": "u", "event": "Big", "messageId": id,
                      "properties": {"pad": "x".repeat(len - bare.len())}})
    .to_string();
    assert_eq!(body.len(), len);
    body.into_bytes()
}

/// `{"batch":[...]}` of `items` calls of about equal size, the whole body
/// exactly `len` bytes.
fn batch_of_len(prefix: &str, items: usize, len: usize) -> Vec<u8> {
    let (open, close) = (&b"{\"batch\":["[..], &b"]}"[..]);
    let payload = len - open.len() - (items - 1) - close.len();
    let parts: Vec<Vec<u8>> = (0..items)
        .map(|i| {
            let extra = if i + 1 == items { payload % items } else { 0 };
            call_of_len(&format!("{prefix}-{i}"), payload / items + extra)
        })
        .collect();
    let mut body = open.to_vec();
    body.extend(parts.join(&b","[..]));
    body.extend_from_slice(close);
    assert_eq!(body.len(), len);
    body
}

#[test]
fn oversize_calls_and_batches_are_refused_with_413() {
    let d = Daemon::start(&config(""));
    let addr = d.addr;
    let auth = web_auth();
    let headers = [("Authorization", auth.as_str())];
    let status = |path: &str, body: &[u8]| {
        let resp = post_tracking(addr, path, &headers, body);
        (resp.status, resp.text())
    };
    let gz_headers = [
        ("Authorization", auth.as_str()),
        ("Content-Encoding", "gzip"),
    ];

    // A call: 32 KB passes, a byte more does not, alone or in a batch.
    let (s, t) = status("/v1/track", &call_of_len("call-max", 32 * 1024));
    assert_eq!(s, 200, "{t}");
    let (s, t) = status("/v1/track", &call_of_len("call-over", 32 * 1024 + 1));
    assert_eq!(s, 413, "{t}");
    let mut in_batch = b"{\"batch\":[".to_vec();
    in_batch.extend(call_of_len("in-batch-over", 32 * 1024 + 1));
    in_batch.extend_from_slice(b"]}");
    let (s, t) = status("/v1/batch", &in_batch);
    assert_eq!(s, 413, "an oversize call inside a batch: {t}");

    // A batch: 500 KB passes, a byte more does not (items of ~25 KB).
    let (s, t) = status("/v1/batch", &batch_of_len("batch-max", 20, 512_000));
    assert_eq!(s, 200, "{t}");
    let (s, t) = status("/v1/batch", &batch_of_len("batch-over", 20, 512_001));
    assert_eq!(s, 413, "{t}");

    // 2,500 calls pass, 2,501 do not.
    let items = |prefix: &str, n: usize| {
        let list: Vec<Value> = (0..n)
            .map(|i| json!({"type": "track", "userId": "u", "event": "Many", "messageId": format!("{prefix}-{i}")}))
            .collect();
        json!({"batch": list}).to_string().into_bytes()
    };
    let (s, t) = status("/v1/batch", &items("many-over", 2501));
    assert_eq!(s, 413, "{t}");
    let (s, t) = status("/v1/batch", &items("many-max", 2500));
    assert_eq!(s, 200, "{t}");

    // The limits hold for what a gzip body inflates to, not its wire size.
    let small_on_the_wire = gzip(&batch_of_len("gz-over", 20, 512_001));
    assert!(small_on_the_wire.len() < 64 * 1024);
    let resp = post_tracking(addr, "/v1/batch", &gz_headers, &small_on_the_wire);
    assert_eq!(resp.status, 413, "{}", resp.text());
    let resp = post_tracking(
        addr,
        "/v1/track",
        &gz_headers,
        &gzip(&call_of_len("gz-call-over", 32 * 1024 + 1)),
    );
    assert_eq!(resp.status, 413, "{}", resp.text());

    let stored: HashSet<String> = list_all(addr, "", &[]).iter().map(message_id).collect();
    assert_eq!(stored.len(), 1 + 20 + 2500);
    assert!(stored.contains("call-max") && stored.contains("batch-max-19"));
    assert!(
        stored.iter().all(|id| !id.contains("over")),
        "nothing of a refused request was written"
    );
}

#[test]
fn a_full_write_queue_answers_429_with_retry_after_and_writes_nothing() {
    let d = Daemon::start(&config(
        "[storage]\nqueue_capacity = 1\nmax_commit_batch = 1\n",
    ));
    let addr = d.addr;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = acked.clone();
    // Heavy batches keep the writer busy.
    let overloaded = burst_until_refused(30, 24, move |burst, t| {
        let acked = sink.clone();
        let prefix = format!("busy-{burst}-{t}");
        let body = batch_of_len(&prefix, 40, 400_000);
        let auth = web_auth();
        move || {
            let resp = post_tracking(addr, "/v1/batch", &[("Authorization", &auth)], &body);
            match resp.status {
                200 => {
                    acked.lock().unwrap().push(prefix);
                    false
                }
                429 => {
                    assert!(resp.retry_after() >= 1);
                    true
                }
                other => panic!("unexpected {other}: {}", resp.text()),
            }
        }
    });
    assert!(overloaded > 0, "30 bursts never filled a one-slot queue");
    let acked = acked.lock().unwrap().clone();
    let stored: BTreeSet<String> = list_all(addr, "", &[])
        .iter()
        .map(|e| message_id(e).rsplit_once('-').unwrap().0.to_owned())
        .collect();
    assert_eq!(
        stored,
        acked.into_iter().collect(),
        "only the answered batches were written"
    );
}
