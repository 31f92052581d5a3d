//! `sagashop loadgen`: drives a running sagashop (one node, or a cluster of nodes that each
//! serve the whole API) through its public API and measures how many purchase sagas per
//! second complete, and how long each takes from `POST /api/purchase` to its terminal SSE
//! event. Ends with a check of every purchase the run created, and of stock, orders and
//! payments.
//!
//! Every run goes the same way, for one URL or many: `load.rs` creates customers and
//! products and runs the workers, `books.rs` keeps the books while nodes may die (streams
//! resume elsewhere with `Last-Event-ID`, purchases move to a live node), `nodes.rs` decides
//! which node each request goes to, and `audit.rs` checks everything at the end.

mod audit;
mod books;
pub mod ceiling;
mod cluster;
mod cpu;
mod inflight;
mod invariants;
mod load;
mod nodes;
pub mod reads;
mod survive;

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use sagashop::secrets::DatabaseUrl;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use audit::Audit;
use load::{Load, Pace, Plan, run_workers};
use nodes::NodeReport;

/// Settings of `sagashop loadgen`.
#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    /// Base URL of the sagashop to drive; several (comma-separated) for a cluster: customer
    /// i buys on node i % N and holds its result stream on node (i+1) % N. A node that stops
    /// answering is passed over (streams resume on another with Last-Event-ID) and tried again
    /// every second.
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 1,
        default_value = "http://127.0.0.1:8000"
    )]
    pub url: Vec<String>,
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
    /// Pid(s) of the sagashop process(es), comma-separated: the report gives their CPU time
    /// per completed saga over the measured window, and the first one's memory (from /proc).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Other processes whose CPU per saga to report, as `NAME=PID` (repeatable): the
    /// database and the bus a cluster saga also costs (`--peer-pid mariadb=123`).
    #[arg(long, value_parser = parse_peer)]
    pub peer_pid: Vec<(String, u32)>,
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
    /// restarted, until SIGUSR1 or `--duration`; then fence, check every purchase the run
    /// created (also those whose answer was lost) and report what was lost or duplicated.
    /// (Every run survives dead nodes; this one reports in detail, and always fences.)
    #[arg(long)]
    pub survive_restarts: bool,
    /// With `--survive-restarts`: write every product's initial stock and every purchase's
    /// outcome to this JSON file, for checks against the database files.
    #[arg(long, requires = "survive_restarts")]
    pub record: Option<std::path::PathBuf>,
    /// With `--survive-restarts`: write every result frame the streams delivered, per
    /// purchase in arrival order, to this JSON file (the failover tests compare it with the
    /// step log: each event exactly once, in order).
    #[arg(long, requires = "survive_restarts")]
    pub frames: Option<std::path::PathBuf>,
    /// Read run: create `--read-products` products, then GET `/api/product/{id}` of random
    /// ones at `--concurrency` for `--duration` seconds; report reads/s, latency, and (with
    /// `--metrics-url`) each cache level's hit ratio and the database reads the cache made.
    #[arg(long)]
    pub reads: bool,
    /// With `--reads`: how many products to read.
    #[arg(long, default_value_t = 1000)]
    pub read_products: usize,
    /// With `--reads`: every node's `/metrics` URL (comma-separated), scraped before and after
    /// the run for the cache levels' hit ratios.
    #[arg(long, value_delimiter = ',', requires = "reads")]
    pub metrics_url: Vec<String>,
}

/// A purchase whose saga reached its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Its payment was created.
    Succeeded,
    /// A step failed and every completed step was compensated.
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
    /// Purchase `purchase_id` reached `outcome`: wakes its waiter, or keeps it for one.
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

    /// Resolves with the purchase's outcome (at once when it already arrived).
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
    /// The nodes driven, comma-separated as `--url` takes them.
    pub url: String,
    /// What each node served and how often it failed, in `--url` order.
    pub nodes: Vec<NodeReport>,
    /// Purchases in flight at once.
    pub concurrency: usize,
    /// Share of purchases built to fail on stock.
    pub fail_ratio: f64,
    /// Seconds the load ran (the check at the end not included).
    pub seconds: f64,
    /// Purchases the workers saw end (their terminal event arrived).
    pub completed: u64,
    /// Of `completed`, those that succeeded.
    pub succeeded: u64,
    /// Of `completed`, those that were compensated.
    pub rolled_back: u64,
    /// Purchases refused: answered with neither `201` nor `503`.
    pub errors: u64,
    /// Purchases answered `503` (sent again).
    pub busy: u64,
    /// Accepted purchases whose terminal event did not arrive in time.
    pub timeouts: u64,
    /// Requests that got no answer (connection refused or reset, timeout), on any node.
    pub failed_requests: u64,
    /// Purchase POSTs whose answer was lost: not sent again (they may have bought).
    pub unanswered_posts: u64,
    /// Of those, purchases that had been created, found by the check at the end.
    pub discovered: u64,
    /// Result streams that ended and were opened again (on another node if theirs died).
    pub stream_reconnects: u64,
    /// `completed` per second of load.
    pub sagas_per_second: f64,
    /// From the first POST of a purchase to its terminal event.
    pub latency_ms: Latency,
    /// The check at the end (`None` with `--no-check`): every purchase the run created,
    /// then stock, orders and payments.
    pub invariants: Option<invariants::Verdict>,
    /// The server's memory (the first `--server-pid`).
    pub server_memory: Option<Value>,
    /// CPU time per completed saga during the load (not setup or check).
    pub cpu_per_saga: CpuPerSaga,
}

