//! The capture pin's KS state machine: what the simulated hardware must do
//! on each `SetDeviceState` transition (avshws's `CCapturePin::SetState`,
//! with the clean-up ordering the KS rules require).

/// `KSSTATE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KsState {
    /// `KSSTATE_STOP`.
    Stop = 0,
    /// `KSSTATE_ACQUIRE`.
    Acquire = 1,
    /// `KSSTATE_PAUSE`.
    Pause = 2,
    /// `KSSTATE_RUN`.
    Run = 3,
}

impl KsState {
    /// Maps the raw `KSSTATE` value; anything else is `None`.
    #[must_use]
    pub const fn from_raw(raw: i32) -> Option<Self> {
        match raw {
            0 => Some(Self::Stop),
            1 => Some(Self::Acquire),
            2 => Some(Self::Pause),
            3 => Some(Self::Run),
            _ => None,
        }
    }
}

/// Whether a connected pin may change its format (`SetDataFormat` with an
/// old format): only while stopped, when no frame of the old size is queued.
#[must_use]
pub const fn format_change_allowed(state: KsState) -> bool {
    matches!(state, KsState::Stop)
}

/// One thing the pin does to its hardware during a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HardwareAction {
    /// STOP → ACQUIRE: claim the hardware (one streaming pin per device),
    /// build the engine for the connection format, reset picture numbers and
    /// drop counts.
    Acquire,
    /// PAUSE → RUN: start (or resume) the timer.
    Run,
    /// RUN → PAUSE: stop the timer and wait for its DPC; queued targets stay.
    Pause,
    /// PAUSE → ACQUIRE: stop the timer, wait for the DPC, and hand every
    /// queued target back (delete every clone, free staging slots) so the
    /// frames complete.
    StopAndFlush,
    /// ACQUIRE → STOP: release the hardware claim.
    Release,
}

/// The actions for a transition, in order. KS steps a pin one state at a
/// time, but a skipped step (STOP → RUN, RUN → STOP) is answered with the
/// actions of every step in between.
#[must_use]
pub fn transition(from: KsState, to: KsState) -> ActionList {
    let mut list = ActionList::default();
    let mut state = from;
    while state != to {
        let next = if to > state {
            step_up(state)
        } else {
            step_down(state)
        };
        let action = match (state, next) {
            (KsState::Stop, KsState::Acquire) => Some(HardwareAction::Acquire),
            (KsState::Pause, KsState::Run) => Some(HardwareAction::Run),
            (KsState::Run, KsState::Pause) => Some(HardwareAction::Pause),
            (KsState::Pause, KsState::Acquire) => Some(HardwareAction::StopAndFlush),
            (KsState::Acquire, KsState::Stop) => Some(HardwareAction::Release),
            _ => None,
        };
        if let Some(a) = action {
            list.push(a);
        }
        state = next;
    }
    list
}

const fn step_up(s: KsState) -> KsState {
    match s {
        KsState::Stop => KsState::Acquire,
        KsState::Acquire => KsState::Pause,
        KsState::Pause | KsState::Run => KsState::Run,
    }
}

const fn step_down(s: KsState) -> KsState {
    match s {
        KsState::Run => KsState::Pause,
        KsState::Pause => KsState::Acquire,
        KsState::Acquire | KsState::Stop => KsState::Stop,
    }
}

/// Up to three actions, without a heap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActionList {
    actions: [Option<HardwareAction>; 3],
    len: usize,
}

impl ActionList {
    fn push(&mut self, a: HardwareAction) {
        if let Some(slot) = self.actions.get_mut(self.len) {
            *slot = Some(a);
            self.len += 1;
        }
    }

    /// The actions in order.
    pub fn iter(&self) -> impl Iterator<Item = HardwareAction> + '_ {
        self.actions.iter().take(self.len).filter_map(|a| *a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HardwareAction::{Acquire, Pause, Release, Run, StopAndFlush};

    fn actions(from: KsState, to: KsState) -> ([Option<HardwareAction>; 3], usize) {
        let l = transition(from, to);
        (l.actions, l.len)
    }

    #[test]
    fn single_steps_match_the_sample_state_machine() {
        assert_eq!(
            actions(KsState::Stop, KsState::Acquire),
            ([Some(Acquire), None, None], 1)
        );
        assert_eq!(actions(KsState::Acquire, KsState::Pause).1, 0);
        assert_eq!(
            actions(KsState::Pause, KsState::Run),
            ([Some(Run), None, None], 1)
        );
        assert_eq!(
            actions(KsState::Run, KsState::Pause),
            ([Some(Pause), None, None], 1)
        );
        assert_eq!(
            actions(KsState::Pause, KsState::Acquire),
            ([Some(StopAndFlush), None, None], 1)
        );
        assert_eq!(
            actions(KsState::Acquire, KsState::Stop),
            ([Some(Release), None, None], 1)
        );
        assert_eq!(actions(KsState::Run, KsState::Run).1, 0);
    }

    #[test]
    fn skipped_steps_run_every_action_in_order() {
        let down_list = transition(KsState::Run, KsState::Stop);
        let mut down = down_list.iter();
        assert_eq!(
            [down.next(), down.next(), down.next(), down.next()],
            [Some(Pause), Some(StopAndFlush), Some(Release), None]
        );
        let up_list = transition(KsState::Stop, KsState::Run);
        let mut up = up_list.iter();
        assert_eq!(
            [up.next(), up.next(), up.next()],
            [Some(Acquire), Some(Run), None]
        );
    }

    #[test]
    fn format_changes_only_in_stop() {
        assert!(format_change_allowed(KsState::Stop));
        assert!(!format_change_allowed(KsState::Acquire));
        assert!(!format_change_allowed(KsState::Run));
    }

    #[test]
    fn raw_states_map_and_garbage_is_refused() {
        assert_eq!(KsState::from_raw(3), Some(KsState::Run));
        assert_eq!(KsState::from_raw(4), None);
        assert_eq!(KsState::from_raw(-1), None);
    }
}
