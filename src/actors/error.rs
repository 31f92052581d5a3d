//! The service layer's one error type: what a service actor can answer besides success.
//! `http::error` maps each variant to a status and the contract's `{"msg":...}` body, once.

use crate::db::DbError;

/// A service's refusal or failure, as the HTTP layer needs to tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ServiceError {
    #[error("invalid parameter")]
    InvalidParameter,
    #[error("duplicate entry")]
    Duplicate,
    #[error("customer not found")]
    CustomerNotFound,
    #[error("customer inactive")]
    CustomerInactive,
    #[error("authentication failed")]
    AuthenticationFailed,
    #[error("invalid token")]
    InvalidToken,
    #[error("token expired")]
    TokenExpired,
    #[error("product not found")]
    ProductNotFound,
    #[error("order not found")]
    OrderNotFound,
    #[error("payment not found")]
    PaymentNotFound,
    #[error("purchase not found")]
    PurchaseNotFound,
    /// Too many sagas in flight: the client should retry later.
    #[error("server busy")]
    Busy,
    /// A database or another dependency is unreachable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A request to another node got no answer: it may or may not have been carried out.
    #[error("no answer: {0}")]
    Unanswered(String),
    /// Anything else that is our fault.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<DbError> for ServiceError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Duplicate => ServiceError::Duplicate,
            DbError::Unavailable(m) => ServiceError::Unavailable(m),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

impl From<actix::MailboxError> for ServiceError {
    fn from(e: actix::MailboxError) -> Self {
        ServiceError::Unavailable(e.to_string())
    }
}

/// Shorthand for service replies.
pub type ServiceResult<T> = Result<T, ServiceError>;
