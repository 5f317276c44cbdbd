//! The retention keys of `[events]`, `[webhooks]`, `[mail]` and
//! `[storage]`: how long each kind of record is kept, checked together.

use std::time::Duration;

use super::values::{duration, ConfigError};
use crate::retention::RetentionSettings;

/// The keys as written, each from its own table.
pub struct RetentionKeys<'a> {
    pub events: Option<&'a str>,
    pub deliveries: Option<&'a str>,
    pub dead_letters: Option<&'a str>,
    pub mail_bodies: Option<&'a str>,
    pub feedback: Option<&'a str>,
    pub interval: &'a str,
}

/// Providers retry an unanswered webhook for up to about three days
/// (SendGrid); a week leaves room.
const MIN_FEEDBACK_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

pub fn validate_retention(keys: RetentionKeys<'_>) -> Result<RetentionSettings, ConfigError> {
    let century = Duration::from_secs(100 * 366 * 24 * 3600);
    let keep = |key: &str, text: Option<&str>| text.map(|t| duration(key, t, century)).transpose();
    Ok(RetentionSettings {
        events: keep("events.retention", keys.events)?,
        deliveries: keep("webhooks.retention", keys.deliveries)?,
        dead_letters: keep("webhooks.dead_letter_retention", keys.dead_letters)?,
        mail_bodies: keep("mail.body_retention", keys.mail_bodies)?,
        feedback: match keep("mail.feedback_retention", keys.feedback)? {
            Some(keep) if keep < MIN_FEEDBACK_RETENTION => {
                return Err(super::values::invalid(
                    "mail.feedback_retention",
                    "must be at least 7d: providers retry a webhook for days, and a retry must still be recognised",
                ))
            }
            keep => keep,
        },
        interval: duration(
            "storage.prune_interval",
            keys.interval,
            Duration::from_secs(24 * 3600),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(events: Option<&'a str>, interval: &'a str) -> RetentionKeys<'a> {
        RetentionKeys {
            events,
            deliveries: Some("30d"),
            dead_letters: None,
            mail_bodies: Some("1s"),
            feedback: None,
            interval,
        }
    }

    #[test]
    fn durations_are_read_and_bad_ones_name_their_key() {
        let settings = validate_retention(keys(Some("90d"), "1m")).unwrap();
        assert_eq!(settings.events, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(settings.deliveries, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(settings.dead_letters, None);
        assert_eq!(settings.mail_bodies, Some(Duration::from_secs(1)));
        for (events, interval, key) in [
            (Some("soon"), "1m", "events.retention"),
            (Some("0s"), "1m", "events.retention"),
            (None, "2d", "storage.prune_interval"),
        ] {
            let err = validate_retention(keys(events, interval)).unwrap_err();
            assert!(err.to_string().starts_with(key), "{err}");
        }
    }

    #[test]
    fn feedback_is_kept_long_enough_to_recognise_a_retry() {
        let mut short = keys(None, "1m");
        short.feedback = Some("1d");
        let err = validate_retention(short).unwrap_err().to_string();
        assert!(err.starts_with("mail.feedback_retention"), "{err}");
        let mut week = keys(None, "1m");
        week.feedback = Some("7d");
        assert_eq!(
            validate_retention(week).unwrap().feedback,
            Some(MIN_FEEDBACK_RETENTION)
        );
    }
}
