//! Tracking settings as ingestion and upkeep use them, after
//! `config::tracking` checked the file.

use std::time::Duration;

#[derive(Clone)]
pub struct Source {
    /// Keeps one source's `messageId`s apart from another's.
    pub name: String,
    /// What its clients authenticate with; never printed, but for the
    /// development source's at start.
    pub write_key: String,
    /// The tenant its calls are stored for; `None`: no tenant.
    pub tenant: Option<String>,
}

/// The name of the source Herald makes up for a local install without any.
pub const DEVELOPMENT_SOURCE: &str = "development";

impl Source {
    /// The development source, whose write key comes from `secret`: random,
    /// kept in the database so the key a developer copied keeps working
    /// across restarts.
    pub fn development(secret: [u8; 32]) -> Source {
        let hex: String = secret[..16].iter().map(|b| format!("{b:02x}")).collect();
        Source {
            name: DEVELOPMENT_SOURCE.to_owned(),
            write_key: format!("wk_dev_{hex}"),
            tenant: None,
        }
    }
}

impl std::fmt::Debug for Source {
    // Keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct TrackingSettings {
    /// Every source that may send calls.
    pub sources: Vec<Source>,
    /// How long a `messageId` is remembered to refuse a repeat.
    pub dedup_window: Duration,
    /// The largest single call (Segment: 32 KB).
    pub max_event_bytes: usize,
    /// The largest batch request (Segment: 500 KB).
    pub max_batch_bytes: usize,
    /// The most calls in one batch (Segment: 2,500).
    pub max_batch_events: usize,
    /// Tracked calls older than this are deleted; `None` keeps them.
    pub retention: Option<Duration>,
    /// How often upkeep expires keys and prunes calls.
    pub prune_interval: Duration,
}

impl TrackingSettings {
    /// The source a write key belongs to, compared in constant time.
    pub fn source_for(&self, key: &str) -> Option<&Source> {
        self.sources
            .iter()
            .find(|s| crate::constant_time::eq(s.write_key.as_bytes(), key.as_bytes()))
    }
}
