//! An endpoint's signing secret is shown when it is made (create, rotate)
//! and by its own route, nowhere else; custom header values, often the
//! receiver's credentials, are never shown again but still sent.

use serde_json::json;

use super::receiver::Receiver;
use super::{create_endpoint, patch, post_empty, settled, GOLDEN_SECRET, SETTLE, WEBHOOKS};
use crate::support::*;

const RECEIVER_TOKEN: &str = "Bearer receiver-token-5f1e";

#[test]
fn secrets_and_header_values_appear_only_where_the_contract_says() {
    let receiver = Receiver::always(200);
    let d = Daemon::start(WEBHOOKS);
    let created = create_endpoint(
        d.addr,
        json!({"url": receiver.url("/"), "tenant": "acme", "secret": GOLDEN_SECRET,
               "headers": {"Authorization": RECEIVER_TOKEN}}),
    );
    assert_eq!(created["secret"], GOLDEN_SECRET);
    assert_eq!(created["headers"], json!({"authorization": "[redacted]"}));
    let id = s(&created["id"]).to_owned();
    let path = format!("/v1/endpoints/{id}");

    let secret = get(d.addr, &format!("{path}/secret"));
    assert_eq!(secret.status, 200, "{}", secret.text());
    assert_eq!(secret.json(), json!({"secret": GOLDEN_SECRET}));

    // Deliveries still carry the real header value.
    let event = create(d.addr, &json!({"type": "a", "tenant": "acme"}));
    let got = receiver.wait_for_requests(1, deadline(SETTLE));
    assert_eq!(got[0].header("authorization"), RECEIVER_TOKEN);
    settled(d.addr, s(&event["id"]), 1);

    let rotated = post_json(
        d.addr,
        &format!("{path}/rotate-secret"),
        &json!({"grace_secs": 60}),
    );
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let new_secret = s(&rotated.json()["secret"]).to_owned();
    assert_ne!(new_secret, GOLDEN_SECRET);
    assert!(
        !rotated.text().contains(RECEIVER_TOKEN),
        "{}",
        rotated.text()
    );
    assert_eq!(
        get(d.addr, &format!("{path}/secret")).json(),
        json!({"secret": new_secret})
    );

    // Every other answer about the endpoint or its deliveries.
    let answers = [
        get(d.addr, &path),
        get(d.addr, "/v1/endpoints"),
        get(d.addr, "/v1/endpoints?tenant=acme"),
        patch(d.addr, &path, &json!({"description": "billing"})),
        post_empty(d.addr, &format!("{path}/disable")),
        post_empty(d.addr, &format!("{path}/enable")),
        post_empty(d.addr, &format!("{path}/test")),
        get(d.addr, &format!("{path}/stats")),
        get(d.addr, &format!("/v1/deliveries?endpoint={id}")),
        post_json(
            d.addr,
            &format!("{path}/recover"),
            &json!({"since": "2000-01-01T00:00:00Z"}),
        ),
    ];
    for resp in &answers {
        assert!(resp.status < 300, "{}", resp.text());
        let text = resp.text();
        for shown_once in [GOLDEN_SECRET, new_secret.as_str(), RECEIVER_TOKEN] {
            assert!(!text.contains(shown_once), "{shown_once} in {text}");
        }
    }
    let shown = get(d.addr, &path).json();
    assert!(shown.get("secret").is_none(), "{shown}");
    assert_eq!(shown["headers"], json!({"authorization": "[redacted]"}));
    assert_eq!(shown["description"], "billing");

    let wrong_method = post_empty(d.addr, &format!("{path}/secret"));
    assert_eq!(wrong_method.status, 405, "{}", wrong_method.text());
}
