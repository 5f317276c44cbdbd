//! The event log API as a client sees it: create, read back, idempotency,
//! batches, paging while others append, and filters.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::support::*;

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `2026-11-22T08:00:00.000Z`: the one shape the API writes timestamps in.
fn is_utc_millis(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[23] == b'Z'
        && b.iter()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19, 23].contains(&i) || c.is_ascii_digit())
}

#[test]
fn created_event_reads_back_identically_by_id_and_in_the_list() {
    let d = Daemon::start("");
    let resp = post_json(
        d.addr,
        "/v1/events",
        &json!({
            "type": "invoice.paid",
            "tenant": "acme",
            "data": {"amount": 4200, "lines": [{"sku": "a\"b"}], "note": "ünï"},
            "occurred_at": "2026-11-22T10:00:00.5+02:00",
        }),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let created = resp.json();
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("evt_") && id.len() == 30, "{id}");
    assert_eq!(created["seq"], 1);
    assert_eq!(created["type"], "invoice.paid");
    assert_eq!(created["tenant"], "acme");
    assert_eq!(created["idempotency_key"], Value::Null);
    assert_eq!(
        created["data"],
        json!({"amount": 4200, "lines": [{"sku": "a\"b"}], "note": "ünï"})
    );
    // The offset is applied, not dropped: 10:00+02:00 is 08:00 UTC.
    assert_eq!(created["occurred_at"], "2026-11-22T08:00:00.500Z");
    assert!(is_utc_millis(created["received_at"].as_str().unwrap()));

    let got = get(d.addr, &format!("/v1/events/{id}"));
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), created);

    // Without occurred_at or data the event still has both.
    let bare = create(d.addr, &json!({"type": "ping"}));
    assert_eq!(bare["seq"], 2);
    assert_eq!(bare["tenant"], Value::Null);
    assert_eq!(bare["data"], json!({}));
    assert_eq!(bare["occurred_at"], bare["received_at"]);

    let listed = list_all(d.addr, "", &[]);
    assert_eq!(listed, vec![created, bare]);
}

