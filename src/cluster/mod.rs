//! The cluster runtime: which roles a node runs, the NATS bus between nodes, what travels on
//! it, and the checks a node makes before it joins (one node per id). Embedded mode (no
//! `--nats-url`) uses none of it.

pub mod bus;
pub mod identity;
pub mod roles;
pub mod wire;
