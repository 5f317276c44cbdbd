//! The rules for names clients choose: event types, tracked event names,
//! tenants, and the type patterns endpoints subscribe with.

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

/// Whether an endpoint with these `patterns` (empty: every type) and this
/// `endpoint_tenant` (none: every tenant) subscribes to an event of
/// `event_type` from `tenant`.
pub fn subscribes(
    patterns: &[String],
    endpoint_tenant: Option<&str>,
    event_type: &str,
    tenant: Option<&str>,
) -> bool {
    if endpoint_tenant.is_some() && endpoint_tenant != tenant {
        return false;
    }
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

    #[test]
    fn matching_by_type_pattern_and_tenant() {
        let types = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = types(&[]);
        assert!(subscribes(&all, None, "invoice.paid", None));
        assert!(subscribes(&all, None, "invoice.paid", Some("acme")));
        let users = types(&["user.*", "invoice.paid"]);
        assert!(subscribes(&users, None, "user.created", None));
        assert!(subscribes(&users, None, "user.a.b", None));
        assert!(!subscribes(&users, None, "users.created", None));
        assert!(!subscribes(&users, None, "user", None));
        assert!(subscribes(&users, None, "invoice.paid", None));
        assert!(!subscribes(&users, None, "invoice.paid.late", None));
        assert!(subscribes(&all, Some("acme"), "x", Some("acme")));
        assert!(!subscribes(&all, Some("acme"), "x", Some("other")));
        assert!(!subscribes(&all, Some("acme"), "x", None));
        assert!(subscribes(&types(&["*"]), None, "anything", None));
    }
}
