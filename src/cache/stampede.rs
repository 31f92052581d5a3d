//! The stampede lock: one node rebuilds a missing key while the others wait briefly for
//! its value, instead of every reader of a hot key asking the database at once.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::redis::{Redis, RedisError};
use super::versioned::{Read, value_key, version_key};

/// How long a lock holds if its holder never releases it (it died mid-load).
const LOCK_FOR: Duration = Duration::from_millis(2000);
/// How often a waiter looks for the holder's value.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// How long a waiter looks before it asks the database itself.
const WAIT_AT_MOST: Duration = Duration::from_millis(500);

/// DEL the lock only if it still holds our token (it may have expired and been retaken).
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('DEL', KEYS[1])
          end
          return 0",
    )
});

/// The Redis key of a cache key's lock (same slot as the value).
fn lock_key(key: &str) -> String {
    format!("{{{key}}}:lock")
}

/// What trying the lock found.
pub enum Attempt {
    /// We hold the lock (the value was still missing): load, fill, then [`release`].
    Held { token: String, read: Read },
    /// Another reader holds it, and the value is still missing.
    Busy,
    /// The value appeared meanwhile (it was filled by another reader).
    Filled(String),
}

/// Takes the lock and reads the value again, in one round trip.
pub async fn try_lock(redis: &Redis, key: &str) -> Result<Attempt, RedisError> {
    let token = format!("{:016x}", rand::random::<u64>());
    let (taken, value, version): (Option<String>, Option<String>, Option<u64>) = redis
        .pipeline(
            redis::pipe()
                .cmd("SET")
                .arg(lock_key(key))
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(LOCK_FOR.as_millis() as u64)
                .cmd("GET")
                .arg(value_key(key))
                .cmd("GET")
                .arg(version_key(key)),
        )
        .await?;
    Ok(match (taken, value) {
        (Some(_), Some(json)) => {
            release(redis, key, &token).await;
            Attempt::Filled(json)
        }
        (None, Some(json)) => Attempt::Filled(json),
        (Some(_), None) => Attempt::Held {
            token,
            read: Read {
                value: None,
                version: version.unwrap_or(0),
            },
        },
        (None, None) => Attempt::Busy,
    })
}

/// Gives the lock back, if it is still ours (best effort: it expires anyway).
pub async fn release(redis: &Redis, key: &str, token: &str) {
    let released: Result<i64, _> = redis.script(RELEASE.key(lock_key(key)).arg(token)).await;
    if released.is_err() {
        tracing::debug!(key, "stampede lock not released (it expires)");
    }
}

/// Polls for the value the lock holder stores; `None` after [`WAIT_AT_MOST`].
pub async fn wait_for_value(redis: &Redis, key: &str) -> Result<Option<String>, RedisError> {
    let deadline = tokio::time::Instant::now() + WAIT_AT_MOST;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(POLL_EVERY).await;
        let value: Option<String> = redis.query(redis::cmd("GET").arg(value_key(key))).await?;
        if value.is_some() {
            return Ok(value);
        }
    }
    Ok(None)
}
