//! Endpoints as the API sees them: input validation, event matching and
//! their JSON form.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::clock;
use crate::events::Invalid;
use crate::events::{parse_version, validate_type_name, MAX_DATA_VERSION};
use crate::ids;
use crate::mail::address;
use crate::names::{is_valid_pattern, is_valid_tenant, EventSource};
use crate::store::records::EndpointRecord;

use super::signing::Secret;
use super::target;

pub const ID_PREFIX: &str = "ep_";
pub const PAYLOAD_VERSION: u8 = 1;
const MAX_EVENT_TYPES: usize = 100;
const MAX_VERSION_PINS: usize = 100;
const MAX_HEADERS: usize = 20;
const MAX_URL_LEN: usize = 2048;
const MAX_DESCRIPTION_LEN: usize = 1024;
const MAX_HEADER_VALUE_LEN: usize = 1024;
pub const MAX_TIMEOUT_SECS: u32 = 30;
/// Shown instead of a custom header's value: such headers often carry the
/// receiver's own credentials, which answers must not hand out again.
pub const REDACTED: &str = "[redacted]";

/// The fields a client may set, on create (all optional but `url`) and on
/// update (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointInput {
    pub url: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub tenant: Option<Option<String>>,
    pub event_types: Option<Vec<String>>,
    pub sources: Option<Vec<String>>,
    pub description: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub rate_limit_per_sec: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    pub timeout_secs: Option<Option<u32>>,
    pub secret: Option<String>,
    pub payload_version: Option<u8>,
    #[serde(default, deserialize_with = "nullable")]
    pub owner_email: Option<Option<String>>,
    /// Event type → payload version; replaces every pin (`{}` for none).
    pub version_pins: Option<BTreeMap<String, u32>>,
}

/// Tells "absent" (outer None) from "null" (Some(None)) for PATCH.
fn nullable<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// Headers Herald sets itself; an endpoint may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid::Field {
        field,
        message: message.into(),
    }
}

/// `record` (a fresh one on create) with `input` applied, every field
/// checked; on refusal the caller still holds the unchanged original.
pub fn apply(
    mut record: EndpointRecord,
    input: EndpointInput,
    require_https: bool,
) -> Result<EndpointRecord, Invalid> {
    if let Some(url) = input.url {
        if url.len() > MAX_URL_LEN {
            return Err(invalid("url", format!("longer than {MAX_URL_LEN} bytes")));
        }
        let target = target::parse(&url, require_https).map_err(|m| invalid("url", m))?;
        // Custom headers often carry the receiver's credentials: sending
        // them to another host must be asked for, by restating them.
        let same_origin = target::parse(&record.url, false).is_ok_and(|old| {
            (old.scheme, &old.host, old.port) == (target.scheme, &target.host, target.port)
        });
        if !record.headers.is_empty() && input.headers.is_none() && !same_origin {
            return Err(invalid(
                "headers",
                "the endpoint sends custom headers; a URL on another host, port or scheme \
                 needs them restated in `headers` (`{}` for none)",
            ));
        }
        record.url = url;
    }
    if let Some(tenant) = input.tenant {
        if let Some(t) = &tenant {
            if !is_valid_tenant(t) {
                return Err(invalid("tenant", "must match ^[A-Za-z0-9_.:-]{1,128}$"));
            }
        }
        record.tenant = tenant;
    }
    if let Some(types) = input.event_types {
        if types.len() > MAX_EVENT_TYPES {
            return Err(invalid(
                "event_types",
                format!("at most {MAX_EVENT_TYPES} patterns"),
            ));
        }
        if let Some(bad) = types.iter().find(|t| !is_valid_pattern(t)) {
            let shown: String = bad.chars().take(140).collect();
            return Err(invalid(
                "event_types",
                format!("`{shown}` is neither a type name, a tracked event name nor `prefix.*`"),
            ));
        }
        record.event_types = types;
    }
    if let Some(sources) = input.sources {
        record.sources = parse_sources(&sources)?;
    }
    if let Some(description) = input.description {
        if description.len() > MAX_DESCRIPTION_LEN {
            return Err(invalid(
                "description",
                format!("longer than {MAX_DESCRIPTION_LEN} bytes"),
            ));
        }
        record.description = description;
    }
    if let Some(headers) = input.headers {
        if headers.len() > MAX_HEADERS {
            return Err(invalid("headers", format!("at most {MAX_HEADERS} headers")));
        }
        let mut out = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            if hyper::header::HeaderName::from_bytes(lower.as_bytes()).is_err()
                || RESERVED_HEADERS.contains(&lower.as_str())
            {
                return Err(invalid(
                    "headers",
                    format!("`{name}` is not a header name an endpoint may set"),
                ));
            }
            if value == REDACTED {
                return Err(invalid(
                    "headers",
                    format!(
                        "`{name}` holds the redaction marker `{REDACTED}`; send the real value"
                    ),
                ));
            }
            if value.len() > MAX_HEADER_VALUE_LEN
                || hyper::header::HeaderValue::from_str(&value).is_err()
            {
                return Err(invalid(
                    "headers",
                    format!("the value of `{name}` is not a valid header value"),
                ));
            }
            out.push((lower, value));
        }
        record.headers = out;
    }
    if let Some(rate) = input.rate_limit_per_sec {
        if rate == Some(0) {
            return Err(invalid(
                "rate_limit_per_sec",
                "must be at least 1, or null for no limit",
            ));
        }
        record.rate_limit_per_sec = rate;
    }
    if let Some(timeout) = input.timeout_secs {
        if timeout.is_some_and(|t| !(1..=MAX_TIMEOUT_SECS).contains(&t)) {
            return Err(invalid(
                "timeout_secs",
                format!("must be between 1 and {MAX_TIMEOUT_SECS}"),
            ));
        }
        record.timeout_secs = timeout;
    }
    if let Some(secret) = input.secret {
        Secret::parse(&secret).map_err(|e| invalid("secret", e.to_string()))?;
        record.secret = secret;
    }
    if let Some(version) = input.payload_version {
        if version != PAYLOAD_VERSION {
            return Err(invalid(
                "payload_version",
                format!("the only payload version is {PAYLOAD_VERSION}"),
            ));
        }
        record.payload_version = version;
    }
    if let Some(owner) = input.owner_email {
        record.owner_email = match owner {
            Some(text) => Some(address::normalize(&text).map_err(|e| {
                invalid(
                    "owner_email",
                    format!("`{}` {e}", text.chars().take(100).collect::<String>()),
                )
            })?),
            None => None,
        };
    }
    if let Some(pins) = input.version_pins {
        record.version_pins = parse_pins(pins)?;
    }
    Ok(record)
}

