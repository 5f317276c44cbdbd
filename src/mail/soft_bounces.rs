//! The soft-bounce rule's memory: the UTC days an address soft-bounced on,
//! so one greylisting afternoon counts once and only failures spread over
//! several days suppress it.

use std::time::Duration;

use crate::store::records::SoftBounceRecord;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The UTC day (since the Unix epoch) holding `ms`.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// Whole days in `window`, at least one.
pub fn window_days(window: Duration) -> i64 {
    (window.as_millis() as i64 / DAY_MS).max(1)
}

/// `record` with a soft bounce on `day` added, as of `today`: days outside
/// the window (the `window_days` ending today) are forgotten, and so is a
/// bounce dated outside it or in the future beyond today.
pub fn with_bounce(
    record: &SoftBounceRecord,
    day: i64,
    today: i64,
    window_days: i64,
) -> SoftBounceRecord {
    let first = today - window_days + 1;
    let mut days: Vec<i64> = record
        .days
        .iter()
        .copied()
        .filter(|d| (first..=today).contains(d))
        .collect();
    let day = day.min(today);
    if day >= first && !days.contains(&day) {
        days.push(day);
        days.sort_unstable();
    }
    SoftBounceRecord { days }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_afternoon_of_bounces_counts_as_one_day() {
        let mut record = SoftBounceRecord::default();
        for _ in 0..5 {
            record = with_bounce(&record, 100, 100, 7);
        }
        assert_eq!(record.days, vec![100]);
    }

    #[test]
    fn days_outside_the_window_are_forgotten() {
        let record = SoftBounceRecord {
            days: vec![90, 95, 99],
        };
        assert_eq!(with_bounce(&record, 100, 100, 7).days, vec![95, 99, 100]);
        // A bounce dated before the window adds nothing.
        assert_eq!(with_bounce(&record, 80, 100, 7).days, vec![95, 99]);
        // One dated after today counts as today.
        assert_eq!(with_bounce(&record, 140, 100, 7).days, vec![95, 99, 100]);
    }

    #[test]
    fn days_are_utc_days() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(DAY_MS), 1);
        assert_eq!(day_of(-1), -1);
        assert_eq!(window_days(Duration::from_secs(7 * 24 * 3600)), 7);
        assert_eq!(window_days(Duration::from_secs(3600)), 1);
    }
}
