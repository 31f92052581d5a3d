//! The order database: one row per purchased item, keyed by purchase id.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::orders;
use super::{DbError, DbPool};
use crate::domain::purchase::{Purchase, StepOutcome};
use crate::domain::saga::StepCommand;
use crate::{backend_queries, ledgered_compensation, ledgered_step, on_conn, step_batch_fn};

/// An order line as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = orders)]
pub struct OrderLine {
    pub id: i64,
    pub product_id: i64,
    pub amount: i64,
    pub customer_id: i64,
}

/// The order lines of a purchase: one per item, keyed by the purchase id.
fn lines_of(purchase: &Purchase) -> Vec<OrderLine> {
    purchase
        .items
        .iter()
        .map(|i| OrderLine {
            id: purchase.purchase_id as i64,
            product_id: i.product_id as i64,
            amount: i.amount,
            customer_id: purchase.customer_id as i64,
        })
        .collect()
}

backend_queries! {
    pub async fn create(conn: &mut Conn, purchase: &Purchase) -> Result<StepOutcome, DbError> {
        let lines = lines_of(purchase);
        ledgered_step!(conn, purchase.purchase_id as i64, |c| {
            // One statement per row: SQLite's sync wrapper has no multi-row INSERT.
            for line in &lines {
                diesel::insert_into(orders::table).values(line).execute(c).await?;
            }
        })
    }

    pub async fn remove(conn: &mut Conn, purchase_id: i64) -> Result<(), DbError> {
        ledgered_compensation!(conn, purchase_id, |c| {
            diesel::delete(orders::table.filter(orders::id.eq(purchase_id))).execute(c).await?;
        })
    }

    step_batch_fn!(create, remove);

    pub async fn lines(conn: &mut Conn, id: i64) -> Result<Vec<OrderLine>, DbError> {
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
}

impl Orders {
    /// Repository over an opened order database.
    pub fn new(pool: DbPool) -> Self {
        Self { pool }
    }

    /// Creates the purchase's order, once.
    pub async fn create(&self, purchase: &Purchase) -> Result<StepOutcome, DbError> {
        on_conn!(self.pool, create(purchase))
    }

    /// Runs a batch of order steps and compensations in one transaction.
    pub async fn run_steps(
        &self,
        ops: &[StepCommand],
    ) -> Result<Vec<Result<StepOutcome, DbError>>, DbError> {
        on_conn!(self.pool, run_steps(ops))
    }

    /// Deletes the purchase's order, once; a no-op when there is none.
    pub async fn remove(&self, purchase_id: u64) -> Result<(), DbError> {
        on_conn!(self.pool, remove(purchase_id as i64))
    }

    /// The order's lines sorted by product id (empty when there is no such order).
    pub async fn lines(&self, id: u64) -> Result<Vec<OrderLine>, DbError> {
        on_conn!(self.pool, lines(id as i64))
    }
}
