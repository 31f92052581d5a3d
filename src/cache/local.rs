//! The embedded cache: a bounded, concurrent in-process map with a time-to-live (moka).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache as Moka;

use super::flights::Flights;

/// In-process cache of JSON values.
#[derive(Clone)]
pub struct LocalCache {
    inner: Moka<String, String>,
    /// Loads in flight by key, so concurrent misses of one key make one database read.
    flights: Arc<Flights>,
    /// Bumped by every invalidation, before its entry is dropped: a load that began before
    /// one may hold what the change made stale, and drops what it stored (see
    /// [`LocalCache::set_unless_invalidated`]).
    invalidations: Arc<AtomicU64>,
}

impl LocalCache {
    /// Cache whose entries expire `ttl` after they were written; at most 100k entries.
    pub fn new(ttl: Duration) -> Self {
        Self {
            inner: Moka::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            flights: Arc::default(),
            invalidations: Arc::default(),
        }
    }

    /// Where the invalidations stand; a load reads it before it reads the database.
    pub(super) fn invalidations(&self) -> u64 {
        self.invalidations.load(Ordering::SeqCst)
    }

    /// Stores what a load read, then drops it again if an invalidation came since `seen`:
    /// the load may have read the database before the change that invalidation announced,
    /// and a stale page would outlive it by the whole TTL. (The invalidation bumps the count
    /// before it drops the entry, so either it drops this entry or this check sees it.)
    pub(super) async fn set_unless_invalidated(&self, key: &str, value: String, seen: u64) {
        self.inner.insert(key.to_owned(), value).await;
        if self.invalidations() != seen {
            self.inner.invalidate(key).await;
        }
    }

    /// Its loads in flight (the embedded read path's single flight).
    pub(super) fn flights(&self) -> &Flights {
        &self.flights
    }

    pub(super) async fn get(&self, key: &str) -> Option<String> {
        self.inner.get(key).await
    }

    pub(super) async fn set(&self, key: &str, value: String) {
        self.inner.insert(key.to_owned(), value).await;
    }

    pub(super) async fn delete(&self, key: &str) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.inner.invalidate(key).await;
    }

    /// Drops every entry (the invalidation feed was lost: any entry may be stale).
    pub(super) fn clear(&self) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.inner.invalidate_all();
    }
}
