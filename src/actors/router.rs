//! The ServiceRouter: the only way a saga reaches a participant. Each step's route is a
//! `Recipient<StepCommand>`: the local service actor now, a NATS bridge actor in a cluster.

use std::sync::Arc;
use std::time::Duration;

use actix::{MailboxError, Recipient};

use super::faults::Faults;
use super::messages::{StepCommand, StepError};
use crate::domain::purchase::{Step, StepOutcome};

/// Why a call got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// No reply within the step timeout.
    #[error("no reply within the step timeout")]
    TimedOut,
    /// The participant could not run it, or could not be reached.
    #[error(transparent)]
    Failed(StepError),
}

/// Routes step commands to whoever serves each step.
#[derive(Clone)]
pub struct ServiceRouter {
    product: Recipient<StepCommand>,
    order: Recipient<StepCommand>,
    payment: Recipient<StepCommand>,
    faults: Arc<Faults>,
}

impl ServiceRouter {
    /// Router over one route per participant.
    pub fn new(
        product: Recipient<StepCommand>,
        order: Recipient<StepCommand>,
        payment: Recipient<StepCommand>,
        faults: Arc<Faults>,
    ) -> Self {
        Self {
            product,
            order,
            payment,
            faults,
        }
    }

    fn route(&self, step: Step) -> &Recipient<StepCommand> {
        match step {
            Step::UpdateProductInventory => &self.product,
            Step::CreateOrder => &self.order,
            Step::CreatePayment => &self.payment,
        }
    }

    /// Delivers a command and waits for its reply; no reply within `timeout` is an error the
    /// saga retries (every command is idempotent, so a late first delivery does no harm).
    pub async fn dispatch(
        &self,
        cmd: StepCommand,
        timeout: Duration,
    ) -> Result<StepOutcome, DispatchError> {
        let to = self.route(cmd.call.step());
        if self.faults.delivers_twice() {
            // At-least-once delivery made visible: the first reply is dropped.
            let _ = to.send(cmd.clone()).timeout(timeout).await;
        }
        match to.send(cmd).timeout(timeout).await {
            Ok(reply) => reply.map_err(DispatchError::Failed),
            Err(MailboxError::Timeout) => Err(DispatchError::TimedOut),
            Err(e) => Err(DispatchError::Failed(StepError(e.to_string()))),
        }
    }
}
