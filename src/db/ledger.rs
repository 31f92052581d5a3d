//! The step ledger: one row per purchase in each participant's database, written in the same
//! transaction as the step's effect. It makes every step and compensation idempotent (a
//! redelivered command gets the recorded outcome) and fences late commands (a step that was
//! compensated is never applied afterwards).
//!
//! Every transaction here starts with a write, so SQLite takes its write lock up front and
//! waits on `busy_timeout` instead of failing on a lock upgrade.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::DbError;
use super::schema::step_ledger;
use crate::backend_queries;
use crate::domain::purchase::StepOutcome;

const APPLIED: &str = "applied";
const FAILED: &str = "failed";
const COMPENSATED: &str = "compensated";

/// What a participant did for one purchase.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = step_ledger)]
pub struct LedgerEntry {
    pub purchase_id: i64,
    pub status: String,
    pub detail: String,
    pub updated_at: i64,
}

fn entry(purchase_id: i64, status: &str, detail: &str) -> LedgerEntry {
    LedgerEntry {
        purchase_id,
        status: status.to_owned(),
        detail: detail.chars().take(255).collect(),
        updated_at: crate::clock::now_ms(),
    }
}

backend_queries! {
    /// Claims the first execution of a purchase's step; false when it was already recorded.
    pub async fn claim(conn: &mut Conn, purchase_id: i64) -> Result<bool, DbError> {
        let n = diesel::insert_or_ignore_into(step_ledger::table)
            .values(entry(purchase_id, APPLIED, ""))
            .execute(conn)
            .await?;
        Ok(n == 1)
    }

    /// Records a business failure, unless an outcome is already recorded.
    pub async fn record_failure(conn: &mut Conn, purchase_id: i64, reason: &str) -> Result<(), DbError> {
        diesel::insert_or_ignore_into(step_ledger::table)
            .values(entry(purchase_id, FAILED, reason))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// The outcome recorded for a purchase (a compensated step answers as rejected).
    pub async fn recorded_outcome(conn: &mut Conn, purchase_id: i64) -> Result<StepOutcome, DbError> {
        let row: LedgerEntry = step_ledger::table
            .find(purchase_id)
            .select(LedgerEntry::as_select())
            .first(conn)
            .await?;
        Ok(match row.status.as_str() {
            APPLIED => StepOutcome::Applied,
            FAILED => StepOutcome::Rejected(row.detail),
            _ => StepOutcome::Rejected("already compensated".to_owned()),
        })
    }

    /// Marks a purchase compensated; true when an applied effect must now be undone.
    pub async fn start_compensation(conn: &mut Conn, purchase_id: i64) -> Result<bool, DbError> {
        let now = crate::clock::now_ms();
        let undone = diesel::update(
            step_ledger::table
                .find(purchase_id)
                .filter(step_ledger::status.eq(APPLIED)),
        )
        .set((step_ledger::status.eq(COMPENSATED), step_ledger::updated_at.eq(now)))
        .execute(conn)
        .await?;
        if undone == 1 {
            return Ok(true);
        }
        // Nothing applied: leave a tombstone so a late forward command is refused.
        diesel::insert_or_ignore_into(step_ledger::table)
            .values(entry(purchase_id, COMPENSATED, ""))
            .execute(conn)
            .await?;
        diesel::update(step_ledger::table.find(purchase_id))
            .set((step_ledger::status.eq(COMPENSATED), step_ledger::updated_at.eq(now)))
            .execute(conn)
            .await?;
        Ok(false)
    }
}

/// Defines `run_steps(conn, ops)` for a participant from its `$execute(conn, &Purchase)` and
/// `$compensate(conn, purchase_id)` functions: every op runs in its own savepoint inside one
/// transaction, so a batch costs one commit (one fsync) and one op's failure spares the others.
/// The per-op results hold only if the whole transaction commits.
#[macro_export]
macro_rules! step_batch_fn {
    ($execute:ident, $compensate:ident) => {
        pub async fn run_steps(
            conn: &mut Conn,
            ops: &[$crate::domain::saga::StepCommand],
        ) -> Result<Vec<Result<StepOutcome, DbError>>, DbError> {
            use diesel_async::AsyncConnection as _;
            conn.transaction::<_, DbError, _>(async |c| {
                let mut out = Vec::with_capacity(ops.len());
                for op in ops {
                    out.push(match op.call {
                        $crate::domain::saga::Call::Execute(_) => $execute(c, &op.purchase).await,
                        $crate::domain::saga::Call::Compensate(_) => {
                            $compensate(c, op.purchase.purchase_id as i64)
                                .await
                                .map(|()| StepOutcome::Applied)
                        }
                    });
                }
                Ok(out)
            })
            .await
        }
    };
}

/// Runs a forward step at most once per purchase. `$apply` runs inside the transaction that
/// claims the ledger row; returning `DbError::Rejected` rolls it back and records the failure.
/// Evaluates to `Result<StepOutcome, DbError>`.
#[macro_export]
macro_rules! ledgered_step {
    ($conn:expr, $purchase_id:expr, |$c:ident| $apply:block) => {{
        use diesel_async::AsyncConnection as _;
        let purchase_id: i64 = $purchase_id;
        let claimed = $conn
            .transaction::<bool, $crate::db::DbError, _>(async |$c| {
                if !ledger::claim($c, purchase_id).await? {
                    return Ok(false);
                }
                $apply;
                Ok(true)
            })
            .await;
        match claimed {
            Ok(true) => Ok($crate::domain::purchase::StepOutcome::Applied),
            Ok(false) => ledger::recorded_outcome($conn, purchase_id).await,
            Err($crate::db::DbError::Rejected(reason)) => {
                ledger::record_failure($conn, purchase_id, &reason).await?;
                ledger::recorded_outcome($conn, purchase_id).await
            }
            Err(e) => Err(e),
        }
    }};
}

/// Compensates a step at most once per purchase: `$undo` runs, in the same transaction as the
/// ledger update, only when the step's effect was applied. Evaluates to `Result<(), DbError>`.
#[macro_export]
macro_rules! ledgered_compensation {
    ($conn:expr, $purchase_id:expr, |$c:ident| $undo:block) => {{
        use diesel_async::AsyncConnection as _;
        let purchase_id: i64 = $purchase_id;
        $conn
            .transaction::<(), $crate::db::DbError, _>(async |$c| {
                if ledger::start_compensation($c, purchase_id).await? {
                    $undo;
                }
                Ok(())
            })
            .await
    }};
}
