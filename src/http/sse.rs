//! `GET /api/purchase/result`: the customer's purchase results as server-sent events.
//!
//! The stream registers with the result hub first and only then sends `data: null`, so that
//! frame means "subscribed". With `Last-Event-ID` it replays what was missed from the step log
//! before live frames (live frames already replayed are skipped). Idle streams get a
//! `: keep-alive` comment.
//!
//! Why not actix-web-lab's `sse` module: its framing would put the same bytes on the wire
//! (`id:`, `event:`, `data:` lines in that order, `: keep-alive` comments), but it
//! - serializes each event per connection, where the hub builds a result's frame once and
//!   fans the same `Bytes` out to every subscriber;
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
use super::extract::CustomerId;
use crate::actors::ServiceError;
use crate::actors::results::{Frame, Subscribe, result_frame, subscribed_frame};

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
    CustomerId(customer_id): CustomerId,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if !wants_stream(&req) {
        return Ok(HttpResponse::Ok()
            .content_type("application/json; charset=utf-8")
            .body("null"));
    }
    let (sink, live) = mpsc::channel(state.sse.buffer);
    state.hub.send(Subscribe { customer_id, sink }).await?;
    let mut first = vec![subscribed_frame()];
    if let Some(after) = last_event_id(&req) {
        first.extend(replay(&state, customer_id, after).await?);
    }
    let replayed_up_to = first.iter().map(|f| f.event_id).max().unwrap_or(0);
    let body = frames(first, live, replayed_up_to, state.sse.keep_alive);
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

/// What the customer missed after `after`, from the persisted step log.
async fn replay(state: &AppState, customer_id: u64, after: u64) -> Result<Vec<Frame>, ApiError> {
    let mut frames = Vec::new();
    let mut cursor = after;
    loop {
        let rows = state
            .store
            .repo()
            .customer_events_after(customer_id, cursor, REPLAY_PAGE)
            .await
            .map_err(ServiceError::from)?;
        let Some(last) = rows.last() else { break };
        cursor = last.event_id;
        frames.extend(rows.iter().map(result_frame));
    }
    Ok(frames)
}

/// The response body: the first frames, then live ones, with keep-alive comments when idle.
fn frames(
    first: Vec<Frame>,
    live: mpsc::Receiver<Frame>,
    replayed_up_to: u64,
    keep_alive: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    let first = stream::iter(first.into_iter().map(|f| Ok(f.bytes)));
    let rest = stream::unfold(live, move |mut live| async move {
        loop {
            match tokio::time::timeout(keep_alive, live.recv()).await {
                Ok(Some(frame)) if frame.event_id != 0 && frame.event_id <= replayed_up_to => {}
                Ok(Some(frame)) => return Some((Ok(frame.bytes), live)),
                // The hub dropped us (buffer full): end the stream, the client reconnects.
                Ok(None) => return None,
                Err(_) => return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), live)),
            }
        }
    });
    futures_util::StreamExt::chain(first, rest)
}
