//! The result hub: receives every committed step result from actix-broker and hands it to
//! each live stream of that customer (the HTTP layer turns it into an SSE frame).
//!
//! Everything it holds is bounded: streams per customer and in total (past either, a new
//! stream is refused), and each stream's buffer (a stream that falls that far behind, a slow
//! or dead client, is dropped, so no client can hold up sagas or other clients). A stream is
//! removed when it unsubscribes (its response body is dropped), when a result finds it closed,
//! and by a periodic sweep, so reconnecting clients leave nothing behind.
//!
//! Results of a partition go out in id order, each once, with none missing: the hub tracks
//! every partition one of its streams belongs to ([`super::gaps`]) and reads what never
//! reached it from the step log (a publisher died before publishing, NATS dropped it).

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use actix_broker::BrokerSubscribe;
use futures_util::future::LocalBoxFuture;
use tokio::sync::mpsc;

use super::gaps::{Delivery, Fill, Tracker};
use super::messages::ResultPublished;
use crate::db::DbError;
use crate::db::sagas::Sagas;
use crate::domain::ids::CustomerId;
use crate::domain::partition::{self, PartitionId};
use crate::domain::purchase::PurchaseResult;
use crate::telemetry::traces::{self, TARGET};

/// How often closed streams are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// How long a gap fill waits after the store failed it before it tries again.
const FILL_RETRY: Duration = Duration::from_secs(1);

/// Where the hub reads the results that never reached it: the saga store's step log (a
/// fake in tests).
pub trait StepLog {
    /// A partition's results with ids in `(after, upto]`, in id order, at most `limit`.
    fn partition_events(
        &self,
        partition: PartitionId,
        after: u64,
        upto: u64,
        limit: u64,
    ) -> LocalBoxFuture<'static, Result<Vec<PurchaseResult>, DbError>>;

    /// The newest committed id of each of `partitions`.
    fn partition_tops(
        &self,
        partitions: Vec<PartitionId>,
    ) -> LocalBoxFuture<'static, Result<Vec<(PartitionId, u64)>, DbError>>;
}

impl StepLog for Sagas {
    fn partition_events(
        &self,
        partition: PartitionId,
        after: u64,
        upto: u64,
        limit: u64,
    ) -> LocalBoxFuture<'static, Result<Vec<PurchaseResult>, DbError>> {
        let repo = self.clone();
        Box::pin(async move { repo.partition_events(partition, after, upto, limit).await })
    }

    fn partition_tops(
        &self,
        partitions: Vec<PartitionId>,
    ) -> LocalBoxFuture<'static, Result<Vec<(PartitionId, u64)>, DbError>> {
        let repo = self.clone();
        Box::pin(async move { repo.partition_tops(&partitions).await })
    }
}

/// The log of a node without the saga store (no api role, so no streams): empty.
pub struct NoLog;

impl StepLog for NoLog {
    fn partition_events(
        &self,
        _: PartitionId,
        _: u64,
        _: u64,
        _: u64,
    ) -> LocalBoxFuture<'static, Result<Vec<PurchaseResult>, DbError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn partition_tops(
        &self,
        _: Vec<PartitionId>,
    ) -> LocalBoxFuture<'static, Result<Vec<(PartitionId, u64)>, DbError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// How the hub fills gaps: the log it reads, how customers map to partitions, and the
/// counters of `Metrics::gap_fills` (gaps filled, results read for them).
pub struct GapFill {
    pub log: Rc<dyn StepLog>,
    pub partitions: u32,
    pub counters: (prometheus::IntCounter, prometheus::IntCounter),
}

/// Limits on the streams the hub holds.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub per_customer: usize,
    pub total: usize,
}

/// Why a stream was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    #[error("too many result streams for this customer")]
    CustomerLimit,
    #[error("too many result streams")]
    ServerLimit,
}

/// Registers a stream for a customer's results. A paused stream gets nothing until it is
/// resumed with [`GoLive`] (it is catching up from the step log meanwhile, so its buffer
/// cannot overflow during a long replay). Answers the stream's ticket.
#[derive(Message)]
#[rtype(result = "Result<u64, StreamRefused>")]
pub struct Subscribe {
    pub customer_id: CustomerId,
    pub sink: mpsc::Sender<PurchaseResult>,
    pub paused: bool,
    /// The newest id committed in the customer's partition, read before subscribing: when
    /// the hub does not track the partition yet it starts there, so a result committed
    /// after this read and lost on its way is still found.
    pub top: u64,
}

