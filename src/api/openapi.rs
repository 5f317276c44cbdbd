//! `GET /v1/openapi.json`: the OpenAPI 3.1 document, written from
//! `routes::ROUTES` (path, method, summary, who may call it, which
//! listeners serve it) and the hand-written details in `openapi.json`
//! beside this file (descriptions, parameters, bodies, answers).
//!
//! To document a new route, add an entry to `operations` in
//! `openapi.json` keyed by its row's `"METHOD /path/{param}"`:
//!
//! - `description` (required, non-empty);
//! - `path`: `{param: description}` for each `{…}` of the template;
//! - `query`: `{name: description}` or `{name: {description, schema}}`;
//! - `request`: the JSON body's schema (`request_media` for another type,
//!   `request_optional: true` when it may be left out);
//! - `responses`: `{status: {description, schema}}` for its JSON answers,
//!   or `{description, media}` for another media type. Errors need no
//!   entry: every operation answers `{"error": …}` by default.
//!
//! Shared schemas go under `schemas` and are referenced as
//! `#/components/schemas/Name`. The tests below fail while a row has no
//! entry or an entry names no row.

use std::sync::LazyLock;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::http::{query_params, typed, Resp};
use super::routes::{Auth, Route, ROUTES};

const DETAILS: &str = include_str!("openapi.json");

static DOCUMENT: LazyLock<String> = LazyLock::new(|| document().to_string());

pub fn serve(req: Request<Incoming>) -> Result<Resp, ApiError> {
    query_params(req.uri().query(), &[])?;
    Ok(typed(StatusCode::OK, "application/json", DOCUMENT.as_str()))
}

/// The key an operation's details are filed under.
fn operation_key(route: &Route) -> String {
    format!("{} {}", route.method, route.path)
}

fn details() -> Value {
    // Compiled in and checked by the tests below: it cannot fail at run time
    // unless the build skipped its tests.
    serde_json::from_str(DETAILS).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the API description's details do not parse");
        json!({"schemas": {}, "operations": {}})
    })
}

/// The OpenAPI 3.1 document of every row of `ROUTES`.
pub fn document() -> Value {
    let details = details();
    let empty = Map::new();
    let operations = details["operations"].as_object().unwrap_or(&empty);
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = operations
            .get(&operation_key(route))
            .cloned()
            .unwrap_or_default();
        let item = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        item[route.method.as_str().to_ascii_lowercase()] = operation(route, &entry);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Herald",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "An events log, signed webhooks, transactional mail and Segment-compatible tracking in one daemon. Every route is on the private listener; those marked `x-herald-listeners: [private, public]` are on the public one too. Requests and answers are JSON unless an operation says otherwise; every error is `{\"error\": {\"code\", \"message\", \"field\"?}}`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": details["schemas"],
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`Authorization: Bearer KEY`) with a role (read, write, admin) and maybe a tenant. While no key exists at all, the loopback API takes every caller as an admin. Routes with `security: []` authenticate by their own scheme: Segment calls by a source's write key as HTTP basic auth user, ESP webhooks by each provider's signature (or basic auth for Postmark), unsubscribe links by their signed token.",
                },
            },
        },
    })
}

fn operation(route: &Route, entry: &Value) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), operation_id(route).into());
    op.insert("summary".into(), route.summary.into());
    let description = entry["description"].as_str().unwrap_or_default();
    op.insert(
        "description".into(),
        format!("{description}\n\nAccess: {}.", access(route.auth)).into(),
    );
    op.insert("tags".into(), json!([tag(route.path)]));
    let listeners = if route.public {
        json!(["private", "public"])
    } else {
        json!(["private"])
    };
    op.insert("x-herald-listeners".into(), listeners);
    if route.auth == Auth::Own {
        op.insert("security".into(), json!([]));
    }
    let parameters = parameters(route.path, entry);
    if !parameters.is_empty() {
        op.insert("parameters".into(), parameters.into());
    }
    if !entry["request"].is_null() {
        let media = entry["request_media"]
            .as_str()
            .unwrap_or("application/json");
        op.insert(
            "requestBody".into(),
            json!({
                "required": !entry["request_optional"].as_bool().unwrap_or(false),
                "content": {media: {"schema": entry["request"]}},
            }),
        );
    } else if let Some(media) = entry["request_media"].as_str() {
        op.insert(
            "requestBody".into(),
            json!({"content": {media: {"schema": {}}}}),
        );
    }
    let mut responses = Map::new();
    if let Some(listed) = entry["responses"].as_object() {
        for (status, answer) in listed {
            responses.insert(status.clone(), response(answer));
        }
    }
    responses.insert(
        "default".into(),
        json!({
            "description": "An error: 4xx changes nothing; 503 means nothing was acknowledged.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }),
    );
    op.insert("responses".into(), responses.into());
    op.into()
}

fn response(answer: &Value) -> Value {
    let description = answer["description"].as_str().unwrap_or_default();
    let content = match (answer["media"].as_str(), answer.get("schema")) {
        (Some(media), schema) => {
            Some(json!({media: {"schema": schema.cloned().unwrap_or(json!({}))}}))
        }
        (None, Some(schema)) => Some(json!({"application/json": {"schema": schema}})),
        (None, None) => None,
    };
    match content {
        Some(content) => json!({"description": description, "content": content}),
        None => json!({"description": description}),
    }
}

fn parameters(template: &str, entry: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = template
        .split('/')
        .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": entry["path"][name].as_str().unwrap_or_default(),
                "schema": {"type": "string"},
            })
        })
        .collect();
    if let Some(query) = entry["query"].as_object() {
        for (name, about) in query {
            let (description, schema) = match about {
                Value::String(text) => (text.as_str(), json!({"type": "string"})),
                other => (
                    other["description"].as_str().unwrap_or_default(),
                    other
                        .get("schema")
                        .cloned()
                        .unwrap_or(json!({"type": "string"})),
                ),
            };
            out.push(json!({
                "name": name,
                "in": "query",
                "required": false,
                "description": description,
                "schema": schema,
            }));
        }
    }
    out
}

