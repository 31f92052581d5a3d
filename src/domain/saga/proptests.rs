//! Property tests of the saga machine: random interleavings of answers (success, refusal,
//! compensated), infrastructure errors, timeouts, stale timers, duplicate and late replies,
//! restarts and crash-and-replay, fed to `next` as the saga actor would.
//!
//! After every event the machine accepts, the saga must be in the state its log implies
//! (derived here independently of `next`), no log entry may appear twice (so no terminal
//! event is emitted twice), the log must replay to the live state, and the saga must not
//! stall (a non-terminal saga always has its call sent or a retry timer armed). Every event it
//! refuses must leave it unchanged. After the random prefix, answering the outstanding call
//! must end the saga within a few events.

use std::collections::HashSet;

use proptest::prelude::*;
use proptest::sample::Index;

use super::tests::POLICY;
use super::*;
use crate::domain::purchase::StepOutcome;

/// When the run starts (ms); above 0 so that `since_ms == 0` means "no failure".
const START_MS: i64 = 1_000_000;
/// Events that end a saga once every call is answered: a start and three successes, or
/// three compensations.
const FINISH_BOUND: usize = 4;

/// How a participant (or the transport) ends a call.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Applied,
    Refused,
    Errored,
    TimedOut,
}

impl Answer {
    const ALL: [Answer; 4] = [
        Answer::Applied,
        Answer::Refused,
        Answer::Errored,
        Answer::TimedOut,
    ];

    fn result(self) -> CallResult {
        match self {
            Answer::Applied => CallResult::Answered(StepOutcome::Applied),
            Answer::Refused => CallResult::Answered(StepOutcome::Rejected("no stock".into())),
            Answer::Errored => CallResult::Errored,
            Answer::TimedOut => CallResult::TimedOut,
        }
    }
}

/// Which call an answer or a timer is about.
#[derive(Debug, Clone, Copy)]
enum Which {
    /// The call the saga waits on now.
    Outstanding,
    /// Any call sent (or timer armed) so far: late, stale and duplicate ones included.
    Earlier(Index),
}

/// One thing that happens to a running saga.
#[derive(Debug, Clone)]
enum Action {
    Reply(Which, Answer),
    /// A backoff timer fires.
    Timer(Which),
    /// The saga actor restarts in a live node (after a panic): it resends its call.
    Restart,
    /// The node dies: the saga is rebuilt from its log and persisted retry, then started.
    Crash,
    /// Time passes (ms).
    Wait(i64),
    /// Any event at all, mostly illegal in the current state.
    Any(SagaEvent),
}

fn step() -> impl Strategy<Value = Step> {
    prop::sample::select(Step::ALL.to_vec())
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        step().prop_map(Call::Execute),
        step().prop_map(Call::Compensate)
    ]
}

fn event() -> impl Strategy<Value = SagaEvent> {
    prop_oneof![
        Just(SagaEvent::Start),
        step().prop_map(SagaEvent::StepSucceeded),
        step().prop_map(SagaEvent::StepRefused),
        step().prop_map(SagaEvent::Compensated),
        call().prop_map(SagaEvent::StepErrored),
        call().prop_map(SagaEvent::TimedOut),
        (call(), 0u32..6).prop_map(|(call, attempt)| SagaEvent::RetryDue { call, attempt }),
    ]
}

fn which() -> impl Strategy<Value = Which> {
    prop_oneof![
        3 => Just(Which::Outstanding),
        1 => any::<Index>().prop_map(Which::Earlier),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => which().prop_map(|w| Action::Reply(w, Answer::Applied)),
        1 => which().prop_map(|w| Action::Reply(w, Answer::Refused)),
        2 => which().prop_map(|w| Action::Reply(w, Answer::Errored)),
        2 => which().prop_map(|w| Action::Reply(w, Answer::TimedOut)),
        3 => which().prop_map(Action::Timer),
        1 => Just(Action::Restart),
        2 => Just(Action::Crash),
        // Up to 1.5 step budgets (POLICY's is 10 s), so that pauses exhaust it now and then.
        2 => (0i64..15_000).prop_map(Action::Wait),
        1 => event().prop_map(Action::Any),
    ]
}

/// A saga driven as the actor drives it, with everything it ever sent and armed.
struct World {
    saga: Saga,
    log: Vec<StepEvent>,
    sent: Vec<Call>,
    timers: Vec<(Call, u32)>,
    now: i64,
}

