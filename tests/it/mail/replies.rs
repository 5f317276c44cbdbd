//! Outcomes driven by the relay's reply: sent, deferred and retried,
//! bounced (hard, or soft too often) and failed, and who gets suppressed.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::smtp::{Script, SmtpSink};
use super::{
    attempts, barrier, email, emails, events_about, message, send_one, settled, suppressions,
    transactional, transactional_with, FINAL, FROM, SETTLE,
};
use crate::support::*;

#[test]
fn a_250_is_sent_and_the_reply_is_kept() {
    let sink = SmtpSink::start(&Script::always("250"), None);
    let d = Daemon::start(&transactional(&sink));
    let id = send_one(
        d.addr,
        &json!({
            "from": FROM,
            "to": "  Ann@Example.NET ",
            "reply_to": "support@example.com",
            "subject": "Your receipt",
            "text": "Thanks for your order.",
            "headers": {"X-Campaign": "spring"},
            "tags": {"order": "1234"},
        }),
    );

    let got = sink.wait_for_id(&id, deadline(SETTLE));
    let e = settled(d.addr, &id, "sent");
    assert_eq!(e["to"], "ann@example.net", "addresses are normalised: {e}");
    assert_eq!(e["stream"], "transactional");
    assert_eq!(e["subject"], "Your receipt");
    assert_eq!(e["tags"], json!({"order": "1234"}));
    assert_eq!(e["flagged"], false);
    assert_eq!(e["next_attempt_at"], Value::Null);
    let tries = attempts(&e);
    assert_eq!(tries.len(), 1, "{e}");
    assert_eq!(tries[0]["code"], 250);
    assert_eq!(tries[0]["outcome"], "sent");
    assert_eq!(tries[0]["enhanced"], "2.0.0");
    assert!(
        s(&tries[0]["text"]).contains(&format!("queued as {}", got.queue_id)),
        "the relay's reply text, with its queue id, is kept: {e}"
    );
    assert!(
        s(&e["smtp_response"]).starts_with("250") && s(&e["smtp_response"]).contains(&got.queue_id),
        "{e}"
    );

    assert_eq!(got.rcpt_tos, ["ann@example.net"]);
    assert_eq!(got.mail_from, "no-reply@example.com");
    assert!(got
        .header("From")
        .unwrap_or_default()
        .contains("no-reply@example.com"));
    assert!(got
        .header("To")
        .unwrap_or_default()
        .contains("ann@example.net"));
    assert!(got
        .header("Reply-To")
        .unwrap_or_default()
        .contains("support@example.com"));
    assert_eq!(got.header("Subject"), Some("Your receipt"));
    assert_eq!(got.header("X-Campaign"), Some("spring"));
    assert_eq!(got.header("MIME-Version"), Some("1.0"));
    assert!(got.header("Date").is_some(), "{}", got.text());
    assert!(
        got.header("Content-Type")
            .unwrap_or_default()
            .starts_with("text/plain"),
        "text only is text/plain: {}",
        got.text()
    );
    assert_eq!(got.header("Message-ID"), e["message_id"].as_str(), "{e}");
    assert!(
        got.text().contains("Thanks for your order."),
        "{}",
        got.text()
    );
    assert!(
        got.header("List-Unsubscribe").is_none(),
        "a transactional stream has no unsubscribe link by default"
    );

    let listed = emails(
        d.addr,
        "?to=ann@example.net&status=sent&stream=transactional",
    );
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id);
    assert!(
        listed[0].get("attempts").is_none(),
        "listings leave attempts out: {listed:?}"
    );

    let queued = events_about(d.addr, "email.queued", &id);
    let sent = events_about(d.addr, "email.sent", &id);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["data"]["to"], "ann@example.net", "{sent:?}");
}

#[test]
fn a_450_is_deferred_and_retried_until_accepted() {
    let to = "later@example.net";
    let sink = SmtpSink::start(
        &Script::always("250").rcpt(to, &["450 4.2.0 try later", "250"]),
        None,
    );
    let d = Daemon::start(&transactional(&sink));
    let id = send_one(d.addr, &message(to));

    let e = settled(d.addr, &id, "sent");
    let tries = attempts(&e);
    assert_eq!(tries.len(), 2, "{e}");
    assert_eq!(tries[0]["code"], 450);
    assert_eq!(tries[0]["enhanced"], "4.2.0");
    assert_eq!(tries[0]["outcome"], "deferred");
    assert!(s(&tries[0]["text"]).contains("try later"), "{e}");
    assert_eq!(tries[1]["code"], 250);
    assert_eq!(tries[1]["outcome"], "sent");
    assert_eq!(events_about(d.addr, "email.deferred", &id).len(), 1);
    assert_eq!(events_about(d.addr, "email.sent", &id).len(), 1);

    assert_eq!(
        sink.transactions_for(to).len(),
        2,
        "{:?}",
        sink.transactions()
    );
    let got = sink.received();
    assert_eq!(got.len(), 1, "accepted once");
    assert_eq!(got[0].header("X-Herald-Id"), Some(id.as_str()));
}

