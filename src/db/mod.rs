//! Persistence: the diesel schema, one repository per service database, and the pools that
//! let the same repository code run on SQLite (embedded) and MySQL (cluster).

pub mod accounts;
mod error;
pub mod ids;
pub mod ledger;
pub mod newest;
pub mod open;
pub mod orders;
pub mod partitions;
pub mod payments;
pub mod pool;
pub mod products;
pub mod reusable;
pub mod saga_list;
pub mod sagas;
pub mod schema;

pub use error::DbError;
pub use pool::DbPool;
