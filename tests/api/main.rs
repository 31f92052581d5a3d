//! The black-box tests, in one binary so the test crate links once: every module drives real
//! sagashop instances (started by [`support::TestApp`] or as the real binary) over HTTP and SSE.

mod support;

mod accounts;
mod authorization;
mod batching;
mod cache_cluster;
mod cache_redis;
mod cluster_accept;
mod cluster_blackbox;
mod cluster_failover;
mod cluster_nodes;
mod cluster_ownership;
mod cluster_sse;
mod cluster_takeover;
mod compensation;
mod compose;
mod concurrency;
mod dashboard;
mod hostile;
mod http_basics;
mod idempotency;
mod limits;
mod loadgen;
mod mariadb_api;
mod metrics;
mod openapi;
mod partition_log;
mod products;
mod purchases;
mod quarantine;
mod recovery;
mod repositories;
mod restart;
mod secret_logs;
mod security;
mod smoke;
mod tracing;
mod transitions_race;
