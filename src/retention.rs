//! The retention pass: deletes settled deliveries, log events, old ESP
//! feedback and the bodies of settled mail once they are older than
//! configured, in small writer operations so that requests keep flowing,
//! and drops attempt and stream tallies older than anything reads and spent
//! replay tokens older than any request still accepted. Tracked calls have
//! their own pass (`tracking::retention`).

use std::time::{Duration, Instant};

use crate::clock;
use crate::store::records::DeliveryStatus;
use crate::store::retention::Sweep;
use crate::store::{SubmitError, Writer};
use crate::worker::{Step, Worker};

/// Rows one writer operation examines: a few milliseconds of work.
pub(crate) const BUDGET: usize = 1_000;
/// Pause between operations while a sweep has more, so a large backlog
/// shares the writer with requests.
pub(crate) const BREATHER: Duration = Duration::from_millis(20);
/// Stats look back one day; tallies a minute older than that are never read.
const TALLY_HORIZON_MS: i64 = 24 * 3_600_000 + 60_000;
/// A stream's health looks back one day, from the start of a bucket.
const STREAM_TALLY_HORIZON_MS: i64 =
    crate::store::streams::DAY_MS + crate::store::streams::TALLY_BUCKET_MS;
/// A feedback request signed longer ago than the tolerance is refused, so
/// its token need not be remembered; twice that leaves room for clock skew.
const REPLAY_TOKEN_HORIZON_MS: i64 = 2 * crate::feedback::TIMESTAMP_TOLERANCE_MS;

/// How long each kind of record is kept; `None` keeps it forever.
#[derive(Debug, Clone, Default)]
pub struct RetentionSettings {
    /// Log events (`events.retention`).
    pub events: Option<Duration>,
    /// Succeeded deliveries with their attempts (`webhooks.retention`).
    pub deliveries: Option<Duration>,
    /// Failed deliveries, the dead letters (`webhooks.dead_letter_retention`).
    pub dead_letters: Option<Duration>,
    /// Text and HTML of settled messages (`mail.body_retention`).
    pub mail_bodies: Option<Duration>,
    /// ESP feedback records with their dedupe rows (`mail.feedback_retention`).
    pub feedback: Option<Duration>,
    /// How often the pass runs (`storage.prune_interval`).
    pub interval: Duration,
}

/// Where each kind of record ages out for a slice run at one moment:
/// what is older goes. Both backends' passes work from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Horizons {
    /// Attempt tallies of minutes before this one.
    pub tally_minute: i64,
    pub stream_tally_ms: i64,
    pub replay_token_ms: i64,
    pub events_ms: Option<i64>,
    pub deliveries_ms: Option<i64>,
    pub dead_letters_ms: Option<i64>,
    pub mail_bodies_ms: Option<i64>,
    pub feedback_ms: Option<i64>,
}

impl RetentionSettings {
    pub(crate) fn horizons(&self, now_ms: i64) -> Horizons {
        let horizon = |keep: Option<Duration>| keep.map(|k| now_ms - k.as_millis() as i64);
        Horizons {
            tally_minute: (now_ms - TALLY_HORIZON_MS).div_euclid(60_000),
            stream_tally_ms: now_ms - STREAM_TALLY_HORIZON_MS,
            replay_token_ms: now_ms - REPLAY_TOKEN_HORIZON_MS,
            events_ms: horizon(self.events),
            deliveries_ms: horizon(self.deliveries),
            dead_letters_ms: horizon(self.dead_letters),
            mail_bodies_ms: horizon(self.mail_bodies),
            feedback_ms: horizon(self.feedback),
        }
    }
}

impl Horizons {
    /// The settled status a deliveries phase deletes, and its horizon.
    pub(crate) fn settled(&self, phase: Phase) -> Option<(DeliveryStatus, i64)> {
        match phase {
            Phase::Deliveries => self
                .deliveries_ms
                .map(|before| (DeliveryStatus::Succeeded, before)),
            Phase::DeadLetters => self
                .dead_letters_ms
                .map(|before| (DeliveryStatus::Failed, before)),
            _ => None,
        }
    }
}

/// What a pass does, in order: deliveries go before events, since a
/// deleted dead letter may free its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Tallies,
    StreamTallies,
    StreamSends,
    ReplayTokens,
    Deliveries,
    DeadLetters,
    Events,
    MailBodies,
    Feedback,
}

