//! The W3C trace context a saga's work belongs to, as plain data: it travels inside actor
//! messages, in NATS headers and in the saga's row, so the spans of one purchase form one
//! trace across threads, nodes and restarts. Turning it into OpenTelemetry spans is
//! `telemetry::traces`' business; here it is only carried.

use std::sync::Arc;

/// The `traceparent` (and `tracestate`, if any) of a span, or nothing when tracing is off.
/// Cloning is cheap (one reference count, or nothing at all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext(Option<Arc<Headers>>);

/// The two W3C trace-context headers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Headers {
    traceparent: String,
    tracestate: String,
}

impl TraceContext {
    /// No trace: what every message carries while export is off.
    pub const NONE: TraceContext = TraceContext(None);

    /// A context from its headers; none without a `traceparent`.
    pub fn from_headers(traceparent: Option<&str>, tracestate: Option<&str>) -> Self {
        match traceparent.map(str::trim).filter(|t| !t.is_empty()) {
            Some(traceparent) => TraceContext(Some(Arc::new(Headers {
                traceparent: traceparent.to_owned(),
                tracestate: tracestate.unwrap_or_default().trim().to_owned(),
            }))),
            None => TraceContext::NONE,
        }
    }

    /// The `traceparent` header, if there is a trace.
    pub fn traceparent(&self) -> Option<&str> {
        self.0.as_ref().map(|h| h.traceparent.as_str())
    }

    /// The `tracestate` header, if there is a trace and it has one.
    pub fn tracestate(&self) -> Option<&str> {
        self.0
            .as_ref()
            .map(|h| h.tracestate.as_str())
            .filter(|s| !s.is_empty())
    }

    /// Whether there is a trace to continue.
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// The stored form (one column): the `traceparent`, then a space and the `tracestate`
    /// when there is one (a `traceparent` never holds a space).
    pub fn to_column(&self) -> Option<String> {
        let traceparent = self.traceparent()?;
        Some(match self.tracestate() {
            Some(state) => format!("{traceparent} {state}"),
            None => traceparent.to_owned(),
        })
    }

    /// Reads the stored form back.
    pub fn from_column(column: Option<&str>) -> Self {
        match column.map(|c| c.split_once(' ').unwrap_or((c, ""))) {
            Some((parent, state)) => Self::from_headers(Some(parent), Some(state)),
            None => TraceContext::NONE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_column_keeps_both_headers() {
        let cx = TraceContext::from_headers(Some(PARENT), Some("a=1, b=2"));
        let back = TraceContext::from_column(cx.to_column().as_deref());
        assert_eq!(back, cx);
        assert_eq!(back.tracestate(), Some("a=1, b=2"));
        let bare = TraceContext::from_headers(Some(PARENT), None);
        assert_eq!(bare.to_column().as_deref(), Some(PARENT));
        assert_eq!(TraceContext::from_column(Some(PARENT)), bare);
    }

    #[test]
    fn no_traceparent_is_no_trace() {
        assert!(!TraceContext::from_headers(None, Some("a=1")).is_some());
        assert!(!TraceContext::from_headers(Some(" "), None).is_some());
        assert_eq!(TraceContext::NONE.to_column(), None);
        assert_eq!(TraceContext::from_column(None), TraceContext::NONE);
    }
}