/// Starts delivering to a paused stream; answered once results flow to it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GoLive {
    pub customer_id: CustomerId,
    pub ticket: u64,
}

/// Removes a stream (its client went away).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub customer_id: CustomerId,
    pub ticket: u64,
}

/// A partition's log reaches `top` (a publisher's watermark or takeover marker): what the
/// hub has not delivered up to there is read from the log.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct PartitionTop {
    pub partition: PartitionId,
    pub top: u64,
}

/// Results may have been missed (this node's bus connection was down): every tracked
/// partition is read from the log up to its newest committed id.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refill;

/// How many streams the hub holds (for tests and, later, metrics).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CountStreams;

struct Stream {
    ticket: u64,
    sink: mpsc::Sender<PurchaseResult>,
    paused: bool,
}

/// Fans results out to the customers' streams.
pub struct ResultHub {
    limits: StreamLimits,
    streams: HashMap<CustomerId, Vec<Stream>>,
    total: usize,
    next_ticket: u64,
    gaps: GapFill,
    tracker: Tracker,
    /// Customers with streams, per partition: a partition is tracked while it has any.
    watchers: HashMap<PartitionId, usize>,
}

impl ResultHub {
    /// Hub holding at most `limits` streams, filling gaps as `gaps` says.
    pub fn new(limits: StreamLimits, gaps: GapFill) -> Self {
        Self {
            limits,
            streams: HashMap::new(),
            total: 0,
            next_ticket: 1,
            gaps,
            tracker: Tracker::default(),
            watchers: HashMap::new(),
        }
    }

    fn partition_of(&self, customer_id: CustomerId) -> PartitionId {
        partition::of_customer(customer_id, self.gaps.partitions)
    }

    /// A customer's last stream is gone; so is the tracking of a partition left without any.
    fn customer_gone(&mut self, customer_id: CustomerId) {
        let partition = self.partition_of(customer_id);
        if let Some(n) = self.watchers.get_mut(&partition) {
            *n -= 1;
            if *n == 0 {
                self.watchers.remove(&partition);
                self.tracker.forget(partition);
            }
        }
    }

    /// Removes the customers left without streams.
    fn drop_empty(&mut self) {
        let empty: Vec<CustomerId> = self
            .streams
            .iter()
            .filter(|(_, streams)| streams.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in empty {
            self.streams.remove(&id);
            self.customer_gone(id);
        }
    }

    /// Hands one result to its customer's live streams.
    fn deliver(&mut self, published: ResultPublished) {
        let ResultPublished(result, trace) = published;
        let Some(streams) = self.streams.get_mut(&result.customer_id) else {
            return;
        };
        // Writing the result to the customer's streams is part of its saga's trace.
        let span = tracing::trace_span!(target: TARGET, "sse.deliver",
            purchase_id = %result.purchase_id, event_id = result.event_id,
            streams = streams.len());
        traces::follow(&span, &trace);
        let _delivering = span.enter();
        let before = streams.len();
        streams.retain(|s| s.paused || s.sink.try_send(result).is_ok());
        self.total -= before - streams.len();
        if streams.is_empty() {
            self.streams.remove(&result.customer_id);
            self.customer_gone(result.customer_id);
        }
    }

    /// Delivers what the tracker released and runs the fill it asks for.
    fn settle(&mut self, delivery: Delivery, ctx: &mut Context<Self>) {
        self.gaps.counters.1.inc_by(delivery.from_log as u64);
        for published in delivery.results {
            self.deliver(published);
        }
        self.fill(delivery.fill, ctx);
    }

    /// A new gap: counted, then filled.
    fn fill_gap(&mut self, fill: Option<Fill>, ctx: &mut Context<Self>) {
        if fill.is_some() {
            self.gaps.counters.0.inc();
        }
        self.fill(fill, ctx);
    }

    /// Reads a fill's range from the log; after a failure, tries again a little later.
    fn fill(&mut self, fill: Option<Fill>, ctx: &mut Context<Self>) {
        let Some(fill) = fill else {
            return;
        };
        let read =
            self.gaps
                .log
                .partition_events(fill.partition, fill.after, fill.upto, fill.limit);
        ctx.spawn(read.into_actor(self).map(move |read, hub, ctx| match read {
            Ok(read) => {
                let delivery = hub.tracker.filled(fill, read);
                hub.settle(delivery, ctx);
            }
            Err(e) => {
                tracing::warn!(partition = fill.partition.0, error = %e,
                    "reading missed results failed; trying again");
                hub.tracker.failed(fill);
                ctx.run_later(FILL_RETRY, move |hub, ctx| {
                    let again = hub.tracker.retry(fill.partition);
                    hub.fill(again, ctx);
                });
            }
        }));
    }

    /// Drops the closed streams of one customer (or of all, with `None`).
    fn drop_closed(&mut self, customer_id: Option<CustomerId>) {
        let total = &mut self.total;
        let mut prune = |streams: &mut Vec<Stream>| {
            let before = streams.len();
            streams.retain(|s| !s.sink.is_closed());
            *total -= before - streams.len();
        };
        match customer_id {
            Some(id) => {
                if let Some(streams) = self.streams.get_mut(&id) {
                    prune(streams);
                }
            }
            None => self.streams.values_mut().for_each(prune),
        }
        self.drop_empty();
    }

    fn remove(&mut self, customer_id: CustomerId, ticket: u64) {
        if let Some(streams) = self.streams.get_mut(&customer_id) {
            let before = streams.len();
            streams.retain(|s| s.ticket != ticket);
            self.total -= before - streams.len();
            if streams.is_empty() {
                self.streams.remove(&customer_id);
                self.customer_gone(customer_id);
            }
        }
    }
}

impl Actor for ResultHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(usize::MAX >> 4);
        self.subscribe_system_async::<ResultPublished>(ctx);
        ctx.run_interval(SWEEP_EVERY, |hub, _| hub.drop_closed(None));
    }
}

