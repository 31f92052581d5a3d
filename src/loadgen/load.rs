//! The load itself, the same for every run and any number of nodes: customers and products
//! are created, every customer's result stream follows it (`books::follow`), and workers buy
//! and wait for each purchase's terminal event until the run's plan says stop.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use awc::http::Method;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::books::{Books, SETTLE, buy, follow, settle};
use super::cluster::{Cluster, client};
use super::nodes::Nodes;
use super::{Item, LoadgenArgs, Outcome, Shopper, cart};

/// What every run drives: the cluster, its customers (each with its stream followed), the
/// products, and the books.
pub(crate) struct Load {
    pub(crate) cluster: Cluster,
    pub(crate) books: Rc<Books>,
    pub(crate) shoppers: Vec<Shopper>,
    pub(crate) items: Vec<Item>,
    pub(crate) scarce: Item,
}

/// Creates the customers and products, opens every customer's result stream, and makes
/// SIGUSR1 stop the load (the crash loop and the tests end a run that way).
pub(crate) async fn start(args: &LoadgenArgs) -> anyhow::Result<Load> {
    let nodes = Rc::new(Nodes::parse(&args.url)?);
    let cluster = Cluster {
        client: client(args.concurrency),
        nodes,
    };
    let (shoppers, items, scarce) = setup(&cluster, args).await?;
    let books = match args.frames {
        Some(_) => Books::new(shoppers.len()).keeping_frames(),
        None => Books::new(shoppers.len()),
    };
    let books = Rc::new(books);
    stop_on_sigusr1(&books)?;
    for (i, s) in shoppers.iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        actix_rt::spawn(follow(
            books.clone(),
            cluster.clone(),
            s.token.clone(),
            i,
            tx,
        ));
        rx.await.context("result stream")?;
    }
    Ok(Load {
        cluster,
        books,
        shoppers,
        items,
        scarce,
    })
}

fn stop_on_sigusr1(books: &Rc<Books>) -> anyhow::Result<()> {
    let books = books.clone();
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    actix_rt::spawn(async move {
        usr1.recv().await;
        books.stop.set(true);
    });
    Ok(())
}

/// Signs up `args.customers` customers (each on its own node) and creates the products
/// (spread over the nodes); the scarce product has 1 unit, for purchases built to fail.
/// Creates something the load needs (`POST path` answered 201), on `preferred` or the next
/// live node. A POST whose answer was lost (the node died or stalls) may have created it, so
/// it is not sent again as it was: the next attempt goes to another node with a fresh name
/// from `body(attempt)`, and what the lost one made, if anything, is left unused.
async fn create_anew(
    cluster: &Cluster,
    preferred: usize,
    path: &str,
    body: impl Fn(usize) -> Value,
) -> anyhow::Result<Value> {
    let mut failed = None;
    for attempt in 0..cluster.nodes.len() {
        match cluster
            .request(preferred, Method::POST, path, None, Some(&body(attempt)))
            .await
        {
            Ok((201, v)) => return Ok(v),
            Ok((status, v)) => bail!("POST {path} answered {status}: {v}"),
            Err(e) => failed = Some(e),
        }
    }
    Err(failed.expect("at least one node"))
}

async fn setup(
    cluster: &Cluster,
    args: &LoadgenArgs,
) -> anyhow::Result<(Vec<Shopper>, Vec<Item>, Item)> {
    let run = sagashop::clock::Clock::system().now_ms();
    let mut shoppers = Vec::new();
    for i in 0..args.customers {
        let path = "/api/account/auth/signup";
        let v = create_anew(cluster, cluster.nodes.home(i), path, |n| {
            json!({"password":"loadgen-pass","firstname":"load","lastname":"gen","email":format!("loadgen-{run}-{i}-{n}@example.com"),"address":"bench","phone_number":format!("{run}{i}{n}")})
        })
        .await?;
        let token = v["access_token"].as_str().context("access_token")?;
        shoppers.push(Shopper {
            token: token.to_owned(),
        });
    }
    let create = async |node: usize, name: String, price: i64, stock: i64| {
        let v = create_anew(cluster, node, "/api/product", |n| {
            json!({"name":format!("{name}-{n}"),"description":"loadgen","brand_name":"loadgen","price":price,"inventory":stock})
        })
        .await?;
        Ok::<_, anyhow::Error>(Item {
            id: v["id"].as_u64().context("id")?,
            price,
            stock,
        })
    };
    let mut items = Vec::new();
    for i in 0..args.products {
        items.push(create(i, format!("loadgen-{run}-{i}"), 10 + i as i64, args.stock).await?);
    }
    // Purchases built to fail ask for 2 units of this product, which has 1.
    let scarce = create(args.products, format!("loadgen-{run}-scarce"), 1, 1).await?;
    Ok((shoppers, items, scarce))
}

