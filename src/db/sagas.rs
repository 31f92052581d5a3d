//! The saga store: one row per saga (a cache of its state) and the append-only step log that
//! is the truth it is recovered from. Writes of many sagas commit together (group commit).

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::{saga_events, sagas};
use super::{DbError, DbPool};
use crate::{backend_queries, on_conn};

/// A saga as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = sagas)]
pub struct SagaRow {
    pub purchase_id: i64,
    pub customer_id: i64,
    /// The purchase items as JSON.
    pub items: String,
    pub currency_code: String,
    pub amount: i64,
    pub state: String,
    pub finished: bool,
    pub attempts: i32,
    pub owner_node: i32,
    pub lease_expires_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One step-log entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = saga_events)]
pub struct EventRow {
    pub event_id: i64,
    pub purchase_id: i64,
    pub customer_id: i64,
    pub step: String,
    pub status: String,
    pub created_at: i64,
}

/// A saga's transition to persist: its new state and the log entries it appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaWrite {
    pub purchase_id: i64,
    pub state: String,
    pub finished: bool,
    pub attempts: i32,
    pub events: Vec<EventRow>,
    /// A new saga's row, inserted (with `state` already in it) instead of updated.
    pub insert: Option<SagaRow>,
}

backend_queries! {
    pub async fn commit(conn: &mut Conn, writes: &[SagaWrite], now: i64) -> Result<(), DbError> {
        conn.transaction::<(), DbError, _>(async |c| {
            for event in writes.iter().flat_map(|w| &w.events) {
                diesel::insert_into(saga_events::table).values(event).execute(c).await?;
            }
            for row in writes.iter().filter_map(|w| w.insert.as_ref()) {
                diesel::insert_into(sagas::table).values(row).execute(c).await?;
            }
            for w in writes.iter().filter(|w| w.insert.is_none()) {
                diesel::update(sagas::table.find(w.purchase_id))
                    .set((
                        sagas::state.eq(&w.state),
                        sagas::finished.eq(w.finished),
                        sagas::attempts.eq(w.attempts),
                        sagas::updated_at.eq(now),
                    ))
                    .execute(c)
                    .await?;
            }
            Ok(())
        })
        .await
    }

    pub async fn by_id(conn: &mut Conn, purchase_id: i64) -> Result<Option<SagaRow>, DbError> {
        Ok(sagas::table
            .find(purchase_id)
            .select(SagaRow::as_select())
            .first(conn)
            .await
            .optional()?)
    }

    pub async fn unfinished(conn: &mut Conn, after: i64, limit: i64) -> Result<Vec<SagaRow>, DbError> {
        Ok(sagas::table
            .filter(sagas::finished.eq(false))
            .filter(sagas::purchase_id.gt(after))
            .order(sagas::purchase_id)
            .limit(limit)
            .select(SagaRow::as_select())
            .load(conn)
            .await?)
    }

    pub async fn log_of(conn: &mut Conn, purchase_id: i64) -> Result<Vec<EventRow>, DbError> {
        Ok(saga_events::table
            .filter(saga_events::purchase_id.eq(purchase_id))
            .order(saga_events::event_id)
            .select(EventRow::as_select())
            .load(conn)
            .await?)
    }

    pub async fn logs_of(conn: &mut Conn, purchase_ids: &[i64]) -> Result<Vec<EventRow>, DbError> {
        Ok(saga_events::table
            .filter(saga_events::purchase_id.eq_any(purchase_ids))
            .order((saga_events::purchase_id, saga_events::event_id))
            .select(EventRow::as_select())
            .load(conn)
            .await?)
    }

    pub async fn customer_events_after(conn: &mut Conn, customer_id: i64, after: i64, limit: i64) -> Result<Vec<EventRow>, DbError> {
        Ok(saga_events::table
            .filter(saga_events::customer_id.eq(customer_id))
            .filter(saga_events::event_id.gt(after))
            .order(saga_events::event_id)
            .limit(limit)
            .select(EventRow::as_select())
            .load(conn)
            .await?)
    }

    pub async fn max_event_id(conn: &mut Conn) -> Result<i64, DbError> {
        let max: Option<i64> = saga_events::table
            .select(diesel::dsl::max(saga_events::event_id))
            .first(conn)
            .await?;
        Ok(max.unwrap_or(0))
    }

    pub async fn renew_leases(conn: &mut Conn, owner: i32, until: i64) -> Result<usize, DbError> {
        Ok(diesel::update(
            sagas::table
                .filter(sagas::finished.eq(false))
                .filter(sagas::owner_node.eq(owner)),
        )
        .set(sagas::lease_expires_at.eq(until))
        .execute(conn)
        .await?)
    }
}

/// Repository of the saga database.
#[derive(Clone)]
pub struct Sagas {
    pool: DbPool,
}

impl Sagas {
    /// Repository over an opened saga database.
    pub fn new(pool: DbPool) -> Self {
        Self { pool }
    }

    /// Commits the transitions of many sagas in one transaction: all or none.
    pub async fn commit(&self, writes: &[SagaWrite]) -> Result<(), DbError> {
        let now = crate::clock::now_ms();
        on_conn!(self.pool, commit(writes, now))
    }

    /// The saga of a purchase.
    pub async fn by_id(&self, purchase_id: u64) -> Result<Option<SagaRow>, DbError> {
        on_conn!(self.pool, by_id(purchase_id as i64))
    }

    /// Unfinished sagas with ids above `after`, in id order (paged recovery).
    pub async fn unfinished(&self, after: u64, limit: u64) -> Result<Vec<SagaRow>, DbError> {
        on_conn!(self.pool, unfinished(after as i64, limit as i64))
    }

    /// A saga's step log in order.
    pub async fn log_of(&self, purchase_id: u64) -> Result<Vec<EventRow>, DbError> {
        on_conn!(self.pool, log_of(purchase_id as i64))
    }

    /// The step logs of several sagas in one query, ordered by saga then event (recovery).
    pub async fn logs_of(&self, purchase_ids: &[u64]) -> Result<Vec<EventRow>, DbError> {
        let ids: Vec<i64> = purchase_ids.iter().map(|&i| i as i64).collect();
        on_conn!(self.pool, logs_of(&ids))
    }

    /// A customer's step-log entries after an event id (SSE resume).
    pub async fn customer_events_after(
        &self,
        customer_id: u64,
        after: u64,
        limit: u64,
    ) -> Result<Vec<EventRow>, DbError> {
        on_conn!(
            self.pool,
            customer_events_after(
                customer_id as i64,
                after.min(i64::MAX as u64) as i64,
                limit as i64
            )
        )
    }

    /// The highest event id committed so far (0 when none).
    pub async fn max_event_id(&self) -> Result<u64, DbError> {
        on_conn!(self.pool, max_event_id()).map(|m| m as u64)
    }

    /// Extends this node's lease on its unfinished sagas.
    pub async fn renew_leases(&self, owner: u16, until_ms: i64) -> Result<usize, DbError> {
        on_conn!(self.pool, renew_leases(owner as i32, until_ms))
    }
}
