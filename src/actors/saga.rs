//! The SagaActor: one per purchase, a small interpreter of `domain::saga::next`. It feeds
//! each event to the machine, commits the decided transition to the saga store, and only
//! then performs its effects: send a call, arm a timer. It holds no decisions of its own.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tracing::{Instrument, Span};

use super::faults::Faults;
use super::router::{DispatchError, ServiceRouter};
use super::store::SagaStore;
use crate::clock::Clock;
use crate::db::DbError;
use crate::db::sagas::{SagaWrite, WriteOutcome};
use crate::domain::ids::{PurchaseId, issued_at_ms};
use crate::domain::partition::PartitionId;
use crate::domain::purchase::Purchase;
use crate::domain::saga::{
    Call, CallResult, Effect, RetryPolicy, Saga, SagaEvent, SagaState, Transition, next,
};
use crate::telemetry::metrics::{AliveSaga, CallOutcome, Metrics, SagaOutcome};
use crate::telemetry::traces::{self, TARGET, TraceContext};

/// How a saga's calls and commits are retried.
#[derive(Debug, Clone, Copy)]
pub struct SagaPolicy {
    /// Wait for a participant's reply before the call counts as timed out.
    pub step_timeout: Duration,
    /// The machine's budgets.
    pub retry: RetryPolicy,
}

/// A write that fails on its own this many times in a row quarantines its saga.
const WRITE_FAILURES_TO_QUARANTINE: u32 = 5;

/// What every saga actor needs, shared.
#[derive(Clone)]
pub struct SagaDeps {
    pub router: ServiceRouter,
    pub store: SagaStore,
    pub policy: SagaPolicy,
    pub faults: Arc<Faults>,
    pub clock: Clock,
    /// Where sagas, steps and retries are counted.
    pub metrics: Metrics,
}

/// Tells the supervisor a saga reached a terminal state.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct SagaFinished {
    pub purchase_id: PurchaseId,
}

/// Stops a saga actor where it stands: its partition went to another node, which resumes
/// the saga from the store.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopSaga;

/// A saga as its actor resumes it: where it stands in the store.
#[derive(Debug, Clone)]
pub struct SagaPosition {
    pub purchase: Arc<Purchase>,
    pub partition: PartitionId,
    pub saga: Saga,
    pub version: u64,
    pub log_len: u32,
    /// The epoch this node held the saga's partition at when it started the actor: every
    /// command carries it, so that participants refuse a stale owner's late commands.
    pub epoch: u64,
    /// The trace the saga's spans belong to (stored with it, so a resumed saga continues it).
    pub trace: TraceContext,
}

/// One purchase's saga.
pub struct SagaActor {
    at: SagaPosition,
    deps: SagaDeps,
    supervisor: Recipient<SagaFinished>,
    /// Counts this actor in `sagashop_sagas_alive` under its saga's state.
    alive: AliveSaga,
    /// This actor reported its saga as rollback-failed (counted once, not again when the
    /// compensation finally goes through).
    reported_rollback_failed: bool,
}

/// How a commit attempt ended, for the interpreter.
enum Committed {
    Yes,
    /// The store no longer matches this actor's view (another writer, or a lost partition):
    /// the actor stops and the supervisor reloads the saga from the store.
    Stale(WriteOutcome),
    /// The write keeps failing on its own: the saga is set aside.
    Quarantine(String),
}

impl SagaActor {
    /// Actor resuming a saga from its stored position.
    pub fn new(at: SagaPosition, deps: SagaDeps, supervisor: Recipient<SagaFinished>) -> Self {
        let alive = deps.metrics.saga_alive(at.saga.state);
        Self {
            at,
            deps,
            supervisor,
            alive,
            reported_rollback_failed: false,
        }
    }

    /// Counts the saga's outcome when its committed move reached one.
    fn count_outcome(&mut self, before: SagaState) {
        let state = self.at.saga.state;
        self.alive.moved_to(state);
        let outcome = match state {
            SagaState::Succeeded => SagaOutcome::Succeeded,
            SagaState::RolledBack if !self.reported_rollback_failed => SagaOutcome::RolledBack,
            SagaState::RollbackFailed(_) if !matches!(before, SagaState::RollbackFailed(_)) => {
                if std::mem::replace(&mut self.reported_rollback_failed, true) {
                    return;
                }
                SagaOutcome::RollbackFailed
            }
            _ => return,
        };
        let accepted = crate::domain::ids::issued_at_ms(self.at.purchase.purchase_id.0);
        let took = (self.deps.clock.now_ms() - accepted).max(0) as u64;
        self.deps
            .metrics
            .saga_finished(outcome, Duration::from_millis(took));
    }

