//! The product service: the catalog, and the inventory step of the purchase saga.

use std::sync::Arc;

use super::faults::Faults;
use super::messages::*;
use super::{ServiceError, ServiceResult};
use crate::cache::{Cache, keys};
use crate::db::products::{Product, Products};
use crate::domain::ids::IdGenerator;
use crate::domain::purchase::StepOutcome;
use crate::service_actor;

/// The product service's logic, independent of actix.
#[derive(Clone)]
pub struct ProductCore {
    repo: Products,
    cache: Cache,
    ids: IdGenerator,
    faults: Arc<Faults>,
}

fn detail(p: Product) -> ProductDetail {
    ProductDetail {
        id: p.id as u64,
        name: p.name,
        description: p.description,
        brand_name: p.brand_name,
        price: p.price,
        inventory: p.inventory,
    }
}

impl ProductCore {
    /// Core over the product repository.
    pub fn new(repo: Products, cache: Cache, ids: IdGenerator, faults: Arc<Faults>) -> Self {
        Self {
            repo,
            cache,
            ids,
            faults,
        }
    }

    async fn create(&self, msg: CreateProduct) -> ServiceResult<u64> {
        let id = self.ids.next();
        let product = Product {
            id: id as i64,
            name: msg.name,
            description: msg.description,
            brand_name: msg.brand_name,
            price: msg.price,
            inventory: msg.inventory,
            created_at: crate::clock::now_ms(),
        };
        self.repo.insert(&product).await?;
        Ok(id)
    }

    async fn get(&self, msg: GetProduct) -> ServiceResult<ProductDetail> {
        let repo = &self.repo;
        self.cache
            .get_or_load(&keys::product(msg.id), || async {
                Ok::<_, ServiceError>(repo.by_id(msg.id).await?.map(detail))
            })
            .await?
            .ok_or(ServiceError::ProductNotFound)
    }

    async fn get_many(&self, msg: GetProducts) -> ServiceResult<Vec<ProductDetail>> {
        let found = self.repo.by_ids(&msg.ids).await?;
        Ok(msg
            .ids
            .iter()
            .filter_map(|id| {
                found
                    .iter()
                    .find(|p| p.id as u64 == *id)
                    .cloned()
                    .map(detail)
            })
            .collect())
    }

    async fn list(&self, msg: ListProducts) -> ServiceResult<Vec<CatalogLine>> {
        Ok(self
            .repo
            .page(msg.offset, msg.size)
            .await?
            .into_iter()
            .map(|e| CatalogLine {
                id: e.id as u64,
                name: e.name,
                inventory: e.inventory,
                price: e.price,
            })
            .collect())
    }

    async fn step(&self, cmd: StepCommand) -> Result<StepOutcome, StepError> {
        let purchase = &cmd.purchase;
        if let Some(injected) = self.faults.intercept(&cmd) {
            return injected;
        }
        let outcome = match cmd.action {
            StepAction::Execute => {
                self.repo
                    .reserve(purchase.purchase_id, &purchase.items)
                    .await
            }
            StepAction::Compensate => self
                .repo
                .release(purchase.purchase_id)
                .await
                .map(|()| StepOutcome::Applied),
        }?;
        // Stock changed: product pages must show it at once.
        for item in &purchase.items {
            self.cache.invalidate(&keys::product(item.product_id)).await;
        }
        Ok(outcome)
    }
}

service_actor!(
    /// The product service actor.
    ProductService(ProductCore) {
    CreateProduct => create,
    GetProduct => get,
    GetProducts => get_many,
    ListProducts => list,
    StepCommand => step,
}
);
