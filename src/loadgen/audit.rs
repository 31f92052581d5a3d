//! The end of a run: find every purchase it created, also those whose POST lost its answer,
//! and check each through the API of whichever nodes are alive.
//!
//! - **The fence.** Each customer buys one last purchase and waits for its terminal event:
//!   event ids grow per customer in commit order, so once the fence's events arrived, every
//!   purchase created before it has shown up on the customer's stream. A run fences when a
//!   POST lost its answer (otherwise every purchase it created is known already);
//!   `--survive-restarts` always does.
//! - **The audit.** Every known purchase (answered `201`, or only seen on a stream) must be
//!   terminal through the API, with the cart that was posted, and its terminal event must
//!   have reached its customer's stream exactly once; then stock, orders and payments must
//!   add up (`invariants`).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context as _;
use futures_util::StreamExt;
use serde_json::json;

use super::books::{Books, SETTLE, Seen, buy, settle};
use super::cluster::Cluster;
use super::load::Load;
use super::{Cart, Done, Outcome, invariants};

/// What the audit found.
pub(crate) struct Audit {
    /// Purchases answered `201`.
    pub(crate) answered: u64,
    /// Purchases created although their POST's answer was lost (found on a stream).
    pub(crate) discovered: u64,
    pub(crate) completed: u64,
    pub(crate) succeeded: u64,
    /// Known purchases that are not terminal, or whose terminal event never arrived.
    pub(crate) lost: u64,
    /// Terminal events received more than once, frames out of order, and purchases created
    /// beyond what the unanswered POSTs could have created.
    pub(crate) duplicated: u64,
    /// Purchases created beyond what the unanswered POSTs could have created.
    pub(crate) created_beyond_posts: u64,
    /// What the audit itself found wrong (the invariant check's findings are in `verdict`).
    pub(crate) violations: Vec<String>,
    pub(crate) verdict: invariants::Verdict,
}

impl Audit {
    /// The invariant check's verdict with the audit's own findings added: what a run
    /// without `--survive-restarts` reports.
    pub(crate) fn into_verdict(self) -> invariants::Verdict {
        let mut violations = self.violations;
        violations.extend(self.verdict.violations);
        invariants::Verdict {
            violations,
            ..self.verdict
        }
    }
}

/// One last purchase per customer, each waited for: after it, the streams have shown every
/// purchase created before.
pub(crate) async fn fence(load: &Load) -> anyhow::Result<()> {
    let started = Instant::now();
    let item = &load.items[0];
    for (shopper, s) in load.shoppers.iter().enumerate() {
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
            if let Some(id) = buy(&load.books, &load.cluster, &s.token, &cart).await {
                settle(&load.books, id)
                    .await
                    .with_context(|| format!("fence purchase {id} did not end"))?;
                break;
            }
        }
    }
    Ok(())
}

/// A cart as it was posted: its lines (sorted) and amount.
type PostedCart = (Vec<(u64, i64)>, i64);

/// Every purchase the books know of: its customer, and its cart when it was answered.
fn known(books: &Books) -> BTreeMap<u64, (usize, Option<PostedCart>)> {
    let mut known = BTreeMap::new();
    for a in books.answered.borrow().iter() {
        let mut lines = a.lines.clone();
        lines.sort();
        known.insert(a.purchase_id, (a.shopper, Some((lines, a.amount))));
    }
    for (id, seen) in books.seen.borrow().iter() {
        known.entry(*id).or_insert((seen.shopper, None));
    }
    known
}

