//! The end-of-run check, through the public API only: stock is conserved, every successful
//! purchase has exactly its order and payment, every rolled-back one has neither.

use std::collections::HashMap;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;

use super::cluster::Cluster;
use super::{Done, Item, Outcome, Shopper};

/// What the check found: a run is only as good as its books balance.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Purchases whose order and payment were checked.
    pub purchases_checked: usize,
    /// Products whose stock was checked.
    pub products_checked: usize,
    /// Everything that did not add up; empty when the run is sound.
    pub violations: Vec<String>,
}

/// Checks stock, orders and payments of `done` through whichever nodes are alive (each
/// customer's reads go to its own node first).
pub(super) async fn check(
    cluster: &Cluster,
    shoppers: &[Shopper],
    items: &[Item],
    scarce: &Item,
    done: &[Done],
) -> anyhow::Result<Verdict> {
    let mut violations = Vec::new();
    let mut sold: HashMap<u64, i64> = HashMap::new();
    for d in done.iter().filter(|d| d.outcome == Outcome::Succeeded) {
        for (id, n) in &d.lines {
            *sold.entry(*id).or_default() += n;
        }
    }
    for (i, item) in items.iter().chain([scarce]).enumerate() {
        let (status, v) = cluster
            .get(i, &format!("/api/product/{}", item.id), None)
            .await?;
        let left = v["inventory"].as_i64().unwrap_or(i64::MIN);
        let want = item.stock - sold.get(&item.id).copied().unwrap_or(0);
        if status != 200 || left != want || left < 0 {
            violations.push(format!(
                "product {}: stock {left}, expected {want}",
                item.id
            ));
        }
    }
    let checks = futures_util::stream::iter(done.iter().map(|d| async move {
        let token = Some(shoppers[d.shopper].token.as_str());
        let node = cluster.nodes.home(d.shopper);
        let order = cluster
            .get(node, &format!("/api/order/{}", d.purchase_id), token)
            .await;
        let payment = cluster
            .get(node, &format!("/api/payment/{}", d.purchase_id), token)
            .await;
        verify(d, order, payment)
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    violations.extend(checks.into_iter().flatten());
    Ok(Verdict {
        purchases_checked: done.len(),
        products_checked: items.len() + 1,
        violations,
    })
}

fn verify(
    d: &Done,
    order: anyhow::Result<(u16, Value)>,
    payment: anyhow::Result<(u16, Value)>,
) -> Option<String> {
    let id = d.purchase_id;
    let ((os, o), (ps, p)) = match (order, payment) {
        (Ok(o), Ok(p)) => (o, p),
        (Err(e), _) | (_, Err(e)) => return Some(format!("purchase {id}: {e}")),
    };
    match d.outcome {
        Outcome::Succeeded => {
            if os != 200 || ps != 200 {
                return Some(format!(
                    "purchase {id} succeeded but order {os} / payment {ps}"
                ));
            }
            if p["amount"].as_i64() != Some(d.amount) {
                return Some(format!(
                    "purchase {id}: payment {} != {}",
                    p["amount"], d.amount
                ));
            }
            let lines: Vec<(u64, i64)> = o["purchased_items"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| Some((l["product_id"].as_u64()?, l["amount"].as_i64()?)))
                        .collect()
                })
                .unwrap_or_default();
            let mut want = d.lines.clone();
            want.sort();
            (lines != want).then(|| format!("purchase {id}: order lines {lines:?} != {want:?}"))
        }
        Outcome::RolledBack => (os != 404 || ps != 404)
            .then(|| format!("purchase {id} rolled back but order {os} / payment {ps}")),
    }
}
