//! The `sagashop` binary's command line: `sagashop loadgen` and its ceiling probe, run as the
//! real binary against a real (embedded) sagashop (the figures it reports must match what
//! happened, and its invariant check must pass), and the help a user reads. A cluster is
//! played by one app under several URLs: two spellings of its address, a port where nothing
//! listens (a dead node), and a relay in front of it that the test kills and revives.

use std::cell::{Cell, RefCell};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;

use crate::support::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A `sagashop` binary running with `args` (stdout piped); killed if the test fails first.
pub(crate) struct Running {
    child: Option<Child>,
    args: String,
}

impl Running {
    pub(crate) fn start(args: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_sagashop"))
            .env("SAGASHOP_METRICS_LISTEN", "off")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sagashop runs");
        Running {
            child: Some(child),
            args: args.join(" "),
        }
    }

    /// Sends SIGUSR1: `loadgen` stops starting purchases and goes to its check.
    pub(crate) fn sigusr1(&self) {
        let pid = self.child.as_ref().unwrap().id();
        #[allow(unsafe_code)] // libc has no safe kill(2)
        // SAFETY: kill(2) on the child we spawned; it only sends a signal.
        let signalled = unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
        assert_eq!(signalled, 0, "cannot signal the load generator");
    }

    /// Waits for the binary off the actix thread (the app under test lives on it), checks
    /// that it succeeded and returns its stdout.
    pub(crate) async fn finish(mut self) -> String {
        let child = self.child.take().unwrap();
        let output = actix_rt::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .expect("sagashop ends");
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(
            output.status.success(),
            "sagashop {} failed: {}{stdout}",
            self.args,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the built `sagashop` binary with `args` to its end and returns its stdout.
async fn sagashop(args: &[&str]) -> String {
    Running::start(args).finish().await
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
    let n = |field: &str| n(&report, field);
    assert_eq!(n("completed"), 120);
    assert_eq!(n("succeeded") + n("rolled_back"), 120);
    assert!(
        n("rolled_back") > 0,
        "a quarter of the purchases are built to fail"
    );
    assert!(n("succeeded") > 0);
    assert_eq!(
        (n("errors"), n("timeouts"), n("failed_requests")),
        (0, 0, 0)
    );
    let ms = |q: &str| report["latency_ms"][q].as_f64().unwrap();
    assert!(ms("p50") > 0.0 && ms("p50") <= ms("p99"));
    let verdict = &report["invariants"];
    assert_eq!(verdict["purchases_checked"], 120);
    assert_eq!(verdict["violations"], serde_json::json!([]), "{verdict}");
}

/// The arguments of `loadgen --json` against the nodes `urls` (comma-separated), with 3
/// customers and a quarter of the purchases built to fail, then `extra`.
fn cluster_args<'a>(urls: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "loadgen",
        "--url",
        urls,
        "--concurrency",
        "6",
        "--customers",
        "3",
        "--products",
        "3",
        "--fail-ratio",
        "0.25",
        "--json",
    ];
    args.extend(extra);
    args
}

/// Field `field` of a report as a number.
fn n(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

/// Each node's `field` in the report, in `--url` order.
fn per_node(report: &Value, field: &str) -> Vec<u64> {
    let nodes = report["nodes"].as_array().expect("nodes");
    nodes.iter().map(|node| n(node, field)).collect()
}

/// Every purchase the run created checked out: none lost, doubled, or off the books.
fn assert_sound(report: &Value) {
    let verdict = &report["invariants"];
    assert_eq!(verdict["violations"], serde_json::json!([]), "{report}");
    assert_eq!(n(report, "timeouts"), 0, "{report}");
    assert_eq!(n(report, "errors"), 0, "{report}");
}

#[actix_rt::test]
async fn loadgen_spreads_customers_over_every_url_and_streams_each_on_the_next_node() {
    let app = TestApp::spawn().await;
    let other_spelling = app.url.replace("127.0.0.1", "localhost");
    let urls = format!("{},{other_spelling}", app.url);
    let report = json(&sagashop(&cluster_args(&urls, &["--count", "90"])).await);
    assert_eq!(report["url"], urls.as_str());
    assert_eq!(n(&report, "completed"), 90);
    assert_eq!(report["invariants"]["purchases_checked"], 90);
    assert_sound(&report);
    assert_eq!(n(&report, "failed_requests"), 0);
    assert_eq!(n(&report, "stream_reconnects"), 0);
    // Customers 0, 1, 2 buy on nodes 0, 1, 0 and stream from nodes 1, 0, 1.
    assert_eq!(per_node(&report, "streams"), [1, 2], "{report}");
    let answered = per_node(&report, "answered");
    assert!(answered.iter().all(|&a| a > 0), "{report}");
}

#[actix_rt::test]
async fn loadgen_passes_over_a_node_where_nothing_listens_and_counts_its_failed_requests() {
    let app = TestApp::spawn().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let urls = format!("{},{dead}", app.url);
    let report = json(&sagashop(&cluster_args(&urls, &["--count", "90"])).await);
    assert_eq!(n(&report, "completed"), 90, "{report}");
    assert_sound(&report);
    let failed = n(&report, "failed_requests");
    assert!(failed > 0, "{report}");
    assert_eq!(per_node(&report, "failed_requests"), [0, failed]);
    assert_eq!(per_node(&report, "answered")[1], 0);
    // Every stream, also those meant for the dead node, is held by the live one.
    assert_eq!(per_node(&report, "streams"), [3, 0], "{report}");
}

#[actix_rt::test]
async fn loadgen_moves_off_a_node_that_dies_and_uses_it_again_once_it_is_back() {
    let app = TestApp::spawn().await;
    let relay = Relay::start(&app.url).await;
    let urls = format!("{},{}", app.url, relay.url);
    // Ended by SIGUSR1 below; the duration is only a bound.
    let loadgen = Running::start(&cluster_args(&urls, &["--duration", "600"]));
    relay.wait_created(20).await;
    // The node dies: its connections (streams, purchases in flight) are reset, and so are
    // the next two connections made to it. Then it serves again.
    relay.kill(2);
    eventually(DEADLINE, || async {
        (relay.resets_left() == 0).then_some(())
    })
    .await
    .expect("the load generator tried the dead node");
    let revived = relay.created();
    relay.wait_created(revived + 10).await;
    loadgen.sigusr1();
    let report = json(&loadgen.finish().await);
    assert_sound(&report);
    assert!(n(&report, "completed") > 0, "{report}");
    assert!(per_node(&report, "failed_requests")[1] > 0, "{report}");
    assert_eq!(per_node(&report, "failed_requests")[0], 0, "{report}");
    // Customers 0 and 2 streamed from the relay: both streams were cut and resumed.
    assert!(n(&report, "stream_reconnects") >= 2, "{report}");
}

/// A TCP relay in front of the app, playing a second node that can die: it forwards
/// connections until [`Relay::kill`], which resets every connection it carries and then the
/// next few new ones, after which it forwards again.
struct Relay {
    url: String,
    state: Rc<RelayState>,
}

#[derive(Default)]
struct RelayState {
    /// `201 Created` answers relayed back.
    created: Cell<u64>,
    /// New connections still to reset before the node is back.
    resets_left: Cell<u64>,
    /// The connections being relayed.
    live: RefCell<Vec<actix_rt::task::JoinHandle<()>>>,
}

impl Relay {
    /// Starts relaying a fresh local port to the app at `target` (`http://host:port`).
    async fn start(target: &str) -> Self {
        let target = target.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Rc::new(RelayState::default());
        let accepting = state.clone();
        actix_rt::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                client.set_zero_linger().unwrap();
                if accepting.resets_left.get() > 0 {
                    accepting.resets_left.set(accepting.resets_left.get() - 1);
                    continue; // dropped with zero linger: reset
                }
                let relayed = actix_rt::spawn(relay(client, target.clone(), accepting.clone()));
                accepting.live.borrow_mut().push(relayed);
            }
        });
        Relay { url, state }
    }

    fn created(&self) -> u64 {
        self.state.created.get()
    }

    fn resets_left(&self) -> u64 {
        self.state.resets_left.get()
    }

    /// Waits until `n` answers `201 Created` went through the relay.
    async fn wait_created(&self, n: u64) {
        eventually(DEADLINE, || async { (self.created() >= n).then_some(()) })
            .await
            .unwrap_or_else(|| panic!("{} of {n} purchases through the relay", self.created()));
    }

    /// The node dies: every relayed connection is reset, then the next `resets` new ones.
    fn kill(&self, resets: u64) {
        self.state.resets_left.set(resets);
        for connection in self.state.live.borrow_mut().drain(..) {
            connection.abort();
        }
    }
}

