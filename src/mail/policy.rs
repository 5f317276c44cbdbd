//! What follows a mail attempt, decided without I/O: the message's next
//! attempt or its end, the recipient's soft-bounce count, whether the
//! address is suppressed, and the `email.*` event that says so.

use std::time::Duration;

use super::classify::{verdict, Verdict};
use super::settings::MailSettings;
use crate::retry::{FailureKind, RetryPolicy};
use crate::store::records::{EmailStatus, SuppressionReason};

/// How attempts are retried; built once from the settings.
#[derive(Debug, Clone)]
pub struct MailRetry {
    pub policy: RetryPolicy,
    /// How many steps the schedule has: its last step repeats.
    pub steps: u32,
    /// A message still failing this long after its first attempt fails;
    /// time held in the queue (a paused stream, a warm-up cap) does not count.
    pub give_up_after: Duration,
    /// Days with a soft bounce, within the window, that suppress the address.
    pub soft_bounce_limit: u32,
    /// The window soft-bounce days count in, in whole days.
    pub soft_bounce_window_days: i64,
}

impl MailRetry {
    pub fn new(settings: &MailSettings) -> Self {
        MailRetry {
            policy: RetryPolicy::new(settings.retry_schedule.clone(), Duration::ZERO),
            steps: settings.retry_schedule.len() as u32,
            give_up_after: settings.give_up_after,
            soft_bounce_limit: settings.soft_bounce_limit,
            soft_bounce_window_days: super::soft_bounces::window_days(settings.soft_bounce_window),
        }
    }

    /// The wait after `failures` temporary failures: the schedule, then its
    /// last step again until `give_up_after`.
    fn delay(&self, failures: u32, random_unit: f64) -> Option<Duration> {
        if self.steps == 0 {
            return None;
        }
        self.policy.next_delay(
            failures.min(self.steps),
            FailureKind::Other,
            None,
            random_unit,
        )
    }
}

/// What a worker saw when it tried a message.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub at_ms: i64,
    /// 0 when the relay could not be reached.
    pub code: u16,
    pub text: String,
    /// Whether the reply was about the recipient (see `relay::Reply`).
    pub about_recipient: bool,
    pub latency_ms: u32,
    /// In [0, 1): picks the jitter, so decisions are reproducible.
    pub random_unit: f64,
    /// The relay's own id for the message, from an accepting reply of a
    /// real relay (not the outbox).
    pub provider_id: Option<String>,
}

/// The event a decision records, beyond the fields every `email.*` event
/// of an attempt carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Sent,
    Deferred,
    Bounced,
    /// With the reason: `soft_bounce_limit`, `expired`, `sender_refused`,
    /// `rejected`.
    Failed(&'static str),
}

/// What an attempt does to the recipient's soft-bounce days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftBounceChange {
    Unchanged,
    /// A soft bounce today.
    Add,
    /// Delivered: the days are forgotten.
    Reset,
}

/// What to do after the attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub status: EmailStatus,
    pub next_attempt_ms: Option<i64>,
    pub soft_bounce: SoftBounceChange,
    /// Suppress the address on every stream for this reason.
    pub suppress: Option<SuppressionReason>,
    /// A sender-side refusal an operator should look at.
    pub flagged: bool,
    pub event: Event,
}

/// The message as far as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub struct Message {
    pub first_attempt_ms: i64,
    /// Attempts made before this one.
    pub attempts_before: u32,
    /// The distinct days within the window the recipient would have soft-
    /// bounced on, should this attempt soft-bounce too.
    pub soft_bounce_days_with_this: u32,
}

