//! The Leases actor (orchestrators in a cluster): keeps this node's partition leases and its
//! fair share of the partitions. Every third of a lease it renews what it holds, gives back
//! partitions over its share of the live orchestrators, and claims unowned or expired ones
//! up to its share. It hands every change to the store writer (which fences commits on the
//! epochs) and to the supervisor (which starts or stops the sagas of those partitions).
//!
//! At shutdown ([`Leave`]) it gives every partition back once the writer has committed what
//! is queued, so other orchestrators claim them at once instead of waiting for the leases.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_broker::{Broker, SystemBroker};

use super::messages::PartitionClaimed;
use super::store::SagaStore;
use super::supervisor::{PartitionsGained, PartitionsLost, SagaSupervisor};
use crate::db::DbError;
use crate::db::partitions::{PartitionLeases, fair_share};
use crate::domain::partition::PartitionId;
use crate::telemetry::metrics::{Handover, Metrics};

/// Gives back every partition this node holds (graceful shutdown); answers once done.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Leave;

/// Runs a round now (renew, give back, claim) and answers when it is done: a node about to
/// serve claims its share first, so purchases do not find it holding nothing.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Round;

/// What the actor works with; behind an async lock so that a round and [`Leave`] never
/// overlap.
struct State {
    db: PartitionLeases,
    /// The partitions this node holds, with their epochs.
    held: BTreeMap<PartitionId, u64>,
    store: SagaStore,
    supervisor: Addr<SagaSupervisor>,
    metrics: Metrics,
    partitions: u32,
    lease: Duration,
    /// When the last successful renewal started: past a lease without one, every partition
    /// may be someone else's.
    renewed_at: Instant,
    left: bool,
}

/// Keeps this orchestrator's partition leases.
pub struct Leases {
    state: Arc<tokio::sync::Mutex<State>>,
    tick: Duration,
    ticking: bool,
}

impl Leases {
    /// Leases over `db` for a store of `partitions` partitions, each lease lasting `lease`;
    /// gains and losses go to `store` and `supervisor`.
    pub fn new(
        db: PartitionLeases,
        store: SagaStore,
        supervisor: Addr<SagaSupervisor>,
        metrics: Metrics,
        partitions: u32,
        lease: Duration,
    ) -> Self {
        let state = State {
            db,
            held: BTreeMap::new(),
            store,
            supervisor,
            metrics,
            partitions,
            lease,
            renewed_at: Instant::now(),
            left: false,
        };
        Self {
            state: Arc::new(tokio::sync::Mutex::new(state)),
            tick: (lease / 3).max(Duration::from_millis(100)),
            ticking: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.ticking, true) {
            return;
        }
        let state = self.state.clone();
        ctx.spawn(
            async move { state.lock().await.round().await }
                .into_actor(self)
                .map(|(), act, _| act.ticking = false),
        );
    }
}

impl Actor for Leases {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick(ctx);
        ctx.run_interval(self.tick, |act, ctx| act.tick(ctx));
    }
}

impl Handler<Round> for Leases {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Round, _: &mut Context<Self>) -> Self::Result {
        let state = self.state.clone();
        Box::pin(async move { state.lock().await.round().await })
    }
}

impl Handler<Leave> for Leases {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Leave, _: &mut Context<Self>) -> Self::Result {
        let state = self.state.clone();
        Box::pin(async move { state.lock().await.leave().await })
    }
}

impl State {
    /// One round: renew, then move towards the fair share.
    async fn round(&mut self) {
        if self.left {
            return;
        }
        if let Err(e) = self.lease_round().await {
            tracing::warn!(error = %e, "cannot renew partition leases");
            if self.renewed_at.elapsed() >= self.lease && !self.held.is_empty() {
                // Our leases may have run out: another node may hold them now. Stop writing
                // them (the fence refuses stale writes anyway) until they can be claimed again.
                tracing::error!(
                    partitions = self.held.len(),
                    "partition leases not renewed within a lease; giving up the partitions"
                );
                let all: Vec<PartitionId> = self.held.keys().copied().collect();
                self.lose(all, Handover::Lost).await;
            }
        }
        self.metrics.partitions_owned().set(self.held.len() as i64);
    }