#[test]
fn a_hard_bounce_suppresses_the_address_for_every_later_send() {
    let gone = "gone@example.net";
    let sink = SmtpSink::start(
        &Script::always("250").rcpt(gone, &["550 5.1.1 no such user"]),
        None,
    );
    let d = Daemon::start(&transactional(&sink));
    let id = send_one(d.addr, &message(gone));

    let e = settled(d.addr, &id, "bounced");
    let tries = attempts(&e);
    assert_eq!(tries.len(), 1, "a hard bounce is not retried: {e}");
    assert_eq!(tries[0]["code"], 550);
    assert_eq!(tries[0]["enhanced"], "5.1.1");
    assert_eq!(tries[0]["outcome"], "bounced");
    assert_eq!(events_about(d.addr, "email.bounced", &id).len(), 1);

    let list = suppressions(d.addr, "");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["address"], gone);
    assert_eq!(list[0]["reason"], "hard_bounce");
    assert_eq!(
        list[0]["stream"],
        Value::Null,
        "a hard bounce holds for all streams"
    );
    let suppressed = list_all(d.addr, "type=email.suppressed", &[]);
    assert!(
        suppressed
            .iter()
            .any(|e| e["data"]["address"] == gone || e["data"]["to"] == gone),
        "{suppressed:?}"
    );

    // Suppressed in any spelling, and one suppressed recipient refuses the
    // whole request.
    for to in [
        json!(gone),
        json!(" GONE@example.NET"),
        json!(["ok@example.net", gone]),
    ] {
        let resp = post_json(
            d.addr,
            "/v1/emails",
            &json!({"from": FROM, "to": to, "subject": "Again", "text": "again"}),
        );
        assert_eq!(resp.status, 422, "to {to}: {}", resp.text());
        let err = &resp.json()["error"];
        assert_eq!(err["code"], "recipient_suppressed", "{err}");
        assert_eq!(err["field"], "to", "{err}");
        assert_eq!(err["address"], gone, "{err}");
        assert_eq!(err["reason"], "hard_bounce", "{err}");
    }
    assert_eq!(
        emails(d.addr, &format!("?to={gone}")).len(),
        1,
        "nothing new queued"
    );
    assert!(
        emails(d.addr, "?to=ok@example.net").is_empty(),
        "nothing queued for the rest"
    );

    barrier(d.addr, &sink, "after@example.net");
    assert_eq!(
        sink.transactions_for(gone).len(),
        1,
        "{:?}",
        sink.transactions()
    );
    assert!(sink.transactions_for("ok@example.net").is_empty());
}

#[test]
fn a_policy_rejection_fails_flagged_without_suppressing() {
    let to = "strict@example.net";
    let sink = SmtpSink::start(&Script::always("250").rcpt(to, &["550 5.7.1 policy"]), None);
    let d = Daemon::start(&transactional(&sink));
    let id = send_one(d.addr, &message(to));

    let e = settled(d.addr, &id, "failed");
    assert_eq!(e["flagged"], true, "{e}");
    let tries = attempts(&e);
    assert_eq!(tries.len(), 1, "{e}");
    assert_eq!(tries[0]["code"], 550);
    assert_eq!(tries[0]["enhanced"], "5.7.1");
    assert_eq!(tries[0]["outcome"], "failed");
    assert_eq!(events_about(d.addr, "email.failed", &id).len(), 1);
    assert!(
        suppressions(d.addr, "").is_empty(),
        "5.7.x is about the message, not the address"
    );

    // The address may still be written to.
    send_one(d.addr, &message(to));
}

/// A relay's 4xx counts as a soft-bounce day: with a limit of one day,
/// the first mailbox-full reply suppresses the address. (Days spread over a
/// week are proven with dated ESP reports in `feedback::soft_bounces`.)
#[test]
fn a_soft_bounce_on_the_last_allowed_day_suppresses_the_address() {
    let to = "full@example.net";
    let sink = SmtpSink::start(
        &Script::always("250").rcpt(to, &["452 4.2.2 mailbox full"]),
        None,
    );
    let d = Daemon::start(&transactional_with(&sink, "soft_bounce_limit = 1"));
    send_one(d.addr, &message(to));

    let mut list = Vec::new();
    let suppressed = wait_until(deadline(SETTLE), || {
        list = suppressions(d.addr, "");
        !list.is_empty()
    });
    assert!(
        suppressed,
        "never suppressed; transactions {:?}",
        sink.transactions()
    );
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["address"], to);
    assert_eq!(list[0]["reason"], "soft_bounce_limit");
    assert_eq!(list[0]["stream"], serde_json::Value::Null, "{list:?}");
}

