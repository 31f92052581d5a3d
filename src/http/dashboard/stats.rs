//! `GET /dashboard/api/stats`: every node's numbers, the cluster's totals and the latency
//! percentiles computed from the totals' histogram buckets.

use actix_web::{HttpResponse, http::header, web};
use serde::Serialize;

use super::Dashboard;
use crate::cluster::stats::quantile::histogram_quantile;
use crate::cluster::stats::snapshot::{self, Family, Metrics, Series};
use crate::cluster::stats::{self as cluster_stats, NodeStats};

/// The percentiles the page shows.
const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

/// Percentiles of one histogram series, in milliseconds.
#[derive(Debug, Serialize)]
struct Latency {
    /// The series' labels (`step` and `kind`, or `outcome`).
    labels: snapshot::Labels,
    count: u64,
    /// p50, p90, p99 (`null` without observations).
    p50_ms: Option<f64>,
    p90_ms: Option<f64>,
    p99_ms: Option<f64>,
}

/// The whole answer.
#[derive(Debug, Serialize)]
struct StatsView {
    /// The cluster's name, `null` in embedded mode.
    cluster: Option<String>,
    /// The node that answered this request.
    answered_by: u16,
    /// Whether the admin view can be opened (an admin token is configured).
    admin_enabled: bool,
    /// Unix milliseconds of the answer.
    at_ms: i64,
    nodes: Vec<NodeStats>,
    /// Every node's series added up.
    totals: Metrics,
    /// Step and compensation latency by step and kind (`sagashop_step_duration_seconds`).
    step_latency: Vec<Latency>,
    /// Saga latency, start to terminal, by outcome (`sagashop_saga_duration_seconds`).
    saga_latency: Vec<Latency>,
}

fn latency(series: &Series) -> Latency {
    let [p50, p90, p99] =
        QUANTILES.map(|q| histogram_quantile(q, &series.buckets, series.count).map(|s| s * 1e3));
    Latency {
        labels: series.labels.clone(),
        count: series.count,
        p50_ms: p50,
        p90_ms: p90,
        p99_ms: p99,
    }
}

/// Percentiles of every series of the histogram `name` in `totals`.
fn latencies(totals: &Metrics, name: &str) -> Vec<Latency> {
    match totals.get(name) {
        Some(Family::Histogram { series }) => series.iter().map(latency).collect(),
        _ => Vec::new(),
    }
}

/// Every node's numbers and their totals (no token needed: aggregates only).
pub async fn stats(dashboard: web::Data<Dashboard>) -> HttpResponse {
    let nodes = cluster_stats::gather(dashboard.bus.as_ref(), &dashboard.reporter).await;
    let totals = snapshot::sum(nodes.iter().map(|n| &n.metrics));
    let view = StatsView {
        cluster: dashboard.cluster_name.clone(),
        answered_by: dashboard.reporter.node_id(),
        admin_enabled: dashboard.admin_token.is_some(),
        at_ms: dashboard.clock.now_ms(),
        step_latency: latencies(&totals, "sagashop_step_duration_seconds"),
        saga_latency: latencies(&totals, "sagashop_saga_duration_seconds"),
        nodes,
        totals,
    };
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(view)
}
