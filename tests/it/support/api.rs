//! Event API calls that tests in every folder make.

use std::net::SocketAddr;

use serde_json::Value;

use super::http::{post_json, request};

/// Caps every "follow the cursor" loop so a cursor bug fails instead of spinning.
const MAX_PAGES: usize = 100_000;

/// Every event matching `query` (without `after`/`limit`), oldest first,
/// following `next_cursor` to the end.
pub fn list_all(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut path = format!("/v1/events?limit=1000{}{query}", sep(query));
        if let Some(c) = &cursor {
            path.push_str(&format!("&after={c}"));
        }
        let resp = request(addr, "GET", &path, headers, b"");
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        let page = resp.json();
        events.extend(page["events"].as_array().expect("events array").clone());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return events,
        }
    }
    panic!("listing {query:?} did not end after {MAX_PAGES} pages");
}

fn sep(query: &str) -> &'static str {
    if query.is_empty() {
        ""
    } else {
        "&"
    }
}

pub fn count_events(addr: SocketAddr) -> usize {
    list_all(addr, "", &[]).len()
}

/// Creates one event and returns it, failing unless the answer is 201.
pub fn create(addr: SocketAddr, event: &Value) -> Value {
    let resp = post_json(addr, "/v1/events", event);
    assert_eq!(resp.status, 201, "creating {event}: {}", resp.text());
    resp.json()
}
