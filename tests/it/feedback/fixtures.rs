//! Each provider's webhook payloads as the provider writes them (field
//! names, nesting and value shapes taken from its documentation and real
//! samples), signed by the peer; and the ways a forger would alter them.

use serde_json::{json, Value};

use super::{
    altered_signature, basic_auth, rfc3339, unix_now, Esp, EspPeer, Hook, Target,
    POSTMARK_PASSWORD, POSTMARK_USER, TOPIC,
};

/// What a fixture reports about its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    HardBounce,
    Complaint,
    /// A temporary failure at this time (Unix seconds).
    SoftBounce(i64),
    /// Delivered at this time (Unix seconds).
    Delivered(i64),
}

/// Ten minutes: twice the freshness a signed timestamp is allowed.
const STALE_SECS: i64 = 600;

/// The request `esp` sends about `target`, with `event_id` as the
/// provider's id for the event (made unique by the caller).
pub fn hook(peer: &mut EspPeer, esp: Esp, report: Report, target: &Target, event_id: &str) -> Hook {
    match esp {
        // Complaints signed as version 1 with a Subject, the rest as 2
        // without: both schemes and both strings to sign.
        Esp::Ses if report == Report::Complaint => {
            let mut envelope =
                sns_envelope(peer, &ses_message(report, target), event_id, unix_now());
            envelope["Subject"] = json!("Amazon SES Email Event Notification");
            sns_signed(peer, envelope, "1")
        }
        Esp::Ses => sns_notification(
            peer,
            &ses_message(report, target),
            event_id,
            "2",
            unix_now(),
        ),
        Esp::Sendgrid => sendgrid(
            peer,
            &json!([sendgrid_event(report, target, event_id)]).to_string(),
            unix_now(),
        ),
        Esp::Postmark => postmark(&postmark_record(report, target, event_id)),
        Esp::Mailgun => mailgun(
            peer,
            &mailgun_event(report, target, event_id),
            unix_now(),
            None,
        ),
        Esp::Resend => resend(peer, &resend_event(report, target), event_id, unix_now()),
    }
}

