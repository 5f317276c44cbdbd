//! Soft bounces count by distinct days, not by attempts: an afternoon of
//! greylisting never suppresses a good address, soft bounces on enough
//! different days within the window do, and a delivery starts the count
//! over. SMTP replies and ESP events count alike.

use serde_json::Value;

use super::fixtures::{hook, Report};
use super::*;
use crate::mail::smtp::Script;

const DAY: i64 = 24 * 60 * 60;

/// Three distinct days within a week, the default rule, said out loud.
const RULE: &str = "soft_bounce_limit = 3\nsoft_bounce_window = \"7d\"\n";

/// `mail_config` with the soft-bounce rule added to `[mail]`.
fn with_rule(sink: &SmtpSink, streams: &[(&str, &str)], schedule: &str) -> String {
    let base = mail_config(sink, streams);
    let mut table: toml::Table = base.parse().expect("mail config");
    let mail = table["mail"].as_table_mut().expect("[mail]");
    let extra: toml::Table = format!("{RULE}retry_schedule = {schedule}\n")
        .parse()
        .expect("rule");
    mail.extend(extra);
    toml::to_string(&table).expect("TOML")
}

#[test]
fn an_afternoon_of_greylisting_does_not_suppress_a_good_address() {
    let to = "greylisted@example.net";
    let greylisted = "451 4.7.1 Greylisted, please try again later";
    let sink = SmtpSink::start(
        &Script::always("250").rcpt(
            to,
            &[
                greylisted, greylisted, greylisted, greylisted, greylisted, "250",
            ],
        ),
        None,
    );
    let schedule = "[\"100ms\", \"100ms\", \"100ms\", \"100ms\", \"100ms\", \"100ms\"]";
    let d = Daemon::start(&with_rule(&sink, &[("transactional", "")], schedule));
    let id = send(d.addr, "transactional", to);

    let e = wait_status(d.addr, &id, "sent");
    let attempts = e["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 6, "five deferrals, then accepted: {e}");
    assert_eq!(sink.transactions_for(to).len(), 6);
    assert!(
        suppression_of(d.addr, to).is_none(),
        "{:?}",
        suppressions(d.addr)
    );
    // The address is still good for the next message.
    let next = send(d.addr, "transactional", to);
    wait_status(d.addr, &next, "sent");
}

#[test]
fn soft_bounces_on_three_days_within_the_window_suppress_and_on_two_do_not() {
    let mut rig = Rig::start();
    let esp = Esp::Postmark;
    let toml = format!(
        "{}{}",
        rig.peer.config(&rig.pki, &[esp]),
        with_rule(&rig.sink, &[("transactional", "")], "[\"100ms\"]")
    );
    let d = Daemon::start(&toml);
    let now = unix_now();
    let mut n = 0;
    let mut post = |rig: &mut Rig, report: Report, to: &str| {
        n += 1;
        let resp = hook(
            &mut rig.peer,
            esp,
            report,
            &Target::stranger(to),
            &event_id(esp, n),
        )
        .post(d.addr, esp);
        assert_applied(&resp, 1, 0);
    };

    // Two days, one of them twice.
    let two = "two-days@example.net";
    post(&mut rig, Report::SoftBounce(now - DAY), two);
    post(&mut rig, Report::SoftBounce(now - DAY), two);
    post(&mut rig, Report::SoftBounce(now), two);
    // Three days, but a delivery after the first two starts over.
    let reset = "reset@example.net";
    post(&mut rig, Report::SoftBounce(now - 3 * DAY), reset);
    post(&mut rig, Report::SoftBounce(now - 2 * DAY), reset);
    post(&mut rig, Report::Delivered(now - DAY), reset);
    post(&mut rig, Report::SoftBounce(now), reset);
    // Three days in the last week.
    let three = "three-days@example.net";
    post(&mut rig, Report::SoftBounce(now - 4 * DAY), three);
    assert!(suppression_of(d.addr, three).is_none());
    post(&mut rig, Report::SoftBounce(now - 2 * DAY), three);
    assert!(suppression_of(d.addr, three).is_none());
    post(&mut rig, Report::SoftBounce(now), three);

    let suppression = suppression_of(d.addr, three).expect("three days suppress the address");
    assert_eq!(suppression["reason"], "soft_bounce_limit", "{suppression}");
    assert_eq!(
        suppression["stream"],
        Value::Null,
        "every stream: {suppression}"
    );
    for spared in [two, reset] {
        assert!(
            suppression_of(d.addr, spared).is_none(),
            "{spared}: {:?}",
            suppressions(d.addr)
        );
    }
    assert_eq!(suppressions(d.addr).len(), 1);

    let soft: Vec<Value> = events_to(d.addr, "email.bounced", three);
    assert_eq!(soft.len(), 3, "{soft:?}");
    for e in &soft {
        assert_eq!(e["data"]["bounce_type"], "soft", "{e}");
        assert_eq!(e["data"]["source"], "esp", "{e}");
        assert_eq!(e["data"]["provider"], "postmark", "{e}");
    }
    let delivered = events_to(d.addr, "email.delivered", reset);
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let rows = feedback(d.addr, &format!("address={three}&kind=soft_bounce"));
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows.iter().all(|r| r["occurred_at"].is_string()),
        "{rows:?}"
    );

    let resp = post_json(d.addr, "/v1/emails", &message(three));
    assert_refused(&resp, 422, "recipient_suppressed", three);
    send(d.addr, "transactional", two);
}
