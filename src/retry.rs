//! When to retry a failed attempt, for webhooks and mail alike: the
//! schedule, jitter, the floor after throttling and `Retry-After`.

use std::time::{Duration, UNIX_EPOCH};

/// ±20 %, as Svix does: receivers recovering from an outage are not hit by
/// every queued delivery in the same second.
pub const DEFAULT_JITTER: f64 = 0.2;

/// Why an attempt failed, as far as the schedule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Timeout,
    TooManyRequests,
    Other,
}

impl FailureKind {
    fn is_throttling(self) -> bool {
        matches!(self, FailureKind::Timeout | FailureKind::TooManyRequests)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The waits after the 1st, 2nd, … failed attempt.
    schedule: Vec<Duration>,
    /// The largest fraction a wait is lengthened or shortened by.
    jitter: f64,
    min_throttle_delay: Duration,
}

impl RetryPolicy {
    /// `min_throttle_delay` is the shortest wait after a timeout or a 429:
    /// such a receiver is overloaded and an early retry only adds to its
    /// load. Normally 60 s; tests with millisecond schedules lower it.
    pub fn new(schedule: Vec<Duration>, min_throttle_delay: Duration) -> RetryPolicy {
        RetryPolicy {
            schedule,
            jitter: DEFAULT_JITTER,
            min_throttle_delay,
        }
    }

