//! What crosses NATS: the actix messages themselves, serialized with serde inside an
//! envelope that carries a schema version. A node that meets a version it does not know
//! answers with a retryable error, so a rolling upgrade delays purchases instead of failing
//! them; a body that does not decode is an error of its own, reported once and never retried
//! by the bridge.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::actors::messages::{
    AcceptPurchase, CreateProduct, GetOrder, GetPayment, GetPerson, GetProduct, GetProducts,
    GetShipping, ListProducts, LogIn, RefreshTokens, SignUp, StepCommand, StepError, UpdatePerson,
    UpdateShipping,
};
use crate::actors::{ServiceError, ServiceResult};
use crate::domain::purchase::StepOutcome;
use crate::domain::trace::TraceContext;

/// The schema version this build writes and reads. Bump it when a message changes shape.
pub const SCHEMA_VERSION: u16 = 1;

/// Why a request over the bus got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    /// Nobody serves the role right now (no replica connected).
    #[error("no {0} replica is reachable")]
    NoResponders(&'static str),
    /// No answer in time (a replica died mid-command, or all are saturated).
    #[error("no answer from the {0} role in time")]
    TimedOut(&'static str),
    /// The other side speaks another schema version (a rolling upgrade): retry later.
    #[error("schema version {0} is not understood")]
    Version(u16),
    /// A message that does not decode: it will not get better by retrying.
    #[error("undecodable message: {0}")]
    Undecodable(String),
    /// The other side does not handle this kind of message.
    #[error("unknown message kind {0}")]
    UnknownKind(String),
    /// The NATS connection failed.
    #[error("bus unavailable: {0}")]
    Bus(String),
}

/// A message that can be served by another node.
pub trait Remote: actix::Message + Serialize + DeserializeOwned + Send + 'static {
    /// The last token of the message's subject.
    const KIND: &'static str;

    /// Moves the message's own instants (deadlines) by `shift_ms`: from the sender's clock
    /// to the receiver's, which may disagree by more than a deadline is long.
    fn rebase(&mut self, shift_ms: i64) {
        let _ = shift_ms;
    }

    /// The trace the message continues (sent in the headers, not the body); none for
    /// messages outside a saga's trace.
    fn trace(&self) -> TraceContext {
        TraceContext::NONE
    }

    /// Sets the trace the receiving side continues.
    fn set_trace(&mut self, trace: TraceContext) {
        let _ = trace;
    }
}

/// A reply type that can stand for a failed crossing: the caller sees the bus's failure as
/// the same kind of error as a local failure of the service.
pub trait Reply: Serialize + DeserializeOwned + Send + 'static {
    /// The reply a caller gets when the request could not be answered.
    fn failed(error: BridgeError) -> Self;
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Reply for ServiceResult<T> {
    /// No responder, or a refusal to read the request: nothing was done. No answer in
    /// time, or a broken connection: it may have been done.
    fn failed(error: BridgeError) -> Self {
        Err(match error {
            BridgeError::TimedOut(_) | BridgeError::Bus(_) => {
                ServiceError::Unanswered(error.to_string())
            }
            _ => ServiceError::Unavailable(error.to_string()),
        })
    }
}

impl Reply for Result<StepOutcome, StepError> {
    fn failed(error: BridgeError) -> Self {
        Err(StepError(error.to_string()))
    }
}

