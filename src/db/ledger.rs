//! The step ledger: one row per purchase in each participant's database, written in the same
//! transaction as the step's effect. It makes every step and compensation idempotent (a
//! redelivered command gets the recorded outcome) and fences late commands (a step that was
//! compensated is never applied afterwards). It also fences stale owners: each row keeps the
//! newest owner epoch (of the saga's partition) that ran a command for the purchase, and a
//! command from an older owner is refused with [`DbError::Fenced`], neither applied nor
//! replayed, so an orchestrator that lost the partition cannot undo the new owner's work.
//!
//! Every transaction here starts with a write, so SQLite takes its write lock up front and
//! waits on `busy_timeout` instead of failing on a lock upgrade.

use super::reusable::Reusable;
use std::future::Future;

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl, TransactionManager};

use super::DbError;
use super::ids::to_column;
use super::schema::step_ledger;
use crate::backend_queries;
use crate::domain::ids::PurchaseId;
use crate::domain::purchase::{Purchase, StepOutcome};
use crate::domain::saga::{Call, StepCommand};

const APPLIED: &str = "applied";
const FAILED: &str = "failed";
const COMPENSATED: &str = "compensated";

/// What a participant did for one purchase.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = step_ledger)]
pub struct LedgerEntry {
    pub purchase_id: PurchaseId,
    pub status: String,
    pub detail: String,
    pub updated_at: i64,
    /// The epoch of the newest saga owner that ran a command for this purchase: commands
    /// from older owners are fenced.
    pub owner_epoch: i64,
}

fn entry(purchase_id: PurchaseId, status: &str, detail: &str, epoch: i64, now: i64) -> LedgerEntry {
    LedgerEntry {
        purchase_id,
        status: status.to_owned(),
        detail: detail.chars().take(255).collect(),
        updated_at: now,
        owner_epoch: epoch,
    }
}

/// The ledger's queries on one connection type, so that the step functions below are
/// written once, generic over the connection. `backend_queries!` implements it for both.
/// `epoch` is the owner epoch of the command being run: every method refuses with
/// [`DbError::Fenced`] a command older than the purchase's recorded owner, and raises the
/// record to a newer one.
pub trait Ledger: AsyncConnection {
    /// Claims the first execution of a purchase's step, recording `epoch`; false when it was
    /// already recorded.
    fn claim(
        &mut self,
        purchase_id: PurchaseId,
        epoch: u64,
        now: i64,
    ) -> impl Future<Output = Result<bool, DbError>> + Send;

    /// Records a business failure, unless an outcome is already recorded.
    fn record_failure(
        &mut self,
        purchase_id: PurchaseId,
        reason: &str,
        epoch: u64,
        now: i64,
    ) -> impl Future<Output = Result<(), DbError>> + Send;

    /// The outcome recorded for a purchase (a compensated step answers as rejected), for a
    /// redelivered command: fenced when an owner newer than `epoch` ran a command, and the
    /// recorded owner raised to `epoch` when it is older.
    fn replay(
        &mut self,
        purchase_id: PurchaseId,
        epoch: u64,
    ) -> impl Future<Output = Result<StepOutcome, DbError>> + Send;

    /// Marks a purchase compensated; true when an applied effect must now be undone.
    fn start_compensation(
        &mut self,
        purchase_id: PurchaseId,
        epoch: u64,
        now: i64,
    ) -> impl Future<Output = Result<bool, DbError>> + Send;
}

