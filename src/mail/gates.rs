//! Which streams the scheduler may release mail of now: not a paused
//! one, and not past a warming stream's cap for the day. The durable state
//! is the writer's; this is the scheduler's copy, read again whenever a
//! commit says a stream's state changed, and at each new UTC day.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::settings::MailSettings;
use super::soft_bounces::day_of;
use super::warmup;
use crate::clock;
use crate::store::due::stream_key;
use crate::store::streams::DAY_MS;
use crate::store::Store;

struct Gate {
    name: String,
    ramp: Vec<u32>,
    paused: bool,
    /// Today's warm-up cap; `None`: no cap.
    cap: Option<u64>,
    /// Messages released today, or the durable count if it is higher (after
    /// a restart).
    released_today: u64,
}

/// Whether a stream's next message may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passage {
    Open,
    /// Paused: until it is resumed.
    Closed,
    /// The day's cap is used up: until this instant (the next UTC day).
    Until(Instant),
}

pub struct StreamGates {
    store: Store,
    gates: HashMap<u128, Gate>,
    /// The UTC day the caps and counts are for.
    day: i64,
}

impl StreamGates {
    pub fn new(store: Store, settings: &MailSettings) -> Self {
        let gates = settings
            .streams
            .values()
            .map(|s| {
                let gate = Gate {
                    name: s.name.clone(),
                    ramp: s.warmup.clone(),
                    paused: false,
                    cap: None,
                    released_today: 0,
                };
                (stream_key(&s.name), gate)
            })
            .collect();
        let mut gates = StreamGates {
            store,
            gates,
            day: i64::MIN,
        };
        gates.refresh(clock::now_ms());
        gates
    }

    /// Reads every stream's state anew.
    pub fn refresh(&mut self, now_ms: i64) {
        let today = day_of(now_ms);
        let new_day = today != self.day;
        self.day = today;
        let snapshot = match self.store.read() {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::error!(error = %e, "reading the streams' state failed; the last one read stands");
                return;
            }
        };
        for gate in self.gates.values_mut() {
            let state = match snapshot.stream_state(&gate.name) {
                Ok(state) => state,
                Err(e) => {
                    tracing::error!(error = %e, stream = %gate.name, "reading a stream's state failed");
                    continue;
                }
            };
            gate.paused = state.paused;
            gate.cap = warmup::cap(&gate.ramp, warmup::step_on(&state, today));
            if new_day {
                gate.released_today = 0;
            }
            if gate.cap.is_some() {
                // After a restart the day's sends so far still count.
                let midnight = now_ms - now_ms.rem_euclid(DAY_MS);
                match snapshot.stream_sent_since(&gate.name, midnight) {
                    Ok(sent) => gate.released_today = gate.released_today.max(sent),
                    Err(e) => {
                        tracing::error!(error = %e, stream = %gate.name, "reading a stream's sends failed")
                    }
                }
            }
        }
    }

    /// Whether stream `key` may release a message now.
    pub fn passage(&mut self, key: u128, now: Instant) -> Passage {
        let now_ms = clock::now_ms();
        if day_of(now_ms) != self.day {
            self.refresh(now_ms);
        }
        let Some(gate) = self.gates.get_mut(&key) else {
            return Passage::Open;
        };
        if gate.paused {
            return Passage::Closed;
        }
        if gate.cap.is_some_and(|cap| gate.released_today >= cap) {
            let day_ms = 24 * 3600 * 1000;
            let to_midnight = day_ms - now_ms.rem_euclid(day_ms);
            return Passage::Until(now + Duration::from_millis(to_midnight as u64));
        }
        Passage::Open
    }

    /// Counts a message of stream `key` released.
    pub fn released(&mut self, key: u128) {
        if let Some(gate) = self.gates.get_mut(&key) {
            gate.released_today += 1;
        }
    }

    /// Takes back a release that sent nothing.
    pub fn unreleased(&mut self, key: u128) {
        if let Some(gate) = self.gates.get_mut(&key) {
            gate.released_today = gate.released_today.saturating_sub(1);
        }
    }
}
