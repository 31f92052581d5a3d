//! Login throttling: after repeated failures a login is refused (429 with `Retry-After`)
//! before its password is looked at.
//!
//! Failures are counted under two keys, both containing the email (by its unique key):
//! - **(email, client address)**: `per_client` failures (default 5) within a window lock
//!   that pair out;
//! - **email**: `per_email` failures (default 20) from all addresses together lock the email
//!   out for every address.
//!
//! A lockout lasts `lockout` (default 60 s) and doubles with each further lockout of the same
//! key, up to 16 times as long; the window is `lockout` long too. A key unused for an hour
//! after its lockout is forgotten.
//!
//! What an attacker can and cannot do:
//! - **Guess one password from one address**: `per_client` guesses, then the lockouts grow to
//!   16 minutes: about 5 guesses per 16 minutes once warm.
//! - **Guess from many addresses** (a botnet, or a forged `X-Forwarded-For`, which is only
//!   believed from `--trusted-proxies`): the email key bounds the total at `per_email` per
//!   (growing) lockout, whatever the number of addresses.
//! - **Lock a customer out**: from one address, no: the pair locks long before the email
//!   limit, so only that address is refused. From `per_email / per_client` addresses or
//!   more, yes, for that one email, until its lockout ends: the price of bounding distributed
//!   guessing. Customers who share the attacker's address (NAT, a proxy) are not affected:
//!   no key is an address alone, so a flood never reaches another email.
//! - **Learn the password from a lockout**: no. A locked key answers 429 before the password
//!   is checked, so the right password during a lockout is 429 as well. Unknown emails are
//!   counted and locked like known ones.
//! - **Undo the counters**: a successful login clears only its own (email, address) pair; the
//!   email's counter merely does not count that attempt, so the owner logging in gives no
//!   distributed attacker a fresh budget, and a success from one address resets nothing for
//!   another.
//! - **Get more than the limit in parallel**: no. Attempts under way count against the
//!   limit: while failures plus attempts in flight reach it, another is refused (with
//!   `Retry-After: 1`, as those answer within moments). An attempt whose client goes away
//!   counts as a failure; one that says nothing about the password (the database down) does
//!   not count.
//! - **Exhaust memory**: each map holds at most [`CAPACITY`] keys. When full, forgotten keys
//!   go first, then keys not locked; a key that still finds no room is not counted (a spray
//!   of that size costs the attacker that many requests, and locked keys stay locked).
//!
//! The counters live in this process: with several nodes behind a load balancer each node
//! counts on its own (the limits multiply by the node count) until the cluster work moves
//! them into the shared cache.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;

/// Most keys each map (emails, pairs) holds.
pub const CAPACITY: usize = 100_000;

/// The longest lockout is this many times the first.
const MAX_LOCKOUT_FACTOR: i64 = 16;

/// A key unused for this many lockout periods after its last lockout is forgotten.
const FORGET_FACTOR: i64 = 60;

/// How many failures lock a key out, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures of one (email, client address) pair within a window before it is locked.
    pub per_client: u32,
    /// Failures of one email from all addresses within a window before it is locked.
    pub per_email: u32,
    /// The window, and the first lockout (each further one doubles, up to 16 times this).
    pub lockout: Duration,
}

/// A refused attempt: the client may try again after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Locked {
    pub retry_after_secs: u64,
}

/// How an attempt ended, as far as throttling cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The password was right: the pair is cleared, the attempt is not a failure.
    Succeeded,
    /// Wrong password, unknown or inactive account: the attempt stays counted.
    Failed,
    /// Nothing was learned about the password (an outage): the attempt is given back.
    Inconclusive,
}

/// One key's failures, attempts in flight and lockouts.
#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    failures: u32,
    in_flight: u32,
    window_start_ms: i64,
    lockouts: u32,
    locked_until_ms: i64,
    last_seen_ms: i64,
}

/// Counters of one kind of key.
struct Counters<K> {
    map: HashMap<K, Counter>,
    limit: u32,
    window_ms: i64,
}

impl<K: Hash + Eq + Clone> Counters<K> {
    fn new(limit: u32, window: Duration) -> Self {
        Self {
            map: HashMap::new(),
            limit: limit.max(1),
            window_ms: window.as_millis().max(1) as i64,
        }
    }

    /// Refuses `key` while it is locked, or while its failures and attempts in flight
    /// together reach the limit (those answer within moments: retry after a second).
    fn check(&self, key: &K, now: i64) -> Result<(), Locked> {
        let Some(c) = self.map.get(key) else {
            return Ok(());
        };
        if c.locked_until_ms > now {
            let retry_after_secs = (c.locked_until_ms - now)
                .max(0)
                .cast_unsigned()
                .div_ceil(1000);
            return Err(Locked { retry_after_secs });
        }
        let failures = if now - c.window_start_ms >= self.window_ms {
            0
        } else {
            c.failures
        };
        if failures + c.in_flight >= self.limit {
            return Err(Locked {
                retry_after_secs: 1,
            });
        }
        Ok(())
    }

