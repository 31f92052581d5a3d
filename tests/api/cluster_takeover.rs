//! Partition owners that die or stall, on clusters of the test's own with three orchestrators
//! and short leases: the survivors take the partitions over and finish the sagas from their
//! logs, and nothing is lost, doubled or delivered out of order.
//!
//! - **Failover under load.** `sagashop loadgen` drives every node while each node in turn is
//!   killed (SIGKILL) while it owns in-flight sagas, and started again. Then every purchase is
//!   terminal, stock and money add up (loadgen's own audit), and each customer's stream
//!   delivered every event of their purchases exactly once and in log order: the frames
//!   loadgen recorded equal the step log, entry for entry.
//! - **A stale owner.** An owner is stopped (SIGSTOP) with sagas held at their payment step,
//!   past its lease; the others take its partitions over and finish those sagas. Continued
//!   (SIGCONT) and its payments released, the payment participant refuses its late commands
//!   (counted), and the step log gains nothing from it.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Integer, Text};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
use sagashop::config::ServiceDb;
use sagashop::domain::ids::CustomerId;
use sagashop::domain::purchase::{Step, StepEvent, StepStatus};
use sagashop::domain::saga::{SagaState, replay};
use serde_json::Value;

use crate::support::cluster::Cluster;
use crate::support::mariadb;
use crate::support::nodes::{Bench, Node, NodeSpec, wait_until};
use crate::support::scrape::{Scrape, try_scrape};
use crate::support::{Api, DEADLINE, free_port};

/// Partitions of a store made with the defaults.
const PARTITIONS: u32 = 32;
/// The tests' lease: short, so that takeovers happen within seconds.
const LEASE_SECONDS: &str = "3";
/// Long enough for two lease periods, a takeover and the resumption of its sagas.
const TAKEOVER: Duration = Duration::from_secs(30);

#[derive(diesel::QueryableByName)]
struct Owner {
    #[diesel(sql_type = Integer)]
    partition_id: i32,
    #[diesel(sql_type = Integer)]
    owner_node: i32,
}

/// One step-log entry.
#[derive(Debug)]
struct Logged {
    event_id: i64,
    saga_seq: i32,
    step: String,
    status: String,
}

/// Each partition's owner node as the saga store's `partitions` table has it.
async fn owners(saga_db_url: &str) -> BTreeMap<u32, u16> {
    let mut conn = AsyncMysqlConnection::establish(saga_db_url).await.unwrap();
    let rows: Vec<Owner> =
        diesel::sql_query("SELECT partition_id, owner_node FROM partitions ORDER BY partition_id")
            .load(&mut conn)
            .await
            .unwrap();
    rows.into_iter()
        .map(|r| (r.partition_id as u32, r.owner_node.max(0) as u16))
        .collect()
}

/// `sagashop_partitions_owned` of every node whose metrics answer (a dead one's do not).
async fn owned_per_node(metrics: &[String]) -> Vec<Option<f64>> {
    let mut owned = Vec::new();
    for url in metrics {
        owned.push(
            try_scrape(url)
                .await
                .map(|s| s.sum("sagashop_partitions_owned", &[])),
        );
    }
    owned
}

/// A counter summed over every sample of `name` on the node at `url`.
async fn counter(url: &str, name: &str) -> f64 {
    try_scrape(url)
        .await
        .map_or(0.0, |s: Scrape| s.sum(name, &[]))
}

/// Starts `sagashop loadgen` against every node of `cluster`: it keeps going through dead
/// nodes until SIGUSR1, then fences, audits and writes every frame it got to `frames`.
fn load(cluster: &Cluster, frames: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sagashop"))
        .env("SAGASHOP_METRICS_LISTEN", "off")
        .args(["loadgen", "--url", &cluster.urls().join(",")])
        .args([
            "--concurrency",
            "16",
            "--customers",
            "12",
            "--products",
            "4",
        ])
        .args(["--duration", "600", "--survive-restarts"])
        .arg("--frames")
        .arg(frames)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadgen starts")
}

