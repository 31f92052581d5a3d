//! What a node tells its operators about itself: Prometheus metrics (`metrics`), and, with the
//! tracing work, spans and structured logs.

pub mod metrics;
pub mod metrics_server;
