//! Every normalised kind, each through real provider routes and about a
//! message Herald relayed: what it changes (suppressions, the message's
//! status and flag, the stream's health, a queued copy) and what it must
//! leave alone, beside the `email.*` event and the message's timeline.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::fixtures::{
    hook, mailgun, mailgun_event, postmark, postmark_record, resend, resend_event, sendgrid,
    sendgrid_event, ses_message, sns_notification, Report,
};
use super::*;

/// The kinds the providers' own words map to, beyond bounces and complaints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Delivered,
    Opened,
    Clicked,
    Deferred,
    EspSuppressed,
    PolicyBlock,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Delivered => "delivered",
            Kind::Opened => "opened",
            Kind::Clicked => "clicked",
            Kind::Deferred => "deferred",
            Kind::EspSuppressed => "esp_suppressed",
            Kind::PolicyBlock => "policy_block",
        }
    }

    fn event_type(self) -> &'static str {
        match self {
            Kind::Delivered => "email.delivered",
            Kind::Opened => "email.opened",
            Kind::Clicked => "email.clicked",
            Kind::Deferred => "email.deferred",
            Kind::EspSuppressed | Kind::PolicyBlock => "email.failed",
        }
    }
}

/// Where a click leads, as the providers quote it.
const LINK: &str = "https://example.com/orders/1042";

