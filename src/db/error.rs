//! The database layer's one error type.

use diesel::result::DatabaseErrorKind;

/// Why a repository call failed. `Duplicate` and `Rejected` are answers, the rest are faults.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// A unique key (email, phone, id) is already taken.
    #[error("duplicate entry")]
    Duplicate,
    /// A business rule refused the change inside a transaction, which was rolled back.
    #[error("rejected: {0}")]
    Rejected(String),
    /// A step command from a saga owner older than one that already ran a command for the
    /// purchase (a stale orchestrator): refused unapplied and unreplayed, so it cannot undo
    /// or redo what the newer owner decided. Holds the command's epoch.
    #[error("fenced: a newer saga owner than epoch {0} ran this purchase's step")]
    Fenced(u64),
    /// No connection could be had (server down, pool exhausted).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The query itself failed.
    #[error("query failed: {0}")]
    Query(diesel::result::Error),
    /// Opening or migrating a database failed.
    #[error("cannot open database: {0}")]
    Setup(String),
}

impl From<diesel::result::Error> for DbError {
    fn from(e: diesel::result::Error) -> Self {
        match e {
            diesel::result::Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                DbError::Duplicate
            }
            other => DbError::Query(other),
        }
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for DbError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        DbError::Unavailable(e.to_string())
    }
}
