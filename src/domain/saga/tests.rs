//! Table tests of the saga machine: every (state, retry, event) combination against a table
//! written independently of `next`, the budget edges, restarts inside a budget, and replay.

use super::*;
use Step::*;

/// The budgets the table is written for (the property tests use them too).
pub(super) const POLICY: RetryPolicy = RetryPolicy {
    step_budget: Duration::from_secs(10),
    rollback_attempts: 3,
    first_backoff: Duration::from_millis(100),
    max_backoff: Duration::from_secs(1),
};
/// When the first failure of a retrying saga happened.
const SINCE: i64 = 1_000_000;

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

fn all_calls() -> Vec<Call> {
    Step::ALL
        .into_iter()
        .flat_map(|s| [Call::Execute(s), Call::Compensate(s)])
        .collect()
}

fn all_events() -> Vec<SagaEvent> {
    let mut events = vec![SagaEvent::Start];
    for s in Step::ALL {
        events.extend([
            SagaEvent::StepSucceeded(s),
            SagaEvent::StepRefused(s),
            SagaEvent::Compensated(s),
        ]);
    }
    for call in all_calls() {
        events.extend([SagaEvent::StepErrored(call), SagaEvent::TimedOut(call)]);
        events.extend((0..=3).map(|attempt| SagaEvent::RetryDue { call, attempt }));
    }
    events
}

/// Retry budgets to combine with every state: none spent, some spent, one failure short of
/// the rollback report.
fn all_retries() -> Vec<Retry> {
    vec![
        Retry::default(),
        Retry {
            attempts: 1,
            since_ms: SINCE,
        },
        Retry {
            attempts: 2,
            since_ms: SINCE,
        },
    ]
}

/// Moments at which events arrive: inside the step budget, one ms short of its end, at it.
fn all_nows() -> Vec<i64> {
    vec![SINCE + 500, SINCE + 9_999, SINCE + 10_000]
}

fn em(step: Step, status: StepStatus) -> Effect {
    Effect::Emit(StepEvent { step, status })
}

fn fresh(state: SagaState) -> Saga {
    Saga::at(state)
}