/// `esp`'s request reporting `kind` about `t`; `None` where the provider
/// has no such event (Mailgun and Postmark report no delays, only
/// temporary failures; only SES and Postmark report a policy block).
fn kind_hook(peer: &mut EspPeer, esp: Esp, kind: Kind, t: &Target, id: &str) -> Option<Hook> {
    let now = unix_now();
    if kind == Kind::Delivered {
        return Some(hook(peer, esp, Report::Delivered(now), t, id));
    }
    let hook = match esp {
        Esp::Ses => {
            let (event_type, field, body) = match kind {
                Kind::Opened => (
                    "Open",
                    "open",
                    json!({"timestamp": rfc3339(now), "ipAddress": "192.0.2.1",
                           "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"}),
                ),
                Kind::Clicked => (
                    "Click",
                    "click",
                    json!({"timestamp": rfc3339(now), "ipAddress": "192.0.2.1", "link": LINK,
                           "linkTags": {"campaign": ["receipts"]},
                           "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"}),
                ),
                Kind::Deferred => (
                    "DeliveryDelay",
                    "deliveryDelay",
                    json!({"timestamp": rfc3339(now), "delayType": "TransientCommunicationFailure",
                           "expirationTime": rfc3339(now + 86_400),
                           "delayedRecipients": [{"emailAddress": t.to, "status": "4.4.1",
                               "diagnosticCode": "smtp; 421 4.4.1 Unable to connect to the server"}]}),
                ),
                Kind::EspSuppressed => (
                    "Bounce",
                    "bounce",
                    json!({"feedbackId": "0100018c5f9e3c4d-suppressed-000000",
                           "bounceType": "Permanent", "bounceSubType": "OnAccountSuppressionList",
                           "bouncedRecipients": [{"emailAddress": t.to, "action": "failed",
                               "status": "5.1.1",
                               "diagnosticCode": "Amazon SES did not send the message to this address because it is on the suppression list for your account."}],
                           "timestamp": rfc3339(now),
                           "reportingMTA": "dns; amazonses.com"}),
                ),
                Kind::PolicyBlock => ("Reject", "reject", json!({"reason": "Bad content"})),
                Kind::Delivered => unreachable!("handled above"),
            };
            // The bounce shape carries the message's tags; swap its event.
            let mut message = ses_message(Report::HardBounce, t);
            let fields = message.as_object_mut().expect("an SES event");
            fields.remove("bounce");
            fields.insert("eventType".into(), json!(event_type));
            fields.insert(field.into(), body);
            sns_notification(peer, &message, id, "2", now)
        }
        Esp::Sendgrid => {
            let mut event = sendgrid_event(Report::Delivered(now), t, id);
            event.as_object_mut().expect("an event").remove("response");
            match kind {
                Kind::Opened => {
                    event["event"] = json!("open");
                    event["sg_machine_open"] = json!(false);
                    event["useragent"] = json!("Mozilla/5.0 (Windows NT 10.0; Win64; x64)");
                    event["ip"] = json!("192.0.2.1");
                }
                Kind::Clicked => {
                    event["event"] = json!("click");
                    event["url"] = json!(LINK);
                    event["url_offset"] = json!({"index": 0, "type": "html"});
                }
                Kind::Deferred => {
                    event["event"] = json!("deferred");
                    event["response"] = json!("421 4.7.0 Try again later");
                    event["attempt"] = json!("2");
                }
                Kind::EspSuppressed => {
                    event["event"] = json!("dropped");
                    event["reason"] = json!("Bounced Address");
                    event["status"] = json!("5.0.0");
                }
                Kind::PolicyBlock => return None,
                Kind::Delivered => unreachable!("handled above"),
            }
            sendgrid(peer, &json!([event]).to_string(), now)
        }
        Esp::Postmark => {
            let mut metadata = json!({});
            if let Some(herald_id) = &t.herald_id {
                metadata["herald-id"] = json!(herald_id);
            }
            let common = json!({
                "MessageStream": "outbound",
                "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
                "Metadata": metadata,
                "Recipient": t.to,
                "Tag": "receipts",
            });
            let mut record = match kind {
                Kind::Opened => json!({
                    "RecordType": "Open",
                    "FirstOpen": true,
                    "Client": {"Name": "Chrome 120", "Company": "Google", "Family": "Chrome"},
                    "OS": {"Name": "Windows 10", "Company": "Microsoft", "Family": "Windows"},
                    "Platform": "Desktop",
                    "UserAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
                    "ReadSeconds": 5,
                    "ReceivedAt": rfc3339(now),
                }),
                Kind::Clicked => json!({
                    "RecordType": "Click",
                    "ClickLocation": "HTML",
                    "Platform": "Desktop",
                    "OriginalLink": LINK,
                    "UserAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
                    "ReceivedAt": rfc3339(now),
                }),
                Kind::EspSuppressed => json!({
                    "RecordType": "SubscriptionChange",
                    "ServerID": 23,
                    "ChangedAt": rfc3339(now),
                    "Origin": "Recipient",
                    "SuppressSending": true,
                    "SuppressionReason": "HardBounce",
                }),
                Kind::PolicyBlock => {
                    let mut record = postmark_record(Report::HardBounce, t, id);
                    record["Type"] = json!("Blocked");
                    record["TypeCode"] = json!(100006);
                    record["Name"] = json!("ISP block");
                    record["Description"] = json!("The ISP blocked the message as spam.");
                    record["Details"] =
                        json!("smtp;554 5.7.1 Message rejected due to content policy");
                    record["Inactive"] = json!(false);
                    return Some(postmark(&record));
                }
                Kind::Deferred => return None,
                Kind::Delivered => unreachable!("handled above"),
            };
            record
                .as_object_mut()
                .expect("a record")
                .extend(common.as_object().expect("fields").clone());
            postmark(&record)
        }
        Esp::Mailgun => {
            let mut event = mailgun_event(Report::Delivered(now), t, id);
            event
                .as_object_mut()
                .expect("an event")
                .remove("delivery-status");
            event["log-level"] = json!("info");
            match kind {
                Kind::Opened => {
                    event["event"] = json!("opened");
                    event["ip"] = json!("192.0.2.1");
                    event["client-info"] = json!({"client-type": "browser", "device-type": "desktop",
                                                  "user-agent": "Mozilla/5.0"});
                }
                Kind::Clicked => {
                    event["event"] = json!("clicked");
                    event["url"] = json!(LINK);
                    event["ip"] = json!("192.0.2.1");
                }
                Kind::EspSuppressed => {
                    event["event"] = json!("failed");
                    event["log-level"] = json!("error");
                    event["severity"] = json!("permanent");
                    event["reason"] = json!("suppress-bounce");
                    event["delivery-status"] = json!({
                        "attempt-no": 1, "code": 605, "description": "",
                        "message": "Not delivering to previously bounced address",
                    });
                }
                Kind::Deferred | Kind::PolicyBlock => return None,
                Kind::Delivered => unreachable!("handled above"),
            }
            mailgun(peer, &event, now, None)
        }
        Esp::Resend => {
            let mut event = resend_event(Report::Delivered(now), t);
            match kind {
                Kind::Opened => event["type"] = json!("email.opened"),
                Kind::Clicked => {
                    event["type"] = json!("email.clicked");
                    event["data"]["click"] = json!({"ipAddress": "192.0.2.1", "link": LINK,
                        "timestamp": rfc3339(now), "userAgent": "Mozilla/5.0"});
                }
                Kind::Deferred => event["type"] = json!("email.delivery_delayed"),
                Kind::EspSuppressed => {
                    event["type"] = json!("email.bounced");
                    event["data"]["bounce"] = json!({
                        "message": "Resend has suppressed sending to this address because it is on the account-level suppression list.",
                        "subType": "Suppressed",
                        "type": "Permanent",
                    });
                }
                Kind::PolicyBlock => return None,
                Kind::Delivered => unreachable!("handled above"),
            }
            resend(peer, &event, id, now)
        }
    };
    Some(hook)
}

