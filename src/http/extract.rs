//! Request extractors shared by every handler: the authenticated customer, JSON bodies read
//! whatever the Content-Type (the README's curl sends none), and u64 path ids.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::actors::ServiceError;
use crate::auth::tokens::TokenError;

/// Largest request body accepted; beyond it the answer is 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The customer an access token names. `Authorization` must be exactly two words separated by
/// one space; the first is not checked (`bearer`, `Bearer`, anything), the second is the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerId(pub u64);

/// The token of an `Authorization` value, by the original's rule.
pub fn bearer_token(header: &str) -> Option<&str> {
    let mut parts = header.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(token), None) => Some(token),
        _ => None,
    }
}

impl FromRequest for CustomerId {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        let state = req
            .app_data::<web::Data<AppState>>()
            .expect("AppState registered");
        std::future::ready(match token.map(|t| state.tokens.check_access(t)) {
            Some(Ok(id)) => Ok(CustomerId(id)),
            Some(Err(TokenError::Expired)) => Err(ServiceError::TokenExpired.into()),
            _ => Err(ApiError::Unauthorized),
        })
    }
}

/// A JSON body of type `T`, parsed whatever the Content-Type; any decoding failure is
/// 400 `invalid parameter`, a body over [`BODY_LIMIT`] is 413.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(_: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let mut payload = payload.take();
        Box::pin(async move {
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|_| ApiError::invalid())?;
                if body.len() + chunk.len() > BODY_LIMIT {
                    return Err(ApiError::PayloadTooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            serde_json::from_slice(&body)
                .map(JsonBody)
                .map_err(|_| ApiError::invalid())
        })
    }
}

/// Parses a path id: base-10 u64 or 400 `invalid parameter`.
pub fn parse_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_rule_matches_the_original() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Token abc"), Some("abc"));
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer  abc"), None);
        assert_eq!(bearer_token("Bearer abc def"), None);
    }

    #[test]
    fn ids_must_be_u64() {
        assert_eq!(parse_id("42").unwrap(), 42);
        for bad in ["abc", "-1", "18446744073709551616", ""] {
            assert!(parse_id(bad).is_err());
        }
    }
}
