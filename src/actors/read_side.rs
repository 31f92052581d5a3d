//! What a participant's committed batch changed, told to the read side: cached product pages
//! (stock), orders and payments are invalidated, and new order and payment ids are added to
//! their Bloom filters. It wraps the step repository, so it runs after the batch's commit and
//! before the participant answers the sagas (a purchase's outcome is never seen before its
//! page is invalidated). Best effort: a failed invalidation leaves a value a TTL old at worst.

use super::messages::StepCommand;
use crate::cache::bloom::FilterSlot;
use crate::cache::{Cache, keys};
use crate::db::DbError;
use crate::db::ledger::{BatchResults, StepRepository};
use crate::domain::purchase::StepOutcome;
use crate::domain::saga::Call;

/// Which reads a participant's writes change.
#[derive(Clone)]
pub enum ReadSide {
    /// Reservations and their release change product stock.
    Products(Cache),
    /// Orders are created (new ids) and removed on rollback.
    Orders(Cache, FilterSlot),
    /// Payments are created (new ids) and removed on rollback.
    Payments(Cache, FilterSlot),
}

/// A step repository whose committed batches are told to a [`ReadSide`].
#[derive(Clone)]
pub struct Observed<R> {
    repo: R,
    read_side: ReadSide,
}

impl<R> Observed<R> {
    /// `repo`, telling `read_side` what each committed batch changed.
    pub fn new(repo: R, read_side: ReadSide) -> Self {
        Self { repo, read_side }
    }
}

impl<R: StepRepository> StepRepository for Observed<R> {
    async fn run_steps(&self, commands: &[StepCommand]) -> BatchResults {
        let results = self.repo.run_steps(commands).await;
        if let Ok(outcomes) = &results {
            self.read_side.committed(commands, outcomes).await;
        }
        results
    }
}

impl ReadSide {
    async fn committed(&self, commands: &[StepCommand], outcomes: &[Result<StepOutcome, DbError>]) {
        // A step that took effect, or a compensation that ran (it may have undone one).
        let changed = commands
            .iter()
            .zip(outcomes)
            .filter_map(|(c, r)| match (c.call, r) {
                (Call::Execute(_), Ok(StepOutcome::Applied)) => Some((c, true)),
                (Call::Compensate(_), Ok(_)) => Some((c, false)),
                _ => None,
            });
        match self {
            ReadSide::Products(cache) => {
                let mut stale: Vec<String> = changed
                    .flat_map(|(c, _)| c.purchase.items.iter().map(|i| keys::product(i.product_id)))
                    .collect();
                stale.sort_unstable();
                stale.dedup();
                if !stale.is_empty() {
                    cache.invalidate_many(&stale).await;
                }
            }
            ReadSide::Orders(cache, filter) => {
                let stale = created_or_removed(changed, filter, keys::order);
                if !stale.is_empty() {
                    cache.invalidate_many(&stale).await;
                }
            }
            ReadSide::Payments(cache, filter) => {
                let stale = created_or_removed(changed, filter, keys::payment);
                if !stale.is_empty() {
                    cache.invalidate_many(&stale).await;
                }
            }
        }
    }
}

/// Adds the created purchases' ids to `filter`; the keys of the removed ones.
fn created_or_removed<'a>(
    changed: impl Iterator<Item = (&'a StepCommand, bool)>,
    filter: &FilterSlot,
    key: fn(crate::domain::ids::PurchaseId) -> String,
) -> Vec<String> {
    let mut stale = Vec::new();
    for (command, created) in changed {
        let id = command.purchase.purchase_id;
        if created {
            filter.add(id);
        } else {
            stale.push(key(id));
        }
    }
    stale
}