impl Handler<Subscribe> for ResultHub {
    type Result = Result<u64, StreamRefused>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        self.drop_closed(Some(msg.customer_id));
        let mine = self.streams.get(&msg.customer_id).map_or(0, Vec::len);
        if mine >= self.limits.per_customer {
            return Err(StreamRefused::CustomerLimit);
        }
        if self.total >= self.limits.total {
            self.drop_closed(None);
            if self.total >= self.limits.total {
                return Err(StreamRefused::ServerLimit);
            }
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.total += 1;
        if !self.streams.contains_key(&msg.customer_id) {
            let partition = self.partition_of(msg.customer_id);
            *self.watchers.entry(partition).or_default() += 1;
            self.tracker.watch(partition, msg.top);
        }
        self.streams
            .entry(msg.customer_id)
            .or_default()
            .push(Stream {
                ticket,
                sink: msg.sink,
                paused: msg.paused,
            });
        Ok(ticket)
    }
}

impl Handler<GoLive> for ResultHub {
    type Result = ();

    fn handle(&mut self, msg: GoLive, _: &mut Context<Self>) {
        let streams = self.streams.get_mut(&msg.customer_id);
        for stream in streams.into_iter().flatten() {
            if stream.ticket == msg.ticket {
                stream.paused = false;
            }
        }
    }
}

impl Handler<Unsubscribe> for ResultHub {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        self.remove(msg.customer_id, msg.ticket);
    }
}

impl Handler<CountStreams> for ResultHub {
    type Result = usize;

    fn handle(&mut self, _: CountStreams, _: &mut Context<Self>) -> usize {
        self.total
    }
}

impl Handler<PartitionTop> for ResultHub {
    type Result = ();

    fn handle(&mut self, msg: PartitionTop, ctx: &mut Context<Self>) {
        let fill = self.tracker.top(msg.partition, msg.top);
        self.fill_gap(fill, ctx);
    }
}

impl Handler<Refill> for ResultHub {
    type Result = ();

    fn handle(&mut self, _: Refill, ctx: &mut Context<Self>) {
        let tracked = self.tracker.tracked();
        if tracked.is_empty() {
            return;
        }
        let tops = self.gaps.log.partition_tops(tracked);
        ctx.spawn(tops.into_actor(self).map(|tops, hub, ctx| match tops {
            Ok(tops) => {
                for (partition, top) in tops {
                    let fill = hub.tracker.top(partition, top);
                    hub.fill_gap(fill, ctx);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the partitions' tops failed; trying again");
                ctx.notify_later(Refill, FILL_RETRY);
            }
        }));
    }
}

impl Handler<ResultPublished> for ResultHub {
    type Result = ();

