//! The result hub: receives every committed step result from actix-broker and hands it to
//! each live stream of that customer (the HTTP layer turns it into an SSE frame).
//!
//! Everything it holds is bounded: streams per customer and in total (past either, a new
//! stream is refused), and each stream's buffer (a stream that falls that far behind, a slow
//! or dead client, is dropped, so no client can hold up sagas or other clients). A stream is
//! removed when it unsubscribes (its response body is dropped), when a result finds it closed,
//! and by a periodic sweep, so reconnecting clients leave nothing behind.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use actix_broker::BrokerSubscribe;
use tokio::sync::mpsc;

use super::messages::ResultPublished;
use crate::domain::ids::CustomerId;
use crate::domain::purchase::PurchaseResult;
use crate::telemetry::traces::{self, TARGET};

/// How often closed streams are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

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

/// Ends every live stream: results may have been missed (the bus between this node and the
/// orchestrator was down), so each client reconnects and resumes from the step log with
/// `Last-Event-ID`, which loses nothing.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DropStreams;

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
}

impl ResultHub {
    /// Hub holding at most `limits` streams.
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            limits,
            streams: HashMap::new(),
            total: 0,
            next_ticket: 1,
        }
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
        self.streams.retain(|_, streams| !streams.is_empty());
    }

    fn remove(&mut self, customer_id: CustomerId, ticket: u64) {
        if let Some(streams) = self.streams.get_mut(&customer_id) {
            let before = streams.len();
            streams.retain(|s| s.ticket != ticket);
            self.total -= before - streams.len();
            if streams.is_empty() {
                self.streams.remove(&customer_id);
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

impl Handler<DropStreams> for ResultHub {
    type Result = ();

    fn handle(&mut self, _: DropStreams, _: &mut Context<Self>) {
        self.streams.clear();
        self.total = 0;
    }
}

impl Handler<ResultPublished> for ResultHub {
    type Result = ();

    fn handle(&mut self, msg: ResultPublished, _: &mut Context<Self>) {
        let ResultPublished(result, trace) = msg;
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
        }
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

    fn hub(per_customer: usize, total: usize) -> Addr<ResultHub> {
        ResultHub::new(StreamLimits {
            per_customer,
            total,
        })
        .start()
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
}