/// When the workers stop starting purchases: once `count` were started, else at
/// `deadline`; in any case on SIGUSR1 (or when every node stayed down too long).
pub(crate) struct Plan {
    pub(crate) count: Option<u64>,
    pub(crate) deadline: Instant,
}

/// What the workers measured: purchases started, and the outcome and latency (from the
/// first POST to the terminal event) of each that was accepted.
pub(crate) struct Pace {
    started: Cell<u64>,
    pub(crate) succeeded: Cell<u64>,
    pub(crate) rolled_back: Cell<u64>,
    /// Accepted purchases whose terminal event did not come within `SETTLE`.
    pub(crate) timeouts: Cell<u64>,
    pub(crate) latency_us: RefCell<Histogram<u64>>,
}

impl Pace {
    /// Nothing measured yet.
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Pace {
            started: Cell::new(0),
            succeeded: Cell::new(0),
            rolled_back: Cell::new(0),
            timeouts: Cell::new(0),
            latency_us: RefCell::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
        })
    }

    /// Purchases that reached their terminal event.
    pub(crate) fn completed(&self) -> u64 {
        self.succeeded.get() + self.rolled_back.get()
    }

    /// Takes the next purchase to start, unless the plan says stop.
    fn start_one(&self, plan: &Plan, books: &Books) -> bool {
        let over = books.stop.get()
            || match plan.count {
                Some(n) => self.started.get() >= n,
                None => Instant::now() >= plan.deadline,
            };
        if !over {
            Books::bump(&self.started);
        }
        !over
    }

    /// A purchase started `took` ago ended with `outcome` (`None`: it did not end in time).
    fn finished(&self, outcome: Option<Outcome>, took: Duration) {
        let counter = match outcome {
            Some(Outcome::Succeeded) => &self.succeeded,
            Some(Outcome::RolledBack) => &self.rolled_back,
            None => return Books::bump(&self.timeouts),
        };
        Books::bump(counter);
        let _ = self
            .latency_us
            .borrow_mut()
            .record((took.as_micros() as u64).max(1));
    }
}

/// Runs `args.concurrency` workers until `plan` says stop and every purchase they started
/// has ended, measuring into `pace` (with a `count`, `progress` ticks once per purchase that
/// ended). Fails when every node stayed down for `SETTLE`.
pub(crate) async fn run_workers(
    load: &Rc<Load>,
    args: &LoadgenArgs,
    plan: Plan,
    pace: &Rc<Pace>,
    progress: &ProgressBar,
) -> anyhow::Result<()> {
    let plan = Rc::new(plan);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            let (load, plan, pace) = (load.clone(), plan.clone(), pace.clone());
            let work = worker(load, w, plan, pace, progress.clone(), args.fail_ratio);
            actix_rt::spawn(work)
        })
        .collect();
    for w in workers {
        w.await?;
    }
    anyhow::ensure!(
        !load.books.gave_up.get(),
        "no node accepted a purchase for {SETTLE:?} ({})",
        load.cluster.nodes.urls()
    );
    Ok(())
}

/// Worker `w`: buys random carts one after another, each waited for until it ends.
async fn worker(
    load: Rc<Load>,
    w: usize,
    plan: Rc<Plan>,
    pace: Rc<Pace>,
    progress: ProgressBar,
    fail_ratio: f64,
) {
    let mut rng = rand::rng();
    let Load {
        cluster,
        books,
        shoppers,
        items,
        scarce,
    } = &*load;
    while pace.start_one(&plan, books) {
        let cart = cart(&mut rng, w, shoppers.len(), items, scarce, fail_ratio);
        let t0 = Instant::now();
        let token = &shoppers[cart.shopper].token;
        let Some(id) = buy(books, cluster, token, &cart).await else {
            continue;
        };
        pace.finished(settle(books, id).await, t0.elapsed());
        if plan.count.is_some() {
            progress.inc(1);
        }
    }
}
