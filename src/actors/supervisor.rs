//! The SagaSupervisor: accepts purchases (bounded: past the cap it answers `Busy`), starts a
//! saga actor per purchase, restarts any that dies before finishing, resumes unfinished sagas
//! from the store on start (in a cluster: those of each partition it claims, and it stops
//! those of partitions it loses), and sets aside (quarantines) sagas whose stored log does not
//! replay, so that one bad saga never stops the others. In a cluster it also starts the sagas
//! api nodes accepted in the partitions it holds ([`Adopt`]: from their start notices, and
//! from a sweep of those partitions for sagas still at version 0).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tracing::Instrument;

use super::messages::AcceptPurchase;
use super::saga::{SagaActor, SagaDeps, SagaFinished, SagaPosition, StopSaga};
use super::store::SagaStore;
use super::{ServiceError, ServiceResult};
use crate::db::sagas::{SagaWrite, StoredSaga, WriteOutcome};
use crate::domain::ids::PurchaseId;
use crate::domain::partition::PartitionId;
use crate::domain::saga::{Saga, SagaEvent, next};
use crate::telemetry::traces::{self, TARGET};

/// How often dead saga actors and released sagas are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How often released sagas (`sagashop sagas retry`) are looked for.
const RELEASED_EVERY: Duration = Duration::from_secs(2);
/// Unfinished sagas loaded per query on resume.
const RESUME_PAGE: u64 = 1000;

/// How often this node's partitions are swept for sagas accepted elsewhere and not started
/// (their start notice lost): a lost notice delays a saga by this much at most.
const PENDING_EVERY: Duration = Duration::from_millis(500);
/// Most pending sagas one sweep picks up.
const PENDING_PAGE: usize = 1000;

/// How often resumed sagas are started, a slice at a time.
const RESUME_TICK: Duration = Duration::from_millis(20);

/// Limits of the supervisor.
#[derive(Debug, Clone, Copy)]
pub struct SupervisorSettings {
    pub max_in_flight: usize,
    /// Resumed sagas started per second after a restart: a node that comes back with a
    /// large backlog does not flood its participants with every saga at once.
    pub resume_per_second: usize,
    /// How long finished sagas' step logs are kept.
    pub retain: Duration,
    /// How often logs past retention are looked for.
    pub prune_every: Duration,
    /// Whether sagas may be stored unstarted for this node to find (a cluster, where api
    /// nodes store what they accept). Embedded, every saga is stored with its first
    /// transition, and the look would only read every saga in flight, twice a second.
    pub sweep_pending: bool,
}

/// Sagas whose logs are pruned in one transaction.
const PRUNE_BATCH: u64 = 500;

/// A saga actor this supervisor started.
struct Running {
    partition: PartitionId,
    addr: Addr<SagaActor>,
}

/// This node claimed these partitions (cluster mode): their unfinished sagas are resumed,
/// at the bounded pace of a restart.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct PartitionsGained {
    pub partitions: Vec<PartitionId>,
}

/// This node no longer holds these partitions (lost or given back): their saga actors stop,
/// and the node that holds them now resumes those sagas from the store.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct PartitionsLost {
    pub partitions: Vec<PartitionId>,
}

/// Supervises every saga of this node.
pub struct SagaSupervisor {
    deps: SagaDeps,
    settings: SupervisorSettings,
    running: HashMap<PurchaseId, Running>,
    /// Accepted purchases whose saga row is being written (they count against the cap).
    accepting: usize,
    /// A pruning pass is running.
    pruning: bool,
    /// Sagas found on start, started at a bounded pace once the supervisor runs.
    resumed: VecDeque<SagaPosition>,
    /// Sagas accepted by an api node being loaded to start here (they also count in
    /// `accepting`): a notice and a sweep that find the same saga start it once.
    adopting: HashSet<PurchaseId>,
    /// A sweep for pending sagas is running.
    sweeping_pending: bool,
}

/// Sagas an api node accepted (stored at version 0) in partitions this node holds: start the
/// ones not running yet. Sent by the start notice listener and by the supervisor's own sweep.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Adopt {
    pub ids: Vec<PurchaseId>,
}

/// Sagas an api node accepted (stored at version 0, no log) with their purchases, in
/// partitions this node may hold: start them without reading them back. Sent with the
/// start notices; a saga that moved on meanwhile fails its first write as a conflict and is
/// reloaded from the store.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct AdoptNew {
    pub sagas: Vec<Accepted>,
}

