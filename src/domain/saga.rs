//! The purchase saga as one pure transition function:
//! `next(saga, event, policy, now) -> (saga, effects)`.
//!
//! No I/O, clock or actix in here. Every decision lives in this file: which step runs next,
//! when an infrastructure error is retried and after which pause, when a forward step has
//! failed for good, when a compensation is reported as failing. The saga actor only commits
//! what `next` decides and then performs the effects; recovery replays the persisted step log
//! through the same function and checks that it reproduces the log entry for entry.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::purchase::{Step, StepEvent, StepStatus};

/// Execute or compensate one step: the one unit of work a saga asks a participant for. It is
/// also the participants' idempotency key together with the purchase id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Call {
    Execute(Step),
    Compensate(Step),
}

impl Call {
    /// The step this call is about (which participant serves it).
    pub fn step(self) -> Step {
        match self {
            Call::Execute(step) | Call::Compensate(step) => step,
        }
    }

    /// `action` or `compensation`, as spans and metrics label a call.
    pub fn kind(self) -> &'static str {
        match self {
            Call::Execute(_) => "action",
            Call::Compensate(_) => "compensation",
        }
    }
}

/// A call for one purchase: what a saga sends to a participant, over a mailbox or a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCommand {
    pub purchase: std::sync::Arc<crate::domain::purchase::Purchase>,
    pub call: Call,
    /// The sender's epoch on the saga's partition (0 from a node before partition leases):
    /// a participant refuses a command older than the epoch that already drove its step.
    #[serde(default)]
    pub epoch: u64,
    /// When the saga stops waiting for the answer (ms since the epoch): a participant that
    /// gets to the command later skips it, since the saga resends it anyway.
    #[serde(default = "no_deadline")]
    pub deadline_ms: i64,
    /// The span that sent it; across nodes it travels in the message headers, not the body.
    #[serde(skip)]
    pub trace: crate::domain::trace::TraceContext,
}

fn no_deadline() -> i64 {
    i64::MAX
}

/// Where a saga stands. Each variant names the only call that can be outstanding in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaState {
    /// Accepted and stored; no step has started yet.
    Pending,
    /// The forward call of this step is outstanding.
    Executing(Step),
    /// The compensation of this step is outstanding (not yet reported as failing).
    Compensating(Step),
    /// The compensation of this step was reported as failing; it is still being retried.
    RollbackFailed(Step),
    /// Every step succeeded.
    Succeeded,
    /// A step failed and every completed step has been compensated.
    RolledBack,
}

/// Infrastructure failures of the outstanding call so far. Persisted with the state, so a
/// saga that restarts in the middle of its retry budget keeps what it has spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retry {
    /// Failed attempts of the outstanding call (0: none failed).
    pub attempts: u32,
    /// When the first of those failures happened, in ms since the epoch (0 when none).
    pub since_ms: i64,
}

/// A saga's persisted position: where it stands and how much retry budget it has spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saga {
    pub state: SagaState,
    pub retry: Retry,
}

impl Saga {
    /// A saga that has just been accepted.
    pub const NEW: Saga = Saga::at(SagaState::Pending);

    /// A saga in `state` with a fresh retry budget.
    pub const fn at(state: SagaState) -> Self {
        Saga {
            state,
            retry: Retry {
                attempts: 0,
                since_ms: 0,
            },
        }
    }
}

/// Something that happened to a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SagaEvent {
    /// The saga's actor (re)started: a pending saga begins, any other one resends its call.
    Start,
    /// The participant applied the forward step.
    StepSucceeded(Step),
    /// The participant refused the forward step for a business reason (not enough stock):
    /// final at once, never retried.
    StepRefused(Step),
    /// The participant applied the compensation (a no-op when the step never took effect).
    Compensated(Step),
    /// The participant could not run the call now (database down, panic, no responder).
    StepErrored(Call),
    /// No reply came within the step timeout.
    TimedOut(Call),
    /// The backoff timer armed after failure number `attempt` of `call` fired.
    RetryDue { call: Call, attempt: u32 },
}

/// How a call ended, as the saga sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult {
    /// The participant answered with the call's recorded outcome.
    Answered(crate::domain::purchase::StepOutcome),
    /// The participant could not run it now.
    Errored,
    /// No answer within the step timeout.
    TimedOut,
}

