//! Each provider, end to end: its hard bounce and its complaint about a
//! message Herald relayed are applied (suppression, message status, event,
//! feedback row, the message's timeline); every forgery, unreadable body,
//! oversized body and ignorable event leaves everything as it was.

use serde_json::Value;

use super::fixtures::{forgeries, hook, ignorable, unreadable, Report};
use super::*;

#[test]
fn ses_bounce_and_complaint_are_applied_and_forgeries_change_nothing() {
    round_trip(Esp::Ses);
}

#[test]
fn sendgrid_bounce_and_complaint_are_applied_and_forgeries_change_nothing() {
    round_trip(Esp::Sendgrid);
}

#[test]
fn postmark_bounce_and_complaint_are_applied_and_forgeries_change_nothing() {
    round_trip(Esp::Postmark);
}

#[test]
fn mailgun_bounce_and_complaint_are_applied_and_forgeries_change_nothing() {
    round_trip(Esp::Mailgun);
}

#[test]
fn resend_bounce_and_complaint_are_applied_and_forgeries_change_nothing() {
    round_trip(Esp::Resend);
}

fn round_trip(esp: Esp) {
    let mut rig = Rig::start();
    let toml = format!(
        "{PUBLIC}{}{}",
        rig.peer.config(&rig.pki, &[esp]),
        mail_config(&rig.sink, &[("transactional", &esp_line(esp))])
    );
    let d = Daemon::start(&toml);
    let public = d.logged_addr("public listening");

    for other in Esp::ALL.into_iter().filter(|o| *o != esp) {
        let resp = Hook::json("[]").post(d.addr, other);
        assert_refused(
            &resp,
            404,
            "not_found",
            &format!("{other:?} is not configured"),
        );
    }
    let resp = request(d.addr, "POST", "/feedback/sparkpost", &[JSON], b"[]");
    assert_refused(&resp, 404, "not_found", "an unknown provider");
    let resp = request(d.addr, "GET", &esp.route(), &[], b"");
    assert_eq!(resp.status, 405, "GET {}: {}", esp.route(), resp.text());

    let gone = relay_one(d.addr, &rig.sink, "transactional", "gone@example.net");
    let angry = relay_one(d.addr, &rig.sink, "transactional", "angry@example.net");
    let bounce_id = event_id(esp, 1);
    let complaint_id = event_id(esp, 2);

    for (what, forged) in forgeries(&mut rig.peer, esp, &gone, &bounce_id) {
        for listener in [d.addr, public] {
            let resp = forged.post(listener, esp);
            assert_refused(&resp, 401, "unauthenticated", &format!("{esp:?}, {what}"));
        }
    }
    let resp = unreadable(&mut rig.peer, esp).post(d.addr, esp);
    assert_refused(
        &resp,
        400,
        "malformed",
        &format!("{esp:?}, unreadable body"),
    );
    let mut oversized = unreadable(&mut rig.peer, esp);
    oversized.body = vec![b' '; (1 << 20) + 1];
    let resp = oversized.post(d.addr, esp);
    assert_refused(
        &resp,
        413,
        "payload_too_large",
        &format!("{esp:?}, 1 MiB + 1"),
    );
    let resp = ignorable(&mut rig.peer, esp).post(d.addr, esp);
    assert_eq!(resp.status, 200, "{esp:?}, ignorable: {}", resp.text());
    assert_eq!(resp.json()["applied"], 0, "{}", resp.text());

    assert_eq!(
        feedback(d.addr, ""),
        Vec::<Value>::new(),
        "refused requests store nothing"
    );
    assert_eq!(suppressions(d.addr), Vec::<Value>::new());
    for kind in ["email.bounced", "email.complained"] {
        assert!(
            list_all(d.addr, &format!("type={kind}"), &[]).is_empty(),
            "{kind}"
        );
    }
    assert_eq!(email(d.addr, gone.herald_id())["status"], "sent");

    // The bounce on the private listener, the complaint on the public one.
    let resp = hook(&mut rig.peer, esp, Report::HardBounce, &gone, &bounce_id).post(d.addr, esp);
    assert_applied(&resp, 1, 0);
    let resp = hook(&mut rig.peer, esp, Report::Complaint, &angry, &complaint_id).post(public, esp);
    assert_applied(&resp, 1, 0);

    let bounced = check_applied(
        &d,
        esp,
        &gone,
        &bounce_id,
        "hard_bounce",
        "email.bounced",
        "hard_bounce",
    );
    assert_eq!(bounced["data"]["bounce_type"], "hard", "{bounced}");
    assert_eq!(email(d.addr, gone.herald_id())["status"], "bounced");
    check_applied(
        &d,
        esp,
        &angry,
        &complaint_id,
        "complaint",
        "email.complained",
        "complaint",
    );

    let rows = feedback(d.addr, "");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for target in [&gone, &angry] {
        let resp = post_json(d.addr, "/v1/emails", &message(&target.to));
        assert_refused(&resp, 422, "recipient_suppressed", &target.to);
    }
}

/// Checks everything one applied event about `t` leaves behind; returns
/// its `email.*` event.
fn check_applied(
    d: &Daemon,
    esp: Esp,
    t: &Target,
    id: &str,
    kind: &str,
    event_type: &str,
    reason: &str,
) -> Value {
    let herald_id = t.herald_id();
    let context = format!("{esp:?} {kind} about {}", t.to);

    let suppression =
        suppression_of(d.addr, &t.to).unwrap_or_else(|| panic!("{context}: not suppressed"));
    assert_eq!(suppression["reason"], reason, "{context}: {suppression}");
    assert_eq!(
        suppression["stream"],
        Value::Null,
        "{context}: every stream: {suppression}"
    );

    let rows = feedback(d.addr, &format!("address={}", t.to));
    assert_eq!(rows.len(), 1, "{context}: {rows:?}");
    let row = &rows[0];
    assert!(s(&row["id"]).starts_with("fb_"), "{context}: {row}");
    assert_eq!(row["provider"], esp.name(), "{context}: {row}");
    assert_eq!(
        row["event_id"],
        stored_event_id(esp, id, &t.to),
        "{context}: {row}"
    );
    assert_eq!(row["kind"], kind, "{context}: {row}");
    assert_eq!(row["address"], t.to.as_str(), "{context}: {row}");
    assert_eq!(row["matched"], true, "{context}: {row}");
    assert_eq!(row["message_id"], herald_id, "{context}: {row}");
    assert_eq!(row["stream"], "transactional", "{context}: {row}");
    assert!(row["received_at"].is_string(), "{context}: {row}");

    let timeline = email(d.addr, herald_id);
    let entries = timeline["feedback"]
        .as_array()
        .unwrap_or_else(|| panic!("{context}: no feedback in {timeline}"));
    assert_eq!(entries.len(), 1, "{context}: {timeline}");
    assert_eq!(entries[0]["provider"], esp.name(), "{context}: {timeline}");
    assert_eq!(entries[0]["kind"], kind, "{context}: {timeline}");
    assert!(
        !entries[0]["raw"].is_null(),
        "{context}: the raw event is kept: {timeline}"
    );

    let events: Vec<Value> = events_to(d.addr, event_type, &t.to);
    assert_eq!(events.len(), 1, "{context}: {events:?}");
    let event = events.into_iter().next().expect("one event");
    let data = &event["data"];
    assert_eq!(data["source"], "esp", "{context}: {event}");
    assert_eq!(data["provider"], esp.name(), "{context}: {event}");
    assert_eq!(data["message_id"], herald_id, "{context}: {event}");
    assert_eq!(data["stream"], "transactional", "{context}: {event}");
    event
}
