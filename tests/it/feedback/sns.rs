//! SNS's own protocol around SES events: subscriptions confirmed only for
//! allowed topics, and signing certificates fetched only over HTTPS from
//! allowed hosts. The peer records every request Herald makes to it, so
//! "never fetched" is observed, not assumed.

use serde_json::{json, Value};

use super::fixtures::{ses_message, sns_envelope, sns_signed, Report};
use super::*;

fn ses_only(rig: &Rig) -> Daemon {
    Daemon::start(&rig.peer.config(&rig.pki, &[Esp::Ses]))
}

/// A SubscriptionConfirmation for `topic` whose SubscribeURL is on `base`.
fn confirmation(rig: &mut Rig, topic: &str, base: &str, token: &str, n: u64) -> Hook {
    let envelope = json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": event_id(Esp::Ses, n),
        "Token": token,
        "TopicArn": topic,
        "Message": format!(
            "You have chosen to subscribe to the topic {topic}.\nTo confirm the subscription, \
             visit the SubscribeURL included in this message."
        ),
        "SubscribeURL": format!("{base}?Action=ConfirmSubscription&TopicArn={topic}&Token={token}"),
        "Timestamp": rfc3339(unix_now()),
    });
    sns_signed(&mut rig.peer, envelope, "1")
}

#[test]
fn a_subscription_is_confirmed_for_an_allowed_topic_only() {
    let mut rig = Rig::start();
    let d = ses_only(&rig);
    let confirm_url = rig.peer.confirm_url.clone();

    let other = confirmation(&mut rig, OTHER_TOPIC, &confirm_url, "token-other-topic", 1);
    assert_refused(
        &other.post(d.addr, Esp::Ses),
        401,
        "unauthenticated",
        "another topic",
    );

    // An allowed topic, but a confirmation URL on a host not allowed.
    let elsewhere = format!("https://127.0.0.1:{}/sns/confirm", rig.peer.port);
    let resp =
        confirmation(&mut rig, TOPIC, &elsewhere, "token-other-host", 2).post(d.addr, Esp::Ses);
    assert!(
        (400..500).contains(&resp.status),
        "a SubscribeURL off the allowed hosts: {} {}",
        resp.status,
        resp.text()
    );

    let ours = confirmation(&mut rig, TOPIC, &confirm_url, "token-ours", 3);
    let resp = ours.post(d.addr, Esp::Ses);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["confirmed"], true, "{}", resp.text());

    let mut seen = Vec::new();
    let confirmed = wait_until(deadline(SETTLE), || {
        seen = rig.peer.confirmations();
        seen.iter().any(|t| t == "token-ours")
    });
    assert!(confirmed, "the SubscribeURL was never fetched: {seen:?}");
    // The refused ones came first: had they been fetched, they would be here.
    assert_eq!(seen, ["token-ours"], "{:?}", rig.peer.requests());
    assert!(feedback(d.addr, "").is_empty());
}

#[test]
fn signing_certificates_are_fetched_only_over_https_from_allowed_hosts() {
    let mut rig = Rig::start();
    let d = ses_only(&rig);
    let port = rig.peer.port;
    let stranger = Target::stranger("someone@example.org");
    let message = ses_message(Report::Complaint, &stranger);

    let signed_with_cert = |rig: &mut Rig, n: u64, cert_url: &str| {
        let mut envelope = sns_envelope(&rig.peer, &message, &event_id(Esp::Ses, n), unix_now());
        envelope["SigningCertURL"] = json!(cert_url);
        sns_signed(&mut rig.peer, envelope, "2")
    };
    for (n, what, url) in [
        (
            1,
            "a host not allowed",
            format!("https://127.0.0.1:{port}/sns/other-host.pem"),
        ),
        (
            2,
            "plain HTTP",
            format!("http://localhost:{port}/sns/plain-http.pem"),
        ),
        (3, "not a URL", "localhost/sns/cert.pem".to_owned()),
    ] {
        let resp = signed_with_cert(&mut rig, n, &url).post(d.addr, Esp::Ses);
        assert_refused(&resp, 401, "unauthenticated", what);
    }
    assert!(feedback(d.addr, "").is_empty());
    assert!(suppressions(d.addr).is_empty());

    // The same notification with the allowed certificate is applied.
    let good_url = rig.peer.cert_url.clone();
    let resp = signed_with_cert(&mut rig, 4, &good_url).post(d.addr, Esp::Ses);
    assert_applied(&resp, 1, 0);
    assert_eq!(
        suppression_of(d.addr, &stranger.to).map(|s| s["reason"].clone()),
        Some(Value::from("complaint"))
    );
    let requests = rig.peer.requests();
    assert!(
        requests.iter().any(|p| p == "/sns/cert.pem"),
        "the allowed certificate was fetched: {requests:?}"
    );
    assert!(
        !requests.iter().any(|p| p.contains("other-host")),
        "a certificate on a host not allowed was fetched: {requests:?}"
    );
}
