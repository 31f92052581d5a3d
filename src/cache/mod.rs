//! Cache-aside in front of the databases. One interface, chosen backend behind it: the
//! in-process cache alone (embedded, no Redis configured), or two levels, a local cache in
//! front of Redis (one server or a Redis Cluster) kept honest by versioned fills and a
//! pub/sub invalidation feed.

pub mod bloom;
mod flights;
mod invalidation;
mod local;
pub mod redis;
mod stampede;
// For tests only: the cache's own, and the API tests' (the crate is their dependency with the
// `faults` feature).
#[cfg(any(test, feature = "faults"))]
#[doc(hidden)]
pub mod test_support;
mod tiered;
#[cfg(test)]
mod tiered_tests;
mod versioned;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::telemetry::traces::TARGET;

pub use invalidation::CHANNEL as INVALIDATION_CHANNEL;
pub use local::LocalCache;
pub use tiered::Tiered;

use self::redis::Redis;
use crate::telemetry::metrics::{CacheCounters, Metrics};

/// Where cached values live.
#[derive(Clone)]
pub enum Backend {
    /// In-process only (no Redis configured).
    Local(LocalCache),
    /// A local level in front of Redis.
    Tiered(Tiered),
}

/// The cache a service actor reads through. Values are stored as JSON so every backend
/// (in-process or Redis) holds the same bytes.
#[derive(Clone)]
pub struct Cache {
    backend: Backend,
    /// Hits and misses of each kind of key ([`keys::NAMES`]), when counted.
    counters: Option<Arc<[CacheCounters]>>,
}

impl Cache {
    /// An in-process cache whose entries live `ttl`.
    pub fn local(ttl: Duration) -> Self {
        Cache {
            backend: Backend::Local(LocalCache::new(ttl)),
            counters: None,
        }
    }

    /// Two levels: a local cache (entries live `local_ttl`) in front of `redis` (entries
    /// live `redis_ttl` plus 0-10% jitter). Starts the invalidation listener, so it must be
    /// called inside a tokio runtime.
    pub fn tiered(
        redis: Redis,
        local_ttl: Duration,
        redis_ttl: Duration,
        metrics: &Metrics,
    ) -> Self {
        Cache {
            backend: Backend::Tiered(Tiered::new(redis, local_ttl, redis_ttl, metrics)),
            counters: None,
        }
    }

    /// The cache the configuration asks for, counted in `metrics`: two levels when Redis is
    /// configured, else the in-process cache alone.
    pub fn configured(
        config: &crate::config::Config,
        metrics: &Metrics,
    ) -> Result<Self, redis::RedisError> {
        let ttl = Duration::from_secs(config.cache_ttl_seconds);
        let cache = match config.redis_target() {
            None => Cache::local(ttl),
            Some(target) => {
                let timeout = Duration::from_millis(config.redis_timeout_ms.max(1));
                let local_ttl = Duration::from_secs(config.local_cache_ttl_seconds.max(1));
                Cache::tiered(Redis::open(target, timeout)?, local_ttl, ttl, metrics)
            }
        };
        Ok(cache.counted(metrics))
    }

    /// The same cache, counting its hits and misses in `metrics` by kind of key.
    pub fn counted(mut self, metrics: &Metrics) -> Self {
        let counters = keys::NAMES.iter().map(|(_, name, _)| metrics.cache(name));
        self.counters = Some(counters.collect());
        self
    }

    /// The Redis level, when there is one (the Bloom filters and readiness use it).
    pub fn redis(&self) -> Option<&Redis> {
        match &self.backend {
            Backend::Local(_) => None,
            Backend::Tiered(t) => Some(t.redis()),
        }
    }

    /// Whether a local level serves reads now: always without Redis; with Redis, while
    /// the invalidation feed is subscribed.
    pub fn local_level_on(&self) -> bool {
        match &self.backend {
            Backend::Local(_) => true,
            Backend::Tiered(t) => t.is_local_on(),
        }
    }