/// All five providers, each relaying on a stream named after it.
fn every_provider(rig: &Rig) -> Daemon {
    let lines: Vec<(Esp, String)> = Esp::ALL.iter().map(|e| (*e, esp_line(*e))).collect();
    let streams: Vec<(&str, &str)> = lines
        .iter()
        .map(|(esp, line)| (esp.name(), line.as_str()))
        .collect();
    Daemon::start(&format!(
        "{}{}",
        rig.peer.config(&rig.pki, &Esp::ALL),
        mail_config(&rig.sink, &streams)
    ))
}

/// Events of `kind` about `t` from `esp`.
fn esp_events(addr: SocketAddr, kind: Kind, esp: Esp, t: &Target) -> Vec<Value> {
    events_to(addr, kind.event_type(), &t.to)
        .into_iter()
        .filter(|e| e["data"]["provider"] == esp.name())
        .collect()
}

/// The one event `esp` caused about `t`, checked for what every feedback
/// event carries.
fn the_event(addr: SocketAddr, kind: Kind, esp: Esp, t: &Target) -> Value {
    let events = esp_events(addr, kind, esp, t);
    let context = format!("{esp:?} {} about {}", kind.name(), t.to);
    assert_eq!(events.len(), 1, "{context}: {events:?}");
    let event = events.into_iter().next().expect("one event");
    let data = &event["data"];
    assert_eq!(data["source"], "esp", "{context}: {event}");
    assert_eq!(data["provider"], esp.name(), "{context}: {event}");
    assert_eq!(data["message_id"], t.herald_id(), "{context}: {event}");
    assert_eq!(data["stream"], esp.name(), "{context}: {event}");
    assert!(
        s(&data["feedback_id"]).starts_with("fb_"),
        "{context}: {event}"
    );
    event
}

/// The kinds on a message's timeline, in the order they arrived.
fn timeline_kinds(addr: SocketAddr, t: &Target) -> Vec<String> {
    let e = email(addr, t.herald_id());
    let entries = e["feedback"]
        .as_array()
        .unwrap_or_else(|| panic!("no feedback in {e}"));
    for entry in entries {
        assert!(!entry["raw"].is_null(), "the raw event is kept: {e}");
        assert!(entry["received_at"].is_string(), "{e}");
    }
    entries.iter().map(|f| s(&f["kind"]).to_owned()).collect()
}

