//! The one source of time. Every component that stamps or compares times gets a [`Clock`]
//! when it is built, instead of reading the system time itself, so tests can move time on
//! (token expiry, retry budgets) without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The system clock, plus an offset that only tests move (or, in tests, a frozen time).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
    frozen: bool,
}

impl Clock {
    /// The real time.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that stands at `ms` until advanced: tests only.
    #[cfg(any(test, feature = "faults"))]
    pub fn fixed(ms: i64) -> Self {
        Self {
            offset_ms: Arc::new(AtomicI64::new(ms)),
            frozen: true,
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        if self.frozen {
            return offset;
        }
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        system + offset
    }

    /// Seconds since the Unix epoch.
    pub fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Moves this clock (and every copy of it) forward: tests only.
    #[cfg(any(test, feature = "faults"))]
    pub fn advance(&self, by: std::time::Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_an_advance() {
        let clock = Clock::system();
        let copy = clock.clone();
        let before = copy.now_ms();
        clock.advance(std::time::Duration::from_secs(3600));
        assert!(copy.now_ms() - before >= 3_600_000);
        assert_eq!(copy.now_secs(), copy.now_ms() / 1000);
    }

    #[test]
    fn a_fixed_clock_moves_only_when_advanced() {
        let clock = Clock::fixed(1_500);
        assert_eq!((clock.now_ms(), clock.now_secs()), (1_500, 1));
        clock.advance(std::time::Duration::from_millis(600));
        assert_eq!((clock.now_ms(), clock.now_secs()), (2_100, 2));
    }
}