    /// Decide, commit, then act.
    fn on_event(&mut self, event: SagaEvent, ctx: &mut Context<Self>) {
        let now = self.deps.clock.now_ms();
        let transition = match next(self.at.saga, event, &self.deps.policy.retry, now) {
            Ok(t) => t,
            Err(e) => {
                // Only a stale reply or timer can be illegal here: the actor sends nothing
                // the machine did not ask for.
                tracing::debug!(purchase_id = %self.at.purchase.purchase_id, error = %e, "ignored");
                return;
            }
        };
        let span = tracing::trace_span!(target: TARGET, "saga.transition",
            purchase_id = %self.at.purchase.purchase_id, event = ?event,
            from = %self.at.saga.state, to = %transition.saga.state);
        traces::follow(&span, &self.at.trace);
        let events = transition.emitted();
        if transition.saga == self.at.saga && events.is_empty() {
            return self.perform(transition, &span, ctx);
        }
        let write = SagaWrite {
            purchase: self.at.purchase.clone(),
            partition: self.at.partition,
            from_version: self.at.version,
            // An actor runs a saga whose row is stored (at version 0 when an api node
            // accepted it and this is its first transition).
            stored: true,
            log_len: self.at.log_len,
            saga: transition.saga,
            events,
            trace: traces::context_of(&span),
        };
        let store = self.deps.store.clone();
        let backoff = self.deps.policy.retry;
        // `wait` holds the mailbox: no other event is decided until this one is committed.
        ctx.wait(
            commit_until_decided(store, write, backoff)
                .instrument(span.clone())
                .into_actor(self)
                .map(move |committed, act, ctx| match committed {
                    Committed::Yes => {
                        act.at.version += 1;
                        act.at.log_len += transition.emitted().len() as u32;
                        let before = std::mem::replace(&mut act.at.saga, transition.saga);
                        act.count_outcome(before.state);
                        act.log_outcome(before.state);
                        act.perform(transition, &span, ctx);
                    }
                    Committed::Stale(outcome) => {
                        tracing::warn!(
                            purchase_id = %act.at.purchase.purchase_id,
                            ?outcome,
                            "saga view is stale; reloading"
                        );
                        ctx.stop();
                    }
                    Committed::Quarantine(reason) => act.quarantine(reason, ctx),
                }),
        );
    }

    /// One log line per outcome the customer sees: success, rollback, or a rollback that
    /// keeps failing (reported once; its retries go on).
    fn log_outcome(&self, before: SagaState) {
        let outcome = match self.at.saga.state {
            SagaState::Succeeded => "succeeded",
            SagaState::RolledBack => "rolled_back",
            SagaState::RollbackFailed(_) if !matches!(before, SagaState::RollbackFailed(_)) => {
                "rollback_failed"
            }
            _ => return,
        };
        let id = self.at.purchase.purchase_id;
        let duration_ms = self.deps.clock.now_ms() - issued_at_ms(id.0);
        tracing::info!(purchase_id = %id, outcome, duration_ms, "saga outcome");
    }

    fn perform(&mut self, transition: Transition, span: &Span, ctx: &mut Context<Self>) {
        for effect in transition.effects {
            match effect {
                Effect::Emit(_) => {} // written with the transition, published by the store
                Effect::Send(call) => self.send(call, span, ctx),
                Effect::ArmTimer {
                    call,
                    attempt,
                    delay,
                } => {
                    self.deps.metrics.step_retried(call.step());
                    ctx.run_later(delay, move |act, ctx| {
                        act.on_event(SagaEvent::RetryDue { call, attempt }, ctx)
                    });
                }
            }
        }
        if self.at.saga.state.is_terminal() {
            self.supervisor.do_send(SagaFinished {
                purchase_id: self.at.purchase.purchase_id,
            });
            ctx.stop();
        }
    }