/// The specification, spelt out case by case.
fn expected(saga: Saga, event: SagaEvent, now: i64) -> Option<(Saga, Vec<Effect>)> {
    use SagaEvent as E;
    use SagaState as S;
    use StepStatus::*;
    let Saga { state, retry } = saga;
    let failed_retry = Retry {
        attempts: retry.attempts + 1,
        since_ms: if retry.attempts == 0 {
            now
        } else {
            retry.since_ms
        },
    };
    let timer = |call| Effect::ArmTimer {
        call,
        attempt: failed_retry.attempts,
        delay: Duration::from_millis(100 << (failed_retry.attempts - 1)),
    };
    Some(match (state, event) {
        (S::Pending, E::Start) => (
            fresh(S::Executing(UpdateProductInventory)),
            vec![
                em(UpdateProductInventory, Execute),
                Effect::Send(Call::Execute(UpdateProductInventory)),
            ],
        ),
        (S::Executing(a), E::Start) => (saga, vec![Effect::Send(Call::Execute(a))]),
        (S::Compensating(a) | S::RollbackFailed(a), E::Start) => {
            (saga, vec![Effect::Send(Call::Compensate(a))])
        }
        (S::Executing(UpdateProductInventory), E::StepSucceeded(UpdateProductInventory)) => (
            fresh(S::Executing(CreateOrder)),
            vec![
                em(UpdateProductInventory, Success),
                em(CreateOrder, Execute),
                Effect::Send(Call::Execute(CreateOrder)),
            ],
        ),
        (S::Executing(CreateOrder), E::StepSucceeded(CreateOrder)) => (
            fresh(S::Executing(CreatePayment)),
            vec![
                em(CreateOrder, Success),
                em(CreatePayment, Execute),
                Effect::Send(Call::Execute(CreatePayment)),
            ],
        ),
        (S::Executing(CreatePayment), E::StepSucceeded(CreatePayment)) => {
            (fresh(S::Succeeded), vec![em(CreatePayment, Success)])
        }
        (S::Executing(a), E::StepRefused(b)) if a == b => (
            fresh(S::Compensating(a)),
            vec![em(a, Failed), Effect::Send(Call::Compensate(a))],
        ),
        (S::Compensating(a) | S::RollbackFailed(a), E::Compensated(b)) if a == b => match a {
            UpdateProductInventory => (
                fresh(S::RolledBack),
                vec![em(UpdateProductInventory, Rollbacked)],
            ),
            CreateOrder => (
                fresh(S::Compensating(UpdateProductInventory)),
                vec![
                    em(CreateOrder, Rollbacked),
                    Effect::Send(Call::Compensate(UpdateProductInventory)),
                ],
            ),
            CreatePayment => (
                fresh(S::Compensating(CreateOrder)),
                vec![
                    em(CreatePayment, Rollbacked),
                    Effect::Send(Call::Compensate(CreateOrder)),
                ],
            ),
        },
        // Forward step: retried until 10 s have passed since its first failure.
        (S::Executing(a), E::StepErrored(Call::Execute(b)) | E::TimedOut(Call::Execute(b)))
            if a == b =>
        {
            if now - failed_retry.since_ms >= 10_000 {
                (
                    fresh(S::Compensating(a)),
                    vec![em(a, Failed), Effect::Send(Call::Compensate(a))],
                )
            } else {
                (
                    Saga {
                        state,
                        retry: failed_retry,
                    },
                    vec![timer(Call::Execute(a))],
                )
            }
        }
        // Compensation: reported after its third failure, retried for ever.
        (
            S::Compensating(a),
            E::StepErrored(Call::Compensate(b)) | E::TimedOut(Call::Compensate(b)),
        ) if a == b => {
            if failed_retry.attempts >= 3 {
                (
                    Saga {
                        state: S::RollbackFailed(a),
                        retry: failed_retry,
                    },
                    vec![em(a, RollbackFail), timer(Call::Compensate(a))],
                )
            } else {
                (
                    Saga {
                        state,
                        retry: failed_retry,
                    },
                    vec![timer(Call::Compensate(a))],
                )
            }
        }
        (
            S::RollbackFailed(a),
            E::StepErrored(Call::Compensate(b)) | E::TimedOut(Call::Compensate(b)),
        ) if a == b => (
            Saga {
                state,
                retry: failed_retry,
            },
            vec![timer(Call::Compensate(a))],
        ),
        (S::Executing(a), E::RetryDue { call, attempt })
            if call == Call::Execute(a) && attempt == retry.attempts =>
        {
            (saga, vec![Effect::Send(call)])
        }
        (S::Compensating(a) | S::RollbackFailed(a), E::RetryDue { call, attempt })
            if call == Call::Compensate(a) && attempt == retry.attempts =>
        {
            (saga, vec![Effect::Send(call)])
        }
        _ => return None,
    })
}

