//! Wall-clock time as Unix milliseconds, and its RFC 3339 text form.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub fn now_ms() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    (nanos / 1_000_000) as i64
}

/// `2026-11-23T05:17:44.123Z`: always UTC, always milliseconds, so the text
/// sorts like the instant.
pub fn format_rfc3339(ms: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000) else {
        return String::from("invalid");
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses an RFC 3339 timestamp with any offset; sub-millisecond digits are
/// truncated. Years outside 1970..=9999 are refused.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    if text.len() > 64 {
        return None;
    }
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    if !(0..=253_402_300_799_999).contains(&ms) {
        return None;
    }
    Some(ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_and_formats_utc() {
        let ms = parse_rfc3339("2026-11-22T10:00:00+02:00").unwrap();
        assert_eq!(format_rfc3339(ms), "2026-11-22T08:00:00.000Z");
        let ms = parse_rfc3339("2026-11-22T10:00:00.123456Z").unwrap();
        assert_eq!(format_rfc3339(ms), "2026-11-22T10:00:00.123Z");
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
    }

    #[test]
    fn refuses_what_is_not_rfc3339() {
        for bad in [
            "",
            "yesterday",
            "2026-11-22",
            "2026-11-22 10:00:00",
            "1969-12-31T23:59:59Z",
            "2026-13-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
