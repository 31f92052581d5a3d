//! An OTLP/gRPC trace receiver inside the test process: nodes export their spans to it
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`), and tests read what arrived, waiting with a deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};

use super::{DEADLINE, eventually};

/// One span as received, ids in hex.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// The exporting node (resource attribute `sagashop.node_id`).
    pub node_id: Option<i64>,
    /// Linked spans: (trace id, span id).
    pub links: Vec<(String, String)>,
    pub attributes: HashMap<String, String>,
}

impl ReceivedSpan {
    /// A string attribute (any attribute, rendered as text).
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let node_id = resource_spans.resource.as_ref().and_then(|r| {
                r.attributes
                    .iter()
                    .find(|kv| kv.key == "sagashop.node_id")
                    .and_then(|kv| text(kv).parse().ok())
            });
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    node_id,
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv)))
                        .collect(),
                });
            }
        }
        self.spans.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The receiver; it runs on a thread of its own for as long as the test process lives.
pub struct Receiver {
    /// What nodes put in `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    collector: Collector,
}

impl Receiver {
    /// Starts a receiver on a free local port.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(incoming)
                    .await
                    .unwrap();
            });
        });
        Self {
            endpoint,
            collector,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collector.spans.lock().unwrap().clone()
    }

    /// Waits until `check` holds for the spans received (it answers what the test reads),
    /// or fails saying `what` never arrived.
    pub async fn wait_for<T>(&self, what: &str, check: impl Fn(&[ReceivedSpan]) -> Option<T>) -> T {
        let found = eventually(DEADLINE, || {
            let found = check(&self.spans());
            async move { found }
        })
        .await;
        found.unwrap_or_else(|| {
            let names: Vec<String> = self
                .spans()
                .iter()
                .map(|s| format!("{} {} <- {}", s.name, s.span_id, s.parent_span_id))
                .collect();
            panic!("no {what} among the spans received:\n{}", names.join("\n"))
        })
    }
}

/// The spans of one trace.
pub fn trace_of<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.trace_id == trace_id).collect()
}
