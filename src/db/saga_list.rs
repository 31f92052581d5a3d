//! The dashboard's reads of the saga store: the newest sagas (optionally of one outcome) and
//! who owns a partition. Both are cheap whatever the store's size: the list walks the primary
//! key from the newest id down, inside a bounded window of the newest sagas, and reads no log.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::ids::saturating;
use super::schema::{partitions, sagas};
use super::{DbError, DbPool};
use crate::backend_queries;
use crate::domain::ids::{CustomerId, PurchaseId};

/// How many of the newest sagas a filtered list looks through at most: a rare outcome
/// (`rollback_failed`) is found among them or not at all, never by scanning the whole store.
pub const WINDOW: u64 = 10_000;

/// Which sagas a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaFilter {
    All,
    /// Not finished and not quarantined (pending, executing, compensating; a compensation
    /// that keeps failing is listed as `RollbackFailed`).
    InFlight,
    Succeeded,
    RolledBack,
    RollbackFailed,
    Quarantined,
}

/// One row of the list: what the saga row holds, without its purchase lines or log.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = sagas)]
pub struct SagaSummary {
    pub purchase_id: PurchaseId,
    pub partition_id: i32,
    pub customer_id: CustomerId,
    pub amount: i64,
    pub currency_code: String,
    /// Stored form: `PENDING`, `EXECUTING:CREATE_ORDER`, `SUCCEEDED`, ...
    pub state: String,
    pub finished: bool,
    pub attempts: i32,
    pub quarantine: Option<String>,
    /// Unix milliseconds of the saga's creation and last transition.
    pub created_at: i64,
    pub updated_at: i64,
}

/// Who writes for a partition now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOwner {
    pub node: i32,
    pub epoch: i64,
}

backend_queries! {
    /// The lowest id among the newest `window` sagas (`None`: the store holds fewer).
    async fn window_start(conn: &mut Conn, window: i64) -> Result<Option<PurchaseId>, DbError> {
        Ok(sagas::table
            .order(sagas::purchase_id.desc())
            .offset(window - 1)
            .limit(1)
            .select(sagas::purchase_id)
            .first(conn)
            .await
            .optional()?)
    }

    async fn newest(conn: &mut Conn, from: Option<PurchaseId>, filter: SagaFilter, limit: i64) -> Result<Vec<SagaSummary>, DbError> {
        let mut query = sagas::table
            .order(sagas::purchase_id.desc())
            .limit(limit)
            .select(SagaSummary::as_select())
            .into_boxed();
        if let Some(from) = from {
            query = query.filter(sagas::purchase_id.ge(from));
        }
        const ROLLBACK_FAILED: &str = "ROLLBACK_FAILED%";
        query = match filter {
            SagaFilter::All => query,
            SagaFilter::InFlight => query
                .filter(sagas::finished.eq(false))
                .filter(sagas::quarantine.is_null())
                .filter(sagas::state.not_like(ROLLBACK_FAILED)),
            SagaFilter::Succeeded => query.filter(sagas::state.eq("SUCCEEDED")),
            SagaFilter::RolledBack => query.filter(sagas::state.eq("ROLLED_BACK")),
            SagaFilter::RollbackFailed => query.filter(sagas::state.like(ROLLBACK_FAILED)),
            SagaFilter::Quarantined => query.filter(sagas::quarantine.is_not_null()),
        };
        Ok(query.load(conn).await?)
    }

    async fn owner(conn: &mut Conn, partition: i32) -> Result<Option<(i32, i64)>, DbError> {
        Ok(partitions::table
            .find(partition)
            .select((partitions::owner_node, partitions::epoch))
            .first(conn)
            .await
            .optional()?)
    }
}

/// Newest-first, bounded reads of the saga store for the dashboard.
#[derive(Clone)]
pub struct SagaList {
    pool: DbPool,
}

impl SagaList {
    /// Reads over the saga database's pool.
    pub fn new(pool: DbPool) -> Self {
        Self { pool }
    }

    /// At most `limit` sagas passing `filter`, newest first, among the newest [`WINDOW`]
    /// (an unfiltered list needs no window: it stops after `limit` rows).
    pub async fn newest(
        &self,
        filter: SagaFilter,
        limit: u64,
    ) -> Result<Vec<SagaSummary>, DbError> {
        let from = match filter {
            SagaFilter::All => None,
            _ => window_start(&self.pool, saturating(WINDOW)).await?,
        };
        newest(&self.pool, from, filter, saturating(limit)).await
    }

    /// The node writing for `partition` and its epoch (`None`: no such partition).
    pub async fn owner(&self, partition: u32) -> Result<Option<PartitionOwner>, DbError> {
        let found = owner(&self.pool, partition as i32).await?;
        Ok(found.map(|(node, epoch)| PartitionOwner { node, epoch }))
    }
}
