//! The actor system: service actors wrapping each database and cache, one saga actor per
//! purchase under a supervisor, the router between them, and the result hub feeding SSE.
//! Actors are thin: each handler forwards to a plain struct (`*Core`) that holds the logic.

pub mod account;
pub mod bridge;
pub mod endpoint;
mod error;
pub mod faults;
pub mod gaps;
pub mod leases;
pub mod messages;
pub mod order;
pub mod participant;
pub mod payment;
pub mod product;
pub mod queue;
pub mod read_side;
pub mod results;
pub mod router;
pub mod saga;
pub mod service;
pub mod starts;
pub mod store;
pub mod supervisor;

pub use error::{ServiceError, ServiceResult};
