//! Where webhooks may not go: loopback, private and link-local addresses
//! in every spelling are refused by name and never contacted.

use serde_json::json;

use super::receiver::Receiver;
use super::{post_empty, settled};
use crate::support::*;

#[test]
fn non_public_destinations_are_refused_named_and_never_contacted() {
    let receiver = Receiver::always(200);
    let port = receiver.addr.port();
    // No allow-list: nothing on loopback, private or link-local networks.
    let d = Daemon::start("[webhooks]\nrequire_https = false\nretry_schedule = []\n");
    // (URL, what the error must name; None where only the refusal matters)
    let cases = [
        (receiver.url("/"), Some("127.0.0.1")),
        (format!("http://localhost:{port}/"), Some("localhost")),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            Some("169.254.169.254"),
        ),
        (format!("http://[::ffff:127.0.0.1]:{port}/"), None),
        (format!("http://[::1]:{port}/"), None),
        (format!("http://0.0.0.0:{port}/"), None),
        (format!("http://2130706433:{port}/"), None),
        ("http://10.1.2.3/".to_owned(), Some("10.1.2.3")),
        ("http://100.64.0.1/".to_owned(), Some("100.64.0.1")),
    ];
    let mut created = Vec::new();
    for (url, named) in &cases {
        let resp = post_json(d.addr, "/v1/endpoints", &json!({"url": url}));
        match resp.status {
            201 => created.push((resp.json(), url.clone(), *named)),
            // Refusing an odd address form up front is fine too.
            422 if named.is_none() => assert_eq!(resp.json()["error"]["field"], "url"),
            _ => panic!("{url}: {} {}", resp.status, resp.text()),
        }
    }
    let event = create(d.addr, &json!({"type": "a"}));
    let list = settled(d.addr, s(&event["id"]), created.len());
    for (ep, url, named) in &created {
        let delivery = list
            .iter()
            .find(|x| x["endpoint_id"] == ep["id"])
            .unwrap_or_else(|| panic!("no delivery to {url}"));
        assert_eq!(delivery["status"], "failed", "{url}: {delivery}");
        let attempt = &delivery["attempts"][0];
        assert_eq!(attempt["status_code"], 0, "{url}: {delivery}");
        let error = s(&attempt["error"]);
        if let Some(named) = named {
            assert!(error.contains(named), "{url}: {error:?} names no {named}");
            assert!(error.contains("public"), "{url}: {error:?}");
        } else {
            assert!(!error.is_empty(), "{url}");
        }
    }
    // The test send is refused the same way.
    let (loopback, _, _) = &created[0];
    let resp = post_empty(
        d.addr,
        &format!("/v1/endpoints/{}/test", s(&loopback["id"])),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let report = resp.json();
    assert_eq!(report["status_code"], 0, "{report}");
    assert!(s(&report["error"]).contains("127.0.0.1"), "{report}");
    assert!(
        receiver.requests().is_empty(),
        "a refused destination was contacted: {:?}",
        receiver.requests()
    );
}
