//! The rules for names clients choose: event types, tracked event names,
//! tenants, the type patterns endpoints subscribe with, and the sources
//! events come from.

use serde::{Deserialize, Serialize};

/// Where an event came from. Endpoints name the sources they take, so a
/// tracked call (whose write key ships to browsers) can never pose as a
/// server event or as one of Herald's own.
///
/// Stored in records by variant position: append new sources, never reorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventSource {
    /// Posted to `/v1/events` with an API key.
    Api,
    /// Recorded by Herald itself (`email.*`, `delivery.*`, `endpoint.*`).
    Herald,
    /// A Segment call made with a tracking write key.
    Tracking,
}

impl EventSource {
    pub const ALL: [EventSource; 3] =
        [EventSource::Api, EventSource::Herald, EventSource::Tracking];

    /// What an endpoint takes unless it says otherwise: server events only.
    pub const DEFAULT_FOR_ENDPOINTS: [EventSource; 2] = [EventSource::Api, EventSource::Herald];

    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Api => "api",
            EventSource::Herald => "herald",
            EventSource::Tracking => "tracking",
        }
    }

    pub fn parse(text: &str) -> Option<EventSource> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Type prefixes only Herald writes: an API client may not post under them,
/// so a receiver can trust that `email.bounced` came from Herald. `herald.`
/// covers the `/test` delivery.
pub const RESERVED_PREFIXES: [&str; 4] = ["email.", "delivery.", "endpoint.", "herald."];

/// Every type Herald records in the log itself.
pub const HERALD_EVENT_TYPES: [&str; 18] = [
    "email.queued",
    "email.sent",
    "email.deferred",
    "email.failed",
    "email.bounced",
    "email.suppressed",
    "email.unsubscribed",
    "email.delivered",
    "email.opened",
    "email.clicked",
    "email.complained",
    "delivery.failing",
    "delivery.exhausted",
    "delivery.recovered",
    "endpoint.disabled",
    "stream.warning",
    "stream.paused",
    "stream.resumed",
];

/// Whether `name` falls under one of Herald's own prefixes.
pub fn is_reserved_type(name: &str) -> bool {
    // `stream.` is not a prefix of Herald's alone (a video product's
    // `stream.started`): only the names Herald records are taken.
    RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) || is_herald_event_type(name)
}

/// Whether Herald itself records events of this type.
pub fn is_herald_event_type(name: &str) -> bool {
    HERALD_EVENT_TYPES.contains(&name)
}

/// `^[A-Za-z0-9_.-]{1,128}$`: the types of events posted to the API.
pub fn is_valid_type_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Tracked (Segment) event names are free text such as `Signed Up`; they
/// enter the log under that name, so filters and subscriptions accept them.
pub fn is_tracked_event_name(name: &str) -> bool {
    (1..=128).contains(&name.chars().count())
        && !name.contains('*')
        && !name.chars().any(char::is_control)
        && name.trim() == name
}

/// `^[A-Za-z0-9_.:-]{1,128}$`: tenants are usually ids like `org_123` or `acme`.
pub fn is_valid_tenant(tenant: &str) -> bool {
    (1..=128).contains(&tenant.len())
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// A pattern an endpoint may subscribe with: a type name, a tracked event
/// name, `prefix.*` or `*`.
pub fn is_valid_pattern(pattern: &str) -> bool {
    match pattern.strip_suffix(".*") {
        Some(prefix) => is_valid_type_name(prefix),
        None => pattern == "*" || is_valid_type_name(pattern) || is_tracked_event_name(pattern),
    }
}

/// What an endpoint subscribes to.
#[derive(Debug, Clone, Copy)]
pub struct Subscription<'a> {
    /// Type patterns; empty: every type.
    pub patterns: &'a [String],
    /// The sources it takes events from.
    pub sources: &'a [EventSource],
    /// `None`: every tenant.
    pub tenant: Option<&'a str>,
}

