//! The saga store's writer: saga actors hand it their transitions, it commits whatever has
//! queued up in one transaction (group commit) and answers each saga only after its batch is
//! durable. The database numbers each partition's log entries inside that transaction, under
//! this node's epoch, so ids follow commit order and a failed commit burns none.
//!
//! One bad write does not sink its batch: a batch that fails with a query error is split in
//! halves and retried until the bad write fails alone. After each commit the writer publishes
//! the batch's results in event-id order, so a customer's stream sees increasing ids, which is
//! what makes resuming from `Last-Event-ID` lose nothing.
//!
//! In a cluster the partitions it writes for change hands: gains, drops and the release at
//! shutdown come through the same queue as the writes, so each applies after every write
//! queued before it is committed.

use actix_broker::{Broker, SystemBroker};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::messages::ResultPublished;
use crate::db::DbError;
use crate::db::sagas::{Held, Ownership, SagaWrite, Sagas, WriteOutcome};
use crate::domain::ids::CustomerId;
use crate::domain::partition::{self, PartitionId};
use crate::telemetry::metrics::{Metrics, QueuedActor};
use crate::telemetry::traces::{self, TARGET};

/// Most transitions committed in one transaction.
const MAX_BATCH: usize = 512;

/// What the writer is asked to do, in the order asked: a change of ownership applies after
/// every write queued before it is committed.
enum Request {
    /// Commit a saga's transition.
    Write {
        write: SagaWrite,
        reply: oneshot::Sender<Result<WriteOutcome, DbError>>,
    },
    /// Start writing for partitions this node just claimed (at these epochs).
    Gain {
        partitions: Vec<(PartitionId, u64)>,
        reply: oneshot::Sender<()>,
    },
    /// Stop writing for partitions (lost, or about to be given back); answers once what was
    /// queued before is committed.
    Drop {
        partitions: Vec<PartitionId>,
        reply: oneshot::Sender<()>,
    },
    /// Stop writing for every partition (shutdown); answers what it held, with the epochs.
    ReleaseAll {
        reply: oneshot::Sender<Vec<(PartitionId, u64)>>,
    },
}

/// Handle to the saga store: group-committed writes, direct reads.
#[derive(Clone)]
pub struct SagaStore {
    /// The writer; `None` on a node that only reads the store (an api node in a cluster).
    tx: Option<mpsc::Sender<Request>>,
    repo: Sagas,
    partitions: u32,
    /// The epoch this node holds each of its partitions at (what saga actors stamp their
    /// commands with); the writer keeps it in step with the ownership it fences on.
    epochs: Epochs,
}

/// The partitions this node holds, with their epochs, shared between the writer and the
/// saga actors.
pub type Epochs = std::sync::Arc<std::sync::RwLock<std::collections::BTreeMap<PartitionId, u64>>>;

fn stopped() -> DbError {
    DbError::Unavailable("saga store writer stopped (or not run on this node)".into())
}

impl SagaStore {
    /// Takes every partition of the store for `node` (embedded mode: one node owns it all)
    /// and starts the writer on `arbiter` (its own thread: commits block it while they fsync).
    pub async fn start(
        repo: Sagas,
        node: u16,
        partitions: u32,
        arbiter: &actix_rt::ArbiterHandle,
        metrics: &Metrics,
    ) -> Result<Self, DbError> {
        let owned = repo.own_all(partitions, node).await?;
        metrics.partitions_owned().set(i64::from(partitions));
        Ok(Self::run(repo, node, partitions, owned, arbiter, metrics))
    }

    /// Prepares the store's partitions without taking any and starts the writer on
    /// `arbiter` (cluster mode: the [`Leases`](super::leases::Leases) actor claims
    /// partitions and hands them to the writer).
    pub async fn start_leased(
        repo: Sagas,
        node: u16,
        partitions: u32,
        arbiter: &actix_rt::ArbiterHandle,
        metrics: &Metrics,
    ) -> Result<Self, DbError> {
        repo.prepare(partitions).await?;
        metrics.partitions_owned().set(0);
        Ok(Self::run(
            repo,
            node,
            partitions,
            Ownership::new(),
            arbiter,
            metrics,
        ))
    }

