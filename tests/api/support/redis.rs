//! Redis of a test's own: one `redis-server` on a spare port that a test may stop and start
//! again ([`RedisServer`], the crate's test support, [`server`] here), or a six-node Redis
//! Cluster on spare ports (`scripts/redis-cluster.sh` with the test's ports and folder,
//! [`RedisCluster`]). Both are stopped when dropped, so the shared Redis on 6379 is never
//! stopped, flushed or filled by a test's nodes. Outside CI a missing `redis-server` makes a
//! test say SKIPPED; in CI it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

pub use sagashop::cache::test_support::{RedisServer, cli};
use sagashop::cache::test_support::{installed, left_by_gone_run, sweep_servers};

use super::free_port;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/redis-cluster.sh");

/// Which Redis a test's nodes cache in, and the flags that tell them.
pub enum Redis {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Redis {
    /// The nodes' flags: `--redis-url` or `--redis-cluster`.
    pub fn flags(&self) -> Vec<String> {
        match self {
            Redis::Single(s) => vec!["--redis-url".into(), s.url()],
            Redis::Cluster(c) => vec!["--redis-cluster".into(), c.seeds()],
        }
    }

    /// Every `host:port` to run a command on (each node of a cluster).
    pub fn ports(&self) -> Vec<u16> {
        match self {
            Redis::Single(s) => vec![s.port],
            Redis::Cluster(c) => c.ports.clone(),
        }
    }

    /// Deletes every key matching `pattern` (`bloom:*`) on every node; how many it deleted.
    /// Replicas refuse writes (and hold copies of their masters' keys), so they are passed
    /// over.
    pub fn delete_matching(&self, pattern: &str) -> usize {
        let mut deleted = 0;
        for port in self.ports() {
            if self.is_replica(port) {
                continue;
            }
            let keys = cli(port, &["--scan", "--pattern", pattern]);
            for key in keys.lines().filter(|k| !k.is_empty()) {
                let n = cli(port, &["-c", "DEL", key]);
                deleted += n.trim().parse::<usize>().unwrap_or(0);
            }
        }
        deleted
    }

    /// Keys matching `pattern` on every master.
    pub fn keys_matching(&self, pattern: &str) -> Vec<String> {
        self.ports()
            .into_iter()
            .filter(|p| !self.is_replica(*p))
            .flat_map(|port| {
                cli(port, &["--scan", "--pattern", pattern])
                    .lines()
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn is_replica(&self, port: u16) -> bool {
        matches!(self, Redis::Cluster(_)) && cli(port, &["ROLE"]).starts_with("slave")
    }
}

/// A redis-server of the test's own on a spare port, its files under the target dir; `None`
/// as for [`RedisServer::start`]. First stops the servers and clusters gone test runs left.
pub fn server(test: &str) -> Option<RedisServer> {
    sweep_clusters();
    RedisServer::start(test, &servers_dir(), free_port())
}

/// A six-node Redis Cluster of the test's own (three masters, a replica each), started by
/// `scripts/redis-cluster.sh` on spare ports (client and bus ports) with its files in a
/// folder under the target dir named after the test process, so a later run stops one a
/// killed run left ([`sweep_clusters`]).
pub struct RedisCluster {
    pub ports: Vec<u16>,
    bus: Vec<u16>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts one for the test `test`; `None` as for [`server`].
    pub fn start(test: &str) -> Option<Self> {
        if !installed(test) {
            return None;
        }
        sweep_servers(&servers_dir());
        sweep_clusters();
        let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
        let bus: Vec<u16> = (0..6).map(|_| free_port()).collect();
        let dir = clusters_dir().join(format!("{test}_{}_{}", super::unique(), std::process::id()));
        let cluster = Self { ports, bus, dir };
        let (ok, out) = cluster.script("start");
        assert!(ok, "scripts/redis-cluster.sh start failed:\n{out}");
        Some(cluster)
    }

    /// The seeds nodes get (`--redis-cluster`): every node, comma-separated.
    pub fn seeds(&self) -> String {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        seeds.join(",")
    }

    fn script(&self, command: &str) -> (bool, String) {
        run_script(&self.dir, &self.ports, &self.bus, command)
    }
}

fn run_script(dir: &Path, ports: &[u16], bus: &[u16], command: &str) -> (bool, String) {
    let list = |ports: &[u16]| {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        ports.join(",")
    };
    let out = Command::new(SCRIPT)
        .arg(command)
        .env("REDIS_CLUSTER_DIR", dir)
        .env("REDIS_CLUSTER_PORTS", list(ports))
        .env("REDIS_CLUSTER_BUS_PORTS", list(bus))
        .env("REDIS_CLUSTER_MAXMEMORY", "64mb")
        // Its nodes stop when this process is gone, also when the cluster is never dropped
        // (the shared black-box cluster's) or the run is killed.
        .env(
            "REDIS_CLUSTER_EXIT_WITH_PID",
            std::process::id().to_string(),
        )
        .output();
    match out {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("{SCRIPT}: {e}")),
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        let (ok, out) = self.script("stop");
        if ok {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else if !std::thread::panicking() {
            panic!("scripts/redis-cluster.sh stop failed:\n{out}");
        }
    }
}

/// Where the tests' Redis Clusters keep their files: one folder each, named
/// `<test>_<n>_<pid>`, holding one folder per node named by its port.
fn clusters_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("redis-clusters")
}

/// Where the tests' single servers keep their files: one folder each, named `<port>_<pid>`.
fn servers_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("redis-servers")
}

/// Stops the Redis Clusters that test processes that are gone left running (a killed run)
/// by the script (it finds the nodes by their pid files), and removes their files.
fn sweep_clusters() {
    let Ok(entries) = std::fs::read_dir(clusters_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !left_by_gone_run(&name) {
            continue;
        }
        let ports: Vec<u16> = std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        if ports.len() == 6 {
            // The bus ports only matter to `start`; `stop` finds the nodes by pid file.
            let (ok, _) = run_script(&entry.path(), &ports, &ports, "stop");
            if !ok {
                continue;
            }
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// The Redis the test process's environment asks a cluster's nodes to use: `REDIS=single`
/// (a server of the test's own), `REDIS=cluster` (a Redis Cluster of its own), or unset /
/// `none` (none: each node's in-process cache, as before Redis).
pub fn from_env(test: &str) -> Option<Redis> {
    match std::env::var("REDIS").as_deref() {
        Ok("single") => server(test).map(Redis::Single),
        Ok("cluster") => RedisCluster::start(test).map(Redis::Cluster),
        Ok("none") | Err(_) => None,
        Ok(other) => panic!("REDIS must be single, cluster or none, not {other:?}"),
    }
}