/// Whether an endpoint with this subscription takes an event of
/// `event_type` from `source` and `tenant`.
pub fn subscribes(
    subscription: Subscription<'_>,
    event_type: &str,
    source: EventSource,
    tenant: Option<&str>,
) -> bool {
    if !subscription.sources.contains(&source) {
        return false;
    }
    if subscription.tenant.is_some() && subscription.tenant != tenant {
        return false;
    }
    let patterns = subscription.patterns;
    patterns.is_empty()
        || patterns
            .iter()
            .any(|pattern| type_matches(pattern, event_type))
}

/// `user.*` matches every type under `user.`; `*` matches all; anything
/// else matches itself.
fn type_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_follow_the_documented_pattern() {
        for ok in ["invoice.paid", "a", "user-signed_up.v2", &"x".repeat(128)] {
            assert!(is_valid_type_name(ok), "{ok}");
        }
        for bad in ["", "has space", "slash/", "ünï", &"x".repeat(129), "tab\t"] {
            assert!(!is_valid_type_name(bad), "{bad}");
        }
    }

    #[test]
    fn patterns_are_names_prefixes_or_everything() {
        for ok in ["*", "user.*", "invoice.paid", "Signed Up"] {
            assert!(is_valid_pattern(ok), "{ok}");
        }
        for bad in [" padded", "tab\there", "user*", "a b.*", ""] {
            assert!(!is_valid_pattern(bad), "{bad}");
        }
    }

    /// An API event from `tenant` against default sources.
    fn matches(
        patterns: &[String],
        endpoint_tenant: Option<&str>,
        t: &str,
        tenant: Option<&str>,
    ) -> bool {
        let subscription = Subscription {
            patterns,
            sources: &EventSource::DEFAULT_FOR_ENDPOINTS,
            tenant: endpoint_tenant,
        };
        subscribes(subscription, t, EventSource::Api, tenant)
    }

    #[test]
    fn matching_by_type_pattern_and_tenant() {
        let types = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = types(&[]);
        assert!(matches(&all, None, "invoice.paid", None));
        assert!(matches(&all, None, "invoice.paid", Some("acme")));
        let users = types(&["user.*", "invoice.paid"]);
        assert!(matches(&users, None, "user.created", None));
        assert!(matches(&users, None, "user.a.b", None));
        assert!(!matches(&users, None, "users.created", None));
        assert!(!matches(&users, None, "user", None));
        assert!(matches(&users, None, "invoice.paid", None));
        assert!(!matches(&users, None, "invoice.paid.late", None));
        assert!(matches(&all, Some("acme"), "x", Some("acme")));
        assert!(!matches(&all, Some("acme"), "x", Some("other")));
        assert!(!matches(&all, Some("acme"), "x", None));
        assert!(matches(&types(&["*"]), None, "anything", None));
    }

    /// A tracked call reaches only endpoints that take tracked calls,
    /// whatever its name; those need not take anything else.
    #[test]
    fn an_endpoint_takes_only_the_sources_it_names() {
        let takes = |s: Subscription<'_>, t: &str, source| subscribes(s, t, source, None);
        let every_type: Vec<String> = Vec::new();
        let bounced = vec!["email.bounced".to_owned()];
        let default = Subscription {
            patterns: &bounced,
            sources: &EventSource::DEFAULT_FOR_ENDPOINTS,
            tenant: None,
        };
        assert!(takes(default, "email.bounced", EventSource::Herald));
        assert!(!takes(default, "email.bounced", EventSource::Tracking));
        let tracking_only = Subscription {
            patterns: &every_type,
            sources: &[EventSource::Tracking],
            tenant: None,
        };
        assert!(takes(tracking_only, "Signed Up", EventSource::Tracking));
        assert!(!takes(tracking_only, "invoice.paid", EventSource::Api));
        assert!(!takes(tracking_only, "email.sent", EventSource::Herald));
    }

    #[test]
    fn sources_round_trip_and_herald_types_are_reserved() {
        for source in EventSource::ALL {
            assert_eq!(EventSource::parse(source.as_str()), Some(source));
        }
        assert_eq!(EventSource::parse("API"), None);
        for name in HERALD_EVENT_TYPES {
            assert!(is_reserved_type(name), "{name}");
        }
        assert!(is_reserved_type("herald.test"));
        assert!(!is_reserved_type("emails.sent"));
        assert!(!is_reserved_type("invoice.paid"));
    }
}
