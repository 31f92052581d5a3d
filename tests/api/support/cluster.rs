//! A local three-node cluster of real `sagashop` binaries (`scripts/cluster.sh`) sharing the
//! local MariaDB and NATS, for the black-box tests: driven over HTTP only, through an [`Api`]
//! that spreads the requests over the nodes. No fault switches and no clock: those exist in
//! an in-process [`super::TestApp`] only.
//!
//! Every cluster's name ends with the test process's id, so two test runs on one machine (two
//! checkouts, say) never share databases or NATS subjects; and its nodes get
//! `--exit-with-pid` of the test process, so none should outlive the run (the next run's
//! [`sweep`] stops any that did). When MariaDB or NATS
//! cannot be reached, a test fails in CI and says it did not run elsewhere, as the MariaDB
//! tests do ([`mariadb::skipped`]).

use std::io::{BufRead as _, BufReader};
use std::net::{TcpListener, TcpStream, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::redis::Redis;
use super::{Api, mariadb, redis};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh");

/// The HS256 secret every test cluster's nodes share.
const JWT_SECRET: &str = "cluster-test-secret";

/// The script's nodes, numbered from 1.
const NODES: u16 = 3;

/// A running cluster. Dropping it stops its nodes and drops its databases, then stops its
/// Redis.
pub struct Cluster {
    settings: Settings,
    /// The Redis of the test's own its nodes cache in, as `REDIS` in the test process's
    /// environment asks (`single`, `cluster`; unset or `none`: none, as before Redis).
    redis: Option<Redis>,
}

/// What `scripts/cluster.sh` is told about a cluster.
struct Settings {
    /// NATS subject prefix and database prefix (CLUSTER_NAME).
    name: String,
    /// Pid files, logs and the nodes' data dirs (CLUSTER_DIR).
    dir: PathBuf,
    /// Node N listens on 127.0.0.1:port_base+N (CLUSTER_PORT_BASE), and serves its metrics
    /// on port_base+NODES+N (CLUSTER_METRICS_PORT_BASE).
    port_base: u16,
    /// More environment for the nodes (the script passes its environment on).
    env: Vec<(String, String)>,
}

/// The shared cluster, or why there is none.
enum Shared {
    Up(Cluster),
    /// MariaDB or NATS is unreachable.
    Unreachable(String),
    /// The cluster did not start (the script's output).
    Failed(String),
}

impl Cluster {
    /// Starts a fresh cluster named `name` (unique within the test binary). `None` when
    /// MariaDB or NATS cannot be reached outside CI (after saying so); in CI that panics.
    pub fn start(name: &str) -> Option<Cluster> {
        Self::start_with_env(name, &[])
    }

    /// [`Cluster::start`] with more environment for every node (`OTEL_*`, say).
    pub fn start_with_env(name: &str, env: &[(&str, &str)]) -> Option<Cluster> {
        if let Err(reason) = servers_reachable() {
            mariadb::skipped(&format!("{name}: {reason}"));
            return None;
        }
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Self::launch(name, env).unwrap_or_else(|e| panic!("{e}")))
    }

    /// The cluster every test of the fault-free black-box suite shares: started by the first
    /// test that asks, never stopped (its nodes exit with the test process; a later run drops
    /// its databases, see [`sweep`]). `None` as for [`Cluster::start`].
    pub fn shared() -> Option<&'static Cluster> {
        static SHARED: OnceLock<Shared> = OnceLock::new();
        let shared = SHARED.get_or_init(|| match servers_reachable() {
            Err(reason) => Shared::Unreachable(reason),
            Ok(()) => match Self::launch("sagashop_t_blackbox", Vec::new()) {
                Ok(cluster) => Shared::Up(cluster),
                Err(e) => Shared::Failed(e),
            },
        });
        match shared {
            Shared::Up(cluster) => Some(cluster),
            Shared::Unreachable(reason) => {
                mariadb::skipped(&format!("the shared cluster: {reason}"));
                None
            }
            Shared::Failed(e) => panic!("the shared cluster did not start: {e}"),
        }
    }

    /// An [`Api`] over the shared cluster's nodes, taken in turn (see [`Cluster::shared`]).
    pub fn shared_api() -> Option<Api> {
        Self::shared().map(Cluster::api)
    }

    /// Sweeps what gone test runs left, then starts the cluster `name` on free ports. A start
    /// that fails has stopped its nodes; its files (the node logs) and databases are left to
    /// the next run's [`sweep`].
    fn launch(name: &str, mut env: Vec<(String, String)>) -> Result<Cluster, String> {
        sweep();
        let name = format!("{name}_{}", std::process::id());
        let redis = redis::from_env(&name);
        env.extend(redis_env(redis.as_ref()));
        let settings = Settings {
            dir: clusters_dir().join(&name),
            name,
            port_base: free_port_base(),
            env,
        };
        settings.script(&["start"])?;
        Ok(Cluster { settings, redis })
    }

    /// The Redis the nodes cache in, when they have one (see [`Cluster`]).
    pub fn redis(&self) -> Option<&Redis> {
        self.redis.as_ref()
    }

    /// The nodes' base URLs, node 1 first.
    pub fn urls(&self) -> Vec<String> {
        (1..=NODES)
            .map(|n| format!("http://127.0.0.1:{}", self.settings.port_base + n))
            .collect()
    }

    /// Each node's `/metrics` URL, node 1 first.
    pub fn metrics_urls(&self) -> Vec<String> {
        (1..=NODES)
            .map(|n| {
                format!(
                    "http://127.0.0.1:{}/metrics",
                    self.settings.port_base + NODES + n
                )
            })
            .collect()
    }

    /// An [`Api`] over the nodes, taken in turn; [`Api::node`] pins one.
    pub fn api(&self) -> Api {
        Api::over(self.urls())
    }

    /// Sagas that reached a terminal state, read from the cluster's saga store.
    pub async fn finished_sagas(&self) -> i64 {
        let saga = mariadb::database_name(&self.settings.name, sagashop::config::ServiceDb::Saga);
        mariadb::count_rows(&mariadb::server(), &saga, "sagas", "finished = 1").await
    }

    /// The name of the cluster's service database `db` on the test MariaDB.
    pub fn database(&self, db: sagashop::config::ServiceDb) -> String {
        mariadb::database_name(&self.settings.name, db)
    }

    /// Whether node `n` holds saga partition `partition` now (the partitions table says so).
    pub async fn holds(&self, n: u16, partition: sagashop::domain::partition::PartitionId) -> bool {
        let saga = mariadb::database_name(&self.settings.name, sagashop::config::ServiceDb::Saga);
        let filter = format!("partition_id = {} AND owner_node = {n}", partition.0);
        mariadb::count_rows(&mariadb::server(), &saga, "partitions", &filter).await == 1
    }

    /// Kills node `n` (SIGKILL: a crash); returns once it is gone.
    pub fn kill(&self, n: u16) {
        self.settings
            .script(&["kill", &n.to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Pauses node `n` (SIGSTOP: a stall, as in a long GC pause or a frozen VM): it keeps its
    /// sockets but answers nothing and renews no lease. Returns once it is stopped.
    pub fn pause(&self, n: u16) {
        self.settings
            .script(&["pause", &n.to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Resumes a paused node `n` (SIGCONT); returns once it runs again.
    pub fn resume(&self, n: u16) {
        self.settings
            .script(&["resume", &n.to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts node `n` again, as `start` did, and waits until it is ready.
    pub fn start_node(&self, n: u16) {
        self.settings
            .script(&["start-node", &n.to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Each node's pid, alive and ready state and URL, one line per node, as the script
    /// prints them (whether or not every node is ready).
    pub fn status(&self) -> String {
        self.settings.run(&["status"]).1
    }
}

impl Settings {
    /// Runs `scripts/cluster.sh` on this cluster: its output, or an error that holds it.
    fn script(&self, args: &[&str]) -> Result<String, String> {
        match self.run(args) {
            (true, text) => Ok(text),
            (false, text) => Err(format!(
                "cluster.sh {} ({}, files in {}) failed:\n{text}",
                args.join(" "),
                self.name,
                self.dir.display()
            )),
        }
    }

    /// Runs `scripts/cluster.sh` on this cluster: whether it succeeded, and its output.
    fn run(&self, args: &[&str]) -> (bool, String) {
        let port_base = self.port_base.to_string();
        let pid = std::process::id().to_string();
        let out = Command::new(SCRIPT)
            .args(args)
            .env("CLUSTER_NAME", &self.name)
            .env("CLUSTER_DIR", &self.dir)
            .env("CLUSTER_PORT_BASE", &port_base)
            .env(
                "CLUSTER_METRICS_PORT_BASE",
                (self.port_base + NODES).to_string(),
            )
            .env("CLUSTER_FRESH", "1")
            .env("JWT_SECRET", JWT_SECRET)
            .env("SAGASHOP_BIN", env!("CARGO_BIN_EXE_sagashop"))
            .env("SAGASHOP_EXIT_WITH_PID", &pid)
            .env("MYSQL_URL", mariadb::server())
            .env("NATS_URL", nats_url())
            // As an in-process app in the tests: idle streams get a keep-alive every second.
            .env("SAGASHOP_SSE_KEEPALIVE_SECONDS", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output();
        let out = match out {
            Ok(out) => out,
            Err(e) => return (false, format!("{SCRIPT}: {e}")),
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Drop for Cluster {
    /// Stops the nodes and drops the databases; removes the cluster's files unless the test
    /// failed (the node logs tell why; the next run's [`sweep`] removes them).
    fn drop(&mut self) {
        let Settings { name, dir, .. } = &self.settings;
        let stopped = self.settings.script(&["stop"]);
        if std::thread::panicking() {
            eprintln!(
                "cluster {name}: files kept in {}, databases {name}_* kept (the next run drops them)",
                dir.display()
            );
            return;
        }
        let dropped = mariadb::drop_databases(&mariadb::server(), mariadb::database_names(name));
        let _ = std::fs::remove_dir_all(dir);
        if let Err(e) = stopped {
            panic!("stopping the cluster: {e}");
        }
        if let Err(e) = dropped {
            panic!("dropping the databases of {name}: {e}");
        }
    }
}

/// What `scripts/cluster.sh` is told about the nodes' Redis (`REDIS` and its address).
fn redis_env(redis: Option<&Redis>) -> Vec<(String, String)> {
    let pair = |k: &str, v: String| (k.to_owned(), v);
    match redis {
        None => vec![pair("REDIS", "none".into())],
        Some(Redis::Single(server)) => {
            vec![
                pair("REDIS", "single".into()),
                pair("REDIS_URL", server.url()),
            ]
        }
        Some(Redis::Cluster(cluster)) => vec![
            pair("REDIS", "cluster".into()),
            pair("REDIS_CLUSTER_SEEDS", cluster.seeds()),
        ],
    }
}

/// The NATS server the clusters use (`SAGASHOP_TEST_NATS_URL`, else the local one).
pub fn nats_url() -> String {
    std::env::var("SAGASHOP_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Whether MariaDB and NATS both answer (the error names the one that does not).
fn servers_reachable() -> Result<(), String> {
    mariadb::reachable(&mariadb::server()).map_err(|e| e.to_string())?;
    nats_reachable(&nats_url()).map_err(|e| format!("NATS at {} is unreachable: {e}", nats_url()))
}

/// A NATS server greets a new connection with its `INFO` line at once.
fn nats_reachable(url: &str) -> std::io::Result<()> {
    let wait = Duration::from_secs(2);
    let host = url.trim_start_matches("nats://");
    let addr = host
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let stream = TcpStream::connect_timeout(&addr, wait)?;
    stream.set_read_timeout(Some(wait))?;
    let mut greeting = String::new();
    BufReader::new(stream).read_line(&mut greeting)?;
    if greeting.starts_with("INFO") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("not NATS: {greeting:?}")))
    }
}

/// Where the test clusters keep their files: one directory per cluster, named as it is.
fn clusters_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("clusters")
}

/// Removes what the clusters of test processes that are gone left behind: nodes still
/// running, databases and files. A shared cluster is never dropped (its databases stay, and
/// its nodes only exit with its process if `--exit-with-pid` works), and a test process
/// killed outright drops nothing.
fn sweep() {
    let Ok(entries) = std::fs::read_dir(clusters_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.rsplit('_').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let left = Settings {
            dir: entry.path(),
            name,
            // `stop` finds the nodes by their pid files, not by their ports.
            port_base: 0,
            env: Vec::new(),
        };
        let dropped = left.script(&["stop"]).is_ok()
            && mariadb::drop_databases(&mariadb::server(), mariadb::database_names(&left.name))
                .is_ok();
        if dropped {
            let _ = std::fs::remove_dir_all(&left.dir);
        }
    }
}

/// A base port whose next 2 x [`NODES`] ports (the nodes' API, then their metrics) are free
/// right now, below the ephemeral range (32768 and up), where the test process's own
/// outgoing connections take their ports.
fn free_port_base() -> u16 {
    let span = 2 * NODES + 1;
    let slots = (32_000 - 20_000) / span;
    let first = (super::unique() % u64::from(slots)) as u16;
    (0..slots)
        .map(|i| 20_000 + (first + i) % slots * span)
        .find(|base| (1..=2 * NODES).all(|n| TcpListener::bind(("127.0.0.1", base + n)).is_ok()))
        .expect("six free ports between 20000 and 32000")
}