/// Unique across rows: rows sharing a dispatcher (the Segment calls, the
/// unsubscribe page's GET and HEAD) differ by method or path.
fn operation_id(route: &Route) -> String {
    let mut id = route.method.as_str().to_ascii_lowercase();
    for part in route.path.split('/').filter(|p| !p.is_empty()) {
        id.push('_');
        id.extend(
            part.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id.replace("__", "_").trim_end_matches('_').to_owned()
}

/// The first path segment after `/v1`: endpoints, emails, keys…
fn tag(path: &str) -> &str {
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    match parts.next() {
        Some("v1") => parts.next().map_or("v1", |p| p.trim_end_matches(".json")),
        Some(first) if first.starts_with('{') => "other",
        Some(first) => first,
        None => "other",
    }
}

fn access(auth: Auth) -> &'static str {
    match auth {
        Auth::Own => "no API key; the route authenticates by its own scheme, if any",
        Auth::ByMethod => "a read key for GET, a write key otherwise; a tenant key sees its tenant's objects only",
        Auth::Write => "a write key, even to read: the answer is a secret",
        Auth::Untenanted => "a read key for GET, a write key otherwise, not confined to a tenant (403 for tenant keys)",
        Auth::UnscopedAdmin => "an admin key not confined to a tenant",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_details_parse_and_every_row_has_a_described_operation() {
        let details: Value = serde_json::from_str(DETAILS).expect("openapi.json parses");
        let operations = details["operations"].as_object().expect("operations");
        for route in ROUTES {
            let key = operation_key(route);
            let entry = operations
                .get(&key)
                .unwrap_or_else(|| panic!("{key} has no entry in src/api/openapi.json"));
            assert!(
                entry["description"]
                    .as_str()
                    .is_some_and(|d| !d.trim().is_empty()),
                "{key} has no description"
            );
            assert!(
                entry["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{key} documents no answer"
            );
            for name in route
                .path
                .split('/')
                .filter_map(|p| p.strip_prefix('{')?.strip_suffix('}'))
            {
                assert!(
                    entry["path"][name].as_str().is_some_and(|d| !d.is_empty()),
                    "{key}: path parameter `{name}` is not described"
                );
            }
        }
        let rows: BTreeSet<String> = ROUTES.iter().map(operation_key).collect();
        for key in operations.keys() {
            assert!(rows.contains(key), "{key} is documented but no route row");
        }
    }

    #[test]
    fn every_row_is_an_operation_with_a_unique_id_and_its_access() {
        let doc = document();
        let mut ids = BTreeSet::new();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
            assert_eq!(op["summary"], route.summary);
            assert!(ids.insert(op["operationId"].as_str().unwrap().to_owned()));
            assert_eq!(
                op["security"] == json!([]),
                route.auth == Auth::Own,
                "{}",
                operation_key(route)
            );
            assert!(op["responses"]["default"].is_object());
        }
        assert_eq!(ids.len(), ROUTES.len());
    }

    #[test]
    fn every_reference_names_a_schema() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"").skip(1) {
            let target = reference.split('"').next().unwrap();
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {target}"));
            assert!(schemas.contains_key(name), "{target} names no schema");
        }
    }
}
