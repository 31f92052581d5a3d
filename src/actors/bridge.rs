//! The NATS bridge: how actors on different nodes talk.
//!
//! - [`NatsBridge`] is the local stand-in for a role this node does not run. It handles the
//!   same messages as the role's actor (it is a `Recipient` of each), and turns each into a
//!   request on the role's subject; one replica of the role's queue group answers.
//! - [`serve_role`] is the other side: a replica subscribes in its role's queue group and
//!   hands each request to its local actor.
//! - [`ResultRelay`] and [`forward_results`] carry committed step results, with the
//!   watermarks and takeover markers that reveal lost ones, from the orchestrators to every
//!   api node's result hub.
//!
//! Commands are retried by the saga and idempotent at the participant, so a replica that
//! dies mid-command loses nothing. Nothing here retries on its own.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use actix_broker::BrokerSubscribe;
use async_nats::client::RequestErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{Instrument, Span};

use super::messages::{PartitionClaimed, ResultPublished};
use super::results::{PartitionTop, Refill, ResultHub};
use super::store::SagaStore;
use crate::clock::Clock;
use crate::cluster::bus::{Bus, BusError};
use crate::cluster::roles::Role;
use crate::cluster::wire::{self, BridgeError, Remote, Reply};
use crate::domain::partition::PartitionId;
use crate::domain::purchase::PurchaseResult;
use crate::domain::trace::TraceContext;
use crate::telemetry::metrics::{Metrics, SubjectCounters};
use crate::telemetry::traces::{self, TARGET};

/// The message kind every replica answers, to show it is there (readiness).
const PING: &str = "ping";

/// Stands in for a role that runs on other nodes: each message becomes a request on the
/// role's subject, and the reply comes back as the local actor's would.
pub struct NatsBridge {
    bus: Bus,
    role: Role,
    timeout: Duration,
    metrics: Metrics,
    /// Each message kind's subject counters, resolved on first use.
    counters: HashMap<&'static str, SubjectCounters>,
    clock: Clock,
}

impl NatsBridge {
    /// Bridge to `role`; a request not answered within `timeout` fails (and is retried by
    /// its saga, or answered 503 to an API client).
    pub fn new(bus: Bus, role: Role, timeout: Duration, metrics: Metrics, clock: Clock) -> Self {
        Self {
            bus,
            role,
            timeout,
            metrics,
            counters: HashMap::new(),
            clock,
        }
    }
}

impl Actor for NatsBridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Each message only starts a request: a deep mailbox costs nothing and keeps
        // senders from waiting on each other.
        ctx.set_mailbox_capacity(1 << 16);
    }
}

impl<M> Handler<M> for NatsBridge
where
    M: Remote,
    M::Result: Reply,
{
    type Result = ResponseFuture<M::Result>;

    fn handle(&mut self, msg: M, _: &mut Context<Self>) -> Self::Result {
        let subject = self.bus.command_subject(self.role, M::KIND);
        let metrics = &self.metrics;
        self.counters
            .entry(M::KIND)
            .or_insert_with(|| metrics.subject(&subject))
            .outbound
            .inc();
        let (bus, role, timeout) = (self.bus.clone(), self.role, self.timeout);
        let clock = self.clock.clone();
        // A message of a saga's trace crosses in a span of that trace, whose context the
        // headers carry to the serving node.
        let trace = msg.trace();
        let span = if trace.is_some() {
            tracing::trace_span!(target: TARGET, "bus.request", role = role.name(), kind = M::KIND)
        } else {
            Span::none()
        };
        traces::follow(&span, &trace);
        let headers = wire::trace_headers(&traces::context_of(&span));
        Box::pin(
            async move {
                let sent = wire::encode_request(&msg, clock.now_ms());
                request(&bus, subject, role, sent, headers, timeout)
                    .await
                    .and_then(|bytes| wire::decode_answer::<M::Result>(&bytes))
                    .unwrap_or_else(M::Result::failed)
            }
            .instrument(span),
        )
    }
}

/// One request-reply exchange with whichever replica of `role` takes it.
async fn request(
    bus: &Bus,
    subject: String,
    role: Role,
    payload: Vec<u8>,
    headers: Option<async_nats::HeaderMap>,
    timeout: Duration,
) -> Result<Bytes, BridgeError> {
    let mut request = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(timeout));
    if let Some(headers) = headers {
        request = request.headers(headers);
    }
    match bus.client.send_request(subject, request).await {
        Ok(reply) => Ok(reply.payload),
        Err(e) => Err(match e.kind() {
            RequestErrorKind::NoResponders => BridgeError::NoResponders(role.name()),
            RequestErrorKind::TimedOut => BridgeError::TimedOut(role.name()),
            _ => BridgeError::Bus(e.to_string()),
        }),
    }
}