#[test]
fn delivered_opened_clicked_and_deferred_are_recorded_and_suppress_nothing() {
    let mut rig = Rig::start();
    let d = every_provider(&rig);
    let targets: Vec<(Esp, Target)> = Esp::ALL
        .iter()
        .map(|esp| {
            let to = format!("{}-reader@example.net", esp.name());
            (*esp, relay_one(d.addr, &rig.sink, esp.name(), &to))
        })
        .collect();

    let kinds = [Kind::Delivered, Kind::Opened, Kind::Clicked, Kind::Deferred];
    let mut n = 0;
    let mut expected: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (esp, t) in &targets {
        for kind in kinds {
            n += 1;
            let id = event_id(*esp, n);
            let Some(request) = kind_hook(&mut rig.peer, *esp, kind, t, &id) else {
                continue;
            };
            let resp = request.post(d.addr, *esp);
            assert_applied(&resp, 1, 0);
            expected
                .entry(esp.name())
                .or_default()
                .push(kind.name().to_owned());
        }
    }
    // Every provider reports deliveries, opens and clicks; three of them
    // delays as well.
    assert_eq!(expected.values().map(Vec::len).sum::<usize>(), 18);

    for (esp, t) in &targets {
        let want = &expected[esp.name()];
        assert_eq!(&timeline_kinds(d.addr, t), want, "{esp:?}");
        for kind in kinds {
            if !want.iter().any(|k| k == kind.name()) {
                assert!(esp_events(d.addr, kind, *esp, t).is_empty(), "{esp:?}");
                continue;
            }
            let event = the_event(d.addr, kind, *esp, t);
            if kind == Kind::Clicked {
                let detail = s(&event["data"]["detail"]);
                assert!(detail.contains(LINK), "{esp:?} click: {event}");
            }
        }
        let e = email(d.addr, t.herald_id());
        assert_eq!(e["status"], "sent", "{esp:?}: {e}");
        assert_eq!(e["flagged"], false, "{esp:?}: {e}");
        // Still a good address: more mail to it is accepted.
        send(d.addr, esp.name(), &t.to);
    }
    for kind in kinds {
        let rows = feedback(d.addr, &format!("kind={}", kind.name()));
        let want = expected
            .values()
            .filter(|kinds| kinds.iter().any(|k| k == kind.name()))
            .count();
        assert_eq!(rows.len(), want, "{}: {rows:?}", kind.name());
        assert!(rows.iter().all(|r| r["matched"] == true), "{rows:?}");
    }
    assert_eq!(suppressions(d.addr), Vec::<Value>::new());
    for kind in ["email.bounced", "email.complained", "email.failed"] {
        assert!(
            list_all(d.addr, &format!("type={kind}"), &[]).is_empty(),
            "{kind}"
        );
    }
}