/// Relays one connection to `target` until either side closes, counting `201` answers.
async fn relay(client: TcpStream, target: String, state: Rc<RelayState>) {
    let Ok(server) = TcpStream::connect(&target).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::io::copy(&mut client_read, &mut server_write);
    let downstream = async {
        let mut buf = vec![0; 16 << 10];
        while let Ok(read @ 1..) = server_read.read(&mut buf).await {
            let chunk = &buf[..read];
            let created = chunk.windows(12).filter(|w| w == b"HTTP/1.1 201").count();
            state.created.set(state.created.get() + created as u64);
            if client_write.write_all(chunk).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
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

/// `loadgen --reads` against a node (its in-process cache only): every read answers the
/// product asked for, the rate and latency are reported, and the cache figures come from the
/// node's `/metrics` over the run: the local level answered most reads, and the database was
/// read at most once per product.
#[actix_rt::test]
async fn loadgen_reads_reports_rate_latency_and_cache_hit_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let flags = ["--metrics-listen", listen.as_str()];
    let node = crate::support::nodes::Node::embedded(dir.path(), &flags, &[]).await;
    let metrics = format!("http://{listen}/metrics");
    let out = sagashop(&[
        "loadgen",
        "--reads",
        "--url",
        &node.url,
        "--read-products",
        "20",
        "--concurrency",
        "4",
        "--duration",
        "2",
        "--metrics-url",
        &metrics,
        "--json",
    ])
    .await;
    let report = json(&out);
    let n = |field: &str| n(&report, field);
    assert_eq!(n("products"), 20);
    assert!(n("ok") > 40, "{report}");
    assert_eq!((n("wrong"), n("failed_requests")), (0, 0), "{report}");
    assert!(report["requests_per_second"].as_f64().unwrap() > 0.0);
    let ms = |q: &str| report["latency_ms"][q].as_f64().unwrap();
    assert!(ms("p50") > 0.0 && ms("p50") <= ms("p99"), "{report}");
    let local = &report["levels"][0];
    assert_eq!(local["level"], "local", "{report}");
    assert!(local["hit_ratio"].as_f64().unwrap() > 0.5, "{report}");
    assert!(
        report["database_loads"].as_f64().unwrap() <= 20.0,
        "{report}"
    );
}