/// Requests that must be refused as unauthenticated, each with what was
/// done to it. The address in the body stays readable where the body
/// changes, so only authenticity can be what refuses it.
pub fn forgeries(
    peer: &mut EspPeer,
    esp: Esp,
    target: &Target,
    event_id: &str,
) -> Vec<(String, Hook)> {
    let report = Report::HardBounce;
    let good = hook(peer, esp, report, target, event_id);
    let forged_to = forged_address(&target.to);
    let mut out: Vec<(&str, Hook)> = Vec::new();
    match esp {
        Esp::Ses => {
            let message = ses_message(report, target);
            let envelope: Value = serde_json::from_slice(&good.body).expect("SNS envelope");
            let edit = |f: &dyn Fn(&mut Value)| {
                let mut e = envelope.clone();
                f(&mut e);
                sns_hook(&e)
            };
            out.push((
                "Message altered",
                good.clone().body_replaced(&target.to, &forged_to),
            ));
            out.push((
                "Signature altered",
                edit(&|e| {
                    e["Signature"] = json!(altered_signature(e["Signature"].as_str().unwrap()))
                }),
            ));
            out.push((
                "Timestamp altered",
                edit(&|e| {
                    let at = e["Timestamp"].as_str().unwrap().replace(".000Z", ".001Z");
                    e["Timestamp"] = json!(at);
                }),
            ));
            out.push((
                "SignatureVersion 2 relabelled 1",
                edit(&|e| e["SignatureVersion"] = json!("1")),
            ));
            out.push((
                "signed ten minutes ago",
                sns_notification(peer, &message, event_id, "2", unix_now() - STALE_SECS),
            ));
            out.push((
                "signed ten minutes ahead",
                sns_notification(peer, &message, event_id, "1", unix_now() + STALE_SECS),
            ));
            out.push((
                "unsigned",
                edit(&|e| {
                    e.as_object_mut().unwrap().remove("Signature");
                }),
            ));
        }
        Esp::Sendgrid => {
            let body = json!([sendgrid_event(report, target, event_id)]).to_string();
            let sig = "X-Twilio-Email-Event-Webhook-Signature";
            let ts = "X-Twilio-Email-Event-Webhook-Timestamp";
            let stamp: i64 = good.header_value(ts).parse().expect("unix seconds");
            out.push((
                "body altered",
                good.clone().body_replaced(&target.to, &forged_to),
            ));
            out.push((
                "signature altered",
                good.clone()
                    .header(sig, &altered_signature(good.header_value(sig))),
            ));
            out.push((
                "timestamp altered",
                good.clone().header(ts, &(stamp - 1).to_string()),
            ));
            out.push((
                "signed ten minutes ago",
                sendgrid(peer, &body, unix_now() - STALE_SECS),
            ));
            out.push(("no signature", good.clone().without_header(sig)));
        }
        Esp::Postmark => {
            let auth = "Authorization";
            out.push(("no credentials", good.clone().without_header(auth)));
            out.push((
                "wrong password",
                good.clone().header(
                    auth,
                    &basic_auth(POSTMARK_USER, "pm-not-the-password-at-all"),
                ),
            ));
            out.push((
                "wrong user",
                good.clone()
                    .header(auth, &basic_auth("someone-else", POSTMARK_PASSWORD)),
            ));
            out.push((
                "not basic",
                good.clone()
                    .header(auth, &format!("Bearer {POSTMARK_PASSWORD}")),
            ));
        }
        Esp::Mailgun => {
            let event = mailgun_event(report, target, event_id);
            let body: Value = serde_json::from_slice(&good.body).expect("Mailgun body");
            let edit = |f: &dyn Fn(&mut Value)| {
                let mut b = body.clone();
                f(&mut b);
                Hook::json(&b.to_string())
            };
            out.push((
                "token altered",
                edit(&|b| {
                    let token = b["signature"]["token"].as_str().unwrap().to_owned();
                    b["signature"]["token"] = json!(altered_signature(&token));
                }),
            ));
            out.push((
                "timestamp altered",
                edit(&|b| {
                    let stamp: i64 = b["signature"]["timestamp"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    b["signature"]["timestamp"] = json!((stamp - 1).to_string());
                }),
            ));
            out.push((
                "signature altered",
                edit(&|b| {
                    let sig = b["signature"]["signature"].as_str().unwrap().to_owned();
                    b["signature"]["signature"] = json!(altered_signature(&sig));
                }),
            ));
            out.push((
                "no signature",
                edit(&|b| {
                    b.as_object_mut().unwrap().remove("signature");
                }),
            ));
            out.push((
                "signed ten minutes ago",
                mailgun(peer, &event, unix_now() - STALE_SECS, None),
            ));
        }
        Esp::Resend => {
            let event = resend_event(report, target);
            let stamp: i64 = good
                .header_value("svix-timestamp")
                .parse()
                .expect("unix seconds");
            out.push((
                "body altered",
                good.clone().body_replaced(&target.to, &forged_to),
            ));
            out.push((
                "signature altered",
                good.clone().header(
                    "svix-signature",
                    &altered_signature(good.header_value("svix-signature")),
                ),
            ));
            out.push((
                "timestamp altered",
                good.clone()
                    .header("svix-timestamp", &(stamp - 1).to_string()),
            ));
            out.push((
                "id altered",
                good.clone().header("svix-id", &format!("{event_id}x")),
            ));
            out.push((
                "no signature",
                good.clone().without_header("svix-signature"),
            ));
            out.push((
                "signed ten minutes ago",
                resend(peer, &event, event_id, unix_now() - STALE_SECS),
            ));
        }
    }
    out.into_iter()
        .map(|(what, h)| (what.to_owned(), h))
        .collect()
}

/// An authentic request whose body cannot be read (or, for the schemes
/// that sign inside the body, cannot even be checked).
pub fn unreadable(peer: &mut EspPeer, esp: Esp) -> Hook {
    let garbage = "{\"this is\": not JSON at all";
    match esp {
        Esp::Ses => sns_hook_raw("this is not an SNS message"),
        Esp::Sendgrid => sendgrid(peer, garbage, unix_now()),
        Esp::Postmark => postmark_raw(garbage),
        Esp::Mailgun => Hook::json(garbage),
        Esp::Resend => resend_raw(peer, garbage, "msg_unreadable_0001", unix_now()),
    }
}

/// An authentic request about nothing Herald acts on: what providers send
/// when a webhook is set up or for events Herald does not use.
pub fn ignorable(peer: &mut EspPeer, esp: Esp) -> Hook {
    let t = Target::stranger("nobody@example.org");
    match esp {
        Esp::Ses => {
            let mut message = ses_message(Report::Delivered(unix_now()), &t);
            let fields = message.as_object_mut().unwrap();
            fields.remove("notificationType");
            fields.remove("delivery");
            message["eventType"] = json!("Send");
            message["send"] = json!({});
            sns_notification(
                peer,
                &message,
                "a6f1c7e0-2b8f-5c7d-9a1e-000000000001",
                "1",
                unix_now(),
            )
        }
        Esp::Sendgrid => {
            let mut event = sendgrid_event(Report::Delivered(unix_now()), &t, "processed-0001");
            event["event"] = json!("processed");
            sendgrid(peer, &json!([event]).to_string(), unix_now())
        }
        Esp::Postmark => {
            // An out-of-office reply is a "bounce" Postmark passes on.
            let mut record = postmark_record(Report::HardBounce, &t, "1000000001");
            record["Type"] = json!("AutoResponder");
            record["TypeCode"] = json!(16);
            record["Name"] = json!("Auto responder");
            record["Inactive"] = json!(false);
            postmark(&record)
        }
        Esp::Mailgun => {
            let mut event = mailgun_event(Report::Delivered(unix_now()), &t, "accepted-0001");
            event["event"] = json!("accepted");
            event.as_object_mut().unwrap().remove("delivery-status");
            mailgun(peer, &event, unix_now(), None)
        }
        Esp::Resend => {
            let mut event = resend_event(Report::Delivered(unix_now()), &t);
            event["type"] = json!("email.sent");
            resend(peer, &event, "msg_sent_0001", unix_now())
        }
    }
}

/// `gone@example.net` → `gond@example.net`: another readable address.
fn forged_address(to: &str) -> String {
    let (local, domain) = to.split_once('@').expect("an address");
    let mut local: Vec<char> = local.chars().collect();
    let last = local.last_mut().expect("a local part");
    *last = if *last == 'x' { 'y' } else { 'x' };
    format!("{}@{domain}", local.into_iter().collect::<String>())
}

// ---- Amazon SES through SNS ----

/// The SES event as SNS carries it in `Message`. Bounces use event
/// publishing (with the message's tags), the rest the older notification
/// shape, which names the message by its headers.
pub fn ses_message(report: Report, t: &Target) -> Value {
    let now = rfc3339(unix_now());
    let mut mail = json!({
        "timestamp": now,
        "source": "no-reply@example.com",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/example.com",
        "sourceIp": "192.0.2.10",
        "sendingAccountId": "123456789012",
        "messageId": t.queue_id.clone().unwrap_or_else(|| "0100018c5f9e1a2b-unknown-000000".to_owned()),
        "destination": [t.to],
        "headersTruncated": false,
        "commonHeaders": {
            "from": ["Acme <no-reply@example.com>"],
            "to": [t.to],
            "subject": "Your receipt",
        },
    });
    if let Some(id) = &t.message_id {
        mail["commonHeaders"]["messageId"] = json!(id);
    }
    match report {
        Report::HardBounce => {
            if let Some(id) = &t.herald_id {
                mail["tags"] = json!({"herald_id": [id], "ses:configuration-set": ["herald"]});
            }
            json!({
                "eventType": "Bounce",
                "bounce": {
                    "feedbackId": "0100018c5f9e3c4d-5e6f7a8b-feedback-000000",
                    "bounceType": "Permanent",
                    "bounceSubType": "General",
                    "bouncedRecipients": [{
                        "emailAddress": t.to,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }],
                    "timestamp": now,
                    "reportingMTA": "dns; a8-30.smtp-out.amazonses.com",
                },
                "mail": mail,
            })
        }
        Report::SoftBounce(at) => json!({
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": "Transient",
                "bounceSubType": "MailboxFull",
                "bouncedRecipients": [{"emailAddress": t.to, "status": "4.2.2",
                    "diagnosticCode": "smtp; 452 4.2.2 mailbox full"}],
                "timestamp": rfc3339(at),
                "feedbackId": "0100018c5f9e3c4d-soft-000000",
            },
            "mail": mail,
        }),
        Report::Complaint => json!({
            "notificationType": "Complaint",
            "complaint": {
                "userAgent": "ExampleCorp Feedback Loop (V0.01)",
                "complainedRecipients": [{"emailAddress": t.to}],
                "complaintFeedbackType": "abuse",
                "arrivalDate": now,
                "timestamp": now,
                "feedbackId": "0100018c5f9e3c4d-complaint-000000",
            },
            "mail": mail,
        }),
        Report::Delivered(at) => json!({
            "notificationType": "Delivery",
            "delivery": {
                "timestamp": rfc3339(at),
                "processingTimeMillis": 546,
                "recipients": [t.to],
                "smtpResponse": "250 ok:  Message 64111812 accepted",
                "reportingMTA": "a8-70.smtp-out.amazonses.com",
            },
            "mail": mail,
        }),
    }
}