    fn run(
        repo: Sagas,
        node: u16,
        partitions: u32,
        owned: Ownership,
        arbiter: &actix_rt::ArbiterHandle,
        metrics: &Metrics,
    ) -> Self {
        let epochs: Epochs = std::sync::Arc::new(std::sync::RwLock::new(
            owned.iter().map(|(p, held)| (*p, held.epoch)).collect(),
        ));
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        // The queue's depth is read at scrape time from a handle that does not keep the
        // writer alive.
        let (depth, weak) = (metrics.queue_depth(QueuedActor::SagaStore), tx.downgrade());
        metrics.sample_before_scrape(move || {
            let queued = weak
                .upgrade()
                .map_or(0, |tx| tx.max_capacity() - tx.capacity());
            depth.set(queued as i64);
        });
        let writer = Writer {
            repo: repo.clone(),
            node,
            owned,
            epochs: epochs.clone(),
            batches: metrics.commit_batch(QueuedActor::SagaStore),
            metrics: metrics.clone(),
            #[cfg(feature = "faults")]
            exit_after: ExitAfterCommits::from_env(),
        };
        arbiter.spawn(writer.run(rx));
        Self {
            tx: Some(tx),
            repo,
            partitions,
            epochs,
        }
    }

    /// The store as an api node without the orchestrator role sees it: reads only (purchase
    /// status, stream resumes); the orchestrator writes. `partitions` must match the store's.
    pub fn reader(repo: Sagas, partitions: u32) -> Self {
        Self {
            tx: None,
            repo,
            partitions,
            epochs: Epochs::default(),
        }
    }

    /// Commits one saga's transition and publishes its results; answers once both are done.
    pub async fn commit(&self, write: SagaWrite) -> Result<WriteOutcome, DbError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Write { write, reply }).await?;
        answer.await.map_err(|_| stopped())?
    }

    async fn send(&self, request: Request) -> Result<(), DbError> {
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        tx.send(request).await.map_err(|_| stopped())
    }

    /// Starts writing for partitions this node claimed, at their new epochs (their next
    /// event id is read at the first commit); answers once saga actors can stamp them.
    pub async fn gain(&self, partitions: Vec<(PartitionId, u64)>) -> Result<(), DbError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Gain { partitions, reply }).await?;
        answer.await.map_err(|_| stopped())
    }

    /// Stops writing for `partitions`: answers once every write queued before is committed;
    /// later writes for them come back `LostPartition`.
    pub async fn drop_partitions(&self, partitions: Vec<PartitionId>) -> Result<(), DbError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Drop { partitions, reply }).await?;
        answer.await.map_err(|_| stopped())
    }

    /// Stops writing for every partition once what is queued is committed (shutdown);
    /// answers what the writer held, with the epochs, for the caller to give back.
    pub async fn release_all(&self) -> Result<Vec<(PartitionId, u64)>, DbError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::ReleaseAll { reply }).await?;
        answer.await.map_err(|_| stopped())
    }

    /// The epoch this node holds `partition` at; `None` when it does not hold it.
    pub fn epoch_of(&self, partition: PartitionId) -> Option<u64> {
        self.epochs
            .read()
            .expect("epochs lock")
            .get(&partition)
            .copied()
    }

    /// The partitions this node holds now, ascending.
    pub fn held(&self) -> Vec<PartitionId> {
        self.epochs
            .read()
            .expect("epochs lock")
            .keys()
            .copied()
            .collect()
    }

    /// The partition a customer's sagas belong to.
    pub fn partition_of(&self, customer_id: CustomerId) -> PartitionId {
        partition::of_customer(customer_id, self.partitions)
    }

    /// A customer's committed results after an event id, in id order (SSE resume).
    pub async fn events_after(
        &self,
        customer_id: CustomerId,
        after: u64,
        limit: u64,
    ) -> Result<Vec<crate::domain::purchase::PurchaseResult>, DbError> {
        let partition = self.partition_of(customer_id);
        self.repo
            .customer_events_after(partition, customer_id, after, limit)
            .await
    }

    /// The newest event id committed in the customer's partition (0: none): a new stream's
    /// partition is tracked from there by the result hub.
    pub async fn partition_top(&self, customer_id: CustomerId) -> Result<u64, DbError> {
        let partition = self.partition_of(customer_id);
        let tops = self.repo.partition_tops(&[partition]).await?;
        Ok(tops.first().map_or(0, |(_, top)| *top))
    }

    /// The newest event id pruned from the customer's partition: a stream resumed from
    /// before it may have missed events that are gone.
    pub async fn pruned_up_to(&self, customer_id: CustomerId) -> Result<u64, DbError> {
        self.repo.pruned_up_to(self.partition_of(customer_id)).await
    }

    /// A customer's own purchase; another customer's is as good as absent.
    pub async fn purchase_of(
        &self,
        customer_id: CustomerId,
        purchase_id: crate::domain::ids::PurchaseId,
    ) -> crate::actors::ServiceResult<crate::db::sagas::StoredSaga> {
        match self.repo.by_id(purchase_id).await? {
            Some(s) if s.purchase.customer_id == customer_id => Ok(s),
            _ => Err(crate::actors::ServiceError::PurchaseNotFound),
        }
    }

    /// The repository, for reads.
    pub fn repo(&self) -> &Sagas {
        &self.repo
    }
}