/// One accepted saga as its api node stored it.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub purchase: Arc<crate::domain::purchase::Purchase>,
    pub partition: PartitionId,
    /// The trace its spans continue (the request that made the purchase).
    pub trace: crate::domain::trace::TraceContext,
}

impl SagaSupervisor {
    /// Supervisor that will start `resumed` (from [`load_unfinished`]) when it starts.
    pub fn new(deps: SagaDeps, settings: SupervisorSettings, resumed: Vec<SagaPosition>) -> Self {
        Self {
            deps,
            settings,
            running: HashMap::new(),
            accepting: 0,
            pruning: false,
            resumed: resumed.into(),
            adopting: HashSet::new(),
            sweeping_pending: false,
        }
    }

    /// Sagas counted against the in-flight cap.
    fn in_flight(&self) -> usize {
        self.running.len() + self.accepting + self.resumed.len()
    }

    /// Loads and starts the sagas of `ids` that are not running, queued or loading here, as
    /// many as the in-flight cap leaves room for (the sweep finds the others later). Sagas of
    /// partitions this node does not hold are left to their owner.
    fn adopt(&mut self, ids: Vec<PurchaseId>, ctx: &mut Context<Self>) {
        let room = self.settings.max_in_flight.saturating_sub(self.in_flight());
        // Queued for resumption (after a start or a takeover) is as good as running.
        let queued: HashSet<PurchaseId> = self
            .resumed
            .iter()
            .map(|at| at.purchase.purchase_id)
            .collect();
        let ids: Vec<PurchaseId> = ids
            .into_iter()
            .filter(|id| !self.running.contains_key(id) && !self.adopting.contains(id))
            .filter(|id| !queued.contains(id))
            .take(room)
            .collect();
        if ids.is_empty() {
            return;
        }
        self.accepting += ids.len();
        self.adopting.extend(ids.iter().copied());
        let (store, loading) = (self.deps.store.clone(), ids.clone());
        ctx.spawn(
            async move {
                let mut found = Vec::with_capacity(loading.len());
                for stored in store.repo().load(&loading).await? {
                    if store.epoch_of(stored.partition).is_some() {
                        found.extend(position_of(&store, stored).await?);
                    }
                }
                Ok::<_, ServiceError>(found)
            }
            .into_actor(self)
            .map(move |loaded, act, ctx| {
                act.accepting -= ids.len();
                for id in &ids {
                    act.adopting.remove(id);
                }
                match loaded {
                    Ok(found) => {
                        for at in found {
                            if !act.running.contains_key(&at.purchase.purchase_id) {
                                act.launch(at, ctx);
                            }
                        }
                    }
                    // The sweep finds them again.
                    Err(e) => tracing::warn!(error = %e, "cannot load accepted sagas"),
                }
            }),
        );
    }

    /// Looks for sagas accepted in this node's partitions and not started (their notice was
    /// lost, or came while no one held the partition).
    fn sweep_pending(&mut self, ctx: &mut Context<Self>) {
        let room = self.settings.max_in_flight.saturating_sub(self.in_flight());
        let held = self.deps.store.held();
        if room == 0 || held.is_empty() || std::mem::replace(&mut self.sweeping_pending, true) {
            return;
        }
        let store = self.deps.store.clone();
        let limit = room.min(PENDING_PAGE) as u64;
        ctx.spawn(
            async move { store.repo().pending_in(&held, limit).await }
                .into_actor(self)
                .map(|found, act, ctx| {
                    act.sweeping_pending = false;
                    match found {
                        Ok(ids) => act.adopt(ids, ctx),
                        Err(e) => tracing::warn!(error = %e, "cannot look for accepted sagas"),
                    }
                }),
        );
    }

