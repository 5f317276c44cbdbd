//! The error every configuration check reports, and the checks of single
//! values (durations, numeric ranges) that every section uses.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// A refusal of the value at `key` (`server.listen`,
/// `mail.streams.NAME.relay`…), saying what to write instead.
pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A humantime duration (`"10s"`, `"5m"`) between 1 ms and `max`.
pub fn duration(key: &str, text: &str, max: Duration) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(text).map_err(|e| {
        invalid(
            key,
            format!("`{text}` is not a duration ({e}); write e.g. \"10s\""),
        )
    })?;
    if d.is_zero() || d > max {
        return Err(invalid(
            key,
            format!(
                "must be between 1ms and {}",
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(d)
}

/// `value` if it lies in `min..=max`.
pub fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    if value < min || value > max {
        return Err(invalid(key, format!("{value} is outside {min}..={max}")));
    }
    Ok(value)
}
