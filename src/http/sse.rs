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

use std::collections::VecDeque;

use actix::Addr;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::stream;
use tokio::sync::mpsc;

use super::AppState;
use super::SseSettings;
use super::error::ApiError;
use crate::actors::ServiceError;
use crate::actors::results::{GoLive, ResultHub, StreamRefused, Subscribe, Unsubscribe};
use crate::actors::store::SagaStore;
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
#[utoipa::path(get, path = "/api/purchase/result", operation_id = "purchaseResults", tag = "purchases",
    security(("bearer" = [])),
    params(
        ("Accept" = Option<String>, Header, description = "`text/event-stream` first for the stream; anything else gets JSON `null`"),
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this event id"),
    ),
    responses(
        (status = 200, description = "server-sent events: `data: null` once subscribed, then \
            `id: <event id>` / `event: data` / `data: {\"purchase_id\",\"step\",\"status\",\"timestamp\"}` \
            per step result; `: keep-alive` comments when idle. Without the Accept: JSON `null`.",
            content(
                (String = "text/event-stream"),
                (Option<String> = "application/json"),
            )),
    ))]
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
    let resume_after = last_event_id(&req);
    let (sink, live) = mpsc::channel(state.sse.buffer);
    // Read before subscribing: where the hub starts tracking the partition, if it does not
    // yet, so that a result committed after this read cannot slip past the stream.
    let top = state
        .store
        .partition_top(customer_id)
        .await
        .map_err(ServiceError::from)?;
    // A resumed stream is registered paused: it catches up from the log first.
    let ticket = state
        .hub
        .send(Subscribe {
            customer_id,
            sink,
            paused: resume_after.is_some(),
            top,
        })
        .await?
        .map_err(|refused| match refused {
            StreamRefused::CustomerLimit => ApiError::TooManyStreams,
            StreamRefused::ServerLimit => ApiError::Service(ServiceError::Busy),
        })?;
    // A new stream delivers what is committed after it opens: a result committed before,
    // whose publication is still on its way to the hub, is not news to this client. Every
    // entry of the customer's partition up to its top now is such a result.
    let cursor = match resume_after {
        Some(after) => after,
        None => state
            .store
            .partition_top(customer_id)
            .await
            .map_err(ServiceError::from)?,
    };
    let feed = Feed {
        registration: Registration {
            hub: state.hub.clone(),
            customer_id,
            ticket,
            _open: state.metrics.sse_opened(),
        },
        events: state.metrics.sse_events(),
        store: state.store.clone(),
        settings: state.sse,
        live,
        cursor,
        phase: match resume_after {
            Some(_) => Phase::CatchingUp,
            None => Phase::Live,
        },
        queued: VecDeque::from([Bytes::from_static(SUBSCRIBED)]),
        pruning_checked: false,
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream::unfold(feed, Feed::next)))
}

/// A stream's registration with the hub; dropping it (the client went away, or the stream
/// ended on an error) unregisters the stream.
struct Registration {
    hub: Addr<ResultHub>,
    customer_id: CustomerId,
    ticket: u64,
    /// Counts the stream in `sagashop_sse_connections` while it is open.
    _open: crate::telemetry::metrics::OpenStream,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.do_send(Unsubscribe {
            customer_id: self.customer_id,
            ticket: self.ticket,
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading what the client missed from the step log, a page at a time.
    CatchingUp,
    /// Delivering results from the hub (those up to `cursor` were replayed already).
    Live,
}

/// The state of one response body.
struct Feed {
    registration: Registration,
    /// `sagashop_sse_events_total`: results sent, live or replayed.
    events: prometheus::IntCounter,
    store: SagaStore,
    settings: SseSettings,
    live: mpsc::Receiver<PurchaseResult>,
    /// The last event id sent.
    cursor: u64,
    phase: Phase,
    queued: VecDeque<Bytes>,
    /// Whether a resumed stream was told about pruned events already.
    pruning_checked: bool,
}

impl Feed {
    /// The next chunk of the body; `None` ends the response (the client reconnects).
    async fn next(mut self) -> Option<(Result<Bytes, actix_web::Error>, Self)> {
        loop {
            if let Some(bytes) = self.queued.pop_front() {
                return Some((Ok(bytes), self));
            }
            match self.phase {
                Phase::CatchingUp => self.catch_up().await?,
                Phase::Live => {
                    let wait = self.settings.keep_alive;
                    match tokio::time::timeout(wait, self.live.recv()).await {
                        Ok(Some(result)) if result.event_id <= self.cursor => {}
                        Ok(Some(result)) => {
                            self.cursor = result.event_id;
                            self.events.inc();
                            return Some((Ok(result_frame(&result)), self));
                        }
                        // The hub dropped us (buffer full): end the stream.
                        Ok(None) => return None,
                        Err(_) => return Some((Ok(Bytes::from_static(KEEP_ALIVE)), self)),
                    }
                }
            }
        }
    }

    /// Queues the next page of missed results. Once a page comes back short the log is
    /// caught up: the stream goes live, then reads the log once more, for results committed
    /// before it went live but published after its last page; results it then gets from the
    /// hub twice are skipped by id. Nothing is missed and nothing repeated at the switch.
    async fn catch_up(&mut self) -> Option<()> {
        if !self.pruning_checked {
            self.pruning_checked = true;
            let customer_id = self.registration.customer_id;
            let pruned = self.store.pruned_up_to(customer_id).await.ok()?;
            if self.cursor < pruned {
                self.queued.push_back(Bytes::from(format!(
                    ": events up to id {pruned} are past retention and were pruned; \
                     resuming from the oldest kept event\n\n"
                )));
            }
        }
        let page = self.settings.replay_page;
        let missed = self.read_after(page).await?;
        let caught_up = (missed.len() as u64) < page;
        self.queue(missed);
        if caught_up {
            self.registration
                .hub
                .send(GoLive {
                    customer_id: self.registration.customer_id,
                    ticket: self.registration.ticket,
                })
                .await
                .ok()?;
            loop {
                let tail = self.read_after(page).await?;
                let done = (tail.len() as u64) < page;
                self.queue(tail);
                if done {
                    break;
                }
            }
            self.phase = Phase::Live;
        }
        Some(())
    }

    async fn read_after(&self, limit: u64) -> Option<Vec<PurchaseResult>> {
        let customer_id = self.registration.customer_id;
        match self
            .store
            .events_after(customer_id, self.cursor, limit)
            .await
        {
            Ok(results) => Some(results),
            Err(e) => {
                tracing::warn!(%customer_id, error = %e, "SSE replay failed; closing the stream");
                None
            }
        }
    }

    fn queue(&mut self, results: Vec<PurchaseResult>) {
        if let Some(last) = results.last() {
            self.cursor = last.event_id;
        }
        self.events.inc_by(results.len() as u64);
        self.queued.extend(results.iter().map(result_frame));
    }
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
