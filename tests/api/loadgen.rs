//! `sagashop loadgen` and its ceiling probe, run against a real (embedded) sagashop: the
//! figures it reports must match what happened, and its invariant check must pass.

use std::time::Duration;

use crate::support::*;
use clap::Parser;
use sagashop::loadgen::{LoadgenArgs, ceiling, drive};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: LoadgenArgs,
}

fn args(list: &[&str]) -> LoadgenArgs {
    Cli::parse_from(std::iter::once("loadgen").chain(list.iter().copied())).args
}

#[actix_rt::test]
async fn loadgen_completes_the_count_and_checks_the_invariants() {
    let app = TestApp::spawn().await;
    let a = args(&[
        "--url",
        &app.url,
        "--count",
        "120",
        "--concurrency",
        "8",
        "--customers",
        "3",
        "--products",
        "4",
        "--fail-ratio",
        "0.25",
        "--json",
    ]);
    let report = drive(&a).await.expect("loadgen runs");
    assert_eq!(report.completed, 120);
    assert_eq!(report.succeeded + report.rolled_back, 120);
    assert!(
        report.rolled_back > 0,
        "a quarter of the purchases are built to fail"
    );
    assert!(report.succeeded > 0);
    assert_eq!((report.errors, report.timeouts), (0, 0));
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.p99);
    let verdict = report.invariants.expect("checked");
    assert_eq!(verdict.purchases_checked, 120);
    assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
}

#[actix_rt::test]
async fn ceiling_probe_commits_durably_on_sqlite() {
    let c = ceiling::probe(None, 4, 1, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(c.backend, "sqlite");
    assert!(c.commits > 0);
    assert!(c.commits_per_second > 0.0);
}