/// Whether at least one replica of `role` answers now.
pub async fn ping(bus: &Bus, role: Role, timeout: Duration) -> Result<(), BridgeError> {
    let subject = bus.command_subject(role, PING);
    let bytes = request(bus, subject, role, wire::encode(&()), None, timeout).await?;
    wire::decode_answer::<()>(&bytes)
}

/// Answers one request (with the trace context its headers carry); unreadable ones are
/// counted on the counter it is given.
type Serve =
    Rc<dyn Fn(Bytes, TraceContext, prometheus::IntCounter) -> LocalBoxFuture<'static, Vec<u8>>>;

/// What one replica of a role answers: a local actor per message kind.
pub struct Served {
    handlers: HashMap<&'static str, Serve>,
    /// This node's clock, which a request's instants are rebased to.
    clock: Clock,
}

impl Served {
    /// Nothing served yet.
    pub fn new(clock: Clock) -> Self {
        Self {
            handlers: HashMap::new(),
            clock,
        }
    }

    /// Answers requests of kind `M` with the local actor behind `to`.
    pub fn on<M>(mut self, to: Recipient<M>) -> Self
    where
        M: Remote,
        M::Result: Reply,
    {
        let clock = self.clock.clone();
        let serve = move |bytes: Bytes,
                          trace: TraceContext,
                          poisoned: prometheus::IntCounter|
              -> LocalBoxFuture<'static, Vec<u8>> {
            let (to, now) = (to.clone(), clock.now_ms());
            Box::pin(async move {
                match wire::decode_request::<M>(&bytes, now) {
                    Ok(mut msg) => {
                        let span = if trace.is_some() {
                            tracing::trace_span!(target: TARGET, "bus.serve", kind = M::KIND)
                        } else {
                            Span::none()
                        };
                        traces::follow(&span, &trace);
                        msg.set_trace(traces::context_of(&span));
                        let reply = to.send(msg).instrument(span).await.unwrap_or_else(|e| {
                            M::Result::failed(BridgeError::Bus(format!("local actor: {e}")))
                        });
                        wire::encode_answer(Ok(&reply))
                    }
                    Err(e) => {
                        tracing::error!(kind = M::KIND, error = %e, "refused a request");
                        poisoned.inc();
                        wire::encode_answer::<M::Result>(Err(&e))
                    }
                }
            })
        };
        self.handlers.insert(M::KIND, Rc::new(serve));
        self
    }
}

/// Joins `role`'s queue group and answers its requests with the local actors in `served`,
/// each request concurrently, until the connection is closed for good.
pub async fn serve_role(
    bus: &Bus,
    role: Role,
    served: Served,
    metrics: &Metrics,
) -> Result<(), BusError> {
    let pattern = bus.role_subjects(role);
    // Counters per kind served (and ping), resolved once; anything else counts on the
    // role's wildcard pattern, never on a subject a sender made up.
    let unknown = metrics.subject(&pattern);
    let counters: HashMap<String, SubjectCounters> = served
        .handlers
        .keys()
        .copied()
        .chain([PING])
        .map(|kind| {
            (
                kind.to_owned(),
                metrics.subject(&bus.command_subject(role, kind)),
            )
        })
        .collect();
    let mut requests = bus.subscribe(pattern, Some(bus.queue_group(role))).await?;
    let client = bus.client.clone();
    actix_rt::spawn(async move {
        while let Some(request) = requests.next().await {
            let Some(reply_to) = request.reply.clone() else {
                continue;
            };
            let kind = request.subject.rsplit('.').next().unwrap_or_default();
            let handler = served.handlers.get(kind).cloned();
            let on = counters.get(kind).unwrap_or(&unknown);
            on.inbound.inc();
            let poisoned = on.poisoned.clone();
            let client = client.clone();
            let kind = kind.to_owned();
            actix_rt::spawn(async move {
                let answer = match handler {
                    Some(serve) => {
                        let trace = wire::trace_of(request.headers.as_ref());
                        serve(request.payload, trace, poisoned).await
                    }
                    None if kind == PING => wire::encode_answer(Ok(&())),
                    None => {
                        tracing::error!(%kind, "request of a kind this role does not serve");
                        poisoned.inc();
                        wire::encode_answer::<()>(Err(&BridgeError::UnknownKind(kind)))
                    }
                };
                let _ = client.publish(reply_to, answer.into()).await;
            });
        }
    });
    Ok(())
}

