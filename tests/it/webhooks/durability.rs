//! Deliveries across kill -9 and SIGTERM: attempts in flight are made
//! again, and a receiver that was down gets everything once it is up.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::receiver::{Receiver, Reply};
use super::{config, create_endpoint, deliveries_of, post_numbered_events, settled, SETTLE};
use crate::support::*;

/// A daemon with attempts in flight to a receiver that holds every request
/// unanswered, longer than the daemon waits for attempts when it stops.
struct InFlight {
    d: Daemon,
    receiver: Receiver,
    open: Arc<AtomicBool>,
    ids: Vec<String>,
}

impl InFlight {
    fn start() -> InFlight {
        let (receiver, open) = hanging_until_opened();
        let d = Daemon::start(&config(&[("timeout", r#""30s""#)]));
        create_endpoint(d.addr, json!({"url": receiver.url("/")}));
        let ids = post_numbered_events(d.addr, 12);
        assert_eq!(ids.len(), 12);
        // max_in_flight_per_endpoint = 4: four attempts hang, eight wait.
        receiver.wait_for_requests(4, deadline(SETTLE));
        InFlight {
            d,
            receiver,
            open,
            ids,
        }
    }

    /// After the daemon stopped: the receiver answers again, the daemon
    /// restarts, and every delivery arrives and succeeds.
    fn restart_and_deliver_all(mut self) {
        let before_restart = self.receiver.requests().len();
        self.open.store(true, Ordering::SeqCst);
        self.d.restart();
        assert_all_arrive(&self.receiver, before_restart, &self.ids);
        for id in &self.ids {
            let list = settled(self.d.addr, id, 1);
            assert_eq!(list[0]["status"], "succeeded", "{list:?}");
        }
    }
}

#[test]
fn attempts_in_flight_at_kill_9_are_made_again_after_the_restart() {
    let mut run = InFlight::start();
    run.d.kill9();
    run.restart_and_deliver_all();
}

#[test]
fn sigterm_with_attempts_in_flight_stops_every_worker_and_loses_nothing() {
    let mut run = InFlight::start();
    let d = &mut run.d;
    let status = d.sigterm();
    assert_eq!(status.code(), Some(0), "logs:\n{}", d.logs().join("\n"));
    if postgres_backend() {
        // A node's attempts in flight are left to their leases.
        run.restart_and_deliver_all();
        return;
    }
    // Every worker (both schedulers, the mail workers, both upkeep passes)
    // was joined;
    // the webhook scheduler gave up on the hanging attempts at its deadline
    // and left them to the restart.
    let stopped = d
        .logs()
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "background workers stopped");
    let stopped = stopped.unwrap_or_else(|| panic!("logs:\n{}", d.logs().join("\n")));
    // Two schedulers, four mail workers, tracking upkeep, retention.
    assert_eq!(
        (&stopped["joined"], &stopped["left"]),
        (&json!(8), &json!(0))
    );
    assert!(d.has_logged("jobs still in flight at the deadline; they run again after the restart"));
    run.restart_and_deliver_all();
}

#[test]
fn deliveries_to_a_receiver_down_at_kill_9_arrive_once_it_is_up() {
    // Connections are refused until the receiver is started on this port.
    let port = unused_port();
    let mut d = Daemon::start(&config(&[(
        "retry_schedule",
        r#"["200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms"]"#,
    )]));
    create_endpoint(d.addr, json!({"url": format!("http://127.0.0.1:{port}/")}));
    let ids = post_numbered_events(d.addr, 50);
    // Wait until some attempts have failed, so retries are pending.
    let failed_once = wait_until(deadline(SETTLE), || {
        deliveries_of(d.addr, &ids[0])
            .first()
            .is_some_and(|x| !x["attempts"].as_array().unwrap().is_empty())
    });
    assert!(failed_once, "no attempt was made");
    d.kill9();

    let receiver = bind_receiver_on(port);
    d.restart();
    assert_all_arrive(&receiver, 0, &ids);
}

/// A receiver that holds every request unanswered until the flag is set,
/// then answers 200.
fn hanging_until_opened() -> (Receiver, Arc<AtomicBool>) {
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    let receiver = Receiver::start(move |_, _| {
        if gate.load(Ordering::SeqCst) {
            Reply::status(200)
        } else {
            Reply::Hang
        }
    });
    (receiver, open)
}

/// Waits until every event in `ids` reached `receiver` among the requests
/// after the first `skip`.
fn assert_all_arrive(receiver: &Receiver, skip: usize, ids: &[String]) {
    let mut missing = Vec::new();
    let all = wait_until(deadline(Duration::from_secs(60)), || {
        let got: HashSet<String> = receiver.requests()[skip..]
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        missing = ids
            .iter()
            .filter(|id| !got.contains(*id))
            .cloned()
            .collect();
        missing.is_empty()
    });
    assert!(all, "never delivered after the restart: {missing:?}");
}

/// A 200-answering receiver on a given port (freed just before).
fn bind_receiver_on(port: u16) -> Receiver {
    let mut found = None;
    let bound = wait_until(deadline(Duration::from_secs(10)), || {
        found = Receiver::start_on(port, |_, _| Reply::status(200)).ok();
        found.is_some()
    });
    assert!(bound, "could not bind 127.0.0.1:{port} again");
    found.unwrap()
}
