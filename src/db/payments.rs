//! The payment database: one payment per purchase, keyed by purchase id.

use super::reusable::Reusable;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::ids::{keyset_ids, saturating, storable};
use super::ledger::{self, BatchResults, Guard, StepRepository};
use super::schema::payments;
use super::{DbError, DbPool};
use crate::backend_queries;
use crate::clock::Clock;
use crate::domain::ids::{CustomerId, PurchaseId};
use crate::domain::purchase::{Purchase, StepOutcome};
use crate::domain::saga::StepCommand;

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = payments)]
pub struct Payment {
    pub id: PurchaseId,
    pub customer_id: CustomerId,
    pub currency_code: String,
    pub amount: i64,
}

backend_queries! {
    async fn create(conn: &mut Conn, purchase: &Purchase, epoch: u64, now: i64, guard: Guard) -> Result<StepOutcome, DbError> {
        let payment = Payment {
            id: purchase.purchase_id,
            customer_id: purchase.customer_id,
            currency_code: purchase.currency.code().to_owned(),
            amount: purchase.amount,
        };
        ledger::step(conn, payment.id, epoch, now, guard, async |c| {
            Reusable(diesel::insert_into(payments::table).values(&payment)).execute(c).await?;
            Ok(())
        })
        .await
    }

    async fn remove(conn: &mut Conn, purchase_id: PurchaseId, epoch: u64, now: i64, guard: Guard) -> Result<(), DbError> {
        ledger::compensation(conn, purchase_id, epoch, now, guard, async |c| {
            diesel::delete(payments::table.find(purchase_id)).execute(c).await?;
            Ok(())
        })
        .await
    }

    async fn run_steps(conn: &mut Conn, commands: &[StepCommand], now: i64) -> BatchResults {
        ledger::batch(conn, commands, now, true, create, remove).await
    }

    async fn ids_after(conn: &mut Conn, after: PurchaseId, limit: i64) -> Result<Vec<PurchaseId>, DbError> {
        Ok(keyset_ids!(conn, payments, after, limit)?)
    }

    async fn by_id(conn: &mut Conn, id: PurchaseId) -> Result<Option<Payment>, DbError> {
        Ok(payments::table
            .find(id)
            .select(Payment::as_select())
            .first(conn)
            .await
            .optional()?)
    }
}

/// Repository of the payment database.
#[derive(Clone)]
pub struct Payments {
    pool: DbPool,
    clock: Clock,
}

impl Payments {
    /// Repository over an opened payment database.
    pub fn new(pool: DbPool, clock: Clock) -> Self {
        Self { pool, clock }
    }

    /// Records the purchase's payment, once, as the saga owner at `epoch` (fenced when a
    /// newer owner ran a command for the purchase).
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

    /// Deletes the purchase's payment, once; a no-op when there is none. Fenced as
    /// [`Payments::create`] is.
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

    /// Up to `limit` payment ids above `after`, ascending: a page of the scan that builds the
    /// payment Bloom filter.
    pub async fn ids_after(
        &self,
        after: PurchaseId,
        limit: u64,
    ) -> Result<Vec<PurchaseId>, DbError> {
        ids_after(&self.pool, after, saturating(limit)).await
    }

    /// The payment with this id.
    pub async fn by_id(&self, id: PurchaseId) -> Result<Option<Payment>, DbError> {
        if !storable(id) {
            return Ok(None);
        }
        by_id(&self.pool, id).await
    }
}

impl StepRepository for Payments {
    async fn run_steps(&self, commands: &[StepCommand]) -> BatchResults {
        run_steps(&self.pool, commands, self.clock.now_ms()).await
    }
}
