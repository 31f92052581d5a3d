//! Every node's live numbers, for the dashboard of any node. A node cannot always reach the
//! others' metrics listeners, so the numbers travel over NATS: every node, whatever its
//! roles, answers on `<cluster>.stats` (a plain subscription: all of them answer) with its
//! snapshot, and the asking node publishes one request with a reply inbox and keeps the
//! answers that arrive before a short deadline. Embedded mode has the local node only.

pub mod quantile;
pub mod snapshot;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::bus::{Bus, BusError};
use super::roles::{Role, Roles};
use snapshot::Metrics;

/// The wire format's version; a node answering with another one is left out.
const STATS_VERSION: u16 = 1;

/// How long a node's readiness check may take inside a stats answer (the asker waits
/// [`GATHER_WITHIN`] for every answer).
const READY_WITHIN: Duration = Duration::from_millis(200);

/// How long the asking node collects answers.
pub const GATHER_WITHIN: Duration = Duration::from_millis(300);

/// Whether this node is ready (`GET /readyz` says 200).
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// The node's metric families now: its registry's `gather`, the one `/metrics` encodes.
pub type Gather = Arc<dyn Fn() -> Vec<prometheus::proto::MetricFamily> + Send + Sync>;

/// One node's numbers, as it reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    pub node_id: u16,
    pub roles: Vec<String>,
    /// The build (`CARGO_PKG_VERSION`).
    pub version: String,
    /// `/readyz` would answer 200; `None` when the check took too long to tell.
    pub ready: Option<bool>,
    pub uptime_seconds: f64,
    /// The node's registry, as `/metrics` would show it now.
    pub metrics: Metrics,
}

/// What crosses NATS: a node's stats with the format's version.
#[derive(Serialize, Deserialize)]
struct Answer {
    v: u16,
    node: NodeStats,
}

/// Makes this node's [`NodeStats`] from its registry and readiness check.
#[derive(Clone)]
pub struct Reporter {
    node_id: u16,
    roles: Roles,
    gather: Gather,
    ready: ReadyCheck,
    started: SystemTime,
}

impl Reporter {
    /// A reporter over the node's one registry (the one `/metrics` exposes).
    pub fn new(node_id: u16, roles: Roles, gather: Gather, ready: ReadyCheck) -> Self {
        Self {
            node_id,
            roles,
            gather,
            ready,
            started: SystemTime::now(),
        }
    }

    /// The node this reporter reports on.
    pub fn node_id(&self) -> u16 {
        self.node_id
    }

    /// This node's numbers now.
    pub async fn report(&self) -> NodeStats {
        let ready = tokio::time::timeout(READY_WITHIN, (self.ready)())
            .await
            .ok();
        NodeStats {
            node_id: self.node_id,
            roles: self
                .roles
                .iter()
                .map(Role::name)
                .map(str::to_owned)
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ready,
            uptime_seconds: self.started.elapsed().unwrap_or_default().as_secs_f64(),
            metrics: snapshot::from_families(&(self.gather)()),
        }
    }
}

/// Answers every stats request on the cluster's stats subject, for as long as the node runs.
pub async fn serve(bus: &Bus, reporter: Reporter) -> Result<(), BusError> {
    let mut asked = bus.subscribe(bus.stats_subject(), None).await?;
    let client = bus.client.clone();
    actix_rt::spawn(async move {
        while let Some(question) = asked.next().await {
            let Some(reply) = question.reply else {
                continue;
            };
            let (client, reporter) = (client.clone(), reporter.clone());
            actix_rt::spawn(async move {
                let answer = Answer {
                    v: STATS_VERSION,
                    node: reporter.report().await,
                };
                match serde_json::to_vec(&answer) {
                    Ok(body) => {
                        let _ = client.publish(reply, body.into()).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot encode this node's stats"),
                }
            });
        }
    });
    Ok(())
}

/// Every node's stats, in node id order: this node's own, and (in a cluster) those of the
/// nodes that answer within [`GATHER_WITHIN`]. A node that does not answer in time is left
/// out; the bus failing leaves this node alone.
pub async fn gather(bus: Option<&Bus>, local: &Reporter) -> Vec<NodeStats> {
    let others = async {
        match bus {
            Some(bus) => ask(bus, GATHER_WITHIN).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot ask the other nodes for their stats");
                Vec::new()
            }),
            None => Vec::new(),
        }
    };
    let (mine, others) = futures_util::join!(local.report(), others);
    let mut nodes: Vec<NodeStats> = others
        .into_iter()
        .filter(|n| n.node_id != mine.node_id)
        .collect();
    nodes.push(mine);
    nodes.sort_by_key(|n| n.node_id);
    nodes.dedup_by_key(|n| n.node_id);
    nodes
}

/// Publishes one stats request and collects the answers until `within` has passed.
async fn ask(bus: &Bus, within: Duration) -> Result<Vec<NodeStats>, BusError> {
    let inbox = bus.client.new_inbox();
    let mut answers = bus.subscribe(inbox.clone(), None).await?;
    bus.client
        .publish_with_reply(bus.stats_subject(), inbox, "stats".into())
        .await
        .map_err(|e| BusError::Nats(e.to_string()))?;
    let mut nodes = Vec::new();
    let deadline = tokio::time::sleep(within);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            answer = answers.next() => {
                let Some(answer) = answer else { break };
                match serde_json::from_slice::<Answer>(&answer.payload) {
                    Ok(a) if a.v == STATS_VERSION => nodes.push(a.node),
                    Ok(a) => tracing::debug!(version = a.v, "stats of another version left out"),
                    Err(e) => tracing::debug!(error = %e, "undecodable stats left out"),
                }
            }
        }
    }
    Ok(nodes)
}
