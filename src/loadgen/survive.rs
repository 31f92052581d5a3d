//! `loadgen --survive-restarts`: the load of the crash loop (`scripts/crashloop.sh`), which
//! kills the server with SIGKILL and restarts it on the same data while purchases run.
//!
//! How it keeps its books when any request may die with the server:
//! - **Result streams** reconnect for ever and always send `Last-Event-ID` (0 before the
//!   first frame), so a restarted server replays exactly what the stream missed. Every frame
//!   is recorded: its id must be above the last one of that customer's stream (ids grow per
//!   customer), and each purchase's terminal event must arrive exactly once.
//! - **POSTs.** The API has no idempotency key, so a POST is retried only when it surely did
//!   not create a purchase: the connection could not be made (the request never left), or the
//!   server answered without `201` (503 busy, an error). A POST whose answer was lost may or
//!   may not have created a purchase, and is not retried (a retry could buy twice). Such a
//!   purchase is still found: its first step-log entry (`UPDATE_PRODUCT_INVENTORY
//!   STATUS_EXUCUTE`) is committed with the saga, so it shows up on its customer's stream;
//!   the run reads its cart back with `GET /api/purchase/{id}`. A created purchase that never
//!   shows up on the stream is not missed either: the crash loop compares the run's record
//!   with the saga database, where it would appear as lost.
//! - **The end.** On SIGUSR1 (or at `--duration`) workers stop starting purchases. Then each
//!   customer buys one last *fence* purchase and waits for its terminal event: event ids grow
//!   per customer in commit order, so once the fence's events arrived, every purchase that was
//!   created before it has shown up. Then every known purchase must be terminal (through the
//!   API, and its terminal event on the stream), and stock, orders and payments must add up.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use awc::Client;
use awc::error::{ConnectError, SendRequestError};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use sagashop::sse_client::Frame;

use super::{
    Cart, Done, Item, LoadgenArgs, Outcome, Shopper, Tracker, call, cart, client, invariants,
    outcome_of, read_stream, setup,
};

/// How long a purchase (or the settling at the end) may take before it counts as lost.
const SETTLE: Duration = Duration::from_secs(120);
/// Pause after a failed request or a closed stream, while the server restarts.
const PAUSE: Duration = Duration::from_millis(50);

/// What the crash-loop run saw. `violations` empty means nothing was lost or duplicated.
#[derive(Debug, Serialize)]
pub struct SurviveReport {
    pub seconds: f64,
    /// Purchases answered `201`.
    pub answered: u64,
    /// Purchases created although their POST's answer was lost (found on the stream).
    pub discovered: u64,
    /// `answered + discovered`: every purchase the run created.
    pub accepted: u64,
    pub completed: u64,
    pub succeeded: u64,
    pub rolled_back: u64,
    /// Accepted purchases that are not terminal, or whose terminal event never arrived.
    pub lost: u64,
    /// Terminal events received more than once, plus the two below.
    pub duplicated: u64,
    /// Frames whose id was not above the last one of their customer's stream.
    pub out_of_order_frames: u64,
    /// Purchases created beyond what the unanswered POSTs could have created.
    pub created_beyond_posts: u64,
    /// POSTs whose answer was lost (not retried).
    pub unanswered_posts: u64,
    /// POSTs retried because their connection could not be made.
    pub retried_posts: u64,
    /// POSTs answered with neither `201` nor `503`.
    pub refused_posts: u64,
    pub busy: u64,
    pub stream_reconnects: u64,
    /// Longest time from a failed request to the next purchase answered `201`.
    pub longest_outage_ms: u64,
    pub invariants: invariants::Verdict,
    pub violations: Vec<String>,
}

/// What the streams delivered for one purchase.
#[derive(Debug, Clone)]
struct Seen {
    shopper: usize,
    terminal: Vec<Outcome>,
}

/// A purchase answered `201`, with the cart it was built from.
struct Answered {
    purchase_id: u64,
    shopper: usize,
    lines: Vec<(u64, i64)>,
    amount: i64,
}

/// Everything the workers and streams share (one thread: `Rc` and cells).
struct Books {
    stop: Cell<bool>,
    tracker: RefCell<Tracker>,
    /// Per customer: the last event id its stream delivered.
    last_id: RefCell<Vec<u64>>,
    seen: RefCell<HashMap<u64, Seen>>,
    answered: RefCell<Vec<Answered>>,
    out_of_order: Cell<u64>,
    wrong_stream: Cell<u64>,
    reconnects: Cell<u64>,
    unanswered: Cell<u64>,
    retried: Cell<u64>,
    refused: Cell<u64>,
    busy: Cell<u64>,
    down_since: Cell<Option<Instant>>,
    longest_outage: Cell<Duration>,
}