#[test]
fn an_esp_suppressed_drop_suppresses_the_address_and_fails_the_message() {
    let mut rig = Rig::start();
    let d = every_provider(&rig);
    for (n, esp) in Esp::ALL.into_iter().enumerate() {
        let to = format!("{}-dropped@example.net", esp.name());
        let t = relay_one(d.addr, &rig.sink, esp.name(), &to);
        let id = event_id(esp, n as u64 + 1);
        let request = kind_hook(&mut rig.peer, esp, Kind::EspSuppressed, &t, &id)
            .expect("every provider reports its own suppressions");
        assert_applied(&request.post(d.addr, esp), 1, 0);

        let suppression = suppression_of(d.addr, &to)
            .unwrap_or_else(|| panic!("{esp:?}: {to} is not suppressed"));
        assert_eq!(suppression["reason"], "esp_suppressed", "{suppression}");
        assert_eq!(suppression["stream"], Value::Null, "{suppression}");
        let detail = suppression["detail"].as_str().unwrap_or_default();
        assert!(
            !detail.is_empty(),
            "{esp:?}: the ESP's reason is kept: {suppression}"
        );
        let words = match esp {
            Esp::Ses => "OnAccountSuppressionList",
            Esp::Sendgrid => "Bounced Address",
            Esp::Postmark => "HardBounce",
            Esp::Mailgun => "suppress-bounce",
            Esp::Resend => "Suppressed",
        };
        assert!(detail.contains(words), "{esp:?}: {suppression}");

        let e = email(d.addr, t.herald_id());
        assert_eq!(e["status"], "failed", "{esp:?}: {e}");
        assert_eq!(timeline_kinds(d.addr, &t), ["esp_suppressed"], "{esp:?}");
        let event = the_event(d.addr, Kind::EspSuppressed, esp, &t);
        assert_eq!(event["data"]["reason"], "esp_suppressed", "{event}");
        assert!(events_to(d.addr, "email.bounced", &to).is_empty());

        let mut again = message(&to);
        again["stream"] = json!(esp.name());
        let resp = post_json(d.addr, "/v1/emails", &again);
        assert_refused(&resp, 422, "recipient_suppressed", &to);
    }
    assert_eq!(suppressions(d.addr).len(), Esp::ALL.len());
    assert_eq!(
        feedback(d.addr, "kind=esp_suppressed").len(),
        Esp::ALL.len()
    );
}

#[test]
fn a_policy_block_flags_and_fails_the_message_and_keeps_the_address() {
    let mut rig = Rig::start();
    let d = every_provider(&rig);
    for (n, esp) in [Esp::Ses, Esp::Postmark].into_iter().enumerate() {
        let to = format!("{}-blocked@example.net", esp.name());
        let t = relay_one(d.addr, &rig.sink, esp.name(), &to);
        let id = event_id(esp, n as u64 + 1);
        let request = kind_hook(&mut rig.peer, esp, Kind::PolicyBlock, &t, &id)
            .expect("a policy block fixture");
        assert_applied(&request.post(d.addr, esp), 1, 0);

        let e = email(d.addr, t.herald_id());
        assert_eq!(e["status"], "failed", "{esp:?}: {e}");
        assert_eq!(e["flagged"], true, "{esp:?}: {e}");
        assert_eq!(timeline_kinds(d.addr, &t), ["policy_block"], "{esp:?}");
        let event = the_event(d.addr, Kind::PolicyBlock, esp, &t);
        assert_eq!(event["data"]["reason"], "policy_block", "{event}");
        assert_eq!(event["data"]["flagged"], true, "{event}");

        let warned = d.logs().iter().any(|line| {
            serde_json::from_str::<Value>(line).is_ok_and(|v| {
                v["level"]
                    .as_str()
                    .is_some_and(|l| l.eq_ignore_ascii_case("warn"))
                    && line.contains(t.herald_id())
            })
        });
        assert!(
            warned,
            "{esp:?}: no warning naming {} in the log:\n{}",
            t.herald_id(),
            d.logs().join("\n")
        );

        // The block is about the sender, not the mailbox: it stays mailable.
        assert!(suppression_of(d.addr, &to).is_none(), "{esp:?}");
        let again = send(d.addr, esp.name(), &to);
        wait_status(d.addr, &again, "sent");
    }
    assert_eq!(suppressions(d.addr), Vec::<Value>::new());
}