impl World {
    fn new() -> Self {
        World {
            saga: Saga::NEW,
            log: Vec::new(),
            sent: Vec::new(),
            timers: Vec::new(),
            now: START_MS,
        }
    }

    /// Feeds one event; true when the machine accepted it. Checks every property on the way.
    fn feed(&mut self, event: SagaEvent) -> bool {
        let before = self.saga;
        match next(before, event, &POLICY, self.now) {
            Err(e) => {
                assert_eq!(
                    e,
                    IllegalTransition {
                        state: before.state,
                        event
                    }
                );
                false
            }
            Ok(t) => {
                assert!(
                    !before.state.is_terminal(),
                    "{event:?} accepted by {before:?}"
                );
                check_effects(&t);
                self.saga = t.saga;
                self.log.extend(t.emitted());
                for effect in &t.effects {
                    match *effect {
                        Effect::Send(call) => self.sent.push(call),
                        Effect::ArmTimer { call, attempt, .. } => self.timers.push((call, attempt)),
                        Effect::Emit(_) => {}
                    }
                }
                assert_eq!(
                    legal_state(&self.log),
                    self.saga.state,
                    "{before:?} + {event:?}: the live state is not the one the log {:?} implies",
                    self.log
                );
                assert_eq!(replay(&self.log), Ok(self.saga.state), "{:?}", self.log);
                check_retry(self.saga);
                true
            }
        }
    }

    fn reply(&self, which: Which, answer: Answer) -> Option<SagaEvent> {
        let call = match which {
            Which::Outstanding => self.saga.state.outstanding()?,
            Which::Earlier(i) if !self.sent.is_empty() => *i.get(&self.sent),
            Which::Earlier(_) => return None,
        };
        Some(SagaEvent::answer(call, &answer.result()))
    }

    fn timer(&self, which: Which) -> Option<SagaEvent> {
        let (call, attempt) = match which {
            Which::Outstanding => *self.timers.last()?,
            Which::Earlier(i) if !self.timers.is_empty() => *i.get(&self.timers),
            Which::Earlier(_) => return None,
        };
        Some(SagaEvent::RetryDue { call, attempt })
    }

    /// The node dies and comes back: the saga is what its log replays to, with the retry
    /// budget persisted beside it, and its actor starts.
    fn crash(&mut self) {
        let state = replay(&self.log).expect("a committed log replays");
        assert_eq!(state, self.saga.state);
        self.saga = Saga {
            state,
            retry: self.saga.retry,
        };
        self.restart();
    }

    fn restart(&mut self) {
        let terminal = self.saga.state.is_terminal();
        assert_eq!(self.feed(SagaEvent::Start), !terminal);
    }

    fn act(&mut self, action: &Action) {
        let event = match *action {
            Action::Reply(which, answer) => self.reply(which, answer),
            Action::Timer(which) => self.timer(which),
            Action::Restart => return self.restart(),
            Action::Crash => return self.crash(),
            Action::Wait(ms) => {
                self.now += ms;
                return;
            }
            Action::Any(event) => Some(event),
        };
        if let Some(event) = event {
            self.feed(event);
        }
    }

    /// Answers the outstanding call as a healthy participant would until the saga ends.
    fn finish(&mut self) {
        for _ in 0..FINISH_BOUND {
            let event = match self.saga.state.outstanding() {
                _ if self.saga.state.is_terminal() => return,
                None => SagaEvent::Start,
                Some(Call::Execute(step)) => SagaEvent::StepSucceeded(step),
                Some(Call::Compensate(step)) => SagaEvent::Compensated(step),
            };
            assert!(self.feed(event), "{event:?} refused by {:?}", self.saga);
        }
        assert!(
            self.saga.state.is_terminal(),
            "not terminal after {FINISH_BOUND} answers: {:?}",
            self.saga
        );
    }
}

