//! Start notices: in a cluster, the api node that accepts a purchase stores its saga pending
//! (version 0; purchases accepted together in one transaction) and answers at once, whether
//! or not the saga's partition has an owner; then it tells the partition's subject. The owner listens there and starts the saga. A notice lost
//! (no owner at the time, NATS down, a dropped message) costs only time: owners also sweep
//! their partitions for pending sagas (see the supervisor).

use actix::Addr;
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::store::SagaStore;
use super::supervisor::{Accepted, AdoptNew, SagaSupervisor};
use crate::cluster::bus::{Bus, BusError};
use crate::cluster::wire;
use crate::db::DbError;
use crate::db::sagas::Sagas;
use crate::domain::partition::PartitionId;
use crate::domain::purchase::Purchase;
use crate::domain::trace::TraceContext;
use crate::telemetry::metrics::{Metrics, SubjectCounters};

/// Most notices handed to the supervisor in one [`AdoptNew`].
const NOTICES_PER_ADOPT: usize = 256;

/// What crosses the partition's start subject: the whole purchase, so that its owner starts
/// the saga without reading back the row it knows is there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StartNotice {
    partition: u32,
    purchase: Purchase,
    /// The trace its spans continue, as stored with the saga.
    #[serde(default)]
    trace: Option<String>,
}

/// How an api node in a cluster stores and announces the sagas it accepts: purchases that
/// arrive together are stored in one transaction by one writer, then announced.
#[derive(Clone)]
pub struct StartNotices {
    tx: mpsc::Sender<Request>,
}

/// One accepted purchase waiting to be stored.
struct Request {
    purchase: Purchase,
    partition: PartitionId,
    trace: TraceContext,
    reply: oneshot::Sender<Result<(), DbError>>,
}

/// Most purchases stored in one transaction.
const MAX_BATCH: usize = 256;

/// Tells owners about stored sagas.
struct Announcer {
    bus: Bus,
    /// This node's own supervisor and store, when it runs the orchestrator role: a saga of a
    /// partition it holds is handed over directly, without a trip through NATS.
    local: Option<(SagaStore, Addr<SagaSupervisor>)>,
    counters: SubjectCounters,
}

impl StartNotices {
    /// Stores with `repo` and announces over `bus`; `local` is this node's orchestrator, if
    /// it runs one. Starts the writer task.
    pub fn new(
        bus: Bus,
        repo: Sagas,
        local: Option<(SagaStore, Addr<SagaSupervisor>)>,
        metrics: &Metrics,
    ) -> Self {
        let counters = metrics.subject(&bus.all_starts());
        let announcer = Announcer {
            bus,
            local,
            counters,
        };
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        actix_rt::spawn(store_and_announce(rx, repo, announcer));
        Self { tx }
    }

    /// Stores `purchase`'s saga pending (Pending, version 0, with the trace its spans
    /// continue) and, once it is durable, tells its partition's owner. Answers when it is
    /// stored; the notice follows (a notice that does not go out is made up for by the
    /// owner's sweep).
    pub async fn accept(
        &self,
        purchase: Purchase,
        partition: PartitionId,
        trace: TraceContext,
    ) -> Result<(), DbError> {
        let stopped = || DbError::Unavailable("the accept writer stopped".into());
        let (reply, answer) = oneshot::channel();
        let request = Request {
            purchase,
            partition,
            trace,
            reply,
        };
        self.tx.send(request).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn store_and_announce(mut rx: mpsc::Receiver<Request>, repo: Sagas, announcer: Announcer) {
    let mut queued = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut queued, MAX_BATCH).await > 0 {
        let batch: Vec<(&Purchase, PartitionId, &TraceContext)> = queued
            .iter()
            .map(|r| (&r.purchase, r.partition, &r.trace))
            .collect();
        let stored = repo.insert_pending_many(&batch).await;
        let announce: Vec<Accepted> = queued
            .iter()
            .map(|r| Accepted {
                purchase: std::sync::Arc::new(r.purchase.clone()),
                partition: r.partition,
                trace: r.trace.clone(),
            })
            .collect();
        for request in queued.drain(..) {
            let answer = match &stored {
                Ok(()) => Ok(()),
                Err(e) => Err(DbError::Unavailable(e.to_string())),
            };
            let _ = request.reply.send(answer);
        }
        // Not stored, or not known to be: the caller looks in the store; the sweep starts
        // whatever was stored after all.
        if stored.is_ok() {
            announcer.announce(announce).await;
        }
    }
}

impl Announcer {
    /// Tells the owners of these sagas' partitions that they wait there.
    async fn announce(&self, sagas: Vec<Accepted>) {
        let mut here = Vec::new();
        for accepted in sagas {
            let partition = accepted.partition;
            if let Some((store, _)) = &self.local
                && store.epoch_of(partition).is_some()
            {
                here.push(accepted);
                continue;
            }
            let purchase_id = accepted.purchase.purchase_id;
            let notice = StartNotice {
                partition: partition.0,
                purchase: (*accepted.purchase).clone(),
                trace: accepted.trace.to_column(),
            };
            let subject = self.bus.start_subject(partition.0);
            let payload = wire::encode(&notice).into();
            match self.bus.client.publish(subject, payload).await {
                Ok(()) => self.counters.outbound.inc(),
                Err(e) => {
                    tracing::warn!(%purchase_id, error = %e, "start notice not sent; the owner's sweep will find the saga");
                }
            }
        }
        if let (Some((_, supervisor)), false) = (&self.local, here.is_empty()) {
            supervisor.do_send(AdoptNew { sagas: here });
        }
    }
}

/// Listens to every partition's start notices and hands those of partitions this node holds
/// (now, as `store` says) to `supervisor`.
pub async fn listen(
    bus: &Bus,
    store: SagaStore,
    supervisor: Addr<SagaSupervisor>,
    metrics: &Metrics,
) -> Result<(), BusError> {
    let mut notices = bus.subscribe(bus.all_starts(), None).await?;
    let counters = metrics.subject(&bus.all_starts());
    actix_rt::spawn(async move {
        while let Some(first) = notices.next().await {
            let mut batch = vec![first];
            while batch.len() < NOTICES_PER_ADOPT {
                match notices.next().now_or_never() {
                    Some(Some(msg)) => batch.push(msg),
                    _ => break,
                }
            }
            let mut sagas = Vec::with_capacity(batch.len());
            for msg in batch {
                counters.inbound.inc();
                match wire::decode::<StartNotice>(&msg.payload) {
                    Ok(notice) => {
                        let partition = PartitionId(notice.partition);
                        if store.epoch_of(partition).is_some() {
                            sagas.push(Accepted {
                                purchase: std::sync::Arc::new(notice.purchase),
                                partition,
                                trace: TraceContext::from_column(notice.trace.as_deref()),
                            });
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, subject = %msg.subject, "unreadable start notice");
                        counters.poisoned.inc();
                    }
                }
            }
            if !sagas.is_empty() {
                supervisor.do_send(AdoptNew { sagas });
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_notice_crosses_intact() {
        let notice = StartNotice {
            partition: 5,
            purchase: Purchase {
                purchase_id: crate::domain::ids::PurchaseId(77),
                customer_id: crate::domain::ids::CustomerId(3),
                items: vec![],
                currency: crate::domain::purchase::Currency::Nt,
                amount: 9,
            },
            trace: None,
        };
        let back: StartNotice = wire::decode(&wire::encode(&notice)).unwrap();
        assert_eq!(back, notice);
    }
}
