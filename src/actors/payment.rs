//! The payment service: the payment step of the purchase saga and `GET /api/payment/{id}`.

use std::sync::Arc;

use super::messages::*;
use super::service::{Serve, Service};
use super::{ServiceError, ServiceResult};
use crate::db::payments::Payments;

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
    async fn serve(self: Arc<Self>, msg: GetPayment) -> ServiceResult<PaymentView> {
        match self.repo.by_id(msg.id).await? {
            // Another customer's payment answers exactly as a missing one (no existence leak).
            Some(p) if p.customer_id == msg.customer_id => Ok(PaymentView {
                id: p.id,
                currency_code: p.currency_code,
                amount: p.amount,
            }),
            _ => Err(ServiceError::PaymentNotFound),
        }
    }
}

/// The payment service actor.
pub type PaymentService = Service<PaymentCore>;
