//! Plain types and rules with no I/O: ids, validation, purchases and the saga state machine.

pub mod email;
pub mod ids;
pub mod partition;
pub mod purchase;
pub mod records;
pub mod saga;
pub mod trace;
