//! A saga participant: receives step commands for one service and runs them in batches.
//! Commands that arrive while a batch is being committed wait and go into the next one, so
//! under load many sagas' steps share one transaction (one fsync) while a lone command still
//! runs at once. Replies go out only after their batch has committed.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use actix::prelude::*;
use futures_util::FutureExt;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::faults::Faults;
use super::messages::{StepCommand, StepError};
use super::queue::{Batch, CommandQueue};
use crate::clock::Clock;
use crate::db::DbError;
use crate::db::ledger::StepRepository;
use crate::domain::purchase::{Step, StepOutcome};
use crate::telemetry::metrics::{Metrics, QueuedActor};
use crate::telemetry::traces::{self, TARGET};

/// A batch's answers, one per command, in order.
pub type StepResults = Vec<Result<StepOutcome, StepError>>;

/// The participant actor of one service, running its commands on the service's repository.
pub struct Participant<R: StepRepository> {
    repo: R,
    step: Step,
    faults: Arc<Faults>,
    clock: Clock,
    queue: CommandQueue,
    busy: bool,
    /// `sagashop_actor_queue_depth` of this participant: commands waiting.
    depth: prometheus::IntGauge,
    /// `sagashop_commit_batch_size` of this participant.
    batches: prometheus::Histogram,
    /// `sagashop_step_commands_fenced_total` of this step: commands from stale owners.
    fenced: prometheus::IntCounter,
    /// A fault switch holds this step and a wake-up on its release is armed.
    #[cfg(feature = "faults")]
    awaiting_release: bool,
}

impl<R: StepRepository> Participant<R> {
    /// Participant running the commands of `step` on `repo`; `clock` tells which commands
    /// are past their deadline.
    pub fn new(repo: R, step: Step, faults: Arc<Faults>, clock: Clock, metrics: &Metrics) -> Self {
        let actor = QueuedActor::Participant(step);
        Self {
            depth: metrics.queue_depth(actor),
            batches: metrics.commit_batch(actor),
            fenced: metrics.command_fenced(step),
            repo,
            step,
            faults,
            clock,
            queue: CommandQueue::default(),
            busy: false,
            #[cfg(feature = "faults")]
            awaiting_release: false,
        }
    }

    /// Starts a batch unless one is running, nothing waits, or the step is held.
    fn maybe_flush(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.queue.is_empty() {
            return;
        }
        #[cfg(feature = "faults")]
        if self.faults.holds(self.step) {
            self.flush_on_release(ctx);
            return;
        }
        self.flush(ctx);
    }

    /// The step is held by a fault switch: flush as soon as it is released (a wake-up, not
    /// a poll; one armed at a time).
    #[cfg(feature = "faults")]
    fn flush_on_release(&mut self, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.awaiting_release, true) {
            return;
        }
        let released = self.faults.released(self.step);
        ctx.spawn(released.into_actor(self).map(|(), act, ctx| {
            act.awaiting_release = false;
            act.maybe_flush(ctx);
        }));
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        let Batch { commands, replies } = self.queue.take_batch(self.clock.now_ms());
        self.depth.set(self.queue.len() as i64);
        if commands.is_empty() {
            return self.maybe_flush(ctx); // every command taken had expired
        }
        self.busy = true;
        let count = commands.len();
        self.batches.observe(count as f64);
        let (repo, faults, fenced) = (self.repo.clone(), self.faults.clone(), self.fenced.clone());
        // One span per transaction, linked to (not a child of) each command it carries.
        let span = tracing::trace_span!(target: TARGET, "db.commit",
            database = self.step.as_str(), commands = count);
        for command in &commands {
            traces::link(&span, &command.trace);
        }
        let run =
            async move { run_batch(&faults, &repo, &fenced, commands).await }.instrument(span);
        let run = AssertUnwindSafe(run).catch_unwind();
        ctx.spawn(run.into_actor(self).map(move |ran, act, ctx| {
            // A panic fails this batch like an infrastructure error (the sagas retry) instead
            // of killing the participant, which would leave every saga waiting on it.
            let results = ran.unwrap_or_else(|_| {
                tracing::error!(step = ?act.step, "participant panicked; batch failed");
                vec![Err(StepError("participant panicked".into())); count]
            });
            for (callers, result) in replies.into_iter().zip(results) {
                for reply in callers {
                    let _ = reply.send(result.clone());
                }
            }
            act.busy = false;
            act.maybe_flush(ctx);
        }));
    }
}

impl<R: StepRepository> Actor for Participant<R> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(usize::MAX >> 4);
    }
}