    fn handle(&mut self, msg: ResultPublished, ctx: &mut Context<Self>) {
        let partition = self.partition_of(msg.0.customer_id);
        if !self.tracker.tracks(partition) {
            return;
        }
        let mut delivery = self.tracker.result(partition, msg);
        let fill = delivery.fill.take();
        self.settle(delivery, ctx);
        self.fill_gap(fill, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::purchase::{Step, StepEvent, StepStatus};

    fn result(event_id: u64, customer_id: u64) -> PurchaseResult {
        let customer_id = CustomerId(customer_id);
        PurchaseResult {
            event_id,
            purchase_id: crate::domain::ids::PurchaseId(5),
            customer_id,
            event: StepEvent {
                step: Step::CreateOrder,
                status: StepStatus::Success,
            },
            timestamp: 1,
        }
    }

    /// A step log in memory: every result committed, in id order (one partition).
    #[derive(Clone, Default)]
    struct FakeLog(Rc<std::cell::RefCell<Vec<PurchaseResult>>>);

    impl FakeLog {
        fn commit(&self, ids: std::ops::RangeInclusive<u64>, customer_id: u64) {
            let mut log = self.0.borrow_mut();
            log.extend(ids.map(|id| result(id, customer_id)));
        }
    }

    impl StepLog for FakeLog {
        fn partition_events(
            &self,
            _: PartitionId,
            after: u64,
            upto: u64,
            limit: u64,
        ) -> LocalBoxFuture<'static, Result<Vec<PurchaseResult>, DbError>> {
            let read = self
                .0
                .borrow()
                .iter()
                .filter(|r| r.event_id > after && r.event_id <= upto)
                .take(limit as usize)
                .copied()
                .collect();
            Box::pin(async move { Ok(read) })
        }

        fn partition_tops(
            &self,
            partitions: Vec<PartitionId>,
        ) -> LocalBoxFuture<'static, Result<Vec<(PartitionId, u64)>, DbError>> {
            let top = self.0.borrow().last().map_or(0, |r| r.event_id);
            let tops = partitions.into_iter().map(|p| (p, top)).collect();
            Box::pin(async move { Ok(tops) })
        }
    }

    struct Counters {
        fills: prometheus::IntCounter,
        filled: prometheus::IntCounter,
    }

    fn hub_over(per_customer: usize, total: usize, log: FakeLog) -> (Addr<ResultHub>, Counters) {
        let counters = Counters {
            fills: prometheus::IntCounter::new("fills", "gaps").unwrap(),
            filled: prometheus::IntCounter::new("filled", "results").unwrap(),
        };
        let gaps = GapFill {
            log: Rc::new(log),
            partitions: 1,
            counters: (counters.fills.clone(), counters.filled.clone()),
        };
        let limits = StreamLimits {
            per_customer,
            total,
        };
        (ResultHub::new(limits, gaps).start(), counters)
    }

    fn hub(per_customer: usize, total: usize) -> Addr<ResultHub> {
        hub_over(per_customer, total, FakeLog::default()).0
    }

    async fn subscribe(
        hub: &Addr<ResultHub>,
        customer_id: u64,
        capacity: usize,
        paused: bool,
    ) -> (Result<u64, StreamRefused>, mpsc::Receiver<PurchaseResult>) {
        let (sink, rx) = mpsc::channel(capacity);
        let ticket = hub
            .send(Subscribe {
                customer_id: CustomerId(customer_id),
                sink,
                paused,
                top: 0,
            })
            .await
            .unwrap();
        (ticket, rx)
    }