impl SagaEvent {
    /// The event a call's result is to the saga. A compensation has no business outcome: any
    /// answer means it is in place.
    pub fn answer(call: Call, result: &CallResult) -> SagaEvent {
        use crate::domain::purchase::StepOutcome;
        match (call, result) {
            (Call::Execute(step), CallResult::Answered(StepOutcome::Applied)) => {
                SagaEvent::StepSucceeded(step)
            }
            (Call::Execute(step), CallResult::Answered(StepOutcome::Rejected(_))) => {
                SagaEvent::StepRefused(step)
            }
            (Call::Compensate(step), CallResult::Answered(_)) => SagaEvent::Compensated(step),
            (call, CallResult::Errored) => SagaEvent::StepErrored(call),
            (call, CallResult::TimedOut) => SagaEvent::TimedOut(call),
        }
    }
}

/// Work the saga actor performs, in order, once the transition is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Record and publish a step result for the customer (written with the transition).
    Emit(StepEvent),
    /// Send a call to the participant that serves its step.
    Send(Call),
    /// Feed `RetryDue { call, attempt }` back after `delay`.
    ArmTimer {
        call: Call,
        attempt: u32,
        delay: Duration,
    },
}

/// Retry budgets and backoff: an argument of `next`, so tests can set any budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How long infrastructure errors of a forward step are retried before the step fails.
    pub step_budget: Duration,
    /// Compensation failures after which `STATUS_ROLLBACK_FAIL` is reported (retries go on).
    pub rollback_attempts: u32,
    /// Pause before the first retry; it doubles with every further failure.
    pub first_backoff: Duration,
    /// Cap of the pause between retries.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// No budget at all: the first error is final. Replay uses it, because a log records
    /// only the decisions, and a decision recorded in the log was taken when a budget ran out.
    pub const EXHAUSTED: RetryPolicy = RetryPolicy {
        step_budget: Duration::ZERO,
        rollback_attempts: 0,
        first_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };

    /// Pause after failure number `attempt` (1-based): `first_backoff` doubling, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// An event that makes no sense in the current state: a stale reply (to a call the saga no
/// longer waits for), or, in a log, corruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal saga transition: {event:?} in state {state:?}")]
pub struct IllegalTransition {
    pub state: SagaState,
    pub event: SagaEvent,
}

/// A decided transition: the new saga and the effects to perform once it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub saga: Saga,
    pub effects: Vec<Effect>,
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

fn emit(step: Step, status: StepStatus) -> Effect {
    Effect::Emit(StepEvent { step, status })
}

/// The first call of a new state, announced as the contract wants.
fn begin(state: SagaState, mut effects: Vec<Effect>) -> Transition {
    match state {
        SagaState::Executing(step) => {
            effects.push(emit(step, StepStatus::Execute));
            effects.push(Effect::Send(Call::Execute(step)));
        }
        SagaState::Compensating(step) => effects.push(Effect::Send(Call::Compensate(step))),
        _ => {}
    }
    Transition {
        saga: Saga::at(state),
        effects,
    }
}

/// A failed forward step is compensated itself first: its effect may have landed even though
/// its reply was lost, and the compensation is a no-op when it did not.
fn fail(step: Step) -> Transition {
    begin(
        SagaState::Compensating(step),
        vec![emit(step, StepStatus::Failed)],
    )
}

/// An infrastructure error of the outstanding `call`: retry after a pause, or give up.
fn errored(saga: Saga, call: Call, policy: &RetryPolicy, now_ms: i64) -> Transition {
    let retry = Retry {
        attempts: saga.retry.attempts + 1,
        since_ms: if saga.retry.attempts == 0 {
            now_ms
        } else {
            saga.retry.since_ms
        },
    };
    let timer = Effect::ArmTimer {
        call,
        attempt: retry.attempts,
        delay: policy.backoff(retry.attempts),
    };
    let spent = Duration::from_millis(now_ms.saturating_sub(retry.since_ms).max(0) as u64);
    match (saga.state, call) {
        (SagaState::Executing(step), Call::Execute(_)) if spent >= policy.step_budget => fail(step),
        (SagaState::Compensating(step), Call::Compensate(_))
            if retry.attempts >= policy.rollback_attempts =>
        {
            // Reported once; the compensation is retried until it succeeds.
            Transition {
                saga: Saga {
                    state: SagaState::RollbackFailed(step),
                    retry,
                },
                effects: vec![emit(step, StepStatus::RollbackFail), timer],
            }
        }
        (state, _) => Transition {
            saga: Saga { state, retry },
            effects: vec![timer],
        },
    }
}

