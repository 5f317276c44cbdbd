//! What follows a webhook attempt, decided without I/O: the delivery's next
//! attempt or its end, the endpoint's failing streak, auto-disable, which
//! of Herald's own events to record, and whether the owner should hear.

use std::time::Duration;

use crate::retry::{self, RetryPolicy};
use crate::store::records::{DeliveryRecord, DeliveryStatus, EndpointRecord, FailureKind};

/// The settings the decision follows.
#[derive(Debug, Clone)]
pub struct Policy {
    pub retry: RetryPolicy,
    /// An endpoint failing continuously this long is disabled when one of
    /// its deliveries exhausts its schedule.
    pub disable_after: Duration,
    /// Failed attempts in a row an endpoint may have; the next one is news.
    pub failing_threshold: u32,
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

/// An endpoint's run of failed attempts, across all its deliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streak {
    /// Attempts failed in a row since the last success.
    pub failed_attempts: u32,
    /// This run was announced (`delivery.failing`).
    pub announced: bool,
}

/// What an attempt made of the streak worth telling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreakNews {
    /// The run just passed the threshold.
    Failing,
    /// A success ended a run that had been announced.
    Recovered,
}

impl Streak {
    /// The run after one more attempt: a success ends it, a failure
    /// lengthens it, and the first failure past `threshold` announces it.
    /// Announcing on "past and not yet announced" rather than "exactly one
    /// past" keeps it once per run when the threshold changes mid-run.
    pub fn after(self, succeeded: bool, threshold: u32) -> (Streak, Option<StreakNews>) {
        if succeeded {
            let news = self.announced.then_some(StreakNews::Recovered);
            return (Streak::default(), news);
        }
        let failed_attempts = self.failed_attempts.saturating_add(1);
        let passed = failed_attempts > threshold && !self.announced;
        let streak = Streak {
            failed_attempts,
            announced: self.announced || passed,
        };
        (streak, passed.then_some(StreakNews::Failing))
    }
}

/// An event Herald records about a delivery or its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The endpoint's failed attempts in a row passed the threshold.
    Failing,
    /// The delivery's schedule ran out: it is a dead letter.
    Exhausted,
    /// A success ended the endpoint's announced run of failures.
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

/// Why an endpoint's owner should be emailed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerAlert {
    /// Its failed attempts in a row passed the threshold.
    Failing,
    /// It was disabled (its record says why).
    Disabled,
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
    /// The endpoint's run of failed attempts after this attempt.
    pub streak: Streak,
    /// Disable the endpoint (it is enabled now) for this reason.
    pub disable: Option<&'static str>,
    /// Events to record, in order.
    pub notices: Vec<Notice>,
    /// What to tell the endpoint's owner, if anything; being disabled
    /// outweighs failing, since one alert a day is all an owner gets.
    pub alert: Option<OwnerAlert>,
}

