//! `GET /metrics` on the metrics listener, as an operator scraping a node sees it: the real
//! binary with `--metrics-listen`, purchases that succeed and that compensate, a result
//! stream, and in the cluster the bridge counters of the nodes that send and receive.

use std::process::{Child, Command, Stdio};

use awc::Client;

use crate::support::cluster::Cluster;
use crate::support::scrape::{Scrape, scrape};
use crate::support::{Api, DEADLINE, eventually, free_port};

/// A `sagashop serve` process on a fresh data directory, killed when dropped.
struct Node {
    child: Child,
    api: Api,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with `--metrics-listen <metrics_listen>` and waits until it is ready.
async fn serve(metrics_listen: &str) -> Node {
    serve_with(Some(metrics_listen)).await
}

/// Starts the binary with `--metrics-listen` when given, else with the default (no flag, no
/// environment variable), and waits until it is ready.
async fn serve_with(metrics_listen: Option<&str>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sagashop"));
    command.env_remove("SAGASHOP_METRICS_LISTEN").arg("serve");
    if let Some(address) = metrics_listen {
        command.args(["--metrics-listen", address]);
    }
    let child = command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        // A stream's client going away shows at the next write: keep-alives are that write.
        .args(["--sse-keepalive-seconds", "1"])
        .args(["--exit-with-pid", &std::process::id().to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("sagashop starts");
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::default();
    let ready = eventually(DEADLINE, || async {
        let r = client.get(format!("{url}/readyz")).send().await;
        r.is_ok_and(|r| r.status().is_success()).then_some(())
    })
    .await;
    ready.expect("sagashop did not become ready");
    Node {
        child,
        api: Api::over(vec![url]),
        _dir: dir,
    }
}

#[actix_rt::test]
async fn a_scrape_counts_sagas_steps_requests_and_streams_as_they_happened() {
    let metrics_port = free_port();
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let node = serve(&format!("127.0.0.1:{metrics_port}")).await;
    let api = &node.api;

    let before = scrape(&url).await;
    assert_eq!(before.sum("sagashop_sagas_started_total", &[]), 0.0);
    let info = [("node_id", "1"), ("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(before.sum("sagashop_node_info", &info), 1.0);
    assert!(before.sum("process_resident_memory_bytes", &[]) > 0.0);
    assert!(before.sum("sagashop_db_pool_max_connections", &[("database", "saga")]) >= 1.0);

    let customer = api.sign_up().await;
    let product = api.create_product("metered", 100, 1).await;
    let mut stream = api.subscribe(&customer.access, None).await;
    let open = scrape(&url).await;
    assert_eq!(open.sum("sagashop_sse_connections", &[]), 1.0);

    let bought = api.purchase_ok(&customer.access, &[(product, 1)]).await;
    let refused = api.purchase_ok(&customer.access, &[(product, 5)]).await;
    let view = api.wait_finished(&customer.access, bought).await;
    assert_eq!(view["status"], "SUCCEEDED");
    let view = api.wait_finished(&customer.access, refused).await;
    assert_eq!(view["status"], "ROLLED_BACK");
    // The success's 6 frames and the refusal's 3 reach the stream.
    let frames = stream.take(9, DEADLINE).await;
    assert_eq!(frames.len(), 9);

    let after = scrape(&url).await;
    let finished = |outcome| after.sum("sagashop_sagas_finished_total", &[("outcome", outcome)]);
    assert_eq!(after.sum("sagashop_sagas_started_total", &[]), 2.0);
    assert_eq!(finished("succeeded"), 1.0);
    assert_eq!(finished("rolled_back"), 1.0);
    assert_eq!(finished("rollback_failed"), 0.0);
    assert_eq!(
        after.sum("sagashop_saga_duration_seconds_count", &[]),
        2.0,
        "each outcome's duration is observed once"
    );
    let steps = |step, kind, outcome| {
        let labels = [("step", step), ("kind", kind), ("outcome", outcome)];
        after.sum("sagashop_steps_total", &labels)
    };
    assert_eq!(steps("update_product_inventory", "action", "ok"), 1.0);
    assert_eq!(steps("update_product_inventory", "action", "refused"), 1.0);
    assert_eq!(steps("update_product_inventory", "compensation", "ok"), 1.0);
    assert_eq!(steps("create_order", "action", "ok"), 1.0);
    assert_eq!(steps("create_payment", "action", "ok"), 1.0);
    assert_eq!(
        after.sum("sagashop_steps_total", &[("outcome", "failed")]),
        0.0
    );
    assert_eq!(
        after.sum("sagashop_step_duration_seconds_count", &[]),
        5.0,
        "one latency per answered call"
    );
    assert_eq!(
        after.sum("sagashop_sagas_alive", &[]),
        0.0,
        "every saga finished"
    );
    assert_eq!(after.sum("sagashop_sse_events_total", &[]), 9.0);
    assert!(
        after.sum(
            "sagashop_commit_batch_size_count",
            &[("actor", "saga_store")]
        ) >= 1.0
    );
    assert!(after.sum("sagashop_commit_batch_size_count", &[("actor", "payment")]) >= 1.0);
    assert!(
        after.sum("sagashop_partitions_owned", &[]) >= 1.0,
        "embedded owns them all"
    );

    // Requests are counted by route pattern, never by the path with its id.
    let by_id = [
        ("endpoint", "/api/purchase/{id}"),
        ("method", "GET"),
        ("status", "200"),
    ];
    assert!(after.sum("sagashop_http_requests_total", &by_id) >= 2.0);
    let _ = api.get("/api/no-such-route/12345", None).await;
    drop(stream);
    let closed = eventually(DEADLINE, || async {
        let s = scrape(&url).await;
        (s.sum("sagashop_sse_connections", &[]) == 0.0).then_some(s)
    })
    .await
    .expect("the closed stream leaves the gauge");
    let endpoints = closed.label_values("sagashop_http_requests_total", "endpoint");
    assert!(endpoints.iter().any(|e| e == "UNMATCHED"), "{endpoints:?}");
    for endpoint in &endpoints {
        assert!(
            !endpoint.chars().any(|c| c.is_ascii_digit()),
            "a raw path became a label: {endpoint}"
        );
        assert_ne!(endpoint, "/metrics", "scrapes are not API requests");
    }
    assert_eq!(
        closed.sum(
            "sagashop_http_requests_total",
            &[("endpoint", "/api/purchase")]
        ),
        2.0
    );
}

/// How many TCP sockets the process `pid` listens on (its socket inodes that the kernel's
/// tables list in state LISTEN).
fn listening_sockets(pid: u32) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        })
        .filter(|cols| cols.get(3).is_some_and(|st| st == "0A"))
        .filter(|cols| cols.get(9).is_some_and(|inode| inodes.contains(inode)))
        .count()
}

#[actix_rt::test]
async fn metrics_listen_off_binds_nothing_but_the_api() {
    let off = serve("off").await;
    assert_eq!(off.api.get("/healthz", None).await.status, 200);
    assert_eq!(listening_sockets(off.child.id()), 1, "only the API listens");
    let on = serve(&format!("127.0.0.1:{}", free_port())).await;
    assert_eq!(
        listening_sockets(on.child.id()),
        2,
        "the API and the metrics listener"
    );
}

#[actix_rt::test]
async fn a_taken_default_metrics_port_leaves_the_node_serving_but_a_chosen_one_refuses() {
    // 127.0.0.1:8080 is taken: by this listener, or by whatever already holds it.
    let _held = std::net::TcpListener::bind("127.0.0.1:8080");
    let node = serve_with(None).await;
    assert_eq!(node.api.get("/healthz", None).await.status, 200);
    assert_eq!(
        listening_sockets(node.child.id()),
        1,
        "only the API listens"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = actix_rt::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sagashop"))
            .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--metrics-listen", &taken])
            .args(["--data-dir", dir.path().to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        !out.status.success(),
        "a node started on a taken metrics port"
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("--metrics-listen"), "{said}");
}

/// The scrape of every node of `cluster`, node 1 first.
async fn scrape_all(cluster: &Cluster) -> Vec<Scrape> {
    let mut all = Vec::new();
    for url in cluster.metrics_urls() {
        all.push(scrape(&url).await);
    }
    all
}

fn bridge(s: &Scrape, subject_ends: &str, direction: &str) -> f64 {
    s.matching("sagashop_bridge_messages_total", |l| {
        l.get("subject").is_some_and(|x| x.ends_with(subject_ends))
            && l.get("direction").is_some_and(|d| d == direction)
    })
}

#[actix_rt::test]
async fn in_the_cluster_bridge_counters_move_on_the_nodes_that_send_and_receive() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let api = cluster.api();
    // Every node is an orchestrator: take a customer whose partition node 1 holds, so its
    // saga runs there and its order and payment steps cross to nodes 2 and 3.
    let mut customer = None;
    for _ in 0..60 {
        let c = api.sign_up().await;
        let partition = sagashop::domain::partition::of_customer(
            sagashop::domain::ids::CustomerId(c.id),
            sagashop::domain::partition::DEFAULT_COUNT,
        );
        if cluster.holds(1, partition).await {
            customer = Some(c);
            break;
        }
    }
    let customer = customer.expect("a customer of a partition node 1 holds");
    let before = scrape_all(cluster).await;
    let product = api.create_product("bridged", 100, 10).await;
    let id = api.purchase_ok(&customer.access, &[(product, 1)]).await;
    assert_eq!(
        api.wait_finished(&customer.access, id).await["status"],
        "SUCCEEDED"
    );
    let after = eventually(DEADLINE, || async {
        let after = scrape_all(cluster).await;
        // Node 1 runs the saga and product; orders and payments run on 2 and 3.
        let sent = bridge(&after[0], ".svc.order.step", "out")
            > bridge(&before[0], ".svc.order.step", "out");
        let received: f64 = (1..3)
            .map(|n| {
                bridge(&after[n], ".svc.payment.step", "in")
                    - bridge(&before[n], ".svc.payment.step", "in")
            })
            .sum();
        (sent && received >= 1.0).then_some(after)
    })
    .await
    .expect("the step commands were counted where they left and arrived");
    assert!(bridge(&after[0], ".results.*", "out") > bridge(&before[0], ".results.*", "out"));
    assert!(
        (1..3).any(|n| bridge(&after[n], ".results.*", "in") > bridge(&before[n], ".results.*", "in")),
        "the other api nodes received results"
    );
    for scrape in &after {
        for subject in scrape.label_values("sagashop_bridge_messages_total", "subject") {
            // The cluster's name (a test's has its pid) comes first; no id after it.
            let (_, pattern) = subject.split_once('.').unwrap();
            assert!(
                !pattern.chars().any(|c| c.is_ascii_digit()),
                "subject with an id: {subject}"
            );
        }
    }
    assert_eq!(after[0].sum("sagashop_node_info", &[("node_id", "1")]), 1.0);
    // A node that started last gets its share at its first lease rounds.
    let shares = eventually(DEADLINE, || async {
        let owned: Vec<f64> = scrape_all(cluster)
            .await
            .iter()
            .map(|s| s.sum("sagashop_partitions_owned", &[]))
            .collect();
        owned.iter().all(|&o| o >= 1.0).then_some(owned)
    })
    .await;
    assert!(shares.is_some(), "an orchestrator never held a share");
}