/// What the streams' frames show wrong by themselves.
fn stream_violations(books: &Books, discovered: u64) -> Vec<String> {
    let unanswered = books.unanswered.get();
    let mut violations = Vec::new();
    if discovered > unanswered {
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
    violations
}

/// What the API stores of a purchase.
struct Stored {
    status: String,
    /// Sorted.
    lines: Vec<(u64, i64)>,
    amount: i64,
}

/// The status `GET /api/purchase/{id}` shows and the cart it holds.
async fn read_purchase(
    cluster: &Cluster,
    node: usize,
    token: &str,
    purchase_id: u64,
) -> anyhow::Result<Stored> {
    let path = format!("/api/purchase/{purchase_id}");
    let (status, v) = cluster.get(node, &path, Some(token)).await?;
    anyhow::ensure!(status == 200, "purchase {purchase_id}: {status} {v}");
    let mut lines: Vec<(u64, i64)> = v["purchase_items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| Some((l["product_id"].as_u64()?, l["amount"].as_i64()?)))
        .collect();
    lines.sort();
    Ok(Stored {
        status: v["status"].as_str().unwrap_or_default().to_owned(),
        lines,
        amount: v["amount"].as_i64().unwrap_or_default(),
    })
}

/// How one purchase ended, judged from what the API stores and what its stream delivered.
enum Judged {
    /// Terminal, its terminal event delivered; `extra` more times than once.
    Done { done: Done, extra: u64 },
    /// Not terminal, unreadable, or its terminal event never arrived.
    Lost,
}

/// Judges purchase `id` of `shopper`: `read` is what the API answered, `posted` its cart
/// when it was answered, `seen` what its stream delivered. Findings go to `violations`.
fn judge(
    id: u64,
    shopper: usize,
    read: anyhow::Result<Stored>,
    posted: Option<&PostedCart>,
    seen: Option<&Seen>,
    violations: &mut Vec<String>,
) -> Judged {
    let Stored {
        status,
        lines,
        amount,
    } = match read {
        Ok(r) => r,
        Err(e) => {
            violations.push(format!("purchase {id}: {e}"));
            return Judged::Lost;
        }
    };
    if let Some((want_lines, want_amount)) = posted
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
            return Judged::Lost;
        }
    };
    let terminal = seen.map(|s| s.terminal.as_slice()).unwrap_or(&[]);
    let [first, rest @ ..] = terminal else {
        violations.push(format!(
            "purchase {id}: {status} but its stream never delivered the terminal event"
        ));
        return Judged::Lost;
    };
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
    }
    let done = Done {
        purchase_id: id,
        shopper,
        lines,
        amount,
        outcome,
    };
    Judged::Done {
        done,
        extra: rest.len() as u64,
    }
}

/// Every purchase the run created, read back through the API, against what the streams
/// delivered; then stock, orders and payments.
pub(crate) async fn audit(load: &Load) -> anyhow::Result<Audit> {
    let Load {
        cluster,
        books,
        shoppers,
        ..
    } = load;
    let known = known(books);
    let answered = books.answered.borrow().len() as u64;
    let discovered = known.len() as u64 - answered;
    let created_beyond_posts = discovered.saturating_sub(books.unanswered.get());
    let mut violations = stream_violations(books, discovered);
    // Purchases whose terminal event has not arrived yet get until SETTLE.
    futures_util::future::join_all(known.keys().map(|id| settle(books, *id))).await;
    let reads = futures_util::stream::iter(known.iter().map(|(&id, (shopper, _))| {
        let (token, node) = (&shoppers[*shopper].token, cluster.nodes.home(*shopper));
        async move { (id, read_purchase(cluster, node, token, id).await) }
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    let seen = books.seen.borrow().clone();
    let (mut done, mut lost, mut duplicated) = (Vec::new(), 0, 0);
    for (id, read) in reads {
        let (shopper, posted) = &known[&id];
        let judged = judge(
            id,
            *shopper,
            read,
            posted.as_ref(),
            seen.get(&id),
            &mut violations,
        );
        match judged {
            Judged::Done { done: d, extra } => {
                done.push(d);
                duplicated += extra;
            }
            Judged::Lost => lost += 1,
        }
    }
    let verdict = invariants::check(cluster, shoppers, &load.items, &load.scarce, &done).await?;
    let succeeded = done
        .iter()
        .filter(|d| d.outcome == Outcome::Succeeded)
        .count() as u64;
    Ok(Audit {
        answered,
        discovered,
        completed: done.len() as u64,
        succeeded,
        lost,
        duplicated: duplicated + books.out_of_order.get() + created_beyond_posts,
        created_beyond_posts,
        violations,
        verdict,
    })
}
