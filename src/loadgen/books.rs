//! The books every run keeps, because any request may fail: a node may die (or be killed and
//! restarted, `--survive-restarts`), and the load must go on without losing or doubling
//! anything.
//!
//! - **Result streams** reconnect for ever, to another live node when theirs stops answering,
//!   and always send `Last-Event-ID` (0 before the first frame), so the node they land on
//!   replays exactly what the stream missed. Every frame is recorded: its id must be above
//!   the last one of that customer's stream (ids grow per customer), and each purchase's
//!   terminal event must arrive exactly once.
//! - **POSTs.** The API has no idempotency key, so a purchase is sent again (to another live
//!   node) only when it surely did not create anything: the connection could not be made
//!   (the request never left), or the node answered `503` (busy). A POST whose answer was
//!   lost may or may not have created a purchase, and is not sent again (that could buy
//!   twice). Such a purchase is still found: its first step-log entry is committed with the
//!   saga, so it shows up on its customer's stream, and the audit at the end
//!   (`audit.rs`) reads it back.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::oneshot;

use sagashop::sse_client::{Frame, Parser as FrameParser};

use super::cluster::{Answer, Cluster};
use super::{Cart, Outcome, Tracker, outcome_of};

/// How long a purchase (or the settling at the end, or an outage of every node) may take
/// before it counts as lost.
pub(crate) const SETTLE: Duration = Duration::from_secs(120);
/// Pause after a failed request or a closed stream, while a node restarts.
pub(crate) const PAUSE: Duration = Duration::from_millis(50);
/// A result stream silent this long is taken as hung and reconnected elsewhere: the server
/// sends a keep-alive comment every `--sse-keepalive-seconds` (15 by default).
const STREAM_IDLE: Duration = Duration::from_secs(60);

/// Per purchase, the frames its stream delivered: (event id, step, status).
pub(crate) type FramesByPurchase = BTreeMap<u64, Vec<(u64, String, String)>>;

/// What the streams delivered for one purchase.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) shopper: usize,
    pub(crate) terminal: Vec<Outcome>,
}

/// A purchase answered `201`, with the cart it was built from.
pub(crate) struct Answered {
    pub(crate) purchase_id: u64,
    pub(crate) shopper: usize,
    pub(crate) lines: Vec<(u64, i64)>,
    pub(crate) amount: i64,
}

/// Everything the workers and streams share (one thread: `Rc` and cells).
pub(crate) struct Books {
    /// Set to stop starting purchases (SIGUSR1, or every node down for `SETTLE`).
    pub(crate) stop: Cell<bool>,
    /// Set when every node stayed down for `SETTLE`: the run failed.
    pub(crate) gave_up: Cell<bool>,
    pub(crate) tracker: RefCell<Tracker>,
    /// Per customer: the last event id its stream delivered.
    pub(crate) last_id: RefCell<Vec<u64>>,
    pub(crate) seen: RefCell<HashMap<u64, Seen>>,
    pub(crate) answered: RefCell<Vec<Answered>>,
    pub(crate) out_of_order: Cell<u64>,
    pub(crate) wrong_stream: Cell<u64>,
    pub(crate) reconnects: Cell<u64>,
    /// POSTs whose answer was lost (not sent again).
    pub(crate) unanswered: Cell<u64>,
    /// POSTs sent again because their connection could not be made.
    pub(crate) retried: Cell<u64>,
    /// POSTs answered with neither `201` nor `503`.
    pub(crate) refused: Cell<u64>,
    pub(crate) busy: Cell<u64>,
    down_since: Cell<Option<Instant>>,
    pub(crate) longest_outage: Cell<Duration>,
    /// With `--frames`: every result frame, per purchase, in the order the streams
    /// delivered them (event id, step, status).
    pub(crate) frames: Option<RefCell<FramesByPurchase>>,
}