#[test]
fn idempotency_keys_return_the_original_refuse_changes_and_are_scoped_per_tenant() {
    let d = Daemon::start("");
    let event = json!({"type": "order.placed", "tenant": "acme", "idempotency_key": "k1", "data": {"n": 1}});
    let first = post_json(d.addr, "/v1/events", &event);
    assert_eq!(first.status, 201, "{}", first.text());
    let original = first.json();
    assert_eq!(original["idempotency_key"], "k1");

    let again = post_json(d.addr, "/v1/events", &event);
    assert_eq!(again.status, 200, "a retry is not a new event");
    assert_eq!(again.json(), original);

    let changed = post_json(
        d.addr,
        "/v1/events",
        &json!({"type": "order.placed", "tenant": "acme", "idempotency_key": "k1", "data": {"n": 2}}),
    );
    assert_eq!(changed.status, 409, "{}", changed.text());
    assert_eq!(changed.code(), "idempotency_conflict");
    assert_eq!(changed.json()["error"]["field"], "idempotency_key");
    assert_eq!(count_events(d.addr), 1, "a conflict writes nothing");

    // The same key belongs to someone else in another tenant, or in none.
    let other = create(
        d.addr,
        &json!({"type": "order.placed", "tenant": "globex", "idempotency_key": "k1", "data": {"n": 1}}),
    );
    let untenanted = create(
        d.addr,
        &json!({"type": "order.placed", "idempotency_key": "k1", "data": {"n": 1}}),
    );
    let all_ids: HashSet<_> = [&original, &other, &untenanted]
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(all_ids.len(), 3);

    // A batch mixing a key already stored, a key repeated inside the batch
    // and an event without key.
    let resp = post_json(
        d.addr,
        "/v1/events/batch",
        &json!({"events": [
            event,
            {"type": "b", "tenant": "acme", "idempotency_key": "b1"},
            {"type": "b", "tenant": "acme", "idempotency_key": "b1"},
            {"type": "c"},
            {"type": "b", "tenant": "globex", "idempotency_key": "b1"},
        ]}),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let results = resp.json()["results"].as_array().unwrap().clone();
    let kinds: Vec<_> = results.iter().map(|r| r["result"].clone()).collect();
    assert_eq!(
        kinds,
        ["duplicate", "created", "duplicate", "created", "created"]
    );
    assert_eq!(results[0]["id"], original["id"]);
    assert_eq!(results[0]["seq"], original["seq"]);
    assert_eq!(results[0]["received_at"], original["received_at"]);
    assert_eq!(results[2]["id"], results[1]["id"]);
    assert_eq!(results[2]["seq"], results[1]["seq"]);
    assert_ne!(results[4]["id"], results[1]["id"]);

    let listed = list_all(d.addr, "", &[]);
    assert_eq!(listed.len(), 3 + 3, "only the created ones were written");
    let keyed: Vec<_> = listed
        .iter()
        .filter(|e| e["idempotency_key"] == "b1")
        .map(|e| e["tenant"].clone())
        .collect();
    assert_eq!(keyed, [json!("acme"), json!("globex")]);

    // Repeating the whole batch creates nothing.
    let resp = post_json(
        d.addr,
        "/v1/events/batch",
        &json!({"events": [{"type": "b", "tenant": "acme", "idempotency_key": "b1"}]}),
    );
    assert_eq!(resp.json()["results"][0]["result"], "duplicate");
    assert_eq!(count_events(d.addr), 6);
}

#[test]
fn batch_results_follow_request_order_and_one_bad_item_refuses_the_whole_batch() {
    let d = Daemon::start("");
    create(d.addr, &json!({"type": "before"}));
    let events: Vec<Value> = (0..5)
        .map(|i| json!({"type": format!("item.{i}"), "data": {"i": i}}))
        .collect();
    let resp = post_json(d.addr, "/v1/events/batch", &json!({ "events": events }));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let results = resp.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 5);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["result"], "created");
        assert_eq!(
            r["seq"],
            i as u64 + 2,
            "consecutive seqs after the first event"
        );
    }
    let listed = list_all(d.addr, "", &[]);
    assert_eq!(listed.len(), 6);
    for (r, e) in results.iter().zip(&listed[1..]) {
        assert_eq!(r["id"], e["id"]);
        assert_eq!(r["received_at"], e["received_at"]);
    }
    for (i, e) in listed[1..].iter().enumerate() {
        assert_eq!(e["type"], format!("item.{i}"));
        assert_eq!(e["data"], json!({"i": i}));
    }

    // Item 3 breaks a rule: items 0-2 and 4 are fine but nothing is written.
    let mut events: Vec<Value> = (0..5).map(|i| json!({"type": format!("x.{i}")})).collect();
    events[3] = json!({"type": "bad type"});
    let resp = post_json(d.addr, "/v1/events/batch", &json!({ "events": events }));
    assert_eq!(resp.status, 422, "{}", resp.text());
    let err = resp.json()["error"].clone();
    assert_eq!(err["code"], "invalid_field");
    assert_eq!(err["field"], "events[3].type");
    assert!(
        err["message"].as_str().unwrap().starts_with("events[3]"),
        "{err}"
    );

    // An item that is not an event at all names its index too.
    let resp = post_json(
        d.addr,
        "/v1/events/batch",
        &json!({"events": [{"type": "ok"}, 5]}),
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.code(), "invalid_body");
    assert_eq!(resp.json()["error"]["field"], "events[1]");

    assert_eq!(count_events(d.addr), 6, "refused batches write nothing");
}

const WRITERS: usize = 4;
const PER_WRITER: usize = 75;

