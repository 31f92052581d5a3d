//! Time-ordered 64-bit ids in the Sonyflake layout the original uses (10 ms ticks since
//! 2014-09-01, 8-bit sequence, 16-bit machine id), so ids stay comparable with it; and the
//! typed ids built from them, so a purchase id cannot be passed where a product id belongs.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sonyflake::Sonyflake;

/// Defines typed ids: `u64` newtypes that are plain numbers on the wire (serde
/// `transparent`), print and parse as base-10 `u64`, and map to a BIGINT column (the
/// column conversion is in `db::ids`). Each `/// doc` + `Name;` entry expands to:
///
/// ```text
/// /// doc
/// #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize,
///          Deserialize, AsExpression, FromSqlRow)]
/// #[serde(transparent)]
/// #[diesel(sql_type = BigInt)]
/// pub struct PurchaseId(pub u64);
/// impl Display for PurchaseId { /* the u64 */ }
/// impl FromStr for PurchaseId { /* u64::from_str */ }
/// impl From<PurchaseId> for u64 { /* .0 */ }
/// ```
macro_rules! typed_ids {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
            diesel::expression::AsExpression, diesel::deserialize::FromSqlRow,
        )]
        #[serde(transparent)]
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.0
            }
        }
    )*};
}

typed_ids! {
    /// A purchase, and so its saga, order and payment (all keyed by it).
    PurchaseId;
    /// A customer: the account, and the owner of purchases, orders and payments.
    CustomerId;
    /// A product of the catalog.
    ProductId;
}

/// Sonyflake's epoch, 2014-09-01T00:00:00Z, in ms since the Unix epoch.
const SONYFLAKE_EPOCH_MS: i64 = 1_409_529_600_000;

/// When an id was made (to its 10 ms tick), in ms since the Unix epoch. A node whose clock is
/// behind the newest id it has stored would make ids that sort before, or equal, old ones.
pub fn issued_at_ms(id: u64) -> i64 {
    SONYFLAKE_EPOCH_MS + ((id >> 24) as i64) * 10
}

/// The smallest id made at or after `ms` (ms since the Unix epoch): ids below it are older.
pub fn first_id_at(ms: i64) -> u64 {
    (((ms - SONYFLAKE_EPOCH_MS).max(0) / 10) as u64) << 24
}

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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(
            (now - issued_at_ms(b)).abs() < 1_000,
            "an id tells when it was made"
        );
        // 2024+ ids are 17-19 digits, as the original's.
        assert!((17..=19).contains(&a.to_string().len()));
    }
}
