//! Request extractors shared by every handler: the authenticated customer, JSON bodies read
//! whatever the Content-Type (the README's curl sends none), and typed path ids.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::str::FromStr;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use crate::actors::ServiceError;
use crate::auth::tokens::TokenError;
use crate::domain::ids::CustomerId;

/// Largest request body accepted; beyond it the answer is 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The token of an `Authorization` value, by the original's rule.
pub fn bearer_token(header: &str) -> Option<&str> {
    let mut parts = header.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(token), None) => Some(token),
        _ => None,
    }
}

/// A handler's `CustomerId` argument is the customer its access token names. `Authorization`
/// must be exactly two words separated by one space; the first is not checked (`bearer`,
/// `Bearer`, anything), the second is the token.
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

/// The client's address: the peer, or what `X-Forwarded-For` says when the peer is one of
/// `--trusted-proxies` (see `auth::proxies`). Keys the login throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl FromRequest for ClientAddr {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req
            .app_data::<web::Data<AppState>>()
            .expect("AppState registered");
        // No peer address (not a TCP connection): one shared unspecified client.
        let peer = req
            .peer_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let forwarded: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .collect();
        let client = state.trusted_proxies.client(peer, &forwarded);
        std::future::ready(Ok(ClientAddr(client)))
    }
}

/// A JSON body of type `T`, parsed whatever the Content-Type; any decoding failure is
/// 400 `invalid parameter`, a body over [`BODY_LIMIT`] is 413.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let mut payload = payload.take();
        let timeout = req
            .app_data::<web::Data<super::AppState>>()
            .map_or(std::time::Duration::from_secs(10), |s| s.body_timeout);
        Box::pin(async move {
            let read = async {
                let mut body = web::BytesMut::new();
                while let Some(chunk) = payload.next().await {
                    let chunk = chunk.map_err(|_| ApiError::invalid())?;
                    if body.len() + chunk.len() > BODY_LIMIT {
                        return Err(ApiError::PayloadTooLarge);
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            };
            // A client that trickles its body must not hold a worker.
            let body = tokio::time::timeout(timeout, read)
                .await
                .map_err(|_| ApiError::RequestTimeout)??;
            // Go-style key matching first (keys folded to lower case, the last repeat wins),
            // then the typed decode.
            let Folded(value) = serde_json::from_slice(&body).map_err(|_| ApiError::invalid())?;
            T::deserialize(value)
                .map(JsonBody)
                .map_err(|_| ApiError::invalid())
        })
    }
}

/// A JSON value whose object keys are lower-cased as they are read, so that request fields
/// (all lower-case) match keys case-insensitively as Go's encoding/json does (`"Email"`,
/// `"EMAIL"`); when a key repeats, in any case, the last value wins, as in Go.
struct Folded(serde_json::Value);

impl<'de> Deserialize<'de> for Folded {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FoldedVisitor)
    }
}

struct FoldedVisitor;

impl<'de> Visitor<'de> for FoldedVisitor {
    type Value = Folded;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Folded, E> {
        Ok(Folded(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Folded, E> {
        Ok(Folded(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Folded, E> {
        Ok(Folded(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Folded, E> {
        Ok(Folded(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Folded, E> {
        Ok(Folded(Value::from(v)))
    }
    fn visit_unit<E>(self) -> Result<Folded, E> {
        Ok(Folded(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Folded, A::Error> {
        let mut items = Vec::new();
        while let Some(Folded(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Folded(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Folded, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some((key, Folded(v))) = map.next_entry::<String, Folded>()? {
            object.insert(key.to_lowercase(), v);
        }
        Ok(Folded(Value::Object(object)))
    }
}

/// Parses a path id: a base-10 u64 (any u64: one above what the store holds names nothing,
/// so it is 404, not 400) or 400 `invalid parameter`.
pub fn parse_id<T: FromStr>(raw: &str) -> Result<T, ApiError> {
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
    fn body_keys_match_case_insensitively_and_the_last_repeat_wins() {
        let Folded(v) =
            serde_json::from_str(r#"{"Email":"a","EMAIL":"b","Items":[{"Product_ID":1}]}"#)
                .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"email":"b","items":[{"product_id":1}]})
        );
        let Folded(v) = serde_json::from_str(r#"{"email":"a","email":"c"}"#).unwrap();
        assert_eq!(v, serde_json::json!({"email":"c"}));
    }

    #[test]
    fn ids_must_be_u64() {
        assert_eq!(parse_id::<CustomerId>("42").unwrap(), CustomerId(42));
        assert_eq!(
            parse_id::<CustomerId>(&u64::MAX.to_string()).unwrap(),
            CustomerId(u64::MAX)
        );
        for bad in ["abc", "-1", "18446744073709551616", ""] {
            assert!(parse_id::<CustomerId>(bad).is_err());
        }
    }
}