backend_queries! {
    impl Ledger for Conn {
        async fn claim(&mut self, purchase_id: PurchaseId, epoch: u64, now: i64) -> Result<bool, DbError> {
            let n = Reusable(diesel::insert_or_ignore_into(step_ledger::table)
                .values(entry(purchase_id, APPLIED, "", to_column(epoch)?, now)))
                .execute(self)
                .await?;
            Ok(n == 1)
        }

        async fn record_failure(&mut self, purchase_id: PurchaseId, reason: &str, epoch: u64, now: i64) -> Result<(), DbError> {
            Reusable(diesel::insert_or_ignore_into(step_ledger::table)
                .values(entry(purchase_id, FAILED, reason, to_column(epoch)?, now)))
                .execute(self)
                .await?;
            Ok(())
        }

        async fn replay(&mut self, purchase_id: PurchaseId, epoch: u64) -> Result<StepOutcome, DbError> {
            let column = to_column(epoch)?;
            let row: LedgerEntry = step_ledger::table
                .find(purchase_id)
                .select(LedgerEntry::as_select())
                .first(self)
                .await?;
            // A newer owner read here is newer still in the row (epochs only rise). An older
            // one is raised by a locking UPDATE, which sees a newer owner committed since.
            if row.owner_epoch > column {
                return Err(DbError::Fenced(epoch));
            }
            if row.owner_epoch < column {
                let raised = Reusable(diesel::update(
                    step_ledger::table
                        .find(purchase_id)
                        .filter(step_ledger::owner_epoch.le(column)),
                )
                .set(step_ledger::owner_epoch.eq(column)))
                .execute(self)
                .await?;
                if raised == 0 {
                    return Err(DbError::Fenced(epoch));
                }
            }
            Ok(match row.status.as_str() {
                APPLIED => StepOutcome::Applied,
                FAILED => StepOutcome::Rejected(row.detail),
                _ => StepOutcome::Rejected("already compensated".to_owned()),
            })
        }

        async fn start_compensation(&mut self, purchase_id: PurchaseId, epoch: u64, now: i64) -> Result<bool, DbError> {
            let column = to_column(epoch)?;
            let undo = async |c: &mut Self| -> Result<bool, DbError> {
                let n = Reusable(diesel::update(
                    step_ledger::table
                        .find(purchase_id)
                        .filter(step_ledger::status.eq(APPLIED))
                        .filter(step_ledger::owner_epoch.le(column)),
                )
                .set((
                    step_ledger::status.eq(COMPENSATED),
                    step_ledger::updated_at.eq(now),
                    step_ledger::owner_epoch.eq(column),
                )))
                .execute(c)
                .await?;
                Ok(n == 1)
            };
            if undo(self).await? {
                return Ok(true);
            }
            // Nothing applied: leave a tombstone so a late forward command is refused.
            let tombstone = Reusable(diesel::insert_or_ignore_into(step_ledger::table)
                .values(entry(purchase_id, COMPENSATED, "", column, now)))
                .execute(self)
                .await?;
            if tombstone == 1 {
                return Ok(false);
            }
            // A failure or an earlier compensation is recorded: mark it compensated.
            let settled = Reusable(diesel::update(
                step_ledger::table
                    .find(purchase_id)
                    .filter(step_ledger::status.ne(APPLIED))
                    .filter(step_ledger::owner_epoch.le(column)),
            )
            .set((
                step_ledger::status.eq(COMPENSATED),
                step_ledger::updated_at.eq(now),
                step_ledger::owner_epoch.eq(column),
            )))
            .execute(self)
            .await?;
            if settled == 1 {
                return Ok(false);
            }
            // Applied since the first look (a concurrent forward command), or fenced.
            if undo(self).await? {
                return Ok(true);
            }
            Err(DbError::Fenced(epoch))
        }
    }
}

