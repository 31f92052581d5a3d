//! The result hub: receives every committed step result from actix-broker and hands it to
//! each live stream of that customer (the HTTP layer turns it into an SSE frame). A stream
//! whose buffer is full (a slow or dead client) is dropped, so no client can hold up sagas or
//! other clients.

use std::collections::HashMap;

use actix::prelude::*;
use actix_broker::BrokerSubscribe;
use tokio::sync::mpsc;

use super::messages::ResultPublished;
use crate::domain::ids::CustomerId;
use crate::domain::purchase::PurchaseResult;

/// Registers a stream for a customer's results; answered once the registration is live.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub customer_id: CustomerId,
    pub sink: mpsc::Sender<PurchaseResult>,
}

/// Fans results out to the customers' streams.
#[derive(Default)]
pub struct ResultHub {
    streams: HashMap<CustomerId, Vec<mpsc::Sender<PurchaseResult>>>,
}

impl Actor for ResultHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(usize::MAX >> 4);
        self.subscribe_system_async::<ResultPublished>(ctx);
    }
}

impl Handler<Subscribe> for ResultHub {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        self.streams
            .entry(msg.customer_id)
            .or_default()
            .push(msg.sink);
    }
}

impl Handler<ResultPublished> for ResultHub {
    type Result = ();

    fn handle(&mut self, msg: ResultPublished, _: &mut Context<Self>) {
        let result = msg.0;
        let Some(sinks) = self.streams.get_mut(&result.customer_id) else {
            return;
        };
        sinks.retain(|sink| sink.try_send(result).is_ok());
        if sinks.is_empty() {
            self.streams.remove(&result.customer_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::PurchaseId;
    use crate::domain::purchase::{Step, StepEvent, StepStatus};

    fn result(event_id: u64, customer_id: u64) -> PurchaseResult {
        PurchaseResult {
            event_id,
            purchase_id: PurchaseId(5),
            customer_id: CustomerId(customer_id),
            event: StepEvent {
                step: Step::CreateOrder,
                status: StepStatus::Success,
            },
            timestamp: 1,
        }
    }

    #[actix_rt::test]
    async fn a_full_stream_is_dropped_without_holding_up_the_others() {
        let hub = ResultHub::default().start();
        let (slow_tx, mut slow) = mpsc::channel(1);
        let (fast_tx, mut fast) = mpsc::channel(16);
        let (other_tx, mut other) = mpsc::channel(16);
        hub.send(Subscribe {
            customer_id: CustomerId(1),
            sink: slow_tx,
        })
        .await
        .unwrap();
        hub.send(Subscribe {
            customer_id: CustomerId(1),
            sink: fast_tx,
        })
        .await
        .unwrap();
        hub.send(Subscribe {
            customer_id: CustomerId(2),
            sink: other_tx,
        })
        .await
        .unwrap();
        for id in 1..=3 {
            hub.send(ResultPublished(result(id, 1))).await.unwrap();
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
    }
}
