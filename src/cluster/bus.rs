//! The connection to NATS and the subjects a cluster uses on it. Every subject starts with
//! the cluster's name, so several clusters (or test runs) can share one NATS server without
//! seeing each other's traffic.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::watch;

use super::roles::Role;
use crate::config::ClusterOptions;

/// Why the bus could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("NATS: {0}")]
    Nats(String),
}

/// The connection state a node reports and reacts to (streams reconnect after an outage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusState {
    Connected,
    Disconnected,
}

/// A node's link to the cluster: its NATS client and the names it builds subjects from.
#[derive(Clone)]
pub struct Bus {
    pub client: Client,
    cluster: String,
    /// This node's id (origin of what it publishes).
    pub node_id: u16,
    state: watch::Receiver<BusState>,
}

impl Bus {
    /// Connects with the configured credentials (user and password, or a token; TLS when the
    /// URL says `tls://`). Reconnects forever after a loss; [`Bus::state`] follows it.
    pub async fn connect(options: &ClusterOptions, node_id: u16) -> Result<Self, BusError> {
        let url = options
            .nats_url
            .as_ref()
            .expect("a bus is only joined in cluster mode");
        let (state_tx, state) = watch::channel(BusState::Connected);
        let mut connect = ConnectOptions::new()
            .name(format!("sagashop {} node {node_id}", options.cluster_name))
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                let state_tx = state_tx.clone();
                async move {
                    match event {
                        Event::Disconnected => {
                            tracing::warn!("NATS connection lost; reconnecting");
                            let _ = state_tx.send(BusState::Disconnected);
                        }
                        Event::Connected => {
                            tracing::info!("NATS connection (re)established");
                            let _ = state_tx.send(BusState::Connected);
                        }
                        other => tracing::warn!(event = %other, "NATS"),
                    }
                }
            });
        if let (Some(user), Some(password)) = (&options.nats_user, &options.nats_password) {
            connect = connect.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(token) = &options.nats_token {
            connect = connect.token(token.expose().to_owned());
        }
        let servers: Vec<&str> = url.expose().split(',').map(str::trim).collect();
        let client = connect
            .connect(servers)
            .await
            .map_err(|e| BusError::Connect {
                url: url.to_string(),
                reason: url.scrub(&e.to_string()),
            })?;
        Ok(Self {
            client,
            cluster: options.cluster_name.clone(),
            node_id,
            state,
        })
    }

    /// Subscribes to `subject` (in the queue group `group`, when given) and waits until the
    /// server has the interest, so nothing sent after this returns is missed.
    pub async fn subscribe(
        &self,
        subject: String,
        group: Option<String>,
    ) -> Result<async_nats::Subscriber, BusError> {
        let nats = |e: &dyn std::fmt::Display| BusError::Nats(e.to_string());
        let subscriber = match group {
            Some(group) => self.client.queue_subscribe(subject, group).await,
            None => self.client.subscribe(subject).await,
        }
        .map_err(|e| nats(&e))?;
        self.client.flush().await.map_err(|e| nats(&e))?;
        Ok(subscriber)
    }

    /// Follows the connection state.
    pub fn state(&self) -> watch::Receiver<BusState> {
        self.state.clone()
    }

    /// Waits until the connection comes back after a loss; `false` once the client is gone.
    pub async fn reconnected(state: &mut watch::Receiver<BusState>) -> bool {
        let mut lost = false;
        while state.changed().await.is_ok() {
            match *state.borrow_and_update() {
                BusState::Disconnected => lost = true,
                BusState::Connected if lost => return true,
                BusState::Connected => {}
            }
        }
        false
    }

    /// Whether the connection is up now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The subject of one kind of request to a role.
    pub fn command_subject(&self, role: Role, kind: &str) -> String {
        format!("{}.svc.{}.{kind}", self.cluster, role.name())
    }

    /// Everything a role serves (a wildcard over the kinds).
    pub fn role_subjects(&self, role: Role) -> String {
        format!("{}.svc.{}.*", self.cluster, role.name())
    }

    /// The queue group of a role's replicas: each request reaches one of them.
    pub fn queue_group(&self, role: Role) -> String {
        format!("{}.{}", self.cluster, role.name())
    }

    /// The subject of one partition's committed results.
    pub fn results_subject(&self, partition: u32) -> String {
        format!("{}.results.{partition}", self.cluster)
    }

    /// Every partition's results (with their watermarks and takeover markers).
    pub fn all_results(&self) -> String {
        format!("{}.results.*", self.cluster)
    }

    /// Where an api node tells the owner of a partition that it accepted a saga there.
    pub fn start_subject(&self, partition: u32) -> String {
        format!("{}.start.{partition}", self.cluster)
    }

    /// Every partition's start notices (an orchestrator keeps those of the partitions it
    /// holds).
    pub fn all_starts(&self) -> String {
        format!("{}.start.*", self.cluster)
    }

    /// Where every node answers with its stats (the dashboard's cluster view).
    pub fn stats_subject(&self) -> String {
        format!("{}.stats", self.cluster)
    }

    /// Where a node with this id answers "who is there?".
    pub fn node_subject(&self, node_id: u16) -> String {
        format!("{}.node.{node_id}", self.cluster)
    }
}
