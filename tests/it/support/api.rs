//! API calls that tests in every folder make, and reading their answers.

use std::net::SocketAddr;

use serde_json::Value;

use super::http::{post_json, request};

/// Caps every "follow the cursor" loop so a cursor bug fails instead of spinning.
const MAX_PAGES: usize = 100_000;

/// Every item under `key` in the listing at `path` (which may carry a
/// filter query), oldest first, following `next_cursor` with pages of
/// `limit`; no page may hold more than that.
pub fn list_pages(
    addr: SocketAddr,
    path: &str,
    key: &str,
    limit: usize,
    headers: &[(&str, &str)],
) -> Vec<Value> {
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut page_path = format!("{route}?limit={limit}");
        if !query.is_empty() {
            page_path.push_str(&format!("&{query}"));
        }
        if let Some(c) = &cursor {
            page_path.push_str(&format!("&after={c}"));
        }
        let resp = request(addr, "GET", &page_path, headers, b"");
        assert_eq!(resp.status, 200, "{page_path}: {}", resp.text());
        let page = resp.json();
        let found = page[key]
            .as_array()
            .unwrap_or_else(|| panic!("{page_path}: no {key} array in {page}"));
        assert!(
            found.len() <= limit,
            "{page_path} gave {} items",
            found.len()
        );
        items.extend(found.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
    panic!("listing {path} did not end after {MAX_PAGES} pages");
}

/// Every event matching `query` (without `after`/`limit`), oldest first.
pub fn list_all(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Vec<Value> {
    list_pages(
        addr,
        &format!("/v1/events?{query}"),
        "events",
        1000,
        headers,
    )
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

/// The string in a JSON answer, failing the test where there is none. Short
/// because tests read ids and statuses out of answers everywhere.
pub fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string: {v}"))
}