impl Books {
    fn new(customers: usize) -> Self {
        Books {
            stop: Cell::new(false),
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
        }
    }

    fn bump(counter: &Cell<u64>) {
        counter.set(counter.get() + 1);
    }

    /// A request failed: the server may be down from now.
    fn down(&self) {
        if self.down_since.get().is_none() {
            self.down_since.set(Some(Instant::now()));
        }
    }

    /// A purchase was accepted: the server is up.
    fn up(&self) {
        if let Some(since) = self.down_since.take() {
            self.longest_outage
                .set(self.longest_outage.get().max(since.elapsed()));
        }
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

/// How a POST ended.
enum Posted {
    /// The server answered (the body may be `Null` when it did not decode).
    Answered(u16, Value),
    /// The connection could not be made: the request never reached a server.
    NotSent,
    /// Sent, but no complete answer came back: it may or may not have taken effect.
    Lost,
}

async fn post(client: &Client, url: &str, token: &str, body: &Value) -> Posted {
    let sent = client
        .post(url)
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send_body(body.to_string())
        .await;
    let mut res = match sent {
        Ok(res) => res,
        // awc reports a connection that closed before the response head as `Disconnected`,
        // after the request was written: that one may have taken effect.
        Err(SendRequestError::Connect(e)) if !matches!(e, ConnectError::Disconnected) => {
            return Posted::NotSent;
        }
        Err(_) => return Posted::Lost,
    };
    let status = res.status().as_u16();
    match res.body().limit(1 << 20).await {
        Ok(bytes) => Posted::Answered(
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ),
        // A 201 whose body (the purchase id) was cut off is as good as lost.
        Err(_) if status == 201 => Posted::Lost,
        Err(_) => Posted::Answered(status, Value::Null),
    }
}

/// Buys `cart`, retrying only while that is safe; the purchase id when it was answered.
async fn buy(books: &Books, client: &Client, url: &str, token: &str, cart: &Cart) -> Option<u64> {
    let target = format!("{url}/api/purchase");
    loop {
        match post(client, &target, token, &cart.body).await {
            Posted::Answered(201, v) => {
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
            Posted::Answered(503, _) => {
                Books::bump(&books.busy);
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
            Posted::Answered(..) => {
                Books::bump(&books.refused);
                books.down();
                actix_rt::time::sleep(PAUSE).await;
                return None;
            }
            Posted::NotSent => {
                Books::bump(&books.retried);
                books.down();
                actix_rt::time::sleep(PAUSE).await;
            }
            Posted::Lost => {
                Books::bump(&books.unanswered);
                books.down();
                actix_rt::time::sleep(PAUSE).await;
                return None;
            }
        }
    }
}

/// Waits for a purchase's terminal event on its stream.
async fn settle(books: &Books, purchase_id: u64) -> Option<Outcome> {
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

/// Follows one customer's result stream for ever, reconnecting with `Last-Event-ID`.
/// `ready` fires once the first connection is subscribed.
async fn follow(
    books: Rc<Books>,
    client: Client,
    url: String,
    token: String,
    shopper: usize,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    loop {
        let after = books.last_id.borrow()[shopper];
        let res = client
            .get(format!("{url}/api/purchase/result"))
            .timeout(Duration::from_secs(24 * 3600))
            .insert_header(("Accept", "text/event-stream"))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .insert_header(("Last-Event-ID", after.to_string()))
            .send()
            .await;
        if let Ok(mut res) = res.map_err(|_| ()).and_then(|r| match r.status().as_u16() {
            200 => Ok(r),
            _ => Err(()),
        }) {
            read_stream(&mut res, &mut ready, |frame| books.frame(shopper, frame)).await;
            Books::bump(&books.reconnects);
        }
        actix_rt::time::sleep(PAUSE).await;
    }
}

/// Runs the crash-loop load and checks it; see the module comment.
pub(super) async fn run(args: &LoadgenArgs) -> anyhow::Result<SurviveReport> {
    let client = client(args.concurrency);
    let (shoppers, items, scarce) = setup(&client, args).await?;
    let books = Rc::new(Books::new(shoppers.len()));
    for (i, s) in shoppers.iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        actix_rt::spawn(follow(
            books.clone(),
            client.clone(),
            args.url.clone(),
            s.token.clone(),
            i,
            tx,
        ));
        rx.await.context("result stream")?;
    }
    {
        let books = books.clone();
        let mut usr1 =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
        actix_rt::spawn(async move {
            usr1.recv().await;
            books.stop.set(true);
        });
    }
    // The crash loop starts killing once it reads this line.
    eprintln!("loadgen: load running");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (books, client, url) = (books.clone(), client.clone(), args.url.clone());
        let (shoppers, items, scarce) = (shoppers.clone(), items.clone(), scarce.clone());
        let fail_ratio = args.fail_ratio;
        workers.push(actix_rt::spawn(async move {
            let mut rng = rand::rng();
            while !books.stop.get() && Instant::now() < deadline {
                let cart = cart(&mut rng, w, shoppers.len(), &items, &scarce, fail_ratio);
                let token = &shoppers[cart.shopper].token;
                if let Some(id) = buy(&books, &client, &url, token, &cart).await {
                    settle(&books, id).await;
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    books.stop.set(true);
    fence(&books, &client, &args.url, &shoppers, &items).await?;
    let seconds = started.elapsed().as_secs_f64();
    let report = check(&books, &client, args, &shoppers, &items, &scarce, seconds).await?;
    if let Some(path) = &args.record {
        std::fs::write(path, record(&books, &items, &scarce, &report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// One last purchase per customer, each waited for: after it, the streams have shown every
/// purchase created before.
async fn fence(
    books: &Books,
    client: &Client,
    url: &str,
    shoppers: &[Shopper],
    items: &[Item],
) -> anyhow::Result<()> {
    let started = Instant::now();
    for (shopper, s) in shoppers.iter().enumerate() {
        let item = &items[0];
        let cart = Cart {
            shopper,
            lines: vec![(item.id, 1)],
            amount: item.price,
            body: json!({"purchase_items": [{"product_id": item.id, "amount": 1}], "payment": {"currency_code": "NT"}}),
        };
        loop {
            anyhow::ensure!(
                started.elapsed() < SETTLE,
                "the fence purchases were not accepted within {SETTLE:?}"
            );
            if let Some(id) = buy(books, client, url, &s.token, &cart).await {
                settle(books, id)
                    .await
                    .with_context(|| format!("fence purchase {id} did not end"))?;
                break;
            }
        }
    }
    Ok(())
}

/// The status `GET /api/purchase/{id}` shows and the cart it holds.
async fn read_purchase(
    client: &Client,
    url: &str,
    token: &str,
    purchase_id: u64,
) -> anyhow::Result<(String, Vec<(u64, i64)>, i64)> {
    let (status, v) = call(
        client,
        awc::http::Method::GET,
        &format!("{url}/api/purchase/{purchase_id}"),
        Some(token),
        None,
    )
    .await?;
    anyhow::ensure!(status == 200, "purchase {purchase_id}: {status} {v}");
    let mut lines: Vec<(u64, i64)> = v["purchase_items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| Some((l["product_id"].as_u64()?, l["amount"].as_i64()?)))
        .collect();
    lines.sort();
    Ok((
        v["status"].as_str().unwrap_or_default().to_owned(),
        lines,
        v["amount"].as_i64().unwrap_or_default(),
    ))
}

/// A cart as it was posted: its lines (sorted) and amount.
type PostedCart = (Vec<(u64, i64)>, i64);

/// Every purchase the run created, read back through the API, against what the streams
/// delivered; then stock, orders and payments.
async fn check(
    books: &Books,
    client: &Client,
    args: &LoadgenArgs,
    shoppers: &[Shopper],
    items: &[Item],
    scarce: &Item,
    seconds: f64,
) -> anyhow::Result<SurviveReport> {
    let mut violations = Vec::new();
    // Answered purchases with their carts, then those only the streams told of.
    let mut known: BTreeMap<u64, (usize, Option<PostedCart>)> = BTreeMap::new();
    for a in books.answered.borrow().iter() {
        let mut lines = a.lines.clone();
        lines.sort();
        known.insert(a.purchase_id, (a.shopper, Some((lines, a.amount))));
    }
    let answered = known.len() as u64;
    for (id, seen) in books.seen.borrow().iter() {
        known.entry(*id).or_insert((seen.shopper, None));
    }
    let discovered = known.len() as u64 - answered;
    let unanswered = books.unanswered.get();
    let beyond = discovered.saturating_sub(unanswered);
    let mut duplicated = books.out_of_order.get() + beyond;
    if beyond > 0 {
        violations.push(format!(
            "{discovered} purchases created without an answer, but only {unanswered} POSTs lost theirs"
        ));
    }
    if books.out_of_order.get() > 0 {
        violations.push(format!(
            "{} frames not above their stream's last event id",
            books.out_of_order.get()
        ));
    }
    if books.wrong_stream.get() > 0 {
        violations.push(format!(
            "{} frames on another customer's stream",
            books.wrong_stream.get()
        ));
    }
    // Purchases whose terminal event has not arrived yet get until SETTLE.
    let unsettled: Vec<u64> = known
        .keys()
        .copied()
        .filter(|id| {
            books
                .seen
                .borrow()
                .get(id)
                .is_none_or(|s| s.terminal.is_empty())
        })
        .collect();
    for id in unsettled {
        settle(books, id).await;
    }
    let reads = futures_util::stream::iter(known.iter().map(|(&id, (shopper, _))| {
        let token = shoppers[*shopper].token.as_str();
        async move { (id, read_purchase(client, &args.url, token, id).await) }
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    let mut done = Vec::new();
    let mut lost = 0;
    let seen = books.seen.borrow().clone();
    for (id, read) in reads {
        let (shopper, cart) = &known[&id];
        let (status, lines, amount) = match read {
            Ok(r) => r,
            Err(e) => {
                violations.push(format!("purchase {id}: {e}"));
                lost += 1;
                continue;
            }
        };
        if let Some((want_lines, want_amount)) = cart
            && (want_lines, *want_amount) != (&lines, amount)
        {
            violations.push(format!(
                "purchase {id}: stored cart {lines:?} ({amount}) != posted {want_lines:?} ({want_amount})"
            ));
        }
        let outcome = match status.as_str() {
            "SUCCEEDED" => Outcome::Succeeded,
            "ROLLED_BACK" => Outcome::RolledBack,
            other => {
                violations.push(format!("purchase {id} is {other}, not terminal"));
                lost += 1;
                continue;
            }
        };
        let terminal = seen.get(&id).map(|s| s.terminal.as_slice()).unwrap_or(&[]);
        match terminal {
            [] => {
                violations.push(format!(
                    "purchase {id}: {status} but its stream never delivered the terminal event"
                ));
                lost += 1;
            }
            [first, rest @ ..] => {
                if *first != outcome {
                    violations.push(format!(
                        "purchase {id}: streamed {first:?}, stored {status}"
                    ));
                }
                if !rest.is_empty() {
                    violations.push(format!(
                        "purchase {id}: terminal event delivered {} times",
                        terminal.len()
                    ));
                    duplicated += rest.len() as u64;
                }
            }
        }
        done.push(Done {
            purchase_id: id,
            shopper: *shopper,
            lines,
            amount,
            outcome,
        });
    }
    let verdict = invariants::check(client, &args.url, shoppers, items, scarce, &done).await?;
    violations.extend(verdict.violations.iter().cloned());
    let succeeded = done
        .iter()
        .filter(|d| d.outcome == Outcome::Succeeded)
        .count() as u64;
    Ok(SurviveReport {
        seconds,
        answered,
        discovered,
        accepted: known.len() as u64,
        completed: done.len() as u64,
        succeeded,
        rolled_back: done.len() as u64 - succeeded,
        lost,
        duplicated,
        out_of_order_frames: books.out_of_order.get(),
        created_beyond_posts: beyond,
        unanswered_posts: unanswered,
        retried_posts: books.retried.get(),
        refused_posts: books.refused.get(),
        busy: books.busy.get(),
        stream_reconnects: books.reconnects.get(),
        longest_outage_ms: books.longest_outage.get().as_millis() as u64,
        invariants: verdict,
        violations,
    })
}

/// The record the crash loop checks the database files against. Ids are strings: they
/// exceed 2^53, where tools that read JSON numbers as doubles (jq) would round them.
fn record(
    books: &Books,
    items: &[Item],
    scarce: &Item,
    report: &SurviveReport,
) -> anyhow::Result<String> {
    let seen = books.seen.borrow();
    let mut customers: BTreeMap<u64, usize> = seen.iter().map(|(id, s)| (*id, s.shopper)).collect();
    for a in books.answered.borrow().iter() {
        customers.insert(a.purchase_id, a.shopper);
    }
    let purchases: Vec<Value> = customers
        .iter()
        .map(|(id, shopper)| {
            let terminal = seen.get(id).map_or(0, |s| s.terminal.len());
            json!({"purchase_id": id.to_string(), "customer": shopper, "terminal_events": terminal})
        })
        .collect();
    let products: Vec<Value> = items
        .iter()
        .chain([scarce])
        .map(|i| json!({"id": i.id.to_string(), "initial_stock": i.stock}))
        .collect();
    Ok(serde_json::to_string_pretty(&json!({
        "products": products,
        "purchases": purchases,
        "accepted": report.accepted,
        "unanswered_posts": report.unanswered_posts,
    }))?)
}