/// Stops the load generator (SIGUSR1) and waits for its report.
fn stop_load(load: Child) -> Value {
    let sent = Command::new("kill")
        .args(["-USR1", &load.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = load.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "loadgen failed: {stdout}\n{stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

/// Every purchase's step log, in event-id order.
async fn logs(saga_db_url: &str) -> BTreeMap<u64, Vec<Logged>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        purchase_id: i64,
        #[diesel(sql_type = BigInt)]
        event_id: i64,
        #[diesel(sql_type = Integer)]
        saga_seq: i32,
        #[diesel(sql_type = Text)]
        step: String,
        #[diesel(sql_type = Text)]
        status: String,
    }
    let mut conn = AsyncMysqlConnection::establish(saga_db_url).await.unwrap();
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT purchase_id, event_id, saga_seq, step, status FROM saga_events \
         ORDER BY event_id",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let mut by_purchase: BTreeMap<u64, Vec<Logged>> = BTreeMap::new();
    for row in rows {
        by_purchase
            .entry(row.purchase_id as u64)
            .or_default()
            .push(Logged {
                event_id: row.event_id,
                saga_seq: row.saga_seq,
                step: row.step,
                status: row.status,
            });
    }
    by_purchase
}

/// Checks every purchase loadgen knows against the step log: its stream delivered exactly
/// the logged entries, in order; its log is numbered without a gap or a repeat and replays
/// to a terminal state (two owners driving one saga would break either).
async fn assert_streams_match_the_log(saga_db_url: &str, frames: &Value) {
    let logs = logs(saga_db_url).await;
    let frames = frames.as_object().expect("frames by purchase");
    assert!(!frames.is_empty(), "loadgen recorded no purchase");
    for (id, got) in frames {
        let id: u64 = id.parse().unwrap();
        let log = logs
            .get(&id)
            .unwrap_or_else(|| panic!("purchase {id} has no step log"));
        let seqs: Vec<i32> = log.iter().map(|l| l.saga_seq).collect();
        let numbered: Vec<i32> = (1..=log.len() as i32).collect();
        assert_eq!(seqs, numbered, "purchase {id}: log entries {log:?}");
        let events: Vec<StepEvent> = log
            .iter()
            .map(|l| StepEvent {
                step: Step::parse(&l.step).unwrap(),
                status: StepStatus::parse(&l.status).unwrap(),
            })
            .collect();
        let state = replay(&events).unwrap_or_else(|e| panic!("purchase {id}: {e}"));
        assert!(
            matches!(state, SagaState::Succeeded | SagaState::RolledBack),
            "purchase {id} ended {state}"
        );
        let expected: Vec<Value> = log
            .iter()
            .map(|l| serde_json::json!([l.event_id.to_string(), l.step, l.status]))
            .collect();
        assert_eq!(
            got.as_array().unwrap(),
            &expected,
            "purchase {id}: the stream's frames differ from the step log"
        );
    }
}

#[actix_rt::test]
async fn each_owner_killed_under_load_loses_doubles_and_reorders_nothing() {
    let Some(cluster) = Cluster::start_with_env(
        "takeover_load",
        &[("SAGASHOP_LEASE_SECONDS", LEASE_SECONDS)],
    ) else {
        return;
    };
    let metrics = cluster.metrics_urls();
    let saga_db = format!(
        "{}/{}",
        mariadb::server(),
        cluster.database(ServiceDb::Saga)
    );
    wait_until(
        "the partitions to spread over three owners",
        TAKEOVER,
        || {
            let metrics = metrics.clone();
            async move {
                let owned = owned_per_node(&metrics).await;
                owned
                    .iter()
                    .all(|o| o.is_some_and(|n| (10.0..=11.0).contains(&n)))
            }
        },
    )
    .await;
    let frames_file = tempfile::NamedTempFile::new().unwrap();
    let running = load(&cluster, frames_file.path());
    wait_until("sagas to finish under load", DEADLINE, || async {
        cluster.finished_sagas().await > 50
    })
    .await;
    for n in 1..=3u16 {
        // The node owns sagas that are under way right now.
        let saga = cluster.database(ServiceDb::Saga);
        let filter = format!(
            "finished = 0 AND partition_id IN \
             (SELECT partition_id FROM `{saga}`.partitions WHERE owner_node = {n})"
        );
        wait_until(&format!("node {n} to own sagas in flight"), DEADLINE, || {
            let (saga, filter) = (saga.clone(), filter.clone());
            async move { mariadb::count_rows(&mariadb::server(), &saga, "sagas", &filter).await > 0 }
        })
        .await;
        let finished_before = cluster.finished_sagas().await;
        let killed = Instant::now();
        cluster.kill(n);
        wait_until(
            &format!("the others to own node {n}'s partitions"),
            TAKEOVER,
            || {
                let saga_db = saga_db.clone();
                async move { owners(&saga_db).await.values().all(|&o| o != n && o != 0) }
            },
        )
        .await;
        let taken_over = killed.elapsed();
        wait_until("sagas to finish after the takeover", TAKEOVER, || async {
            cluster.finished_sagas().await > finished_before + 20
        })
        .await;
        eprintln!(
            "node {n}: partitions taken over {:.1} s after the kill",
            taken_over.as_secs_f64()
        );
        cluster.start_node(n);
        wait_until(&format!("node {n} to get its share back"), TAKEOVER, || {
            let saga_db = saga_db.clone();
            async move {
                let owned = owners(&saga_db).await.values().filter(|&&o| o == n).count();
                owned >= (PARTITIONS / 3) as usize
            }
        })
        .await;
    }
    let report = stop_load(running);
    let violations = &report["violations"];
    assert_eq!(violations.as_array().map(Vec::len), Some(0), "{report:#}");
    assert_eq!(report["lost"].as_u64(), Some(0), "{report:#}");
    assert_eq!(report["duplicated"].as_u64(), Some(0), "{report:#}");
    assert!(report["succeeded"].as_u64().unwrap() > 0, "{report:#}");
    assert!(report["rolled_back"].as_u64().unwrap() > 0, "{report:#}");
    let frames: Value =
        serde_json::from_str(&std::fs::read_to_string(frames_file.path()).unwrap()).unwrap();
    assert_streams_match_the_log(&saga_db, &frames).await;
    // Every partition changed hands: the restarted nodes claimed some back.
    let mut claimed = 0.0;
    for url in &metrics {
        claimed += counter(url, "sagashop_partition_handovers_total").await;
    }
    assert!(claimed > 0.0);
}

/// A node of the stale-owner test, with the short lease and its metrics on a port of its
/// own: its settings and its `/metrics` URL.
fn spec<'a>(
    bench: &'a Bench,
    node_id: u16,
    roles: &'static str,
    extra: &[&str],
) -> (NodeSpec<'a>, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut flags = vec![
        "--metrics-listen",
        &listen,
        "--lease-seconds",
        LEASE_SECONDS,
    ];
    flags.extend(extra);
    (
        bench.node(node_id, roles, &flags),
        format!("http://127.0.0.1:{port}/metrics"),
    )
}

