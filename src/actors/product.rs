//! The product service: the catalog, and the inventory step of the purchase saga.

use std::sync::Arc;

use super::messages::*;
use super::service::{Serve, Service};
use super::{ServiceError, ServiceResult};
use crate::cache::{Cache, keys};
use crate::clock::Clock;
use crate::db::products::{Product, Products};
use crate::domain::ids::{IdGenerator, ProductId};

/// The product service's logic, independent of actix.
#[derive(Clone)]
pub struct ProductCore {
    repo: Products,
    cache: Cache,
    ids: IdGenerator,
    clock: Clock,
}

fn info(p: Product) -> ProductInfo {
    ProductInfo {
        id: p.id,
        name: p.name,
        description: p.description,
        brand_name: p.brand_name,
        price: p.price,
    }
}

impl ProductCore {
    /// Core over the product repository.
    pub fn new(repo: Products, cache: Cache, ids: IdGenerator, clock: Clock) -> Self {
        Self {
            repo,
            cache,
            ids,
            clock,
        }
    }

    /// Cache-aside read of the parts of a product that never change.
    async fn info(&self, id: ProductId) -> ServiceResult<Option<ProductInfo>> {
        let repo = &self.repo;
        self.cache
            .get_or_load(&keys::product(id), || async {
                Ok::<_, ServiceError>(repo.by_id(id).await?.map(info))
            })
            .await
    }
}

impl Serve<CreateProduct> for ProductCore {
    async fn serve(self: Arc<Self>, msg: CreateProduct) -> ServiceResult<ProductId> {
        let id = ProductId(self.ids.next());
        let product = Product {
            id,
            name: msg.name,
            description: msg.description,
            brand_name: msg.brand_name,
            price: msg.price,
            inventory: msg.inventory,
            created_at: self.clock.now_ms(),
        };
        self.repo.insert(&product).await?;
        Ok(id)
    }
}

impl Serve<GetProduct> for ProductCore {
    /// Cached info plus the current stock: stock changed by sagas is never served stale.
    async fn serve(self: Arc<Self>, msg: GetProduct) -> ServiceResult<ProductDetail> {
        let info = self
            .info(msg.id)
            .await?
            .ok_or(ServiceError::ProductNotFound)?;
        let inventory = self
            .repo
            .inventory(msg.id)
            .await?
            .ok_or(ServiceError::ProductNotFound)?;
        Ok(ProductDetail {
            id: info.id,
            name: info.name,
            description: info.description,
            brand_name: info.brand_name,
            price: info.price,
            inventory,
        })
    }
}

impl Serve<GetProducts> for ProductCore {
    async fn serve(self: Arc<Self>, msg: GetProducts) -> ServiceResult<Vec<ProductInfo>> {
        let mut found = Vec::with_capacity(msg.ids.len());
        for id in msg.ids {
            if let Some(info) = self.info(id).await? {
                found.push(info);
            }
        }
        Ok(found)
    }
}

impl Serve<ListProducts> for ProductCore {
    async fn serve(self: Arc<Self>, msg: ListProducts) -> ServiceResult<Vec<CatalogLine>> {
        Ok(self
            .repo
            .page(msg.offset, msg.size)
            .await?
            .into_iter()
            .map(|e| CatalogLine {
                id: e.id,
                name: e.name,
                inventory: e.inventory,
                price: e.price,
            })
            .collect())
    }
}

/// The product service actor.
pub type ProductService = Service<ProductCore>;
