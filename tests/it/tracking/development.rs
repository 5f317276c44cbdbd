//! Tracking out of the box: a local install without configuration makes up
//! a `development` source and logs its write key, so the README's Segment
//! snippet works as printed; nowhere else does that source exist.

use serde_json::{json, Value};

use super::clients::run_client;
use super::config;
use crate::support::*;

const MESSAGE: &str = "development tracking source";

/// The write keys of the development source's log lines, one per start
/// (the log runs on across restarts).
fn logged_keys(d: &Daemon) -> Vec<String> {
    d.logs()
        .iter()
        .filter_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            (v["message"] == MESSAGE && v["source"] == "development")
                .then(|| v["write_key"].as_str().map(str::to_owned))?
        })
        .collect()
}

/// The write key of the first start's development source.
fn logged_key(d: &Daemon) -> Option<String> {
    logged_keys(d).into_iter().next()
}

fn track_with(d: &Daemon, key: &str, user: &str) -> Response {
    post_json(
        d.addr,
        "/v1/track",
        &json!({"writeKey": key, "event": "Subscribed", "userId": user}),
    )
}

#[test]
fn without_configuration_the_readme_snippet_works_with_the_logged_key() {
    let mut d = Daemon::start("");
    let key = logged_key(&d).expect("the development write key is logged");
    assert!(key.len() >= 16, "{key}");

    // The README's snippet, through the official library.
    run_client(&json!({
        "library": "segment", "host": format!("http://{}", d.addr), "write_key": key,
        "sync": false,
        "calls": [{"method": "track",
                   "args": {"user_id": "u_42", "event": "Subscribed", "properties": {"plan": "pro"}}}],
    }));
    let stored = list_all(d.addr, "type=Subscribed", &[]);
    assert_eq!(stored.len(), 1, "{stored:#?}");
    assert_eq!(stored[0]["source"], "tracking");
    assert_eq!(stored[0]["data"]["userId"], "u_42");
    assert_eq!(stored[0]["data"]["properties"]["plan"], "pro");
    assert_eq!(track_with(&d, "wk_dev_not_the_key_0000", "u_1").status, 401);

    // The same file keeps the same key.
    assert!(d.sigterm().success());
    d.restart();
    assert_eq!(logged_keys(&d), vec![key.clone(), key.clone()]);
    let resp = track_with(&d, &key, "u_43");
    assert_eq!(resp.status, 200, "{}", resp.text());
}

/// The key a development source had on a data directory stops working once
/// the same file is served with sources or API keys configured, or off
/// loopback.
#[test]
fn configured_sources_or_api_keys_mean_no_development_source() {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!(
        "[storage]\ndata_dir = {}\n",
        toml_str(&dir.path().join("data"))
    );
    let mut d = Daemon::start(&storage);
    let key = logged_key(&d).expect("the development write key is logged");
    assert!(d.sigterm().success());
    drop(d);

    let api_key = "api-key-0123456789abcdef";
    let with_keys = format!("{storage}[server]\napi_keys = [\"{api_key}\"]\n");
    let off_loopback = vec!["--listen".to_owned(), "0.0.0.0:0".to_owned()];
    for (toml, args) in [
        (config(&storage), vec![]),
        (with_keys.clone(), vec![]),
        (with_keys, off_loopback),
    ] {
        let mut d = Daemon::start_with(Options {
            toml: toml.clone(),
            args: args.clone(),
            ..Options::default()
        });
        assert!(!d.has_logged(MESSAGE), "{toml} {args:?}");
        assert!(
            d.logs().iter().all(|l| !l.contains(&key)),
            "{toml} {args:?}"
        );
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], d.addr.port()));
        let resp = post_json(
            addr,
            "/v1/track",
            &json!({"writeKey": key, "event": "Subscribed", "userId": "u"}),
        );
        assert_eq!(resp.status, 401, "{toml} {args:?}: {}", resp.text());
        assert!(d.sigterm().success());
    }
}

/// A key created through the API closes the API, and from the next start
/// the development source is gone with it.
#[test]
fn a_key_created_through_the_api_ends_the_development_source() {
    let mut d = Daemon::start("");
    let key = logged_key(&d).expect("the development write key is logged");
    let created = post_json(d.addr, "/v1/keys", &json!({"role": "admin"}));
    assert_eq!(created.status, 201, "{}", created.text());
    assert!(d.sigterm().success());
    d.restart();
    assert_eq!(
        logged_keys(&d),
        vec![key.clone()],
        "logged again after the restart"
    );
    assert_eq!(track_with(&d, &key, "u_1").status, 401);
}