/// Commits `writes`, splitting the batch around writes that fail on their own. Answers one
/// outcome per write, or the error that failed them all (the database is unavailable).
pub async fn commit_isolating(
    repo: &Sagas,
    node: u16,
    owned: &mut Ownership,
    writes: &[SagaWrite],
) -> Result<Vec<WriteOutcome>, DbError> {
    // Ranges still to commit, processed in order so that ids stay in submission order.
    let mut pending: Vec<std::ops::Range<usize>> = Vec::with_capacity(16);
    pending.push(0..writes.len());
    let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; writes.len()];
    while let Some(range) = pending.pop() {
        match repo.commit(node, owned, &writes[range.clone()]).await {
            Ok(done) => {
                for (slot, outcome) in outcomes[range].iter_mut().zip(done) {
                    *slot = Some(outcome);
                }
            }
            Err(e @ (DbError::Unavailable(_) | DbError::Setup(_))) => return Err(e),
            Err(e) if range.len() == 1 => {
                tracing::error!(purchase_id = %writes[range.start].purchase.purchase_id, error = %e, "saga write failed on its own");
                outcomes[range.start] = Some(WriteOutcome::Failed(e.to_string()));
            }
            Err(_) => {
                let mid = range.start + range.len() / 2;
                pending.push(mid..range.end);
                pending.push(range.start..mid);
            }
        }
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.expect("every range committed"))
        .collect())
}

/// Test switch (builds with `faults` only): `SAGASHOP_FAULT_EXIT_AFTER_COMMITS=N` makes the
/// writer exit the process right after its N-th batch that committed a transition, before
/// publishing that batch's results: a node dying between its commit and its publication,
/// whose tail streams elsewhere must read from the step log.
#[cfg(feature = "faults")]
struct ExitAfterCommits {
    after: Option<u64>,
    committed: u64,
}

#[cfg(feature = "faults")]
impl ExitAfterCommits {
    fn from_env() -> Self {
        let after = std::env::var("SAGASHOP_FAULT_EXIT_AFTER_COMMITS")
            .ok()
            .and_then(|n| n.trim().parse().ok());
        Self {
            after,
            committed: 0,
        }
    }