/// What an orchestrator publishes on a partition's results subject.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Bulletin {
    /// A committed step result.
    Result { origin: u16, result: PurchaseResult },
    /// The highest id the publisher has published on the partition: a node that has not
    /// seen it lost some on the way, and reads them from the step log.
    Watermark {
        origin: u16,
        partition: u32,
        top: u64,
    },
    /// The publisher took the partition over at `epoch`, when its log reached `top`: what
    /// the previous owner committed but never published is read from the step log.
    Takeover {
        origin: u16,
        partition: u32,
        epoch: u64,
        top: u64,
    },
}

/// How often an orchestrator publishes its watermarks.
const WATERMARK_EVERY: Duration = Duration::from_millis(300);

/// How many times a partition's watermark is published after its top last moved (or the
/// relay's connection came back): enough for a node that lost the last results on the way to
/// notice, without an idle cluster publishing a watermark per partition forever. A node whose
/// own connection was lost reads the store's tops when it is back (see [`forward_results`]).
const WATERMARK_REPEATS: u8 = 10;

/// A partition's highest published id, and how many more times its watermark goes out.
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    top: u64,
    repeats: u8,
}

impl Mark {
    fn raise(&mut self, top: u64) {
        self.top = self.top.max(top);
        self.repeats = WATERMARK_REPEATS;
    }
}

/// Publishes every result committed on this node (an orchestrator) to the results
/// subjects, in commit order; a takeover marker for each partition it claims (at start, and
/// whenever [`PartitionClaimed`] says so); and each partition's watermark every
/// [`WATERMARK_EVERY`] for a while after it moved, so a result lost on the way is noticed
/// without waiting for the next.
pub struct ResultRelay {
    outbox: mpsc::UnboundedSender<(String, Bulletin, TraceContext)>,
    bus: Bus,
    store: SagaStore,
    /// The highest id published (or found at a takeover) per partition.
    tops: BTreeMap<u32, Mark>,
}

impl ResultRelay {
    /// Relay over `bus` of what `store` commits.
    pub fn new(bus: Bus, store: SagaStore, metrics: &Metrics) -> Self {
        let (outbox, mut queued) = mpsc::unbounded_channel::<(String, Bulletin, TraceContext)>();
        let client = bus.client.clone();
        let results = metrics.subject(&bus.all_results()).outbound;
        // One task publishes in order: results of one customer must not overtake each other,
        // nor a watermark the results below it.
        // A result's trace (the transition that wrote it) rides in the headers.
        actix_rt::spawn(async move {
            while let Some((subject, bulletin, trace)) = queued.recv().await {
                let payload = wire::encode(&bulletin).into();
                let _ = match wire::trace_headers(&trace) {
                    Some(headers) => client.publish_with_headers(subject, headers, payload).await,
                    None => client.publish(subject, payload).await,
                };
                results.inc();
            }
        });
        Self {
            outbox,
            bus,
            store,
            tops: BTreeMap::new(),
        }
    }

    fn send(&self, partition: u32, bulletin: Bulletin, trace: TraceContext) {
        let subject = self.bus.results_subject(partition);
        let _ = self.outbox.send((subject, bulletin, trace));
    }

    fn takeover(&mut self, claimed: PartitionClaimed) {
        let PartitionClaimed {
            partition,
            epoch,
            top,
        } = claimed;
        self.tops.entry(partition.0).or_default().raise(top);
        let bulletin = Bulletin::Takeover {
            origin: self.bus.node_id,
            partition: partition.0,
            epoch,
            top,
        };
        self.send(partition.0, bulletin, TraceContext::NONE);
    }

    /// The watermarks due (partitions it no longer holds are forgotten).
    fn watermarks(&mut self) {
        let store = &self.store;
        self.tops
            .retain(|&p, _| store.epoch_of(PartitionId(p)).is_some());
        let origin = self.bus.node_id;
        let mut due = Vec::new();
        for (&partition, mark) in &mut self.tops {
            if mark.repeats > 0 && mark.top > 0 {
                mark.repeats -= 1;
                due.push((partition, mark.top));
            }
        }
        for (partition, top) in due {
            let bulletin = Bulletin::Watermark {
                origin,
                partition,
                top,
            };
            self.send(partition, bulletin, TraceContext::NONE);
        }
    }
}