impl Books {
    /// Empty books for `customers` streams.
    pub(crate) fn new(customers: usize) -> Self {
        Books {
            stop: Cell::new(false),
            gave_up: Cell::new(false),
            tracker: RefCell::default(),
            last_id: RefCell::new(vec![0; customers]),
            seen: RefCell::default(),
            answered: RefCell::default(),
            out_of_order: Cell::new(0),
            wrong_stream: Cell::new(0),
            reconnects: Cell::new(0),
            unanswered: Cell::new(0),
            retried: Cell::new(0),
            refused: Cell::new(0),
            busy: Cell::new(0),
            down_since: Cell::new(None),
            longest_outage: Cell::new(Duration::ZERO),
            frames: None,
        }
    }

    /// Keeps every result frame, for `--frames`.
    pub(crate) fn keeping_frames(mut self) -> Self {
        self.frames = Some(RefCell::default());
        self
    }

    /// Adds one to a counter.
    pub(crate) fn bump(counter: &Cell<u64>) {
        counter.set(counter.get() + 1);
    }

    /// A request failed: the load may be stalled from now.
    fn down(&self) {
        if self.down_since.get().is_none() {
            self.down_since.set(Some(Instant::now()));
        }
    }

    /// A purchase was accepted: the load goes on.
    fn up(&self) {
        if let Some(since) = self.down_since.take() {
            self.longest_outage
                .set(self.longest_outage.get().max(since.elapsed()));
        }
    }

    /// True once no purchase was accepted for `SETTLE` after a failed request: every node
    /// is taken as gone for good, and the run stops with an error instead of waiting for ever.
    fn given_up(&self) -> bool {
        if self.down_since.get().is_some_and(|t| t.elapsed() >= SETTLE) {
            self.gave_up.set(true);
            self.stop.set(true);
        }
        self.gave_up.get()
    }

    /// Records one result frame of `shopper`'s stream.
    fn frame(&self, shopper: usize, frame: &Frame) {
        let (Some(id), Ok(data)) = (frame.event_id(), serde_json::from_str::<Value>(&frame.data))
        else {
            return;
        };
        let Some(purchase_id) = data["purchase_id"].as_u64() else {
            return;
        };
        {
            let mut last = self.last_id.borrow_mut();
            if id <= last[shopper] {
                Self::bump(&self.out_of_order);
            } else {
                last[shopper] = id;
            }
        }
        if let Some(frames) = &self.frames {
            let text = |key: &str| data[key].as_str().unwrap_or_default().to_owned();
            frames.borrow_mut().entry(purchase_id).or_default().push((
                id,
                text("step"),
                text("status"),
            ));
        }
        let outcome = outcome_of(&data);
        {
            let mut seen = self.seen.borrow_mut();
            let entry = seen.entry(purchase_id).or_insert(Seen {
                shopper,
                terminal: Vec::new(),
            });
            if entry.shopper != shopper {
                Self::bump(&self.wrong_stream);
            }
            entry.terminal.extend(outcome);
        }
        if let Some(outcome) = outcome {
            self.tracker.borrow_mut().finished(purchase_id, outcome);
        }
    }
}

