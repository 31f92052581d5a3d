//! `loadgen --survive-restarts`: the load of the crash loop (`scripts/crashloop.sh`), which
//! kills the server with SIGKILL and restarts it on the same data while purchases run.
//!
//! It is the load every run drives (`load.rs`), with the books every run keeps when a node
//! dies (`books.rs`: streams resume with `Last-Event-ID`, POSTs are sent again only when that
//! is safe), until SIGUSR1 or `--duration`. Then it always fences and audits (`audit.rs`),
//! and reports what was lost or duplicated; `--record` writes what the crash loop checks
//! against the database files.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::{Value, json};

use super::audit::{Audit, audit, fence};
use super::load::{Load, Pace, Plan, run_workers, start};
use super::nodes::NodeReport;
use super::{LoadgenArgs, invariants};

/// What the crash-loop run saw. `violations` empty means nothing was lost or duplicated.
#[derive(Debug, Serialize)]
pub struct SurviveReport {
    /// Seconds from the start of the load to the end of the fence.
    pub seconds: f64,
    /// Purchases answered `201`.
    pub answered: u64,
    /// Purchases created although their POST's answer was lost (found on the stream).
    pub discovered: u64,
    /// `answered + discovered`: every purchase the run created.
    pub accepted: u64,
    /// Accepted purchases found terminal, with their terminal event streamed.
    pub completed: u64,
    /// Of `completed`, those that succeeded.
    pub succeeded: u64,
    /// Of `completed`, those that were compensated.
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
    /// POSTs answered `503` (sent again).
    pub busy: u64,
    /// Requests that got no answer (connection refused or reset, timeout), on any node.
    pub failed_requests: u64,
    /// Result streams that ended and were opened again.
    pub stream_reconnects: u64,
    /// Longest time from a failed request to the next purchase answered `201`.
    pub longest_outage_ms: u64,
    /// What each node served and how often it failed.
    pub nodes: Vec<NodeReport>,
    /// Stock, orders and payments, checked through the API.
    pub invariants: invariants::Verdict,
    /// Everything found wrong, the invariants' findings included; the run fails unless empty.
    pub violations: Vec<String>,
}

/// Runs the crash-loop load and checks it; see the module comment.
pub(super) async fn run(args: &LoadgenArgs) -> anyhow::Result<SurviveReport> {
    let load = Rc::new(start(args).await?);
    // The crash loop starts killing once it reads this line.
    eprintln!("loadgen: load running");
    let started = Instant::now();
    let plan = Plan {
        count: None,
        deadline: started + Duration::from_secs(args.duration),
    };
    let pace = Rc::new(Pace::new()?);
    run_workers(&load, args, plan, &pace, &ProgressBar::hidden()).await?;
    load.books.stop.set(true);
    fence(&load).await?;
    let seconds = started.elapsed().as_secs_f64();
    let report = report(&load, audit(&load).await?, seconds);
    if let Some(path) = &args.record {
        std::fs::write(path, record(&load, &report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.frames {
        std::fs::write(path, frames(&load)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// Every purchase the run knows (answered, or seen on a stream) with the frames its
/// customer's stream delivered for it, in arrival order: `{"<purchase id>": [[event id,
/// step, status], ...]}`. Ids are strings, as in [`record`].
fn frames(load: &Load) -> anyhow::Result<String> {
    let books = &load.books;
    let mut all: super::books::FramesByPurchase = books
        .frames
        .as_ref()
        .map(|f| f.borrow().clone())
        .unwrap_or_default();
    for a in books.answered.borrow().iter() {
        all.entry(a.purchase_id).or_default();
    }
    let by_id: serde_json::Map<String, Value> = all
        .into_iter()
        .map(|(id, frames)| {
            let frames = frames
                .into_iter()
                .map(|(event, step, status)| json!([event.to_string(), step, status]))
                .collect();
            (id.to_string(), Value::Array(frames))
        })
        .collect();
    Ok(serde_json::to_string(&by_id)?)
}

/// The report of a run whose audit is `audit`.
fn report(load: &Load, audit: Audit, seconds: f64) -> SurviveReport {
    let books = &load.books;
    let mut violations = audit.violations;
    violations.extend(audit.verdict.violations.iter().cloned());
    SurviveReport {
        seconds,
        answered: audit.answered,
        discovered: audit.discovered,
        accepted: audit.answered + audit.discovered,
        completed: audit.completed,
        succeeded: audit.succeeded,
        rolled_back: audit.completed - audit.succeeded,
        lost: audit.lost,
        duplicated: audit.duplicated,
        out_of_order_frames: books.out_of_order.get(),
        created_beyond_posts: audit.created_beyond_posts,
        unanswered_posts: books.unanswered.get(),
        retried_posts: books.retried.get(),
        refused_posts: books.refused.get(),
        busy: books.busy.get(),
        failed_requests: load.cluster.nodes.failed_requests(),
        stream_reconnects: books.reconnects.get(),
        longest_outage_ms: books.longest_outage.get().as_millis() as u64,
        nodes: load.cluster.nodes.report(),
        invariants: audit.verdict,
        violations,
    }
}

/// The record the crash loop checks the database files against. Ids are strings: they
/// exceed 2^53, where tools that read JSON numbers as doubles (jq) would round them.
fn record(load: &Load, report: &SurviveReport) -> anyhow::Result<String> {
    let Load {
        books,
        items,
        scarce,
        ..
    } = load;
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