/// A transition sends or arms only for the call its new state waits on, and a non-terminal
/// saga always has that call sent or a timer armed for its current attempt.
fn check_effects(t: &Transition) {
    let awaited = t.saga.state.outstanding();
    let mut kept_alive = false;
    for effect in &t.effects {
        match *effect {
            Effect::Send(call) => {
                assert_eq!(Some(call), awaited, "{t:?}");
                kept_alive = true;
            }
            Effect::ArmTimer { call, attempt, .. } => {
                assert_eq!(Some(call), awaited, "{t:?}");
                assert_eq!(attempt, t.saga.retry.attempts, "{t:?}");
                kept_alive = true;
            }
            Effect::Emit(_) => {}
        }
    }
    assert_ne!(t.saga.state, SagaState::Pending, "{t:?}");
    assert_eq!(kept_alive, !t.saga.state.is_terminal(), "{t:?}");
}

/// The retry budget is consistent: a first failure time exactly when failures were counted,
/// a fresh budget in a terminal state, a reported rollback failure only after its attempts.
fn check_retry(saga: Saga) {
    assert_eq!(
        saga.retry.attempts == 0,
        saga.retry.since_ms == 0,
        "{saga:?}"
    );
    if saga.state.is_terminal() {
        assert_eq!(saga.retry, Retry::default(), "{saga:?}");
    }
    if let SagaState::RollbackFailed(_) = saga.state {
        assert!(saga.retry.attempts >= POLICY.rollback_attempts, "{saga:?}");
    }
}

/// The legal set: the only state a log allows, worked out from which entries it holds
/// (not through `next`). Panics on a log no saga may write, such as a doubled entry.
fn legal_state(log: &[StepEvent]) -> SagaState {
    let mut seen = HashSet::new();
    for entry in log {
        assert!(
            seen.insert((entry.step, entry.status)),
            "{entry:?} written twice: {log:?}"
        );
    }
    let has = |step, status| seen.contains(&(step, status));
    let succeeded: Vec<Step> = Step::ALL
        .into_iter()
        .filter(|&s| has(s, StepStatus::Success))
        .collect();
    let failed: Vec<Step> = Step::ALL
        .into_iter()
        .filter(|&s| has(s, StepStatus::Failed))
        .collect();
    // Forward steps run in order: the ones that succeeded are a prefix.
    assert_eq!(succeeded[..], Step::ALL[..succeeded.len()], "{log:?}");
    match failed[..] {
        [] if log.is_empty() => SagaState::Pending,
        [] if succeeded.len() == Step::ALL.len() => SagaState::Succeeded,
        [] => {
            let running = Step::ALL[succeeded.len()];
            assert!(has(running, StepStatus::Execute), "{log:?}");
            SagaState::Executing(running)
        }
        [failed] => {
            // Every step before the failed one succeeded; compensation walks back from it.
            assert_eq!(Step::ALL[succeeded.len()], failed, "{log:?}");
            let mut pending = Some(failed);
            while let Some(step) = pending.filter(|&s| has(s, StepStatus::Rollbacked)) {
                pending = step.previous();
            }
            match pending {
                None => SagaState::RolledBack,
                Some(step) if has(step, StepStatus::RollbackFail) => {
                    SagaState::RollbackFailed(step)
                }
                Some(step) => SagaState::Compensating(step),
            }
        }
        _ => panic!("two failed steps: {log:?}"),
    }
}

/// The terminal event of a saga: the payment's success or the inventory's rollback.
fn is_terminal_event(e: &StepEvent) -> bool {
    matches!(
        (e.step, e.status),
        (Step::CreatePayment, StepStatus::Success)
            | (Step::UpdateProductInventory, StepStatus::Rollbacked)
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_interleavings_stay_legal_and_end_terminal(
        actions in prop::collection::vec(action(), 0..60),
    ) {
        let mut world = World::new();
        world.feed(SagaEvent::Start);
        for action in &actions {
            world.act(action);
        }
        world.finish();
        let terminal: Vec<_> = world.log.iter().filter(|e| is_terminal_event(e)).collect();
        prop_assert_eq!(terminal.len(), 1, "{:?}", world.log);
        prop_assert_eq!(world.log.last(), terminal.first().copied());
        // Late, duplicate and stale deliveries after the end change nothing.
        let saga = world.saga;
        for call in world.sent.clone() {
            for answer in Answer::ALL {
                prop_assert!(!world.feed(SagaEvent::answer(call, &answer.result())));
            }
        }
        for (call, attempt) in world.timers.clone() {
            let stale = SagaEvent::RetryDue { call, attempt };
            prop_assert!(!world.feed(stale));
        }
        prop_assert_eq!(world.saga, saga);
    }
}