    /// Sends `call` to its participant, in a span that is a child of the transition
    /// (`parent`) that decided it.
    fn send(&mut self, call: Call, parent: &Span, ctx: &mut Context<Self>) {
        let timeout = self.deps.policy.step_timeout;
        let span = tracing::trace_span!(target: TARGET, parent: parent, "step.command",
            purchase_id = %self.at.purchase.purchase_id, step = call.step().as_str(),
            kind = call.kind());
        let command = crate::domain::saga::StepCommand {
            purchase: self.at.purchase.clone(),
            call,
            epoch: self.at.epoch,
            deadline_ms: self.deps.clock.now_ms() + timeout.as_millis() as i64,
            trace: traces::context_of(&span),
        };
        let router = self.deps.router.clone();
        let purchase_id = self.at.purchase.purchase_id;
        let sent = std::time::Instant::now();
        ctx.spawn(
            async move {
                match router.dispatch(command, timeout).await {
                    Ok(outcome) => CallResult::Answered(outcome),
                    Err(DispatchError::TimedOut) => CallResult::TimedOut,
                    Err(DispatchError::Failed(e)) => {
                        tracing::warn!(%purchase_id, ?call, error = %e, "call failed");
                        CallResult::Errored
                    }
                }
            }
            .instrument(span)
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.count_call(call, &result, sent.elapsed());
                if act.deps.faults.take_saga_panic() {
                    panic!("injected saga actor crash");
                }
                act.on_event(SagaEvent::answer(call, &result), ctx);
            }),
        );
    }

    fn count_call(&self, call: Call, result: &CallResult, took: Duration) {
        use crate::domain::purchase::StepOutcome;
        let metrics = &self.deps.metrics;
        let outcome = match result {
            CallResult::Answered(StepOutcome::Applied) => CallOutcome::Ok,
            // A compensation has no business outcome: any answer means it is in place.
            CallResult::Answered(StepOutcome::Rejected(_))
                if matches!(call, Call::Compensate(_)) =>
            {
                CallOutcome::Ok
            }
            CallResult::Answered(StepOutcome::Rejected(_)) => CallOutcome::Refused,
            CallResult::TimedOut => {
                metrics.step_timed_out(call.step());
                CallOutcome::Failed
            }
            CallResult::Errored => CallOutcome::Failed,
        };
        metrics.step_answered(call, outcome, took);
    }

    fn quarantine(&mut self, reason: String, ctx: &mut Context<Self>) {
        let id = self.at.purchase.purchase_id;
        tracing::error!(purchase_id = %id, %reason, "saga quarantined");
        let store = self.deps.store.clone();
        let supervisor = self.supervisor.clone();
        ctx.wait(
            async move {
                if let Err(e) = store.repo().quarantine(id, &reason).await {
                    tracing::error!(purchase_id = %id, error = %e, "cannot record the quarantine");
                }
                supervisor.do_send(SagaFinished { purchase_id: id });
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        );
    }
}

/// Commits a write, retrying while the database is unavailable. The write carries the
/// version it starts from, so a retry after a lost acknowledgement is recognised, never
/// applied twice.
async fn commit_until_decided(
    store: SagaStore,
    write: SagaWrite,
    policy: RetryPolicy,
) -> Committed {
    let mut failures = 0u32;
    let mut own_failures = 0u32;
    loop {
        let reason = match store.commit(write.clone()).await {
            Ok(WriteOutcome::Committed(_) | WriteOutcome::AlreadyApplied) => return Committed::Yes,
            Ok(outcome @ (WriteOutcome::Conflict | WriteOutcome::LostPartition)) => {
                return Committed::Stale(outcome);
            }
            Ok(WriteOutcome::Failed(reason)) => {
                own_failures += 1;
                if own_failures >= WRITE_FAILURES_TO_QUARANTINE {
                    return Committed::Quarantine(format!(
                        "its transition cannot be written: {reason}"
                    ));
                }
                reason
            }
            Err(DbError::Unavailable(reason)) => reason,
            Err(e) => e.to_string(),
        };
        failures += 1;
        let delay = policy.backoff(failures);
        tracing::warn!(purchase_id = %write.purchase.purchase_id, %reason, ?delay, "saga store commit failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

impl Actor for SagaActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.on_event(SagaEvent::Start, ctx);
        if self.at.saga.state.is_terminal() {
            ctx.stop();
        }
    }
}

impl Handler<StopSaga> for SagaActor {
    type Result = ();

    fn handle(&mut self, _: StopSaga, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