#[test]
fn a_complaint_fails_a_queued_copy_to_the_same_address_unsent() {
    let mut rig = Rig::start();
    let esp = Esp::Postmark;
    let d = Daemon::start(&format!(
        "{}{}",
        rig.peer.config(&rig.pki, &[esp]),
        mail_config(
            &rig.sink,
            &[("transactional", &esp_line(esp)), ("news", &esp_line(esp))]
        )
    ));
    let to = "angry@example.net";
    let first = relay_one(d.addr, &rig.sink, "transactional", to);

    let resp = request(d.addr, "POST", "/v1/streams/news/pause", &[], b"");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let held = send(d.addr, "news", to);
    // The workers send other mail meanwhile: the held copy only waits.
    relay_one(d.addr, &rig.sink, "transactional", "barrier@example.net");
    assert_eq!(email(d.addr, &held)["status"], "queued");

    let complaint = hook(
        &mut rig.peer,
        esp,
        Report::Complaint,
        &first,
        &event_id(esp, 1),
    );
    assert_applied(&complaint.post(d.addr, esp), 1, 0);
    assert_eq!(
        suppression_of(d.addr, to).map(|s| s["reason"].clone()),
        Some(json!("complaint"))
    );

    let resp = request(d.addr, "POST", "/v1/streams/news/resume", &[], b"");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let e = wait_status(d.addr, &held, "failed");
    assert_eq!(e["attempt_count"], 0, "never attempted: {e}");
    let failed: Vec<Value> = events_to(d.addr, "email.failed", to)
        .into_iter()
        .filter(|e| e["data"]["message_id"] == held.as_str())
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["data"]["reason"], "suppressed", "{failed:?}");
    assert_eq!(failed[0]["data"]["suppression"], "complaint", "{failed:?}");

    let copies: Vec<String> = rig
        .sink
        .received()
        .iter()
        .filter(|m| m.rcpt_tos.iter().any(|r| r == to))
        .filter_map(|m| m.header("X-Herald-Id").map(str::to_owned))
        .collect();
    assert_eq!(copies, [first.herald_id()], "only the first copy was sent");
    assert_eq!(email(d.addr, first.herald_id())["status"], "sent");
}

#[test]
fn an_esp_hard_bounce_counts_in_its_streams_health() {
    let mut rig = Rig::start();
    let esp = Esp::Sendgrid;
    let d = Daemon::start(&format!(
        "{}{}",
        rig.peer.config(&rig.pki, &[esp]),
        mail_config(
            &rig.sink,
            &[("news", &esp_line(esp)), ("transactional", &esp_line(esp))]
        )
    ));
    let gone = relay_one(d.addr, &rig.sink, "news", "gone@example.net");
    relay_one(d.addr, &rig.sink, "news", "fine@example.net");
    relay_one(d.addr, &rig.sink, "transactional", "other@example.net");

    let bounce = hook(
        &mut rig.peer,
        esp,
        Report::HardBounce,
        &gone,
        &event_id(esp, 1),
    );
    assert_applied(&bounce.post(d.addr, esp), 1, 0);
    // About no message of ours: it counts against no stream.
    let stranger = Target::stranger("stranger@example.net");
    let bounce = hook(
        &mut rig.peer,
        esp,
        Report::HardBounce,
        &stranger,
        &event_id(esp, 2),
    );
    assert_applied(&bounce.post(d.addr, esp), 1, 0);
    assert_eq!(email(d.addr, gone.herald_id())["status"], "bounced");

    let resp = get(d.addr, "/v1/streams/news/health");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let news = resp.json();
    for window in ["window_24h", "window_last_1000"] {
        let w = &news[window];
        assert_eq!(w["sent"], 2, "{window}: {news}");
        assert_eq!(w["hard_bounces"], 1, "{window}: {news}");
        assert_eq!(w["complaints"], 0, "{window}: {news}");
        let rate = w["bounce_rate"].as_f64().expect("a rate");
        assert!((rate - 0.5).abs() < 1e-9, "{window}: {news}");
    }
    // Under min_sends: judged by nobody.
    assert_eq!(news["paused"], false, "{news}");

    let resp = get(d.addr, "/v1/streams/transactional/health");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let other = resp.json();
    for window in ["window_24h", "window_last_1000"] {
        assert_eq!(other[window]["sent"], 1, "{window}: {other}");
        assert_eq!(other[window]["hard_bounces"], 0, "{window}: {other}");
    }
}
