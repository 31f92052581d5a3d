//! The sagas-in-flight run: with the server's payment step held (`--hold-payments`), fire many
//! purchases, read the server's memory while they all wait, release the payments (SIGUSR1)
//! and check that every saga completes and the invariants hold.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

use super::cluster::client;
use super::load::{Load, start};
use super::{Done, LoadgenArgs, invariants, server_memory};

/// What the run measured: how many sagas one node holds in flight, in how much memory, and
/// how fast they drain once released.
#[derive(Debug, Serialize)]
pub struct InflightReport {
    pub purchases: u64,
    pub accepted: u64,
    pub fire_seconds: f64,
    pub memory_while_held: Option<Value>,
    pub drain_seconds: f64,
    pub completed: u64,
    pub memory_after: Option<Value>,
    pub invariants: Option<invariants::Verdict>,
}

/// Fires `n` purchases at a server holding payments, then releases it; see the module comment.
pub(super) async fn run(args: &LoadgenArgs, n: u64) -> anyhow::Result<InflightReport> {
    let pid = args
        .server_pid
        .context("--inflight needs --server-pid (to read memory and release)")?;
    let load = start(args).await?;
    let Load {
        cluster,
        books,
        shoppers,
        items,
        scarce,
    } = &load;
    let started = Instant::now();
    let posts = futures_util::stream::iter((0..n).map(|i| {
        let shopper = (i as usize) % shoppers.len();
        let item = &items[(i as usize) % items.len()];
        let lines = vec![(item.id, 1i64)];
        let body = json!({"purchase_items": [{"product_id": item.id, "amount": 1}], "payment": {"currency_code": "NT"}});
        let (node, token) = (cluster.nodes.home(shopper), &shoppers[shopper].token);
        async move {
            // Not `books::buy`: a 503 (the in-flight cap) must not be sent again while held.
            let reply = cluster.request(node, awc::http::Method::POST, "/api/purchase", Some(token), Some(&body)).await;
            match reply {
                Ok((201, v)) => v["purchase_id"].as_u64().map(|id| (id, shopper, lines, item.price)),
                _ => None,
            }
        }
    }))
    .buffer_unordered(args.concurrency)
    .collect::<Vec<_>>()
    .await;
    let fire_seconds = started.elapsed().as_secs_f64();
    let accepted: Vec<_> = posts.into_iter().flatten().collect();
    let waits: Vec<_> = accepted
        .iter()
        .map(|(id, ..)| books.tracker.borrow_mut().wait_for(*id))
        .collect();
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    let memory_while_held = server_memory(pid);
    #[allow(unsafe_code)] // libc has no safe kill(2)
    // SAFETY: kill(2) with a pid the user gave; it only sends a signal.
    let signalled = unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
    if signalled != 0 {
        anyhow::bail!("cannot signal pid {pid}");
    }
    let released = Instant::now();
    let mut done = Vec::with_capacity(accepted.len());
    for ((purchase_id, shopper, lines, price), wait) in accepted.iter().cloned().zip(waits) {
        if let Ok(Ok(outcome)) = actix_rt::time::timeout(Duration::from_secs(600), wait).await {
            let amount = lines.iter().map(|(_, n)| n * price).sum();
            done.push(Done {
                purchase_id,
                shopper,
                lines,
                amount,
                outcome,
            });
        }
    }
    let drain_seconds = released.elapsed().as_secs_f64();
    eprintln!(
        "fired {} in {fire_seconds:.1} s, held memory {memory_while_held:?}, {} completed {drain_seconds:.1} s after release",
        accepted.len(),
        done.len()
    );
    // A fresh client: the firing one may have been worn out by the burst of connections.
    let checker = cluster.with_client(client(64));
    let invariants = if args.no_check {
        None
    } else {
        Some(invariants::check(&checker, shoppers, items, scarce, &done).await?)
    };
    Ok(InflightReport {
        purchases: n,
        accepted: accepted.len() as u64,
        fire_seconds,
        memory_while_held,
        drain_seconds,
        completed: done.len() as u64,
        memory_after: server_memory(pid),
        invariants,
    })
}