/// An SNS Notification carrying `message`, signed with `version` at `at`.
pub fn sns_notification(
    peer: &mut EspPeer,
    message: &Value,
    sns_id: &str,
    version: &str,
    at: i64,
) -> Hook {
    let envelope = sns_envelope(peer, message, sns_id, at);
    sns_signed(peer, envelope, version)
}

/// An SNS Notification of `message` on the allowed topic, not yet signed.
pub fn sns_envelope(peer: &EspPeer, message: &Value, sns_id: &str, at: i64) -> Value {
    json!({
        "Type": "Notification",
        "MessageId": sns_id,
        "TopicArn": TOPIC,
        "Message": message.to_string(),
        "Timestamp": rfc3339(at),
        "UnsubscribeURL": format!(
            "https://localhost:{}/sns/unsubscribe?Action=Unsubscribe&SubscriptionArn={TOPIC}:3c5e0f4b",
            peer.port
        ),
    })
}

/// Signs `envelope` (any SNS type) as SNS does.
pub fn sns_signed(peer: &mut EspPeer, envelope: Value, version: &str) -> Hook {
    let answer = peer.call(json!({"op": "sns", "envelope": envelope, "version": version}));
    let body: Value = serde_json::from_str(answer["body"].as_str().expect("signed body"))
        .expect("the peer's envelope is JSON");
    sns_hook(&body)
}

