//! The purchase saga as one pure transition function: `next(state, event) -> (state, effects)`.
//!
//! No I/O, clock or actix in here. The saga actor persists what `next` decides and only then
//! performs the effects; recovery replays the persisted step log through the same function.

use std::fmt;

use crate::domain::purchase::{Step, StepEvent, StepStatus};

/// Where a saga stands. Each variant names the only work that can be outstanding in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaState {
    /// Accepted and stored; no step has started yet.
    Pending,
    /// The forward command of this step is outstanding.
    Executing(Step),
    /// The compensation of this step is outstanding (within its retry budget).
    Compensating(Step),
    /// The compensation of this step has exhausted its budget; it is still being retried.
    RollbackFailed(Step),
    /// Every step succeeded.
    Succeeded,
    /// A step failed and every completed step has been compensated.
    RolledBack,
}

/// What happened to a saga: a start, or the final outcome of its outstanding command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaEvent {
    Start,
    StepSucceeded(Step),
    /// The step failed for good (business failure, or its retry budget ran out).
    StepFailed(Step),
    Compensated(Step),
    /// A compensation ran out of its retry budget; retries continue.
    CompensationExhausted(Step),
}

/// Work the saga actor performs after persisting a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Record and publish a step result for the customer.
    Emit(StepEvent),
    /// Send the forward command of a step.
    Execute(Step),
    /// Send the compensation of a step.
    Compensate(Step),
}

/// The command a state is waiting on, to be (re)sent after a timeout or a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outstanding {
    Execute(Step),
    Compensate(Step),
}

/// An event that makes no sense in the current state (a bug or a corrupt log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal saga transition: {event:?} in state {state:?}")]
pub struct IllegalTransition {
    pub state: SagaState,
    pub event: SagaEvent,
}

/// A decided transition: the new state and the effects to perform once it is persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub state: SagaState,
    pub effects: Vec<Effect>,
}

fn emit(step: Step, status: StepStatus) -> Effect {
    Effect::Emit(StepEvent { step, status })
}

/// The saga's transition function.
pub fn next(state: SagaState, event: SagaEvent) -> Result<Transition, IllegalTransition> {
    use SagaEvent as E;
    use SagaState as S;
    let to = |state, effects| Ok(Transition { state, effects });
    match (state, event) {
        (S::Pending, E::Start) => {
            let first = Step::UpdateProductInventory;
            to(
                S::Executing(first),
                vec![emit(first, StepStatus::Execute), Effect::Execute(first)],
            )
        }
        (S::Executing(cur), E::StepSucceeded(step)) if cur == step => match step.next() {
            Some(following) => to(
                S::Executing(following),
                vec![
                    emit(step, StepStatus::Success),
                    emit(following, StepStatus::Execute),
                    Effect::Execute(following),
                ],
            ),
            None => to(S::Succeeded, vec![emit(step, StepStatus::Success)]),
        },
        // A failed step is compensated itself first: its effect may have landed even though
        // its reply was lost, and the compensation is a no-op when it did not.
        (S::Executing(cur), E::StepFailed(step)) if cur == step => to(
            S::Compensating(step),
            vec![emit(step, StepStatus::Failed), Effect::Compensate(step)],
        ),
        (S::Compensating(cur) | S::RollbackFailed(cur), E::Compensated(step)) if cur == step => {
            match step.previous() {
                Some(earlier) => to(
                    S::Compensating(earlier),
                    vec![
                        emit(step, StepStatus::Rollbacked),
                        Effect::Compensate(earlier),
                    ],
                ),
                None => to(S::RolledBack, vec![emit(step, StepStatus::Rollbacked)]),
            }
        }
        (S::Compensating(cur), E::CompensationExhausted(step)) if cur == step => to(
            S::RollbackFailed(step),
            vec![
                emit(step, StepStatus::RollbackFail),
                Effect::Compensate(step),
            ],
        ),
        (state, event) => Err(IllegalTransition { state, event }),
    }
}

impl Transition {
    /// The step results this transition records and publishes, in order.
    pub fn emitted(&self) -> Vec<StepEvent> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Emit(ev) => Some(*ev),
                _ => None,
            })
            .collect()
    }
}

impl SagaState {
    /// True when no more work will ever happen for this saga.
    pub fn is_terminal(self) -> bool {
        matches!(self, SagaState::Succeeded | SagaState::RolledBack)
    }

    /// The command this state waits on, if any.
    pub fn outstanding(self) -> Option<Outstanding> {
        match self {
            SagaState::Executing(step) => Some(Outstanding::Execute(step)),
            SagaState::Compensating(step) | SagaState::RollbackFailed(step) => {
                Some(Outstanding::Compensate(step))
            }
            SagaState::Pending | SagaState::Succeeded | SagaState::RolledBack => None,
        }
    }