/// Pins as an endpoint keeps them: sorted by type, each a type an API
/// client may post (Herald's own events come in version 1 only) and a
/// version `data_versions` can name.
fn parse_pins(pins: BTreeMap<String, u32>) -> Result<Vec<(String, u32)>, Invalid> {
    if pins.len() > MAX_VERSION_PINS {
        return Err(invalid(
            "version_pins",
            format!("at most {MAX_VERSION_PINS} pins"),
        ));
    }
    let mut out = Vec::with_capacity(pins.len());
    for (event_type, version) in pins {
        let shown: String = event_type.chars().take(140).collect();
        if validate_type_name(&event_type).is_err() {
            return Err(invalid(
                "version_pins",
                format!("`{shown}` is not a type an API client can post"),
            ));
        }
        if parse_version(&version.to_string()).is_none() {
            return Err(invalid(
                "version_pins",
                format!("`{shown}`: versions run from 1 to {MAX_DATA_VERSION}"),
            ));
        }
        out.push((event_type, version));
    }
    Ok(out)
}

/// Source names as an endpoint takes them: at least one, each known, none twice.
fn parse_sources(names: &[String]) -> Result<Vec<EventSource>, Invalid> {
    let known = || {
        EventSource::ALL
            .map(|s| format!("`{}`", s.as_str()))
            .join(", ")
    };
    if names.is_empty() {
        return Err(invalid(
            "sources",
            format!("must name at least one of {}", known()),
        ));
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let shown: String = name.chars().take(64).collect();
        let source = EventSource::parse(name).ok_or_else(|| {
            invalid(
                "sources",
                format!("`{shown}` is not a source; use {}", known()),
            )
        })?;
        if out.contains(&source) {
            return Err(invalid("sources", format!("`{shown}` is named twice")));
        }
        out.push(source);
    }
    Ok(out)
}

pub fn new_record(now_ms: i64) -> EndpointRecord {
    EndpointRecord {
        id: ids::new_id(),
        url: String::new(),
        tenant: None,
        event_types: Vec::new(),
        description: String::new(),
        headers: Vec::new(),
        rate_limit_per_sec: None,
        timeout_secs: None,
        secret: Secret::generate().to_string(),
        old_secrets: Vec::new(),
        enabled: true,
        disabled_reason: None,
        payload_version: PAYLOAD_VERSION,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        failing_since_ms: None,
        sources: EventSource::DEFAULT_FOR_ENDPOINTS.to_vec(),
        owner_email: None,
        version_pins: Vec::new(),
    }
}

