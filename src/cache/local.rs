//! The embedded cache: a bounded, concurrent in-process map with a time-to-live (moka).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::future::Cache as Moka;
use tokio::sync::OnceCell;

/// One load of a key in flight; its result, as JSON, for the readers that waited on it.
pub(super) type Flight = Arc<OnceCell<Option<String>>>;

/// In-process cache of JSON values.
#[derive(Clone)]
pub struct LocalCache {
    inner: Moka<String, String>,
    /// Loads in flight by key, so concurrent misses of one key make one database read.
    flights: Arc<Mutex<HashMap<String, Flight>>>,
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

    /// The load of `key` in flight, joined or begun.
    pub(super) fn flight(&self, key: &str) -> Flight {
        let mut flights = self.flights.lock().expect("flights lock");
        flights.entry(key.to_owned()).or_default().clone()
    }

    /// Forgets `flight` once it has landed, so the next miss loads afresh.
    pub(super) fn landed(&self, key: &str, flight: &Flight) {
        let mut flights = self.flights.lock().expect("flights lock");
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            flights.remove(key);
        }
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
