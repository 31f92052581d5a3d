//! The service actors (account, product, order, payment): one generic actor around a core.
//! The core does the work, as plain async code testable without actix; the actor only runs
//! each message on it as a future, so it stays free while the database works.

use std::future::Future;
use std::sync::Arc;

use actix::{Actor, Context, Handler, Message, ResponseFuture};

/// How a service's core answers one message type; the core implements it once per message.
pub trait Serve<M: Message> {
    /// The answer to `msg` (the future owns the core, so the actor need not wait for it).
    fn serve(self: Arc<Self>, msg: M) -> impl Future<Output = M::Result> + 'static;
}

/// The actor of a service whose logic is the core `C`.
pub struct Service<C> {
    core: Arc<C>,
}

impl<C> Service<C> {
    /// Actor around a core.
    pub fn new(core: C) -> Self {
        Self::shared(Arc::new(core))
    }

    /// Actor around a core that others also call directly (the HTTP workers' reads).
    pub fn shared(core: Arc<C>) -> Self {
        Self { core }
    }
}

impl<C: 'static> Actor for Service<C> {
    type Context = Context<Self>;
}

impl<C, M> Handler<M> for Service<C>
where
    C: Serve<M> + 'static,
    M: Message + 'static,
{
    type Result = ResponseFuture<M::Result>;

    fn handle(&mut self, msg: M, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.core.clone().serve(msg))
    }
}
