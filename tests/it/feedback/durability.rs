//! What a feedback `200` promises: the event survives kill -9, and the
//! provider's retry of anything (acknowledged or not) applies it once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::fixtures::{sendgrid_event, sendgrid_hook, Report};
use super::*;

/// Distinct events, one a request: enough that the kill finds requests in
/// flight on a fast machine too.
const EVENTS: usize = 1500;
const THREADS: usize = 8;
/// Acknowledged requests before the kill.
const BEFORE_KILL: usize = 200;

/// Complaints about `EVENTS` distinct addresses, each signed on its own.
fn signed_complaints(peer: &mut EspPeer) -> Vec<(String, String, Hook)> {
    let events: Vec<(String, String, String)> = (0..EVENTS)
        .map(|i| {
            let id = event_id(Esp::Sendgrid, i as u64);
            let to = format!("reader{i}@example.org");
            let body = json!([sendgrid_event(
                Report::Complaint,
                &Target::stranger(&to),
                &id
            )])
            .to_string();
            (id, to, body)
        })
        .collect();
    let commands: Vec<_> = events
        .iter()
        .map(|(_, _, body)| json!({"op": "sendgrid", "body": body}))
        .collect();
    let signed = peer.call_many(&commands);
    events
        .into_iter()
        .zip(signed)
        .map(|((id, to, body), sig)| (id, to, sendgrid_hook(&body, &sig)))
        .collect()
}

#[derive(Default)]
struct Outcomes {
    acked: Mutex<Vec<usize>>,
    acked_count: AtomicUsize,
    stop: AtomicBool,
}

/// Every acknowledged event is stored once, no event twice; each
/// acknowledged complaint suppressed its address and made one event.
fn assert_each_once(
    addr: std::net::SocketAddr,
    events: &[(String, String, Hook)],
    acked: &[usize],
) {
    let rows = feedback(addr, "");
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for row in &rows {
        *copies.entry(s(&row["event_id"])).or_default() += 1;
    }
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let suppressed: HashSet<String> = suppressions(addr)
        .iter()
        .map(|s| s["address"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut complained: HashMap<String, usize> = HashMap::new();
    for e in list_all(addr, "type=email.complained", &[]) {
        *complained
            .entry(s(&e["data"]["to"]).to_owned())
            .or_default() += 1;
    }
    let repeated: Vec<_> = complained.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "email.complained more than once: {repeated:?}"
    );
    assert_eq!(
        complained.len(),
        rows.len(),
        "one event per stored feedback row"
    );
    for &i in acked {
        let (id, to, _) = &events[i];
        assert_eq!(
            copies.get(id.as_str()),
            Some(&1),
            "acknowledged {id} is not stored once"
        );
        assert!(
            suppressed.contains(to),
            "acknowledged complaint about {to} suppressed nothing"
        );
        assert_eq!(complained.get(to), Some(&1), "{to}");
    }
}

#[test]
fn kill_9_while_feedback_is_ingested_loses_no_acknowledged_event_and_applies_none_twice() {
    let mut rig = Rig::start();
    let mut d = Daemon::start(&rig.peer.config(&rig.pki, &[Esp::Sendgrid]));
    let events = Arc::new(signed_complaints(&mut rig.peer));
    let outcomes = Arc::new(Outcomes::default());
    let addr = d.addr;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (events, outcomes) = (events.clone(), outcomes.clone());
            std::thread::spawn(move || {
                for i in (t..EVENTS).step_by(THREADS) {
                    if outcomes.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    match events[i].2.try_post(addr, Esp::Sendgrid) {
                        Ok(resp) if resp.status == 200 => {
                            assert_applied(&resp, 1, 0);
                            outcomes.acked.lock().unwrap().push(i);
                            outcomes.acked_count.fetch_add(1, Ordering::SeqCst);
                        }
                        // Not acknowledged: a stopping daemon, or none at all.
                        Ok(resp) if resp.status == 503 => return,
                        Ok(resp) => panic!("event {i}: {} {}", resp.status, resp.text()),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    let enough = wait_until(deadline(Duration::from_secs(60)), || {
        outcomes.acked_count.load(Ordering::SeqCst) >= BEFORE_KILL
    });
    assert!(
        enough,
        "only {} acknowledged",
        outcomes.acked_count.load(Ordering::SeqCst)
    );
    d.kill9();
    outcomes.stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("poster thread");
    }
    let acked = outcomes.acked.lock().unwrap().clone();
    eprintln!(
        "kill -9 after {} of {EVENTS} feedback requests were acknowledged",
        acked.len()
    );

    d.restart();
    assert_each_once(d.addr, &events, &acked);

    // The provider retries everything it is unsure of, and may retry what
    // was acknowledged too; signed afresh, as a retry is.
    let resigned = signed_complaints(&mut rig.peer);
    let acked_set: HashSet<usize> = acked.iter().copied().collect();
    for (i, (id, _, hook)) in resigned.iter().enumerate() {
        let resp = hook.post(d.addr, Esp::Sendgrid);
        if acked_set.contains(&i) {
            assert_applied(&resp, 0, 1);
        } else {
            assert_eq!(resp.status, 200, "{id}: {}", resp.text());
            let v = resp.json();
            assert_eq!(v["received"], 1, "{id}: {v}");
        }
    }
    let all: Vec<usize> = (0..EVENTS).collect();
    assert_each_once(d.addr, &events, &all);
    assert_eq!(feedback(d.addr, "").len(), EVENTS);
}