impl Actor for ResultRelay {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(usize::MAX >> 4);
        self.subscribe_system_async::<ResultPublished>(ctx);
        self.subscribe_system_async::<PartitionClaimed>(ctx);
        // A previous owner may have died between a commit and its publication: a takeover
        // marker per partition held makes streams elsewhere read that tail from the log. The
        // tops are read after subscribing, so a result committed before is below them and
        // one committed after reaches this relay.
        let store = self.store.clone();
        let held = store.held();
        let read = async move { store.repo().partition_tops(&held).await };
        ctx.spawn(read.into_actor(self).map(|tops, relay, _| match tops {
            Ok(tops) => {
                for (partition, top) in tops {
                    let Some(epoch) = relay.store.epoch_of(partition) else {
                        continue;
                    };
                    relay.takeover(PartitionClaimed {
                        partition,
                        epoch,
                        top,
                    });
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no takeover markers: the partitions' tops are unreadable");
            }
        }));
        ctx.run_interval(WATERMARK_EVERY, |relay, _| relay.watermarks());
        // What was published while the connection was down may be lost: the watermarks go
        // out again.
        let reconnections = futures_util::stream::unfold(self.bus.state(), |mut state| async {
            Bus::reconnected(&mut state).await.then_some(((), state))
        });
        ctx.add_stream(reconnections);
    }
}

impl Handler<ResultPublished> for ResultRelay {
    type Result = ();

    fn handle(&mut self, msg: ResultPublished, _: &mut Context<Self>) {
        let ResultPublished(result, trace) = msg;
        let partition = self.store.partition_of(result.customer_id).0;
        self.tops
            .entry(partition)
            .or_default()
            .raise(result.event_id);
        let bulletin = Bulletin::Result {
            origin: self.bus.node_id,
            result,
        };
        self.send(partition, bulletin, trace);
    }
}

/// The relay's connection came back.
impl StreamHandler<()> for ResultRelay {
    fn handle(&mut self, _: (), _: &mut Context<Self>) {
        for mark in self.tops.values_mut() {
            mark.repeats = WATERMARK_REPEATS;
        }
    }

    /// The client is gone for good: the relay goes on (there is nothing more to publish to).
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<PartitionClaimed> for ResultRelay {
    type Result = ();

    fn handle(&mut self, msg: PartitionClaimed, _: &mut Context<Self>) {
        self.takeover(msg);
    }
}

/// Hands every result published in the cluster to this node's hub, and the watermarks and
/// takeover markers that reveal results lost on the way. With `skip_own`, results and
/// watermarks this node published itself are left out (its hub has those results from the
/// local broker). When this node's connection comes back, the hub reads what it missed.
pub async fn forward_results(
    bus: &Bus,
    hub: Addr<ResultHub>,
    skip_own: bool,
    metrics: &Metrics,
) -> Result<(), BusError> {
    let mut published = bus.subscribe(bus.all_results(), None).await?;
    let own = bus.node_id;
    let refill_hub = hub.clone();
    let results = metrics.subject(&bus.all_results());
    actix_rt::spawn(async move {
        while let Some(msg) = published.next().await {
            results.inbound.inc();
            match wire::decode::<Bulletin>(&msg.payload) {
                Ok(Bulletin::Result { origin, .. }) if skip_own && origin == own => {}
                Ok(Bulletin::Result { result, .. }) => {
                    let trace = wire::trace_of(msg.headers.as_ref());
                    hub.do_send(ResultPublished(result, trace));
                }
                Ok(Bulletin::Watermark { origin, .. }) if skip_own && origin == own => {}
                Ok(Bulletin::Watermark { partition, top, .. }) => {
                    hub.do_send(PartitionTop {
                        partition: PartitionId(partition),
                        top,
                    });
                }
                Ok(Bulletin::Takeover {
                    origin,
                    partition,
                    epoch,
                    top,
                }) => {
                    tracing::info!(origin, partition, epoch, top, "partition taken over");
                    hub.do_send(PartitionTop {
                        partition: PartitionId(partition),
                        top,
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, subject = %msg.subject, "unreadable result");
                    results.poisoned.inc();
                }
            }
        }
    });
    let mut state = bus.state();
    actix_rt::spawn(async move {
        while Bus::reconnected(&mut state).await {
            tracing::warn!("back on NATS: streams read what they missed from the step log");
            refill_hub.do_send(Refill);
        }
    });
    Ok(())
}

/// The partition subjects' results as they would be published, for tests of the format.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulletin_crosses_intact() {
        let result = PurchaseResult {
            event_id: 7,
            purchase_id: crate::domain::ids::PurchaseId(9),
            customer_id: crate::domain::ids::CustomerId(3),
            event: crate::domain::purchase::StepEvent {
                step: crate::domain::purchase::Step::CreateOrder,
                status: crate::domain::purchase::StepStatus::Success,
            },
            timestamp: 5,
        };
        let bytes = wire::encode(&Bulletin::Result { origin: 2, result });
        match wire::decode::<Bulletin>(&bytes).unwrap() {
            Bulletin::Result {
                origin,
                result: back,
            } => {
                assert_eq!((origin, back), (2, result));
            }
            other => panic!("{other:?}"),
        }
    }
}
