//! The order service: the order step of the purchase saga and `GET /api/order/{id}`.

use std::sync::Arc;

use actix::Recipient;

use super::messages::*;
use super::service::{Serve, Service};
use super::{ServiceError, ServiceResult};
use crate::cache::bloom::FilterSlot;
use crate::cache::{Cache, keys};
use crate::db::orders::Orders;
use crate::domain::ids::{CustomerId, PurchaseId};

/// The order service's logic, independent of actix.
#[derive(Clone)]
pub struct OrderCore {
    repo: Orders,
    cache: Cache,
    filter: FilterSlot,
    products: Recipient<GetProducts>,
}

/// What the cache keeps of an order: the order as shown, and whose it is (checked on
/// every read, so a cached order is never shown to another customer).
#[derive(serde::Serialize, serde::Deserialize)]
struct OwnedOrder {
    customer_id: CustomerId,
    order: Order,
}

impl OrderCore {
    /// Core over the order repository; product details come from the product service;
    /// `filter` answers for order ids that never existed (empty without Redis).
    pub fn new(
        repo: Orders,
        cache: Cache,
        filter: FilterSlot,
        products: Recipient<GetProducts>,
    ) -> Self {
        Self {
            repo,
            cache,
            filter,
            products,
        }
    }

    /// The order and its owner from the database (`None`: no such order).
    async fn load(&self, id: PurchaseId) -> ServiceResult<Option<OwnedOrder>> {
        let lines = self.repo.lines(id).await?;
        let Some(first) = lines.first() else {
            return Ok(None);
        };
        let customer_id = first.customer_id;
        if lines.iter().any(|l| l.customer_id != customer_id) {
            return Err(ServiceError::Internal(format!(
                "order {id}: lines of two customers"
            )));
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
        Ok(Some(OwnedOrder {
            customer_id,
            order: Order { id, items },
        }))
    }
}

impl Serve<GetOrder> for OrderCore {
    async fn serve(self: Arc<Self>, msg: GetOrder) -> ServiceResult<Order> {
        if !self.filter.may_contain(msg.id).await {
            return Err(ServiceError::OrderNotFound);
        }
        let owned = self
            .cache
            .get_or_load(&keys::order(msg.id), || self.load(msg.id))
            .await?;
        match owned {
            Some(o) if o.customer_id == msg.customer_id => Ok(o.order),
            // Another customer's order answers exactly as a missing one (no existence leak).
            _ => Err(ServiceError::OrderNotFound),
        }
    }
}

/// The order service actor.
pub type OrderService = Service<OrderCore>;
