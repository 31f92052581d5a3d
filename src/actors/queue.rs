//! The commands a participant has received but not yet run: a plain struct, so its bounds are
//! tested without an actix System.
//!
//! - A batch takes at most [`MAX_BATCH`] commands; the rest wait for the next one.
//! - A command for a (purchase, call) already waiting is coalesced with it: it runs once and
//!   both callers get its answer (a saga that timed out and resent, or a redelivery).
//! - A command whose deadline has passed is not run: its saga has given up waiting and will
//!   resend it, so running it would only add work under overload.

use std::collections::HashMap;

use tokio::sync::oneshot;

use super::messages::{StepCommand, StepError};
use crate::domain::ids::PurchaseId;
use crate::domain::purchase::StepOutcome;
use crate::domain::saga::Call;

/// Most commands run in one transaction.
pub const MAX_BATCH: usize = 512;

/// Where the answer of a command goes.
pub type Reply = oneshot::Sender<Result<StepOutcome, StepError>>;

struct Waiting {
    command: StepCommand,
    replies: Vec<Reply>,
}

/// A participant's waiting commands.
#[derive(Default)]
pub struct CommandQueue {
    waiting: Vec<Waiting>,
    by_key: HashMap<(PurchaseId, Call), usize>,
}

/// A batch to run: the commands and, for each, the callers waiting on its answer.
pub struct Batch {
    pub commands: Vec<StepCommand>,
    pub replies: Vec<Vec<Reply>>,
}

impl CommandQueue {
    /// Queues a command, or joins the same command already waiting (keeping the later
    /// deadline).
    pub fn push(&mut self, command: StepCommand, reply: Reply) {
        let key = (command.purchase.purchase_id, command.call);
        if let Some(&at) = self.by_key.get(&key) {
            let waiting = &mut self.waiting[at];
            waiting.command.deadline_ms = waiting.command.deadline_ms.max(command.deadline_ms);
            waiting.replies.push(reply);
            return;
        }
        self.by_key.insert(key, self.waiting.len());
        self.waiting.push(Waiting {
            command,
            replies: vec![reply],
        });
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Commands waiting (coalesced ones count once).
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Takes the next batch, oldest first, at most [`MAX_BATCH`]. Commands past their
    /// deadline at `now_ms` are answered with an error instead and left out.
    pub fn take_batch(&mut self, now_ms: i64) -> Batch {
        let mut batch = Batch {
            commands: Vec::new(),
            replies: Vec::new(),
        };
        let mut taken = 0;
        for waiting in &mut self.waiting {
            if batch.commands.len() == MAX_BATCH {
                break;
            }
            taken += 1;
            let replies = std::mem::take(&mut waiting.replies);
            if waiting.command.deadline_ms < now_ms {
                for reply in replies {
                    let _ = reply.send(Err(StepError("its deadline passed unrun".into())));
                }
                continue;
            }
            batch.commands.push(waiting.command.clone());
            batch.replies.push(replies);
        }
        self.waiting.drain(..taken);
        self.by_key = self
            .waiting
            .iter()
            .enumerate()
            .map(|(at, w)| ((w.command.purchase.purchase_id, w.command.call), at))
            .collect();
        batch
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::purchase::{Currency, Purchase, Step};

    fn command(purchase_id: u64, call: Call, deadline_ms: i64) -> StepCommand {
        StepCommand {
            purchase: Arc::new(Purchase {
                purchase_id: PurchaseId(purchase_id),
                customer_id: crate::domain::ids::CustomerId(1),
                items: vec![],
                currency: Currency::Nt,
                amount: 1,
            }),
            call,
            epoch: 1,
            deadline_ms,
            trace: Default::default(),
        }
    }

    const RUN: Call = Call::Execute(Step::CreateOrder);
    const UNDO: Call = Call::Compensate(Step::CreateOrder);

    #[test]
    fn a_batch_is_capped_and_the_rest_waits_in_order() {
        let mut queue = CommandQueue::default();
        let mut answers = Vec::new();
        for id in 0..(MAX_BATCH as u64 + 10) {
            let (tx, rx) = oneshot::channel();
            queue.push(command(id, RUN, i64::MAX), tx);
            answers.push(rx);
        }
        let first = queue.take_batch(0);
        assert_eq!(first.commands.len(), MAX_BATCH);
        assert_eq!(queue.len(), 10);
        let second = queue.take_batch(0);
        let ids: Vec<u64> = second
            .commands
            .iter()
            .map(|c| c.purchase.purchase_id.0)
            .collect();
        assert_eq!(
            ids,
            (MAX_BATCH as u64..MAX_BATCH as u64 + 10).collect::<Vec<_>>()
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn the_same_call_waiting_twice_runs_once_and_answers_both() {
        let mut queue = CommandQueue::default();
        let (a, mut answer_a) = oneshot::channel();
        let (b, mut answer_b) = oneshot::channel();
        let (c, _answer_c) = oneshot::channel();
        queue.push(command(7, RUN, 100), a);
        queue.push(command(7, RUN, 200), b);
        queue.push(command(7, UNDO, 300), c);
        let batch = queue.take_batch(150);
        assert_eq!(batch.commands.len(), 2, "the compensation is another call");
        assert_eq!(
            batch.commands[0].deadline_ms, 200,
            "the later deadline counts"
        );
        let [first, _] = <[Vec<Reply>; 2]>::try_from(batch.replies).ok().unwrap();
        for reply in first {
            reply.send(Ok(StepOutcome::Applied)).unwrap();
        }
        assert_eq!(answer_a.try_recv().unwrap(), Ok(StepOutcome::Applied));
        assert_eq!(answer_b.try_recv().unwrap(), Ok(StepOutcome::Applied));
    }

    #[test]
    fn a_command_past_its_deadline_is_answered_and_not_run() {
        let mut queue = CommandQueue::default();
        let (late, mut late_answer) = oneshot::channel();
        let (fresh, _) = oneshot::channel();
        queue.push(command(1, RUN, 99), late);
        queue.push(command(2, RUN, 101), fresh);
        let batch = queue.take_batch(100);
        let ids: Vec<u64> = batch
            .commands
            .iter()
            .map(|c| c.purchase.purchase_id.0)
            .collect();
        assert_eq!(ids, vec![2]);
        assert!(late_answer.try_recv().unwrap().is_err());
        // Once taken, a new command for the same key queues afresh.
        let (again, _) = oneshot::channel();
        queue.push(command(2, RUN, 500), again);
        assert_eq!(queue.len(), 1);
    }
}
