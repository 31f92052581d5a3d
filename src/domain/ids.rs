//! Time-ordered 64-bit ids in the Sonyflake layout the original uses (10 ms ticks since
//! 2014-09-01, 8-bit sequence, 16-bit machine id), so ids stay comparable with it.

use std::sync::Arc;

use sonyflake::Sonyflake;

/// Shared id generator; cheap to clone, safe across threads.
#[derive(Clone)]
pub struct IdGenerator {
    inner: Arc<Sonyflake>,
}

impl IdGenerator {
    /// Generator stamping `machine_id` into every id (must be unique per node).
    pub fn new(machine_id: u16) -> Self {
        let inner = Sonyflake::builder()
            .machine_id(&|| Ok(machine_id))
            .finalize()
            .expect("sonyflake with an explicit machine id cannot fail to build");
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Next id. Ids fit in 63 bits, so they are stored as signed BIGINT without loss.
    pub fn next(&self) -> u64 {
        self.inner
            .next_id()
            .expect("sonyflake clock runs until the year 2188")
            .to_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_grow_and_carry_the_machine_id() {
        let ids = IdGenerator::new(7);
        let a = ids.next();
        let b = ids.next();
        assert!(b > a);
        assert_eq!(a & 0xffff, 7);
        assert!(a < i64::MAX as u64);
        // 2024+ ids are 17-19 digits, as the original's.
        assert!((17..=19).contains(&a.to_string().len()));
    }
}