    /// Registers an attempt of `key`; false when there was no room to count it.
    fn start(&mut self, key: &K, now: i64) -> bool {
        if !self.map.contains_key(key) && !self.make_room(now) {
            return false;
        }
        let c = self.map.entry(key.clone()).or_default();
        c.in_flight += 1;
        c.last_seen_ms = now;
        true
    }

    /// Ends an attempt of `key`: a failure counts (and locks the key at the limit, for a
    /// lockout that doubles each time); `clear` forgets the key.
    fn finish(&mut self, key: &K, now: i64, failed: bool, clear: bool) {
        if clear {
            self.map.remove(key);
            return;
        }
        let Some(c) = self.map.get_mut(key) else {
            return;
        };
        c.in_flight = c.in_flight.saturating_sub(1);
        if !failed {
            return;
        }
        if now - c.window_start_ms >= self.window_ms {
            c.failures = 0;
            c.window_start_ms = now;
        }
        c.failures += 1;
        c.last_seen_ms = now;
        if c.failures >= self.limit {
            let factor = 1i64 << c.lockouts.min(MAX_LOCKOUT_FACTOR.ilog2());
            c.lockouts += 1;
            c.locked_until_ms = now + self.window_ms * factor;
            c.failures = 0;
        }
    }

    /// Makes room for one more key; false when every key is locked or in use.
    fn make_room(&mut self, now: i64) -> bool {
        if self.map.len() < CAPACITY {
            return true;
        }
        let forget = self.window_ms * FORGET_FACTOR;
        let busy = |c: &Counter| now < c.locked_until_ms || c.in_flight > 0;
        self.map
            .retain(|_, c| busy(c) || now - c.last_seen_ms < forget);
        if self.map.len() >= CAPACITY {
            self.map.retain(|_, c| busy(c));
        }
        self.map.len() < CAPACITY
    }
}

struct State {
    emails: Counters<String>,
    clients: Counters<(String, IpAddr)>,
}

/// The login throttle of this node (cheap to clone: one shared state).
#[derive(Clone)]
pub struct LoginThrottle {
    clock: Clock,
    state: Arc<Mutex<State>>,
}

/// An attempt under way: settle it with its outcome. Dropped unsettled (the client went
/// away), it counts as a failure.
#[must_use = "settle the attempt with its outcome"]
pub struct Attempt {
    throttle: LoginThrottle,
    email: String,
    client: IpAddr,
    outcome: Outcome,
}