    /// Prunes the step logs of sagas finished longer ago than the retention, in small
    /// transactions, so that the store does not grow without end.
    fn prune(&mut self, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.pruning, true) {
            return;
        }
        let store = self.deps.store.clone();
        let cutoff = self.deps.clock.now_ms() - self.settings.retain.as_millis() as i64;
        ctx.spawn(
            async move {
                let mut pruned = 0;
                loop {
                    let n = store
                        .repo()
                        .prune(&store.held(), cutoff, PRUNE_BATCH)
                        .await?;
                    pruned += n;
                    if (n as u64) < PRUNE_BATCH {
                        return Ok::<_, crate::db::DbError>(pruned);
                    }
                }
            }
            .into_actor(self)
            .map(|done, act, _| {
                act.pruning = false;
                match done {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sagas = n, "pruned step logs past retention"),
                    Err(e) => tracing::warn!(error = %e, "cannot prune step logs"),
                }
            }),
        );
    }

    /// Starts the next slice of resumed sagas.
    fn resume_some(&mut self, ctx: &mut Context<Self>) {
        let per_tick = (self.settings.resume_per_second * RESUME_TICK.as_millis() as usize)
            .div_ceil(1000)
            .max(1);
        for _ in 0..per_tick {
            let Some(at) = self.resumed.pop_front() else {
                return;
            };
            self.launch(at, ctx);
        }
    }

    fn launch(&mut self, at: SagaPosition, ctx: &mut Context<Self>) {
        let id = at.purchase.purchase_id;
        if at.version == 0 {
            // Accepted by an api node; its first transition is this actor's.
            self.deps.metrics.saga_started();
        }
        let partition = at.partition;
        let actor = SagaActor::new(at, self.deps.clone(), ctx.address().recipient());
        let addr = actor.start();
        self.running.insert(id, Running { partition, addr });
    }

    /// Restarts sagas whose actor died (panicked or stopped) before reaching a terminal state.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let dead: Vec<PurchaseId> = self
            .running
            .iter()
            .filter(|(_, running)| !running.addr.connected())
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.running.remove(&id);
            self.deps.metrics.supervisor_restarted();
            tracing::warn!(
                purchase_id = %id,
                "saga actor died; restarting from the store"
            );
            self.reload(id, ctx);
        }
    }

    /// Picks up sagas an operator released from quarantine.
    fn pick_up_released(&mut self, ctx: &mut Context<Self>) {
        let store = self.deps.store.clone();
        ctx.spawn(
            async move {
                let mut ids = store.repo().released().await?;
                // In a cluster each orchestrator picks up the sagas of the partitions it holds.
                if !ids.is_empty() {
                    let held: BTreeSet<PartitionId> = store.held().into_iter().collect();
                    let ours = store.repo().load(&ids).await?;
                    ids = ours
                        .into_iter()
                        .filter(|s| held.contains(&s.partition))
                        .map(|s| s.purchase.purchase_id)
                        .collect();
                }
                for &id in &ids {
                    store.repo().picked_up(id).await?;
                }
                Ok::<_, crate::db::DbError>(ids)
            }
            .into_actor(self)
            .map(|found, act, ctx| match found {
                Ok(ids) => {
                    for id in ids {
                        if act.running.contains_key(&id) {
                            continue;
                        }
                        tracing::info!(purchase_id = %id, "saga released from quarantine");
                        act.reload(id, ctx);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot look for released sagas"),
            }),
        );
    }

    fn reload(&mut self, id: PurchaseId, ctx: &mut Context<Self>) {
        let store = self.deps.store.clone();
        self.accepting += 1;
        ctx.spawn(
            async move { load_one(&store, id).await }
                .into_actor(self)
                .map(move |loaded, act, ctx| {
                    act.accepting -= 1;
                    match loaded {
                        Ok(Some(at)) => act.launch(at, ctx),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(purchase_id = %id, error = %e, "cannot reload saga; retrying");
                            ctx.run_later(SWEEP_EVERY, move |act, ctx| act.reload(id, ctx));
                        }
                    }
                }),
        );
    }
}

impl Actor for SagaSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(usize::MAX >> 4);
        self.resume_some(ctx);
        ctx.run_interval(RESUME_TICK, |act, ctx| act.resume_some(ctx));
        ctx.run_interval(SWEEP_EVERY, |act, ctx| act.sweep(ctx));
        ctx.run_interval(RELEASED_EVERY, |act, ctx| act.pick_up_released(ctx));
        if self.settings.sweep_pending {
            ctx.run_interval(PENDING_EVERY, |act, ctx| act.sweep_pending(ctx));
        }
        ctx.run_interval(self.settings.prune_every, |act, ctx| act.prune(ctx));
    }
}

impl Handler<AcceptPurchase> for SagaSupervisor {
    type Result = ResponseActFuture<Self, ServiceResult<()>>;

