//! The payment service: the payment step of the purchase saga and `GET /api/payment/{id}`.

use std::sync::Arc;

use super::messages::*;
use super::service::{Serve, Service};
use super::{ServiceError, ServiceResult};
use crate::db::payments::Payments;
use crate::domain::purchase::Currency;

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
}

impl Serve<GetPayment> for PaymentCore {
    async fn serve(self: Arc<Self>, msg: GetPayment) -> ServiceResult<PaymentRecord> {
        match self.repo.by_id(msg.id).await? {
            // Another customer's payment answers exactly as a missing one (no existence leak).
            Some(p) if p.customer_id == msg.customer_id => Ok(PaymentRecord {
                id: p.id,
                currency: Currency::parse(&p.currency_code).ok_or_else(|| {
                    ServiceError::Internal(format!("payment {}: bad currency", p.id))
                })?,
                amount: p.amount,
            }),
            _ => Err(ServiceError::PaymentNotFound),
        }
    }
}

/// The payment service actor.
pub type PaymentService = Service<PaymentCore>;
