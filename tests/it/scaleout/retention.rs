//! Retention with several nodes on one database: every node runs the
//! passes, together they delete what one would and neither fails, and an
//! idempotency key goes with its event, whichever node deletes it.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::support::*;
use crate::webhooks::receiver::{Receiver, Reply};

const WRITE_KEY: &str = "wk_retention_0123456789";

#[test]
fn nodes_on_one_database_prune_it_together_and_forget_the_keys_of_deleted_events() {
    if !super::postgres_or_skip() {
        return;
    }
    let receiver = Receiver::start(|_, _| Reply::status(200));
    let url = fresh_database();
    let toml = format!(
        "[events]\nretention = \"1s\"\n\
         [webhooks]\nallow_networks = [\"127.0.0.1/32\"]\nrequire_https = false\n\
         retention = \"1s\"\ndead_letter_retention = \"1s\"\n\
         [mail]\nbody_retention = \"1s\"\nfeedback_retention = \"7d\"\n\
         [tracking]\ndedup_window = \"1s\"\nprune_interval = \"50ms\"\n\
         [[tracking.sources]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n\
         [storage]\nprune_interval = \"50ms\"\n\
         [store]\nbackend = \"postgres\"\npostgres_url = \"{url}\"\n"
    );
    let a = Daemon::start(&toml);
    let b = Daemon::start(&toml);
    let resp = post_json(
        a.addr,
        "/v1/endpoints",
        &json!({"url": receiver.url("/"), "event_types": ["plain"]}),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let auth = format!("Basic {}", STANDARD.encode(format!("{WRITE_KEY}:")));
    let tracked = request(
        b.addr,
        "POST",
        "/v1/track",
        &[JSON, ("Authorization", &auth)],
        json!({"userId": "u1", "event": "Signed Up", "messageId": "m-1"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(tracked.status, 200, "{}", tracked.text());
    let keyed: Vec<Value> = (0..20)
        .map(|i| {
            create(
                a.addr,
                &json!({"type": "k", "idempotency_key": format!("key-{i}")}),
            )
        })
        .collect();
    for i in 0..20 {
        create(b.addr, &json!({"type": "plain", "data": {"i": i}}));
    }
    let last = create(b.addr, &json!({"type": "last"}));

    // The tracked call stays (tracking's own retention is not set), its
    // messageId key expires with the dedup window; every delivery
    // succeeded and went, and then its event.
    let mut left = Vec::new();
    let pruned = wait_until(deadline(Duration::from_secs(60)), || {
        left = list_all(a.addr, "", &[]);
        left.len() == 2
    });
    let types: Vec<&Value> = left.iter().map(|e| &e["type"]).collect();
    assert!(pruned, "events left: {types:?}");
    assert_eq!(types, [&json!("Signed Up"), &json!("last")]);
    assert_eq!(left[1]["id"], last["id"]);
    let gone = wait_until(deadline(Duration::from_secs(30)), || {
        psql(
            &url,
            "SELECT (SELECT count(*) FROM herald_deliveries) + \
                    (SELECT count(*) FROM herald_track_keys)",
        ) == "0"
    });
    assert!(gone, "deliveries or messageId keys stay");
    assert_eq!(
        psql(&url, "SELECT count(*) FROM herald_event_keys"),
        "0",
        "a deleted event's idempotency key stays"
    );
    // The key's event is gone: the same key makes a new event, on either node.
    let again = post_json(
        b.addr,
        "/v1/events",
        &json!({"type": "k", "idempotency_key": "key-3"}),
    );
    assert_eq!(again.status, 201, "{}", again.text());
    assert_ne!(again.json()["id"], keyed[3]["id"]);
    for node in [&a, &b] {
        for failure in [
            "retention failed; retrying at the next interval",
            "tracking upkeep failed; retrying at the next interval",
        ] {
            assert!(!node.has_logged(failure), "{}", node.logs().join("\n"));
        }
    }
}
