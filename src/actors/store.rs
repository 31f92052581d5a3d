//! The saga store's writer: saga actors hand it their transitions, it commits whatever has
//! queued up in one transaction (group commit) and acknowledges each saga only after its
//! batch is durable. It also numbers step-log entries, so event ids follow commit order.
//! New sagas are written together with their first transition, and lease renewals go through
//! it too, so nothing else writes the saga database.
//!
//! After each commit the writer itself publishes the batch's results, in event-id order: a
//! customer's stream therefore sees ids in increasing order, which is what makes resuming
//! from `Last-Event-ID` lose nothing.

use actix_broker::{Broker, SystemBroker};
use tokio::sync::{mpsc, oneshot};

use super::messages::ResultPublished;
use crate::db::DbError;
use crate::db::sagas::{EventRow, SagaRow, SagaWrite, Sagas};
use crate::domain::purchase::{Purchase, PurchaseResult, StepEvent};
use crate::domain::saga::SagaState;

/// Most transitions committed in one transaction.
const MAX_BATCH: usize = 512;

/// A saga transition waiting to be committed.
#[derive(Debug, Clone)]
pub struct PendingWrite {
    pub purchase_id: u64,
    pub customer_id: u64,
    pub state: SagaState,
    pub attempts: u32,
    pub events: Vec<StepEvent>,
    /// Set for a newly accepted saga: its row is inserted in the same transaction.
    pub new_saga: Option<SagaRow>,
}

enum Request {
    Commit {
        write: PendingWrite,
        reply: oneshot::Sender<Result<(), DbError>>,
    },
    RenewLeases {
        owner: u16,
        until_ms: i64,
    },
}

/// Handle to the saga store: group-committed writes, direct reads.
#[derive(Clone)]
pub struct SagaStore {
    tx: mpsc::Sender<Request>,
    repo: Sagas,
}

fn stopped() -> DbError {
    DbError::Unavailable("saga store writer stopped".into())
}

impl SagaStore {
    /// Starts the writer on `arbiter` (its own thread: commits block it while they fsync);
    /// event ids continue after the stored ones.
    pub async fn start(repo: Sagas, arbiter: &actix_rt::ArbiterHandle) -> Result<Self, DbError> {
        let next_event_id = repo.max_event_id().await? + 1;
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        arbiter.spawn(write_loop(rx, repo.clone(), next_event_id));
        Ok(Self { tx, repo })
    }

    /// Commits one saga's transition and publishes its results; returns once both are done.
    pub async fn commit(&self, write: PendingWrite) -> Result<(), DbError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request::Commit { write, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Asks the writer to extend `owner`'s lease on its unfinished sagas (fire and forget).
    pub fn renew_leases(&self, owner: u16, until_ms: i64) {
        let _ = self.tx.try_send(Request::RenewLeases { owner, until_ms });
    }

    /// The row of a newly accepted purchase, to be written with its first transition.
    pub fn new_row(purchase: &Purchase, state: SagaState, owner: u16, lease_ms: i64) -> SagaRow {
        let now = crate::clock::now_ms();
        SagaRow {
            purchase_id: purchase.purchase_id as i64,
            customer_id: purchase.customer_id as i64,
            items: serde_json::to_string(&purchase.items).expect("items serialize"),
            currency_code: purchase.currency.code().to_owned(),
            amount: purchase.amount,
            state: state.to_string(),
            finished: false,
            attempts: 0,
            owner_node: i32::from(owner),
            lease_expires_at: now + lease_ms,
            created_at: now,
            updated_at: now,
        }
    }

    /// The repository, for reads.
    pub fn repo(&self) -> &Sagas {
        &self.repo
    }
}

/// Numbers a transition's log entries and turns it into the rows to commit.
fn prepare(
    w: PendingWrite,
    next_event_id: &mut u64,
    created_at: i64,
) -> (SagaWrite, Vec<PurchaseResult>) {
    let results: Vec<PurchaseResult> = w
        .events
        .iter()
        .map(|event| {
            let event_id = *next_event_id;
            *next_event_id += 1;
            PurchaseResult {
                event_id,
                purchase_id: w.purchase_id,
                customer_id: w.customer_id,
                event: *event,
                timestamp: created_at / 1000,
            }
        })
        .collect();
    let events = results
        .iter()
        .map(|r| EventRow {
            event_id: r.event_id as i64,
            purchase_id: r.purchase_id as i64,
            customer_id: r.customer_id as i64,
            step: r.event.step.as_str().to_owned(),
            status: r.event.status.as_str().to_owned(),
            created_at,
        })
        .collect();
    let write = SagaWrite {
        purchase_id: w.purchase_id as i64,
        state: w.state.to_string(),
        finished: w.state.is_terminal(),
        attempts: w.attempts as i32,
        events,
        insert: w.new_saga,
    };
    (write, results)
}

async fn write_loop(mut rx: mpsc::Receiver<Request>, repo: Sagas, mut next_event_id: u64) {
    let mut queued = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut queued, MAX_BATCH).await > 0 {
        let created_at = crate::clock::now_ms();
        let mut writes = Vec::with_capacity(queued.len());
        let mut waiting = Vec::with_capacity(queued.len());
        let mut leases = Vec::new();
        for request in queued.drain(..) {
            match request {
                Request::Commit { write, reply } => {
                    let (write, results) = prepare(write, &mut next_event_id, created_at);
                    writes.push(write);
                    waiting.push((reply, results));
                }
                Request::RenewLeases { owner, until_ms } => leases.push((owner, until_ms)),
            }
        }
        if !writes.is_empty() {
            let outcome = repo.commit(&writes).await;
            for (reply, results) in waiting {
                let answer = match &outcome {
                    Ok(()) => {
                        for result in results {
                            Broker::<SystemBroker>::issue_async(ResultPublished(result));
                        }
                        Ok(())
                    }
                    Err(e) => Err(DbError::Unavailable(e.to_string())),
                };
                let _ = reply.send(answer);
            }
        }
        for (owner, until_ms) in leases {
            if let Err(e) = repo.renew_leases(owner, until_ms).await {
                tracing::warn!(error = %e, "cannot renew saga leases");
            }
        }
    }
}
