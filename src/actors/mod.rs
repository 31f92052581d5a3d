//! The actor system: service actors wrapping each database and cache, one saga actor per
//! purchase under a supervisor, the router between them, and the result hub feeding SSE.
//! Actors are thin: each handler forwards to a plain struct (`*Core`) that holds the logic.

pub mod account;
mod error;
pub mod faults;
pub mod messages;
pub mod order;
pub mod participant;
pub mod payment;
pub mod product;
pub mod results;
pub mod router;
pub mod saga;
pub mod store;
pub mod supervisor;

pub use error::{ServiceError, ServiceResult};

/// Defines a service actor around a `*Core` and implements `Handler<Msg>` for it by running
/// `core.method(msg)` as a future: the actor stays free while the database works, and the
/// logic stays testable without actix.
#[macro_export]
macro_rules! service_actor {
    ($(#[$doc:meta])* $actor:ident($core:ty) { $($msg:ty => $method:ident),* $(,)? }) => {
        $(#[$doc])*
        pub struct $actor {
            core: std::sync::Arc<$core>,
        }

        impl $actor {
            /// Actor around a core.
            pub fn new(core: $core) -> Self {
                Self { core: std::sync::Arc::new(core) }
            }
        }

        impl actix::Actor for $actor {
            type Context = actix::Context<Self>;
        }

        $(
            impl actix::Handler<$msg> for $actor {
                type Result = actix::ResponseFuture<<$msg as actix::Message>::Result>;
                fn handle(&mut self, msg: $msg, _: &mut Self::Context) -> Self::Result {
                    let core = self.core.clone();
                    Box::pin(async move { core.$method(msg).await })
                }
            }
        )*
    };
}