    /// Counts a batch; exits after the N-th one that committed anything.
    fn batch(&mut self, outcomes: &[WriteOutcome]) {
        if !outcomes
            .iter()
            .any(|o| matches!(o, WriteOutcome::Committed(_)))
        {
            return;
        }
        self.committed += 1;
        if self.after == Some(self.committed) {
            tracing::error!(
                batches = self.committed,
                "fault switch: exiting after a commit, before publishing it"
            );
            std::process::exit(137);
        }
    }
}

/// The writer's state, on its own thread.
struct Writer {
    repo: Sagas,
    node: u16,
    owned: Ownership,
    epochs: Epochs,
    batches: prometheus::Histogram,
    metrics: Metrics,
    #[cfg(feature = "faults")]
    exit_after: ExitAfterCommits,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut queued = Vec::with_capacity(MAX_BATCH);
        let mut writes = Vec::with_capacity(MAX_BATCH);
        let mut replies = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut queued, MAX_BATCH).await > 0 {
            for request in queued.drain(..) {
                match request {
                    Request::Write { write, reply } => {
                        writes.push(write);
                        replies.push(reply);
                        continue;
                    }
                    control => {
                        // Ownership changes after the writes queued before it.
                        self.commit(&mut writes, &mut replies).await;
                        self.control(control);
                    }
                }
            }
            self.commit(&mut writes, &mut replies).await;
        }
    }

    fn control(&mut self, request: Request) {
        let mut epochs = self.epochs.write().expect("epochs lock");
        match request {
            Request::Write { .. } => unreachable!("writes are committed, not applied"),
            Request::Gain { partitions, reply } => {
                for (p, epoch) in partitions {
                    let held = Held {
                        epoch,
                        next_seq: None,
                    };
                    self.owned.insert(p, held);
                    epochs.insert(p, epoch);
                }
                let _ = reply.send(());
            }
            Request::Drop { partitions, reply } => {
                for p in partitions {
                    self.owned.remove(&p);
                    epochs.remove(&p);
                }
                let _ = reply.send(());
            }
            Request::ReleaseAll { reply } => {
                let held = self.owned.iter().map(|(p, h)| (*p, h.epoch)).collect();
                self.owned.clear();
                epochs.clear();
                let _ = reply.send(held);
            }
        }
    }

    async fn commit(
        &mut self,
        writes: &mut Vec<SagaWrite>,
        replies: &mut Vec<oneshot::Sender<Result<WriteOutcome, DbError>>>,
    ) {
        if writes.is_empty() {
            return;
        }
        self.batches.observe(writes.len() as f64);
        // One span per transaction, linked to (not a child of) each saga it carries.
        let span = tracing::trace_span!(target: TARGET, "db.commit", database = "saga",
            writes = writes.len());
        for write in writes.iter() {
            traces::link(&span, &write.trace);
        }
        let committed = commit_isolating(&self.repo, self.node, &mut self.owned, writes)
            .instrument(span)
            .await;
        match committed {
            Ok(outcomes) => {
                #[cfg(feature = "faults")]
                self.exit_after.batch(&outcomes);
                let mut fenced = Vec::new();
                for (outcome, write) in outcomes.iter().zip(writes.iter()) {
                    match outcome {
                        WriteOutcome::Committed(results) => {
                            self.metrics.writes_committed().inc();
                            for result in results {
                                let published = ResultPublished(*result, write.trace.clone());
                                Broker::<SystemBroker>::issue_async(published);
                            }
                        }
                        WriteOutcome::LostPartition => {
                            self.metrics.writes_fenced().inc();
                            fenced.push(write.partition);
                        }
                        _ => {}
                    }
                }
                if !fenced.is_empty() {
                    // Another node holds them now: stop writing for them until they are
                    // claimed again (the Leases actor sees the loss at its next renewal).
                    let mut epochs = self.epochs.write().expect("epochs lock");
                    for p in fenced {
                        self.owned.remove(&p);
                        epochs.remove(&p);
                    }
                }
                for (reply, outcome) in replies.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(DbError::Unavailable(e.to_string())));
                }
            }
        }
        writes.clear();
    }
}
