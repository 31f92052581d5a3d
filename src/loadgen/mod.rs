//! `sagashop loadgen`: drives a running sagashop through its public API and measures how many
//! purchase sagas per second complete, and how long each takes from `POST /api/purchase` to
//! its terminal SSE event. Ends with an invariant check of stock, orders and payments.

pub mod ceiling;
mod inflight;
mod invariants;
mod survive;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use awc::Client;
use clap::Args;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use sagashop::secrets::DatabaseUrl;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use sagashop::sse_client::{Frame, Parser as FrameParser};

/// Settings of `sagashop loadgen`.
#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    /// Base URL of the sagashop to drive.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// Customers to create (each with its own SSE stream).
    #[arg(long, default_value_t = 16)]
    pub customers: usize,
    /// Products to create.
    #[arg(long, default_value_t = 16)]
    pub products: usize,
    /// Initial stock of each product.
    #[arg(long, default_value_t = 100_000_000)]
    pub stock: i64,
    /// Purchases in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to run (ignored when --count is given).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Purchases to complete, then stop.
    #[arg(long)]
    pub count: Option<u64>,
    /// Share of purchases built to fail on stock (and so compensate), 0.0-1.0.
    #[arg(long, default_value_t = 0.1)]
    pub fail_ratio: f64,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Skip the invariant check at the end.
    #[arg(long)]
    pub no_check: bool,
    /// Pid of the sagashop process, to report its memory (from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Measure the store's raw durable commit rate instead of driving sagashop.
    #[arg(long)]
    pub ceiling: bool,
    /// Store the ceiling probe writes to: `mysql://...` or a SQLite path (default: a temp file).
    #[arg(long)]
    pub ceiling_url: Option<DatabaseUrl>,
    /// Sagas-in-flight run: fire this many purchases without waiting for them (the server
    /// runs with `--hold-payments`), read its memory, release it with SIGUSR1
    /// (`--server-pid`), and wait for every saga to finish.
    #[arg(long)]
    pub inflight: Option<u64>,
    /// Crash-loop run (scripts/crashloop.sh): keep going while the server is killed and
    /// restarted, resuming streams with `Last-Event-ID`, until SIGUSR1 or `--duration`; then
    /// settle, check every purchase the run created (also those whose answer was lost) and
    /// report what was lost or duplicated.
    #[arg(long)]
    pub survive_restarts: bool,
    /// With `--survive-restarts`: write every product's initial stock and every purchase's
    /// outcome to this JSON file, for checks against the database files.
    #[arg(long, requires = "survive_restarts")]
    pub record: Option<std::path::PathBuf>,
}

/// A purchase whose saga reached its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    Succeeded,
    RolledBack,
}

/// One customer the load runs as.
#[derive(Debug, Clone)]
pub(crate) struct Shopper {
    pub(crate) token: String,
}

/// A product the load buys.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) id: u64,
    pub(crate) price: i64,
    stock: i64,
}

/// A completed purchase, kept for the invariant check.
#[derive(Debug, Clone)]
pub(crate) struct Done {
    pub(crate) purchase_id: u64,
    pub(crate) shopper: usize,
    pub(crate) lines: Vec<(u64, i64)>,
    pub(crate) amount: i64,
    pub(crate) outcome: Outcome,
}

/// Matches terminal SSE events to the purchases waiting for them (events may beat the POST's
/// response, so early ones are kept).
#[derive(Default)]
pub(crate) struct Tracker {
    waiting: HashMap<u64, oneshot::Sender<Outcome>>,
    early: HashMap<u64, Outcome>,
}

impl Tracker {
    pub(crate) fn finished(&mut self, purchase_id: u64, outcome: Outcome) {
        match self.waiting.remove(&purchase_id) {
            Some(tx) => {
                let _ = tx.send(outcome);
            }
            None => {
                self.early.insert(purchase_id, outcome);
            }
        }
    }

    pub(crate) fn wait_for(&mut self, purchase_id: u64) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        match self.early.remove(&purchase_id) {
            Some(outcome) => {
                let _ = tx.send(outcome);
            }
            None => {
                self.waiting.insert(purchase_id, tx);
            }
        }
        rx
    }
}

/// What one purchase asks for: its customer, its lines, what it costs and the request body.
pub(crate) struct Cart {
    pub(crate) shopper: usize,
    pub(crate) lines: Vec<(u64, i64)>,
    pub(crate) amount: i64,
    pub(crate) body: Value,
}

