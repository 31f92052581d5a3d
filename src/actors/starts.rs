//! Start notices: in a cluster, the api node that accepts a purchase stores its saga pending
//! (version 0) and answers at once, whether or not the saga's partition has an owner; then it
//! tells the partition's subject. The owner listens there and starts the saga. A notice lost
//! (no owner at the time, NATS down, a dropped message) costs only time: owners also sweep
//! their partitions for pending sagas (see the supervisor).

use actix::Addr;
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};

use super::store::SagaStore;
use super::supervisor::{Adopt, SagaSupervisor};
use crate::cluster::bus::{Bus, BusError};
use crate::cluster::wire;
use crate::domain::ids::PurchaseId;
use crate::domain::partition::PartitionId;
use crate::telemetry::metrics::{Metrics, SubjectCounters};

/// Most notices handed to the supervisor in one [`Adopt`] (notices that arrived together are
/// loaded with one query).
const NOTICES_PER_ADOPT: usize = 256;

/// What crosses the partition's start subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct StartNotice {
    partition: u32,
    purchase_id: PurchaseId,
}

/// How an api node in a cluster announces the sagas it accepted.
#[derive(Clone)]
pub struct StartNotices {
    bus: Bus,
    /// This node's own supervisor and store, when it runs the orchestrator role: a saga of a
    /// partition it holds is handed over directly, without a trip through NATS.
    local: Option<(SagaStore, Addr<SagaSupervisor>)>,
    counters: SubjectCounters,
}

impl StartNotices {
    /// Announces over `bus`; `local` is this node's orchestrator, if it runs one.
    pub fn new(
        bus: Bus,
        local: Option<(SagaStore, Addr<SagaSupervisor>)>,
        metrics: &Metrics,
    ) -> Self {
        let counters = metrics.subject(&bus.all_starts());
        Self {
            bus,
            local,
            counters,
        }
    }

    /// Tells the owner of `partition` that `purchase_id` waits there. Never fails: a notice
    /// that does not go out is made up for by the owner's sweep.
    pub async fn announce(&self, partition: PartitionId, purchase_id: PurchaseId) {
        if let Some((store, supervisor)) = &self.local
            && store.epoch_of(partition).is_some()
        {
            supervisor.do_send(Adopt {
                ids: vec![purchase_id],
            });
            return;
        }
        let notice = StartNotice {
            partition: partition.0,
            purchase_id,
        };
        let subject = self.bus.start_subject(partition.0);
        match self
            .bus
            .client
            .publish(subject, wire::encode(&notice).into())
            .await
        {
            Ok(()) => self.counters.outbound.inc(),
            Err(e) => {
                tracing::warn!(%purchase_id, error = %e, "start notice not sent; the owner's sweep will find the saga");
            }
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
            let mut ids = Vec::with_capacity(batch.len());
            for msg in batch {
                counters.inbound.inc();
                match wire::decode::<StartNotice>(&msg.payload) {
                    Ok(notice) => {
                        if store.epoch_of(PartitionId(notice.partition)).is_some() {
                            ids.push(notice.purchase_id);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, subject = %msg.subject, "unreadable start notice");
                        counters.poisoned.inc();
                    }
                }
            }
            if !ids.is_empty() {
                supervisor.do_send(Adopt { ids });
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
            purchase_id: PurchaseId(77),
        };
        let back: StartNotice = wire::decode(&wire::encode(&notice)).unwrap();
        assert_eq!(back, notice);
    }
}