#[test]
fn every_state_event_pair_matches_the_table() {
    let mut legal = 0;
    let mut checked = 0;
    for state in all_states() {
        for retry in all_retries() {
            let saga = Saga { state, retry };
            for event in all_events() {
                for now in all_nows() {
                    checked += 1;
                    match (next(saga, event, &POLICY, now), expected(saga, event, now)) {
                        (Ok(t), Some((s, effects))) => {
                            legal += 1;
                            assert_eq!(
                                (t.saga, t.effects),
                                (s, effects),
                                "{saga:?} + {event:?} at {now}"
                            );
                        }
                        (Err(e), None) => assert_eq!(e, IllegalTransition { state, event }),
                        (got, want) => {
                            panic!("{saga:?} + {event:?} at {now}: got {got:?}, want {want:?}")
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 12 * 3 * 46 * 3);
    // Per (retry, now): 1 pending start + 9 restarts + 3 successes + 3 refusals
    // + 6 compensations + 3x2 errors of each kind of non-terminal state (18) + 9 due timers
    // whose attempt matches the retry count.
    assert_eq!(legal, 3 * 3 * (1 + 9 + 3 + 3 + 6 + 18 + 9));
}

#[test]
fn terminal_states_accept_nothing() {
    for state in [SagaState::Succeeded, SagaState::RolledBack] {
        assert!(state.is_terminal());
        assert_eq!(state.outstanding(), None);
        for event in all_events() {
            assert!(next(Saga::at(state), event, &POLICY, SINCE).is_err());
        }
    }
}

/// Feeds events at the given times; returns the saga and everything it emitted.
fn run(events: &[(SagaEvent, i64)]) -> (Saga, Vec<StepEvent>) {
    let mut saga = Saga::NEW;
    let mut log = Vec::new();
    for &(event, now) in events {
        let t = next(saga, event, &POLICY, now).unwrap();
        saga = t.saga;
        log.extend(t.emitted());
    }
    (saga, log)
}

fn at_zero(events: &[SagaEvent]) -> Vec<(SagaEvent, i64)> {
    events.iter().map(|e| (*e, 0)).collect()
}

#[test]
fn payment_failure_compensates_in_reverse_and_tells_the_truth() {
    use SagaEvent::*;
    let (saga, log) = run(&at_zero(&[
        Start,
        StepSucceeded(UpdateProductInventory),
        StepSucceeded(CreateOrder),
        StepRefused(CreatePayment),
        Compensated(CreatePayment),
        Compensated(CreateOrder),
        Compensated(UpdateProductInventory),
    ]));
    assert_eq!(saga, Saga::at(SagaState::RolledBack));
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
fn infrastructure_errors_are_retried_for_the_time_budget_then_fail_the_step() {
    use SagaEvent::*;
    let call = Call::Execute(UpdateProductInventory);
    let mut saga = next(Saga::NEW, Start, &POLICY, 0).unwrap().saga;
    // Fifty fast failures inside the budget do not fail the step.
    for i in 0..50 {
        let t = next(saga, StepErrored(call), &POLICY, SINCE + i * 100).unwrap();
        assert_eq!(t.saga.state, SagaState::Executing(UpdateProductInventory));
        assert!(matches!(t.effects[..], [Effect::ArmTimer { .. }]));
        saga = t.saga;
    }
    assert_eq!(saga.retry.since_ms, SINCE);
    let t = next(saga, TimedOut(call), &POLICY, SINCE + 9_999).unwrap();
    assert_eq!(t.saga.state, SagaState::Executing(UpdateProductInventory));
    let t = next(t.saga, TimedOut(call), &POLICY, SINCE + 10_000).unwrap();
    assert_eq!(
        t.saga,
        Saga::at(SagaState::Compensating(UpdateProductInventory))
    );
    assert_eq!(
        t.emitted(),
        vec![StepEvent {
            step: UpdateProductInventory,
            status: StepStatus::Failed
        }]
    );
}

#[test]
fn a_restart_inside_a_retry_budget_keeps_the_budget() {
    use SagaEvent::*;
    let call = Call::Execute(CreateOrder);
    let mut saga = Saga::at(SagaState::Executing(CreateOrder));
    saga = next(saga, StepErrored(call), &POLICY, SINCE).unwrap().saga;
    saga = next(saga, StepErrored(call), &POLICY, SINCE + 4_000)
        .unwrap()
        .saga;
    // The node restarts: the persisted saga is resumed as it was.
    let resumed = next(saga, Start, &POLICY, SINCE + 8_000).unwrap();
    assert_eq!(resumed.saga, saga);
    assert_eq!(resumed.effects, vec![Effect::Send(call)]);
    // The budget still counts from the first failure, before the restart.
    let t = next(resumed.saga, StepErrored(call), &POLICY, SINCE + 10_000).unwrap();
    assert_eq!(t.saga.state, SagaState::Compensating(CreateOrder));
}

#[test]
fn rollback_fail_is_reported_once_and_the_compensation_goes_on() {
    use SagaEvent::*;
    let call = Call::Compensate(CreateOrder);
    let mut saga = Saga::at(SagaState::Compensating(CreateOrder));
    let mut reported = 0;
    for i in 0..10 {
        let t = next(saga, StepErrored(call), &POLICY, SINCE + i).unwrap();
        reported += t.emitted().len();
        assert!(t.effects.iter().any(|e| matches!(
            e,
            Effect::ArmTimer { call: c, .. } if *c == call
        )));
        saga = t.saga;
    }
    assert_eq!(reported, 1);
    assert_eq!(saga.state, SagaState::RollbackFailed(CreateOrder));
    // A restart of a saga already reported does not report again.
    let t = next(saga, Start, &POLICY, SINCE + 20).unwrap();
    assert!(t.emitted().is_empty());
    let t = next(t.saga, Compensated(CreateOrder), &POLICY, SINCE + 30).unwrap();
    assert_eq!(
        t.saga,
        Saga::at(SagaState::Compensating(UpdateProductInventory))
    );
}

#[test]
fn a_timer_from_an_earlier_failure_is_stale() {
    use SagaEvent::*;
    let call = Call::Execute(CreatePayment);
    let saga = Saga::at(SagaState::Executing(CreatePayment));
    let once = next(saga, StepErrored(call), &POLICY, SINCE).unwrap().saga;
    let twice = next(once, StepErrored(call), &POLICY, SINCE + 1)
        .unwrap()
        .saga;
    assert!(next(twice, RetryDue { call, attempt: 1 }, &POLICY, SINCE + 2).is_err());
    let due = next(twice, RetryDue { call, attempt: 2 }, &POLICY, SINCE + 2).unwrap();
    assert_eq!(due.effects, vec![Effect::Send(call)]);
}

#[test]
fn backoff_doubles_and_is_capped() {
    assert_eq!(POLICY.backoff(1), Duration::from_millis(100));
    assert_eq!(POLICY.backoff(2), Duration::from_millis(200));
    assert_eq!(POLICY.backoff(4), Duration::from_millis(800));
    assert_eq!(POLICY.backoff(5), Duration::from_secs(1));
    assert_eq!(POLICY.backoff(u32::MAX), Duration::from_secs(1));
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
        vec![Start, StepRefused(UpdateProductInventory)],
        vec![
            Start,
            StepSucceeded(UpdateProductInventory),
            StepRefused(CreateOrder),
            StepErrored(Call::Compensate(CreateOrder)),
            StepErrored(Call::Compensate(CreateOrder)),
            StepErrored(Call::Compensate(CreateOrder)),
            StepErrored(Call::Compensate(CreateOrder)),
        ],
        vec![
            Start,
            StepSucceeded(UpdateProductInventory),
            StepRefused(CreateOrder),
            TimedOut(Call::Compensate(CreateOrder)),
            TimedOut(Call::Compensate(CreateOrder)),
            TimedOut(Call::Compensate(CreateOrder)),
            Compensated(CreateOrder),
            Compensated(UpdateProductInventory),
        ],
    ];
    for script in scripts {
        let (saga, log) = run(&at_zero(&script));
        assert_eq!(replay(&log), Ok(saga.state), "{script:?}");
    }
    // A step that failed because its time budget ran out replays too.
    let call = Call::Execute(UpdateProductInventory);
    let (saga, log) = run(&[
        (Start, 0),
        (StepErrored(call), SINCE),
        (StepErrored(call), SINCE + 10_000),
    ]);
    assert_eq!(replay(&log), Ok(saga.state));
}

#[test]
fn replay_rejects_a_corrupt_log() {
    let ev = |step, status| StepEvent { step, status };
    use StepStatus::*;
    let started = [ev(UpdateProductInventory, Execute)];
    let corrupt: Vec<Vec<StepEvent>> = vec![
        // starts in the middle
        vec![ev(CreateOrder, Success)],
        // a success without the next step's start
        vec![started[0], ev(UpdateProductInventory, Success)],
        // the same transition twice
        vec![
            started[0],
            ev(UpdateProductInventory, Success),
            ev(CreateOrder, Execute),
            ev(UpdateProductInventory, Success),
            ev(CreateOrder, Execute),
        ],
        // started twice
        vec![started[0], started[0]],
        // a rollback failure reported twice
        vec![
            started[0],
            ev(UpdateProductInventory, Failed),
            ev(UpdateProductInventory, RollbackFail),
            ev(UpdateProductInventory, RollbackFail),
        ],
    ];
    for log in corrupt {
        assert!(replay(&log).is_err(), "{log:?}");
    }
    let err = replay(&[started[0], ev(CreatePayment, Rollbacked)]).unwrap_err();
    assert_eq!(err.index, 1);
}

#[test]
fn stored_form_round_trips() {
    for state in all_states() {
        assert_eq!(SagaState::parse(&state.to_string()), Some(state));
    }
    assert_eq!(SagaState::parse("EXECUTING"), None);
}
