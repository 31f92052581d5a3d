//! The HTTP layer's one error type and the only place errors become responses.
//!
//! Handlers return `Result<_, ApiError>`; service errors convert with `?`. Every error body is
//! the contract's `{"msg":"..."}`, except a missing or invalid token: 401 with an empty body,
//! as the original. Server-side failures are logged here, once, with their cause.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::actors::ServiceError;

/// Why a request failed, as the client will see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// No usable bearer token: 401 with an empty body.
    #[error("unauthorized")]
    Unauthorized,
    #[error("payload too large")]
    PayloadTooLarge,
    /// The customer already has as many result streams open as allowed.
    #[error("too many result streams")]
    TooManyStreams,
    /// The body did not arrive within the client request timeout.
    #[error("request timeout")]
    RequestTimeout,
    #[error("not found")]
    RouteNotFound,
    /// The dashboard's admin view was asked for but no admin token is configured: 403.
    #[error(
        "the admin view is off: start sagashop with --admin-token <token> (or SAGASHOP_ADMIN_TOKEN)"
    )]
    AdminViewOff,
    /// The dashboard's admin view was asked for without the configured admin token: 401.
    #[error("admin token missing or wrong: send Authorization: Bearer <admin token>")]
    AdminTokenRejected,
    /// Too many failed logins: 429 with `Retry-After` (seconds).
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
}

impl ApiError {
    /// Shorthand for the most common client error.
    pub fn invalid() -> Self {
        ApiError::Service(ServiceError::InvalidParameter)
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::Service(e.into())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        use ServiceError as S;
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyStreams => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::AdminViewOff => StatusCode::FORBIDDEN,
            ApiError::AdminTokenRejected => StatusCode::UNAUTHORIZED,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Service(e) => match e {
                S::InvalidParameter | S::Duplicate => StatusCode::BAD_REQUEST,
                S::CustomerInactive
                | S::AuthenticationFailed
                | S::InvalidToken
                | S::TokenExpired => StatusCode::UNAUTHORIZED,
                S::CustomerNotFound
                | S::ProductNotFound
                | S::OrderNotFound
                | S::PaymentNotFound
                | S::PurchaseNotFound => StatusCode::NOT_FOUND,
                S::Busy | S::Unavailable(_) | S::Unanswered(_) => StatusCode::SERVICE_UNAVAILABLE,
                S::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut response = HttpResponse::build(status);
        let msg = match self {
            ApiError::Unauthorized => return response.finish(),
            ApiError::Service(
                ServiceError::Unavailable(cause) | ServiceError::Unanswered(cause),
            ) => {
                tracing::error!(%cause, "dependency unavailable");
                "service unavailable".to_owned()
            }
            ApiError::Service(ServiceError::Internal(cause)) => {
                tracing::error!(%cause, "server error");
                "server error".to_owned()
            }
            ApiError::AdminTokenRejected => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
                self.to_string()
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
                self.to_string()
            }
            other => other.to_string(),
        };
        response.json(json!({ "msg": msg }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_contract() {
        let cases = [
            (ServiceError::InvalidParameter, 400),
            (ServiceError::Duplicate, 400),
            (ServiceError::TokenExpired, 401),
            (ServiceError::ProductNotFound, 404),
            (ServiceError::Busy, 503),
            (ServiceError::Internal("x".into()), 500),
        ];
        for (e, code) in cases {
            assert_eq!(ApiError::from(e).status_code().as_u16(), code);
        }
        assert_eq!(ApiError::Unauthorized.status_code().as_u16(), 401);
    }

    #[test]
    fn too_many_requests_says_when_to_retry() {
        let r = ApiError::TooManyRequests {
            retry_after_secs: 42,
        }
        .error_response();
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "42");
    }
}