/// The saga's transition function.
pub fn next(
    saga: Saga,
    event: SagaEvent,
    policy: &RetryPolicy,
    now_ms: i64,
) -> Result<Transition, IllegalTransition> {
    use SagaEvent as E;
    use SagaState as S;
    let illegal = Err(IllegalTransition {
        state: saga.state,
        event,
    });
    let awaited = saga.state.outstanding();
    Ok(match event {
        E::Start => match (saga.state, awaited) {
            (S::Pending, _) => begin(S::Executing(Step::UpdateProductInventory), vec![]),
            (_, Some(call)) => Transition {
                saga,
                effects: vec![Effect::Send(call)],
            },
            (_, None) => return illegal,
        },
        E::StepSucceeded(step) if awaited == Some(Call::Execute(step)) => match step.next() {
            Some(following) => begin(
                S::Executing(following),
                vec![emit(step, StepStatus::Success)],
            ),
            None => begin(S::Succeeded, vec![emit(step, StepStatus::Success)]),
        },
        E::StepRefused(step) if awaited == Some(Call::Execute(step)) => fail(step),
        E::Compensated(step) if awaited == Some(Call::Compensate(step)) => {
            let done = vec![emit(step, StepStatus::Rollbacked)];
            match step.previous() {
                Some(earlier) => begin(S::Compensating(earlier), done),
                None => begin(S::RolledBack, done),
            }
        }
        E::StepErrored(call) | E::TimedOut(call) if awaited == Some(call) => {
            errored(saga, call, policy, now_ms)
        }
        E::RetryDue { call, attempt }
            if awaited == Some(call) && saga.retry.attempts == attempt =>
        {
            Transition {
                saga,
                effects: vec![Effect::Send(call)],
            }
        }
        _ => return illegal,
    })
}

impl SagaState {
    /// True when no more work will ever happen for this saga.
    pub fn is_terminal(self) -> bool {
        matches!(self, SagaState::Succeeded | SagaState::RolledBack)
    }

    /// The call this state waits on, if any.
    pub fn outstanding(self) -> Option<Call> {
        match self {
            SagaState::Executing(step) => Some(Call::Execute(step)),
            SagaState::Compensating(step) | SagaState::RollbackFailed(step) => {
                Some(Call::Compensate(step))
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

/// Why a step log does not replay: the saga is quarantined with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("step log entry {index} ({entry}) does not follow: {why}")]
pub struct CorruptLog {
    /// 0-based position of the first entry that does not fit.
    pub index: usize,
    pub entry: String,
    pub why: String,
}

/// The event that made a transition start with this log entry. `STATUS_EXUCUTE` of a later
/// step is written by the same transition as the previous step's success, so it starts none;
/// a failed forward step or compensation is written when its budget ran out.
fn event_of(entry: StepEvent) -> Option<SagaEvent> {
    let step = entry.step;
    match entry.status {
        StepStatus::Execute if step == Step::UpdateProductInventory => Some(SagaEvent::Start),
        StepStatus::Execute => None,
        StepStatus::Success => Some(SagaEvent::StepSucceeded(step)),
        StepStatus::Failed => Some(SagaEvent::StepErrored(Call::Execute(step))),
        StepStatus::Rollbacked => Some(SagaEvent::Compensated(step)),
        StepStatus::RollbackFail => Some(SagaEvent::StepErrored(Call::Compensate(step))),
    }
}

/// Rebuilds a saga's state from its step log. Every transition must reproduce the next
/// entries of the log exactly, so a log with an entry missing, doubled or out of place fails.
pub fn replay(log: &[StepEvent]) -> Result<SagaState, CorruptLog> {
    let mut saga = Saga::NEW;
    let mut at = 0;
    while let Some(&entry) = log.get(at) {
        let corrupt = |why: String| CorruptLog {
            index: at,
            entry: format!("{} {}", entry.step.as_str(), entry.status.as_str()),
            why,
        };
        let event = event_of(entry).ok_or_else(|| corrupt("no transition starts here".into()))?;
        let transition =
            next(saga, event, &RetryPolicy::EXHAUSTED, 0).map_err(|e| corrupt(e.to_string()))?;
        let emitted = transition.emitted();
        if emitted.is_empty() || !log[at..].starts_with(&emitted) {
            return Err(corrupt(format!("the transition writes {emitted:?}")));
        }
        at += emitted.len();
        saga = transition.saga;
    }
    Ok(saga.state)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