#[test]
fn every_kind_of_permanent_reply_is_classified() {
    // (reply, status and whether flagged); every bounce suppresses.
    let cases = [
        ("550 5.1.1 no such user", "bounced"),
        ("553 5.1.3 bad address syntax", "bounced"),
        ("550 5.2.1 mailbox disabled", "bounced"),
        ("554 5.7.1 message refused as spam", "failed flagged"),
        ("550 5.7.26 unauthenticated mail", "failed flagged"),
        ("554 transaction failed", "failed"),
    ];
    let to = |i: usize| format!("r{i}@example.net");
    let script = cases
        .iter()
        .enumerate()
        .fold(Script::always("250"), |sc, (i, (reply, _))| {
            sc.rcpt(&to(i), &[reply])
        });
    let sink = SmtpSink::start(&script, None);
    let d = Daemon::start(&transactional(&sink));
    let ids: Vec<String> = (0..cases.len())
        .map(|i| send_one(d.addr, &message(&to(i))))
        .collect();
    let mut bounced = HashSet::new();
    for (i, ((reply, outcome), id)) in cases.iter().zip(&ids).enumerate() {
        let (status, flagged) = match outcome.split_once(' ') {
            Some((status, _)) => (status, true),
            None => (*outcome, false),
        };
        let e = settled(d.addr, id, status);
        assert_eq!(e["flagged"], flagged, "{reply}: {e}");
        let tries = attempts(&e);
        assert_eq!(tries.len(), 1, "a permanent reply is not retried: {e}");
        assert_eq!(tries[0]["outcome"], status, "{e}");
        assert_eq!(tries[0]["code"], reply[..3].parse::<u16>().unwrap(), "{e}");
        let enhanced = reply.split(' ').nth(1).filter(|c| c.starts_with('5'));
        assert_eq!(tries[0]["enhanced"].as_str(), enhanced, "{e}");
        assert_eq!(sink.transactions_for(&to(i)).len(), 1);
        if status == "bounced" {
            bounced.insert(to(i));
        }
    }
    let list = suppressions(d.addr, "");
    let got: HashSet<String> = list.iter().map(|e| s(&e["address"]).to_owned()).collect();
    assert_eq!(got, bounced, "{list:?}");
    assert!(
        list.iter().all(|e| e["reason"] == "hard_bounce"),
        "{list:?}"
    );
}

#[test]
fn any_other_5xx_fails_at_once_and_keeps_the_address() {
    // Only 5.1.x and 5.2.1 bounce and 5.7.x is flagged; any other 5xx, with
    // or without an enhanced code, fails at once, without retries or
    // suppression. (5.2.2, mailbox full, is temporary: see the soft-bounce
    // tests and the unit tests of the classifier.)
    let cases = ["552 5.3.4 message too big", "550 mailbox unavailable"];
    let to = |i: usize| format!("r{i}@example.net");
    let script = cases
        .iter()
        .enumerate()
        .fold(Script::always("250"), |sc, (i, reply)| {
            sc.rcpt(&to(i), &[reply])
        });
    let sink = SmtpSink::start(&script, None);
    let d = Daemon::start(&transactional(&sink));
    let ids: Vec<String> = (0..cases.len())
        .map(|i| send_one(d.addr, &message(&to(i))))
        .collect();
    let mut wrong = Vec::new();
    for (reply, id) in cases.iter().zip(&ids) {
        let mut e = Value::Null;
        wait_until(deadline(SETTLE), || {
            e = email(d.addr, id);
            FINAL.contains(&s(&e["status"]))
        });
        let outcomes: Vec<&Value> = attempts(&e).iter().map(|a| &a["outcome"]).collect();
        if e["status"] != "failed" || e["flagged"] != false || outcomes != [&json!("failed")] {
            wrong.push(format!(
                "{reply:?}: status {}, attempt outcomes {outcomes:?}",
                e["status"]
            ));
        }
    }
    let list = suppressions(d.addr, "");
    if !list.is_empty() {
        wrong.push(format!("suppressed: {list:?}"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_message_still_deferred_after_give_up_after_fails() {
    let to = "never@example.net";
    let sink = SmtpSink::start(&Script::always("450 4.4.1 no answer from host"), None);
    let d = Daemon::start(&transactional_with(
        &sink,
        "give_up_after = \"500ms\"\nsoft_bounce_limit = 365\nsoft_bounce_window = \"365d\"",
    ));
    let id = send_one(d.addr, &message(to));
    let e = settled(d.addr, &id, "failed");
    assert!(!attempts(&e).is_empty(), "{e}");
    assert_eq!(e["next_attempt_at"], Value::Null, "{e}");
    assert_eq!(events_about(d.addr, "email.failed", &id).len(), 1);
    assert!(sink.received().is_empty());
    assert!(suppressions(d.addr, "").is_empty());
}