/// A random purchase for worker `w`: `fail_ratio` of them ask for 2 units of the scarce
/// product (which has 1) and so fail on stock, the others 1-3 units of a plentiful one.
pub(crate) fn cart(
    rng: &mut impl Rng,
    w: usize,
    shoppers: usize,
    items: &[Item],
    scarce: &Item,
    fail_ratio: f64,
) -> Cart {
    let shopper = (w + rng.random_range(0..shoppers)) % shoppers;
    let lines: Vec<(u64, i64)> = if rng.random_bool(fail_ratio.clamp(0.0, 1.0)) {
        vec![(scarce.id, 2)]
    } else {
        let item = &items[rng.random_range(0..items.len())];
        vec![(item.id, rng.random_range(1..=3))]
    };
    let price = |id: u64| {
        items
            .iter()
            .chain([scarce])
            .find(|i| i.id == id)
            .map_or(0, |i| i.price)
    };
    let amount = lines.iter().map(|(id, n)| price(*id) * n).sum();
    let body = json!({
        "purchase_items": lines.iter().map(|(id, n)| json!({"product_id": id, "amount": n})).collect::<Vec<_>>(),
        "payment": {"currency_code": "NT"}
    });
    Cart {
        shopper,
        lines,
        amount,
        body,
    }
}

/// The outcome a result frame's data announces, when it is a saga's terminal event.
pub(crate) fn outcome_of(data: &Value) -> Option<Outcome> {
    match (data["step"].as_str(), data["status"].as_str()) {
        (Some("CREATE_PAYMENT"), Some("STATUS_SUCCESS")) => Some(Outcome::Succeeded),
        (Some("UPDATE_PRODUCT_INVENTORY"), Some("STATUS_ROLLBACKED")) => Some(Outcome::RolledBack),
        _ => None,
    }
}

/// The run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub concurrency: usize,
    pub fail_ratio: f64,
    pub seconds: f64,
    pub completed: u64,
    pub succeeded: u64,
    pub rolled_back: u64,
    pub errors: u64,
    pub busy: u64,
    pub timeouts: u64,
    pub sagas_per_second: f64,
    pub latency_ms: Latency,
    pub invariants: Option<invariants::Verdict>,
    pub server_memory: Option<Value>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Default)]
struct Counters {
    issued: u64,
    errors: u64,
    busy: u64,
    timeouts: u64,
    done: Vec<Done>,
}

pub(crate) fn client(concurrency: usize) -> Client {
    let connector = awc::Connector::new().limit(concurrency * 2 + 64);
    Client::builder()
        .connector(connector)
        .timeout(Duration::from_secs(60))
        .finish()
}

pub(crate) async fn call(
    client: &Client,
    method: awc::http::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    let mut res = match body {
        Some(b) => req.send_body(b.to_string()).await,
        None => req.send().await,
    }
    .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let bytes = res.body().limit(16 << 20).await?;
    Ok((
        res.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

pub(crate) async fn setup(
    client: &Client,
    args: &LoadgenArgs,
) -> anyhow::Result<(Vec<Shopper>, Vec<Item>, Item)> {
    let run = sagashop::clock::Clock::system().now_ms();
    let mut shoppers = Vec::new();
    for i in 0..args.customers {
        let body = json!({"password":"loadgen-pass","firstname":"load","lastname":"gen","email":format!("loadgen-{run}-{i}@example.com"),"address":"bench","phone_number":format!("{run}{i}")});
        let (status, v) = call(
            client,
            awc::http::Method::POST,
            &format!("{}/api/account/auth/signup", args.url),
            None,
            Some(&body),
        )
        .await?;
        if status != 201 {
            bail!("signup answered {status}: {v}");
        }
        shoppers.push(Shopper {
            token: v["access_token"]
                .as_str()
                .context("access_token")?
                .to_owned(),
        });
    }
    let create = async |name: String, price: i64, stock: i64| -> anyhow::Result<Item> {
        let body = json!({"name":name,"description":"loadgen","brand_name":"loadgen","price":price,"inventory":stock});
        let (status, v) = call(
            client,
            awc::http::Method::POST,
            &format!("{}/api/product", args.url),
            None,
            Some(&body),
        )
        .await?;
        if status != 201 {
            bail!("product create answered {status}: {v}");
        }
        Ok(Item {
            id: v["id"].as_u64().context("id")?,
            price,
            stock,
        })
    };
    let mut items = Vec::new();
    for i in 0..args.products {
        items.push(create(format!("loadgen-{run}-{i}"), 10 + i as i64, args.stock).await?);
    }
    // Purchases built to fail ask for 2 units of this product, which has 1.
    let scarce = create(format!("loadgen-{run}-scarce"), 1, 1).await?;
    Ok((shoppers, items, scarce))
}

/// Opens a customer's result stream; resolves once it is subscribed, then keeps feeding the
/// tracker with terminal events.
pub(crate) async fn watch(
    client: Client,
    url: String,
    token: String,
    tracker: Rc<RefCell<Tracker>>,
) -> anyhow::Result<()> {
    let mut res = client
        .get(format!("{url}/api/purchase/result"))
        .timeout(Duration::from_secs(24 * 3600))
        .insert_header(("Accept", "text/event-stream"))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("result stream: {e}"))?;
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    actix_rt::spawn(async move {
        read_stream(&mut res, &mut Some(ready_tx), |frame| {
            let Ok(v) = serde_json::from_str::<Value>(&frame.data) else {
                return;
            };
            if let (Some(outcome), Some(id)) = (outcome_of(&v), v["purchase_id"].as_u64()) {
                tracker.borrow_mut().finished(id, outcome);
            }
        })
        .await;
    });
    ready_rx
        .await
        .context("result stream closed before it was subscribed")?;
    Ok(())
}

/// Reads a result stream until it ends: fires `ready` at its `data: null` (subscribed) and
/// hands every other frame to `on_frame`.
pub(crate) async fn read_stream<S, E>(
    body: &mut S,
    ready: &mut Option<oneshot::Sender<()>>,
    mut on_frame: impl FnMut(&Frame),
) where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    let mut parser = FrameParser::default();
    while let Some(Ok(chunk)) = body.next().await {
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

pub(crate) fn server_memory(pid: u32) -> Option<Value> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb as f64 / 1024.0)
    };
    Some(json!({"rss_mib": field("VmRSS:"), "peak_rss_mib": field("VmHWM:")}))
}