    #[actix_rt::test]
    async fn a_full_stream_is_dropped_without_holding_up_the_others() {
        let hub = hub(8, 100);
        let (_, mut slow) = subscribe(&hub, 1, 1, false).await;
        let (_, mut fast) = subscribe(&hub, 1, 16, false).await;
        let (_, mut other) = subscribe(&hub, 2, 16, false).await;
        for id in 1..=3 {
            hub.send(ResultPublished(result(id, 1), Default::default()))
                .await
                .unwrap();
        }
        // The slow stream got what fitted, then was cut off (its channel ends).
        assert_eq!(slow.recv().await.unwrap().event_id, 1);
        assert!(slow.recv().await.is_none());
        // The other stream of the same customer got everything, in order.
        for id in 1..=3 {
            assert_eq!(fast.recv().await.unwrap().event_id, id);
        }
        // Another customer got nothing.
        assert!(other.try_recv().is_err());
        assert_eq!(hub.send(CountStreams).await.unwrap(), 2);
    }

    #[actix_rt::test]
    async fn limits_refuse_new_streams_and_closed_ones_free_their_place() {
        let hub = hub(2, 3);
        let (a, rx_a) = subscribe(&hub, 1, 4, false).await;
        let (b, _rx_b) = subscribe(&hub, 1, 4, false).await;
        assert!(a.is_ok() && b.is_ok());
        let (refused, _) = subscribe(&hub, 1, 4, false).await;
        assert_eq!(refused, Err(StreamRefused::CustomerLimit));
        let (c, _rx_c) = subscribe(&hub, 2, 4, false).await;
        assert!(c.is_ok());
        let (refused, _) = subscribe(&hub, 3, 4, false).await;
        assert_eq!(refused, Err(StreamRefused::ServerLimit));
        // A client that went away (its receiver dropped) leaves room for the next one.
        drop(rx_a);
        let (again, _rx) = subscribe(&hub, 1, 4, false).await;
        assert!(again.is_ok());
        // An unsubscribed stream too.
        hub.send(Unsubscribe {
            customer_id: CustomerId(2),
            ticket: c.unwrap(),
        })
        .await
        .unwrap();
        assert_eq!(hub.send(CountStreams).await.unwrap(), 2);
    }

    #[actix_rt::test]
    async fn a_paused_stream_gets_nothing_until_it_goes_live() {
        let hub = hub(8, 100);
        let (ticket, mut rx) = subscribe(&hub, 1, 1, true).await;
        for id in 1..=5 {
            hub.send(ResultPublished(result(id, 1), Default::default()))
                .await
                .unwrap();
        }
        assert!(
            rx.try_recv().is_err(),
            "paused: nothing delivered, not dropped"
        );
        hub.send(GoLive {
            customer_id: CustomerId(1),
            ticket: ticket.unwrap(),
        })
        .await
        .unwrap();
        hub.send(ResultPublished(result(6, 1), Default::default()))
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap().event_id, 6);
    }

    #[actix_rt::test]
    async fn results_lost_on_the_way_are_read_from_the_log_in_order() {
        let log = FakeLog::default();
        let (hub, counters) = hub_over(8, 100, log.clone());
        let (_, mut rx) = subscribe(&hub, 1, 16, false).await;
        log.commit(1..=4, 1);
        // 2 and 3 never arrive; 1 arrives twice (both paths).
        for id in [1, 1, 4] {
            hub.send(ResultPublished(result(id, 1), Default::default()))
                .await
                .unwrap();
        }
        for id in 1..=4 {
            assert_eq!(rx.recv().await.unwrap().event_id, id);
        }
        // The late copies change nothing.
        hub.send(ResultPublished(result(3, 1), Default::default()))
            .await
            .unwrap();
        assert!(rx.try_recv().is_err());
        assert_eq!((counters.fills.get(), counters.filled.get()), (1, 2));
    }

    #[actix_rt::test]
    async fn a_watermark_or_a_refill_reveals_a_lost_tail() {
        let log = FakeLog::default();
        let (hub, counters) = hub_over(8, 100, log.clone());
        let (_, mut rx) = subscribe(&hub, 1, 16, false).await;
        log.commit(1..=2, 1);
        hub.send(PartitionTop {
            partition: PartitionId(0),
            top: 2,
        })
        .await
        .unwrap();
        for id in 1..=2 {
            assert_eq!(rx.recv().await.unwrap().event_id, id);
        }
        // This node's bus was down meanwhile: it reads the store's top itself.
        log.commit(3..=3, 1);
        hub.send(Refill).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().event_id, 3);
        assert_eq!((counters.fills.get(), counters.filled.get()), (2, 3));
    }
}
