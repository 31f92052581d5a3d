//! Nodes killed under load, on a three-node cluster of the test's own: `sagashop loadgen`
//! drives all three nodes (each customer buys on one node and streams from another) while a
//! node dies, and its check at the end must find nothing wrong: every purchase it created is
//! terminal, each terminal event reached its customer's stream exactly once (streams resume
//! elsewhere with `Last-Event-ID`), stock is conserved, one order and one payment per success
//! and none per failure.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::DEADLINE;
use crate::support::cluster::Cluster;
use crate::support::nodes::wait_until;

/// Starts the load generator against every node of `cluster` for `seconds`.
fn load(cluster: &Cluster, seconds: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sagashop"))
        .env("SAGASHOP_METRICS_LISTEN", "off")
        .args(["loadgen", "--url", &cluster.urls().join(",")])
        .args(["--concurrency", "16", "--customers", "9", "--products", "4"])
        .args(["--duration", &seconds.to_string(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadgen starts")
}

/// Waits for the load generator's report.
fn report(load: Child) -> Value {
    let out = load.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "loadgen failed: {stdout}\n{stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

/// Waits until the cluster has finished some sagas, so the fault lands mid-run.
async fn under_way(cluster: &Cluster) {
    wait_until("sagas to finish under load", DEADLINE, || async {
        cluster.finished_sagas().await > 50
    })
    .await;
}

fn assert_sound(report: &Value) {
    let violations = &report["invariants"]["violations"];
    assert_eq!(violations.as_array().map(Vec::len), Some(0), "{report:#}");
    assert!(report["succeeded"].as_u64().unwrap() > 0, "{report:#}");
    assert!(report["rolled_back"].as_u64().unwrap() > 0, "{report:#}");
}

#[actix_rt::test]
async fn a_participant_node_killed_under_load_loses_and_doubles_nothing() {
    let Some(cluster) = Cluster::start("kill_participant") else {
        return;
    };
    let running = load(&cluster, 12);
    under_way(&cluster).await;
    cluster.kill(3);
    let report = report(running);
    assert_sound(&report);
    // Node 3's customers went on through the other nodes.
    let nodes = report["nodes"].as_array().unwrap();
    assert!(
        nodes[2]["failed_requests"].as_u64().unwrap() > 0,
        "{report:#}"
    );
}

#[actix_rt::test]
async fn the_orchestrator_killed_and_restarted_under_load_loses_and_doubles_nothing() {
    let Some(cluster) = Cluster::start("kill_orchestrator") else {
        return;
    };
    let running = load(&cluster, 15);
    under_way(&cluster).await;
    cluster.kill(1);
    // Purchases are still accepted (stored pending) while no orchestrator runs; sagas wait.
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    cluster.start_node(1);
    let report = report(running);
    assert_sound(&report);
}