#[test]
fn paging_while_others_append_sees_every_event_once_in_order() {
    let d = Daemon::start("");
    let addr = d.addr;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let finished = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (acked, finished) = (acked.clone(), finished.clone());
            std::thread::spawn(move || {
                for i in 0..PER_WRITER {
                    let e = create(
                        addr,
                        &json!({"type": "page.test", "data": {"w": w, "i": i}}),
                    );
                    acked
                        .lock()
                        .unwrap()
                        .push(e["id"].as_str().unwrap().to_owned());
                }
                finished.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();

    let mut seen: Vec<String> = Vec::new();
    let mut last_seq = 0u64;
    let mut cursor = String::new();
    let mut caught_up = false;
    // Generous bound: each round either returns events or polls the tail,
    // and the writers finish within a few thousand rounds.
    for _ in 0..200_000 {
        // Sampled before the read: if all writers were done by then, a read
        // that reaches the end of the log has seen everything.
        let writers_done = finished.load(Ordering::SeqCst) == WRITERS;
        let path = if cursor.is_empty() {
            "/v1/events?limit=7".to_owned()
        } else {
            format!("/v1/events?limit=7&after={cursor}")
        };
        let resp = get(addr, &path);
        assert_eq!(resp.status, 200, "{}", resp.text());
        let page = resp.json();
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 7);
        for e in events {
            let seq = e["seq"].as_u64().unwrap();
            assert!(seq > last_seq, "seq {seq} after {last_seq}");
            last_seq = seq;
            seen.push(e["id"].as_str().unwrap().to_owned());
        }
        let tail = page["tail_cursor"]
            .as_str()
            .expect("tail_cursor always present");
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(events.len(), 7, "a cursor to more comes with a full page");
                cursor = next.to_owned();
            }
            None => {
                cursor = tail.to_owned();
                if writers_done {
                    caught_up = true;
                    break;
                }
            }
        }
    }
    assert!(caught_up, "the reader never caught up with the writers");
    for w in writers {
        w.join().expect("writer thread");
    }

    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), WRITERS * PER_WRITER);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an event was seen twice");
    assert_eq!(seen.len(), acked.len());
    assert_eq!(unique, acked.iter().collect::<HashSet<_>>());

    // The tail cursor is where a poller resumes: nothing new yet, then
    // exactly what is appended afterwards.
    let resp = get(addr, &format!("/v1/events?after={cursor}")).json();
    assert_eq!(resp["events"], json!([]));
    assert_eq!(resp["next_cursor"], Value::Null);
    let later = create(addr, &json!({"type": "later"}));
    let resp = get(addr, &format!("/v1/events?after={cursor}")).json();
    assert_eq!(resp["events"], json!([later]));
}