    /// Stores the saga together with its first transition (one group-committed write, whose
    /// results the store publishes), then starts the saga actor on the first call.
    fn handle(&mut self, msg: AcceptPurchase, _: &mut Context<Self>) -> Self::Result {
        if self.in_flight() >= self.settings.max_in_flight {
            return Box::pin(fut::ready(Err(ServiceError::Busy)));
        }
        let now = self.deps.clock.now_ms();
        if now > msg.deadline_ms {
            let late = ServiceError::Unavailable("the purchase arrived after its deadline".into());
            return Box::pin(fut::ready(Err(late)));
        }
        let start = next(Saga::NEW, SagaEvent::Start, &self.deps.policy.retry, now)
            .expect("a new saga can start");
        let purchase = Arc::new(msg.purchase);
        // The saga's trace: a child of the request that made the purchase; every span of the
        // saga, here or after a restart, continues it.
        let span = tracing::trace_span!(target: TARGET, "saga.accept",
            purchase_id = %purchase.purchase_id);
        traces::follow(&span, &msg.trace);
        let partition = self.deps.store.partition_of(purchase.customer_id);
        let at = SagaPosition {
            partition,
            epoch: self.deps.store.epoch_of(partition).unwrap_or(0),
            purchase,
            saga: start.saga,
            version: 1,
            log_len: start.emitted().len() as u32,
            trace: traces::context_of(&span),
        };
        let write = SagaWrite {
            purchase: at.purchase.clone(),
            partition: at.partition,
            from_version: 0,
            stored: false,
            log_len: 0,
            saga: start.saga,
            events: start.emitted(),
            trace: at.trace.clone(),
        };
        self.accepting += 1;
        let store = self.deps.store.clone();
        Box::pin(
            async move { store.commit(write).await }
                .instrument(span)
                .into_actor(self)
                .map(move |committed, act, ctx| {
                    act.accepting -= 1;
                    let id = at.purchase.purchase_id;
                    match committed {
                        Ok(WriteOutcome::Committed(_) | WriteOutcome::AlreadyApplied) => {
                            act.deps.metrics.saga_started();
                            act.launch(at, ctx);
                            Ok(())
                        }
                        Ok(other) => Err(ServiceError::Internal(format!(
                            "new saga not written: {other:?}"
                        ))),
                        Err(e) => {
                            // The commit may have landed with only its acknowledgement lost:
                            // look again shortly, and run the saga if it is there.
                            ctx.run_later(SWEEP_EVERY, move |act, ctx| {
                                if !act.running.contains_key(&id) {
                                    act.reload(id, ctx);
                                }
                            });
                            Err(e.into())
                        }
                    }
                }),
        )
    }
}

impl Handler<PartitionsGained> for SagaSupervisor {
    type Result = ();

    /// Loads the gained partitions' unfinished sagas into the resume queue (those not
    /// already running or queued), started at the resume pace.
    fn handle(&mut self, msg: PartitionsGained, ctx: &mut Context<Self>) {
        let store = self.deps.store.clone();
        let partitions = msg.partitions;
        let again = partitions.clone();
        ctx.spawn(
            async move { load_unfinished_in(&store, &partitions).await }
                .into_actor(self)
                .map(move |loaded, act, ctx| match loaded {
                    Ok(found) => {
                        let queued: HashSet<PurchaseId> = act
                            .resumed
                            .iter()
                            .map(|at| at.purchase.purchase_id)
                            .collect();
                        let mut added = 0;
                        for at in found {
                            let id = at.purchase.purchase_id;
                            let held = act.deps.store.epoch_of(at.partition).is_some();
                            if held && !act.running.contains_key(&id) && !queued.contains(&id) {
                                act.resumed.push_back(at);
                                added += 1;
                            }
                        }
                        if added > 0 {
                            tracing::info!(
                                count = added,
                                "resuming the sagas of claimed partitions"
                            );
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot load the sagas of claimed partitions; retrying");
                        // Those still held are loaded again (the others' owners run them).
                        let partitions = again
                            .into_iter()
                            .filter(|p| act.deps.store.epoch_of(*p).is_some())
                            .collect();
                        ctx.notify_later(PartitionsGained { partitions }, SWEEP_EVERY);
                    }
                }),
        );
    }
}

impl Handler<PartitionsLost> for SagaSupervisor {
    type Result = ();

