//! Redis of a test's own: one `redis-server` on a spare port that a test may stop and start
//! again ([`RedisServer`]), or a six-node Redis Cluster on spare ports
//! (`scripts/redis-cluster.sh` with the test's ports and folder, [`RedisCluster`]). Both are
//! stopped when dropped, so the shared Redis on 6379 is never stopped, flushed or filled by a
//! test's nodes. Outside CI a missing `redis-server` makes a test say SKIPPED; in CI it fails.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{DEADLINE, eventually, free_port};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/redis-cluster.sh");

/// Whether redis-server and redis-cli are installed; `false` (after saying SKIPPED) outside
/// CI when they are not. In CI it panics.
fn installed(test: &str) -> bool {
    let found = ["redis-server", "redis-cli"]
        .iter()
        .all(|bin| Command::new(bin).arg("--version").output().is_ok());
    if !found {
        let reason =
            format!("{test}: redis-server is not installed (scripts/services.sh installs it)");
        assert!(std::env::var_os("CI").is_none(), "{reason}");
        let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
    }
    found
}

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

/// Runs redis-cli against 127.0.0.1:`port`; its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A redis-server of the test's own, on a spare port, without persistence. Its pid file and
/// log are in a folder under the target dir named after the test process, so a later run
/// stops one that a killed run (or a shared cluster, never dropped) left ([`sweep`]).
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one for the test `test`; `None` (after saying SKIPPED) when redis-server is not
    /// installed outside CI. In CI it panics. Blocks until it answers PING (a few ms).
    pub fn start(test: &str) -> Option<Self> {
        if !installed(test) {
            return None;
        }
        sweep();
        let port = free_port();
        let dir = servers_dir().join(format!("{port}_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port,
            child: None,
            dir,
        };
        server.spawn();
        let deadline = std::time::Instant::now() + DEADLINE;
        while cli(port, &["PING"]).trim() != "PONG" {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server answers PING"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Some(server)
    }

    /// The URL nodes connect to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: its clients see their connections drop; it keeps nothing).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory-policy", "volatile-lru"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(self.dir.join("redis.pid"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
    }

    /// Starts it again on the same port (empty) and waits until it answers PING.
    pub async fn resume(&mut self) {
        self.spawn();
        let port = self.port;
        let up = eventually(DEADLINE, || async move {
            (cli(port, &["PING"]).trim() == "PONG").then_some(())
        })
        .await;
        up.expect("redis-server answers PING");
    }

    /// As [`Redis::flags`], for the tests that stop it too.
    pub fn flags(&self) -> Vec<String> {
        vec!["--redis-url".into(), self.url()]
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A six-node Redis Cluster of the test's own (three masters, a replica each), started by
/// `scripts/redis-cluster.sh` on spare ports (client and bus ports) with its files in a
/// folder under the target dir named after the test process, so a later run stops one a
/// killed run left ([`sweep`]).
pub struct RedisCluster {
    pub ports: Vec<u16>,
    bus: Vec<u16>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts one for the test `test`; `None` as for [`RedisServer::start`].
    pub fn start(test: &str) -> Option<Self> {
        if !installed(test) {
            return None;
        }
        sweep();
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

/// Whether the process of test run `pid` (the last `_` part of `name`) is gone.
fn left_by_gone_run(name: &str) -> bool {
    name.rsplit('_')
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|pid| {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        })
}

/// Stops what the Redis servers and clusters of test processes that are gone left running
/// (a killed run, a shared cluster that is never dropped), by the pid files they recorded
/// (believed only when that pid is a redis-server on that port), and removes their files.
fn sweep() {
    for entry in std::fs::read_dir(servers_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !left_by_gone_run(&name) {
            continue;
        }
        let port = name.split('_').next().unwrap_or_default();
        let pid = std::fs::read_to_string(entry.path().join("redis.pid")).unwrap_or_default();
        let pid = pid.trim();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !pid.is_empty()
            && cmdline.starts_with("redis-server")
            && cmdline.contains(&format!(":{port}"))
        {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
    sweep_clusters();
}

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
        Ok("single") => RedisServer::start(test).map(Redis::Single),
        Ok("cluster") => RedisCluster::start(test).map(Redis::Cluster),
        Ok("none") | Err(_) => None,
        Ok(other) => panic!("REDIS must be single, cluster or none, not {other:?}"),
    }
}