/// The secrets that sign a delivery made at `now_ms`: the current one, then
/// retired ones still in their grace period.
pub fn signing_secrets(record: &EndpointRecord, now_ms: i64) -> Vec<Secret> {
    std::iter::once(record.secret.as_str())
        .chain(
            record
                .old_secrets
                .iter()
                .filter(|(_, until)| *until > now_ms)
                .map(|(s, _)| s.as_str()),
        )
        .filter_map(|s| Secret::parse(s).ok())
        .collect()
}

/// The endpoint as every answer shows it: without its secret, and with
/// custom header values replaced by [`REDACTED`].
pub fn to_json(record: &EndpointRecord) -> Value {
    let headers: serde_json::Map<String, Value> = record
        .headers
        .iter()
        .map(|(k, _)| (k.clone(), Value::String(REDACTED.to_owned())))
        .collect();
    let sources: Vec<&str> = record.sources.iter().map(|s| s.as_str()).collect();
    let pins: serde_json::Map<String, Value> = record
        .version_pins
        .iter()
        .map(|(event_type, version)| (event_type.clone(), Value::from(*version)))
        .collect();
    json!({
        "id": ids::format(ID_PREFIX, record.id),
        "url": record.url,
        "tenant": record.tenant,
        "event_types": record.event_types,
        "sources": sources,
        "description": record.description,
        "headers": headers,
        "rate_limit_per_sec": record.rate_limit_per_sec,
        "timeout_secs": record.timeout_secs,
        "enabled": record.enabled,
        "disabled_reason": record.disabled_reason,
        "payload_version": record.payload_version,
        "owner_email": record.owner_email,
        "version_pins": pins,
        "created_at": clock::format_rfc3339(record.created_at_ms),
        "updated_at": clock::format_rfc3339(record.updated_at_ms),
    })
}

/// As [`to_json`] with the current `secret`: the answer to create and
/// rotate, whose caller has to learn the secret there.
pub fn to_json_with_secret(record: &EndpointRecord) -> Value {
    let mut shown = to_json(record);
    shown["secret"] = Value::String(record.secret.clone());
    shown
}

