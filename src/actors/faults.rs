//! Fault switches for tests: make a step fail, make a compensation error a number of times,
//! deliver every command twice, or crash a saga actor. All off by default; there is no HTTP
//! route or flag to turn them on, only the in-process handle a test holds.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::messages::{StepCommand, StepError};
use crate::domain::purchase::{Step, StepOutcome};
use crate::domain::saga::Call;

/// The fault switches of one sagashop instance.
#[derive(Debug, Default)]
pub struct Faults {
    failing_steps: Mutex<HashSet<Step>>,
    compensation_errors: [AtomicU32; 3],
    duplicate_delivery: AtomicBool,
    saga_panics: AtomicU32,
    held_steps: Mutex<HashSet<Step>>,
    participant_panics: [AtomicU32; 3],
}

fn toggle(set: &Mutex<HashSet<Step>>, step: Step, on: bool) {
    let mut set = set.lock().expect("faults lock");
    if on {
        set.insert(step);
    } else {
        set.remove(&step);
    }
}

fn index(step: Step) -> usize {
    step as usize
}

impl Faults {
    /// Makes every forward command of `step` answer as a business failure.
    pub fn fail_step(&self, step: Step, on: bool) {
        toggle(&self.failing_steps, step, on);
    }

    /// True when `step` is switched to fail.
    pub fn step_fails(&self, step: Step) -> bool {
        self.failing_steps
            .lock()
            .expect("faults lock")
            .contains(&step)
    }

    /// Makes the next `times` compensations of `step` fail as infrastructure errors.
    pub fn fail_compensation(&self, step: Step, times: u32) {
        self.compensation_errors[index(step)].store(times, Ordering::SeqCst);
    }

    /// Consumes one injected compensation failure of `step`, if any is left.
    pub fn take_compensation_failure(&self, step: Step) -> bool {
        self.compensation_errors[index(step)]
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// The injected answer to a step command, when a switch applies to it.
    pub fn intercept(&self, cmd: &StepCommand) -> Option<Result<StepOutcome, StepError>> {
        match cmd.call {
            Call::Execute(step) if self.step_fails(step) => {
                Some(Ok(StepOutcome::Rejected("injected fault".into())))
            }
            Call::Compensate(step) if self.take_compensation_failure(step) => {
                Some(Err(StepError("injected compensation fault".into())))
            }
            _ => None,
        }
    }

    /// Makes the next `times` batches that contain a command of `step` panic at its
    /// participant (the participant must survive it).
    pub fn panic_participant(&self, step: Step, times: u32) {
        self.participant_panics[index(step)].store(times, Ordering::SeqCst);
    }

    /// Panics if an injected participant panic is pending for `step`.
    pub fn maybe_panic_participant(&self, step: Step) {
        let pending = self.participant_panics[index(step)]
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if pending {
            panic!("injected participant panic");
        }
    }

    /// Holds (true) or releases (false) every command of `step` at its participant: held
    /// commands wait, unanswered, until the release (benchmarks of sagas in flight).
    pub fn hold_step(&self, step: Step, on: bool) {
        toggle(&self.held_steps, step, on);
    }

    /// True when commands of `step` are held.
    pub fn holds(&self, step: Step) -> bool {
        self.held_steps.lock().expect("faults lock").contains(&step)
    }

    /// Makes the router deliver every command twice.
    pub fn duplicate_deliveries(&self, on: bool) {
        self.duplicate_delivery.store(on, Ordering::SeqCst);
    }

    /// True when commands are delivered twice.
    pub fn delivers_twice(&self) -> bool {
        self.duplicate_delivery.load(Ordering::SeqCst)
    }

    /// Makes the next `times` saga actors panic when a reply reaches them.
    pub fn panic_sagas(&self, times: u32) {
        self.saga_panics.store(times, Ordering::SeqCst);
    }

    /// Consumes one injected saga panic, if any is left.
    pub fn take_saga_panic(&self) -> bool {
        self.saga_panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}