/// Buys `cart` as `token` on its customer's node (or, while that one is dead, another live
/// one), sending it again only while that is safe; the purchase id when it was answered.
pub(crate) async fn buy(books: &Books, cluster: &Cluster, token: &str, cart: &Cart) -> Option<u64> {
    let home = cluster.nodes.home(cart.shopper);
    loop {
        let node = cluster.nodes.pick(home, Instant::now());
        let answer = cluster
            .send_to(
                node,
                awc::http::Method::POST,
                "/api/purchase",
                Some(token),
                Some(&cart.body),
            )
            .await;
        match answer {
            Answer::Answered(201, v) => {
                books.up();
                let purchase_id = v["purchase_id"].as_u64()?;
                books.answered.borrow_mut().push(Answered {
                    purchase_id,
                    shopper: cart.shopper,
                    lines: cart.lines.clone(),
                    amount: cart.amount,
                });
                return Some(purchase_id);
            }
            // Not accepted: the same cart again is safe.
            Answer::Answered(503, _) => {
                Books::bump(&books.busy);
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
            Answer::Answered(..) => {
                Books::bump(&books.refused);
                books.down();
                actix_rt::time::sleep(PAUSE).await;
                return None;
            }
            Answer::NotSent => {
                Books::bump(&books.retried);
                books.down();
                if books.given_up() {
                    return None;
                }
                actix_rt::time::sleep(PAUSE).await;
            }
            Answer::Lost => {
                Books::bump(&books.unanswered);
                books.down();
                actix_rt::time::sleep(PAUSE).await;
                return None;
            }
        }
    }
}

/// Waits for a purchase's terminal event on its stream.
pub(crate) async fn settle(books: &Books, purchase_id: u64) -> Option<Outcome> {
    let arrived = books
        .seen
        .borrow()
        .get(&purchase_id)
        .and_then(|s| s.terminal.first().copied());
    if arrived.is_some() {
        return arrived;
    }
    let wait = books.tracker.borrow_mut().wait_for(purchase_id);
    actix_rt::time::timeout(SETTLE, wait).await.ok()?.ok()
}

/// Follows one customer's result stream for ever, on its stream node or, while that one is
/// dead, another live one, reconnecting with `Last-Event-ID`. `ready` fires once the first
/// connection is subscribed.
pub(crate) async fn follow(
    books: Rc<Books>,
    cluster: Cluster,
    token: String,
    shopper: usize,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let home = cluster.nodes.stream_home(shopper);
    loop {
        let node = cluster.nodes.pick(home, Instant::now());
        let after = books.last_id.borrow()[shopper];
        if let Some(mut res) = subscribe(&cluster, node, &token, after).await {
            let end = read_stream(&mut res, &mut ready, |frame| books.frame(shopper, frame)).await;
            if end == StreamEnd::Silent {
                cluster.nodes.failed(node, Instant::now());
            }
            Books::bump(&books.reconnects);
        }
        actix_rt::time::sleep(PAUSE).await;
    }
}

/// Opens a result stream on node `node`, resuming after event `after`; `None` (booked on the
/// node) when it did not open.
async fn subscribe(
    cluster: &Cluster,
    node: usize,
    token: &str,
    after: u64,
) -> Option<awc::ClientResponse> {
    let sent = cluster
        .client
        .get(format!("{}/api/purchase/result", cluster.nodes.url(node)))
        .insert_header(("Accept", "text/event-stream"))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .insert_header(("Last-Event-ID", after.to_string()))
        .send()
        .await;
    let Ok(res) = sent else {
        cluster.nodes.failed(node, Instant::now());
        return None;
    };
    cluster.nodes.answered(node);
    let open = res.status().as_u16() == 200;
    if open {
        cluster.nodes.streamed(node);
    }
    open.then_some(res)
}

/// Why a result stream stopped being read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// The body ended or broke (the node closed it, or died).
    Closed,
    /// Nothing came for `STREAM_IDLE`, not even a keep-alive: the node hangs.
    Silent,
}

/// Reads a result stream until it ends: fires `ready` at its `data: null` (subscribed) and
/// hands every other frame to `on_frame`.
pub(crate) async fn read_stream<S, E>(
    body: &mut S,
    ready: &mut Option<oneshot::Sender<()>>,
    mut on_frame: impl FnMut(&Frame),
) -> StreamEnd
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    let mut parser = FrameParser::default();
    loop {
        let chunk = match actix_rt::time::timeout(STREAM_IDLE, body.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(_) => return StreamEnd::Closed,
            Err(_) => return StreamEnd::Silent,
        };
        parser.push(&chunk);
        while let Some(frame) = parser.next_frame() {
            if frame.data == "null" {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            } else {
                on_frame(&frame);
            }
        }
    }
}
