//! Fault switches for tests and benchmarks: make a step fail, make a compensation error a
//! number of times, deliver every command twice, crash a saga actor or a participant, or hold
//! a step's commands. All off by default; there is no HTTP route to turn them on, only the
//! in-process handle a test holds (and the benchmarks' `--hold-payments`).
//!
//! The switches exist only with the cargo feature `faults` (the tests turn it on through the
//! crate's dev-dependency on itself). Without it [`Faults`] is an empty type whose checks are
//! constant `false`/`None`, so a production build carries no fault code on its hot paths.
//! Every switch counts how often it fired ([`Faults::fired`]), so a test that injects a fault
//! can prove that the fault really happened.

#[cfg(feature = "faults")]
pub use switches::{Fault, Faults};

#[cfg(not(feature = "faults"))]
pub use off::Faults;

#[cfg(feature = "faults")]
mod switches {
    use std::collections::{HashMap, HashSet};
    use std::future::Future;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use tokio::sync::watch;

    use crate::actors::messages::{StepCommand, StepError};
    use crate::domain::purchase::{Step, StepOutcome};
    use crate::domain::saga::Call;

    /// A switch, as counted by [`Faults::fired`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Fault {
        /// A forward command of the step was answered as a business failure.
        StepFails(Step),
        /// A compensation of the step was answered as an infrastructure error.
        CompensationFails(Step),
        /// A command was delivered twice.
        DuplicateDelivery,
        /// A saga actor panicked on a reply.
        SagaPanic,
        /// A participant panicked in a batch containing a command of the step.
        ParticipantPanic(Step),
        /// A command of the step arrived while the step was held.
        StepHeld(Step),
    }

    /// The fault switches of one sagashop instance.
    #[derive(Debug)]
    pub struct Faults {
        failing_steps: Mutex<HashSet<Step>>,
        compensation_errors: [AtomicU32; 3],
        duplicate_delivery: AtomicBool,
        saga_panics: AtomicU32,
        held_steps: watch::Sender<HashSet<Step>>,
        participant_panics: [AtomicU32; 3],
        fired: Mutex<HashMap<Fault, u64>>,
    }

    impl Default for Faults {
        fn default() -> Self {
            Self {
                failing_steps: Mutex::default(),
                compensation_errors: Default::default(),
                duplicate_delivery: AtomicBool::default(),
                saga_panics: AtomicU32::default(),
                held_steps: watch::Sender::new(HashSet::new()),
                participant_panics: Default::default(),
                fired: Mutex::default(),
            }
        }
    }

    fn toggle(set: &mut HashSet<Step>, step: Step, on: bool) -> bool {
        if on {
            set.insert(step)
        } else {
            set.remove(&step)
        }
    }

    fn index(step: Step) -> usize {
        step as usize
    }

    /// Takes one from a countdown switch; true when one was left.
    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    impl Faults {
        /// How many times `fault` fired so far.
        pub fn fired(&self, fault: Fault) -> u64 {
            let fired = self.fired.lock().expect("faults lock");
            fired.get(&fault).copied().unwrap_or(0)
        }

        fn record(&self, fault: Fault) {
            *self
                .fired
                .lock()
                .expect("faults lock")
                .entry(fault)
                .or_default() += 1;
        }

        /// Makes every forward command of `step` answer as a business failure.
        pub fn fail_step(&self, step: Step, on: bool) {
            toggle(
                &mut self.failing_steps.lock().expect("faults lock"),
                step,
                on,
            );
        }

        /// Makes the next `times` compensations of `step` fail as infrastructure errors.
        pub fn fail_compensation(&self, step: Step, times: u32) {
            self.compensation_errors[index(step)].store(times, Ordering::SeqCst);
        }

        /// The injected answer to a step command, when a switch applies to it.
        pub fn intercept(&self, cmd: &StepCommand) -> Option<Result<StepOutcome, StepError>> {
            let (fault, answer) = match cmd.call {
                Call::Execute(step)
                    if self
                        .failing_steps
                        .lock()
                        .expect("faults lock")
                        .contains(&step) =>
                {
                    (
                        Fault::StepFails(step),
                        Ok(StepOutcome::Rejected("injected fault".into())),
                    )
                }
                Call::Compensate(step) if take(&self.compensation_errors[index(step)]) => (
                    Fault::CompensationFails(step),
                    Err(StepError("injected compensation fault".into())),
                ),
                _ => return None,
            };
            self.record(fault);
            Some(answer)
        }

        /// Makes the next `times` batches that contain a command of `step` panic at its
        /// participant (the participant must survive it).
        pub fn panic_participant(&self, step: Step, times: u32) {
            self.participant_panics[index(step)].store(times, Ordering::SeqCst);
        }

        /// Panics if an injected participant panic is pending for `step`.
        pub fn maybe_panic_participant(&self, step: Step) {
            if take(&self.participant_panics[index(step)]) {
                self.record(Fault::ParticipantPanic(step));
                panic!("injected participant panic");
            }
        }

        /// Holds (true) or releases (false) every command of `step` at its participant: held
        /// commands wait, unanswered, until the release (benchmarks of sagas in flight).
        pub fn hold_step(&self, step: Step, on: bool) {
            self.held_steps
                .send_if_modified(|held| toggle(held, step, on));
        }

        /// True when commands of `step` are held.
        pub fn holds(&self, step: Step) -> bool {
            self.held_steps.borrow().contains(&step)
        }

        /// True when commands of `step` are held; counts the arriving command as held.
        pub fn hold_command(&self, step: Step) -> bool {
            let held = self.holds(step);
            if held {
                self.record(Fault::StepHeld(step));
            }
            held
        }

        /// Resolves once `step` is not held (at once when it is not held now).
        pub fn released(&self, step: Step) -> impl Future<Output = ()> + 'static {
            let mut held = self.held_steps.subscribe();
            async move {
                // The sender lives as long as the application; if it is gone, so is the hold.
                let _ = held.wait_for(|held| !held.contains(&step)).await;
            }
        }

        /// Makes the router deliver every command twice.
        pub fn duplicate_deliveries(&self, on: bool) {
            self.duplicate_delivery.store(on, Ordering::SeqCst);
        }

        /// True when this command is to be delivered twice (counted as fired).
        pub fn delivers_twice(&self) -> bool {
            let twice = self.duplicate_delivery.load(Ordering::SeqCst);
            if twice {
                self.record(Fault::DuplicateDelivery);
            }
            twice
        }

        /// Makes the next `times` saga actors panic when a reply reaches them.
        pub fn panic_sagas(&self, times: u32) {
            self.saga_panics.store(times, Ordering::SeqCst);
        }

        /// Consumes one injected saga panic, if any is left.
        pub fn take_saga_panic(&self) -> bool {
            let panics = take(&self.saga_panics);
            if panics {
                self.record(Fault::SagaPanic);
            }
            panics
        }
    }
}

#[cfg(not(feature = "faults"))]
mod off {
    use crate::actors::messages::{StepCommand, StepError};
    use crate::domain::purchase::{Step, StepOutcome};

    /// No fault switches in this build (feature `faults` off): every check is a constant,
    /// so the calls on the hot paths compile to nothing.
    #[derive(Debug, Default)]
    pub struct Faults {}

    impl Faults {
        /// Never intercepts: there are no switches.
        #[inline(always)]
        pub fn intercept(&self, _cmd: &StepCommand) -> Option<Result<StepOutcome, StepError>> {
            None
        }

        /// Never panics: there are no switches.
        #[inline(always)]
        pub fn maybe_panic_participant(&self, _step: Step) {}

        /// Never delivers twice: there are no switches.
        #[inline(always)]
        pub fn delivers_twice(&self) -> bool {
            false
        }

        /// Never crashes a saga: there are no switches.
        #[inline(always)]
        pub fn take_saga_panic(&self) -> bool {
            false
        }
    }
}
