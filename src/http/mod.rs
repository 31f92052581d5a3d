//! The HTTP surface (actix-web): handlers parse, authorize, send one message to an actor and
//! map its reply. Routes are in `routes`, error mapping in `error`.

mod account;
pub mod cors;
pub mod error;
pub mod extract;
mod health;
mod product;
mod purchase;
mod records;
pub mod routes;
mod sse;
mod validate;

use std::time::Duration;

use actix::Addr;

use crate::actors::account::AccountService;
use crate::actors::order::OrderService;
use crate::actors::payment::PaymentService;
use crate::actors::product::ProductService;
use crate::actors::results::ResultHub;
use crate::actors::store::SagaStore;
use crate::actors::supervisor::SagaSupervisor;
use crate::auth::proxies::TrustedProxies;
use crate::auth::throttle::LoginThrottle;
use crate::auth::tokens::TokenIssuer;
use crate::db::DbPool;
use crate::domain::ids::IdGenerator;

/// SSE stream settings.
#[derive(Debug, Clone, Copy)]
pub struct SseSettings {
    pub buffer: usize,
    pub keep_alive: Duration,
}

/// What handlers reach: actor addresses and the few stateless helpers.
#[derive(Clone)]
pub struct AppState {
    pub account: Addr<AccountService>,
    pub product: Addr<ProductService>,
    pub order: Addr<OrderService>,
    pub payment: Addr<PaymentService>,
    pub supervisor: Addr<SagaSupervisor>,
    pub hub: Addr<ResultHub>,
    pub store: SagaStore,
    pub tokens: TokenIssuer,
    /// Failed-login counters (429 after repeated failures).
    pub logins: LoginThrottle,
    /// Whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    pub ids: IdGenerator,
    pub sse: SseSettings,
    pub databases: Vec<(&'static str, DbPool)>,
}
