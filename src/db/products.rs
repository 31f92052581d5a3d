//! The product database: the catalog, inventory reservations and their compensation.

use super::reusable::Reusable;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::ids::{keyset_ids, saturating, storable};
use super::ledger::{self, BatchResults, Guard, StepRepository};
use super::schema::{products, reservations};
use super::{DbError, DbPool};
use crate::backend_queries;
use crate::clock::Clock;
use crate::domain::ids::{ProductId, PurchaseId};
use crate::domain::purchase::{Purchase, PurchaseItem, StepOutcome};
use crate::domain::saga::StepCommand;

/// A product row as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = products)]
pub struct Product {
    pub id: ProductId,
    pub name: String,
    pub description: String,
    pub brand_name: String,
    pub price: i64,
    pub inventory: i64,
    pub created_at: i64,
}

/// A catalog line of `GET /api/products`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = products)]
pub struct CatalogEntry {
    pub id: ProductId,
    pub name: String,
    pub inventory: i64,
    pub price: i64,
}

#[derive(Debug, Clone, Insertable, Queryable, Selectable)]
#[diesel(table_name = reservations)]
struct Reservation {
    purchase_id: PurchaseId,
    product_id: ProductId,
    amount: i64,
}

/// Why a reservation is refused (recorded in the ledger, shown in logs).
pub const DUPLICATE_ITEMS: &str = "duplicate product in purchase";
/// Why a reservation is refused (recorded in the ledger, shown in logs).
pub const INSUFFICIENT_INVENTORY: &str = "insufficient inventory";

backend_queries! {
    async fn insert(conn: &mut Conn, p: &Product) -> Result<(), DbError> {
        Reusable(diesel::insert_into(products::table).values(p)).execute(conn).await?;
        Ok(())
    }

    async fn by_id(conn: &mut Conn, id: ProductId) -> Result<Option<Product>, DbError> {
        Ok(products::table
            .find(id)
            .select(Product::as_select())
            .first(conn)
            .await
            .optional()?)
    }

    async fn inventory(conn: &mut Conn, id: ProductId) -> Result<Option<i64>, DbError> {
        Ok(products::table
            .find(id)
            .select(products::inventory)
            .first(conn)
            .await
            .optional()?)
    }

    async fn page(conn: &mut Conn, offset: i64, size: i64) -> Result<Vec<CatalogEntry>, DbError> {
        Ok(products::table
            .order(products::id)
            .limit(size)
            .offset(offset)
            .select(CatalogEntry::as_select())
            .load(conn)
            .await?)
    }

    async fn reserve(conn: &mut Conn, purchase: &Purchase, epoch: u64, now: i64, guard: Guard) -> Result<StepOutcome, DbError> {
        let purchase_id = purchase.purchase_id;
        let mut sorted: Vec<PurchaseItem> = purchase.items.clone();
        sorted.sort_by_key(|i| i.product_id);
        ledger::step(conn, purchase_id, epoch, now, guard, async |c| {
            if sorted.windows(2).any(|w| w[0].product_id == w[1].product_id) {
                return Err(DbError::Rejected(DUPLICATE_ITEMS.to_owned()));
            }
            // Conditional updates in product_id order: stock never goes negative and two
            // purchases lock rows in the same order.
            for item in &sorted {
                let taken = Reusable(diesel::update(
                    products::table.find(item.product_id).filter(products::inventory.ge(item.amount)),
                )
                .set(products::inventory.eq(products::inventory - item.amount)))
                .execute(c)
                .await?;
                if taken != 1 {
                    return Err(DbError::Rejected(INSUFFICIENT_INVENTORY.to_owned()));
                }
            }
            for i in &sorted {
                let row = Reservation { purchase_id, product_id: i.product_id, amount: i.amount };
                Reusable(diesel::insert_into(reservations::table).values(&row)).execute(c).await?;
            }
            Ok(())
        })
        .await
    }

    async fn release(conn: &mut Conn, purchase_id: PurchaseId, epoch: u64, now: i64, guard: Guard) -> Result<(), DbError> {
        ledger::compensation(conn, purchase_id, epoch, now, guard, async |c| {
            let taken: Vec<Reservation> = reservations::table
                .filter(reservations::purchase_id.eq(purchase_id))
                .order(reservations::product_id)
                .select(Reservation::as_select())
                .load(c)
                .await?;
            for r in &taken {
                Reusable(diesel::update(products::table.find(r.product_id))
                    .set(products::inventory.eq(products::inventory + r.amount)))
                    .execute(c)
                    .await?;
            }
            Ok(())
        })
        .await
    }

    async fn run_steps(conn: &mut Conn, commands: &[StepCommand], now: i64) -> BatchResults {
        ledger::batch(conn, commands, now, commands.len() == 1, reserve, release).await
    }

    async fn ids_after(conn: &mut Conn, after: ProductId, limit: i64) -> Result<Vec<ProductId>, DbError> {
        Ok(keyset_ids!(conn, products, after, limit)?)
    }
}

/// Repository of the product database.
#[derive(Clone)]
pub struct Products {
    pool: DbPool,
    clock: Clock,
}

impl Products {
    /// Repository over an opened product database.
    pub fn new(pool: DbPool, clock: Clock) -> Self {
        Self { pool, clock }
    }

    /// Stores a new product.
    pub async fn insert(&self, product: &Product) -> Result<(), DbError> {
        insert(&self.pool, product).await
    }

    /// The product with this id.
    pub async fn by_id(&self, id: ProductId) -> Result<Option<Product>, DbError> {
        if !storable(id) {
            return Ok(None);
        }
        by_id(&self.pool, id).await
    }

    /// The product's current stock (never cached: sagas change it).
    pub async fn inventory(&self, id: ProductId) -> Result<Option<i64>, DbError> {
        if !storable(id) {
            return Ok(None);
        }
        inventory(&self.pool, id).await
    }

    /// Up to `limit` product ids above `after`, ascending: a page of the scan that builds the
    /// product Bloom filter (keyset paging, so a long scan never rereads or skips rows).
    pub async fn ids_after(&self, after: ProductId, limit: u64) -> Result<Vec<ProductId>, DbError> {
        ids_after(&self.pool, after, saturating(limit)).await
    }

    /// One page of the catalog, ordered by id (creation order).
    pub async fn page(&self, offset: u64, size: u64) -> Result<Vec<CatalogEntry>, DbError> {
        page(&self.pool, saturating(offset), saturating(size)).await
    }

    /// Takes a purchase's items from stock, all or nothing, once per purchase, as the saga
    /// owner at `epoch` (fenced when a newer owner ran a command for the purchase).
    pub async fn reserve(&self, purchase: &Purchase, epoch: u64) -> Result<StepOutcome, DbError> {
        reserve(
            &self.pool,
            purchase,
            epoch,
            self.clock.now_ms(),
            Guard::Savepoint,
        )
        .await
    }

    /// Gives back exactly what a purchase took, once; a no-op when it took nothing. Fenced
    /// as [`Products::reserve`] is.
    pub async fn release(&self, purchase_id: PurchaseId, epoch: u64) -> Result<(), DbError> {
        release(
            &self.pool,
            purchase_id,
            epoch,
            self.clock.now_ms(),
            Guard::Savepoint,
        )
        .await
    }
}

impl StepRepository for Products {
    async fn run_steps(&self, commands: &[StepCommand]) -> BatchResults {
        run_steps(&self.pool, commands, self.clock.now_ms()).await
    }
}