#[test]
fn filters_select_by_type_tenant_time_and_limit() {
    let d = Daemon::start("");
    let tenants = [Some("t1"), Some("t2"), None];
    let mut all = Vec::new();
    for round in 0..3 {
        for ty in ["a.created", "b.updated"] {
            for tenant in tenants {
                let mut e = json!({"type": ty, "data": {"round": round}});
                if let Some(t) = tenant {
                    e["tenant"] = json!(t);
                }
                all.push(create(d.addr, &e));
            }
        }
    }
    assert_eq!(list_all(d.addr, "", &[]), all);

    let expect = |pred: &dyn Fn(&Value) -> bool| -> Vec<Value> {
        all.iter().filter(|e| pred(e)).cloned().collect()
    };
    assert_eq!(
        list_all(d.addr, "type=a.created", &[]),
        expect(&|e| e["type"] == "a.created")
    );
    assert_eq!(
        list_all(d.addr, "tenant=t1", &[]),
        expect(&|e| e["tenant"] == "t1")
    );
    assert_eq!(
        list_all(d.addr, "type=b.updated&tenant=t2", &[]),
        expect(&|e| e["type"] == "b.updated" && e["tenant"] == "t2")
    );
    assert_eq!(
        list_all(d.addr, "type=nothing.here", &[]),
        Vec::<Value>::new()
    );
    assert_eq!(list_all(d.addr, "tenant=nobody", &[]), Vec::<Value>::new());

    // limit bounds a page; following next_cursor with the same filter
    // yields the same events as one big page.
    let mut paged = Vec::new();
    let mut path = "/v1/events?type=a.created&limit=2".to_owned();
    for _ in 0..all.len() {
        let page = get(d.addr, &path).json();
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 2, "{page}");
        paged.extend(events.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/events?type=a.created&limit=2&after={c}"),
            None => break,
        }
    }
    assert_eq!(paged, expect(&|e| e["type"] == "a.created"));
    let one = get(d.addr, "/v1/events?limit=1").json();
    assert_eq!(one["events"], json!([all[0]]));
    assert!(one["next_cursor"].is_string());

    // since/until are inclusive bounds on received_at. Several events can
    // share a millisecond, so the expectation is computed from the values
    // returned rather than from positions.
    let received = |e: &Value| e["received_at"].as_str().unwrap().to_owned();
    let (since, until) = (received(&all[4]), received(&all[12]));
    let within = expect(&|e| {
        let r = received(e);
        r >= since && r <= until
    });
    assert!(within.len() >= 9, "at least events 4..=12");
    assert_eq!(
        list_all(d.addr, &format!("since={since}&until={until}"), &[]),
        within
    );
    // The same instant written with an explicit offset (`+` encoded).
    let since_offset = since.replace('Z', "%2B00:00");
    assert_eq!(
        list_all(d.addr, &format!("since={since_offset}&until={until}"), &[]),
        within
    );
    assert_eq!(
        list_all(
            d.addr,
            &format!("since={since}&until={until}&tenant=t2"),
            &[]
        ),
        within
            .iter()
            .filter(|e| e["tenant"] == "t2")
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        list_all(d.addr, &format!("until={until}&type=b.updated"), &[]),
        expect(&|e| received(e) <= until && e["type"] == "b.updated")
    );

    let future = get(d.addr, "/v1/events?since=2999-01-01T00:00:00Z").json();
    assert_eq!(future["events"], json!([]));
    assert_eq!(future["next_cursor"], Value::Null);
    assert!(future["tail_cursor"].is_string());
    let past = get(d.addr, "/v1/events?until=1971-01-01T00:00:00Z").json();
    assert_eq!(past["events"], json!([]));
    assert_eq!(ids(&list_all(d.addr, "", &[])), ids(&all));
}

/// A page that holds every matching event says so with a null
/// next_cursor, even when a later event exists that the filter excludes.
#[test]
fn next_cursor_is_null_when_the_only_later_event_has_another_tenant() {
    let d = Daemon::start("");
    let a1 = create(d.addr, &json!({"type": "a", "tenant": "t1"}));
    create(d.addr, &json!({"type": "a", "tenant": "t2"}));
    let page = get(d.addr, "/v1/events?type=a&tenant=t1&limit=1").json();
    assert_eq!(page["events"], json!([a1]));
    assert_eq!(
        page["next_cursor"],
        Value::Null,
        "no other event of type a and tenant t1 exists: {page}"
    );

    // Without a filter, an exactly full last page ends the listing too.
    let page = get(d.addr, "/v1/events?limit=2").json();
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_cursor"], Value::Null);
}

#[test]
fn next_cursor_is_null_when_the_only_later_events_are_after_until() {
    let d = Daemon::start("");
    // Two consecutive events received in different milliseconds; creating
    // one takes well over a microsecond, so the bound is never reached.
    let mut before = create(d.addr, &json!({"type": "b"}));
    let mut after = before.clone();
    for _ in 0..100_000 {
        after = create(d.addr, &json!({"type": "b"}));
        if after["received_at"] != before["received_at"] {
            break;
        }
        before = after.clone();
    }
    assert_ne!(after["received_at"], before["received_at"]);
    let until = before["received_at"].as_str().unwrap();
    let upto = list_all(d.addr, &format!("until={until}"), &[]);
    assert_eq!(upto.last(), Some(&before));
    let page = get(
        d.addr,
        &format!("/v1/events?until={until}&limit={}", upto.len()),
    )
    .json();
    assert_eq!(page["events"].as_array().unwrap(), &upto);
    assert_eq!(
        page["next_cursor"],
        Value::Null,
        "every event up to {until} is on this page: {page}"
    );
}