    async fn lease_round(&mut self) -> Result<(), DbError> {
        let started = Instant::now();
        let live = self.db.heartbeat().await?;
        let renewed = self.db.renew(&self.held).await?;
        self.renewed_at = started;
        if !renewed.lost.is_empty() {
            tracing::warn!(partitions = ?renewed.lost, "partitions lost to another node");
            self.lose(renewed.lost, Handover::Lost).await;
        }
        let share = fair_share(self.partitions, live);
        if self.held.len() > share {
            self.give_back(self.held.len() - share).await
        } else if self.held.len() < share {
            self.take(share - self.held.len()).await
        } else {
            Ok(())
        }
    }

    /// Stops this node's work on `partitions` (which are no longer its own in the store).
    async fn lose(&mut self, partitions: Vec<PartitionId>, kind: Handover) {
        for p in &partitions {
            self.held.remove(p);
        }
        self.supervisor.do_send(PartitionsLost {
            partitions: partitions.clone(),
        });
        let count = partitions.len() as u64;
        if let Err(e) = self.store.drop_partitions(partitions).await {
            tracing::warn!(error = %e, "the saga store writer did not drop lost partitions");
        }
        self.metrics.handover(kind).inc_by(count);
    }

    /// Gives back `n` partitions (the highest ids): their sagas stop, what is queued for
    /// them is committed, then the store lets another node claim them.
    async fn give_back(&mut self, n: usize) -> Result<(), DbError> {
        let given: BTreeMap<PartitionId, u64> = self
            .held
            .iter()
            .rev()
            .take(n)
            .map(|(p, e)| (*p, *e))
            .collect();
        let partitions: Vec<PartitionId> = given.keys().copied().collect();
        for p in &partitions {
            self.held.remove(p);
        }
        self.supervisor.do_send(PartitionsLost {
            partitions: partitions.clone(),
        });
        self.store.drop_partitions(partitions).await?;
        let released = self.db.release(&given).await?;
        tracing::info!(partitions = ?given.keys().collect::<Vec<_>>(), "partitions given back (over the fair share)");
        self.metrics
            .handover(Handover::Released)
            .inc_by(released as u64);
        Ok(())
    }

    /// Claims up to `n` unowned or expired partitions and starts their work here.
    async fn take(&mut self, n: usize) -> Result<(), DbError> {
        let claimed = self.db.claim(&self.held, n).await?;
        if claimed.is_empty() {
            return Ok(());
        }
        let gained: Vec<(PartitionId, u64)> =
            claimed.iter().map(|c| (c.partition, c.epoch)).collect();
        for (p, epoch) in &gained {
            self.held.insert(*p, *epoch);
        }
        self.store.gain(gained).await?;
        for c in &claimed {
            Broker::<SystemBroker>::issue_async(PartitionClaimed {
                partition: c.partition,
                epoch: c.epoch,
                top: (c.next_seq - 1).max(0) as u64,
            });
        }
        let partitions: Vec<PartitionId> = claimed.iter().map(|c| c.partition).collect();
        tracing::info!(partitions = ?partitions, "partitions claimed");
        self.metrics
            .handover(Handover::Claimed)
            .inc_by(claimed.len() as u64);
        self.supervisor.do_send(PartitionsGained { partitions });
        Ok(())
    }

    /// Gives back every partition once the writer has committed what is queued, and leaves
    /// the live orchestrators.
    async fn leave(&mut self) {
        if std::mem::replace(&mut self.left, true) {
            return;
        }
        self.supervisor.do_send(PartitionsLost {
            partitions: self.held.keys().copied().collect(),
        });
        let held: BTreeMap<PartitionId, u64> = match self.store.release_all().await {
            Ok(held) => held.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "the saga store writer did not drain");
                self.held.clone()
            }
        };
        match self.db.leave(&held).await {
            Ok(released) => {
                tracing::info!(partitions = released, "partitions given back at shutdown");
                self.metrics
                    .handover(Handover::Released)
                    .inc_by(released as u64);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot give the partitions back; they expire with their leases")
            }
        }
        self.held.clear();
        self.metrics.partitions_owned().set(0);
    }
}
