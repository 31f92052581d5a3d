//! Trace export over OTLP (gRPC), and the helpers that carry a trace across actors, nodes
//! and restarts.
//!
//! Spans of the saga path (transitions, step commands and their handling, commits, cache
//! calls, SSE delivery) use the target [`TARGET`] at TRACE level: the log filter (`info` by
//! default) leaves them disabled, so while nothing is exported they cost one cached
//! callsite check each. The export layer has a filter of its own that turns them on.
//!
//! A [`TraceContext`] is the W3C form of a span's context. Where work hops to another actor
//! or node it travels with the message; the receiving side starts its span as a child of it
//! ([`follow`]). Group commits are shared by many sagas: their spans [`link`] to each.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Metadata, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::FilterFn;

use super::TelemetryError;
use super::logs::BoxedLayer;
use crate::cluster::roles::Roles;
use crate::config::TelemetryOptions;
pub use crate::domain::trace::TraceContext;

/// The target of sagashop's own spans: enabled only while traces are exported.
pub const TARGET: &str = "sagashop::trace";

/// Whether spans are exported (set once at start): everything here is a no-op otherwise.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The running OTLP export: its spans are batched on a thread of the SDK's own.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Starts exporting to `endpoint` (an OTLP/gRPC URL, e.g. `http://jaeger:4317`) and
    /// answers the layer that feeds it. Batching follows the `OTEL_BSP_*` environment.
    pub fn start(
        endpoint: &str,
        options: &TelemetryOptions,
        node_id: u16,
        roles: Roles,
    ) -> Result<(Self, BoxedLayer), TelemetryError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| TelemetryError::Exporter {
                endpoint: endpoint.to_owned(),
                reason: e.to_string(),
            })?;
        let resource = Resource::builder()
            .with_service_name(options.otel_service_name.clone())
            .with_attributes([
                KeyValue::new("service.instance.id", format!("node-{node_id}")),
                KeyValue::new("sagashop.node_id", i64::from(node_id)),
                KeyValue::new("sagashop.roles", roles.to_string()),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ])
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("sagashop"))
            .with_filter(FilterFn::new(exported))
            .boxed();
        EXPORTING.store(true, Ordering::Relaxed);
        Ok((Self { provider }, layer))
    }

    /// Sends what is buffered and stops. The export's gRPC connection runs on this runtime,
    /// so the blocking flush waits on a thread of its own while the runtime drives it.
    pub async fn shutdown(self) {
        EXPORTING.store(false, Ordering::Relaxed);
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "trace export did not flush"),
            Err(e) => tracing::warn!(error = %e, "trace export did not flush"),
        }
    }
}

/// What the export layer sees: sagashop's spans at any level, other spans (the HTTP request
/// span) and events (attached to their span) at INFO and above.
fn exported(meta: &Metadata<'_>) -> bool {
    *meta.level() <= tracing::Level::INFO || (meta.is_span() && meta.target().starts_with(TARGET))
}

/// The context of `span`, to hand to work that continues its trace elsewhere.
pub fn context_of(span: &Span) -> TraceContext {
    if !exporting() || span.is_disabled() {
        return TraceContext::NONE;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return TraceContext::NONE;
    }
    let mut headers = Headers::default();
    TraceContextPropagator::new().inject_context(&cx, &mut headers);
    TraceContext::from_headers(
        headers.traceparent.as_deref(),
        headers.tracestate.as_deref(),
    )
}

/// The context of the span the caller is in.
pub fn current() -> TraceContext {
    if !exporting() {
        return TraceContext::NONE;
    }
    context_of(&Span::current())
}

/// Makes `span` (just created, not yet entered) a child of `parent`'s span.
pub fn follow(span: &Span, parent: &TraceContext) {
    if let Some(cx) = otel_context(parent) {
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to `other`'s span: work done for it without being part of it.
pub fn link(span: &Span, other: &TraceContext) {
    if let Some(cx) = otel_context(other) {
        span.add_link(cx.span().span_context().clone());
    }
}

fn otel_context(trace: &TraceContext) -> Option<Context> {
    if !exporting() || !trace.is_some() {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&Carried(trace));
    cx.span().span_context().is_valid().then_some(cx)
}

/// The headers a context is written into.
#[derive(Default)]
struct Headers {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.traceparent = Some(value),
            "tracestate" => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// A carried context, read as headers.
struct Carried<'a>(&'a TraceContext);

impl Extractor for Carried<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.0.traceparent(),
            "tracestate" => self.0.tracestate(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}
