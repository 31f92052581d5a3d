//! `/api/account/...`: sign-up, login, refresh, person and shipping info.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{ClientAddr, JsonBody};
use super::openapi::MsgBody;
use super::validate::{self, limits};
use crate::actors::ServiceError;
use crate::actors::messages::*;
use crate::auth::throttle::Outcome;
use crate::auth::tokens::TokenPair;
use crate::domain::email;
use crate::domain::ids::CustomerId;

/// `POST /api/account/auth/signup` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"password":"abcd5432","firstname":"ming","lastname":"hsu",
    "email":"ming@ming.com","address":"taipei","phone_number":"1234567"}))]
pub struct SignUpBody {
    #[serde(default)]
    #[schema(required = true, min_length = 8, max_length = 128)]
    password: String,
    #[serde(default)]
    #[schema(required = true, min_length = 1, max_length = 50)]
    firstname: String,
    #[serde(default)]
    #[schema(required = true, min_length = 1, max_length = 50)]
    lastname: String,
    #[serde(default)]
    #[schema(required = true, format = Email, max_length = 320)]
    email: String,
    #[serde(default)]
    #[schema(required = true, min_length = 1, max_length = 1024)]
    address: String,
    #[serde(default)]
    #[schema(required = true, min_length = 1, max_length = 20)]
    phone_number: String,
}

/// `POST /api/account/auth/login` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LogInBody {
    #[serde(default)]
    #[schema(required = true, format = Email)]
    email: String,
    #[serde(default)]
    #[schema(required = true, min_length = 1)]
    password: String,
}

/// `POST /api/account/auth/refresh` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RefreshBody {
    #[serde(default)]
    #[schema(required = true, min_length = 1)]
    refresh_token: String,
}

/// A customer's name and email as the API reads and shows them.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PersonBody {
    firstname: String,
    lastname: String,
    email: String,
}

impl From<Person> for PersonBody {
    fn from(p: Person) -> Self {
        PersonBody {
            firstname: p.first_name,
            lastname: p.last_name,
            email: p.email,
        }
    }
}

impl From<PersonBody> for Person {
    fn from(p: PersonBody) -> Self {
        Person {
            first_name: p.firstname,
            last_name: p.lastname,
            email: p.email,
        }
    }
}

/// A customer's address and phone as the API reads and shows them.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShippingBody {
    address: String,
    phone_number: String,
}

impl From<Shipping> for ShippingBody {
    fn from(s: Shipping) -> Self {
        ShippingBody {
            address: s.address,
            phone_number: s.phone_number,
        }
    }
}

impl From<ShippingBody> for Shipping {
    fn from(s: ShippingBody) -> Self {
        Shipping {
            address: s.address,
            phone_number: s.phone_number,
        }
    }
}

fn check_person(p: &PersonBody) -> Result<(), ApiError> {
    validate::text(&p.firstname, limits::NAME)?;
    validate::text(&p.lastname, limits::NAME)?;
    validate::email_address(&p.email)
}

fn check_shipping(s: &ShippingBody) -> Result<(), ApiError> {
    validate::multiline_text(&s.address, limits::ADDRESS)?;
    validate::text(&s.phone_number, limits::PHONE)
}

/// Creates a customer: 201 with a token pair.
#[utoipa::path(post, path = "/api/account/auth/signup", operation_id = "signUp", tag = "account",
    request_body = SignUpBody,
    responses(
        (status = 201, description = "the new customer's token pair", body = TokenPair),
        (status = 400, description = "`invalid parameter`, or `duplicate entry` (email or phone taken)", body = MsgBody),
    ))]
pub async fn sign_up(
    state: web::Data<AppState>,
    JsonBody(b): JsonBody<SignUpBody>,
) -> Result<HttpResponse, ApiError> {
    validate::password(&b.password)?;
    let person = PersonBody {
        firstname: b.firstname,
        lastname: b.lastname,
        email: b.email,
    };
    let shipping = ShippingBody {
        address: b.address,
        phone_number: b.phone_number,
    };
    check_person(&person)?;
    check_shipping(&shipping)?;
    let msg = SignUp {
        password: b.password,
        first_name: person.firstname,
        last_name: person.lastname,
        email: person.email,
        address: shipping.address,
        phone_number: shipping.phone_number,
    };
    let pair = state.account.send(msg).await??;
    Ok(HttpResponse::Created().json(pair))
}

/// Logs in: 200 with a token pair; 429 with `Retry-After` after repeated failures for this
/// email (see `auth::throttle`), decided before the password is checked.
#[utoipa::path(post, path = "/api/account/auth/login", operation_id = "logIn", tag = "account",
    request_body = LogInBody,
    responses(
        (status = 200, description = "a token pair", body = TokenPair),
        (status = 400, description = "`invalid parameter`", body = MsgBody),
        (status = 401, description = "`authentication failed` (wrong password)", body = MsgBody),
        (status = 404, description = "`customer not found` (unknown email)", body = MsgBody),
    ))]
