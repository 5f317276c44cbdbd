//! The `[tracking]` table: sources with their write keys, limits, the
//! deduplication window and retention.

use std::time::Duration;

use serde::Deserialize;

use super::values::{duration, in_range, invalid, ConfigError};
use crate::tracking::settings::{Source, TrackingSettings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingSection {
    /// `[[tracking.sources]]`: the clients that may send; none refuses every call with 401.
    pub sources: Vec<SourceSection>,
    /// How long a `messageId` is remembered per source: a call resent within it
    /// is answered "duplicate" and stored once.
    pub dedup_window: String,
    /// Bytes per call, alone or in a batch (Segment's limit), after gzip decompression.
    pub max_event_bytes: usize,
    /// Bytes per `/v1/batch` request (Segment's limit), after gzip decompression.
    pub max_batch_bytes: usize,
    /// Calls per batch (Segment's limit).
    pub max_batch_events: usize,
    /// Delete tracked calls older than this, at least `dedup_window`; `None` keeps them forever.
    pub retention: Option<String>,
    /// How often the upkeep pass (retention, expiring `messageId` keys) runs.
    pub prune_interval: String,
}

impl Default for TrackingSection {
    fn default() -> Self {
        TrackingSection {
            sources: Vec::new(),
            dedup_window: "7d".to_owned(),
            max_event_bytes: 32 * 1024,
            max_batch_bytes: 500 * 1024,
            max_batch_events: 2500,
            retention: None,
            prune_interval: "1m".to_owned(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// Unique; letters, digits, `_` and `-`, at most 64. Keeps sources' `messageId`s apart.
    pub name: String,
    /// What the source's clients authenticate with (Basic user, Bearer or
    /// `writeKey`); unique, at least 16 printable ASCII characters, no `:`.
    pub write_key: String,
    /// The tenant its calls belong to: only that tenant's endpoints and keys
    /// see them, and its users are apart from everyone else's. None: calls
    /// belong to no tenant, as before tenants.
    #[serde(default)]
    pub tenant: Option<String>,
}

pub fn validate_tracking(section: TrackingSection) -> Result<TrackingSettings, ConfigError> {
    let key = |k: &str| format!("tracking.{k}");
    let mut sources: Vec<Source> = Vec::new();
    for (i, s) in section.sources.into_iter().enumerate() {
        let name_ok = !s.name.is_empty()
            && s.name.len() <= 64
            && s.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(invalid(
                format!("tracking.sources[{i}].name"),
                "use letters, digits, `_` and `-` (at most 64)",
            ));
        }
        if s.write_key.len() < 16
            || !s
                .write_key
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b':')
        {
            return Err(invalid(
                format!("tracking.sources[{i}].write_key"),
                "needs at least 16 printable ASCII characters, without spaces or `:`",
            ));
        }
        if sources
            .iter()
            .any(|o| o.name == s.name || o.write_key == s.write_key)
        {
            return Err(invalid(
                format!("tracking.sources[{i}]"),
                "source names and write keys must be unique",
            ));
        }
        if s.tenant
            .as_deref()
            .is_some_and(|t| !crate::names::is_valid_tenant(t))
        {
            return Err(invalid(
                format!("tracking.sources[{i}].tenant"),
                "must match ^[A-Za-z0-9_.:-]{1,128}$",
            ));
        }
        sources.push(Source {
            name: s.name,
            write_key: s.write_key,
            tenant: s.tenant,
        });
    }
    let max_event_bytes = in_range(
        "tracking.max_event_bytes",
        section.max_event_bytes,
        1024,
        1 << 20,
    )?;
    let max_batch_bytes = in_range(
        "tracking.max_batch_bytes",
        section.max_batch_bytes,
        1024,
        64 << 20,
    )?;
    if max_event_bytes > max_batch_bytes {
        return Err(invalid(
            key("max_event_bytes"),
            "must not exceed tracking.max_batch_bytes",
        ));
    }
    let year = Duration::from_secs(366 * 24 * 3600);
    let dedup_window = duration("tracking.dedup_window", &section.dedup_window, year)?;
    let retention = section
        .retention
        .as_deref()
        .map(|r| duration("tracking.retention", r, year * 100))
        .transpose()?;
    // Deleting a call deletes its messageId key: a retry arriving after
    // that, but inside the window, would be stored twice.
    if retention.is_some_and(|r| r < dedup_window) {
        return Err(invalid(
            key("retention"),
            "must be at least tracking.dedup_window",
        ));
    }
    Ok(TrackingSettings {
        sources,
        dedup_window,
        max_event_bytes,
        max_batch_bytes,
        max_batch_events: in_range(
            "tracking.max_batch_events",
            section.max_batch_events,
            1,
            100_000,
        )?,
        retention,
        prune_interval: duration(
            "tracking.prune_interval",
            &section.prune_interval,
            Duration::from_secs(24 * 3600),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(tenant: Option<&str>) -> TrackingSection {
        TrackingSection {
            sources: vec![SourceSection {
                name: "web".into(),
                write_key: "wk_web_0123456789abcdef".into(),
                tenant: tenant.map(str::to_owned),
            }],
            ..TrackingSection::default()
        }
    }

    #[test]
    fn a_source_may_name_a_tenant_that_follows_the_tenant_rules() {
        let settings = validate_tracking(source(Some("acme"))).unwrap();
        assert_eq!(settings.sources[0].tenant.as_deref(), Some("acme"));
        assert_eq!(
            validate_tracking(source(None)).unwrap().sources[0].tenant,
            None
        );
        for bad in ["", "has space", "ünï"] {
            let err = validate_tracking(source(Some(bad))).unwrap_err();
            assert!(
                err.to_string().starts_with("tracking.sources[0].tenant"),
                "{bad}: {err}"
            );
        }
    }
}