/// An SNS POST of `envelope`, with the headers SNS adds (it says
/// text/plain, whatever the body is).
pub fn sns_hook(envelope: &Value) -> Hook {
    let mut hook = sns_hook_raw(&envelope.to_string());
    for (header, field) in [
        ("x-amz-sns-message-type", "Type"),
        ("x-amz-sns-message-id", "MessageId"),
        ("x-amz-sns-topic-arn", "TopicArn"),
    ] {
        if let Some(v) = envelope[field].as_str() {
            hook = hook.header(header, v);
        }
    }
    hook
}

fn sns_hook_raw(body: &str) -> Hook {
    Hook::json(body)
        .header("Content-Type", "text/plain; charset=UTF-8")
        .header("User-Agent", "Amazon Simple Notification Service Agent")
}

// ---- SendGrid ----

pub fn sendgrid_event(report: Report, t: &Target, sg_event_id: &str) -> Value {
    let now = unix_now();
    let mut event = json!({
        "email": t.to,
        "timestamp": now,
        "sg_event_id": sg_event_id,
        "category": ["receipts"],
    });
    if let Some(queue_id) = &t.queue_id {
        event["sg_message_id"] = json!(format!(
            "{queue_id}.filterdrecv-5645d9c87f-6r8v9-1-6578A1B2-3.0"
        ));
    }
    if let Some(id) = &t.message_id {
        event["smtp-id"] = json!(id);
    }
    match report {
        Report::HardBounce => {
            event["event"] = json!("bounce");
            event["type"] = json!("bounce");
            event["status"] = json!("5.1.1");
            event["reason"] =
                json!("550 5.1.1 The email account that you tried to reach does not exist.");
            event["bounce_classification"] = json!("Invalid Address");
        }
        Report::SoftBounce(at) => {
            event["event"] = json!("bounce");
            event["type"] = json!("blocked");
            event["timestamp"] = json!(at);
            event["status"] = json!("4.2.2");
            event["reason"] = json!("452 4.2.2 Mailbox full");
        }
        Report::Complaint => event["event"] = json!("spamreport"),
        Report::Delivered(at) => {
            event["event"] = json!("delivered");
            event["timestamp"] = json!(at);
            event["response"] = json!("250 2.0.0 OK 1702300000 d4-20020a05");
        }
    }
    // Bounces carry the message's unique_args; complaints (which arrive
    // days later through the feedback loop) are matched by the message id.
    if report != Report::Complaint {
        if let Some(id) = &t.herald_id {
            event["herald_id"] = json!(id);
        }
    }
    event
}