pub async fn log_in(
    state: web::Data<AppState>,
    ClientAddr(client): ClientAddr,
    JsonBody(b): JsonBody<LogInBody>,
) -> Result<HttpResponse, ApiError> {
    validate::email_address(&b.email)?;
    validate::text(&b.password, usize::MAX)?;
    let attempt = state
        .logins
        .begin(&email::unique_key(&b.email), client)
        .map_err(|locked| {
            tracing::debug!(%client, retry_after_secs = locked.retry_after_secs, "login throttled");
            ApiError::TooManyRequests {
                retry_after_secs: locked.retry_after_secs,
            }
        })?;
    let msg = LogIn {
        email: b.email,
        password: b.password,
    };
    let reply = state.account.send(msg).await;
    attempt.settle(match &reply {
        Ok(Ok(_)) => Outcome::Succeeded,
        Ok(Err(
            ServiceError::AuthenticationFailed
            | ServiceError::CustomerNotFound
            | ServiceError::CustomerInactive,
        )) => Outcome::Failed,
        _ => Outcome::Inconclusive,
    });
    Ok(HttpResponse::Ok().json(reply??))
}

/// Exchanges a refresh token for a new pair.
#[utoipa::path(post, path = "/api/account/auth/refresh", operation_id = "refresh", tag = "account",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "a new token pair", body = TokenPair),
        (status = 400, description = "`invalid parameter`", body = MsgBody),
        (status = 401, description = "`invalid token` or `token expired`", body = MsgBody),
        (status = 404, description = "`customer not found`", body = MsgBody),
    ))]
pub async fn refresh(
    state: web::Data<AppState>,
    JsonBody(b): JsonBody<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    validate::text(&b.refresh_token, usize::MAX)?;
    let msg = RefreshTokens {
        refresh_token: b.refresh_token,
    };
    let pair = state.account.send(msg).await??;
    Ok(HttpResponse::Ok().json(pair))
}

/// The caller's name and email.
#[utoipa::path(get, path = "/api/account/info/person", operation_id = "getPerson", tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the caller's name and email", body = PersonBody),
        (status = 404, description = "`customer not found`", body = MsgBody),
    ))]
pub async fn get_person(
    state: web::Data<AppState>,
    customer_id: CustomerId,
) -> Result<HttpResponse, ApiError> {
    let info = state.account.send(GetPerson { customer_id }).await??;
    Ok(HttpResponse::Ok().json(PersonBody::from(info)))
}

/// Replaces the caller's name and email.
#[utoipa::path(put, path = "/api/account/info/person", operation_id = "putPerson", tag = "account",
    security(("bearer" = [])),
    request_body = PersonBody,
    responses(
        (status = 200, description = "`{\"msg\":\"ok\"}`", body = MsgBody),
        (status = 400, description = "`invalid parameter`, or `duplicate entry` (another customer's email)", body = MsgBody),
        (status = 404, description = "`customer not found`", body = MsgBody),
    ))]
pub async fn put_person(
    state: web::Data<AppState>,
    customer_id: CustomerId,
    JsonBody(info): JsonBody<PersonBody>,
) -> Result<HttpResponse, ApiError> {
    check_person(&info)?;
    let info = info.into();
    state
        .account
        .send(UpdatePerson { customer_id, info })
        .await??;
    Ok(HttpResponse::Ok().json(json!({"msg": "ok"})))
}

/// The caller's address and phone.
#[utoipa::path(get, path = "/api/account/info/shipping", operation_id = "getShipping", tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the caller's address and phone", body = ShippingBody),
        (status = 404, description = "`customer not found`", body = MsgBody),
    ))]
pub async fn get_shipping(
    state: web::Data<AppState>,
    customer_id: CustomerId,
) -> Result<HttpResponse, ApiError> {
    let info = state.account.send(GetShipping { customer_id }).await??;
    Ok(HttpResponse::Ok().json(ShippingBody::from(info)))
}

/// Replaces the caller's address and phone.
#[utoipa::path(put, path = "/api/account/info/shipping", operation_id = "putShipping", tag = "account",
    security(("bearer" = [])),
    request_body = ShippingBody,
    responses(
        (status = 200, description = "`{\"msg\":\"ok\"}`", body = MsgBody),
        (status = 400, description = "`invalid parameter`, or `duplicate entry` (another customer's phone)", body = MsgBody),
        (status = 404, description = "`customer not found`", body = MsgBody),
    ))]
pub async fn put_shipping(
    state: web::Data<AppState>,
    customer_id: CustomerId,
    JsonBody(info): JsonBody<ShippingBody>,
) -> Result<HttpResponse, ApiError> {
    check_shipping(&info)?;
    let info = info.into();
    state
        .account
        .send(UpdateShipping { customer_id, info })
        .await??;
    Ok(HttpResponse::Ok().json(json!({"msg": "ok"})))
}