    /// The wait before the next attempt after `failures_so_far` failed ones
    /// (1 = the immediate attempt failed; 0 is taken as 1), or `None` when
    /// the schedule is exhausted. `random_unit` in [0, 1) picks the jitter,
    /// so the caller owns the randomness and tests are deterministic.
    pub fn next_delay(
        &self,
        failures_so_far: u32,
        kind: FailureKind,
        retry_after: Option<Duration>,
        random_unit: f64,
    ) -> Option<Duration> {
        let index = usize::try_from(failures_so_far.max(1) - 1).ok()?;
        let planned = *self.schedule.get(index)?;
        let mut delay = jittered(planned, self.jitter, random_unit);
        if kind.is_throttling() {
            delay = delay.max(self.min_throttle_delay);
        }
        if let Some(asked) = retry_after {
            // The receiver knows its own recovery time, but may neither
            // hurry us nor park the delivery indefinitely.
            delay = asked.clamp(delay, delay.saturating_mul(2));
        }
        Some(delay)
    }
}

fn jittered(planned: Duration, jitter: f64, random_unit: f64) -> Duration {
    let unit = if random_unit.is_finite() {
        random_unit.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let factor = 1.0 + jitter * (2.0 * unit - 1.0);
    Duration::try_from_secs_f64(planned.as_secs_f64() * factor).unwrap_or(planned)
}

/// A `Retry-After` value, either delta-seconds (`"120"`) or an HTTP-date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`); a date already past means no wait.
pub fn parse_retry_after(value: &str, now_unix_secs: i64) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Beyond u64 is nonsense; treating it as "very long" is still
        // bounded by the clamp in `next_delay`.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    let date_secs = match date.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(_) => return Some(Duration::ZERO),
    };
    let wait = date_secs.saturating_sub(now_unix_secs).max(0);
    Some(Duration::from_secs(u64::try_from(wait).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn svix() -> RetryPolicy {
        let schedule = [5, 300, 1800, 7200, 18000, 36000, 36000].map(secs).to_vec();
        RetryPolicy::new(schedule, secs(60))
    }

    #[test]
    fn the_middle_of_the_jitter_is_the_schedule_itself() {
        let policy = svix();
        let expected = [5, 300, 1800, 7200, 18000, 36000, 36000].map(secs);
        for (n, want) in (1..).zip(expected) {
            assert_eq!(
                policy.next_delay(n, FailureKind::Other, None, 0.5),
                Some(want)
            );
        }
        assert_eq!(policy.next_delay(8, FailureKind::Other, None, 0.5), None);
        assert_eq!(
            policy.next_delay(u32::MAX, FailureKind::Other, None, 0.5),
            None
        );
    }

    #[test]
    fn no_failures_counts_as_the_first() {
        assert_eq!(
            svix().next_delay(0, FailureKind::Other, None, 0.5),
            Some(secs(5))
        );
    }

    #[test]
    fn jitter_spans_plus_minus_twenty_percent() {
        let policy = svix();
        let low = policy.next_delay(2, FailureKind::Other, None, 0.0).unwrap();
        let high = policy
            .next_delay(2, FailureKind::Other, None, 0.999_999)
            .unwrap();
        assert_eq!(low, secs(240));
        assert!(high > secs(359) && high <= secs(360), "{high:?}");
        for unit in [f64::NAN, f64::INFINITY, -3.0, 7.0] {
            let d = policy
                .next_delay(2, FailureKind::Other, None, unit)
                .unwrap();
            assert!(d >= secs(240) && d <= secs(360), "{unit}: {d:?}");
        }
    }

    #[test]
    fn timeouts_and_429_wait_at_least_the_throttle_floor() {
        let policy = svix();
        for kind in [FailureKind::Timeout, FailureKind::TooManyRequests] {
            assert_eq!(policy.next_delay(1, kind, None, 0.5), Some(secs(60)));
            // Longer planned waits are kept.
            assert_eq!(policy.next_delay(2, kind, None, 0.5), Some(secs(300)));
        }
        assert_eq!(
            policy.next_delay(1, FailureKind::Other, None, 0.5),
            Some(secs(5))
        );
    }

    #[test]
    fn tests_can_lower_the_throttle_floor() {
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::new(vec![Duration::from_millis(100)], Duration::from_millis(150))
        };
        assert_eq!(
            policy.next_delay(1, FailureKind::Timeout, None, 0.5),
            Some(Duration::from_millis(150))
        );
        assert_eq!(
            policy.next_delay(1, FailureKind::Other, None, 0.5),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn retry_after_is_clamped_between_the_delay_and_twice_it() {
        let policy = svix();
        let other = FailureKind::Other;
        assert_eq!(
            policy.next_delay(2, other, Some(secs(450)), 0.5),
            Some(secs(450))
        );
        assert_eq!(
            policy.next_delay(2, other, Some(secs(10)), 0.5),
            Some(secs(300))
        );
        assert_eq!(
            policy.next_delay(2, other, Some(secs(86400)), 0.5),
            Some(secs(600))
        );
        let throttled = FailureKind::TooManyRequests;
        assert_eq!(
            policy.next_delay(1, throttled, Some(secs(90)), 0.5),
            Some(secs(90))
        );
        assert_eq!(
            policy.next_delay(1, throttled, Some(secs(1)), 0.5),
            Some(secs(60))
        );
        assert_eq!(
            policy.next_delay(1, throttled, Some(secs(500)), 0.5),
            Some(secs(120))
        );
        assert_eq!(
            policy.next_delay(2, other, Some(Duration::MAX), 0.5),
            Some(secs(600))
        );
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(parse_retry_after("120", 0), Some(secs(120)));
        assert_eq!(parse_retry_after(" 0 ", 0), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", 0),
            Some(secs(u64::MAX))
        );
        for bad in ["", "-5", "1.5", "5s", "soon", "+3"] {
            assert_eq!(parse_retry_after(bad, 0), None, "{bad}");
        }
    }

    #[test]
    fn retry_after_as_an_http_date() {
        // Wed, 21 Oct 2015 07:28:00 GMT
        let date_secs = 1_445_412_480;
        let value = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(parse_retry_after(value, date_secs - 90), Some(secs(90)));
        assert_eq!(parse_retry_after(value, date_secs), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(value, date_secs + 3600),
            Some(Duration::ZERO)
        );
        // The two obsolete forms HTTP still asks recipients to read.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", date_secs - 1),
            Some(secs(1))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:00 2015", date_secs - 1),
            Some(secs(1))
        );
        assert_eq!(parse_retry_after("Wed, 32 Oct 2015 07:28:00 GMT", 0), None);
    }
}
