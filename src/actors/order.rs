//! The order service: the order step of the purchase saga and `GET /api/order/{id}`.

use std::sync::Arc;

use actix::Recipient;

use super::messages::*;
use super::service::{Serve, Service};
use super::{ServiceError, ServiceResult};
use crate::db::orders::Orders;

/// The order service's logic, independent of actix.
#[derive(Clone)]
pub struct OrderCore {
    repo: Orders,
    products: Recipient<GetProducts>,
}

impl OrderCore {
    /// Core over the order repository; product details come from the product service.
    pub fn new(repo: Orders, products: Recipient<GetProducts>) -> Self {
        Self { repo, products }
    }
}

impl Serve<GetOrder> for OrderCore {
    async fn serve(self: Arc<Self>, msg: GetOrder) -> ServiceResult<Order> {
        let lines = self.repo.lines(msg.id).await?;
        // Another customer's order answers exactly as a missing one (no existence leak).
        if lines.is_empty() || lines.iter().any(|l| l.customer_id != msg.customer_id) {
            return Err(ServiceError::OrderNotFound);
        }
        let ids = lines.iter().map(|l| l.product_id).collect();
        let products = self.products.send(GetProducts { ids }).await??;
        let items = lines
            .iter()
            .map(|l| {
                let p = products
                    .iter()
                    .find(|p| p.id == l.product_id)
                    .ok_or_else(|| ServiceError::Internal("ordered product is gone".into()))?;
                Ok(OrderedItem {
                    product_id: p.id,
                    name: p.name.clone(),
                    description: p.description.clone(),
                    brand_name: p.brand_name.clone(),
                    price: p.price,
                    amount: l.amount,
                })
            })
            .collect::<ServiceResult<_>>()?;
        Ok(Order { id: msg.id, items })
    }
}

/// The order service actor.
pub type OrderService = Service<OrderCore>;
