//! sagashop: e-commerce purchases run as orchestrated sagas on actix actors.

pub mod actors;
pub mod app;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod db;
pub mod domain;
pub mod http;
pub mod secrets;
pub mod sse_client;
pub mod telemetry;