/// A SendGrid POST of `body`, signed for `at`.
pub fn sendgrid(peer: &mut EspPeer, body: &str, at: i64) -> Hook {
    let signed = peer.call(json!({"op": "sendgrid", "body": body, "timestamp": at.to_string()}));
    sendgrid_hook(body, &signed)
}

/// The request for a body and the peer's answer to its signing.
pub fn sendgrid_hook(body: &str, signed: &Value) -> Hook {
    Hook::json(body)
        .header("User-Agent", "SendGrid Event API")
        .header(
            "X-Twilio-Email-Event-Webhook-Signature",
            signed["signature"].as_str().expect("signature"),
        )
        .header(
            "X-Twilio-Email-Event-Webhook-Timestamp",
            signed["timestamp"].as_str().expect("timestamp"),
        )
}

// ---- Postmark ----

/// `id` is Postmark's numeric `ID` (as digits); Delivery records have none.
pub fn postmark_record(report: Report, t: &Target, id: &str) -> Value {
    let id: u64 = id.parse().expect("Postmark IDs are numbers");
    let mut metadata = json!({});
    if let Some(herald_id) = &t.herald_id {
        metadata["herald-id"] = json!(herald_id);
    }
    let message_id = "883953f4-6105-42a2-a16a-77a8eac79483";
    let now = rfc3339(unix_now());
    let bounce = |type_name: &str, code: u32, name: &str, at: &str, details: &str| {
        json!({
            "RecordType": "Bounce",
            "MessageStream": "outbound",
            "ID": id,
            "Type": type_name,
            "TypeCode": code,
            "Name": name,
            "Tag": "receipts",
            "MessageID": message_id,
            "Metadata": metadata,
            "ServerID": 23,
            "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
            "Details": details,
            "Email": t.to,
            "From": "no-reply@example.com",
            "BouncedAt": at,
            "DumpAvailable": true,
            "Inactive": type_name == "HardBounce",
            "CanActivate": true,
            "Subject": "Your receipt",
            "Content": "",
        })
    };
    match report {
        Report::HardBounce => bounce(
            "HardBounce",
            1,
            "Hard bounce",
            &now,
            "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        ),
        Report::SoftBounce(at) => bounce(
            "SoftBounce",
            4096,
            "Soft bounce",
            &rfc3339(at),
            "smtp;452 4.2.2 Mailbox full",
        ),
        Report::Complaint => json!({
            "RecordType": "SpamComplaint",
            "MessageStream": "outbound",
            "ID": id,
            "Type": "SpamComplaint",
            "TypeCode": 100001,
            "Name": "Spam complaint",
            "Tag": "receipts",
            "MessageID": message_id,
            "Metadata": metadata,
            "ServerID": 23,
            "Description": "The subscriber explicitly marked this message as spam.",
            "Details": "Test spam complaint details",
            "Email": t.to,
            "From": "no-reply@example.com",
            "BouncedAt": now,
            "DumpAvailable": true,
            "Inactive": true,
            "CanActivate": false,
            "Subject": "Your receipt",
            "Content": "",
        }),
        Report::Delivered(at) => json!({
            "RecordType": "Delivery",
            "ServerID": 23,
            "MessageStream": "outbound",
            "MessageID": message_id,
            "Recipient": t.to,
            "Tag": "receipts",
            "DeliveredAt": rfc3339(at),
            "Details": "Test delivery webhook details",
            "Metadata": metadata,
        }),
    }
}

pub fn postmark(record: &Value) -> Hook {
    postmark_raw(&record.to_string())
}

fn postmark_raw(body: &str) -> Hook {
    Hook::json(body)
        .header(
            "Authorization",
            &basic_auth(POSTMARK_USER, POSTMARK_PASSWORD),
        )
        .header("User-Agent", "Postmark")
}

// ---- Mailgun ----

pub fn mailgun_event(report: Report, t: &Target, id: &str) -> Value {
    let now = unix_now() as f64 + 0.375624;
    let mut event = json!({
        "id": id,
        "timestamp": now,
        "log-level": "error",
        "recipient": t.to,
        "recipient-domain": t.to.split_once('@').map(|(_, d)| d).unwrap_or_default(),
        "tags": [],
        "campaigns": [],
        "envelope": {"sender": "no-reply@example.com", "transport": "smtp", "targets": t.to},
        "message": {
            "headers": {
                "to": t.to,
                "from": "Acme <no-reply@example.com>",
                "subject": "Your receipt",
                "message-id": t.message_id.as_deref().unwrap_or("<unknown@example.com>").trim_matches(['<', '>']),
            },
            "attachments": [],
            "size": 1386,
        },
        "flags": {"is-routed": false, "is-authenticated": true, "is-system-test": false, "is-test-mode": false},
    });
    if let Some(herald_id) = &t.herald_id {
        event["user-variables"] = json!({"herald_id": herald_id});
    }
    match report {
        Report::HardBounce => {
            event["event"] = json!("failed");
            event["severity"] = json!("permanent");
            event["reason"] = json!("bounce");
            event["delivery-status"] = json!({
                "attempt-no": 1,
                "code": 550,
                "message": "5.1.1 The email account that you tried to reach does not exist.",
                "description": "",
                "session-seconds": 0.4,
                "enhanced-code": "5.1.1",
                "mx-host": "mx.example.net",
            });
        }
        Report::SoftBounce(at) => {
            event["event"] = json!("failed");
            event["severity"] = json!("temporary");
            event["reason"] = json!("generic");
            event["timestamp"] = json!(at as f64);
            event["delivery-status"] =
                json!({"attempt-no": 1, "code": 452, "message": "4.2.2 Mailbox full"});
        }
        Report::Complaint => {
            event["event"] = json!("complained");
            event["log-level"] = json!("warn");
        }
        Report::Delivered(at) => {
            event["event"] = json!("delivered");
            event["log-level"] = json!("info");
            event["timestamp"] = json!(at as f64);
            event["delivery-status"] = json!({"attempt-no": 1, "code": 250, "message": "OK"});
        }
    }
    event
}

/// A Mailgun POST of `event`, signed at `at` with `token` (a fresh one when
/// `None`).
pub fn mailgun(peer: &mut EspPeer, event: &Value, at: i64, token: Option<&str>) -> Hook {
    let mut command = json!({"op": "mailgun", "timestamp": at.to_string()});
    if let Some(token) = token {
        command["token"] = json!(token);
    }
    let signature = peer.call(command);
    Hook::json(&json!({"signature": signature, "event-data": event}).to_string())
        .header("User-Agent", "mailgun/treq-16.12.0")
}

// ---- Resend ----

pub fn resend_event(report: Report, t: &Target) -> Value {
    let now = rfc3339(unix_now());
    let mut data = json!({
        "created_at": now,
        "email_id": "56761188-7520-42d8-8898-ff6fc54ce618",
        "from": "Acme <no-reply@example.com>",
        "to": [t.to],
        "subject": "Your receipt",
    });
    if let Some(herald_id) = &t.herald_id {
        // Bounces quote the tags; complaints the headers.
        if report == Report::Complaint {
            data["headers"] = json!([
                {"name": "X-Herald-Id", "value": herald_id},
                {"name": "X-Entity-Ref-ID", "value": "0b1c2d3e"},
            ]);
        } else {
            data["tags"] = json!({"herald_id": herald_id, "category": "receipts"});
        }
    }
    let kind = match report {
        Report::HardBounce => {
            data["bounce"] = json!({
                "message": "The recipient's email address does not exist.",
                "subType": "General",
                "type": "Permanent",
            });
            "email.bounced"
        }
        Report::SoftBounce(at) => {
            data["created_at"] = json!(rfc3339(at));
            data["bounce"] =
                json!({"message": "Mailbox full", "subType": "MailboxFull", "type": "Transient"});
            "email.bounced"
        }
        Report::Complaint => "email.complained",
        Report::Delivered(at) => {
            data["created_at"] = json!(rfc3339(at));
            "email.delivered"
        }
    };
    json!({"type": kind, "created_at": now, "data": data})
}

pub fn resend(peer: &mut EspPeer, event: &Value, svix_id: &str, at: i64) -> Hook {
    resend_raw(peer, &event.to_string(), svix_id, at)
}

fn resend_raw(peer: &mut EspPeer, body: &str, svix_id: &str, at: i64) -> Hook {
    let signed = peer.call(json!({"op": "resend", "body": body, "id": svix_id, "timestamp": at}));
    let mut hook = Hook::json(body).header("User-Agent", "Svix-Webhooks/1.40.0");
    for name in ["svix-id", "svix-timestamp", "svix-signature"] {
        hook = hook.header(name, signed[name].as_str().expect("signed header"));
    }
    hook
}
