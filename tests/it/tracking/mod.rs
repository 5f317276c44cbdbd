//! Server-side tracking through the Segment-compatible API, as real clients
//! and operators see it: the official Python libraries, write-key
//! authentication, validation and size limits, deduplication, identity,
//! funnels, attribution and counts checked against a computation of our
//! own, kill -9 during ingestion, retention and the NDJSON export.

mod clients;
mod dedup;
mod development;
mod durability;
mod ingest;
mod limits;
mod model;
mod queries;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use herald::clock;
use serde_json::Value;

use crate::support::*;

const WRITE_KEY: &str = "wk_web_0123456789abcdef";
const APP_KEY: &str = "wk_app_fedcba9876543210";
const HOUR: i64 = 3600 * 1000;
const DAY: i64 = 24 * HOUR;

/// Two sources, so deduplication can be seen to be per source; `extra` may
/// add `[tracking]` settings or other sections.
fn config(extra: &str) -> String {
    format!(
        "{extra}\n[[tracking.sources]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n\
         [[tracking.sources]]\nname = \"app\"\nwrite_key = \"{APP_KEY}\"\n"
    )
}

fn basic(user: &str) -> String {
    format!("Basic {}", STANDARD.encode(user))
}

/// What analytics-python sends: the key as user, an empty password.
fn web_auth() -> String {
    basic(&format!("{WRITE_KEY}:"))
}

fn post_tracking(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut all = vec![JSON];
    all.extend_from_slice(headers);
    request(addr, "POST", path, &all, body)
}

/// Posts with the web source's key and returns `results`, failing unless
/// the answer is 200 with `success: true`.
fn track_ok(addr: SocketAddr, path: &str, body: &Value) -> Vec<Value> {
    let auth = web_auth();
    let resp = post_tracking(
        addr,
        path,
        &[("Authorization", &auth)],
        body.to_string().as_bytes(),
    );
    assert_eq!(resp.status, 200, "{path} {body}: {}", resp.text());
    let answer = resp.json();
    assert_eq!(answer["success"], true, "{}", resp.text());
    answer["results"].as_array().expect("results").clone()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// An RFC 3339 text (any offset, any precision) as Unix ms, digits below
/// the millisecond dropped.
fn ms_of(text: &Value) -> i64 {
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("{text} is no timestamp"));
    clock::parse_rfc3339(text).unwrap_or_else(|| panic!("{text} is not RFC 3339"))
}

fn message_id(event: &Value) -> String {
    event["data"]["messageId"]
        .as_str()
        .unwrap_or_else(|| panic!("no messageId in {event}"))
        .to_owned()
}

/// Stored events per messageId; a list so that copies show up.
fn by_message_id(events: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for e in events {
        out.entry(message_id(e)).or_default().push(e.clone());
    }
    out
}

/// The other ids a user profile is tied to.
fn linked_ids(profile: &Value) -> BTreeSet<&str> {
    profile["linked_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no linked_ids in {profile}"))
        .iter()
        .map(s)
        .collect()
}

fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Value {
    let resp = request(addr, "GET", path, headers, b"");
    assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    resp.json()
}

/// Every call in a user's history, following `next_cursor` with pages of `limit`.
fn user_events(addr: SocketAddr, user: &str, limit: usize) -> Vec<Value> {
    let path = format!("/v1/users/{}/events", enc(user));
    list_pages(addr, &path, "events", limit, &[])
}

/// The export's lines, each parsed; fails on a line that is not JSON.
fn export(addr: SocketAddr, query: &str) -> Vec<Value> {
    let path = format!("/v1/events/export{query}");
    let resp = get(addr, &path);
    assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    assert_eq!(
        resp.header("content-type"),
        Some("application/x-ndjson"),
        "{path}"
    );
    let text = resp.text();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{path}: the last line is cut short"
    );
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{path}: line {line:?}: {e}"))
        })
        .collect()
}
