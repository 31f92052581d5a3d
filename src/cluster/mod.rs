//! The cluster runtime: which roles a node runs, the NATS bus between nodes, what travels on
//! it, the checks a node makes before it joins (one node per id), and every node's stats for
//! the dashboard. Embedded mode (no `--nats-url`) uses only the stats, of its one node.

pub mod bus;
pub mod identity;
pub mod roles;
pub mod stats;
pub mod wire;