    fn counters(&self, key: &str) -> Option<&CacheCounters> {
        let at = keys::kind(key)?;
        self.counters.as_ref().map(|c| &c[at])
    }

    /// Drops a key so the next read goes to the database (call after every write that
    /// changes what the key shows).
    pub async fn invalidate(&self, key: &str) {
        self.invalidate_many(&[key.to_owned()]).await;
    }

    /// Drops several keys at once (one pub/sub message for all of them).
    pub async fn invalidate_many(&self, keys: &[String]) {
        let span = tracing::trace_span!(target: TARGET, "cache.invalidate", keys = keys.len());
        match &self.backend {
            Backend::Local(c) => {
                async {
                    for key in keys {
                        c.delete(key).await;
                    }
                }
                .instrument(span)
                .await
            }
            Backend::Tiered(t) => t.invalidate_many(keys).instrument(span).await,
        }
    }

    /// Cache-aside read: the cached value, else `load` from the database and remember it.
    /// Absent rows are not cached, so a newly created row is visible at once.
    pub async fn get_or_load<T, E, F, Fut>(&self, key: &str, load: F) -> Result<Option<T>, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let counters = self.counters(key);
        match &self.backend {
            Backend::Local(c) => local_get_or_load(c, key, counters, load).await,
            Backend::Tiered(t) => {
                let span = tracing::trace_span!(target: TARGET, "cache.get", key);
                t.get_or_load(key, keys::may_be_local(key), counters, load)
                    .instrument(span)
                    .await
            }
        }
    }
}

/// The embedded read path: the in-process cache, else the database.
async fn local_get_or_load<T, E, F, Fut>(
    cache: &LocalCache,
    key: &str,
    counters: Option<&CacheCounters>,
    load: F,
) -> Result<Option<T>, E>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    // Kinds that may not live in a node's local level (credentials, the refresh check) are
    // not cached by the in-process backend either: nodes without a shared level would each
    // keep their own copy, and a change on one would not reach the others.
    if !keys::may_be_local(key) {
        counters.inspect(|c| c.loads.inc());
        return load().await;
    }
    let span = tracing::trace_span!(target: TARGET, "cache.get", key, hit = false);
    if let Some(hit) = cache.get(key).instrument(span.clone()).await
        && let Ok(value) = serde_json::from_str(&hit)
    {
        counters.inspect(|c| c.local_hit.inc());
        span.record("hit", true);
        return Ok(Some(value));
    }
    counters.inspect(|c| c.local_miss.inc());
    // Concurrent misses of one key share one load.
    let lead = |load: F| async move {
        counters.inspect(|c| c.loads.inc());
        let seen = cache.invalidations();
        let loaded = load().await?;
        let json = loaded.as_ref().and_then(|v| serde_json::to_string(v).ok());
        if let Some(json) = &json {
            cache.set_unless_invalidated(key, json.clone(), seen).await;
        }
        Ok((loaded, json))
    };
    // Another caller's type for the same key: load it for ourselves.
    let alone = |load: F| async move {
        counters.inspect(|c| c.loads.inc());
        load().await
    };
    cache.flights().share(key, load, lead, alone).await
}

/// Cache keys, named as the original's Redis keys where it had one.
pub mod keys {
    use crate::domain::ids::{CustomerId, ProductId, PurchaseId};

    /// Each kind of key: its prefix, the cache name metrics give it, and whether it may live
    /// in the local level (not what must take effect at once everywhere, like credentials).
    pub const NAMES: [(&str, &str, bool); 7] = [
        ("cuspersonalinfo", "person", true),
        ("cusshippinginfo", "shipping", true),
        ("product", "product", true),
        ("cuscred", "credentials", false),
        ("cuscheck", "customer", false),
        ("order", "order", true),
        ("payment", "payment", true),
    ];

    /// The index in [`NAMES`] of a key's kind.
    pub fn kind(key: &str) -> Option<usize> {
        let prefix = key.split(':').next().unwrap_or_default();
        NAMES.iter().position(|(p, _, _)| *p == prefix)
    }