pub(crate) const PHASES: [Phase; 9] = [
    Phase::Tallies,
    Phase::StreamTallies,
    Phase::StreamSends,
    Phase::ReplayTokens,
    Phase::Deliveries,
    Phase::DeadLetters,
    Phase::Events,
    Phase::MailBodies,
    Phase::Feedback,
];

pub struct Retention {
    writer: Writer,
    settings: RetentionSettings,
    /// Index in `PHASES` of the phase under way.
    phase: usize,
    /// Where the phase under way continues (an id, seq or endpoint).
    cursor: Option<u128>,
    removed: usize,
}

impl Retention {
    pub fn new(writer: Writer, settings: RetentionSettings) -> Self {
        Retention {
            writer,
            settings,
            phase: 0,
            cursor: None,
            removed: 0,
        }
    }

    fn next_phase(&mut self) -> Step {
        if self.removed > 0 {
            tracing::info!(
                phase = ?PHASES[self.phase],
                removed = self.removed,
                "retention removed what aged out"
            );
        }
        self.phase += 1;
        self.cursor = None;
        self.removed = 0;
        if self.phase == PHASES.len() {
            self.phase = 0;
            return Step::Idle(Some(Instant::now() + self.settings.interval));
        }
        Step::Busy
    }

    /// One slice of the phase under way: what it removed and where the
    /// next continues; `None` when the phase has nothing (more) to do.
    fn slice(&self, phase: Phase, now: i64) -> Result<Option<(usize, Option<u128>)>, SubmitError> {
        let horizons = self.settings.horizons(now);
        let after = self.cursor.unwrap_or(0);
        let as_u64 = |sweep: Sweep| (sweep.removed, sweep.next_after.map(u128::from));
        let done = match phase {
            Phase::Tallies => {
                let before_minute = horizons.tally_minute;
                self.writer.write_blocking(move |txn| {
                    txn.sweep_attempt_tallies(before_minute, after, BUDGET)
                })?
            }
            Phase::StreamTallies => {
                let before = horizons.stream_tally_ms;
                let removed = self
                    .writer
                    .write_blocking(move |txn| txn.prune_stream_tally(before, BUDGET))?;
                (removed, (removed == BUDGET).then_some(0))
            }
            Phase::StreamSends => {
                let removed = self
                    .writer
                    .write_blocking(move |txn| txn.prune_stream_sends(BUDGET))?;
                (removed, (removed == BUDGET).then_some(0))
            }
            Phase::ReplayTokens => {
                let before = horizons.replay_token_ms;
                let removed = self
                    .writer
                    .write_blocking(move |txn| txn.prune_replay_tokens(before, BUDGET))?;
                (removed, (removed == BUDGET).then_some(0))
            }
            Phase::Deliveries | Phase::DeadLetters => {
                let Some((status, before)) = horizons.settled(phase) else {
                    return Ok(None);
                };
                let after = after as u64;
                as_u64(self.writer.write_blocking(move |txn| {
                    txn.sweep_settled_deliveries(status, before, after, BUDGET)
                })?)
            }
            Phase::Events => {
                let Some(before) = horizons.events_ms else {
                    return Ok(None);
                };
                let after = after as u64;
                as_u64(
                    self.writer
                        .write_blocking(move |txn| txn.sweep_events(before, after, BUDGET))?,
                )
            }
            Phase::Feedback => {
                let Some(before) = horizons.feedback_ms else {
                    return Ok(None);
                };
                let after = after as u64;
                as_u64(
                    self.writer
                        .write_blocking(move |txn| txn.sweep_feedback(before, after, BUDGET))?,
                )
            }
            Phase::MailBodies => {
                let Some(before) = horizons.mail_bodies_ms else {
                    return Ok(None);
                };
                let after = after as u64;
                as_u64(
                    self.writer
                        .write_blocking(move |txn| txn.sweep_mail_bodies(before, after, BUDGET))?,
                )
            }
        };
        Ok(Some(done))
    }
}

impl Worker for Retention {
    fn name(&self) -> String {
        "retention".into()
    }

