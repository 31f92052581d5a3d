//! Versioned fills. Each key has a version in Redis (`{key}:v`, missing = 0) that every
//! write bumps. A reader reads the version with its miss, loads the database, and stores the
//! value only if the version is still the one it read: a reader that loaded the old row
//! before a write can never store it after that write.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::redis::{Redis, RedisError};

/// The Redis key of a cache key's value: hash-tagged, so its version and lock share its slot.
pub fn value_key(key: &str) -> String {
    format!("{{{key}}}")
}

/// The Redis key of a cache key's version.
pub fn version_key(key: &str) -> String {
    format!("{{{key}}}:v")
}

/// SET the value (PX ttl) only if the version is still the one read.
static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local v = tonumber(redis.call('GET', KEYS[2]) or '0')
          if v == tonumber(ARGV[1]) then
            redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
            return 1
          end
          return 0",
    )
});

/// Bump the version (kept 2x the value's TTL), drop the value.
static BUMP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"redis.call('INCR', KEYS[2])
          redis.call('PEXPIRE', KEYS[2], ARGV[1])
          redis.call('DEL', KEYS[1])
          return 1",
    )
});

/// What one round trip found: the value, if any, and the version it was read at.
pub struct Read {
    pub value: Option<String>,
    pub version: u64,
}

/// GET the value and its version in one round trip.
pub async fn read(redis: &Redis, key: &str) -> Result<Read, RedisError> {
    let (value, version): (Option<String>, Option<u64>) = redis
        .pipeline(
            redis::pipe()
                .cmd("GET")
                .arg(value_key(key))
                .cmd("GET")
                .arg(version_key(key)),
        )
        .await?;
    Ok(Read {
        value,
        version: version.unwrap_or(0),
    })
}

/// Stores `json` for `ttl` if the key's version is still `version`; whether it was stored.
pub async fn fill(
    redis: &Redis,
    key: &str,
    version: u64,
    json: &str,
    ttl: Duration,
) -> Result<bool, RedisError> {
    let stored: i64 = redis
        .script(
            FILL.key(value_key(key))
                .key(version_key(key))
                .arg(version)
                .arg(json)
                .arg(ttl.as_millis().max(1) as u64),
        )
        .await?;
    Ok(stored == 1)
}

/// Retires the key's value: bumps its version (kept `2 x ttl`) and deletes the value.
pub async fn bump(redis: &Redis, key: &str, ttl: Duration) -> Result<(), RedisError> {
    let _: i64 = redis
        .script(
            BUMP.key(value_key(key))
                .key(version_key(key))
                .arg((ttl.as_millis() as u64).max(1) * 2),
        )
        .await?;
    Ok(())
}