/// `{"secret": …}`: the answer of the one route that reads it back.
pub fn secret_json(record: &EndpointRecord) -> Value {
    json!({ "secret": record.secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_fields_and_leaves_the_record_alone() {
        let mut record = new_record(0);
        record.url = "https://example.com/hook".into();
        let before = record.clone();
        let cases: Vec<(&str, serde_json::Value)> = vec![
            ("url", json!({"url": "ftp://example.com/"})),
            ("url", json!({"url": "https://user:pw@example.com/"})),
            ("url", json!({"url": "http://example.com/"})),
            ("event_types", json!({"event_types": [" padded"]})),
            ("event_types", json!({"event_types": ["tab\there"]})),
            ("event_types", json!({"event_types": ["user*"]})),
            ("tenant", json!({"tenant": "no spaces"})),
            ("sources", json!({"sources": []})),
            ("sources", json!({"sources": ["browser"]})),
            ("sources", json!({"sources": ["api", "api"]})),
            ("headers", json!({"headers": {"authorization": REDACTED}})),
            ("headers", json!({"headers": {"webhook-id": "x"}})),
            ("headers", json!({"headers": {"x-a": "line\nbreak"}})),
            ("rate_limit_per_sec", json!({"rate_limit_per_sec": 0})),
            ("timeout_secs", json!({"timeout_secs": 31})),
            ("secret", json!({"secret": "not-a-secret"})),
            ("payload_version", json!({"payload_version": 2})),
            ("owner_email", json!({"owner_email": "nobody"})),
            (
                "owner_email",
                json!({"owner_email": "a@b.com\r\nBcc: x@y.com"}),
            ),
            (
                "owner_email",
                json!({"owner_email": "Ops <ops@example.com>"}),
            ),
            ("version_pins", json!({"version_pins": {"invoice.paid": 0}})),
            (
                "version_pins",
                json!({"version_pins": {"invoice.paid": 1000}}),
            ),
            ("version_pins", json!({"version_pins": {"email.sent": 1}})),
            ("version_pins", json!({"version_pins": {"no spaces": 1}})),
        ];
        for (field, body) in cases {
            let input: EndpointInput = serde_json::from_value(body.clone()).unwrap();
            match apply(record.clone(), input, true) {
                Err(Invalid::Field { field: f, .. }) => assert_eq!(f, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
            assert_eq!(record, before);
        }
    }

    #[test]
    fn custom_headers_follow_a_new_host_only_when_restated() {
        let mut record = new_record(0);
        record.url = "https://example.com/hook".into();
        record.headers = vec![("authorization".into(), "Bearer receiver-token".into())];
        let patch = |body: serde_json::Value| {
            apply(record.clone(), serde_json::from_value(body).unwrap(), true)
        };
        for elsewhere in [
            "https://attacker.example/hook",
            "https://example.com:8443/hook",
        ] {
            match patch(json!({"url": elsewhere})) {
                Err(Invalid::Field { field, .. }) => assert_eq!(field, "headers", "{elsewhere}"),
                other => panic!("{elsewhere}: {other:?}"),
            }
        }
        let moved = patch(json!({"url": "https://other.example/", "headers": {}})).unwrap();
        assert!(moved.headers.is_empty());
        let kept = patch(json!({"url": "https://example.com/v2/hook"})).unwrap();
        assert_eq!(kept.headers, record.headers);
    }

    #[test]
    fn answers_hide_the_secret_and_header_values_but_name_the_headers() {
        let mut record = new_record(0);
        record.headers = vec![("authorization".into(), "Bearer receiver-token".into())];
        let shown = to_json(&record);
        assert!(shown.get("secret").is_none(), "{shown}");
        assert_eq!(shown["headers"], json!({"authorization": REDACTED}));
        assert_eq!(shown["sources"], json!(["api", "herald"]));
        assert!(!shown.to_string().contains("receiver-token"));
        assert!(!shown.to_string().contains(&record.secret));
        assert_eq!(
            to_json_with_secret(&record)["secret"],
            record.secret.as_str()
        );
        assert_eq!(to_json_with_secret(&record)["headers"], shown["headers"]);
    }

    #[test]
    fn sources_are_set_in_the_order_given() {
        let input: EndpointInput =
            serde_json::from_value(json!({"sources": ["tracking", "api"]})).unwrap();
        let record = apply(new_record(0), input, true).unwrap();
        assert_eq!(
            record.sources,
            vec![EventSource::Tracking, EventSource::Api]
        );
    }

    #[test]
    fn version_pins_replace_each_other_and_show_as_an_object() {
        let set = |record, body: serde_json::Value| {
            apply(record, serde_json::from_value(body).unwrap(), true).unwrap()
        };
        let record = set(
            new_record(0),
            json!({"version_pins": {"user.created": 3, "invoice.paid": 1}}),
        );
        assert_eq!(
            record.version_pins,
            vec![("invoice.paid".into(), 1), ("user.created".into(), 3)]
        );
        assert_eq!(
            to_json(&record)["version_pins"],
            json!({"invoice.paid": 1, "user.created": 3})
        );
        let record = set(record, json!({"description": "kept"}));
        assert_eq!(record.version_pins.len(), 2);
        let record = set(record, json!({"version_pins": {}}));
        assert!(record.version_pins.is_empty());
    }

    #[test]
    fn patch_distinguishes_null_from_absent() {
        let mut record = new_record(0);
        record.tenant = Some("acme".into());
        record.rate_limit_per_sec = Some(5);
        let input: EndpointInput = serde_json::from_value(json!({"description": "x"})).unwrap();
        let record = apply(record, input, true).unwrap();
        assert_eq!(record.tenant.as_deref(), Some("acme"));
        let input: EndpointInput =
            serde_json::from_value(json!({"tenant": null, "rate_limit_per_sec": null})).unwrap();
        let record = apply(record, input, true).unwrap();
        assert_eq!(record.tenant, None);
        assert_eq!(record.rate_limit_per_sec, None);
    }

    #[test]
    fn the_owner_email_is_normalised_shown_and_cleared_by_null() {
        let input: EndpointInput =
            serde_json::from_value(json!({"owner_email": " Ops@Example.COM "})).unwrap();
        let record = apply(new_record(0), input, true).unwrap();
        assert_eq!(record.owner_email.as_deref(), Some("ops@example.com"));
        assert_eq!(to_json(&record)["owner_email"], "ops@example.com");
        let untouched: EndpointInput = serde_json::from_value(json!({"description": "x"})).unwrap();
        let record = apply(record, untouched, true).unwrap();
        assert_eq!(record.owner_email.as_deref(), Some("ops@example.com"));
        let cleared: EndpointInput = serde_json::from_value(json!({"owner_email": null})).unwrap();
        let record = apply(record, cleared, true).unwrap();
        assert_eq!(record.owner_email, None);
        assert_eq!(to_json(&record)["owner_email"], serde_json::Value::Null);
    }
}
