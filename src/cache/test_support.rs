//! Which Redis the cache tests run on: a Redis Cluster when `SAGASHOP_TEST_REDIS_CLUSTER`
//! names its seeds, else one Redis (`SAGASHOP_TEST_REDIS_URL`, default the shared
//! 127.0.0.1:6379). Tests use unique keys there and never flush it.

use std::time::Duration;

use super::redis::{Redis, RedisTarget};

/// The Redis to test against, or `None` (with a note) when none answers outside CI; in CI
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
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(!in_ci, "no Redis answers at {target:?} (CI must start it)");
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

/// A test's own `redis-server` on a spare port, to stop and start (killed on drop).
pub struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    /// Starts one, or `None` when `redis-server` is not installed (a failure in CI).
    pub fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .ok()?;
        let mut redis = OwnRedis { port, child: None };
        if !redis.resume() {
            let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(!in_ci, "redis-server did not start");
            eprintln!("skipped: redis-server did not start");
            return None;
        }
        Some(redis)
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port; whether it answers.
    pub fn resume(&mut self) -> bool {
        let port = self.port.to_string();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port, "--save", ""])
            .args(["--appendonly", "no", "--loglevel", "warning"])
            .stdout(std::process::Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < until {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
