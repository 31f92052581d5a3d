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
