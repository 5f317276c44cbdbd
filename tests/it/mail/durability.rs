//! Mail queued before kill -9 is delivered once the daemon is back.

use std::collections::HashSet;
use std::time::Duration;

use super::smtp::{Script, SmtpSink};
use super::{email, emails, message, send_one, transactional_with, SETTLE};
use crate::support::*;

#[test]
fn mail_queued_before_kill_9_is_delivered_after_the_restart() {
    const N: usize = 50;
    // Every attempt is deferred until the relay is "fixed" below; a long
    // schedule and a high soft-bounce limit keep every message waiting.
    let mut sink = SmtpSink::start(&Script::always("450 4.3.2 not now"), None);
    let schedule = vec!["\"200ms\""; 30].join(", ");
    let toml = transactional_with(
        &sink,
        &format!("retry_schedule = [{schedule}]\nsoft_bounce_limit = 365\nsoft_bounce_window = \"365d\"\ngive_up_after = \"1h\""),
    );
    let mut d = Daemon::start(&toml);
    let mut acked = Vec::new();
    for i in 0..N {
        acked.push(send_one(d.addr, &message(&format!("user{i}@example.net"))));
    }
    // Half the recipients have been tried and deferred, so the kill finds
    // retries pending as well as messages never tried.
    let tried = || {
        sink.transactions()
            .iter()
            .filter_map(|t| t["rcpt_tos"][0].as_str().map(str::to_owned))
            .collect::<HashSet<String>>()
            .len()
    };
    assert!(
        wait_until(deadline(SETTLE), || tried() >= N / 2),
        "only {} recipients were tried",
        tried()
    );
    let tried_before_kill = sink.transactions().len();
    d.kill9();
    assert!(sink.received().is_empty());

    sink.set_script(&Script::always("250"));
    d.restart();
    let acked_set: HashSet<&str> = acked.iter().map(String::as_str).collect();
    let mut arrived: Vec<String> = Vec::new();
    let all = wait_until(deadline(Duration::from_secs(60)), || {
        arrived = sink
            .received()
            .iter()
            .filter_map(|m| m.header("X-Herald-Id").map(str::to_owned))
            .collect();
        let got: HashSet<&str> = arrived.iter().map(String::as_str).collect();
        acked_set.is_subset(&got)
    });
    let unique: HashSet<&str> = arrived.iter().map(String::as_str).collect();
    let missing: Vec<&&str> = acked_set.difference(&unique).collect();
    assert!(
        all,
        "acknowledged {N}, arrived {} ({} distinct); missing {missing:?}",
        arrived.len(),
        unique.len()
    );
    eprintln!(
        "kill -9 with {N} acknowledged after {tried_before_kill} deferred attempts: \
         {} arrived after the restart, {} distinct",
        arrived.len(),
        unique.len()
    );
    let strangers: Vec<&&str> = unique.difference(&acked_set).collect();
    assert!(strangers.is_empty(), "never acknowledged: {strangers:?}");

    let mut sent = 0;
    let settled_all = wait_until(deadline(SETTLE), || {
        sent = emails(d.addr, "?status=sent").len();
        sent == N
    });
    assert!(settled_all, "{sent} of {N} marked sent");
    for id in &acked {
        assert_eq!(email(d.addr, id)["status"], "sent", "{id}");
    }
}
