//! The embedded cache: a bounded, concurrent in-process map with a time-to-live (moka).

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache as Moka;

use super::flights::Flights;

/// In-process cache of JSON values.
#[derive(Clone)]
pub struct LocalCache {
    inner: Moka<String, String>,
    /// Loads in flight by key, so concurrent misses of one key make one database read.
    flights: Arc<Flights>,
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
        self.inner.invalidate(key).await;
    }

    /// Drops every entry (the invalidation feed was lost: any entry may be stale).
    pub(super) fn clear(&self) {
        self.inner.invalidate_all();
    }
}