macro_rules! remote_kinds {
    ($($msg:ty => $kind:literal),* $(,)?) => {
        $(impl Remote for $msg { const KIND: &'static str = $kind; })*
    };
}

impl Remote for StepCommand {
    const KIND: &'static str = "step";

    /// The deadline is an instant on the orchestrator's clock; the participant compares it
    /// with its own, so it travels as the time left when the command was sent.
    fn rebase(&mut self, shift_ms: i64) {
        self.deadline_ms = self.deadline_ms.saturating_add(shift_ms);
    }

    fn trace(&self) -> TraceContext {
        self.trace.clone()
    }

    fn set_trace(&mut self, trace: TraceContext) {
        self.trace = trace;
    }
}

impl Remote for AcceptPurchase {
    const KIND: &'static str = "accept_purchase";

    fn rebase(&mut self, shift_ms: i64) {
        self.deadline_ms = self.deadline_ms.saturating_add(shift_ms);
    }

    fn trace(&self) -> TraceContext {
        self.trace.clone()
    }

    fn set_trace(&mut self, trace: TraceContext) {
        self.trace = trace;
    }
}

/// The W3C trace-context headers of a message; none without a trace.
pub fn trace_headers(trace: &TraceContext) -> Option<async_nats::HeaderMap> {
    let traceparent = trace.traceparent()?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", traceparent);
    if let Some(state) = trace.tracestate() {
        headers.insert("tracestate", state);
    }
    Some(headers)
}

/// The trace a received message continues, from its headers.
pub fn trace_of(headers: Option<&async_nats::HeaderMap>) -> TraceContext {
    let Some(headers) = headers else {
        return TraceContext::NONE;
    };
    let get = |name: &str| headers.get(name).map(|v| v.as_str());
    TraceContext::from_headers(get("traceparent"), get("tracestate"))
}

remote_kinds! {
    SignUp => "sign_up",
    LogIn => "log_in",
    RefreshTokens => "refresh_tokens",
    GetPerson => "get_person",
    UpdatePerson => "update_person",
    GetShipping => "get_shipping",
    UpdateShipping => "update_shipping",
    CreateProduct => "create_product",
    GetProduct => "get_product",
    GetProducts => "get_products",
    ListProducts => "list_products",
    GetOrder => "get_order",
    GetPayment => "get_payment",
}

/// A request or result on the bus.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<T> {
    v: u16,
    /// The sender's clock when it sent a request (unix ms), to rebase instants in the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sent_ms: Option<i64>,
    body: T,
}

/// Only the version, read first so that a newer body is not mistaken for a broken one.
#[derive(Deserialize)]
struct VersionOnly {
    v: u16,
}

/// An answer on the bus: the service's reply, or why there is none.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer<R> {
    Ok(R),
    Version(u16),
    Undecodable(String),
    UnknownKind(String),
}

/// Encodes a request or a published result.
pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    envelope(body, None)
}

/// Encodes a request sent at `sent_ms` on the sender's clock.
pub fn encode_request<M: Remote>(msg: &M, sent_ms: i64) -> Vec<u8> {
    envelope(msg, Some(sent_ms))
}

fn envelope<T: Serialize>(body: &T, sent_ms: Option<i64>) -> Vec<u8> {
    serde_json::to_vec(&Envelope {
        v: SCHEMA_VERSION,
        sent_ms,
        body,
    })
    .expect("message types serialize")
}

/// Decodes a request received at `now_ms` on this node's clock, its instants moved from
/// the sender's clock to this one (the time in transit counts as none: a little generous).
pub fn decode_request<M: Remote>(bytes: &[u8], now_ms: i64) -> Result<M, BridgeError> {
    let envelope: Envelope<M> = decode_envelope(bytes)?;
    let mut msg = envelope.body;
    if let Some(sent) = envelope.sent_ms {
        msg.rebase(now_ms - sent);
    }
    Ok(msg)
}

/// Decodes a request or a published result, checking its version first.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BridgeError> {
    decode_envelope(bytes).map(|e: Envelope<T>| e.body)
}

fn decode_envelope<T: DeserializeOwned>(bytes: &[u8]) -> Result<Envelope<T>, BridgeError> {
    let version = serde_json::from_slice::<VersionOnly>(bytes)
        .map_err(|e| BridgeError::Undecodable(e.to_string()))?
        .v;
    if version != SCHEMA_VERSION {
        return Err(BridgeError::Version(version));
    }
    serde_json::from_slice::<Envelope<T>>(bytes)
        .map_err(|e| BridgeError::Undecodable(e.to_string()))
}

