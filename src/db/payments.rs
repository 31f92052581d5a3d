//! The payment database: one payment per purchase, keyed by purchase id.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::payments;
use super::{DbError, DbPool};
use crate::domain::purchase::{Purchase, StepOutcome};
use crate::domain::saga::StepCommand;
use crate::{backend_queries, ledgered_compensation, ledgered_step, on_conn, step_batch_fn};

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = payments)]
pub struct Payment {
    pub id: i64,
    pub customer_id: i64,
    pub currency_code: String,
    pub amount: i64,
}

backend_queries! {
    pub async fn create(conn: &mut Conn, purchase: &Purchase) -> Result<StepOutcome, DbError> {
        let payment = Payment {
            id: purchase.purchase_id as i64,
            customer_id: purchase.customer_id as i64,
            currency_code: purchase.currency.code().to_owned(),
            amount: purchase.amount,
        };
        ledgered_step!(conn, payment.id, |c| {
            diesel::insert_into(payments::table).values(&payment).execute(c).await?;
        })
    }

    pub async fn remove(conn: &mut Conn, purchase_id: i64) -> Result<(), DbError> {
        ledgered_compensation!(conn, purchase_id, |c| {
            diesel::delete(payments::table.find(purchase_id)).execute(c).await?;
        })
    }

    step_batch_fn!(create, remove);

    pub async fn by_id(conn: &mut Conn, id: i64) -> Result<Option<Payment>, DbError> {
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
}

impl Payments {
    /// Repository over an opened payment database.
    pub fn new(pool: DbPool) -> Self {
        Self { pool }
    }

    /// Records the purchase's payment, once.
    pub async fn create(&self, purchase: &Purchase) -> Result<StepOutcome, DbError> {
        on_conn!(self.pool, create(purchase))
    }

    /// Runs a batch of payment steps and compensations in one transaction.
    pub async fn run_steps(
        &self,
        ops: &[StepCommand],
    ) -> Result<Vec<Result<StepOutcome, DbError>>, DbError> {
        on_conn!(self.pool, run_steps(ops))
    }

    /// Deletes the purchase's payment, once; a no-op when there is none.
    pub async fn remove(&self, purchase_id: u64) -> Result<(), DbError> {
        on_conn!(self.pool, remove(purchase_id as i64))
    }

    /// The payment with this id.
    pub async fn by_id(&self, id: u64) -> Result<Option<Payment>, DbError> {
        on_conn!(self.pool, by_id(id as i64))
    }
}
