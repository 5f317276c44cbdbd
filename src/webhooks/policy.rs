//! What follows a webhook attempt, decided without I/O: the delivery's next
//! attempt or its end, the endpoint's failing streak, auto-disable, and
//! which of Herald's own events to record.

use std::time::Duration;

use crate::retry::{self, RetryPolicy};
use crate::store::records::{DeliveryRecord, DeliveryStatus, EndpointRecord, FailureKind};

/// After this many failed attempts of one delivery, `delivery.failing`.
pub const FAILING_AFTER: usize = 4;

/// The settings the decision follows.
#[derive(Debug, Clone)]
pub struct Policy {
    pub retry: RetryPolicy,
    /// An endpoint failing continuously this long is disabled when one of
    /// its deliveries exhausts its schedule.
    pub disable_after: Duration,
}

/// What one attempt saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// 0 when no HTTP answer arrived.
    pub status_code: u16,
    pub failure: Option<FailureKind>,
    /// The receiver's `Retry-After`, already parsed.
    pub retry_after: Option<Duration>,
    /// A manual retry: it does not advance the schedule.
    pub manual: bool,
    /// In [0, 1): picks the jitter, so decisions are reproducible.
    pub random_unit: f64,
}

impl Report {
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status_code)
    }

    /// `410 Gone`: the receiver says the endpoint no longer exists.
    pub fn gone(&self) -> bool {
        self.status_code == 410
    }

    /// What the retry schedule makes of the failure: an overloaded receiver
    /// (timeout, 429) waits at least the throttle floor.
    fn retry_kind(&self) -> retry::FailureKind {
        if self.failure == Some(FailureKind::Timeout) {
            retry::FailureKind::Timeout
        } else if self.status_code == 429 {
            retry::FailureKind::TooManyRequests
        } else {
            retry::FailureKind::Other
        }
    }
}

/// An event Herald records about a delivery or its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The delivery failed for the `FAILING_AFTER`th time.
    Failing,
    /// The delivery's schedule ran out: it is a dead letter.
    Exhausted,
    /// A delivery that had been failing succeeded.
    Recovered,
    /// The endpoint was disabled, for this reason.
    EndpointDisabled(&'static str),
}

impl Notice {
    pub fn event_type(self) -> &'static str {
        match self {
            Notice::Failing => "delivery.failing",
            Notice::Exhausted => "delivery.exhausted",
            Notice::Recovered => "delivery.recovered",
            Notice::EndpointDisabled(_) => "endpoint.disabled",
        }
    }
}

pub const GONE: &str = "the endpoint answered 410 Gone";
pub const FAILING_TOO_LONG: &str = "failing continuously and a delivery exhausted its retries";

/// What to do after the attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub status: DeliveryStatus,
    /// The next scheduled attempt; `None` ends the schedule.
    pub next_attempt_ms: Option<i64>,
    /// The endpoint's failing streak after this attempt.
    pub failing_since_ms: Option<i64>,
    /// Disable the endpoint (it is enabled now) for this reason.
    pub disable: Option<&'static str>,
    /// Events to record, in order.
    pub notices: Vec<Notice>,
}

