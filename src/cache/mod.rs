//! Cache-aside in front of the databases. One interface, chosen backend behind it: the
//! in-process cache now; Redis (and local-cache invalidation over pub/sub) plugs in as
//! another variant without touching callers.

pub mod bloom;
mod local;
pub mod redis;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::telemetry::traces::TARGET;

pub use local::LocalCache;

use crate::telemetry::metrics::{CacheCounters, Metrics};

/// Where cached values live.
#[derive(Clone)]
pub enum Backend {
    Local(LocalCache),
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

    /// The same cache, counting its hits and misses in `metrics` by kind of key.
    pub fn counted(mut self, metrics: &Metrics) -> Self {
        let counters = keys::NAMES.iter().map(|(_, name, _)| metrics.cache(name));
        self.counters = Some(counters.collect());
        self
    }

    fn count(&self, key: &str, hit: bool) {
        let Some(counters) = &self.counters else {
            return;
        };
        let prefix = key.split(':').next().unwrap_or_default();
        if let Some(at) = keys::NAMES.iter().position(|(p, _, _)| *p == prefix) {
            let c = &counters[at];
            if hit { &c.local_hit } else { &c.local_miss }.inc();
        }
    }

    async fn get_raw(&self, key: &str) -> Option<String> {
        match &self.backend {
            Backend::Local(c) => c.get(key).await,
        }
    }

    async fn set_raw(&self, key: &str, value: String) {
        match &self.backend {
            Backend::Local(c) => c.set(key, value).await,
        }
    }

    /// Drops a key so the next read goes to the database (call after every write).
    pub async fn invalidate(&self, key: &str) {
        let span = tracing::trace_span!(target: TARGET, "cache.invalidate", key);
        match &self.backend {
            Backend::Local(c) => c.delete(key).instrument(span).await,
        }
    }

    /// The shared level, when there is one (the Bloom filters live there). BLOOM STOPGAP
    /// until CORE's tiered cache lands: the in-process backend has none.
    pub fn redis(&self) -> Option<&redis::Redis> {
        match &self.backend {
            Backend::Local(_) => None,
        }
    }

    /// Drops several keys (a batch's writes). BLOOM STOPGAP until CORE's version lands: one
    /// [`Cache::invalidate`] per key; CORE replaces it with one round trip.
    pub async fn invalidate_many(&self, keys: &[String]) {
        for key in keys {
            self.invalidate(key).await;
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
        // BLOOM STOPGAP until CORE's tiered cache lands: kinds that may not live in the local
        // level are not cached at all by the in-process backend.
        if !keys::may_be_local(key) {
            return load().await;
        }
        let span = tracing::trace_span!(target: TARGET, "cache.get", key, hit = false);
        if let Some(hit) = self.get_raw(key).instrument(span.clone()).await
            && let Ok(value) = serde_json::from_str(&hit)
        {
            self.count(key, true);
            span.record("hit", true);
            return Ok(Some(value));
        }
        self.count(key, false);
        let loaded = load().await?;
        if let Some(value) = &loaded
            && let Ok(json) = serde_json::to_string(value)
        {
            self.set_raw(key, json).await;
        }
        Ok(loaded)
    }
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
    async fn absent_rows_are_not_cached() {
        let cache = Cache::local(Duration::from_secs(60));
        let none = || async { Ok::<Option<u64>, ()>(None) };
        assert_eq!(cache.get_or_load("k", none).await, Ok(None));
        let some = || async { Ok::<_, ()>(Some(1u64)) };
        assert_eq!(cache.get_or_load("k", some).await, Ok(Some(1)));
    }
}
