//! The account service: sign-up, login, token refresh and customer info, over the account
//! database and the cache.

use std::sync::Arc;

use super::messages::*;
use super::service::{Serve, Service};
use super::{ServiceError, ServiceResult};
use crate::auth::password;
use crate::auth::tokens::{TokenError, TokenIssuer, TokenPair};
use crate::cache::{Cache, keys};
use crate::clock::Clock;
use crate::db::accounts::{Accounts, Customer, PersonChange, ShippingChange};
use crate::domain::email;
use crate::domain::ids::{CustomerId, IdGenerator};

/// The account service's logic, independent of actix.
#[derive(Clone)]
pub struct AccountCore {
    repo: Accounts,
    cache: Cache,
    ids: IdGenerator,
    tokens: TokenIssuer,
    clock: Clock,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ServiceResult<T> {
    password::run(f).await.map_err(ServiceError::Internal)
}

impl AccountCore {
    /// Core over the account repository.
    pub fn new(
        repo: Accounts,
        cache: Cache,
        ids: IdGenerator,
        tokens: TokenIssuer,
        clock: Clock,
    ) -> Self {
        Self {
            repo,
            cache,
            ids,
            tokens,
            clock,
        }
    }

    /// A token pair for customer `id`, its refresh token at the account's token version.
    fn issue(&self, id: CustomerId, token_version: i64) -> ServiceResult<TokenPair> {
        self.tokens
            .issue(id.0, token_version)
            .map_err(|e| ServiceError::Internal(e.to_string()))
    }
}

/// What login needs of an account, cached by email (Redis level only, so an email change
/// retires the old address on every node at once).
#[derive(serde::Serialize, serde::Deserialize)]
struct Credentials {
    id: CustomerId,
    active: bool,
    password_hash: String,
    token_version: i64,
}

/// What a token refresh checks of an account, cached by id (Redis level only, so a raised
/// token version refuses older tokens on every node at once).
#[derive(serde::Serialize, serde::Deserialize)]
struct Standing {
    active: bool,
    token_version: i64,
}

impl From<Customer> for Credentials {
    fn from(c: Customer) -> Self {
        Credentials {
            id: c.id,
            active: c.active,
            password_hash: c.password_hash,
            token_version: c.token_version,
        }
    }
}

impl Serve<SignUp> for AccountCore {
    async fn serve(self: Arc<Self>, msg: SignUp) -> ServiceResult<TokenPair> {
        let id = CustomerId(self.ids.next());
        let plain = msg.password;
        let password_hash = blocking(move || password::hash(&plain))
            .await?
            .map_err(ServiceError::Internal)?;
        let customer = Customer {
            id,
            active: true,
            first_name: msg.first_name,
            last_name: msg.last_name,
            email_key: email::unique_key(&msg.email),
            email: msg.email,
            address: msg.address,
            phone_number: msg.phone_number,
            password_hash,
            created_at: self.clock.now_ms(),
            token_version: 0,
        };
        self.repo.insert(&customer).await?;
        // Absent accounts are not cached, but a stale entry for the address must not outlive it.
        self.cache
            .invalidate(&keys::credentials(&customer.email_key))
            .await;
        self.issue(id, 0)
    }
}

impl Serve<LogIn> for AccountCore {
    async fn serve(self: Arc<Self>, msg: LogIn) -> ServiceResult<TokenPair> {
        let key = email::unique_key(&msg.email);
        let repo = &self.repo;
        let customer = self
            .cache
            .get_or_load(&keys::credentials(&key), || async {
                Ok::<_, ServiceError>(repo.by_email_key(&key).await?.map(Credentials::from))
            })
            .await?
            .ok_or(ServiceError::CustomerNotFound)?;
        if !customer.active {
            return Err(ServiceError::CustomerInactive);
        }
        let hash = customer.password_hash;
        if !blocking(move || password::verify(&msg.password, &hash)).await? {
            return Err(ServiceError::AuthenticationFailed);
        }
        self.issue(customer.id, customer.token_version)
    }
}

impl Serve<RefreshTokens> for AccountCore {
    async fn serve(self: Arc<Self>, msg: RefreshTokens) -> ServiceResult<TokenPair> {
        let grant = self
            .tokens
            .check_refresh(&msg.refresh_token)
            .map_err(|e| match e {
                TokenError::Expired => ServiceError::TokenExpired,
                TokenError::Invalid => ServiceError::InvalidToken,
            })?;
        // A token version raised a moment ago by an email change must refuse the older tokens
        // at once: this key lives in Redis only and the change invalidates it.
        let id = CustomerId(grant.customer_id);
        let repo = &self.repo;
        let customer = self
            .cache
            .get_or_load(&keys::customer(id), || async {
                Ok::<_, ServiceError>(repo.by_id(id).await?.map(|c| Standing {
                    active: c.active,
                    token_version: c.token_version,
                }))
            })
            .await?
            .ok_or(ServiceError::CustomerNotFound)?;
        if !customer.active {
            return Err(ServiceError::CustomerInactive);
        }
        if grant.token_version != customer.token_version {
            return Err(ServiceError::InvalidToken);
        }
        self.issue(id, customer.token_version)
    }
}

impl Serve<GetPerson> for AccountCore {
    async fn serve(self: Arc<Self>, msg: GetPerson) -> ServiceResult<Person> {
        let repo = &self.repo;
        self.cache
            .get_or_load(&keys::person(msg.customer_id), || async {
                Ok::<_, ServiceError>(repo.by_id(msg.customer_id).await?.map(|c| Person {
                    first_name: c.first_name,
                    last_name: c.last_name,
                    email: c.email,
                }))
            })
            .await?
            .ok_or(ServiceError::CustomerNotFound)
    }
}

impl Serve<GetShipping> for AccountCore {
    async fn serve(self: Arc<Self>, msg: GetShipping) -> ServiceResult<Shipping> {
        let repo = &self.repo;
        self.cache
            .get_or_load(&keys::shipping(msg.customer_id), || async {
                Ok::<_, ServiceError>(repo.by_id(msg.customer_id).await?.map(|c| Shipping {
                    address: c.address,
                    phone_number: c.phone_number,
                }))
            })
            .await?
            .ok_or(ServiceError::CustomerNotFound)
    }
}

impl Serve<UpdatePerson> for AccountCore {
    async fn serve(self: Arc<Self>, msg: UpdatePerson) -> ServiceResult<()> {
        let info = &msg.info;
        let key = email::unique_key(&info.email);
        let change = PersonChange {
            first_name: &info.first_name,
            last_name: &info.last_name,
            email: &info.email,
            email_key: &key,
        };
        // The old address's credentials must go too (it no longer logs in).
        let old = self.repo.by_id(msg.customer_id).await?.map(|c| c.email_key);
        self.repo.update_person(msg.customer_id, &change).await?;
        let mut stale = vec![
            keys::person(msg.customer_id),
            keys::customer(msg.customer_id),
            keys::credentials(&key),
        ];
        stale.extend(old.filter(|o| *o != key).map(|o| keys::credentials(&o)));
        self.cache.invalidate_many(&stale).await;
        Ok(())
    }
}

impl Serve<UpdateShipping> for AccountCore {
    async fn serve(self: Arc<Self>, msg: UpdateShipping) -> ServiceResult<()> {
        let change = ShippingChange {
            address: &msg.info.address,
            phone_number: &msg.info.phone_number,
        };
        self.repo.update_shipping(msg.customer_id, &change).await?;
        self.cache
            .invalidate(&keys::shipping(msg.customer_id))
            .await;
        Ok(())
    }
}

/// The account service actor.
pub type AccountService = Service<AccountCore>;
