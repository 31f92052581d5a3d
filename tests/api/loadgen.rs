//! The `sagashop` binary's command line: `sagashop loadgen` and its ceiling probe, run as the
//! real binary against a real (embedded) sagashop (the figures it reports must match what
//! happened, and its invariant check must pass), and the help a user reads.

use crate::support::*;
use serde_json::Value;

/// Runs the built `sagashop` binary with `args` off the actix thread (the app under test
/// lives on it), checks that it succeeded and returns its stdout.
async fn sagashop(args: &[&str]) -> String {
    let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = actix_rt::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sagashop"))
            .args(owned)
            .env("RUST_LOG", "warn")
            .output()
            .expect("sagashop runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "sagashop {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The binary's stdout as one JSON object (`--json`).
fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[actix_rt::test]
async fn loadgen_completes_the_count_and_checks_the_invariants() {
    let app = TestApp::spawn().await;
    let out = sagashop(&[
        "loadgen",
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
    ])
    .await;
    let report = json(&out);
    let n = |field: &str| report[field].as_u64().unwrap_or_else(|| panic!("{field}"));
    assert_eq!(n("completed"), 120);
    assert_eq!(n("succeeded") + n("rolled_back"), 120);
    assert!(
        n("rolled_back") > 0,
        "a quarter of the purchases are built to fail"
    );
    assert!(n("succeeded") > 0);
    assert_eq!((n("errors"), n("timeouts")), (0, 0));
    let ms = |q: &str| report["latency_ms"][q].as_f64().unwrap();
    assert!(ms("p50") > 0.0 && ms("p50") <= ms("p99"));
    let verdict = &report["invariants"];
    assert_eq!(verdict["purchases_checked"], 120);
    assert_eq!(verdict["violations"], serde_json::json!([]), "{verdict}");
}

#[actix_rt::test]
async fn ceiling_probe_commits_durably_on_sqlite() {
    let out = sagashop(&[
        "loadgen",
        "--ceiling",
        "--concurrency",
        "4",
        "--duration",
        "1",
        "--json",
    ])
    .await;
    let c = json(&out);
    assert_eq!(c["backend"], "sqlite");
    assert!(c["commits"].as_u64().unwrap() > 0);
    assert!(c["commits_per_second"].as_f64().unwrap() > 0.0);
}

#[actix_rt::test]
async fn serve_help_lists_the_server_options_and_loadgen_help_only_its_own() {
    let serve = sagashop(&["serve", "--help"]).await;
    for option in [
        "--listen",
        "--data-dir",
        "--jwt-secret",
        "--saga-database-url",
    ] {
        assert!(
            serve.contains(option),
            "serve --help lacks {option}:\n{serve}"
        );
    }
    let loadgen = sagashop(&["loadgen", "--help"]).await;
    assert!(loadgen.contains("--concurrency"), "{loadgen}");
    assert!(!loadgen.contains("--listen"), "{loadgen}");
}
