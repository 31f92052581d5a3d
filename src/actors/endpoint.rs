//! Where a role's messages go from this node: its local actor when the node runs the role,
//! the NATS bridge otherwise. Callers (the HTTP handlers) send the same messages either way.

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, MailboxError};

use super::bridge::NatsBridge;
use crate::cluster::wire::{Remote, Reply};

/// A role's actor, here or on another node.
pub enum Endpoint<A: Actor> {
    Local(Addr<A>),
    Remote(Addr<NatsBridge>),
}

impl<A: Actor> Clone for Endpoint<A> {
    fn clone(&self) -> Self {
        match self {
            Endpoint::Local(a) => Endpoint::Local(a.clone()),
            Endpoint::Remote(b) => Endpoint::Remote(b.clone()),
        }
    }
}

impl<A: Actor> Endpoint<A> {
    /// Sends `msg` and waits for the reply. A remote role that cannot be reached answers
    /// with its reply type's error (503 to an API client), as a local outage would.
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, MailboxError>
    where
        M: Remote,
        M::Result: Reply,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        match self {
            Endpoint::Local(addr) => addr.send(msg).await,
            Endpoint::Remote(bridge) => bridge.send(msg).await,
        }
    }
}