    /// Whether a key may be kept in the local level (unknown kinds may).
    pub fn may_be_local(key: &str) -> bool {
        kind(key).is_none_or(|at| NAMES[at].2)
    }

    /// A customer's personal info.
    pub fn person(id: CustomerId) -> String {
        format!("cuspersonalinfo:{id}")
    }
    /// A customer's shipping info.
    pub fn shipping(id: CustomerId) -> String {
        format!("cusshippinginfo:{id}")
    }
    /// A product's detail, inventory included.
    pub fn product(id: ProductId) -> String {
        format!("product:{id}")
    }
    /// A login's credentials, by email.
    pub fn credentials(email: &str) -> String {
        format!("cuscred:{email}")
    }
    /// A customer's existence check (token refresh).
    pub fn customer(id: CustomerId) -> String {
        format!("cuscheck:{id}")
    }
    /// An order, by its purchase.
    pub fn order(id: PurchaseId) -> String {
        format!("order:{id}")
    }
    /// A payment, by its purchase.
    pub fn payment(id: PurchaseId) -> String {
        format!("payment:{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn loads_once_then_serves_from_cache_until_invalidated() {
        let cache = Cache::local(Duration::from_secs(60));
        let loads = AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(Some(41u64))
        };
        assert_eq!(cache.get_or_load("k", load).await, Ok(Some(41)));
        assert_eq!(cache.get_or_load("k", load).await, Ok(Some(41)));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        cache.invalidate("k").await;
        assert_eq!(cache.get_or_load("k", load).await, Ok(Some(41)));
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn hits_and_misses_are_counted_by_kind_of_key() {
        let metrics = Metrics::new(&crate::telemetry::metrics::NodeLabels {
            node_id: 1,
            roles: "all".into(),
        })
        .unwrap();
        let cache = Cache::local(Duration::from_secs(60)).counted(&metrics);
        let load = || async { Ok::<_, ()>(Some(1u64)) };
        let key = keys::product(crate::domain::ids::ProductId(7));
        for _ in 0..3 {
            cache.get_or_load(&key, load).await.unwrap();
        }
        let text = metrics.render();
        let hits =
            "sagashop_cache_requests_total{cache=\"product\",level=\"local\",result=\"hit\"} 2";
        let misses =
            "sagashop_cache_requests_total{cache=\"product\",level=\"local\",result=\"miss\"} 1";
        assert!(text.contains(hits), "{text}");
        assert!(text.contains(misses), "{text}");
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_key_make_one_load() {
        let cache = Cache::local(Duration::from_secs(60));
        let loads = AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, ()>(Some(7u64))
        };
        let reads = (0..50).map(|_| cache.get_or_load("product:1", load));
        let got = futures_util::future::join_all(reads).await;
        assert!(got.iter().all(|g| *g == Ok(Some(7))), "{got:?}");
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_load_that_raced_an_invalidation_is_not_kept() {
        let cache = Cache::local(Duration::from_secs(60));
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        // The load reads the old value, the change commits and invalidates, then the load
        // lands: what it read must not stay cached.
        let slow = cache.get_or_load("product:1", || async {
            wait.await.ok();
            Ok::<_, ()>(Some(1u64))
        });
        let change = async {
            tokio::task::yield_now().await;
            cache.invalidate("product:1").await;
            go.send(()).ok();
        };
        let (got, ()) = tokio::join!(slow, change);
        assert_eq!(got, Ok(Some(1)));
        let fresh = || async { Ok::<_, ()>(Some(2u64)) };
        assert_eq!(
            cache.get_or_load("product:1", fresh).await,
            Ok(Some(2)),
            "the value read before the invalidation was kept"
        );
    }

    #[tokio::test]
    async fn absent_rows_are_not_cached() {
        let cache = Cache::local(Duration::from_secs(60));
        let none = || async { Ok::<Option<u64>, ()>(None) };
        assert_eq!(cache.get_or_load("k", none).await, Ok(None));
        let some = || async { Ok::<_, ()>(Some(1u64)) };
        assert_eq!(cache.get_or_load("k", some).await, Ok(Some(1)));
    }
}