/// Decides what follows `report` for `message`, at `now_ms`.
pub fn decide(
    message: Message,
    report: &AttemptReport,
    retry: &MailRetry,
    now_ms: i64,
) -> Decision {
    let verdict = verdict(report.code, &report.text, report.about_recipient);
    let ended = |status, event| Decision {
        status,
        next_attempt_ms: None,
        soft_bounce: SoftBounceChange::Unchanged,
        suppress: None,
        flagged: false,
        event,
    };
    match verdict {
        Verdict::Accepted => Decision {
            soft_bounce: SoftBounceChange::Reset,
            ..ended(EmailStatus::Sent, Event::Sent)
        },
        Verdict::SoftBounce | Verdict::Unreachable => {
            let soft_bounce = if verdict == Verdict::SoftBounce {
                SoftBounceChange::Add
            } else {
                SoftBounceChange::Unchanged
            };
            if verdict == Verdict::SoftBounce
                && message.soft_bounce_days_with_this >= retry.soft_bounce_limit
            {
                return Decision {
                    soft_bounce,
                    suppress: Some(SuppressionReason::SoftBounceLimit),
                    ..ended(EmailStatus::Failed, Event::Failed("soft_bounce_limit"))
                };
            }
            let failures = message.attempts_before + 1;
            let next = retry
                .delay(failures, report.random_unit)
                .map(|d| now_ms.saturating_add(d.as_millis() as i64))
                .filter(|next| {
                    (next - message.first_attempt_ms) as u128 <= retry.give_up_after.as_millis()
                });
            match next {
                Some(next) => Decision {
                    next_attempt_ms: Some(next),
                    soft_bounce,
                    ..ended(EmailStatus::Deferred, Event::Deferred)
                },
                None => Decision {
                    soft_bounce,
                    ..ended(EmailStatus::Failed, Event::Failed("expired"))
                },
            }
        }
        Verdict::HardBounce => Decision {
            suppress: Some(SuppressionReason::HardBounce),
            ..ended(EmailStatus::Bounced, Event::Bounced)
        },
        Verdict::SenderProblem => Decision {
            flagged: true,
            ..ended(EmailStatus::Failed, Event::Failed("sender_refused"))
        },
        Verdict::Rejected => ended(EmailStatus::Failed, Event::Failed("rejected")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 10_000_000;
    const MIN: i64 = 60_000;

    fn retry() -> MailRetry {
        MailRetry {
            policy: RetryPolicy::new(
                vec![Duration::from_secs(60), Duration::from_secs(300)],
                Duration::ZERO,
            ),
            steps: 2,
            give_up_after: Duration::from_secs(3600),
            soft_bounce_limit: 3,
            soft_bounce_window_days: 7,
        }
    }

    fn report(code: u16, text: &str, about_recipient: bool) -> AttemptReport {
        AttemptReport {
            at_ms: NOW,
            code,
            text: text.into(),
            about_recipient,
            latency_ms: 1,
            random_unit: 0.5,
            provider_id: None,
        }
    }

    fn message(attempts_before: u32, soft_bounce_days_with_this: u32) -> Message {
        Message {
            first_attempt_ms: NOW - 10 * MIN,
            attempts_before,
            soft_bounce_days_with_this,
        }
    }

    #[test]
    fn retries_repeat_the_last_step() {
        let retry = retry();
        assert_eq!(retry.delay(1, 0.5), Some(Duration::from_secs(60)));
        assert_eq!(retry.delay(2, 0.5), Some(Duration::from_secs(300)));
        assert_eq!(retry.delay(9, 0.5), Some(Duration::from_secs(300)));
    }

    /// One row of the decision table.
    struct Case {
        name: &'static str,
        message: Message,
        reply: AttemptReport,
        status: EmailStatus,
        next: Option<i64>,
        soft_bounce: SoftBounceChange,
        suppress: Option<SuppressionReason>,
        flagged: bool,
        event: Event,
    }

    #[test]
    fn replies_decide_the_message_and_the_address() {
        use EmailStatus::*;
        use SoftBounceChange::{Add, Reset, Unchanged};
        use SuppressionReason::*;
        let case =
            |name, message, reply, status, next, soft_bounce, suppress, flagged, event| Case {
                name,
                message,
                reply,
                status,
                next,
                soft_bounce,
                suppress,
                flagged,
                event,
            };
        let cases = [
            case(
                "accepted resets the days",
                message(0, 3),
                report(250, "2.0.0 ok", true),
                Sent,
                None,
                Reset,
                None,
                false,
                Event::Sent,
            ),
            case(
                "a 4xx defers and counts",
                message(0, 1),
                report(450, "4.2.0 later", true),
                Deferred,
                Some(NOW + MIN),
                Add,
                None,
                false,
                Event::Deferred,
            ),
            case(
                "the second deferral waits longer",
                message(1, 1),
                report(451, "4.3.0 later", true),
                Deferred,
                Some(NOW + 5 * MIN),
                Add,
                None,
                false,
                Event::Deferred,
            ),
            case(
                "no answer defers without counting",
                message(0, 3),
                report(0, "connection refused", false),
                Deferred,
                Some(NOW + MIN),
                Unchanged,
                None,
                false,
                Event::Deferred,
            ),
            case(
                "a third day of soft bounces suppresses",
                message(4, 3),
                report(450, "4.2.0 later", true),
                Failed,
                None,
                Add,
                Some(SoftBounceLimit),
                false,
                Event::Failed("soft_bounce_limit"),
            ),
            case(
                "a hard bounce suppresses at once",
                message(0, 0),
                report(550, "5.1.1 no such user", true),
                Bounced,
                None,
                Unchanged,
                Some(HardBounce),
                false,
                Event::Bounced,
            ),
            case(
                "5.7.x flags the sender side, keeps the address",
                message(0, 0),
                report(550, "5.7.1 denied", true),
                Failed,
                None,
                Unchanged,
                None,
                true,
                Event::Failed("sender_refused"),
            ),
            case(
                "a bare 5xx fails without suppressing",
                message(0, 0),
                report(550, "mailbox unavailable", true),
                Failed,
                None,
                Unchanged,
                None,
                false,
                Event::Failed("rejected"),
            ),
            case(
                "a session refusal never counts against the address",
                message(0, 0),
                report(421, "4.3.2 shutting down", false),
                Deferred,
                Some(NOW + MIN),
                Unchanged,
                None,
                false,
                Event::Deferred,
            ),
        ];
        for c in cases {
            let d = decide(c.message, &c.reply, &retry(), NOW);
            assert_eq!(d.status, c.status, "{}", c.name);
            assert_eq!(d.next_attempt_ms, c.next, "{}", c.name);
            assert_eq!(d.soft_bounce, c.soft_bounce, "{}", c.name);
            assert_eq!(d.suppress, c.suppress, "{}", c.name);
            assert_eq!(d.flagged, c.flagged, "{}", c.name);
            assert_eq!(d.event, c.event, "{}", c.name);
        }
    }

    #[test]
    fn a_message_past_give_up_after_fails_as_expired() {
        let old = Message {
            first_attempt_ms: NOW - 59 * MIN,
            attempts_before: 6,
            soft_bounce_days_with_this: 1,
        };
        let d = decide(old, &report(0, "timeout", false), &retry(), NOW);
        assert_eq!(d.status, EmailStatus::Failed);
        assert_eq!(d.event, Event::Failed("expired"));
        assert_eq!(d.next_attempt_ms, None);
    }
}