/// Encodes a service's answer (`Ok`) or the reason a request was not served.
pub fn encode_answer<R: Serialize>(answer: Result<&R, &BridgeError>) -> Vec<u8> {
    let answer = match answer {
        Ok(reply) => Answer::Ok(reply),
        Err(BridgeError::Version(v)) => Answer::Version(*v),
        Err(BridgeError::UnknownKind(k)) => Answer::UnknownKind(k.clone()),
        Err(other) => Answer::Undecodable(other.to_string()),
    };
    encode(&answer)
}

/// Decodes an answer into the reply, or the error the other side reported.
pub fn decode_answer<R: DeserializeOwned>(bytes: &[u8]) -> Result<R, BridgeError> {
    match decode::<Answer<R>>(bytes)? {
        Answer::Ok(reply) => Ok(reply),
        Answer::Version(v) => Err(BridgeError::Version(v)),
        Answer::Undecodable(why) => Err(BridgeError::Undecodable(why)),
        Answer::UnknownKind(kind) => Err(BridgeError::UnknownKind(kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::CustomerId;

    #[test]
    fn a_message_crosses_and_comes_back_equal() {
        let msg = GetPerson {
            customer_id: CustomerId(42),
        };
        let back: GetPerson = decode(&encode(&msg)).unwrap();
        assert_eq!(back.customer_id, msg.customer_id);
        let reply: ServiceResult<u64> = Err(ServiceError::Busy);
        let back: ServiceResult<u64> = decode_answer(&encode_answer(Ok(&reply))).unwrap();
        assert_eq!(back, reply);
    }

    #[test]
    fn another_version_is_told_apart_from_garbage() {
        let newer = br#"{"v":2,"body":{"customer_id":42,"new_field":true}}"#;
        assert_eq!(
            decode::<GetPerson>(newer).unwrap_err(),
            BridgeError::Version(2)
        );
        assert!(matches!(
            decode::<GetPerson>(b"\x00garbage").unwrap_err(),
            BridgeError::Undecodable(_)
        ));
        assert!(matches!(
            decode::<GetPerson>(br#"{"v":1,"body":{"customer":"x"}}"#).unwrap_err(),
            BridgeError::Undecodable(_)
        ));
    }

    #[test]
    fn a_deadline_is_read_on_the_receivers_clock() {
        use crate::domain::purchase::{Currency, Purchase, Step};
        use crate::domain::saga::Call;
        let cmd = StepCommand {
            purchase: std::sync::Arc::new(Purchase {
                purchase_id: crate::domain::ids::PurchaseId(1),
                customer_id: CustomerId(2),
                items: vec![],
                currency: Currency::Nt,
                amount: 0,
            }),
            call: Call::Execute(Step::CreateOrder),
            epoch: 1,
            deadline_ms: 6_000,
            trace: Default::default(),
        };
        // Sent at 1 000 with 5 s to go; the receiver's clock reads 51 000 (50 s ahead).
        let bytes = encode_request(&cmd, 1_000);
        let got: StepCommand = decode_request(&bytes, 51_000).unwrap();
        assert_eq!(got.deadline_ms, 56_000);
        // Other messages carry no instants and come through unchanged.
        let msg = GetPerson {
            customer_id: CustomerId(3),
        };
        let got: GetPerson = decode_request(&encode_request(&msg, 0), 99).unwrap();
        assert_eq!(got.customer_id, msg.customer_id);
    }

    #[test]
    fn the_trace_context_crosses_in_headers() {
        let trace = TraceContext::from_headers(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("vendor=1"),
        );
        let headers = trace_headers(&trace).expect("a traced message has headers");
        assert_eq!(trace_of(Some(&headers)), trace);
        assert!(trace_headers(&TraceContext::NONE).is_none());
        assert_eq!(trace_of(None), TraceContext::NONE);
    }

    #[test]
    fn a_refusal_travels_back_as_the_same_error() {
        let bytes = encode_answer::<()>(Err(&BridgeError::Version(9)));
        assert_eq!(
            decode_answer::<()>(&bytes).unwrap_err(),
            BridgeError::Version(9)
        );
    }
}