    /// The purchase status shown by `GET /api/purchase/{id}`.
    pub fn public_status(self) -> &'static str {
        match self {
            SagaState::Pending | SagaState::Executing(_) | SagaState::Compensating(_) => "PENDING",
            SagaState::Succeeded => "SUCCEEDED",
            SagaState::RolledBack => "ROLLED_BACK",
            SagaState::RollbackFailed(_) => "ROLLBACK_FAILED",
        }
    }

    /// Parses the form stored in the saga table (see `Display`).
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, step) = match s.split_once(':') {
            Some((kind, step)) => (kind, Some(Step::parse(step)?)),
            None => (s, None),
        };
        match (kind, step) {
            ("PENDING", None) => Some(SagaState::Pending),
            ("SUCCEEDED", None) => Some(SagaState::Succeeded),
            ("ROLLED_BACK", None) => Some(SagaState::RolledBack),
            ("EXECUTING", Some(step)) => Some(SagaState::Executing(step)),
            ("COMPENSATING", Some(step)) => Some(SagaState::Compensating(step)),
            ("ROLLBACK_FAILED", Some(step)) => Some(SagaState::RollbackFailed(step)),
            _ => None,
        }
    }
}

/// Stored form: `PENDING`, `EXECUTING:CREATE_ORDER`, `ROLLED_BACK`, ...
impl fmt::Display for SagaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SagaState::Pending => f.write_str("PENDING"),
            SagaState::Succeeded => f.write_str("SUCCEEDED"),
            SagaState::RolledBack => f.write_str("ROLLED_BACK"),
            SagaState::Executing(s) => write!(f, "EXECUTING:{}", s.as_str()),
            SagaState::Compensating(s) => write!(f, "COMPENSATING:{}", s.as_str()),
            SagaState::RollbackFailed(s) => write!(f, "ROLLBACK_FAILED:{}", s.as_str()),
        }
    }
}

impl SagaEvent {
    /// The machine event a step-log entry records. `STATUS_EXUCUTE` of a later step is written
    /// by the same transition as the previous step's success, so it maps to nothing.
    pub fn from_log(entry: StepEvent) -> Option<SagaEvent> {
        let step = entry.step;
        match entry.status {
            StepStatus::Execute if step == Step::UpdateProductInventory => Some(SagaEvent::Start),
            StepStatus::Execute => None,
            StepStatus::Success => Some(SagaEvent::StepSucceeded(step)),
            StepStatus::Failed => Some(SagaEvent::StepFailed(step)),
            StepStatus::Rollbacked => Some(SagaEvent::Compensated(step)),
            StepStatus::RollbackFail => Some(SagaEvent::CompensationExhausted(step)),
        }
    }
}