/// Runs the load (or the ceiling probe) and prints the report.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    if args.ceiling {
        let duration = Duration::from_secs(args.duration);
        let c = ceiling::probe(args.ceiling_url.as_ref(), args.concurrency, 8, duration).await?;
        if args.json {
            println!("{}", serde_json::to_string(&c)?);
        } else {
            println!(
                "ceiling ({}): {:.0} durable commits/s at concurrency {} ({} commits in {:.1} s)",
                c.backend, c.commits_per_second, c.concurrency, c.commits, c.seconds
            );
        }
        return Ok(());
    }
    if args.survive_restarts {
        let report = survive::run(&args).await?;
        println!("{}", serde_json::to_string(&report)?);
        if !report.violations.is_empty() {
            bail!(
                "{} violations: {:?}",
                report.violations.len(),
                report.violations
            );
        }
        return Ok(());
    }
    if let Some(n) = args.inflight {
        let report = inflight::run(&args, n).await?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let report = drive(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    if report
        .invariants
        .as_ref()
        .is_some_and(|v| !v.violations.is_empty())
    {
        bail!("invariant violations");
    }
    Ok(())
}

/// What every run starts from: a client, customers with their streams open, products.
pub(crate) struct Setup {
    client: Client,
    shoppers: Vec<Shopper>,
    items: Vec<Item>,
    scarce: Item,
    tracker: Rc<RefCell<Tracker>>,
}

/// Creates the customers and products and opens every customer's result stream.
pub(crate) async fn prepare(args: &LoadgenArgs) -> anyhow::Result<Setup> {
    let client = client(args.concurrency);
    let (shoppers, items, scarce) = setup(&client, args).await?;
    let tracker = Rc::new(RefCell::new(Tracker::default()));
    for s in &shoppers {
        watch(
            client.clone(),
            args.url.clone(),
            s.token.clone(),
            tracker.clone(),
        )
        .await?;
    }
    Ok(Setup {
        client,
        shoppers,
        items,
        scarce,
        tracker,
    })
}

/// Runs the load and returns its figures (what `run` prints).
pub async fn drive(args: &LoadgenArgs) -> anyhow::Result<Report> {
    let Setup {
        client,
        shoppers,
        items,
        scarce,
        tracker,
    } = prepare(args).await?;

    let progress = if args.json {
        ProgressBar::hidden()
    } else {
        match args.count {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new(args.duration),
        }
    };
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let histogram = Rc::new(RefCell::new(Histogram::<u64>::new_with_bounds(
        1,
        600_000_000,
        3,
    )?));
    let counters = Rc::new(RefCell::new(Counters::default()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (client, url) = (client.clone(), args.url.clone());
        let (shoppers, items, scarce) = (shoppers.clone(), items.clone(), scarce.clone());
        let (tracker, histogram, counters, progress) = (
            tracker.clone(),
            histogram.clone(),
            counters.clone(),
            progress.clone(),
        );
        let (count, fail_ratio) = (args.count, args.fail_ratio);
        workers.push(actix_rt::spawn(async move {
            let mut rng = rand::rng();
            loop {
                {
                    let mut c = counters.borrow_mut();
                    let over = match count {
                        Some(n) => c.issued >= n,
                        None => Instant::now() >= deadline,
                    };
                    if over {
                        break;
                    }
                    c.issued += 1;
                }
                let Cart {
                    shopper,
                    lines,
                    amount,
                    body,
                } = cart(&mut rng, w, shoppers.len(), &items, &scarce, fail_ratio);
                let t0 = Instant::now();
                let reply = call(
                    &client,
                    awc::http::Method::POST,
                    &format!("{url}/api/purchase"),
                    Some(&shoppers[shopper].token),
                    Some(&body),
                )
                .await;
                let purchase_id = match reply {
                    Ok((201, v)) => v["purchase_id"].as_u64().unwrap_or(0),
                    Ok((503, _)) => {
                        counters.borrow_mut().busy += 1;
                        actix_rt::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    _ => {
                        counters.borrow_mut().errors += 1;
                        continue;
                    }
                };
                let wait = tracker.borrow_mut().wait_for(purchase_id);
                match actix_rt::time::timeout(Duration::from_secs(60), wait).await {
                    Ok(Ok(outcome)) => {
                        let us = t0.elapsed().as_micros() as u64;
                        let _ = histogram.borrow_mut().record(us.max(1));
                        counters.borrow_mut().done.push(Done {
                            purchase_id,
                            shopper,
                            lines,
                            amount,
                            outcome,
                        });
                        if count.is_some() {
                            progress.inc(1);
                        }
                    }
                    _ => counters.borrow_mut().timeouts += 1,
                }
            }
        }));
    }
    if args.count.is_none() {
        let progress = progress.clone();
        let counters = counters.clone();
        actix_rt::spawn(async move {
            while Instant::now() < deadline {
                actix_rt::time::sleep(Duration::from_secs(1)).await;
                progress.set_position(
                    started
                        .elapsed()
                        .as_secs()
                        .min(progress.length().unwrap_or(0)),
                );
                let n = counters.borrow().done.len() as f64;
                progress.set_message(format!(
                    "{:.0} sagas/s",
                    n / started.elapsed().as_secs_f64()
                ));
            }
        });
    }
    for w in workers {
        w.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();

    let c = std::mem::take(&mut *counters.borrow_mut());
    let h = histogram.borrow().clone();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let succeeded = c
        .done
        .iter()
        .filter(|d| d.outcome == Outcome::Succeeded)
        .count() as u64;
    let completed = c.done.len() as u64;
    let invariants = if args.no_check {
        None
    } else {
        Some(invariants::check(&client, &args.url, &shoppers, &items, &scarce, &c.done).await?)
    };
    Ok(Report {
        url: args.url.clone(),
        concurrency: args.concurrency,
        fail_ratio: args.fail_ratio,
        seconds,
        completed,
        succeeded,
        rolled_back: completed - succeeded,
        errors: c.errors,
        busy: c.busy,
        timeouts: c.timeouts,
        sagas_per_second: completed as f64 / seconds,
        latency_ms: Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            max: h.max() as f64 / 1000.0,
        },
        invariants,
        server_memory: args.server_pid.and_then(server_memory),
    })
}

fn print_text(r: &Report) {
    println!(
        "sagashop loadgen against {} (concurrency {}, {:.0}% built to fail)",
        r.url,
        r.concurrency,
        r.fail_ratio * 100.0
    );
    println!(
        "  completed sagas/s : {:.1} ({} in {:.1} s)",
        r.sagas_per_second, r.completed, r.seconds
    );
    println!(
        "  outcomes          : {} succeeded, {} rolled back",
        r.succeeded, r.rolled_back
    );
    println!(
        "  errors            : {} failed requests, {} busy (503), {} timed out",
        r.errors, r.busy, r.timeouts
    );
    println!(
        "  latency (ms)      : p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.latency_ms.max
    );
    if let Some(m) = &r.server_memory {
        println!("  server memory     : {m}");
    }
    match &r.invariants {
        Some(v) if v.violations.is_empty() => println!(
            "  invariants        : OK ({} purchases, {} products checked)",
            v.purchases_checked, v.products_checked
        ),
        Some(v) => {
            println!("  invariants        : {} VIOLATIONS", v.violations.len());
            for line in v.violations.iter().take(10) {
                println!("    - {line}");
            }
        }
        None => println!("  invariants        : not checked"),
    }
}
