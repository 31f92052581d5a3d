//! The shared cache level: one Redis (deadpool-redis) or a Redis Cluster (the redis crate's
//! cluster client, pooled by deadpool-redis). Every call is bounded by a short timeout, and
//! a call that fails or times out marks Redis down for a moment, so the reads behind it go
//! to the database at once instead of each waiting out its own timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deadpool_redis::Runtime;
use redis::FromRedisValue;

/// How long Redis counts as down after a failed call before the next call tries it again.
const DOWN_FOR: Duration = Duration::from_millis(500);

/// Why a Redis call gave no answer. Callers fall back to the database on any of them.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// A recent call failed: this one was not tried.
    #[error("redis is marked down")]
    Down,
    /// No answer within the configured timeout.
    #[error("redis did not answer in time")]
    Timeout,
    /// No connection could be had from the pool.
    #[error("redis connection: {0}")]
    Connection(String),
    /// Redis answered with an error (or an answer of the wrong type).
    #[error("redis: {0}")]
    Command(#[from] redis::RedisError),
}

/// Where the shared cache lives.
#[derive(Clone, Debug)]
pub enum RedisTarget {
    /// One Redis server: `redis://[:password@]host:port[/db]` (or `rediss://` for TLS).
    Single(String),
    /// Seed nodes of a Redis Cluster, each a `redis://` URL.
    Cluster(Vec<String>),
}

#[derive(Clone)]
enum Pool {
    Single(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
}

/// A handle on the shared cache level; cheap to clone.
#[derive(Clone)]
pub struct Redis {
    pool: Pool,
    target: Arc<RedisTarget>,
    timeout: Duration,
    /// Milliseconds since `epoch` until which Redis counts as down (0: up).
    down_until: Arc<AtomicU64>,
    epoch: Instant,
}

impl Redis {
    /// A pool over `target`. Connections are made on first use, so a Redis that is down at
    /// start makes the node slower, not unable to start.
    pub fn open(target: RedisTarget, timeout: Duration) -> Result<Self, RedisError> {
        let pool = match &target {
            RedisTarget::Single(url) => Pool::Single(
                deadpool_redis::Config::from_url(url.clone())
                    .create_pool(Some(Runtime::Tokio1))
                    .map_err(|e| RedisError::Connection(e.to_string()))?,
            ),
            RedisTarget::Cluster(urls) => Pool::Cluster(
                deadpool_redis::cluster::Config::from_urls(urls.clone())
                    .create_pool(Some(Runtime::Tokio1))
                    .map_err(|e| RedisError::Connection(e.to_string()))?,
            ),
        };
        Ok(Redis {
            pool,
            target: Arc::new(target),
            timeout,
            down_until: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        })
    }

    /// Where this handle connects (URLs carry credentials: never log them).
    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// Whether Redis answered its last call (a down Redis is retried every [`DOWN_FOR`]).
    pub fn is_up(&self) -> bool {
        self.down_until.load(Ordering::Relaxed) <= self.now_ms()
    }

    /// The bound on every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One command.
    pub async fn query<T: FromRedisValue + Send>(&self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        self.call(async |c| cmd.query_async(c).await).await
    }

    /// Several commands in one round trip (on a cluster, their keys must share a slot).
    pub async fn pipeline<T: FromRedisValue + Send>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        self.call(async |c| pipe.query_async(c).await).await
    }

    /// A Lua script (EVALSHA, loading it on first use).
    pub async fn script<T: FromRedisValue + Send>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        self.call(async |c| invocation.invoke_async(c).await).await
    }

    /// Runs `f` on a pooled connection within the timeout, and keeps the up/down state.
    async fn call<T, F>(&self, f: F) -> Result<T, RedisError>
    where
        F: AsyncFnOnce(&mut Connection) -> redis::RedisResult<T>,
    {
        if !self.is_up() {
            return Err(RedisError::Down);
        }
        let attempt = async {
            let mut c = self.connection().await?;
            Ok(f(&mut c).await?)
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::Timeout),
        };
        match &result {
            // An error reply is an answer: Redis is up.
            Err(RedisError::Command(e)) if !is_unreachable(e) => {}
            Err(_) => self.mark_down(),
            Ok(_) => {}
        }
        result
    }

    /// A pooled connection, for what the methods above do not cover (no timeout applied).
    pub async fn connection(&self) -> Result<Connection, RedisError> {
        let unpooled = |e: deadpool_redis::PoolError| RedisError::Connection(e.to_string());
        Ok(match &self.pool {
            Pool::Single(p) => Connection::Single(p.get().await.map_err(unpooled)?),
            Pool::Cluster(p) => Connection::Cluster(p.get().await.map_err(unpooled)?),
        })
    }

    fn mark_down(&self) {
        let until = self.now_ms() + DOWN_FOR.as_millis() as u64;
        self.down_until.store(until, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// A connection from either pool.
pub enum Connection {
    /// To the one Redis.
    Single(deadpool_redis::Connection),
    /// To the cluster (routes each command by its key's slot).
    Cluster(deadpool_redis::cluster::Connection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipe, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipe, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Whether an error means Redis could not be reached (rather than a refused command).
fn is_unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_cluster_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> String {
        std::env::var("SAGASHOP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    #[tokio::test]
    async fn answers_commands_pipelines_and_scripts() {
        let redis = Redis::open(RedisTarget::Single(url()), Duration::from_secs(2)).unwrap();
        let key = format!("sagashop:test:{}", rand::random::<u64>());
        let () = redis
            .query(redis::cmd("SET").arg(&key).arg("1").arg("PX").arg(10_000))
            .await
            .unwrap();
        let (v,): (i64,) = redis
            .pipeline(redis::pipe().cmd("INCR").arg(&key))
            .await
            .unwrap();
        assert_eq!(v, 2);
        let script = redis::Script::new("return redis.call('GET', KEYS[1])");
        let got: String = redis.script(&script.key(&key)).await.unwrap();
        assert_eq!(got, "2");
        assert!(redis.is_up());
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_marked_down_and_not_waited_on_again() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let redis = Redis::open(
            RedisTarget::Single("redis://127.0.0.1:1".into()),
            Duration::from_millis(200),
        )
        .unwrap();
        let first: Result<Option<String>, _> = redis.query(redis::cmd("GET").arg("k")).await;
        assert!(first.is_err());
        assert!(!redis.is_up());
        let second: Result<Option<String>, _> = redis.query(redis::cmd("GET").arg("k")).await;
        assert!(matches!(second, Err(RedisError::Down)), "{second:?}");
    }
}
