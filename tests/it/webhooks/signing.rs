//! What arrives and how it is signed: the documented body, a fresh
//! signature on every attempt, and both secrets during a rotation.

use base64::Engine as _;
use herald::clock;
use serde_json::json;

use super::receiver::{Receiver, Reply};
use super::verifier::reference_verify;
use super::{
    create_endpoint, settled, status_codes, GOLDEN_SECRET, OTHER_SECRET, SETTLE, WEBHOOKS,
};
use crate::support::*;

/// Each signature in the header: `v1,` and the base64 of 32 bytes.
fn assert_signature_shape(header: &str) {
    assert!(!header.is_empty(), "no webhook-signature");
    for sig in header.split(' ') {
        let b64 = sig
            .strip_prefix("v1,")
            .unwrap_or_else(|| panic!("{sig:?} in {header:?} is not v1"));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|e| panic!("{sig:?} is not base64: {e}"));
        assert_eq!(raw.len(), 32, "an HMAC-SHA256 is 32 bytes: {sig:?}");
    }
}

#[test]
fn a_delivery_carries_the_documented_body_and_verifies_with_the_reference_library() {
    let receiver = Receiver::always(204);
    let d = Daemon::start(WEBHOOKS);
    let endpoint = create_endpoint(
        d.addr,
        json!({"url": receiver.url("/hook?x=1"), "headers": {"x-team": "billing"}}),
    );
    let secret = endpoint["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{endpoint}");

    let event = create(
        d.addr,
        &json!({"type": "invoice.paid", "tenant": "acme", "data": {"amount": 4200}}),
    );
    let got = receiver.wait_for_requests(1, deadline(SETTLE));
    let request = &got[0];
    assert_eq!(request.path, "/hook?x=1");
    assert_eq!(request.header("webhook-id"), event["id"]);
    assert_eq!(request.header("content-type"), "application/json");
    assert!(request.header("user-agent").starts_with("Herald/"));
    assert_eq!(request.header("x-team"), "billing");
    assert_eq!(
        request.json(),
        json!({
            "id": event["id"], "type": "invoice.paid", "source": "api", "version": 1, "data_version": 1, "seq": event["seq"],
            "timestamp": event["occurred_at"], "tenant": "acme", "data": {"amount": 4200},
        })
    );
    assert!(reference_verify(secret, request).is_ok());
    let wrong = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert!(
        reference_verify(wrong, request).is_err(),
        "a wrong secret must not verify"
    );

    let list = settled(d.addr, event["id"].as_str().unwrap(), 1);
    assert_eq!(list[0]["status"], "succeeded");
    assert_eq!(list[0]["attempts"][0]["status_code"], 204);
    assert_eq!(list[0]["endpoint_id"], endpoint["id"]);
}

#[test]
fn a_supplied_secret_signs_every_attempt_afresh() {
    let receiver = Receiver::sequence(
        vec![Reply::status(500), Reply::status(503)],
        Reply::status(200),
    );
    let d = Daemon::start(WEBHOOKS);
    create_endpoint(
        d.addr,
        json!({"url": receiver.url("/in"), "secret": GOLDEN_SECRET, "headers": {"x-tag": "t1"}}),
    );
    let event = create(
        d.addr,
        &json!({"type": "user.created", "data": {"name": "Zoë", "n": [1, 2]}}),
    );
    let list = settled(d.addr, s(&event["id"]), 1);
    assert_eq!(list[0]["status"], "succeeded", "{list:?}");
    assert_eq!(status_codes(&list[0]), [500, 503, 200]);

    let got = receiver.requests();
    assert_eq!(got.len(), 3, "one request per attempt");
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/in");
        assert_eq!(r.header("webhook-id"), s(&event["id"]), "attempt {i}");
        assert_eq!(r.header("x-tag"), "t1");
        assert_eq!(r.body, got[0].body, "the body is the same on every retry");
        let ts: i64 = r
            .header("webhook-timestamp")
            .parse()
            .unwrap_or_else(|_| panic!("webhook-timestamp {:?}", r.header("webhook-timestamp")));
        let now = clock::now_ms().div_euclid(1000);
        assert!(
            (ts - now).abs() <= 300,
            "attempt {i} is stamped {ts}, now is {now}"
        );
        assert_signature_shape(r.header("webhook-signature"));
        assert_eq!(
            r.header("webhook-signature").split(' ').count(),
            1,
            "no rotation, one signature"
        );
        if let Err(e) = reference_verify(GOLDEN_SECRET, r) {
            panic!("attempt {i} does not verify: {e}");
        }
        assert!(
            reference_verify(OTHER_SECRET, r).is_err(),
            "attempt {i} verifies with a wrong secret"
        );
    }
    let body = got[0].json();
    assert_eq!(body["data"], json!({"name": "Zoë", "n": [1, 2]}));
    assert_eq!(body["id"], event["id"]);
}

#[test]
fn rotation_signs_with_both_secrets_until_the_old_ones_grace_ends() {
    let receiver = Receiver::always(200);
    let d = Daemon::start(WEBHOOKS);
    let ep = create_endpoint(
        d.addr,
        json!({"url": receiver.url("/"), "secret": GOLDEN_SECRET}),
    );
    let rotate = |grace_secs: u64| {
        post_json(
            d.addr,
            &format!("/v1/endpoints/{}/rotate-secret", s(&ep["id"])),
            &json!({ "grace_secs": grace_secs }),
        )
    };
    let rotated = rotate(3600);
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let rotated = rotated.json();
    let new = s(&rotated["secret"]).to_owned();
    assert!(
        new.starts_with("whsec_") && new != GOLDEN_SECRET,
        "{rotated}"
    );
    assert_eq!(rotated["id"], ep["id"]);
    assert_eq!(
        get(d.addr, &format!("/v1/endpoints/{}/secret", s(&ep["id"]))).json()["secret"],
        new.as_str()
    );

    create(d.addr, &json!({"type": "a"}));
    let got = receiver.wait_for_requests(1, deadline(SETTLE));
    let header = got[0].header("webhook-signature");
    assert_signature_shape(header);
    assert_eq!(header.split(' ').count(), 2, "{header}");
    reference_verify(&new, &got[0]).expect("the new secret verifies");
    reference_verify(GOLDEN_SECRET, &got[0]).expect("the old secret verifies");
    assert!(reference_verify(OTHER_SECRET, &got[0]).is_err());

    // Without a grace period the secret it replaces stops signing at once.
    let newest = s(&rotate(0).json()["secret"]).to_owned();
    create(d.addr, &json!({"type": "a"}));
    let got = receiver.wait_for_requests(2, deadline(SETTLE));
    assert!(reference_verify(&newest, &got[1]).is_ok());
    assert!(reference_verify(&new, &got[1]).is_err());
    // The first rotation's grace period is still running.
    assert!(reference_verify(GOLDEN_SECRET, &got[1]).is_ok());
}
