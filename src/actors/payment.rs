//! The payment service: the payment step of the purchase saga and `GET /api/payment/{id}`.

use std::sync::Arc;

use super::messages::*;
use super::service::{Serve, Service};
use super::{ServiceError, ServiceResult};
use crate::cache::bloom::FilterSlot;
use crate::cache::{Cache, keys};
use crate::db::payments::Payments;
use crate::domain::ids::CustomerId;
use crate::domain::purchase::Currency;

/// The payment service's logic, independent of actix.
#[derive(Clone)]
pub struct PaymentCore {
    repo: Payments,
    cache: Cache,
    filter: FilterSlot,
}

/// What the cache keeps of a payment: the payment as shown, and whose it is (checked on
/// every read, so a cached payment is never shown to another customer).
#[derive(serde::Serialize, serde::Deserialize)]
struct OwnedPayment {
    customer_id: CustomerId,
    payment: PaymentRecord,
}

impl PaymentCore {
    /// Core over the payment repository; `filter` answers for payment ids that never
    /// existed (empty without Redis).
    pub fn new(repo: Payments, cache: Cache, filter: FilterSlot) -> Self {
        Self {
            repo,
            cache,
            filter,
        }
    }
}

impl Serve<GetPayment> for PaymentCore {
    async fn serve(self: Arc<Self>, msg: GetPayment) -> ServiceResult<PaymentRecord> {
        if !self.filter.may_contain(msg.id).await {
            return Err(ServiceError::PaymentNotFound);
        }
        let repo = &self.repo;
        let load = || async {
            let Some(p) = repo.by_id(msg.id).await? else {
                return Ok(None);
            };
            let currency = Currency::parse(&p.currency_code)
                .ok_or_else(|| ServiceError::Internal(format!("payment {}: bad currency", p.id)))?;
            Ok::<_, ServiceError>(Some(OwnedPayment {
                customer_id: p.customer_id,
                payment: PaymentRecord {
                    id: p.id,
                    currency,
                    amount: p.amount,
                },
            }))
        };
        match self.cache.get_or_load(&keys::payment(msg.id), load).await? {
            Some(p) if p.customer_id == msg.customer_id => Ok(p.payment),
            // Another customer's payment answers exactly as a missing one (no existence leak).
            _ => Err(ServiceError::PaymentNotFound),
        }
    }
}

/// The payment service actor.
pub type PaymentService = Service<PaymentCore>;
