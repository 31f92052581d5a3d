//! Nodes as real processes, for tests that kill or refuse them: a NATS server of the
//! test's own on a spare port (so stopping it touches no one else), and sagashop nodes with
//! roles, started from the test binary's `sagashop` on the test's MariaDB databases, and embedded
//! nodes on a data directory of the test's.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sagashop::config::ServiceDb;

use super::mariadb::Databases;
use super::{DEADLINE, eventually, free_port};

/// The JWT secret every node of a test cluster shares.
pub const JWT: &str = "cluster-test-secret";

/// A nats-server of the test's own.
pub struct NatsServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts one on a spare port; `None` (after saying so) when nats-server is not
    /// installed outside CI. In CI it panics.
    pub async fn start() -> Option<Self> {
        let found = Command::new("nats-server").arg("--version").output();
        if found.is_err() {
            let reason = "nats-server is not installed (scripts/services.sh installs it)";
            assert!(std::env::var_os("CI").is_none(), "{reason}");
            let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
            return None;
        }
        let mut server = Self {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        server.resume().await;
        Some(server)
    }

    /// The URL nodes connect to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its clients see the connection drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and waits until it accepts connections.
    pub async fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("nats.log")).unwrap();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let port = self.port;
        let up = eventually(DEADLINE, || async move {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        })
        .await;
        up.expect("nats-server listens");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A test's cluster: its NATS server and databases (each test has its own of both), and the
/// nodes' subject prefix.
pub struct Bench {
    pub nats: NatsServer,
    pub databases: Databases,
    pub name: String,
}

impl Bench {
    /// Fresh databases and a NATS server for the test `name`; `None` as for
    /// [`Databases::create`] and [`NatsServer::start`].
    pub async fn new(name: &str) -> Option<Self> {
        let databases = Databases::create(name).await?;
        let nats = NatsServer::start().await?;
        Some(Self {
            nats,
            databases,
            name: format!("t_{name}_{}", std::process::id()),
        })
    }

    /// Node `node_id` with `roles` and `extra` flags, on this bench.
    pub fn node(&self, node_id: u16, roles: &'static str, extra: &[&str]) -> NodeSpec<'_> {
        NodeSpec {
            node_id,
            roles,
            nats: &self.nats,
            databases: &self.databases,
            cluster: &self.name,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// One node's settings.
pub struct NodeSpec<'a> {
    pub node_id: u16,
    pub roles: &'a str,
    pub nats: &'a NatsServer,
    pub databases: &'a Databases,
    /// The NATS subject prefix (one per test, so tests sharing nothing cannot cross).
    pub cluster: &'a str,
    /// More flags (short timeouts, `--hold-payments`).
    pub extra: Vec<String>,
}

/// A running node; killed (SIGKILL) when dropped.
pub struct Node {
    pub url: String,
    pub log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl NodeSpec<'_> {
    fn command(&self, port: u16, dir: &std::path::Path, log: std::fs::File) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sagashop"));
        cmd.arg("serve")
            .env("SAGASHOP_METRICS_LISTEN", "off")
            .args(["--roles", self.roles])
            .args(["--node-id", &self.node_id.to_string()])
            .args(["--nats-url", &self.nats.url()])
            .args(["--cluster-name", self.cluster])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--data-dir", dir.to_str().unwrap()])
            .args(&self.extra)
            .env("JWT_SECRET", JWT)
            .env("RUST_LOG", "info")
            .env("SAGASHOP_EXIT_WITH_PID", std::process::id().to_string())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        // The tests' short timeouts, unless `extra` sets its own.
        for (flag, value) in [("--step-timeout-ms", "1000"), ("--max-backoff-ms", "200")] {
            if !self.extra.iter().any(|e| e == flag) {
                cmd.args([flag, value]);
            }
        }
        for db in ServiceDb::ALL {
            cmd.arg(format!("--{}-database-url", db.name()))
                .arg(self.databases.url(db));
        }
        cmd
    }

    /// Starts the node and waits until its `/readyz` answers 200.
    pub async fn start(&self) -> Node {
        let node = self.spawn();
        node.wait_ready().await;
        node
    }

    /// Starts the node without waiting for it.
    pub fn spawn(&self) -> Node {
        self.spawn_with_env(&[])
    }

    /// Starts the node with more environment (fault switches, a metrics listener), without
    /// waiting for it.
    pub fn spawn_with_env(&self, env: &[(&str, String)]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("node.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .command(port, dir.path(), file)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .unwrap();
        Node {
            url: format!("http://127.0.0.1:{port}"),
            log,
            child,
            _dir: dir,
        }
    }

    /// Runs a node expected to refuse to start: its exit status and its log.
    pub async fn refused(&self) -> (std::process::ExitStatus, String) {
        let mut node = self.spawn();
        let status = node.exited().await;
        (status, std::fs::read_to_string(&node.log).unwrap())
    }
}

impl Node {
    /// Starts an embedded node (every role, its SQLite files in `data_dir`, which outlives
    /// it) with the tests' short timeouts, `extra` flags and `env`; waits until it is ready.
    pub async fn embedded(
        data_dir: &std::path::Path,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("node.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sagashop"))
            .arg("serve")
            .env("SAGASHOP_METRICS_LISTEN", "off")
            .args(["--data-dir", data_dir.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--step-timeout-ms", "1000", "--max-backoff-ms", "200"])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("SAGASHOP_EXIT_WITH_PID", std::process::id().to_string())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        let node = Node {
            url: format!("http://127.0.0.1:{port}"),
            log,
            child,
            _dir: dir,
        };
        node.wait_ready().await;
        node
    }

    /// Waits until the node's `/readyz` answers 200 (its databases, NATS and a replica of
    /// every role it reaches elsewhere).
    pub async fn wait_ready(&self) {
        let client = awc::Client::default();
        let ready = eventually(DEADLINE, || async {
            let r = client.get(format!("{}/readyz", self.url)).send().await;
            r.is_ok_and(|r| r.status().is_success()).then_some(())
        })
        .await;
        assert!(ready.is_some(), "node not ready; its log:\n{}", self.log());
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until the process has exited on its own; its exit status.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        eventually(DEADLINE, || {
            let exited = self.child.try_wait().unwrap();
            async move { exited }
        })
        .await
        .expect("the node exits on its own")
    }

    /// Sends a signal by name (`USR1` releases `--hold-payments`), with kill(1): the crate
    /// forbids `unsafe`, which a direct kill(2) needs.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name} failed");
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for the condition, polling every 10 ms (shorthand for the node tests).
pub async fn wait_until<F, Fut>(what: &str, wait: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut check = check;
    let done = eventually(wait, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await;
    assert!(done.is_some(), "timed out waiting for {what}");
}
