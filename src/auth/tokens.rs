//! HS256 access/refresh token pairs with the original's claims
//! `{"CustomerID":u64,"Refresh":bool,"exp":secs}`; tokens are stateless (no rotation).
//!
//! A refresh token also carries the account's token version (`"TokenVersion"`, after the
//! original's claims), so that an email change can end the sessions opened before it: the
//! account service refuses a refresh token whose version is not the account's. Access tokens
//! are exactly the original's and are not looked up: they stay valid until they expire
//! (`--jwt-access-token-expire-second`). A token without the claim (issued before it existed)
//! counts as version 0, the version every account starts at.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;

/// `{"alg":"HS256","typ":"JWT"}` in the original's key order (jsonwebtoken writes typ first).
const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// The original's claims, in its key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "CustomerID")]
    pub customer_id: u64,
    #[serde(rename = "Refresh")]
    pub refresh: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// The account's token version when a refresh token was issued (absent from access tokens).
    #[serde(
        rename = "TokenVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub token_version: Option<i64>,
}

/// What a valid refresh token names: the customer and the token version it was issued at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshGrant {
    pub customer_id: u64,
    pub token_version: i64,
}

/// A freshly issued pair, serialized as the original does.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub refresh_token: String,
    pub access_token: String,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token")]
    Invalid,
    #[error("token expired")]
    Expired,
}

/// Issues and checks tokens with one secret and the configured lifetimes.
#[derive(Clone)]
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    access_ttl: u64,
    refresh_ttl: u64,
    clock: Clock,
}