/// Decides what follows `report` on `delivery` (its attempts before this
/// one) to `endpoint`, at `now_ms`.
pub fn decide(
    delivery: &DeliveryRecord,
    endpoint: &EndpointRecord,
    report: &Report,
    policy: &Policy,
    now_ms: i64,
) -> Decision {
    let succeeded = report.succeeded();
    let failed_before = delivery
        .attempts
        .iter()
        .filter(|a| !(200..300).contains(&a.status_code))
        .count();
    let next_attempt_ms = if succeeded || report.gone() {
        None
    } else if report.manual {
        // A manual attempt leaves the schedule as it was.
        delivery.next_attempt_ms
    } else {
        let counted = delivery
            .attempts
            .get(delivery.schedule_from as usize..)
            .unwrap_or_default();
        let scheduled_failures = counted.iter().filter(|a| !a.manual).count() as u32 + 1;
        policy
            .retry
            .next_delay(
                scheduled_failures,
                report.retry_kind(),
                report.retry_after,
                report.random_unit,
            )
            .map(|d| now_ms.saturating_add(d.as_millis() as i64))
    };
    let status = if succeeded {
        DeliveryStatus::Succeeded
    } else if next_attempt_ms.is_some() {
        DeliveryStatus::Pending
    } else {
        DeliveryStatus::Failed
    };

    let mut notices = Vec::new();
    if succeeded {
        if failed_before >= FAILING_AFTER {
            notices.push(Notice::Recovered);
        }
        return Decision {
            status,
            next_attempt_ms,
            failing_since_ms: None,
            disable: None,
            notices,
        };
    }
    let failing_since_ms = endpoint.failing_since_ms.unwrap_or(now_ms);
    if failed_before + 1 == FAILING_AFTER {
        notices.push(Notice::Failing);
    }
    let exhausted = status == DeliveryStatus::Failed && delivery.status == DeliveryStatus::Pending;
    if exhausted {
        notices.push(Notice::Exhausted);
    }
    let failing_long = now_ms - failing_since_ms >= policy.disable_after.as_millis() as i64;
    let reason = if report.gone() {
        Some(GONE)
    } else if exhausted && failing_long {
        Some(FAILING_TOO_LONG)
    } else {
        None
    };
    let disable = reason.filter(|_| endpoint.enabled);
    if let Some(reason) = disable {
        notices.push(Notice::EndpointDisabled(reason));
    }
    Decision {
        status,
        next_attempt_ms,
        failing_since_ms: Some(failing_since_ms),
        disable,
        notices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::AttemptRecord;

    const NOW: i64 = 1_000_000_000;
    const SEC: i64 = 1000;

    fn policy() -> Policy {
        Policy {
            retry: RetryPolicy::new(
                [5, 300, 1800].map(Duration::from_secs).to_vec(),
                Duration::from_secs(60),
            ),
            disable_after: Duration::from_secs(5 * 24 * 3600),
        }
    }

    fn attempt(status_code: u16, manual: bool) -> AttemptRecord {
        AttemptRecord {
            at_ms: 0,
            status_code,
            error: None,
            failure: None,
            latency_ms: 1,
            response: String::new(),
            manual,
        }
    }

    fn delivery(statuses: &[u16], status: DeliveryStatus) -> DeliveryRecord {
        DeliveryRecord {
            endpoint_id: 1,
            event_seq: 1,
            event_id: 1,
            event_type: "t".into(),
            status,
            attempts: statuses.iter().map(|s| attempt(*s, false)).collect(),
            next_attempt_ms: (status == DeliveryStatus::Pending).then_some(NOW),
            created_at_ms: 0,
            schedule_from: 0,
        }
    }

    fn endpoint(enabled: bool, failing_since_ms: Option<i64>) -> EndpointRecord {
        let mut e = crate::webhooks::endpoint::new_record(0);
        e.enabled = enabled;
        e.failing_since_ms = failing_since_ms;
        e
    }

    fn report(status_code: u16) -> Report {
        Report {
            status_code,
            failure: (status_code == 0).then_some(FailureKind::Connect),
            retry_after: None,
            manual: false,
            random_unit: 0.5,
        }
    }

    /// One row of the decision table.
    struct Case {
        name: &'static str,
        attempts_before: &'static [u16],
        was: DeliveryStatus,
        failing_since: Option<i64>,
        report: Report,
        status: DeliveryStatus,
        next: Option<i64>,
        notices: Vec<Notice>,
    }

    #[test]
    fn decisions_follow_the_schedule_and_thresholds() {
        use DeliveryStatus::{Failed, Pending, Succeeded};
        let long_ago = Some(NOW - 6 * 24 * 3600 * SEC);
        let timeout = Report {
            failure: Some(FailureKind::Timeout),
            ..report(0)
        };
        let throttled = Report {
            retry_after: Some(Duration::from_secs(90)),
            ..report(429)
        };
        let manual_fail = Report {
            manual: true,
            ..report(500)
        };
        let case =
            |name, attempts_before, was, failing_since, report, status, next, notices| Case {
                name,
                attempts_before,
                was,
                failing_since,
                report,
                status,
                next,
                notices,
            };
        let cases = [
            case(
                "first success",
                &[],
                Pending,
                None,
                report(200),
                Succeeded,
                None,
                vec![],
            ),
            case(
                "first failure waits the first step",
                &[],
                Pending,
                None,
                report(500),
                Pending,
                Some(NOW + 5 * SEC),
                vec![],
            ),
            case(
                "second failure waits the second",
                &[500],
                Pending,
                None,
                report(503),
                Pending,
                Some(NOW + 300 * SEC),
                vec![],
            ),
            case(
                "third failure waits the third",
                &[500, 0],
                Pending,
                None,
                report(500),
                Pending,
                Some(NOW + 1800 * SEC),
                vec![],
            ),
            case(
                "a timeout waits at least the floor",
                &[],
                Pending,
                None,
                timeout,
                Pending,
                Some(NOW + 60 * SEC),
                vec![],
            ),
            case(
                "retry-after is honoured within 2x",
                &[],
                Pending,
                None,
                throttled,
                Pending,
                Some(NOW + 90 * SEC),
                vec![],
            ),
            case(
                "the fourth failure is news and exhausts three retries",
                &[500, 500, 500],
                Pending,
                None,
                report(500),
                Failed,
                None,
                vec![Notice::Failing, Notice::Exhausted],
            ),
            case(
                "exhaustion after a long streak disables",
                &[500, 500, 500],
                Pending,
                long_ago,
                report(500),
                Failed,
                None,
                vec![
                    Notice::Failing,
                    Notice::Exhausted,
                    Notice::EndpointDisabled(FAILING_TOO_LONG),
                ],
            ),
            case(
                "410 ends at once and disables",
                &[],
                Pending,
                None,
                report(410),
                Failed,
                None,
                vec![Notice::Exhausted, Notice::EndpointDisabled(GONE)],
            ),
            case(
                "success after four failures recovers",
                &[500, 500, 500, 500],
                Pending,
                Some(NOW),
                report(204),
                Succeeded,
                None,
                vec![Notice::Recovered],
            ),
            case(
                "a manual failure keeps the schedule",
                &[500],
                Pending,
                None,
                manual_fail,
                Pending,
                Some(NOW),
                vec![],
            ),
            case(
                "a manual failure of a dead letter stays dead",
                &[500, 500, 500, 500],
                Failed,
                None,
                Report {
                    manual: true,
                    ..report(500)
                },
                Failed,
                None,
                vec![],
            ),
        ];
        for c in cases {
            let mut d = delivery(c.attempts_before, c.was);
            if c.was == Failed {
                d.next_attempt_ms = None;
            }
            let decision = decide(
                &d,
                &endpoint(true, c.failing_since),
                &c.report,
                &policy(),
                NOW,
            );
            assert_eq!(decision.status, c.status, "{}", c.name);
            assert_eq!(decision.next_attempt_ms, c.next, "{}", c.name);
            assert_eq!(decision.notices, c.notices, "{}", c.name);
        }
    }

    #[test]
    fn the_failing_streak_starts_at_the_first_failure_and_ends_at_a_success() {
        let d = delivery(&[], DeliveryStatus::Pending);
        let p = policy();
        let fresh = decide(&d, &endpoint(true, None), &report(500), &p, NOW);
        assert_eq!(fresh.failing_since_ms, Some(NOW));
        let ongoing = decide(&d, &endpoint(true, Some(NOW - 5)), &report(500), &p, NOW);
        assert_eq!(ongoing.failing_since_ms, Some(NOW - 5));
        let healed = decide(&d, &endpoint(true, Some(NOW - 5)), &report(200), &p, NOW);
        assert_eq!(healed.failing_since_ms, None);
    }

    #[test]
    fn a_disabled_endpoint_is_not_disabled_again() {
        let d = delivery(&[], DeliveryStatus::Pending);
        let decision = decide(&d, &endpoint(false, None), &report(410), &policy(), NOW);
        assert_eq!(decision.disable, None);
        assert_eq!(decision.notices, vec![Notice::Exhausted]);
    }

    #[test]
    fn a_recovered_delivery_counts_only_attempts_since_it_was_recovered() {
        let mut d = delivery(&[500, 500, 500], DeliveryStatus::Pending);
        d.schedule_from = 3;
        let decision = decide(&d, &endpoint(true, None), &report(500), &policy(), NOW);
        assert_eq!(decision.next_attempt_ms, Some(NOW + 5 * SEC));
    }
}
