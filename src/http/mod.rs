//! The HTTP surface (actix-web): handlers parse, authorize, send one message to an actor and
//! map its reply. Routes are in `routes`, error mapping in `error`.

mod account;
pub mod cors;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod health;
pub mod openapi;
mod product;
mod purchase;
mod records;
pub mod routes;
mod sse;
mod validate;

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;

use crate::actors::account::AccountService;
use crate::actors::endpoint::Endpoint;
use crate::actors::order::OrderService;
use crate::actors::payment::PaymentService;
use crate::actors::product::{ProductCore, ProductService};
use crate::actors::results::ResultHub;
use crate::actors::store::SagaStore;
use crate::actors::supervisor::SagaSupervisor;
use crate::auth::proxies::TrustedProxies;
use crate::auth::throttle::LoginThrottle;
use crate::auth::tokens::TokenIssuer;
use crate::domain::ids::IdGenerator;

/// SSE stream settings.
#[derive(Debug, Clone, Copy)]
pub struct SseSettings {
    /// Results buffered per live stream before a slow client is dropped.
    pub buffer: usize,
    /// Silence after which a `: keep-alive` comment is sent.
    pub keep_alive: Duration,
    /// Step-log entries read per query while a resumed stream catches up.
    pub replay_page: u64,
}

/// How the HTTP server treats connections: bounded, with timeouts, so that slow or idle
/// clients cannot hold workers or file descriptors.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Open connections per worker.
    pub max_connections: usize,
    /// Time a client has to send a request's head (and, in the JSON extractor, its body).
    pub client_request_timeout: Duration,
    /// Idle keep-alive connections are closed after this.
    pub keep_alive: Duration,
    /// SIGINT/SIGTERM stop the server gracefully (off in tests).
    pub signals: bool,
}

/// What a node's HTTP listener serves: the API when the node runs the api role, and the
/// operations routes (health, readiness) on every node.
#[derive(Clone)]
pub struct NodeHttp {
    pub api: Option<AppState>,
    pub probe: std::sync::Arc<health::Probe>,
    /// Counts every request by route pattern (`sagashop_http_requests_total`).
    pub metrics: crate::telemetry::metrics::Metrics,
    /// The live dashboard (api nodes only).
    pub dashboard: Option<std::sync::Arc<dashboard::Dashboard>>,
}

/// What handlers reach: each role's actor (here or over NATS) and the few stateless helpers.
#[derive(Clone)]
pub struct AppState {
    pub account: Endpoint<AccountService>,
    pub product: Endpoint<ProductService>,
    /// On a node with the product role: its core, which reads product pages on the HTTP
    /// worker itself, so a page in the local cache costs no hop to the service's thread.
    pub product_reads: Option<Arc<ProductCore>>,
    pub order: Endpoint<OrderService>,
    pub payment: Endpoint<PaymentService>,
    pub supervisor: Endpoint<SagaSupervisor>,
    /// In a cluster: purchases are stored here and announced to their partition's owner
    /// (`None` embedded, where the supervisor stores them).
    pub starts: Option<crate::actors::starts::StartNotices>,
    pub hub: Addr<ResultHub>,
    pub store: SagaStore,
    pub tokens: TokenIssuer,
    /// Failed-login counters (429 after repeated failures).
    pub logins: LoginThrottle,
    /// Whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    pub ids: IdGenerator,
    /// The clock purchase deadlines are set by.
    pub clock: crate::clock::Clock,
    /// Where result streams and their events are counted.
    pub metrics: crate::telemetry::metrics::Metrics,
    /// How long a purchase may take to reach the orchestrator before it is refused unstored
    /// (a remote orchestrator's answer can be lost; a local one always answers).
    pub accept_within: Duration,
    pub sse: SseSettings,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
}
