//! The admin token: what guards every customer's sagas on the dashboard. Sent as
//! `Authorization: Bearer <token>`, compared in constant time.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use subtle::ConstantTimeEq;

use super::Dashboard;
use crate::http::error::ApiError;
use crate::secrets::Secret;

/// A handler argument that exists only when the request carries the admin token.
pub struct Admin;

/// Checks an `Authorization` header against the configured token: the admin view is off
/// without one (403), a missing or wrong token is refused (401).
pub fn check(configured: Option<&Secret>, authorization: Option<&str>) -> Result<Admin, ApiError> {
    let expected = configured
        .map(Secret::expose)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::AdminViewOff)?;
    let given = authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .ok_or(ApiError::AdminTokenRejected)?;
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(Admin)
    } else {
        Err(ApiError::AdminTokenRejected)
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let configured = req
            .app_data::<web::Data<Dashboard>>()
            .and_then(|d| d.admin_token.as_ref());
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        ready(check(configured, authorization))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(configured: Option<&str>, header: Option<&str>) -> u16 {
        use actix_web::ResponseError;
        let configured = configured.map(Secret::new);
        match check(configured.as_ref(), header) {
            Ok(Admin) => 200,
            Err(e) => e.status_code().as_u16(),
        }
    }

    #[test]
    fn only_the_configured_token_opens_the_admin_view() {
        assert_eq!(status(Some("s3cret"), Some("Bearer s3cret")), 200);
        assert_eq!(status(Some("s3cret"), Some("bearer s3cret")), 200);
        assert_eq!(status(Some("s3cret"), Some("Bearer s3cre")), 401);
        assert_eq!(status(Some("s3cret"), Some("Bearer s3cret2")), 401);
        assert_eq!(status(Some("s3cret"), Some("s3cret")), 401);
        assert_eq!(status(Some("s3cret"), None), 401);
    }

    #[test]
    fn without_a_configured_token_the_admin_view_is_off() {
        assert_eq!(status(None, Some("Bearer anything")), 403);
        assert_eq!(status(Some(""), Some("Bearer ")), 403);
    }
}
