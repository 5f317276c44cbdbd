//! Events about addresses Herald never mailed are applied and listed; a
//! webhook delivered again (providers retry, attackers replay) changes
//! nothing after its first delivery.

use serde_json::{json, Value};

use super::fixtures::{hook, mailgun, mailgun_event, sendgrid, sendgrid_event, Report};
use super::*;

#[test]
fn a_complaint_about_an_address_never_mailed_suppresses_it_and_is_listed_unmatched() {
    let mut rig = Rig::start();
    let esp = Esp::Sendgrid;
    let toml = format!(
        "{}{}",
        rig.peer.config(&rig.pki, &[esp, Esp::Postmark]),
        mail_config(&rig.sink, &[("transactional", &esp_line(esp))])
    );
    let d = Daemon::start(&toml);
    let known = relay_one(d.addr, &rig.sink, "transactional", "known@example.net");
    let stranger = Target::stranger("stranger@example.org");

    let resp = hook(
        &mut rig.peer,
        esp,
        Report::HardBounce,
        &known,
        &event_id(esp, 1),
    )
    .post(d.addr, esp);
    assert_applied(&resp, 1, 0);
    let resp = hook(
        &mut rig.peer,
        esp,
        Report::Complaint,
        &stranger,
        &event_id(esp, 2),
    )
    .post(d.addr, esp);
    assert_applied(&resp, 1, 0);
    let pm = Esp::Postmark;
    let resp = hook(
        &mut rig.peer,
        pm,
        Report::Complaint,
        &stranger,
        &event_id(pm, 3),
    )
    .post(d.addr, pm);
    assert_applied(&resp, 1, 0);

    let suppression = suppression_of(d.addr, &stranger.to).expect("the stranger is suppressed");
    assert_eq!(suppression["reason"], "complaint", "{suppression}");
    assert_eq!(suppression["stream"], Value::Null, "{suppression}");

    let unmatched = feedback(d.addr, "matched=false");
    assert_eq!(unmatched.len(), 2, "{unmatched:?}");
    for row in &unmatched {
        assert_eq!(row["address"], stranger.to.as_str(), "{row}");
        assert_eq!(row["matched"], false, "{row}");
        assert_eq!(row["kind"], "complaint", "{row}");
        assert_eq!(row["message_id"], Value::Null, "{row}");
        assert_eq!(row["stream"], Value::Null, "{row}");
    }
    let matched = feedback(d.addr, "matched=true");
    assert_eq!(matched.len(), 1, "{matched:?}");
    assert_eq!(matched[0]["message_id"], known.herald_id(), "{matched:?}");

    // Filters narrow the listing; they never widen it.
    let by_provider = feedback(d.addr, "provider=postmark");
    assert_eq!(by_provider.len(), 1, "{by_provider:?}");
    assert_eq!(by_provider[0]["provider"], "postmark");
    assert_eq!(feedback(d.addr, "kind=hard_bounce").len(), 1);
    assert_eq!(
        feedback(d.addr, "kind=complaint&provider=sendgrid").len(),
        1
    );
    assert_eq!(
        feedback(d.addr, &format!("address={}", stranger.to)).len(),
        2
    );
    assert_eq!(feedback(d.addr, "").len(), 3);
    for bad in ["matched=maybe", "colour=blue"] {
        let resp = get(d.addr, &format!("/v1/feedback?{bad}"));
        assert_eq!(resp.status, 400, "{bad}: {}", resp.text());
    }

    let complained = events_to(d.addr, "email.complained", &stranger.to);
    assert_eq!(
        complained.len(),
        2,
        "one per provider event: {complained:?}"
    );
    for e in &complained {
        assert_eq!(e["data"]["source"], "esp", "{e}");
        assert_eq!(e["data"]["message_id"], Value::Null, "{e}");
    }
    let resp = post_json(d.addr, "/v1/emails", &message(&stranger.to));
    assert_refused(&resp, 422, "recipient_suppressed", "the stranger");
}

#[test]
fn a_webhook_delivered_again_changes_nothing_after_the_first_time() {
    const TIMES: u64 = 4;
    let mut rig = Rig::start();
    let d = Daemon::start(&rig.peer.config(&rig.pki, &[Esp::Sendgrid, Esp::Mailgun]));
    let bob = Target::stranger("bob@example.org");
    let carol = Target::stranger("carol@example.org");

    // A SendGrid batch of two events, delivered whole again and again.
    let body = json!([
        sendgrid_event(Report::Complaint, &bob, &event_id(Esp::Sendgrid, 1)),
        sendgrid_event(Report::HardBounce, &carol, &event_id(Esp::Sendgrid, 2)),
    ])
    .to_string();
    let batch = sendgrid(&mut rig.peer, &body, unix_now());
    assert_applied(&batch.post(d.addr, Esp::Sendgrid), 2, 0);
    for _ in 1..TIMES {
        assert_applied(&batch.post(d.addr, Esp::Sendgrid), 0, 2);
    }
    // One new event beside a known one: only the new one applies.
    let dave = Target::stranger("dave@example.org");
    let body = json!([
        sendgrid_event(Report::Complaint, &bob, &event_id(Esp::Sendgrid, 1)),
        sendgrid_event(Report::Complaint, &dave, &event_id(Esp::Sendgrid, 3)),
    ])
    .to_string();
    assert_applied(
        &sendgrid(&mut rig.peer, &body, unix_now()).post(d.addr, Esp::Sendgrid),
        1,
        1,
    );

    // Mailgun: the same request again is a replayed token (406, which tells
    // Mailgun to stop); the same event under a fresh token is a duplicate.
    let erin = Target::stranger("erin@example.org");
    let event = mailgun_event(Report::Complaint, &erin, &event_id(Esp::Mailgun, 1));
    let first = mailgun(&mut rig.peer, &event, unix_now(), None);
    assert_applied(&first.post(d.addr, Esp::Mailgun), 1, 0);
    for _ in 1..TIMES {
        assert_refused(
            &first.post(d.addr, Esp::Mailgun),
            406,
            "replayed",
            "the same Mailgun token",
        );
    }
    let again = mailgun(&mut rig.peer, &event, unix_now(), None);
    assert_applied(&again.post(d.addr, Esp::Mailgun), 0, 1);
    // A used token is refused even on an event never seen.
    let token: Value = serde_json::from_slice(&first.body).expect("Mailgun body");
    let fresh_event = mailgun_event(Report::Complaint, &dave, &event_id(Esp::Mailgun, 2));
    let reused = mailgun(
        &mut rig.peer,
        &fresh_event,
        unix_now(),
        Some(s(&token["signature"]["token"])),
    );
    assert_refused(
        &reused.post(d.addr, Esp::Mailgun),
        406,
        "replayed",
        "a used token",
    );

    let rows = feedback(d.addr, "");
    assert_eq!(rows.len(), 4, "{rows:?}");
    let mut ids: Vec<&str> = rows.iter().map(|r| s(&r["event_id"])).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "each event stored once: {rows:?}");
    for (who, kind) in [
        (&bob, "email.complained"),
        (&carol, "email.bounced"),
        (&dave, "email.complained"),
        (&erin, "email.complained"),
    ] {
        let events = events_to(d.addr, kind, &who.to);
        assert_eq!(events.len(), 1, "{} {kind}: {events:?}", who.to);
    }
    let listed = suppressions(d.addr);
    assert_eq!(listed.len(), 4, "{listed:?}");
}
