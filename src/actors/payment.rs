//! The payment service: the payment step of the purchase saga and `GET /api/payment/{id}`.

use super::messages::*;
use super::{ServiceError, ServiceResult};
use crate::db::payments::Payments;
use crate::service_actor;

/// The payment service's logic, independent of actix.
#[derive(Clone)]
pub struct PaymentCore {
    repo: Payments,
}

impl PaymentCore {
    /// Core over the payment repository.
    pub fn new(repo: Payments) -> Self {
        Self { repo }
    }

    async fn get(&self, msg: GetPayment) -> ServiceResult<PaymentView> {
        match self.repo.by_id(msg.id).await? {
            // Another customer's payment answers exactly as a missing one (no existence leak).
            Some(p) if p.customer_id as u64 == msg.customer_id => Ok(PaymentView {
                id: p.id as u64,
                currency_code: p.currency_code,
                amount: p.amount,
            }),
            _ => Err(ServiceError::PaymentNotFound),
        }
    }
}

service_actor!(
    /// The payment service actor.
    PaymentService(PaymentCore) {
    GetPayment => get,
}
);