impl TokenIssuer {
    /// Issuer for `secret` with lifetimes in seconds, telling time by `clock`.
    pub fn new(secret: &str, access_ttl: u64, refresh_ttl: u64, clock: Clock) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            access_ttl,
            refresh_ttl,
            clock,
        }
    }

    /// A new access + refresh pair for a customer, both stamped with the same time; the
    /// refresh token carries the account's current `token_version`.
    pub fn issue(
        &self,
        customer_id: u64,
        token_version: i64,
    ) -> Result<TokenPair, jsonwebtoken::errors::Error> {
        let now = self.clock.now_secs().max(0) as u64;
        let sign = |refresh: bool, ttl: u64| {
            let claims = Claims {
                customer_id,
                refresh,
                exp: Some(now + ttl),
                token_version: refresh.then_some(token_version),
            };
            let payload = serde_json::to_vec(&claims).expect("claims serialize");
            let message = format!("{HEADER_B64}.{}", URL_SAFE_NO_PAD.encode(payload));
            let signature =
                jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, Algorithm::HS256)?;
            Ok::<_, jsonwebtoken::errors::Error>(format!("{message}.{signature}"))
        };
        Ok(TokenPair {
            refresh_token: sign(true, self.refresh_ttl)?,
            access_token: sign(false, self.access_ttl)?,
        })
    }

    /// The customer of a valid access token (a refresh token is not an access token).
    pub fn check_access(&self, token: &str) -> Result<u64, TokenError> {
        let claims = self.decode(token)?;
        if claims.refresh {
            return Err(TokenError::Invalid);
        }
        Ok(claims.customer_id)
    }

    /// The customer and token version of a valid refresh token (an access token is not a
    /// refresh token); the caller compares the version with the account's.
    pub fn check_refresh(&self, token: &str) -> Result<RefreshGrant, TokenError> {
        let claims = self.decode(token)?;
        if !claims.refresh {
            return Err(TokenError::Invalid);
        }
        Ok(RefreshGrant {
            customer_id: claims.customer_id,
            token_version: claims.token_version.unwrap_or(0),
        })
    }

    /// Verifies the HS256 signature (the contract's only algorithm: a token signed otherwise,
    /// even with the right secret, is invalid), then expiry; expired only when that is the
    /// sole problem.
    fn decode(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            },
        )?;
        // `now >= exp` is expired, as the original (jsonwebtoken alone allows now == exp).
        if let Some(exp) = data.claims.exp
            && self.clock.now_secs().max(0) as u64 >= exp
        {
            return Err(TokenError::Expired);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        TokenIssuer::new("s3cret", 100, 200, Clock::system())
    }

    /// An issuer whose clock stands at `secs`.
    fn issuer_at(secs: i64) -> TokenIssuer {
        TokenIssuer::new("s3cret", 100, 200, Clock::fixed(secs * 1000))
    }

    /// Claims of customer 7 valid for ten minutes, without a token version.
    fn claims(refresh: bool) -> Claims {
        Claims {
            customer_id: 7,
            refresh,
            exp: Some(Clock::system().now_secs() as u64 + 600),
            token_version: None,
        }
    }

    fn grant(customer_id: u64, token_version: i64) -> Result<RefreshGrant, TokenError> {
        Ok(RefreshGrant {
            customer_id,
            token_version,
        })
    }

    #[test]
    fn pair_round_trips_and_kinds_are_not_interchangeable() {
        let pair = issuer().issue(42, 3).unwrap();
        assert_eq!(issuer().check_access(&pair.access_token), Ok(42));
        assert_eq!(issuer().check_refresh(&pair.refresh_token), grant(42, 3));
        assert_eq!(
            issuer().check_access(&pair.refresh_token),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            issuer().check_refresh(&pair.access_token),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn claims_have_the_original_names_and_order() {
        let pair = issuer_at(1000).issue(7, 2).unwrap();
        let payload = |token: &str| {
            let (header, rest) = token.split_once('.').unwrap();
            assert_eq!(header, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9");
            let json = URL_SAFE_NO_PAD.decode(rest.split('.').next().unwrap());
            String::from_utf8(json.unwrap()).unwrap()
        };
        assert_eq!(
            payload(&pair.access_token),
            r#"{"CustomerID":7,"Refresh":false,"exp":1100}"#
        );
        // the refresh token: the original's claims in its order, then the token version
        assert_eq!(
            payload(&pair.refresh_token),
            r#"{"CustomerID":7,"Refresh":true,"exp":1200,"TokenVersion":2}"#
        );
    }

    #[test]
    fn a_refresh_token_without_a_version_is_version_0() {
        let key = EncodingKey::from_secret(b"s3cret");
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims(true), &key);
        assert_eq!(issuer().check_refresh(&token.unwrap()), grant(7, 0));
    }

    #[test]
    fn expiry_is_reported_only_for_a_good_signature() {
        let issuer = issuer_at(1000);
        let pair = issuer.issue(7, 0).unwrap();
        let clock = issuer.clock.clone();
        clock.advance(std::time::Duration::from_secs(99));
        assert_eq!(issuer.check_access(&pair.access_token), Ok(7));
        clock.advance(std::time::Duration::from_secs(1));
        assert_eq!(
            issuer.check_access(&pair.access_token),
            Err(TokenError::Expired),
            "expired at exp, as the original"
        );
        assert_eq!(issuer.check_refresh(&pair.refresh_token), grant(7, 0));
        let other = TokenIssuer::new("other", 100, 200, Clock::fixed(1_000_000));
        assert_eq!(
            other.check_access(&pair.access_token),
            Err(TokenError::Invalid)
        );
        assert_eq!(issuer.check_access("garbage"), Err(TokenError::Invalid));
    }

    #[test]
    fn only_hs256_is_accepted_even_with_the_right_secret() {
        let claims = claims(false);
        let sign = |alg| {
            let key = EncodingKey::from_secret(b"s3cret");
            jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).unwrap()
        };
        assert_eq!(issuer().check_access(&sign(Algorithm::HS256)), Ok(7));
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            assert_eq!(
                issuer().check_access(&sign(alg)),
                Err(TokenError::Invalid),
                "{alg:?}"
            );
        }
    }
}
