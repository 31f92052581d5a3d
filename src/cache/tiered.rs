//! Two levels: a local in-process cache in front of Redis. A read tries the local level,
//! then Redis, then (under the stampede lock) the database, and fills Redis with a
//! versioned fill. Concurrent misses of one key in this process share one fetch.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus::IntCounter;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::flights::Flights;
use super::invalidation::{self, CHANNEL, Feed, ListenerGuard, Mark};
use super::local::LocalCache;
use super::redis::{Redis, RedisError, RedisTarget};
use super::stampede::{self, Attempt};
use super::versioned;
use crate::telemetry::metrics::{CacheCounters, Metrics};

/// How often invalidations that did not reach Redis are tried again.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// The local level and Redis, and what keeps them honest; cheap to clone.
#[derive(Clone)]
pub struct Tiered {
    inner: Arc<Inner>,
}

struct Inner {
    local: LocalCache,
    redis: Redis,
    redis_ttl: Duration,
    feed: Arc<Feed>,
    /// Fetches in flight in this process, around the whole Redis-then-database path.
    flights: Flights,
    /// Keys whose invalidation did not reach Redis: not read from Redis until it does.
    pending: Mutex<HashSet<String>>,
    redis_errors: IntCounter,
    _listener: ListenerGuard,
}

impl Tiered {
    /// Both levels over `redis`; starts the invalidation listener and the retry of failed
    /// invalidations (both end when the last clone is dropped).
    pub fn new(redis: Redis, local_ttl: Duration, redis_ttl: Duration, metrics: &Metrics) -> Self {
        let local = LocalCache::new(local_ttl);
        let feed = Arc::new(Feed::default());
        let urls = match redis.target() {
            RedisTarget::Single(url) => vec![url.clone()],
            RedisTarget::Cluster(urls) => urls.clone(),
        };
        let listener = invalidation::listen(
            urls,
            redis.timeout().max(Duration::from_secs(1)),
            local.clone(),
            feed.clone(),
            metrics.cache_invalidations_received(),
        );
        let inner = Arc::new(Inner {
            local,
            redis,
            redis_ttl,
            feed,
            flights: Flights::default(),
            pending: Mutex::new(HashSet::new()),
            redis_errors: metrics.cache_redis_errors(),
            _listener: listener,
        });
        tokio::spawn(retry_pending(Arc::downgrade(&inner)));
        Tiered { inner }
    }

    /// The Redis level.
    pub fn redis(&self) -> &Redis {
        &self.inner.redis
    }

    /// Whether the local level is in use (the invalidation feed is subscribed).
    pub fn is_local_on(&self) -> bool {
        self.inner.feed.is_subscribed()
    }

    /// Cache-aside read through both levels; `local` says whether this kind of key may live
    /// in the local level. Absent rows are cached nowhere.
    pub async fn get_or_load<T, E, F, Fut>(
        &self,
        key: &str,
        local: bool,
        counters: Option<&CacheCounters>,
        load: F,
    ) -> Result<Option<T>, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let inner = &*self.inner;
        let local = local && inner.feed.is_subscribed();
        if local {
            if let Some(json) = inner.local.get(key).await
                && let Ok(value) = serde_json::from_str(&json)
            {
                counters.inspect(|c| c.local_hit.inc());
                return Ok(Some(value));
            }
            counters.inspect(|c| c.local_miss.inc());
        }
        let mark = inner.feed.mark();
        let lead = |load: F| async move {
            let (got, fresh) = inner.fetch(key, counters, load).await?;
            let json = got.as_ref().and_then(|v| serde_json::to_string(v).ok());
            if local
                && fresh
                && let Some(json) = &json
            {
                inner.fill_local(key, json, &mark).await;
            }
            Ok((got, json))
        };
        // Another caller's type for the same key: read it for ourselves.
        let alone = |load: F| inner.load(counters, load);
        inner.flights.share(key, load, lead, alone).await
    }

    /// Retires `keys` everywhere: dropped locally at once, version bumped and value deleted
    /// in Redis, and published so every node drops them too. What does not reach Redis is
    /// retried when it is back (the value's TTL bounds it meanwhile).
    pub async fn invalidate_many(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let inner = &*self.inner;
        inner.drop_local(keys).await;
        inner.retire(keys).await;
        // A read that began before the bump may have filled the local level meanwhile.
        inner.drop_local(keys).await;
    }
}

impl Inner {
    fn is_pending(&self, key: &str) -> bool {
        self.pending.lock().expect("pending lock").contains(key)
    }