/// Runs `body` in a transaction (a savepoint when one is already open): committed when it
/// returns `Ok`, rolled back when it returns `Err`.
///
/// This is what `AsyncConnection::transaction` does, but it takes a plain async closure:
/// diesel-async asks its callback for a `Send` future, which generic code cannot promise
/// for a closure it is given. Nothing here needs `Send` (each database is used from its
/// own arbiter thread); callers with concrete types still get `Send` futures when theirs are.
pub async fn in_transaction<C: AsyncConnection, T>(
    conn: &mut C,
    body: impl AsyncFnOnce(&mut C) -> Result<T, DbError>,
) -> Result<T, DbError> {
    C::TransactionManager::begin_transaction(conn).await?;
    match body(conn).await {
        Ok(value) => {
            C::TransactionManager::commit_transaction(conn).await?;
            Ok(value)
        }
        Err(error) => match C::TransactionManager::rollback_transaction(conn).await {
            // A broken transaction manager is a consequence of `error`: report the cause.
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(error),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

/// Whether a command runs in a savepoint of its own within its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// A savepoint per command: a refusal or an error undoes that command alone.
    Savepoint,
    /// No savepoint, two round trips fewer per command: any refusal or error must fail the
    /// whole batch, which [`batch`] then runs again guarded.
    Batch,
}

/// Runs a forward step at most once per purchase. `apply` runs inside the transaction that
/// claims the ledger row; when it returns `DbError::Rejected` (a business refusal) the
/// transaction, effect and claim, rolls back and the refusal is recorded instead. A purchase
/// already recorded (a redelivery, or a compensation that came first) gets its recorded
/// outcome and `apply` does not run. `epoch` is the command's owner epoch (a stale one is
/// fenced); `now` stamps the ledger row. Under [`Guard::Batch`] a refusal or a fence is
/// returned as the error, for the batch to roll back.
pub async fn step<C: Ledger>(
    conn: &mut C,
    purchase_id: PurchaseId,
    epoch: u64,
    now: i64,
    guard: Guard,
    apply: impl AsyncFnOnce(&mut C) -> Result<(), DbError>,
) -> Result<StepOutcome, DbError> {
    if guard == Guard::Batch {
        if !conn.claim(purchase_id, epoch, now).await? {
            return conn.replay(purchase_id, epoch).await;
        }
        apply(conn).await?;
        return Ok(StepOutcome::Applied);
    }
    let claimed = in_transaction(conn, async |c| {
        if !c.claim(purchase_id, epoch, now).await? {
            return Ok(false);
        }
        apply(c).await?;
        Ok(true)
    })
    .await;
    match claimed {
        Ok(true) => Ok(StepOutcome::Applied),
        Ok(false) => conn.replay(purchase_id, epoch).await,
        Err(DbError::Rejected(reason)) => {
            conn.record_failure(purchase_id, &reason, epoch, now)
                .await?;
            conn.replay(purchase_id, epoch).await
        }
        Err(e) => Err(e),
    }
}

/// Compensates a step at most once per purchase: `undo` runs, in the same transaction as
/// the ledger update, only when the step's effect was applied. A compensation that finds
/// nothing applied leaves a tombstone, so a late forward command is refused. A compensation
/// from an owner older than `epoch`'s recorded one is fenced.
pub async fn compensation<C: Ledger>(
    conn: &mut C,
    purchase_id: PurchaseId,
    epoch: u64,
    now: i64,
    guard: Guard,
    undo: impl AsyncFnOnce(&mut C) -> Result<(), DbError>,
) -> Result<(), DbError> {
    let body = async |c: &mut C| {
        if c.start_compensation(purchase_id, epoch, now).await? {
            undo(c).await?;
        }
        Ok(())
    };
    match guard {
        Guard::Batch => body(conn).await,
        Guard::Savepoint => in_transaction(conn, body).await,
    }
}

/// Runs a participant's batch of commands with its `execute` and `compensate` functions
/// (which use [`step`] and [`compensation`]) in one transaction, so a batch costs one commit
/// (one fsync). Each command runs as the owner at its own `epoch`. With `optimistic` the commands first run without savepoints; if any is
/// refused or fails, that transaction rolls back and the batch runs again with a savepoint
/// per command, so one command's failure spares the others. The per-command results hold
/// only if the whole transaction commits.
pub async fn batch<C: Ledger>(
    conn: &mut C,
    commands: &[StepCommand],
    now: i64,
    optimistic: bool,
    execute: impl AsyncFn(&mut C, &Purchase, u64, i64, Guard) -> Result<StepOutcome, DbError>,
    compensate: impl AsyncFn(&mut C, PurchaseId, u64, i64, Guard) -> Result<(), DbError>,
) -> BatchResults {
    let run = async |c: &mut C, command: &StepCommand, guard: Guard| {
        let purchase = &command.purchase;
        match command.call {
            Call::Execute(_) => execute(c, purchase, command.epoch, now, guard).await,
            Call::Compensate(_) => compensate(c, purchase.purchase_id, command.epoch, now, guard)
                .await
                .map(|()| StepOutcome::Applied),
        }
    };
    if optimistic {
        let unguarded = in_transaction(conn, async |c| {
            let mut out = Vec::with_capacity(commands.len());
            for command in commands {
                out.push(Ok(run(c, command, Guard::Batch).await?));
            }
            Ok(out)
        })
        .await;
        if let Ok(out) = unguarded {
            return Ok(out);
        }
    }
    in_transaction(conn, async |c| {
        let mut out = Vec::with_capacity(commands.len());
        for command in commands {
            match run(c, command, Guard::Savepoint).await {
                // The server rolled the whole transaction back (a deadlock victim): the
                // commands before this one are undone too, so the batch fails whole and the
                // sagas send them again.
                Err(e) if aborts_transaction(&e) => return Err(e),
                answer => out.push(answer),
            }
        }
        Ok(out)
    })
    .await
}

/// Whether an error means the server rolled back the whole transaction, savepoints and all
/// (InnoDB does so for a deadlock victim), rather than the one statement.
fn aborts_transaction(e: &DbError) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match e {
        DbError::Query(Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _)) => true,
        DbError::Query(Error::DatabaseError(_, info)) => {
            let message = info.message();
            message.contains("Deadlock") || message.contains("SAVEPOINT")
        }
        DbError::Query(Error::BrokenTransactionManager) | DbError::Unavailable(_) => true,
        _ => false,
    }
}

/// A batch's answers, one per command, in order; `Err` when the batch's transaction failed
/// as a whole (then no command had an effect).
pub type BatchResults = Result<Vec<Result<StepOutcome, DbError>>, DbError>;

/// A repository whose database runs saga step commands (products, orders, payments): what
/// a step participant needs of it, so one participant type serves all three.
pub trait StepRepository: Clone + Unpin + 'static {
    /// Runs a batch of step commands and compensations with [`batch`]: one transaction.
    fn run_steps(&self, commands: &[StepCommand]) -> impl Future<Output = BatchResults>;
}
