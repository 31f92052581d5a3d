//! The product service: the catalog, and the inventory step of the purchase saga.

use std::sync::Arc;

use super::messages::*;
use super::service::{Serve, Service};
use super::{ServiceError, ServiceResult};
use crate::cache::bloom::FilterSlot;
use crate::cache::{Cache, keys};
use crate::clock::Clock;
use crate::db::products::{Product, Products};
use crate::domain::ids::{IdGenerator, ProductId};

/// Products whose cart-pricing info one node keeps in memory (about 100 bytes each).
const INFOS_KEPT: u64 = 100_000;

/// The product service's logic, independent of actix.
#[derive(Clone)]
pub struct ProductCore {
    repo: Products,
    cache: Cache,
    filter: FilterSlot,
    /// Whether cached pages keep their stock: only when every node that changes stock
    /// invalidates the pages every node reads (Redis with pub/sub, or a single node).
    /// Otherwise the stock is read from the database on every read, as before.
    stock_cached: bool,
    /// What a cart is priced from, by product. A product never changes once created (only its
    /// stock does, and stock is not in here), so entries need no invalidation: a purchase
    /// prices its cart from memory, without waiting for a page that every reservation evicts.
    infos: moka::sync::Cache<ProductId, ProductInfo>,
    ids: IdGenerator,
    clock: Clock,
}

fn detail(p: Product) -> ProductDetail {
    ProductDetail {
        id: p.id,
        name: p.name,
        description: p.description,
        brand_name: p.brand_name,
        price: p.price,
        inventory: p.inventory,
    }
}

fn info(p: ProductDetail) -> ProductInfo {
    ProductInfo {
        id: p.id,
        name: p.name,
        description: p.description,
        brand_name: p.brand_name,
        price: p.price,
    }
}

impl ProductCore {
    /// Core over the product repository; `filter` answers for product ids that never
    /// existed (empty without Redis).
    pub fn new(
        repo: Products,
        cache: Cache,
        filter: FilterSlot,
        ids: IdGenerator,
        clock: Clock,
    ) -> Self {
        Self {
            repo,
            cache,
            filter,
            stock_cached: true,
            infos: moka::sync::Cache::new(INFOS_KEPT),
            ids,
            clock,
        }
    }

    /// The same core, reading the stock from the database on every read when `cached` is
    /// false (several nodes with no shared cache: one's invalidation misses the others).
    pub fn caching_stock(mut self, cached: bool) -> Self {
        self.stock_cached = cached;
        self
    }

    /// Cache-aside read of a product page, stock included: the participant invalidates it
    /// after every reservation and release it commits, so the stock shown is fresh in
    /// practice and a TTL old at worst. Purchases never decide on it (the reservation is a
    /// conditional UPDATE in the product database).
    async fn cached(&self, id: ProductId) -> ServiceResult<Option<ProductDetail>> {
        let repo = &self.repo;
        self.cache
            .get_or_load(&keys::product(id), || async {
                Ok::<_, ServiceError>(repo.by_id(id).await?.map(detail))
            })
            .await
    }

    /// The page as shown: the cached one, its stock from the database unless stock is
    /// cached.
    async fn detail(&self, id: ProductId) -> ServiceResult<Option<ProductDetail>> {
        match self.cached(id).await? {
            Some(mut d) if !self.stock_cached => match self.repo.inventory(id).await? {
                Some(stock) => {
                    d.inventory = stock;
                    Ok(Some(d))
                }
                None => Ok(None),
            },
            other => Ok(other),
        }
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
        self.filter.add_now(&[id.0]).await;
        Ok(id)
    }
}

impl Serve<GetProduct> for ProductCore {
    /// The Bloom filter first (an id that never existed costs no database read), then the
    /// cached page.
    async fn serve(self: Arc<Self>, msg: GetProduct) -> ServiceResult<ProductDetail> {
        if !self.filter.may_contain(msg.id).await {
            return Err(ServiceError::ProductNotFound);
        }
        self.detail(msg.id)
            .await?
            .ok_or(ServiceError::ProductNotFound)
    }
}

impl Serve<GetProducts> for ProductCore {
    async fn serve(self: Arc<Self>, msg: GetProducts) -> ServiceResult<Vec<ProductInfo>> {
        let mut found = Vec::with_capacity(msg.ids.len());
        for id in msg.ids {
            if let Some(known) = self.infos.get(&id) {
                found.push(known);
            } else if let Some(detail) = self.cached(id).await? {
                let detail = info(detail);
                self.infos.insert(id, detail.clone());
                found.push(detail);
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