/// Milliseconds of CPU per completed saga: of the `--server-pid` processes together, and
/// of the load generator itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuPerSaga {
    pub server_ms: Option<f64>,
    pub loadgen_ms: Option<f64>,
    /// Each `--peer-pid` by name.
    pub peers_ms: std::collections::BTreeMap<String, Option<f64>>,
}

/// `NAME=PID` of `--peer-pid`.
fn parse_peer(text: &str) -> Result<(String, u32), String> {
    let (name, pid) = text.split_once('=').ok_or("use NAME=PID")?;
    let pid = pid.parse().map_err(|_| format!("not a pid: {pid}"))?;
    Ok((name.to_owned(), pid))
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// The resident memory of process `pid` (now and at its peak, in MiB, from /proc): what a
/// benchmark reports of the server it drives.
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
    if args.reads {
        let report = reads::run(&args).await?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{}", reads::render_text(&report));
        }
        if report.wrong > 0 {
            bail!("{} reads answered wrong", report.wrong);
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
        println!("{}", render_text(&report));
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

/// Runs the load and returns its figures (what `run` prints).
pub async fn drive(args: &LoadgenArgs) -> anyhow::Result<Report> {
    let load = Rc::new(load::start(args).await?);
    let progress = progress_bar(args);
    let pace = Rc::new(Pace::new()?);
    let started = Instant::now();
    let server_cpu = cpu::CpuMeter::start(&args.server_pid);
    let own_cpu = cpu::CpuMeter::start(&[std::process::id()]);
    let peer_cpu: Vec<(&str, cpu::CpuMeter)> = (args.peer_pid.iter())
        .map(|(name, pid)| (name.as_str(), cpu::CpuMeter::start(&[*pid])))
        .collect();
    let deadline = started + Duration::from_secs(args.duration);
    if args.count.is_none() {
        tick(&progress, &pace, started, deadline);
    }
    let plan = Plan {
        count: args.count,
        deadline,
    };
    run_workers(&load, args, plan, &pace, &progress).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = CpuPerSaga {
        server_ms: server_cpu.ms_per(pace.completed()),
        loadgen_ms: own_cpu.ms_per(pace.completed()),
        peers_ms: (peer_cpu.iter())
            .map(|(name, meter)| (name.to_string(), meter.ms_per(pace.completed())))
            .collect(),
    };
    progress.finish_and_clear();
    let audit = match args.no_check {
        true => None,
        false => Some(check(&load).await?),
    };
    Ok(Report {
        cpu_per_saga: cpu,
        ..report(args, &load, &pace, seconds, audit)
    })
}

/// The end-of-run check: a fence when some POST lost its answer (its purchase may exist
/// unseen), then the audit of every purchase the run created.
async fn check(load: &Load) -> anyhow::Result<Audit> {
    if load.books.unanswered.get() > 0 {
        audit::fence(load).await?;
    }
    audit::audit(load).await
}

/// A progress bar over `--count` purchases or `--duration` seconds; hidden with `--json`.
fn progress_bar(args: &LoadgenArgs) -> ProgressBar {
    if args.json {
        return ProgressBar::hidden();
    }
    let progress = ProgressBar::new(args.count.unwrap_or(args.duration));
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    progress
}

/// Moves a `--duration` run's progress bar every second, with the rate so far.
fn tick(progress: &ProgressBar, pace: &Rc<Pace>, started: Instant, deadline: Instant) {
    let (progress, pace) = (progress.clone(), pace.clone());
    actix_rt::spawn(async move {
        while Instant::now() < deadline {
            actix_rt::time::sleep(Duration::from_secs(1)).await;
            let len = progress.length().unwrap_or(0);
            progress.set_position(started.elapsed().as_secs().min(len));
            let rate = pace.completed() as f64 / started.elapsed().as_secs_f64();
            progress.set_message(format!("{rate:.0} sagas/s"));
        }
    });
}

/// The figures of a run: the workers' `pace`, the books, and the check's `audit`.
fn report(
    args: &LoadgenArgs,
    load: &Load,
    pace: &Pace,
    seconds: f64,
    audit: Option<Audit>,
) -> Report {
    let h = pace.latency_us.borrow();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let (books, nodes) = (&load.books, &load.cluster.nodes);
    let completed = pace.completed();
    Report {
        url: nodes.urls(),
        nodes: nodes.report(),
        concurrency: args.concurrency,
        fail_ratio: args.fail_ratio,
        seconds,
        completed,
        succeeded: pace.succeeded.get(),
        rolled_back: pace.rolled_back.get(),
        errors: books.refused.get(),
        busy: books.busy.get(),
        timeouts: pace.timeouts.get(),
        failed_requests: nodes.failed_requests(),
        unanswered_posts: books.unanswered.get(),
        discovered: audit.as_ref().map_or(0, |a| a.discovered),
        stream_reconnects: books.reconnects.get(),
        sagas_per_second: completed as f64 / seconds,
        latency_ms: Latency {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            max: h.max() as f64 / 1000.0,
        },
        invariants: audit.map(Audit::into_verdict),
        server_memory: args.server_pid.first().copied().and_then(server_memory),
        cpu_per_saga: CpuPerSaga::default(),
    }
}

/// The text report (without `--json`).
fn render_text(r: &Report) -> String {
    let mut out = vec![
        format!(
            "sagashop loadgen against {} (concurrency {}, {:.0}% built to fail)",
            r.url,
            r.concurrency,
            r.fail_ratio * 100.0
        ),
        format!(
            "  completed sagas/s : {:.1} ({} in {:.1} s)",
            r.sagas_per_second, r.completed, r.seconds
        ),
        format!(
            "  outcomes          : {} succeeded, {} rolled back",
            r.succeeded, r.rolled_back
        ),
        format!(
            "  errors            : {} failed requests (no answer), {} refused, {} busy (503), {} timed out",
            r.failed_requests, r.errors, r.busy, r.timeouts
        ),
        format!(
            "  answers lost      : {} purchases ({} of them created), {} stream reconnects",
            r.unanswered_posts, r.discovered, r.stream_reconnects
        ),
    ];
    if r.nodes.len() > 1 {
        out.push("  nodes             :".to_owned());
        out.extend(r.nodes.iter().map(|n| {
            format!(
                "    {} : {} answered, {} failed requests, {} streams",
                n.url, n.answered, n.failed_requests, n.streams
            )
        }));
    }
    out.push(format!(
        "  latency (ms)      : p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.latency_ms.max
    ));
    if let Some(m) = &r.server_memory {
        out.push(format!("  server memory     : {m}"));
    }
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
    let peers: String = (r.cpu_per_saga.peers_ms.iter())
        .map(|(name, v)| format!("  {name} {}", ms(*v)))
        .collect();
    out.push(format!(
        "  CPU ms per saga   : server {}  loadgen {}{peers}",
        ms(r.cpu_per_saga.server_ms),
        ms(r.cpu_per_saga.loadgen_ms)
    ));
    out.extend(render_verdict(r.invariants.as_ref()));
    out.join("\n")
}

/// The invariants' lines of the text report.
fn render_verdict(verdict: Option<&invariants::Verdict>) -> Vec<String> {
    match verdict {
        Some(v) if v.violations.is_empty() => vec![format!(
            "  invariants        : OK ({} purchases, {} products checked)",
            v.purchases_checked, v.products_checked
        )],
        Some(v) => std::iter::once(format!(
            "  invariants        : {} VIOLATIONS",
            v.violations.len()
        ))
        .chain(v.violations.iter().take(10).map(|l| format!("    - {l}")))
        .collect(),
        None => vec!["  invariants        : not checked".to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(nodes: Vec<NodeReport>) -> Report {
        Report {
            url: nodes
                .iter()
                .map(|n| n.url.as_str())
                .collect::<Vec<_>>()
                .join(","),
            failed_requests: nodes.iter().map(|n| n.failed_requests).sum(),
            nodes,
            concurrency: 4,
            fail_ratio: 0.1,
            seconds: 2.0,
            completed: 10,
            succeeded: 9,
            rolled_back: 1,
            errors: 0,
            busy: 0,
            timeouts: 0,
            unanswered_posts: 1,
            discovered: 1,
            stream_reconnects: 2,
            sagas_per_second: 5.0,
            latency_ms: Latency {
                p50: 1.0,
                p90: 2.0,
                p99: 3.0,
                max: 4.0,
            },
            invariants: None,
            server_memory: None,
            cpu_per_saga: CpuPerSaga::default(),
        }
    }

    fn node(url: &str, answered: u64, failed_requests: u64, streams: u64) -> NodeReport {
        NodeReport {
            url: url.to_owned(),
            answered,
            failed_requests,
            streams,
        }
    }

    #[test]
    fn the_text_report_shows_failed_requests_and_each_node_of_a_cluster() {
        let text = render_text(&report(vec![
            node("http://a:1", 50, 0, 1),
            node("http://b:2", 0, 7, 0),
        ]));
        assert!(text.contains("against http://a:1,http://b:2"), "{text}");
        assert!(text.contains("7 failed requests (no answer)"), "{text}");
        assert!(text.contains("1 purchases (1 of them created), 2 stream reconnects"));
        assert!(text.contains("http://b:2 : 0 answered, 7 failed requests, 0 streams"));
        assert!(text.contains("invariants        : not checked"), "{text}");
    }

    #[test]
    fn the_text_report_of_one_node_has_no_node_list() {
        let text = render_text(&report(vec![node("http://a:1", 50, 2, 1)]));
        assert!(text.contains("2 failed requests (no answer)"), "{text}");
        assert!(!text.contains("nodes"), "{text}");
    }
}
