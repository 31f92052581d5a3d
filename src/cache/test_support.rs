//! What tests need of Redis, for the cache's own tests and the API tests (`tests/api`) alike:
//! which Redis the cache tests run on (a Redis Cluster when `SAGASHOP_TEST_REDIS_CLUSTER`
//! names its seeds, else one Redis, `SAGASHOP_TEST_REDIS_URL`, default the shared
//! 127.0.0.1:6379; tests use unique keys there and never flush it), and a `redis-server` of a
//! test's own ([`RedisServer`]) that it may stop and start. Built for tests only (and with
//! the `faults` feature the API tests turn on); no part of the server.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::{Redis, RedisTarget};

/// How long a started server may take to answer PING.
const START_WAIT: Duration = Duration::from_secs(20);

/// Whether this runs in CI (`CI` set, and not `0` or `false`), where a test that needs a
/// server it cannot reach fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// a missing server fails the test instead of skipping it.
pub fn target() -> Option<RedisTarget> {
    let target = match std::env::var("SAGASHOP_TEST_REDIS_CLUSTER") {
        Ok(seeds) if !seeds.trim().is_empty() => RedisTarget::Cluster(
            seeds
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    if s.contains("://") {
                        s.to_owned()
                    } else {
                        format!("redis://{s}")
                    }
                })
                .collect(),
        ),
        _ => RedisTarget::Single(
            std::env::var("SAGASHOP_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        ),
    };
    if answers(&target) {
        return Some(target);
    }
    assert!(
        !in_ci(),
        "no Redis answers at {target:?} (CI must start it)"
    );
    eprintln!("skipped: no Redis answers at {target:?}");
    None
}

fn answers(target: &RedisTarget) -> bool {
    let ping = std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let redis = Redis::open(target.clone(), Duration::from_secs(2)).ok()?;
                redis.query::<String>(&redis::cmd("PING")).await.ok()
            })
        })
        .join()
        .ok()
        .flatten()
    });
    ping.is_some()
}

/// A key no other test (or run) uses.
pub fn unique(kind: &str) -> String {
    format!("{kind}:t{:x}", rand::random::<u64>())
}

/// Whether redis-server and redis-cli are installed, so that a test that needs a Redis of
/// its own can run; `false` (after saying SKIPPED) outside CI when they are not. In CI it
/// panics.
pub fn installed(test: &str) -> bool {
    let found = ["redis-server", "redis-cli"]
        .iter()
        .all(|bin| Command::new(bin).arg("--version").output().is_ok());
    if !found {
        let reason =
            format!("{test}: redis-server is not installed (scripts/services.sh installs it)");
        assert!(!in_ci(), "{reason}");
        let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
    }
    found
}

/// Runs redis-cli against 127.0.0.1:`port`; its output (tests read and change a Redis of
/// their own with it).
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A redis-server of the test's own, without persistence, that the test may kill (as a
/// crash would) and start again; killed when dropped, so the shared Redis on 6379 is never
/// stopped or flushed by a test. Its pid file and log are in a folder named
/// `<port>_<test process id>` under the folder the test names, so a later run stops one that
/// a killed run (or a server that is never dropped) left ([`sweep_servers`]).
pub struct RedisServer {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one for the test `test` on `port`, its files under `root`; `None` (after saying
    /// SKIPPED) when redis-server is not installed outside CI. In CI it panics. First stops
    /// what gone test runs left under `root`. Blocks until it answers PING (a few ms).
    pub fn start(test: &str, root: &Path, port: u16) -> Option<Self> {
        if !installed(test) {
            return None;
        }
        sweep_servers(root);
        let dir = root.join(format!("{port}_{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the server's folder");
        let mut server = Self {
            port,
            child: None,
            dir,
        };
        server.spawn();
        let deadline = Instant::now() + START_WAIT;
        while !server.answers() {
            assert!(Instant::now() < deadline, "redis-server answers PING");
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(server)
    }

    /// The URL nodes connect to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The flags that make a node cache in it (`--redis-url`).
    pub fn flags(&self) -> Vec<String> {
        vec!["--redis-url".into(), self.url()]
    }

    /// Kills the server (SIGKILL: its clients see their connections drop; it keeps nothing).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty) and waits until it answers PING; panics
    /// when it does not within 20 s.
    pub async fn resume(&mut self) {
        self.spawn();
        let deadline = Instant::now() + START_WAIT;
        while !self.answers() {
            assert!(Instant::now() < deadline, "redis-server answers PING");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn answers(&self) -> bool {
        cli(self.port, &["PING"]).trim() == "PONG"
    }

    fn spawn(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .expect("the server's log");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory-policy", "volatile-lru"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(self.dir.join("redis.pid"))
            .stdout(log.try_clone().expect("the server's log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the process of test run `pid` (the last `_` part of a folder's `name`) is gone:
/// what it left may be stopped and removed.
pub fn left_by_gone_run(name: &str) -> bool {
    name.rsplit('_')
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|pid| {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        })
}

/// Stops the servers that test processes that are gone left running under `root` (a killed
/// run, a server that is never dropped), by the pid files they recorded (believed only when
/// that pid is a redis-server on that port), and removes their files.
pub fn sweep_servers(root: &Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
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
}
