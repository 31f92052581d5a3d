//! Per-key single flight: concurrent misses of one key in this process share one load. Both
//! backends read through it (the in-process cache around the database, `Tiered` around the
//! whole Redis-then-database path), so a cold key costs one load however many wait for it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

/// One load of a key in flight; its result, as JSON, for the readers that waited on it.
type Flight = Arc<OnceCell<Option<String>>>;

/// The loads in flight, by key. A flight is forgotten once it has landed, so the next miss
/// loads afresh (a landed value is for the callers that waited, never a cache of its own).
#[derive(Default)]
pub(super) struct Flights {
    by_key: Mutex<HashMap<String, Flight>>,
}

impl Flights {
    /// Loads `key` once for every concurrent caller: the first one runs `lead` with `load`,
    /// which answers the loaded value and its JSON for the others (and fills what it fills);
    /// the others get that JSON decoded. A waiter whose type does not decode from it (another
    /// caller's type for the same key) runs `alone` with its own `load`. An error of the
    /// lead's is its own: a waiter then leads in its place.
    pub(super) async fn share<T, E, F, Lead, LeadFut, Alone, AloneFut>(
        &self,
        key: &str,
        load: F,
        lead: Lead,
        alone: Alone,
    ) -> Result<Option<T>, E>
    where
        T: DeserializeOwned,
        Lead: FnOnce(F) -> LeadFut,
        LeadFut: Future<Output = Result<(Option<T>, Option<String>), E>>,
        Alone: FnOnce(F) -> AloneFut,
        AloneFut: Future<Output = Result<Option<T>, E>>,
    {
        let flight = self.join(key);
        let mut load = Some(load);
        let mut mine: Option<Option<T>> = None;
        let (load_slot, mine_slot) = (&mut load, &mut mine);
        let shared = flight
            .get_or_try_init(move || async move {
                let load = load_slot.take().expect("a flight runs its loader once");
                let (got, json) = lead(load).await?;
                *mine_slot = Some(got);
                Ok(json)
            })
            .await
            .cloned();
        self.landed(key, &flight);
        let shared = shared?;
        if let Some(got) = mine {
            return Ok(got);
        }
        match shared.map(|json| serde_json::from_str(&json)) {
            None => Ok(None),
            Some(Ok(value)) => Ok(Some(value)),
            Some(Err(_)) => match load {
                Some(load) => alone(load).await,
                None => Ok(None),
            },
        }
    }

    /// The load of `key` in flight, joined or begun.
    fn join(&self, key: &str) -> Flight {
        let mut by_key = self.by_key.lock().expect("flights lock");
        by_key.entry(key.to_owned()).or_default().clone()
    }

    /// Forgets `flight` once it has landed (unless a newer one took its place).
    fn landed(&self, key: &str, flight: &Flight) {
        let mut by_key = self.by_key.lock().expect("flights lock");
        if by_key.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            by_key.remove(key);
        }
    }
}