    fn work(&mut self) -> Step {
        let phase = PHASES[self.phase];
        match self.slice(phase, clock::now_ms()) {
            Ok(Some((removed, Some(next)))) => {
                self.removed += removed;
                self.cursor = Some(next);
                Step::Idle(Some(Instant::now() + BREATHER))
            }
            Ok(Some((removed, None))) => {
                self.removed += removed;
                self.next_phase()
            }
            Ok(None) => self.next_phase(),
            Err(e) => {
                tracing::warn!(error = %e, phase = ?phase, "retention failed; retrying at the next interval");
                self.phase = PHASES.len() - 1;
                self.removed = 0;
                self.next_phase()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::clock;
    use crate::events::{self, AppendBatch};
    use crate::store::records::{AttemptRecord, DeliveryStatus};
    use crate::store::webhooks::DeliveryFilter;
    use crate::store::{Store, Writer};

    fn append(writer: &Writer, body: &'static [u8]) {
        let event = events::parse_event(body).unwrap();
        writer
            .write_blocking(move |txn| events::append(txn, AppendBatch::one(event)).map(drop))
            .unwrap();
    }

    /// An event with a pending delivery stays; once that delivery succeeded
    /// and was deleted, the event goes too, except the log's last.
    #[test]
    fn sweeps_keep_what_a_pending_delivery_needs_and_the_last_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("herald.redb")).unwrap();
        let (writer, thread) = Writer::start(&store, 64, 64, Default::default()).unwrap();
        let mut endpoint = crate::webhooks::endpoint::new_record(clock::now_ms());
        endpoint.url = "https://example.com/hook".into();
        endpoint.event_types = vec!["hooked".into()];
        let endpoint_id = endpoint.id;
        writer
            .write_blocking(move |txn| txn.put_endpoint(endpoint))
            .unwrap();
        append(&writer, br#"{"type":"hooked"}"#);
        append(&writer, br#"{"type":"plain"}"#);
        append(&writer, br#"{"type":"plain"}"#);
        let later = clock::now_ms() + 60_000;
        let sweep = writer
            .write_blocking(move |txn| txn.sweep_events(later, 0, 1_000))
            .unwrap();
        assert_eq!(sweep.removed, 1, "only the middle plain event may go");
        let read = store.read().unwrap();
        assert!(read.event_at_seq(1).unwrap().is_some());
        assert!(read.event_at_seq(3).unwrap().is_some());
        drop(read);

        // The delivery succeeds: it and then its event may go.
        writer
            .write_blocking(move |txn| {
                let mut d = txn.delivery(1)?.expect("the fan-out made delivery 1");
                let due = d.next_attempt_ms.take();
                d.status = DeliveryStatus::Succeeded;
                d.attempts.push(AttemptRecord {
                    at_ms: clock::now_ms(),
                    status_code: 200,
                    error: None,
                    failure: None,
                    latency_ms: 3,
                    response: String::new(),
                    manual: false,
                });
                txn.put_delivery(1, &d, due)
            })
            .unwrap();
        // Delivery 1 is the newest delivery: ids resume from it, so it stays.
        let sweep = writer
            .write_blocking(move |txn| {
                txn.sweep_settled_deliveries(DeliveryStatus::Succeeded, later, 0, 1_000)
            })
            .unwrap();
        assert_eq!(sweep.removed, 0);
        append(&writer, br#"{"type":"hooked"}"#);
        let sweep = writer
            .write_blocking(move |txn| {
                txn.sweep_settled_deliveries(DeliveryStatus::Succeeded, later, 0, 1_000)
            })
            .unwrap();
        assert_eq!(sweep.removed, 1);
        let read = store.read().unwrap();
        let succeeded = DeliveryFilter {
            status: Some(DeliveryStatus::Succeeded),
            ..Default::default()
        };
        assert!(read
            .scan_deliveries(&succeeded, 0, 10)
            .unwrap()
            .deliveries
            .is_empty());
        assert_eq!(
            read.endpoint_delivery_counts(endpoint_id)
                .unwrap()
                .succeeded,
            0
        );
        drop(read);
        let sweep = writer
            .write_blocking(move |txn| txn.sweep_events(later, 0, 1_000))
            .unwrap();
        // Seq 1 (its delivery gone) and seq 3; seq 4 is pending and last.
        assert_eq!(sweep.removed, 2);
        thread.stop();
    }
}
