//! Log output: human-readable lines by default, one JSON object per line with
//! `--log-format json` (for log shippers). `RUST_LOG` filters either (default `info`).

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::TelemetryError;
use crate::config::LogFormat;

/// A layer of the global subscriber (the log output, the trace export).
pub type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The `RUST_LOG` filter, `info` when unset or unreadable.
fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber: logs in `format`, filtered by `RUST_LOG`, plus `traces`
/// (the export layer, with its own filter) when given.
pub fn install(format: LogFormat, traces: Option<BoxedLayer>) -> Result<(), TelemetryError> {
    let output = match format {
        // Colours only for a terminal: a log file gets plain text, and no request pays for
        // colouring the fields of its span.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .with_filter(filter())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(filter())
            .boxed(),
    };
    let layers: Vec<BoxedLayer> = std::iter::once(output).chain(traces).collect();
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))
}

/// Plain text logs, for the commands other than `serve`.
pub fn install_text() {
    let _ = install(LogFormat::Text, None);
}
