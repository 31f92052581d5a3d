//! `GET /api/purchase/result`: the customer's purchase results as server-sent events.
//!
//! The stream registers with the result hub first and only then sends `data: null`, so that
//! frame means "subscribed". With `Last-Event-ID` it replays what was missed from the step log
//! before live frames (live frames already replayed are skipped). Idle streams get a
//! `: keep-alive` comment.
//!
//! Why not actix-web-lab's `sse` module: its framing would put the same bytes on the wire
//! (`id:`, `event:`, `data:` lines in that order, `: keep-alive` comments), but it
//! - answers `text/event-stream` without the contract's `; charset=utf-8` and without
//!   `X-Accel-Buffering: no`, so we would build the response ourselves anyway;
//! - ticks its keep-alive on a fixed interval (in the versions we looked at) rather than
//!   after `keep_alive` of silence, and has no place for the skip of replayed frames below;
//! - adds actix-web-lab and its dependencies for the twenty lines of `frames`.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::stream;
use tokio::sync::mpsc;

use super::AppState;
use super::error::ApiError;
use crate::actors::ServiceError;
use crate::actors::results::Subscribe;
use crate::domain::ids::CustomerId;
use crate::domain::purchase::PurchaseResult;

/// The first frame of every stream: sent once the subscription is live.
const SUBSCRIBED: &[u8] = b"event: data\ndata: null\n\n";
/// Sent after `keep_alive` of silence.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// The SSE frame of a result, in the contract's key order.
fn result_frame(r: &PurchaseResult) -> Bytes {
    Bytes::from(format!(
        "id: {}\nevent: data\ndata: {{\"purchase_id\":{},\"step\":\"{}\",\"status\":\"{}\",\"timestamp\":{}}}\n\n",
        r.event_id,
        r.purchase_id,
        r.event.step.as_str(),
        r.event.status.as_str(),
        r.timestamp
    ))
}

/// Replayed entries read per query.
const REPLAY_PAGE: u64 = 1000;

/// True when the first entry of `Accept` is `text/event-stream` (parameters ignored).
fn wants_stream(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|first| first.split(';').next())
        .is_some_and(|media| media.trim() == "text/event-stream")
}

fn last_event_id(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The stream, or JSON `null` when the client did not ask for one.
pub async fn results(
    state: web::Data<AppState>,
    customer_id: CustomerId,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if !wants_stream(&req) {
        return Ok(HttpResponse::Ok()
            .content_type("application/json; charset=utf-8")
            .body("null"));
    }
    let (sink, live) = mpsc::channel(state.sse.buffer);
    state.hub.send(Subscribe { customer_id, sink }).await?;
    let missed = match last_event_id(&req) {
        Some(after) => replay(&state, customer_id, after).await?,
        None => Vec::new(),
    };
    let replayed_up_to = missed.last().map_or(0, |r| r.event_id);
    let body = frames(missed, live, replayed_up_to, state.sse.keep_alive);
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

/// What the customer missed after `after`, from the persisted step log.
async fn replay(
    state: &AppState,
    customer_id: CustomerId,
    after: u64,
) -> Result<Vec<PurchaseResult>, ApiError> {
    let mut missed = Vec::new();
    let mut cursor = after;
    loop {
        let page = state
            .store
            .events_after(customer_id, cursor, REPLAY_PAGE)
            .await
            .map_err(ServiceError::from)?;
        let Some(last) = page.last() else { break };
        cursor = last.event_id;
        missed.extend(page);
    }
    Ok(missed)
}

/// The response body: `data: null`, the missed results, then live ones (skipping those
/// already replayed), with keep-alive comments when idle.
fn frames(
    missed: Vec<PurchaseResult>,
    live: mpsc::Receiver<PurchaseResult>,
    replayed_up_to: u64,
    keep_alive: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    let first = std::iter::once(Bytes::from_static(SUBSCRIBED))
        .chain(missed.iter().map(result_frame))
        .map(Ok)
        .collect::<Vec<_>>();
    let first = stream::iter(first);
    let rest = stream::unfold(live, move |mut live| async move {
        loop {
            match tokio::time::timeout(keep_alive, live.recv()).await {
                Ok(Some(result)) if result.event_id <= replayed_up_to => {}
                Ok(Some(result)) => return Some((Ok(result_frame(&result)), live)),
                // The hub dropped us (buffer full): end the stream, the client reconnects.
                Ok(None) => return None,
                Err(_) => return Some((Ok(Bytes::from_static(KEEP_ALIVE)), live)),
            }
        }
    });
    futures_util::StreamExt::chain(first, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::purchase::{Step, StepEvent, StepStatus};

    #[test]
    fn frame_has_the_contract_shape() {
        let r = PurchaseResult {
            event_id: 9,
            purchase_id: crate::domain::ids::PurchaseId(5),
            customer_id: CustomerId(1),
            event: StepEvent {
                step: Step::CreateOrder,
                status: StepStatus::Execute,
            },
            timestamp: 1700000000,
        };
        assert_eq!(
            std::str::from_utf8(&result_frame(&r)).unwrap(),
            "id: 9\nevent: data\ndata: {\"purchase_id\":5,\"step\":\"CREATE_ORDER\",\"status\":\"STATUS_EXUCUTE\",\"timestamp\":1700000000}\n\n"
        );
    }
}
