//! Typed ids and other `u64` numbers (event ids, versions, epochs, page bounds) at the BIGINT
//! columns: the one place where a `u64` becomes the `i64` a column holds, and back.
//! Sonyflake ids fit in 63 bits, so every id this system makes is stored as is; an id above
//! `i64::MAX` (valid on the wire, where ids are `u64`) is never wrapped into a negative key:
//! writing one is an error, and a lookup by one finds nothing.

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::mysql::Mysql;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::BigInt;
use diesel::sqlite::Sqlite;

use crate::domain::ids::{CustomerId, ProductId, PurchaseId};

/// A number that no BIGINT column can hold (above `i64::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is out of the stored range")]
pub struct OutOfRange(pub u64);

/// A stored value that should be an id or a count but is negative: the row is corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stored value {0} is negative")]
pub struct Negative(pub i64);

/// The column value of a number: the checked conversion every typed id goes through.
pub fn to_column(n: u64) -> Result<i64, OutOfRange> {
    i64::try_from(n).map_err(|_| OutOfRange(n))
}

/// The number a column value holds.
pub fn from_column(value: i64) -> Result<u64, Negative> {
    u64::try_from(value).map_err(|_| Negative(value))
}

/// A page bound or cursor as a column value: beyond the column's range it means "all", so
/// it saturates instead of failing.
pub fn saturating(n: u64) -> i64 {
    to_column(n).unwrap_or(i64::MAX)
}

/// A conversion that fails inside a query is a query failure, as diesel reports a `ToSql`
/// that fails.
impl From<OutOfRange> for super::DbError {
    fn from(e: OutOfRange) -> Self {
        diesel::result::Error::SerializationError(Box::new(e)).into()
    }
}

/// A stored value that does not decode is a query failure, as diesel reports a `FromSql`
/// that fails.
impl From<Negative> for super::DbError {
    fn from(e: Negative) -> Self {
        diesel::result::Error::DeserializationError(Box::new(e)).into()
    }
}

/// Whether a row can have this id: a lookup by an id that cannot be stored answers "none"
/// without asking the database (the API answers 404 for it, as for any unknown id).
pub fn storable(id: impl Into<u64>) -> bool {
    to_column(id.into()).is_ok()
}

/// Implements the BIGINT column mapping of typed ids through [`to_column`] and
/// [`from_column`]: `ToSql` for SQLite and MySQL (their bind buffers differ) and `FromSql`
/// for any backend that reads an `i64`. Expands, per type, to three impls like
/// `impl ToSql<BigInt, Sqlite> for PurchaseId { out.set_value(to_column(self.0)?) }`.
macro_rules! bigint_columns {
    ($($id:ty),*) => {$(
        impl ToSql<BigInt, Sqlite> for $id {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
                out.set_value(to_column(self.0)?);
                Ok(IsNull::No)
            }
        }

        impl ToSql<BigInt, Mysql> for $id {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Mysql>) -> serialize::Result {
                ToSql::<BigInt, Mysql>::to_sql(&to_column(self.0)?, &mut out.reborrow())
            }
        }

        impl<DB: Backend> FromSql<BigInt, DB> for $id
        where
            i64: FromSql<BigInt, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                Ok(Self(from_column(i64::from_sql(bytes)?)?))
            }
        }
    )*};
}

bigint_columns!(PurchaseId, CustomerId, ProductId);

/// One page of the keyset scan that builds a Bloom filter: up to `$limit` ids of `$table` (a
/// schema module with an `id` column) above `$after`, ascending, each once (an order has a
/// row per item), loaded on `$conn`. A macro, because diesel's query types differ per table;
/// keyset paging, so a long scan never rereads or skips rows.
macro_rules! keyset_ids {
    ($conn:expr, $table:ident, $after:expr, $limit:expr) => {
        $table::table
            .filter($table::id.gt($after))
            .select($table::id)
            .distinct()
            .order($table::id)
            .limit($limit)
            .load($conn)
            .await
    };
}
pub(crate) use keyset_ids;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_convert_without_wrapping() {
        assert_eq!(to_column(42), Ok(42));
        assert_eq!(to_column(i64::MAX as u64), Ok(i64::MAX));
        assert_eq!(to_column(u64::MAX), Err(OutOfRange(u64::MAX)));
        assert_eq!(saturating(u64::MAX), i64::MAX);
        assert_eq!(from_column(7), Ok(7));
        assert_eq!(from_column(-1), Err(Negative(-1)));
        assert!(!storable(PurchaseId(1 << 63)));
        assert!(storable(ProductId(1)));
    }
}
