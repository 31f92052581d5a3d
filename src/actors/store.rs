//! The saga store's writer: saga actors hand it their transitions, it commits whatever has
//! queued up in one transaction (group commit) and acknowledges each saga only after its
//! batch is durable. It also numbers step-log entries, so event ids follow commit order.

use tokio::sync::{mpsc, oneshot};

use crate::db::DbError;
use crate::db::sagas::{EventRow, SagaWrite, Sagas};
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
}

struct CommitRequest {
    write: PendingWrite,
    reply: oneshot::Sender<Result<Vec<PurchaseResult>, DbError>>,
}

/// Handle to the saga store: group-committed writes, direct reads.
#[derive(Clone)]
pub struct SagaStore {
    tx: mpsc::Sender<CommitRequest>,
    repo: Sagas,
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

    /// Commits one saga's transition; returns its log entries as committed (ids, times).
    pub async fn commit(&self, write: PendingWrite) -> Result<Vec<PurchaseResult>, DbError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(CommitRequest { write, reply })
            .await
            .map_err(|_| DbError::Unavailable("saga store writer stopped".into()))?;
        answer
            .await
            .map_err(|_| DbError::Unavailable("saga store writer stopped".into()))?
    }

    /// Stores a newly accepted purchase's saga (state `PENDING`).
    pub async fn accept(
        &self,
        purchase: &Purchase,
        owner: u16,
        lease_ms: i64,
    ) -> Result<(), DbError> {
        let now = crate::clock::now_ms();
        self.repo
            .insert(&crate::db::sagas::SagaRow {
                purchase_id: purchase.purchase_id as i64,
                customer_id: purchase.customer_id as i64,
                items: serde_json::to_string(&purchase.items).expect("items serialize"),
                currency_code: purchase.currency.code().to_owned(),
                amount: purchase.amount,
                state: SagaState::Pending.to_string(),
                finished: false,
                attempts: 0,
                owner_node: i32::from(owner),
                lease_expires_at: now + lease_ms,
                created_at: now,
                updated_at: now,
            })
            .await
    }

    /// The repository, for reads.
    pub fn repo(&self) -> &Sagas {
        &self.repo
    }
}

async fn write_loop(mut rx: mpsc::Receiver<CommitRequest>, repo: Sagas, mut next_event_id: u64) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let created_at = crate::clock::now_ms();
        let mut committed = Vec::with_capacity(batch.len());
        let writes: Vec<SagaWrite> = batch
            .iter()
            .map(|req: &CommitRequest| {
                let w = &req.write;
                let results: Vec<PurchaseResult> = w
                    .events
                    .iter()
                    .map(|event| {
                        let event_id = next_event_id;
                        next_event_id += 1;
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
                committed.push(results);
                SagaWrite {
                    purchase_id: w.purchase_id as i64,
                    state: w.state.to_string(),
                    finished: w.state.is_terminal(),
                    attempts: w.attempts as i32,
                    events,
                }
            })
            .collect();
        let outcome = repo.commit(&writes).await;
        for (req, results) in batch.drain(..).zip(committed) {
            let answer = match &outcome {
                Ok(()) => Ok(results),
                Err(e) => Err(DbError::Unavailable(e.to_string())),
            };
            let _ = req.reply.send(answer);
        }
    }
}