    /// Stops the saga actors of partitions this node no longer holds and forgets their
    /// queued resumes: their new owner resumes them from the store.
    fn handle(&mut self, msg: PartitionsLost, _: &mut Context<Self>) {
        let lost: BTreeSet<PartitionId> = msg.partitions.into_iter().collect();
        self.running.retain(|_, running| {
            let keep = !lost.contains(&running.partition);
            if !keep {
                running.addr.do_send(StopSaga);
            }
            keep
        });
        self.resumed.retain(|at| !lost.contains(&at.partition));
    }
}

impl Handler<Adopt> for SagaSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Adopt, ctx: &mut Context<Self>) {
        self.adopt(msg.ids, ctx);
    }
}

impl Handler<AdoptNew> for SagaSupervisor {
    type Result = ();

    /// Starts the sagas not running, loading or queued yet, in partitions held here, within
    /// the in-flight cap (the others wait in the store for the sweep).
    fn handle(&mut self, msg: AdoptNew, ctx: &mut Context<Self>) {
        let mut room = self.settings.max_in_flight.saturating_sub(self.in_flight());
        let queued: HashSet<PurchaseId> = self
            .resumed
            .iter()
            .map(|at| at.purchase.purchase_id)
            .collect();
        for accepted in msg.sagas {
            let id = accepted.purchase.purchase_id;
            if room == 0 {
                return;
            }
            if self.running.contains_key(&id) || self.adopting.contains(&id) || queued.contains(&id)
            {
                continue;
            }
            let Some(epoch) = self.deps.store.epoch_of(accepted.partition) else {
                continue;
            };
            room -= 1;
            let at = SagaPosition {
                purchase: accepted.purchase,
                partition: accepted.partition,
                saga: Saga::NEW,
                version: 0,
                log_len: 0,
                epoch,
                trace: accepted.trace,
            };
            self.launch(at, ctx);
        }
    }
}

impl Handler<SagaFinished> for SagaSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SagaFinished, _: &mut Context<Self>) {
        self.running.remove(&msg.purchase_id);
    }
}

/// The position to resume a stored saga from; `None` when it is finished or set aside (a
/// saga whose log does not replay is quarantined here, with the reason).
async fn position_of(store: &SagaStore, stored: StoredSaga) -> ServiceResult<Option<SagaPosition>> {
    let id = stored.purchase.purchase_id;
    if store.epoch_of(stored.partition).is_none() {
        // Another node's partition (cluster mode): its owner runs it.
        return Ok(None);
    }
    match stored.status {
        Ok(saga) if saga.state.is_terminal() => Ok(None),
        Ok(saga) => Ok(Some(SagaPosition {
            purchase: Arc::new(stored.purchase),
            partition: stored.partition,
            epoch: store.epoch_of(stored.partition).unwrap_or(0),
            saga,
            version: stored.version,
            log_len: stored.log_len,
            trace: stored.trace,
        })),
        Err(reason) => {
            tracing::error!(purchase_id = %id, %reason, "saga quarantined: its stored log does not replay");
            store.repo().quarantine(id, &reason).await?;
            Ok(None)
        }
    }
}

async fn load_one(store: &SagaStore, id: PurchaseId) -> ServiceResult<Option<SagaPosition>> {
    match store.repo().by_id(id).await? {
        Some(stored) => position_of(store, stored).await,
        None => Ok(None),
    }
}

/// Every unfinished saga in the store with the position its log replays to. Sagas that do
/// not replay are quarantined and left out.
pub async fn load_unfinished(store: &SagaStore) -> ServiceResult<Vec<SagaPosition>> {
    let mut found = Vec::new();
    let mut after = PurchaseId(0);
    loop {
        let page = store.repo().unfinished(after, RESUME_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.purchase.purchase_id;
        for stored in page {
            found.extend(position_of(store, stored).await?);
        }
    }
    Ok(found)
}

/// The unfinished sagas of `partitions` with the position each log replays to (those that
/// do not replay are quarantined and left out).
async fn load_unfinished_in(
    store: &SagaStore,
    partitions: &[PartitionId],
) -> ServiceResult<Vec<SagaPosition>> {
    let mut found = Vec::new();
    let mut after = PurchaseId(0);
    loop {
        let page = store
            .repo()
            .unfinished_in(partitions, after, RESUME_PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.purchase.purchase_id;
        for stored in page {
            found.extend(position_of(store, stored).await?);
        }
    }
    Ok(found)
}