/// Decides what follows `report` on `delivery` (its attempts before this
/// one) to `endpoint`, whose run of failures is `streak`, at `now_ms`.
pub fn decide(
    delivery: &DeliveryRecord,
    endpoint: &EndpointRecord,
    streak: Streak,
    report: &Report,
    policy: &Policy,
    now_ms: i64,
) -> Decision {
    let succeeded = report.succeeded();
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
    let (streak, news) = streak.after(succeeded, policy.failing_threshold);

    let mut notices = Vec::new();
    if succeeded {
        if news == Some(StreakNews::Recovered) {
            notices.push(Notice::Recovered);
        }
        return Decision {
            status,
            next_attempt_ms,
            failing_since_ms: None,
            streak,
            disable: None,
            notices,
            alert: None,
        };
    }
    let failing_since_ms = endpoint.failing_since_ms.unwrap_or(now_ms);
    let failing = news == Some(StreakNews::Failing);
    if failing {
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
    let alert = if disable.is_some() {
        Some(OwnerAlert::Disabled)
    } else {
        failing.then_some(OwnerAlert::Failing)
    };
    Decision {
        status,
        next_attempt_ms,
        failing_since_ms: Some(failing_since_ms),
        streak,
        disable,
        notices,
        alert,
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
            failing_threshold: 3,
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

    /// A run of `n` failed attempts, announced once past the policy's 3.
    fn run(n: u32) -> Streak {
        Streak {
            failed_attempts: n,
            announced: n > 3,
        }
    }

    /// One row of the decision table.
    struct Case {
        name: &'static str,
        attempts_before: &'static [u16],
        streak: Streak,
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
        let case = |name,
                    attempts_before: &'static [u16],
                    was,
                    failing_since,
                    report,
                    status,
                    next,
                    notices| Case {
            name,
            attempts_before,
            streak: run(attempts_before
                .iter()
                .filter(|s| **s >= 300 || **s < 200)
                .count() as u32),
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
                "the fourth failure in a row is news and exhausts three retries",
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
                c.streak,
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
        let fresh = decide(
            &d,
            &endpoint(true, None),
            Streak::default(),
            &report(500),
            &p,
            NOW,
        );
        assert_eq!(fresh.failing_since_ms, Some(NOW));
        let ongoing = decide(
            &d,
            &endpoint(true, Some(NOW - 5)),
            run(1),
            &report(500),
            &p,
            NOW,
        );
        assert_eq!(ongoing.failing_since_ms, Some(NOW - 5));
        let healed = decide(
            &d,
            &endpoint(true, Some(NOW - 5)),
            run(1),
            &report(200),
            &p,
            NOW,
        );
        assert_eq!(healed.failing_since_ms, None);
    }

    #[test]
    fn a_disabled_endpoint_is_not_disabled_again() {
        let d = delivery(&[], DeliveryStatus::Pending);
        let decision = decide(
            &d,
            &endpoint(false, None),
            Streak::default(),
            &report(410),
            &policy(),
            NOW,
        );
        assert_eq!(decision.disable, None);
        assert_eq!(decision.notices, vec![Notice::Exhausted]);
    }

    #[test]
    fn a_recovered_delivery_counts_only_attempts_since_it_was_recovered() {
        let mut d = delivery(&[500, 500, 500], DeliveryStatus::Pending);
        d.schedule_from = 3;
        let decision = decide(
            &d,
            &endpoint(true, None),
            Streak::default(),
            &report(500),
            &policy(),
            NOW,
        );
        assert_eq!(decision.next_attempt_ms, Some(NOW + 5 * SEC));
    }

    #[test]
    fn a_run_is_announced_once_past_the_threshold_and_ended_by_a_success() {
        let mut streak = Streak::default();
        let mut news = Vec::new();
        for _ in 0..6 {
            let (next, said) = streak.after(false, 3);
            streak = next;
            news.push(said);
        }
        assert_eq!(
            news,
            [None, None, None, Some(StreakNews::Failing), None, None],
            "the 4th failure passes 3, and later ones say nothing"
        );
        assert_eq!(
            streak,
            Streak {
                failed_attempts: 6,
                announced: true
            }
        );
        let (ended, said) = streak.after(true, 3);
        assert_eq!(
            (ended, said),
            (Streak::default(), Some(StreakNews::Recovered))
        );
        // A new run is announced again.
        let (again, said) = run(3).after(false, 3);
        assert_eq!(
            (again.failed_attempts, said),
            (4, Some(StreakNews::Failing))
        );
    }

    #[test]
    fn a_run_below_the_threshold_ends_quietly_and_a_lowered_threshold_announces_once() {
        assert_eq!(run(2).after(true, 3), (Streak::default(), None));
        let long_unannounced = Streak {
            failed_attempts: 50,
            announced: false,
        };
        let (streak, said) = long_unannounced.after(false, 10);
        assert_eq!(said, Some(StreakNews::Failing));
        assert_eq!(streak.after(false, 10).1, None);
        let full = Streak {
            failed_attempts: u32::MAX,
            announced: true,
        };
        assert_eq!(full.after(false, 3), (full, None), "saturates");
    }

    #[test]
    fn the_streak_spans_deliveries_and_the_owner_hears_of_failing_and_disabling() {
        // Each failure is the first of its own delivery: only the
        // endpoint's run makes the 4th news.
        let fresh = delivery(&[], DeliveryStatus::Pending);
        let p = policy();
        let third = decide(
            &fresh,
            &endpoint(true, Some(NOW)),
            run(2),
            &report(500),
            &p,
            NOW,
        );
        assert_eq!((third.notices.clone(), third.alert), (vec![], None));
        let fourth = decide(
            &fresh,
            &endpoint(true, Some(NOW)),
            run(3),
            &report(500),
            &p,
            NOW,
        );
        assert_eq!(fourth.notices, vec![Notice::Failing]);
        assert_eq!(fourth.alert, Some(OwnerAlert::Failing));
        assert_eq!(fourth.streak, run(4));
        let fifth = decide(
            &fresh,
            &endpoint(true, Some(NOW)),
            run(4),
            &report(500),
            &p,
            NOW,
        );
        assert_eq!((fifth.notices, fifth.alert), (vec![], None));
        let healed = decide(
            &fresh,
            &endpoint(true, Some(NOW)),
            run(9),
            &report(200),
            &p,
            NOW,
        );
        assert_eq!(healed.notices, vec![Notice::Recovered]);
        assert_eq!((healed.streak, healed.alert), (Streak::default(), None));
        // 410 as the run passes the threshold: one alert, about disabling.
        let gone = decide(
            &fresh,
            &endpoint(true, Some(NOW)),
            run(3),
            &report(410),
            &p,
            NOW,
        );
        assert_eq!(
            gone.notices,
            vec![
                Notice::Failing,
                Notice::Exhausted,
                Notice::EndpointDisabled(GONE)
            ]
        );
        assert_eq!(gone.alert, Some(OwnerAlert::Disabled));
        let already_off = decide(
            &fresh,
            &endpoint(false, None),
            run(0),
            &report(410),
            &p,
            NOW,
        );
        assert_eq!(already_off.alert, None);
    }
}
