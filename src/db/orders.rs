//! The order database: one row per purchased item, keyed by purchase id.

use super::reusable::Reusable;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::ids::{keyset_ids, saturating, storable};
use super::ledger::{self, BatchResults, Guard, StepRepository};
use super::schema::orders;
use super::{DbError, DbPool};
use crate::backend_queries;
use crate::clock::Clock;
use crate::domain::ids::{CustomerId, ProductId, PurchaseId};
use crate::domain::purchase::{Purchase, StepOutcome};
use crate::domain::saga::StepCommand;

/// An order line as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = orders)]
pub struct OrderLine {
    pub id: PurchaseId,
    pub product_id: ProductId,
    pub amount: i64,
    pub customer_id: CustomerId,
}

/// The order lines of a purchase: one per item, keyed by the purchase id.
fn lines_of(purchase: &Purchase) -> Vec<OrderLine> {
    purchase
        .items
        .iter()
        .map(|i| OrderLine {
            id: purchase.purchase_id,
            product_id: i.product_id,
            amount: i.amount,
            customer_id: purchase.customer_id,
        })
        .collect()
}

backend_queries! {
    async fn create(conn: &mut Conn, purchase: &Purchase, epoch: u64, now: i64, guard: Guard) -> Result<StepOutcome, DbError> {
        let lines = lines_of(purchase);
        ledger::step(conn, purchase.purchase_id, epoch, now, guard, async |c| {
            // One statement per row: SQLite's sync wrapper has no multi-row INSERT.
            for line in &lines {
                Reusable(diesel::insert_into(orders::table).values(line)).execute(c).await?;
            }
            Ok(())
        })
        .await
    }

    async fn remove(conn: &mut Conn, purchase_id: PurchaseId, epoch: u64, now: i64, guard: Guard) -> Result<(), DbError> {
        ledger::compensation(conn, purchase_id, epoch, now, guard, async |c| {
            diesel::delete(orders::table.filter(orders::id.eq(purchase_id))).execute(c).await?;
            Ok(())
        })
        .await
    }

    async fn run_steps(conn: &mut Conn, commands: &[StepCommand], now: i64) -> BatchResults {
        ledger::batch(conn, commands, now, true, create, remove).await
    }

    async fn ids_after(conn: &mut Conn, after: PurchaseId, limit: i64) -> Result<Vec<PurchaseId>, DbError> {
        Ok(keyset_ids!(conn, orders, after, limit)?)
    }

    async fn lines(conn: &mut Conn, id: PurchaseId) -> Result<Vec<OrderLine>, DbError> {
        Ok(orders::table
            .filter(orders::id.eq(id))
            .order(orders::product_id)
            .select(OrderLine::as_select())
            .load(conn)
            .await?)
    }
}

/// Repository of the order database.
#[derive(Clone)]
pub struct Orders {
    pool: DbPool,
    clock: Clock,
}

impl Orders {
    /// Repository over an opened order database.
    pub fn new(pool: DbPool, clock: Clock) -> Self {
        Self { pool, clock }
    }

    /// Creates the purchase's order, once, as the saga owner at `epoch` (fenced when a newer
    /// owner ran a command for the purchase).
    pub async fn create(&self, purchase: &Purchase, epoch: u64) -> Result<StepOutcome, DbError> {
        create(
            &self.pool,
            purchase,
            epoch,
            self.clock.now_ms(),
            Guard::Savepoint,
        )
        .await
    }

    /// Deletes the purchase's order, once; a no-op when there is none. Fenced as
    /// [`Orders::create`] is.
    pub async fn remove(&self, purchase_id: PurchaseId, epoch: u64) -> Result<(), DbError> {
        remove(
            &self.pool,
            purchase_id,
            epoch,
            self.clock.now_ms(),
            Guard::Savepoint,
        )
        .await
    }

    /// Up to `limit` order ids above `after`, ascending, each once: a page of the scan that
    /// builds the order Bloom filter.
    pub async fn ids_after(
        &self,
        after: PurchaseId,
        limit: u64,
    ) -> Result<Vec<PurchaseId>, DbError> {
        ids_after(&self.pool, after, saturating(limit)).await
    }

    /// The order's lines sorted by product id (empty when there is no such order).
    pub async fn lines(&self, id: PurchaseId) -> Result<Vec<OrderLine>, DbError> {
        if !storable(id) {
            return Ok(Vec::new());
        }
        lines(&self.pool, id).await
    }
}

impl StepRepository for Orders {
    async fn run_steps(&self, commands: &[StepCommand]) -> BatchResults {
        run_steps(&self.pool, commands, self.clock.now_ms()).await
    }
}