impl<R: StepRepository> Handler<StepCommand> for Participant<R> {
    type Result = ResponseFuture<Result<StepOutcome, StepError>>;

    fn handle(&mut self, mut cmd: StepCommand, ctx: &mut Context<Self>) -> Self::Result {
        let span = tracing::trace_span!(target: TARGET, "step.handle",
            purchase_id = %cmd.purchase.purchase_id, step = self.step.as_str(),
            kind = cmd.call.kind());
        traces::follow(&span, &cmd.trace);
        cmd.trace = traces::context_of(&span);
        #[cfg(feature = "faults")]
        if self.faults.hold_command(self.step) {
            tracing::info!(purchase_id = %cmd.purchase.purchase_id, step = %self.step.as_str(), "command held by a fault switch");
        }
        let (reply, answer) = oneshot::channel();
        self.queue.push(cmd, reply);
        self.depth.set(self.queue.len() as i64);
        self.maybe_flush(ctx);
        Box::pin(
            async move {
                answer
                    .await
                    .unwrap_or_else(|_| Err(StepError("participant stopped".into())))
            }
            .instrument(span),
        )
    }
}

/// Runs a batch through the repository's `run_steps`, after the fault switches had their say;
/// counts on `fenced` the commands refused as coming from a stale owner.
async fn run_batch(
    faults: &Faults,
    repo: &impl StepRepository,
    fenced: &prometheus::IntCounter,
    commands: Vec<StepCommand>,
) -> StepResults {
    for c in &commands {
        faults.maybe_panic_participant(c.call.step());
    }
    let mut results: Vec<Option<Result<StepOutcome, StepError>>> =
        commands.iter().map(|c| faults.intercept(c)).collect();
    let ops: Vec<StepCommand> = commands
        .into_iter()
        .zip(&results)
        .filter(|(_, injected)| injected.is_none())
        .map(|(c, _)| c)
        .collect();
    let mut outcomes: Box<dyn Iterator<Item = Result<StepOutcome, StepError>>> =
        match repo.run_steps(&ops).await {
            Ok(all) => {
                let fenced = fenced.clone();
                Box::new(all.into_iter().map(move |r| {
                    r.map_err(|e| {
                        if matches!(e, DbError::Fenced(_)) {
                            fenced.inc();
                        }
                        StepError::from(e)
                    })
                }))
            }
            Err(e) => {
                let e = StepError::from(e);
                Box::new(std::iter::repeat_with(move || Err(e.clone())))
            }
        };
    for slot in results.iter_mut().filter(|r| r.is_none()) {
        *slot = outcomes.next();
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StepError("no result".into()))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::ledger::BatchResults;
    use crate::domain::ids::{CustomerId, PurchaseId};
    use crate::domain::purchase::{Currency, Purchase};
    use crate::domain::saga::Call;
    use crate::telemetry::metrics::NodeLabels;

    /// A repository that fences the commands of stale epochs (below 2) and applies the rest.
    #[derive(Clone)]
    struct Fencing;

    impl StepRepository for Fencing {
        async fn run_steps(&self, commands: &[StepCommand]) -> BatchResults {
            Ok(commands
                .iter()
                .map(|c| match c.epoch {
                    0 | 1 => Err(DbError::Fenced(c.epoch)),
                    _ => Ok(StepOutcome::Applied),
                })
                .collect())
        }
    }

    fn command(purchase_id: u64, epoch: u64) -> StepCommand {
        StepCommand {
            purchase: Arc::new(Purchase {
                purchase_id: PurchaseId(purchase_id),
                customer_id: CustomerId(1),
                items: vec![],
                currency: Currency::Nt,
                amount: 1,
            }),
            call: Call::Execute(Step::CreateOrder),
            epoch,
            deadline_ms: i64::MAX,
            trace: Default::default(),
        }
    }

    #[actix_rt::test]
    async fn fenced_commands_are_answered_as_fenced_and_counted() {
        let metrics = Metrics::new(&NodeLabels {
            node_id: 1,
            roles: "order".into(),
        })
        .unwrap();
        let counter = metrics.command_fenced(Step::CreateOrder);
        let commands = vec![command(1, 2), command(2, 1), command(3, 3), command(4, 0)];
        let results = run_batch(&Faults::default(), &Fencing, &counter, commands).await;
        let fenced: Vec<bool> = results
            .iter()
            .map(|r| r.as_ref().is_err_and(StepError::is_fenced))
            .collect();
        assert_eq!(fenced, [false, true, false, true]);
        assert_eq!(results[0], Ok(StepOutcome::Applied));
        assert_eq!(counter.get(), 2);
        assert!(!StepError("database unavailable".into()).is_fenced());
    }
}