    /// Redis, then the stampede lock, then the database. Also says whether the value is
    /// known fresh enough for the local level (not when Redis refused its fill or was skipped).
    async fn fetch<T, E, F, Fut>(
        &self,
        key: &str,
        counters: Option<&CacheCounters>,
        load: F,
    ) -> Result<(Option<T>, bool), E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        if self.is_pending(key) {
            return Ok((self.load(counters, load).await?, false));
        }
        let read = match versioned::read(&self.redis, key).await {
            Ok(read) => read,
            Err(e) => return Ok((self.load_without_redis(e, counters, load).await?, false)),
        };
        if let Some(value) = parse(read.value.as_deref()) {
            counters.inspect(|c| c.redis_hit.inc());
            return Ok((Some(value), true));
        }
        counters.inspect(|c| c.redis_miss.inc());
        let (token, version) = match stampede::try_lock(&self.redis, key).await {
            Err(e) => return Ok((self.load_without_redis(e, counters, load).await?, false)),
            Ok(Attempt::Filled(json)) => match parse(Some(&json)) {
                Some(value) => return Ok((Some(value), true)),
                None => (None, read.version),
            },
            Ok(Attempt::Held { token, read }) => (Some(token), read.version),
            Ok(Attempt::Busy) => match stampede::wait_for_value(&self.redis, key).await {
                Err(e) => return Ok((self.load_without_redis(e, counters, load).await?, false)),
                Ok(json) => match parse(json.as_deref()) {
                    Some(value) => return Ok((Some(value), true)),
                    None => (None, read.version),
                },
            },
        };
        let loaded = self.load(counters, load).await;
        let mut fresh = false;
        if let Ok(Some(value)) = &loaded
            && let Ok(json) = serde_json::to_string(value)
        {
            match versioned::fill(&self.redis, key, version, &json, self.jittered_ttl()).await {
                Ok(stored) => fresh = stored,
                Err(e) => self.failed(&e),
            }
        }
        if let Some(token) = token {
            stampede::release(&self.redis, key, &token).await;
        }
        Ok((loaded?, fresh))
    }

    /// A database read the cache makes, counted.
    async fn load<T, E, F, Fut>(&self, counters: Option<&CacheCounters>, load: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        counters.inspect(|c| c.loads.inc());
        load().await
    }

    async fn load_without_redis<T, E, F, Fut>(
        &self,
        error: RedisError,
        counters: Option<&CacheCounters>,
        load: F,
    ) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.failed(&error);
        self.load(counters, load).await
    }

    fn failed(&self, error: &RedisError) {
        self.redis_errors.inc();
        tracing::debug!(%error, "cache: redis call failed");
    }

    /// The Redis TTL plus 0-10% jitter, so keys filled together do not expire together.
    fn jittered_ttl(&self) -> Duration {
        let ms = self.redis_ttl.as_millis() as u64;
        Duration::from_millis(ms + rand::random_range(0..=ms / 10))
    }

    /// Fills the local level unless `key` was invalidated since `mark` (checked again
    /// after the insert, which may race with one).
    async fn fill_local(&self, key: &str, json: &str, mark: &Mark) {
        if !self.feed.unchanged_since(key, mark).await {
            return;
        }
        self.local.set(key, json.to_owned()).await;
        if !self.feed.unchanged_since(key, mark).await {
            self.local.delete(key).await;
        }
    }

    async fn drop_local(&self, keys: &[String]) {
        for key in keys {
            self.feed.invalidated(key).await;
            self.local.delete(key).await;
        }
    }

    /// Bumps and deletes each key in Redis, then publishes the ones that were retired.
    /// Whatever fails is remembered in `pending`.
    async fn retire(&self, keys: &[String]) -> bool {
        let bumps = keys
            .iter()
            .map(|key| versioned::bump(&self.redis, key, self.redis_ttl));
        let results = futures_util::future::join_all(bumps).await;
        let mut failed = Vec::new();
        for (key, result) in keys.iter().zip(results) {
            if let Err(e) = result {
                self.failed(&e);
                failed.push(key.clone());
            }
        }
        let published: Result<i64, _> = self
            .redis
            .query(redis::cmd("PUBLISH").arg(CHANNEL).arg(keys.join("\n")))
            .await;
        if let Err(e) = &published {
            self.failed(e);
            failed = keys.to_vec();
        }
        let mut pending = self.pending.lock().expect("pending lock");
        if failed.is_empty() {
            for key in keys {
                pending.remove(key);
            }
            return true;
        }
        tracing::warn!(
            keys = failed.len(),
            "cache invalidation did not reach redis; retried when it answers"
        );
        pending.extend(failed);
        false
    }
}

/// Tries failed invalidations again while the cache lives.
async fn retry_pending(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(RETRY_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        let keys: Vec<String> = inner
            .pending
            .lock()
            .expect("pending lock")
            .iter()
            .cloned()
            .collect();
        if !keys.is_empty() && inner.redis.is_up() && inner.retire(&keys).await {
            tracing::info!(keys = keys.len(), "cache invalidations reached redis");
        }
    }
}

fn parse<T: DeserializeOwned>(json: Option<&str>) -> Option<T> {
    json.and_then(|json| serde_json::from_str(json).ok())
}