/// Rebuilds a saga's state from its step log, checking every transition on the way.
pub fn replay(log: impl IntoIterator<Item = StepEvent>) -> Result<SagaState, IllegalTransition> {
    log.into_iter()
        .filter_map(SagaEvent::from_log)
        .try_fold(SagaState::Pending, |state, event| {
            Ok(next(state, event)?.state)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Step::*;

    fn all_states() -> Vec<SagaState> {
        let mut states = vec![
            SagaState::Pending,
            SagaState::Succeeded,
            SagaState::RolledBack,
        ];
        for s in Step::ALL {
            states.extend([
                SagaState::Executing(s),
                SagaState::Compensating(s),
                SagaState::RollbackFailed(s),
            ]);
        }
        states
    }

    fn all_events() -> Vec<SagaEvent> {
        let mut events = vec![SagaEvent::Start];
        for s in Step::ALL {
            events.extend([
                SagaEvent::StepSucceeded(s),
                SagaEvent::StepFailed(s),
                SagaEvent::Compensated(s),
                SagaEvent::CompensationExhausted(s),
            ]);
        }
        events
    }

    /// The complete table of legal transitions; everything else must be rejected.
    fn expected(state: SagaState, event: SagaEvent) -> Option<(SagaState, Vec<Effect>)> {
        use SagaEvent as E;
        use SagaState as S;
        use StepStatus::*;
        let em = |step, status| Effect::Emit(StepEvent { step, status });
        Some(match (state, event) {
            (S::Pending, E::Start) => (
                S::Executing(UpdateProductInventory),
                vec![
                    em(UpdateProductInventory, Execute),
                    Effect::Execute(UpdateProductInventory),
                ],
            ),
            (S::Executing(UpdateProductInventory), E::StepSucceeded(UpdateProductInventory)) => (
                S::Executing(CreateOrder),
                vec![
                    em(UpdateProductInventory, Success),
                    em(CreateOrder, Execute),
                    Effect::Execute(CreateOrder),
                ],
            ),
            (S::Executing(CreateOrder), E::StepSucceeded(CreateOrder)) => (
                S::Executing(CreatePayment),
                vec![
                    em(CreateOrder, Success),
                    em(CreatePayment, Execute),
                    Effect::Execute(CreatePayment),
                ],
            ),
            (S::Executing(CreatePayment), E::StepSucceeded(CreatePayment)) => {
                (S::Succeeded, vec![em(CreatePayment, Success)])
            }
            (S::Executing(a), E::StepFailed(b)) if a == b => (
                S::Compensating(a),
                vec![em(a, Failed), Effect::Compensate(a)],
            ),
            (S::Compensating(a) | S::RollbackFailed(a), E::Compensated(b)) if a == b => match a {
                UpdateProductInventory => {
                    (S::RolledBack, vec![em(UpdateProductInventory, Rollbacked)])
                }
                CreateOrder => (
                    S::Compensating(UpdateProductInventory),
                    vec![
                        em(CreateOrder, Rollbacked),
                        Effect::Compensate(UpdateProductInventory),
                    ],
                ),
                CreatePayment => (
                    S::Compensating(CreateOrder),
                    vec![
                        em(CreatePayment, Rollbacked),
                        Effect::Compensate(CreateOrder),
                    ],
                ),
            },
            (S::Compensating(a), E::CompensationExhausted(b)) if a == b => (
                S::RollbackFailed(a),
                vec![em(a, RollbackFail), Effect::Compensate(a)],
            ),
            _ => return None,
        })
    }

    #[test]
    fn every_state_event_pair_matches_the_table() {
        let mut legal = 0;
        for state in all_states() {
            for event in all_events() {
                match (next(state, event), expected(state, event)) {
                    (Ok(t), Some((s, effects))) => {
                        legal += 1;
                        assert_eq!((t.state, t.effects), (s, effects), "{state:?} + {event:?}");
                    }
                    (Err(e), None) => assert_eq!(e, IllegalTransition { state, event }),
                    (got, want) => panic!("{state:?} + {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
        // 1 start + 3 successes + 3 failures + 6 compensations + 3 exhaustions
        assert_eq!(legal, 16);
    }

    #[test]
    fn terminal_states_accept_nothing() {
        for state in [SagaState::Succeeded, SagaState::RolledBack] {
            assert!(state.is_terminal());
            assert_eq!(state.outstanding(), None);
            for event in all_events() {
                assert!(next(state, event).is_err());
            }
        }
    }

    fn run(events: &[SagaEvent]) -> (SagaState, Vec<StepEvent>) {
        let mut state = SagaState::Pending;
        let mut log = Vec::new();
        for e in events {
            let t = next(state, *e).unwrap();
            state = t.state;
            log.extend(t.effects.iter().filter_map(|e| match e {
                Effect::Emit(ev) => Some(*ev),
                _ => None,
            }));
        }
        (state, log)
    }

    #[test]
    fn payment_failure_compensates_in_reverse_and_tells_the_truth() {
        use SagaEvent::*;
        let (state, log) = run(&[
            Start,
            StepSucceeded(UpdateProductInventory),
            StepSucceeded(CreateOrder),
            StepFailed(CreatePayment),
            Compensated(CreatePayment),
            Compensated(CreateOrder),
            Compensated(UpdateProductInventory),
        ]);
        assert_eq!(state, SagaState::RolledBack);
        let tail: Vec<_> = log[5..].iter().map(|e| (e.step, e.status)).collect();
        assert_eq!(
            tail,
            vec![
                (CreatePayment, StepStatus::Failed),
                (CreatePayment, StepStatus::Rollbacked),
                (CreateOrder, StepStatus::Rollbacked),
                (UpdateProductInventory, StepStatus::Rollbacked),
            ]
        );
    }

    #[test]
    fn replay_of_the_emitted_log_gives_the_same_state() {
        use SagaEvent::*;
        let scripts: Vec<Vec<SagaEvent>> = vec![
            vec![],
            vec![Start],
            vec![Start, StepSucceeded(UpdateProductInventory)],
            vec![
                Start,
                StepSucceeded(UpdateProductInventory),
                StepSucceeded(CreateOrder),
                StepSucceeded(CreatePayment),
            ],
            vec![Start, StepFailed(UpdateProductInventory)],
            vec![
                Start,
                StepSucceeded(UpdateProductInventory),
                StepFailed(CreateOrder),
                CompensationExhausted(CreateOrder),
            ],
            vec![
                Start,
                StepSucceeded(UpdateProductInventory),
                StepFailed(CreateOrder),
                CompensationExhausted(CreateOrder),
                Compensated(CreateOrder),
                Compensated(UpdateProductInventory),
            ],
        ];
        for script in scripts {
            let (state, log) = run(&script);
            assert_eq!(replay(log).unwrap(), state, "{script:?}");
        }
    }

    #[test]
    fn replay_rejects_a_corrupt_log() {
        let log = [StepEvent {
            step: CreateOrder,
            status: StepStatus::Success,
        }];
        assert!(replay(log).is_err());
    }

    #[test]
    fn stored_form_round_trips() {
        for state in all_states() {
            assert_eq!(SagaState::parse(&state.to_string()), Some(state));
        }
        assert_eq!(SagaState::parse("EXECUTING"), None);
    }
}
