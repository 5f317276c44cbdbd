//! The error every configuration check reports, and the checks of single
//! values (durations, numeric ranges) that every section uses.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file as named on the command line.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a key or type the file may not have.
    #[error("{path}: {message}")]
    Parse {
        /// The file as named on the command line.
        path: PathBuf,
        /// Where the file is wrong (line, column, key) and what was
        /// expected; never the file's text, which may hold secrets.
        message: String,
    },
    /// A value a check refused.
    #[error("{key}: {message}")]
    Invalid {
        /// The value's place in the file (`server.listen`,
        /// `mail.streams.NAME.relay`…), so the message leads with it.
        key: String,
        /// What is wrong and what to write instead.
        message: String,
    },
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
