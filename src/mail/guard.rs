//! The reputation guard: each stream's sends, hard bounces and complaints
//! counted as they happen, its rates judged against `[mail.guard]`, and a
//! stream over a limit paused (or warned about) with an event in the log.

use serde_json::{json, Value};

use super::settings::GuardSettings;
use super::warmup;
use crate::events::system_event;
use crate::store::mail_txn::MailTxn;
use crate::store::streams::{SendOutcome, Window, Windows};
use crate::store::StoreError;

/// What a stream's rates call for.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Fine,
    Warn(String),
    Pause(String),
}

/// Judges both windows; a window with fewer than `min_sends` messages says
/// nothing (two bounces in the first ten sends are not a reputation).
pub fn judge(windows: &Windows, guard: &GuardSettings) -> Verdict {
    let judged = [
        ("24 hours", &windows.last_24h),
        ("last 1000 messages", &windows.last_1000),
    ];
    let judged: Vec<_> = judged
        .into_iter()
        .filter(|(_, w)| w.sent >= u64::from(guard.min_sends))
        .collect();
    let over = |limit_complaints: f64, limit_bounces: f64| {
        judged.iter().find_map(|(name, w)| {
            if w.complaint_rate() >= limit_complaints {
                Some(format!(
                    "complaint rate {} over the {name} reached {}",
                    percent(w.complaint_rate()),
                    percent(limit_complaints)
                ))
            } else if w.bounce_rate() >= limit_bounces {
                Some(format!(
                    "hard-bounce rate {} over the {name} reached {}",
                    percent(w.bounce_rate()),
                    percent(limit_bounces)
                ))
            } else {
                None
            }
        })
    };
    if let Some(reason) = over(guard.complaint_pause_rate, guard.bounce_pause_rate) {
        return Verdict::Pause(reason);
    }
    if let Some(reason) = over(guard.complaint_warn_rate, guard.bounce_warn_rate) {
        return Verdict::Warn(reason);
    }
    Verdict::Fine
}

fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

/// A window as the API and the `stream.*` events show it.
pub fn window_json(window: &Window) -> Value {
    json!({
        "sent": window.sent,
        "hard_bounces": window.hard_bounces,
        "complaints": window.complaints,
        "bounce_rate": window.bounce_rate(),
        "complaint_rate": window.complaint_rate(),
    })
}

/// Counts what became of message `id` of `stream` and, after a bounce or
/// a complaint, judges the stream anew (see `judge_stream`).
pub fn count(
    txn: &mut dyn MailTxn,
    stream: &str,
    id: Option<u64>,
    outcome: SendOutcome,
    guard: &GuardSettings,
    now_ms: i64,
) -> Result<(), StoreError> {
    record(txn, stream, id, outcome, guard, now_ms, now_ms)?;
    if outcome != SendOutcome::Sent {
        judge_stream(txn, stream, guard, now_ms)?;
    }
    Ok(())
}

/// Counts what became of message `id` of `stream` in its windows and its
/// warm-up day, without judging: a batch of feedback judges each stream
/// once, at its end. The 24-hour window counts it at `sent_at_ms`, when
/// the message went: a report about yesterday's mail must not weigh on
/// today's sends.
pub fn record(
    txn: &mut dyn MailTxn,
    stream: &str,
    id: Option<u64>,
    outcome: SendOutcome,
    guard: &GuardSettings,
    sent_at_ms: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    txn.tally_stream(stream, sent_at_ms, outcome)?;
    let read = txn.stream_state(stream)?;
    let mut state = read.clone();
    let today = super::soft_bounces::day_of(now_ms);
    warmup::roll_to(&mut state, today);
    match (outcome, id) {
        (SendOutcome::Sent, id) => {
            if let Some(id) = id {
                txn.add_stream_send(stream, id)?;
            }
            state.sent_on_day = true;
            // Counted until the grace after a resume is over, then dropped,
            // so an ordinary send leaves the record unwritten.
            if let Some(sent) = state.sent_since_resume {
                state.sent_since_resume = (sent + 1 < guard.min_sends).then_some(sent + 1);
            }
        }
        (_, Some(id)) => txn.mark_stream_send(stream, id, outcome)?,
        (_, None) => {}
    }
    if outcome == SendOutcome::Complaint {
        state.complaints_on_day = state.complaints_on_day.saturating_add(1);
        // The ramp holds: the scheduler's copy of the state must hear it.
        txn.mail_gates_changed();
    }
    if state != read {
        txn.put_stream_state(stream, &state)?;
    }
    Ok(())
}

