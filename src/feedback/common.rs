//! What every provider reader shares: header and JSON field access,
//! signed-timestamp freshness, the per-request event limit, and the
//! answer for a request that carried nothing Herald uses.

use serde_json::Value;

use super::{Batch, FeedbackError, FeedbackEvent, Inbound, TIMESTAMP_TOLERANCE_MS};

/// More events than this in one request are refused: a provider batches
/// far fewer (SendGrid at most a few thousand), and the ledger applies a
/// request in one transaction.
pub const MAX_EVENTS: usize = 10_000;

pub fn unauthenticated(reason: impl Into<String>) -> FeedbackError {
    FeedbackError::Unauthenticated(reason.into())
}

pub fn malformed(reason: impl Into<String>) -> FeedbackError {
    FeedbackError::Malformed(reason.into())
}

/// The first value of header `name`, if it is text; surrounding blanks
/// trimmed.
pub fn header<'a>(inbound: &Inbound<'a>, name: &str) -> Option<&'a str> {
    let value = inbound.headers.get(name)?;
    value.to_str().ok().map(str::trim)
}

/// A mail header echoed in a provider's JSON as `headers: [{name, value}]`
/// under `parent` (SES's `mail`, Resend's `data`), found in any case.
pub fn echoed_header(parent: &Value, name: &str) -> Option<String> {
    parent
        .get("headers")?
        .as_array()?
        .iter()
        .find(|h| {
            h.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .and_then(|h| text(h.get("value")))
}

/// Refuses a signed time too far from our clock either way: a captured
/// request replayed later, or one signed with a wrong clock.
pub fn check_fresh(signed_ms: i64, now_ms: i64) -> Result<(), FeedbackError> {
    let distance = signed_ms.saturating_sub(now_ms).saturating_abs();
    if distance > TIMESTAMP_TOLERANCE_MS {
        return Err(unauthenticated(format!(
            "the signed timestamp is {} s from the current time; at most {} s is accepted",
            distance / 1000,
            TIMESTAMP_TOLERANCE_MS / 1000
        )));
    }
    Ok(())
}

/// Whole Unix seconds written as plain ASCII digits, in ms. Signs, blanks
/// and more than 12 digits (beyond year 33658) are refused.
pub fn unix_seconds_ms(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok()?.checked_mul(1000)
}

/// Unix seconds as a JSON number (integer or fraction) or numeric string,
/// in ms; `None` for anything outside the years 1970 to 9999.
pub fn json_seconds_ms(value: &Value) -> Option<i64> {
    let seconds = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    const YEAR_10000: f64 = 253_402_300_800.0;
    if !(0.0..YEAR_10000).contains(&seconds) {
        return None;
    }
    Some((seconds * 1000.0).round() as i64)
}

/// An RFC 3339 time (`2026-03-01T12:00:00.000Z`), in Unix ms.
pub fn rfc3339_ms(text: &str) -> Option<i64> {
    let parsed =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The string at `path` of nested objects, if every step exists.
pub fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |at, key| at.get(key))?.as_str()
}

/// A string field trimmed, or `None` when absent, not a string or blank.
pub fn text(value: Option<&Value>) -> Option<String> {
    let trimmed = value?.as_str()?.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// A JSON value as its text: strings as they are, numbers written out,
/// anything else absent. Providers' ids are sometimes numbers.
pub fn id_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Number(n) => Some(n.to_string()),
        other => text(Some(other)),
    }
}

/// Words joined by "; ", skipping the missing ones: a provider's
/// classification and its diagnostic, for the event's `detail`.
pub fn detail(parts: &[Option<&str>]) -> String {
    parts
        .iter()
        .flatten()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Refuses a request with more items or events than [`MAX_EVENTS`].
pub fn check_count(count: usize) -> Result<(), FeedbackError> {
    if count > MAX_EVENTS {
        return Err(malformed(format!(
            "the request carries {count} events; at most {MAX_EVENTS} are accepted"
        )));
    }
    Ok(())
}

/// The batch for the events read; with none, a batch that says what the
/// request was instead, so it is acknowledged and otherwise ignored.
pub fn batch(events: Vec<FeedbackEvent>, skipped: &[String]) -> Result<Batch, FeedbackError> {
    check_count(events.len())?;
    let ignored = if !events.is_empty() {
        None
    } else if skipped.is_empty() {
        Some("no events".to_owned())
    } else {
        let mut kinds: Vec<&str> = skipped.iter().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds.dedup();
        Some(kinds.join(", "))
    };
    Ok(Batch {
        events,
        replay_token: None,
        ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn freshness_allows_five_minutes_either_way_and_no_more() {
        let now = 1_800_000_000_000;
        assert!(check_fresh(now, now).is_ok());
        assert!(check_fresh(now - TIMESTAMP_TOLERANCE_MS, now).is_ok());
        assert!(check_fresh(now + TIMESTAMP_TOLERANCE_MS, now).is_ok());
        for off in [-TIMESTAMP_TOLERANCE_MS - 1, TIMESTAMP_TOLERANCE_MS + 1] {
            assert!(matches!(
                check_fresh(now + off, now),
                Err(FeedbackError::Unauthenticated(_))
            ));
        }
        assert!(check_fresh(i64::MIN, i64::MAX).is_err());
    }

    #[test]
    fn unix_seconds_are_plain_digits_only() {
        assert_eq!(unix_seconds_ms("1700000000"), Some(1_700_000_000_000));
        for bad in ["", "-1", "+1", " 1", "1.5", "1e9", "9999999999999", "٣"] {
            assert_eq!(unix_seconds_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn json_seconds_take_fractions_and_refuse_the_absurd() {
        assert_eq!(
            json_seconds_ms(&json!(1529006854.329574)),
            Some(1_529_006_854_330)
        );
        assert_eq!(
            json_seconds_ms(&json!("1529006854")),
            Some(1_529_006_854_000)
        );
        for bad in [json!(-1), json!(1e300), json!(null), json!("x"), json!([1])] {
            assert_eq!(json_seconds_ms(&bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_reads_providers_spellings() {
        assert_eq!(
            rfc3339_ms("2026-03-01T12:00:00.000Z"),
            Some(1_772_366_400_000)
        );
        assert_eq!(
            rfc3339_ms("2014-08-01T13:28:10.2735393-04:00"),
            Some(1_406_914_090_273)
        );
        assert_eq!(rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn an_empty_batch_says_what_was_skipped() {
        let b = batch(
            Vec::new(),
            &[
                "processed".into(),
                "group_unsubscribe".into(),
                "processed".into(),
            ],
        )
        .unwrap();
        assert_eq!(b.ignored.as_deref(), Some("group_unsubscribe, processed"));
        assert_eq!(
            batch(Vec::new(), &[]).unwrap().ignored.as_deref(),
            Some("no events")
        );
    }

    #[test]
    fn detail_skips_missing_and_blank_parts() {
        assert_eq!(
            detail(&[Some("Permanent"), None, Some(" "), Some("550 no")]),
            "Permanent; 550 no"
        );
    }
}