impl LoginThrottle {
    /// A throttle with these limits, telling time by `clock`.
    pub fn new(settings: ThrottleSettings, clock: Clock) -> Self {
        let state = State {
            emails: Counters::new(settings.per_email, settings.lockout),
            clients: Counters::new(settings.per_client, settings.lockout),
        };
        Self {
            clock,
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a login attempt for `email_key` from `client`, or refuses it while either of
    /// its keys is locked (the longer wait is given).
    pub fn begin(&self, email_key: &str, client: IpAddr) -> Result<Attempt, Locked> {
        let now = self.clock.now_ms();
        let mut state = self.state();
        let email = email_key.to_owned();
        let pair = (email.clone(), client);
        match (
            state.emails.check(&email, now),
            state.clients.check(&pair, now),
        ) {
            (Err(a), Err(b)) => return Err(a.max(b)),
            (Err(locked), _) | (_, Err(locked)) => return Err(locked),
            _ => {}
        }
        state.emails.start(&email, now);
        state.clients.start(&pair, now);
        Ok(Attempt {
            throttle: self.clone(),
            email,
            client,
            outcome: Outcome::Failed,
        })
    }
}

impl Attempt {
    /// Records how the attempt ended.
    pub fn settle(mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let now = self.throttle.clock.now_ms();
        let failed = self.outcome == Outcome::Failed;
        let mut state = self.throttle.state();
        state.emails.finish(&self.email, now, failed, false);
        let pair = (std::mem::take(&mut self.email), self.client);
        let clear = self.outcome == Outcome::Succeeded;
        state.clients.finish(&pair, now, failed, clear);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "203.0.113.1";
    const B: &str = "203.0.113.2";

    /// 3 failures per pair, `per_email` per email, 60 s windows.
    fn throttle(per_email: u32) -> LoginThrottle {
        let settings = ThrottleSettings {
            per_client: 3,
            per_email,
            lockout: Duration::from_secs(60),
        };
        LoginThrottle::new(settings, Clock::fixed(1_000_000))
    }

    fn attempt(t: &LoginThrottle, email: &str, from: &str, outcome: Outcome) -> Result<(), Locked> {
        t.begin(email, from.parse().unwrap())
            .map(|a| a.settle(outcome))
    }

    fn fail(t: &LoginThrottle, email: &str, from: &str) -> Result<(), Locked> {
        attempt(t, email, from, Outcome::Failed)
    }

    fn succeed(t: &LoginThrottle, email: &str, from: &str) -> Result<(), Locked> {
        attempt(t, email, from, Outcome::Succeeded)
    }

    fn locked(retry_after_secs: u64) -> Result<(), Locked> {
        Err(Locked { retry_after_secs })
    }

    #[test]
    fn a_pair_locks_after_its_limit_and_the_lockout_doubles() {
        let t = throttle(20);
        for _ in 0..3 {
            assert_eq!(fail(&t, "a", A), Ok(()));
        }
        assert_eq!(fail(&t, "a", A), locked(60));
        t.clock.advance(Duration::from_millis(59_500));
        assert_eq!(
            succeed(&t, "a", A),
            locked(1),
            "the right password is refused too"
        );
        // other emails from the same address, and the same email elsewhere, are not locked
        assert_eq!(succeed(&t, "b", A), Ok(()));
        assert_eq!(fail(&t, "a", B), Ok(()));
        t.clock.advance(Duration::from_millis(500));
        for _ in 0..3 {
            assert_eq!(fail(&t, "a", A), Ok(()));
        }
        assert_eq!(fail(&t, "a", A), locked(120), "second lockout doubles");
    }

    #[test]
    fn lockouts_grow_to_sixteen_times_the_first() {
        let t = throttle(1000);
        let mut waits = Vec::new();
        for _ in 0..7 {
            for _ in 0..3 {
                fail(&t, "a", A).unwrap();
            }
            let Err(Locked { retry_after_secs }) = fail(&t, "a", A) else {
                panic!("not locked")
            };
            waits.push(retry_after_secs);
            t.clock.advance(Duration::from_secs(retry_after_secs));
        }
        assert_eq!(waits, [60, 120, 240, 480, 960, 960, 960]);
    }

    #[test]
    fn the_email_locks_for_every_address_after_failures_from_many() {
        let t = throttle(5);
        for i in 0..5 {
            assert_eq!(fail(&t, "a", &format!("198.51.100.{i}")), Ok(()));
        }
        assert_eq!(succeed(&t, "a", B), locked(60));
        assert_eq!(succeed(&t, "b", B), Ok(()));
    }

    #[test]
    fn a_success_clears_its_own_pair_only() {
        let t = throttle(20);
        for _ in 0..2 {
            fail(&t, "a", A).unwrap();
            fail(&t, "a", B).unwrap();
        }
        succeed(&t, "a", A).unwrap();
        // A starts again from zero; B still has its two failures
        for _ in 0..3 {
            assert_eq!(fail(&t, "a", A), Ok(()));
        }
        assert_eq!(fail(&t, "a", B), Ok(()));
        assert_eq!(fail(&t, "a", B), locked(60));
    }

    #[test]
    fn a_success_does_not_reset_the_email_count() {
        let t = throttle(4);
        for i in 0..3 {
            fail(&t, "a", &format!("198.51.100.{i}")).unwrap();
        }
        succeed(&t, "a", A).unwrap();
        assert_eq!(fail(&t, "a", B), Ok(()));
        assert_eq!(succeed(&t, "a", A), locked(60));
    }

    #[test]
    fn attempts_in_flight_count_against_the_limit_until_they_end() {
        let t = throttle(20);
        let client: IpAddr = A.parse().unwrap();
        let started: Vec<Attempt> = (0..3).map(|_| t.begin("a", client).unwrap()).collect();
        assert_eq!(
            t.begin("a", client).err(),
            Some(Locked {
                retry_after_secs: 1
            })
        );
        for a in started {
            a.settle(Outcome::Inconclusive);
        }
        // none of them counted
        for _ in 0..3 {
            assert_eq!(fail(&t, "a", A), Ok(()));
        }
        assert_eq!(fail(&t, "a", A), locked(60));
        // an attempt dropped unsettled (the client went away) is a failure
        let t = throttle(20);
        for _ in 0..3 {
            drop(t.begin("a", client).unwrap());
        }
        assert_eq!(fail(&t, "a", A), locked(60));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t = throttle(20);
        for _ in 0..2 {
            fail(&t, "a", A).unwrap();
        }
        t.clock.advance(Duration::from_secs(60));
        for _ in 0..3 {
            assert_eq!(fail(&t, "a", A), Ok(()));
        }
        assert_eq!(fail(&t, "a", A), locked(60));
    }
}