/// Judges `stream`'s windows: pauses it (its mail then waits in the queue)
/// or warns, each once, with a `stream.*` event.
pub fn judge_stream(
    txn: &mut dyn MailTxn,
    stream: &str,
    guard: &GuardSettings,
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut state = txn.stream_state(stream)?;
    let windows = txn.stream_windows(stream, now_ms)?;
    let in_grace = state
        .sent_since_resume
        .is_some_and(|sent| sent < guard.min_sends);
    let event = match judge(&windows, guard) {
        Verdict::Pause(reason) if !state.paused && !in_grace => {
            state.paused = true;
            state.paused_at_ms = Some(now_ms);
            state.pause_reason = Some(reason.clone());
            state.warning = Some(reason.clone());
            tracing::warn!(stream, %reason, "stream paused: its mail waits in the queue until POST /v1/streams/{stream}/resume");
            txn.mail_gates_changed();
            Some(("stream.paused", reason))
        }
        Verdict::Pause(reason) | Verdict::Warn(reason) if state.warning.is_none() => {
            state.warning = Some(reason.clone());
            tracing::warn!(stream, %reason, "stream's bounce or complaint rate is over its warning level");
            Some(("stream.warning", reason))
        }
        Verdict::Fine => {
            state.warning = None;
            None
        }
        Verdict::Pause(_) | Verdict::Warn(_) => None,
    };
    if let Some((event_type, reason)) = event {
        let data = json!({"stream": stream, "reason": reason,
                          "window_24h": window_json(&windows.last_24h),
                          "window_last_1000": window_json(&windows.last_1000)});
        txn.append_system_event(system_event(event_type, None, data), now_ms, None)?;
    }
    txn.put_stream_state(stream, &state)
}

/// Pauses or resumes `stream` by an operator's hand; false when it was
/// already so.
pub fn set_paused(
    txn: &mut dyn MailTxn,
    stream: &str,
    paused: bool,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let mut state = txn.stream_state(stream)?;
    if state.paused == paused {
        return Ok(false);
    }
    state.paused = paused;
    let (event_type, reason) = if paused {
        state.paused_at_ms = Some(now_ms);
        state.pause_reason = Some("paused through the API".to_owned());
        ("stream.paused", "paused through the API")
    } else {
        state.paused_at_ms = None;
        state.pause_reason = None;
        state.warning = None;
        state.sent_since_resume = Some(0);
        ("stream.resumed", "resumed through the API")
    };
    txn.put_stream_state(stream, &state)?;
    txn.mail_gates_changed();
    txn.append_system_event(
        system_event(
            event_type,
            None,
            json!({"stream": stream, "reason": reason}),
        ),
        now_ms,
        None,
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> GuardSettings {
        GuardSettings {
            complaint_warn_rate: 0.001,
            complaint_pause_rate: 0.003,
            bounce_warn_rate: 0.02,
            bounce_pause_rate: 0.05,
            min_sends: 100,
        }
    }

    fn windows(sent: u64, hard_bounces: u64, complaints: u64) -> Windows {
        let w = Window {
            sent,
            hard_bounces,
            complaints,
        };
        Windows {
            last_24h: w,
            last_1000: w,
        }
    }

    #[test]
    fn rates_warn_then_pause_at_the_configured_levels() {
        assert_eq!(judge(&windows(1000, 0, 0), &guard()), Verdict::Fine);
        assert!(matches!(
            judge(&windows(1000, 0, 1), &guard()),
            Verdict::Warn(_)
        ));
        assert!(
            matches!(judge(&windows(1000, 0, 3), &guard()), Verdict::Pause(r) if r.contains("complaint rate 0.30%"))
        );
        assert!(matches!(
            judge(&windows(1000, 20, 0), &guard()),
            Verdict::Warn(_)
        ));
        assert!(
            matches!(judge(&windows(1000, 50, 0), &guard()), Verdict::Pause(r) if r.contains("hard-bounce"))
        );
    }

    #[test]
    fn a_small_window_is_not_judged() {
        assert_eq!(judge(&windows(99, 50, 50), &guard()), Verdict::Fine);
        let mixed = Windows {
            last_24h: Window {
                sent: 50,
                hard_bounces: 50,
                complaints: 0,
            },
            last_1000: Window {
                sent: 1000,
                hard_bounces: 60,
                complaints: 0,
            },
        };
        assert!(matches!(judge(&mixed, &guard()), Verdict::Pause(r) if r.contains("last 1000")));
    }
}
