//! What an operator sees of a running node: its Prometheus metrics (`metrics`, served by
//! `metrics_server`), its logs and, when an OTLP endpoint is set, its traces. Logs and trace
//! export are installed by `sagashop serve` once its configuration is read.

pub mod logs;
pub mod metrics;
pub mod metrics_server;
pub mod traces;

use crate::cluster::roles::Roles;
use crate::config::TelemetryOptions;

/// Why logs or trace export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter did not build (a malformed endpoint).
    #[error("cannot export traces to {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(String),
}

/// Holds trace export open while the node runs; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    traces: Option<traces::Exporter>,
}

impl Telemetry {
    /// Installs the logs in `options.log_format` and, when an OTLP endpoint is configured,
    /// the trace export. Must run inside the async runtime (the gRPC channel is made there).
    pub fn install(
        options: &TelemetryOptions,
        node_id: u16,
        roles: Roles,
    ) -> Result<Self, TelemetryError> {
        let (exporter, layer) = match options.otlp_endpoint() {
            Some(endpoint) => {
                let (exporter, layer) = traces::Exporter::start(endpoint, options, node_id, roles)?;
                (Some(exporter), Some(layer))
            }
            None => (None, None),
        };
        logs::install(options.log_format, layer)?;
        if let Some(endpoint) = options.otlp_endpoint() {
            tracing::info!(endpoint, service = %options.otel_service_name, "exporting traces over OTLP");
        }
        Ok(Self { traces: exporter })
    }

    /// Sends the spans still buffered and stops exporting (the node is shutting down).
    pub async fn shutdown(self) {
        if let Some(exporter) = self.traces {
            exporter.shutdown().await;
        }
    }
}
