//! The SagaActor: one per purchase. It owns the purchase's state machine, persists each
//! transition decided by `domain::saga::next`, and only then publishes the results and sends
//! the next command. Replies that never come are retried with capped exponential backoff.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::faults::Faults;
use super::messages::{StepAction, StepCommand, StepError};
use super::router::ServiceRouter;
use super::store::{PendingWrite, SagaStore};
use crate::domain::purchase::{Purchase, StepOutcome};
use crate::domain::saga::{Effect, Outstanding, SagaEvent, SagaState, Transition, next};

/// Retry budgets and timeouts of saga commands.
#[derive(Debug, Clone, Copy)]
pub struct SagaPolicy {
    pub step_timeout: Duration,
    pub step_attempts: u32,
    pub rollback_attempts: u32,
    pub max_backoff: Duration,
}

impl SagaPolicy {
    /// Pause before retry number `attempt` (1-based): 50 ms doubling, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ms = 50u64.saturating_mul(1 << attempt.min(20));
        Duration::from_millis(ms).min(self.max_backoff)
    }
}

/// What every saga actor needs, shared.
#[derive(Clone)]
pub struct SagaDeps {
    pub router: ServiceRouter,
    pub store: SagaStore,
    pub policy: SagaPolicy,
    pub faults: Arc<Faults>,
}

/// Tells the supervisor a saga reached a terminal state.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct SagaFinished {
    pub purchase_id: u64,
}

/// One purchase's saga.
pub struct SagaActor {
    purchase: Arc<Purchase>,
    state: SagaState,
    attempts: u32,
    deps: SagaDeps,
    supervisor: Recipient<SagaFinished>,
}

impl SagaActor {
    /// Actor resuming `purchase` from `state` (`Pending` for a new purchase).
    pub fn new(
        purchase: Arc<Purchase>,
        state: SagaState,
        deps: SagaDeps,
        supervisor: Recipient<SagaFinished>,
    ) -> Self {
        Self {
            purchase,
            state,
            attempts: 0,
            deps,
            supervisor,
        }
    }

    /// Decide, persist, then act.
    fn apply(&mut self, event: SagaEvent, ctx: &mut Context<Self>) {
        let transition = match next(self.state, event) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(purchase_id = self.purchase.purchase_id, error = %e, "ignored");
                return;
            }
        };
        let write = PendingWrite {
            purchase_id: self.purchase.purchase_id,
            customer_id: self.purchase.customer_id,
            state: transition.state,
            attempts: self.attempts,
            events: transition.emitted(),
            new_saga: None,
        };
        let store = self.deps.store.clone();
        ctx.wait(
            async move { store.commit(write).await }
                .into_actor(self)
                .map(move |committed, act, ctx| match committed {
                    Ok(()) => act.perform(transition, ctx),
                    Err(e) => {
                        act.attempts += 1;
                        let delay = act.deps.policy.backoff(act.attempts);
                        tracing::warn!(purchase_id = act.purchase.purchase_id, error = %e, ?delay, "saga store commit failed; retrying");
                        ctx.run_later(delay, move |act, ctx| act.apply(event, ctx));
                    }
                }),
        );
    }

    fn perform(&mut self, transition: Transition, ctx: &mut Context<Self>) {
        self.state = transition.state;
        self.attempts = 0;
        for effect in transition.effects {
            match effect {
                Effect::Execute(step) => self.send(Outstanding::Execute(step), ctx),
                Effect::Compensate(step) => self.send(Outstanding::Compensate(step), ctx),
                Effect::Emit(_) => {}
            }
        }
        if self.state.is_terminal() {
            self.supervisor.do_send(SagaFinished {
                purchase_id: self.purchase.purchase_id,
            });
            ctx.stop();
        }
    }

    fn send(&mut self, what: Outstanding, ctx: &mut Context<Self>) {
        let (step, action) = match what {
            Outstanding::Execute(step) => (step, StepAction::Execute),
            Outstanding::Compensate(step) => (step, StepAction::Compensate),
        };
        let command = StepCommand {
            purchase: self.purchase.clone(),
            step,
            action,
        };
        let router = self.deps.router.clone();
        let timeout = self.deps.policy.step_timeout;
        ctx.spawn(
            async move { router.dispatch(command, timeout).await }
                .into_actor(self)
                .map(move |reply, act, ctx| act.on_reply(what, reply, ctx)),
        );
    }

    fn on_reply(
        &mut self,
        what: Outstanding,
        reply: Result<StepOutcome, StepError>,
        ctx: &mut Context<Self>,
    ) {
        if self.deps.faults.take_saga_panic() {
            panic!("injected saga actor crash");
        }
        if self.state.outstanding() != Some(what) {
            return; // a reply to a command this saga no longer waits for
        }
        let policy = self.deps.policy;
        match (what, reply) {
            (Outstanding::Execute(step), Ok(StepOutcome::Applied)) => {
                self.apply(SagaEvent::StepSucceeded(step), ctx)
            }
            (Outstanding::Execute(step), Ok(StepOutcome::Rejected(reason))) => {
                tracing::info!(purchase_id = self.purchase.purchase_id, ?step, %reason, "step failed");
                self.apply(SagaEvent::StepFailed(step), ctx)
            }
            (Outstanding::Compensate(step), Ok(_)) => self.apply(SagaEvent::Compensated(step), ctx),
            (Outstanding::Execute(step), Err(e)) => {
                self.attempts += 1;
                tracing::warn!(purchase_id = self.purchase.purchase_id, ?step, error = %e, attempt = self.attempts, "step error");
                if self.attempts >= policy.step_attempts {
                    self.apply(SagaEvent::StepFailed(step), ctx);
                } else {
                    self.retry_later(what, ctx);
                }
            }
            (Outstanding::Compensate(step), Err(e)) => {
                self.attempts += 1;
                tracing::warn!(purchase_id = self.purchase.purchase_id, ?step, error = %e, attempt = self.attempts, "compensation error");
                if self.attempts >= policy.rollback_attempts
                    && matches!(self.state, SagaState::Compensating(_))
                {
                    // Reported once; the transition's effect keeps retrying.
                    self.apply(SagaEvent::CompensationExhausted(step), ctx);
                } else {
                    self.retry_later(what, ctx);
                }
            }
        }
    }

    fn retry_later(&mut self, what: Outstanding, ctx: &mut Context<Self>) {
        let delay = self.deps.policy.backoff(self.attempts);
        ctx.run_later(delay, move |act, ctx| {
            if act.state.outstanding() == Some(what) {
                act.send(what, ctx);
            }
        });
    }
}

impl Actor for SagaActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match self.state.outstanding() {
            Some(what) => self.send(what, ctx),
            None if self.state == SagaState::Pending => self.apply(SagaEvent::Start, ctx),
            None => ctx.stop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = SagaPolicy {
            step_timeout: Duration::from_secs(1),
            step_attempts: 3,
            rollback_attempts: 3,
            max_backoff: Duration::from_millis(500),
        };
        assert_eq!(policy.backoff(1), Duration::from_millis(100));
        assert_eq!(policy.backoff(2), Duration::from_millis(200));
        assert_eq!(policy.backoff(10), Duration::from_millis(500));
    }
}
