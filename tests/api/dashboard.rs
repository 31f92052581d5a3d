//! The actor dashboard (`/dashboard`): its JSON as an operator's page reads it (aggregates
//! without a token, every customer's sagas only with the admin token, ids as exact strings),
//! and the page itself in Debian's headless chromium while `sagashop loadgen` runs against
//! the real binary: its counters and charts move under load, and once the load has stopped
//! every number it shows equals what `/metrics` says.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::loadgen::Running;
use crate::support::cluster::Cluster;
use crate::support::scrape::scrape;
use crate::support::*;

const TOKEN: &str = "dashboard-test-admin-token";

#[actix_rt::test]
async fn aggregates_need_no_token_and_every_customer_saga_needs_the_admin_token() {
    let app = TestApp::spawn_with(|c| c.admin_token = Some(TOKEN.into())).await;
    let c = app.sign_up().await;
    let product = app.create_product("dashboard", 100, 10).await;
    let purchase = app.purchase_ok(&c.access, &[(product, 1)]).await;
    app.wait_finished(&c.access, purchase).await;

    let stats = app.get("/dashboard/api/stats", None).await;
    assert_eq!(stats.status, 200);
    let stats = stats.json();
    assert_eq!(stats["admin_enabled"], true);
    assert_eq!(stats["nodes"].as_array().unwrap().len(), 1, "{stats}");
    assert_eq!(stats["nodes"][0]["node_id"], 1);
    assert_eq!(stats["nodes"][0]["ready"], true);
    // The node view's ownership and fencing numbers: every series there from the start.
    let metrics = &stats["nodes"][0]["metrics"];
    let kinds: Vec<&str> = metrics["sagashop_partition_handovers_total"]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no handovers: {metrics}"))
        .iter()
        .map(|s| s["labels"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    for kind in ["claimed", "released", "lost"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    for family in [
        "sagashop_saga_writes_fenced_total",
        "sagashop_step_commands_fenced_total",
        "sagashop_sse_gap_fills_total",
        "sagashop_sse_gap_filled_events_total",
    ] {
        let samples = metrics[family]["samples"].as_array();
        assert!(
            samples.is_some_and(|s| !s.is_empty()),
            "{family}: {metrics}"
        );
    }
    let owned = &metrics["sagashop_partitions_owned"]["samples"][0]["value"];
    assert!(
        owned.as_f64().unwrap() > 0.0,
        "the embedded node owns the partitions"
    );

    // Every customer's sagas: refused without the token, and with a wrong one.
    for token in [None, Some("wrong")] {
        let refused = app.get("/dashboard/api/sagas", token).await;
        assert_eq!(refused.status, 401, "{token:?}");
        assert!(
            refused.json()["msg"]
                .as_str()
                .unwrap()
                .contains("admin token")
        );
        let refused = app
            .get(&format!("/dashboard/api/sagas/{purchase}"), token)
            .await;
        assert_eq!(refused.status, 401);
    }

    // With it: the newest first, ids as strings that hold the exact value.
    let list = app.get("/dashboard/api/sagas?limit=5", Some(TOKEN)).await;
    assert_eq!(list.status, 200);
    let newest = &list.json()["sagas"][0];
    assert_eq!(newest["purchase_id"], Value::String(purchase.to_string()));
    assert_eq!(newest["customer_id"], Value::String(c.id.to_string()));
    assert_eq!(newest["outcome"], "succeeded");
    assert!(purchase > 1 << 53, "ids exceed 2^53: {purchase}");
    let rolled_back = app
        .get("/dashboard/api/sagas?outcome=rolled_back", Some(TOKEN))
        .await;
    assert_eq!(rolled_back.json()["sagas"], Value::Array(vec![]));
    let bad = app
        .get("/dashboard/api/sagas?outcome=nope", Some(TOKEN))
        .await;
    assert_eq!(bad.status, 400);

    let one = app
        .get(&format!("/dashboard/api/sagas/{purchase}"), Some(TOKEN))
        .await
        .json();
    assert_eq!(one["purchase_id"], Value::String(purchase.to_string()));
    assert_eq!(one["status"], "SUCCEEDED");
    assert_eq!(one["owner_node"], 1);
    let steps: Vec<&str> = one["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps.len(), 6, "{one}");
    assert!(
        steps
            .iter()
            .all(|s| ["STATUS_EXUCUTE", "STATUS_SUCCESS"].contains(s))
    );
    let unknown = app.get("/dashboard/api/sagas/12345", Some(TOKEN)).await;
    assert_eq!(unknown.status, 404);
}

#[actix_rt::test]
async fn without_an_admin_token_the_admin_view_is_off_and_says_how_to_turn_it_on() {
    let app = TestApp::spawn().await;
    let stats = app.get("/dashboard/api/stats", None).await.json();
    assert_eq!(stats["admin_enabled"], false);
    let off = app.get("/dashboard/api/sagas", Some("anything")).await;
    assert_eq!(off.status, 403);
    let msg = off.json()["msg"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("--admin-token") && msg.contains("SAGASHOP_ADMIN_TOKEN"),
        "{msg}"
    );
}

#[actix_rt::test]
async fn the_page_is_one_embedded_document_revalidated_by_etag() {
    let app = TestApp::spawn().await;
    let page = app.get("/dashboard", None).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type").unwrap(),
        "text/html; charset=utf-8"
    );
    let html = String::from_utf8(page.body.clone()).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    assert!(
        html.contains(r#"<table id="ownership">"#),
        "the node view's ownership table"
    );
    for (path, kind) in [
        ("/dashboard/assets/dashboard.js", "text/javascript"),
        ("/dashboard/assets/dashboard.css", "text/css"),
        (
            "/dashboard/assets/vendor/uPlot.iife.min.js",
            "text/javascript",
        ),
    ] {
        let asset = app.get(path, None).await;
        assert_eq!(asset.status, 200, "{path}");
        assert!(asset.header("content-type").unwrap().starts_with(kind));
        assert_eq!(asset.header("cache-control").unwrap(), "no-cache");
        let etag = asset.header("etag").unwrap();
        let again = app
            .call_with_headers("GET", path, &[("If-None-Match", &etag)], None)
            .await;
        assert_eq!(again.status, 304, "{path}");
    }
    assert_eq!(app.get("/dashboard/assets/nope.js", None).await.status, 404);
}

#[actix_rt::test]
async fn any_node_of_a_cluster_shows_every_node_gathered_over_nats() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let roles = [
        "api,orchestrator,account,product",
        "api,orchestrator,order,payment",
        "api,orchestrator,product,order,payment",
    ];
    for (i, url) in cluster.urls().into_iter().enumerate() {
        let api = Api::over(vec![url]);
        let stats = eventually(DEADLINE, || async {
            let stats = api.get("/dashboard/api/stats", None).await.json();
            (stats["nodes"].as_array().map(Vec::len) == Some(3)).then_some(stats)
        })
        .await
        .unwrap_or_else(|| panic!("node {} does not show the three nodes", i + 1));
        assert_eq!(stats["answered_by"], i + 1);
        assert!(
            stats["cluster"]
                .as_str()
                .unwrap()
                .starts_with("sagashop_t_blackbox")
        );
        for (n, node) in stats["nodes"].as_array().unwrap().iter().enumerate() {
            assert_eq!(node["node_id"], n + 1);
            let shown: Vec<&str> = node["roles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            assert_eq!(shown.join(","), roles[n], "{node}");
            assert!(
                node["metrics"]["sagashop_node_info"].is_object(),
                "every node reports its registry: {node}"
            );
        }
        // The orchestrators own the partitions; the totals add the nodes up.
        let owned = &stats["totals"]["sagashop_partitions_owned"]["samples"][0]["value"];
        assert!(owned.as_f64().unwrap() > 0.0, "{}", stats["totals"]);
    }
}

/// The browser test's tools (Debian's chromium, `npm ci` in tests/browser: scripts/browser.sh),
/// or `None` after reporting the skip (a failure in CI).
fn browser_or_skip() -> Option<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        mariadb::skipped("no /usr/bin/chromium: run scripts/browser.sh");
        return None;
    }
    if !std::path::Path::new(dir)
        .join("node_modules/playwright-core")
        .exists()
    {
        mariadb::skipped("no tests/browser/node_modules: run scripts/browser.sh");
        return None;
    }
    Some(format!("{dir}/dashboard.mjs"))
}

/// `node dashboard.mjs`: its stdout lines as they come, its stdin to say the load stopped.
struct Page {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Page {
    fn open(script: &str, url: &str, screenshot: &str) -> Self {
        let mut child = Command::new("node")
            .args([script, url, TOKEN, screenshot])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stdin = child.stdin.take();
        Page {
            child,
            stdin,
            lines,
        }
    }

    /// The JSON after `prefix` on the script's first such line; fails when the script ends
    /// without printing it, or at the deadline.
    async fn wait_for(&mut self, prefix: &str, deadline: Duration) -> Value {
        let until = Instant::now() + deadline;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.strip_prefix(prefix).map(str::to_owned));
            if let Some(json) = found {
                return serde_json::from_str(&json).unwrap();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("dashboard.mjs ended ({status}) before {prefix:?}");
            }
            assert!(
                Instant::now() < until,
                "no {prefix:?} from dashboard.mjs in time"
            );
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `url` answers `/healthz`.
async fn wait_healthy(url: &str) {
    let client = awc::Client::default();
    let until = Instant::now() + DEADLINE;
    while !matches!(client.get(format!("{url}/healthz")).send().await, Ok(r) if r.status() == 200) {
        assert!(Instant::now() < until, "{url} did not come up");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_rt::test]
async fn the_page_follows_a_load_live_and_then_shows_exactly_what_metrics_says() {
    let Some(script) = browser_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (api, metrics) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{api}");
    let me = std::process::id().to_string();
    let _server = Running::start(&[
        "serve",
        "--listen",
        &format!("127.0.0.1:{api}"),
        "--metrics-listen",
        &format!("127.0.0.1:{metrics}"),
        "--admin-token",
        TOKEN,
        // A closed result stream is noticed at its next keep-alive: the gauge settles at once.
        "--sse-keepalive-seconds",
        "1",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--exit-with-pid",
        &me,
    ]);
    wait_healthy(&url).await;
    let load = Running::start(&[
        "loadgen",
        "--url",
        &url,
        "--duration",
        "300",
        "--concurrency",
        "8",
        "--customers",
        "4",
        "--products",
        "4",
        "--fail-ratio",
        "0.2",
        "--json",
    ]);
    let screenshot = format!("{}/dashboard.png", env!("CARGO_TARGET_TMPDIR"));
    let mut page = Page::open(&script, &url, &screenshot);

    // Under load the counters and the chart move, and one saga's history opens.
    let live = page.wait_for("LIVE ", Duration::from_secs(120)).await;
    let started: Vec<f64> = serde_json::from_value(live["started"].clone()).unwrap();
    assert!(started[0] < started[1] && started[1] < started[2], "{live}");
    assert!(live["points"].as_u64().unwrap() >= 3, "{live}");
    assert!(live["detailSteps"].as_u64().unwrap() >= 1, "{live}");

    // The load ends; the page settles on exactly what /metrics says.
    load.sigusr1();
    let report: Value = serde_json::from_str(load.finish().await.trim()).unwrap();
    page.say("stopped");
    let numbers = page.wait_for("NUMBERS ", Duration::from_secs(120)).await;
    let scraped = scrape(&format!("http://127.0.0.1:{metrics}/metrics")).await;
    let mut compared = 0;
    for shown in numbers.as_array().unwrap() {
        let metric = shown["metric"].as_str().unwrap();
        assert!(
            scraped.0.iter().any(|s| s.name == metric),
            "the page shows {metric}, which /metrics does not have"
        );
        let want: BTreeMap<String, String> = shown["labels"]
            .as_str()
            .unwrap()
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let expected = scraped.matching(metric, |labels| shown["sum"] == true || *labels == want);
        let text = shown["text"].as_str().unwrap().replace(',', "");
        let on_page: f64 = text.parse().unwrap_or_else(|_| panic!("{shown}"));
        assert_eq!(on_page, expected, "{shown} against /metrics");
        compared += 1;
    }
    assert!(
        compared >= 12,
        "only {compared} numbers compared: {numbers}"
    );
    // The node view's ownership and fencing cells were among them.
    for metric in [
        "sagashop_partitions_owned",
        "sagashop_partition_handovers_total",
        "sagashop_saga_writes_fenced_total",
        "sagashop_step_commands_fenced_total",
        "sagashop_sse_gap_fills_total",
        "sagashop_sse_gap_filled_events_total",
    ] {
        assert!(
            numbers
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["metric"] == metric),
            "the page shows no {metric}: {numbers}"
        );
    }
    let shown = |id: &str| -> f64 {
        let metric = numbers.as_array().unwrap().iter();
        let found = metric
            .filter(|n| n["labels"] == id)
            .map(|n| n["text"].as_str().unwrap().replace(',', ""))
            .next()
            .unwrap_or_else(|| panic!("no {id} on the page"));
        found.parse().unwrap()
    };
    // What the load generator counted is what the page counted.
    assert_eq!(
        shown("outcome=succeeded"),
        report["succeeded"].as_f64().unwrap()
    );
    assert_eq!(
        shown("outcome=rolled_back"),
        report["rolled_back"].as_f64().unwrap()
    );
    assert!(report["rolled_back"].as_u64().unwrap() > 0, "{report}");
    assert!(std::path::Path::new(&screenshot).exists());
}