#[actix_rt::test]
async fn a_stale_owner_writes_nothing_and_its_late_commands_are_refused() {
    let Some(bench) = Bench::new("stale_owner").await else {
        return;
    };
    let databases = &bench.databases;
    // Node 1 orchestrates and runs a payment participant that holds every command until
    // SIGUSR1; its sagas wait a minute for an answer, so their held commands are still
    // current when it comes back. Nodes 2 and 3 run every role, without holding anything.
    let (one, one_metrics) = spec(
        &bench,
        1,
        "api,orchestrator,payment",
        &["--hold-payments", "--step-timeout-ms", "60000"],
    );
    let (two, two_metrics) = spec(&bench, 2, "all", &[]);
    let (three, _) = spec(&bench, 3, "all", &[]);
    let two = two.start().await;
    let _three = three.start().await;
    let one = one.start().await;
    let saga_db = databases.url(ServiceDb::Saga);
    wait_until("node 1 to own partitions", TAKEOVER, || {
        let saga_db = saga_db.clone();
        async move { owners(&saga_db).await.values().filter(|&&o| o == 1).count() >= 8 }
    })
    .await;
    let api = Api::over(vec![two.url.clone()]);
    let product = api.create_product("stale", 100, 1000).await;
    // Customers until a few live in partitions node 1 owns.
    let owned = owners(&saga_db).await;
    let mut buyers = Vec::new();
    while buyers.len() < 3 {
        let customer = api.sign_up().await;
        let partition =
            sagashop::domain::partition::of_customer(CustomerId(customer.id), PARTITIONS);
        if owned.get(&partition.0) == Some(&1) {
            buyers.push(customer);
        }
    }
    let mut purchases = Vec::new();
    for buyer in &buyers {
        purchases.push(api.purchase_ok(&buyer.access, &[(product, 1)]).await);
    }
    // Node 1's sagas reach the payment step, where its own participant holds them.
    let held = format!(
        "step = 'CREATE_PAYMENT' AND purchase_id IN ({})",
        join(&purchases)
    );
    let saga_name = databases_name(&saga_db);
    let count = purchases.len() as i64;
    wait_until(
        "node 1's sagas to wait at the payment step",
        DEADLINE,
        || {
            let (saga_name, held) = (saga_name.clone(), held.clone());
            async move {
                mariadb::count_rows(&mariadb::server(), &saga_name, "saga_events", &held).await
                    >= count
            }
        },
    )
    .await;
    // What node 1 wrote to the saga store before it stalls (its writer counts a commit just
    // after it lands: give the last one a moment to be counted).
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let committed_before = counter(&one_metrics, COMMITTED).await;
    assert!(
        committed_before >= purchases.len() as f64,
        "node 1 drove its sagas: {committed_before}"
    );
    one.signal("STOP");
    wait_until(
        "nodes 2 and 3 to take node 1's partitions",
        TAKEOVER,
        || {
            let saga_db = saga_db.clone();
            async move { owners(&saga_db).await.values().all(|&o| o == 2 || o == 3) }
        },
    )
    .await;
    for (buyer, &purchase) in buyers.iter().zip(&purchases) {
        let view = api.wait_finished(&buyer.access, purchase).await;
        assert_eq!(view["status"], "SUCCEEDED", "{view}");
    }
    let log_before =
        mariadb::count_rows(&mariadb::server(), &saga_name, "saga_events", "1 = 1").await;
    one.signal("CONT");
    one.signal("USR1");
    wait_until(
        "node 1's participant to refuse its late payments",
        TAKEOVER,
        || async {
            counter(&one_metrics, "sagashop_step_commands_fenced_total").await
                >= purchases.len() as f64
        },
    )
    .await;
    // Its sagas got those refusals (or were stopped when it saw its partitions gone): give
    // whatever it does next the time to reach the store.
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    // Nothing more was written for those sagas; each has one payment, taken once.
    let log_after =
        mariadb::count_rows(&mariadb::server(), &saga_name, "saga_events", "1 = 1").await;
    assert_eq!(log_before, log_after, "the stale owner's writes landed");
    assert_eq!(
        counter(&one_metrics, COMMITTED).await,
        committed_before,
        "the stale owner committed a transition after it lost its partitions"
    );
    let payments = mariadb::count_rows(
        &mariadb::server(),
        &databases_name(&databases.url(ServiceDb::Payment)),
        "payments",
        &format!("id IN ({})", join(&purchases)),
    )
    .await;
    assert_eq!(payments, purchases.len() as i64);
    assert_eq!(api.inventory(product).await, 1000 - purchases.len() as i64);
    // The others counted the partitions they took over.
    assert!(
        counter(&two_metrics, "sagashop_partition_handovers_total").await > 0.0,
        "node 2 took nothing over"
    );
    // Node 1 learned that it lost them, and serves on.
    wait_until("node 1 to see its partitions lost", TAKEOVER, || async {
        try_scrape(&one_metrics)
            .await
            .is_some_and(|s| s.sum("sagashop_partition_handovers_total", &[("kind", "lost")]) > 0.0)
    })
    .await;
    drop::<Node>(one);
}

/// Saga transitions a node committed to the saga store.
const COMMITTED: &str = "sagashop_saga_writes_committed_total";

fn join(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// The database name at the end of a `mysql://.../name` URL.
fn databases_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}
