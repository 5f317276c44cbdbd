//! Warm-up arithmetic: a stream's daily cap from its ramp, and the ramp's
//! progress, which advances one step per day of sending without complaints.

use crate::store::records::StreamStateRecord;

/// The cap of ramp step `step`: the configured caps, then the last one
/// doubling each further day. `None` when the ramp is empty (no cap).
pub fn cap(ramp: &[u32], step: u32) -> Option<u64> {
    let last = *ramp.last()?;
    let step = step as usize;
    if step < ramp.len() {
        return Some(u64::from(ramp[step]));
    }
    let doublings = (step - ramp.len() + 1).min(40) as u32;
    Some(u64::from(last).saturating_mul(1u64 << doublings))
}

/// The step `state` is on during `today`: one further than its last
/// sending day's if that day went without complaints.
pub fn step_on(state: &StreamStateRecord, today: i64) -> u32 {
    let advances =
        state.day != 0 && state.day < today && state.sent_on_day && state.complaints_on_day == 0;
    state.warmup_step + u32::from(advances)
}

/// Moves `state`'s day counters to `today`, advancing the step as
/// `step_on` says.
pub fn roll_to(state: &mut StreamStateRecord, today: i64) {
    if state.day == today {
        return;
    }
    state.warmup_step = step_on(state, today);
    state.day = today;
    state.sent_on_day = false;
    state.complaints_on_day = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_follow_the_ramp_then_double() {
        let ramp = [50, 200, 1000];
        assert_eq!(cap(&ramp, 0), Some(50));
        assert_eq!(cap(&ramp, 2), Some(1000));
        assert_eq!(cap(&ramp, 3), Some(2000));
        assert_eq!(cap(&ramp, 4), Some(4000));
        assert_eq!(cap(&[], 0), None);
        assert!(cap(&ramp, u32::MAX).is_some());
    }

    #[test]
    fn the_ramp_advances_per_clean_sending_day_and_holds_on_complaints() {
        let mut state = StreamStateRecord::default();
        roll_to(&mut state, 100);
        assert_eq!(state.warmup_step, 0);
        state.sent_on_day = true;
        roll_to(&mut state, 101);
        assert_eq!(state.warmup_step, 1);
        state.sent_on_day = true;
        state.complaints_on_day = 1;
        roll_to(&mut state, 102);
        assert_eq!(state.warmup_step, 1, "a day with complaints holds the ramp");
        // A day without sending does not advance it either.
        roll_to(&mut state, 105);
        assert_eq!(state.warmup_step, 1);
        assert_eq!(step_on(&state, 105), 1);
    }
}
