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
                created_or_removed(changed, cache, filter, keys::order).await
            }
            ReadSide::Payments(cache, filter) => {
                created_or_removed(changed, cache, filter, keys::payment).await
            }
        }
    }
}

/// Adds the created purchases' ids to `filter`, and drops the removed ones from `cache`.
async fn created_or_removed<'a>(
    changed: impl Iterator<Item = (&'a StepCommand, bool)>,
    cache: &Cache,
    filter: &FilterSlot,
    key: fn(crate::domain::ids::PurchaseId) -> String,
) {
    let (mut created, mut stale) = (Vec::new(), Vec::new());
    for (command, is_new) in changed {
        let id = command.purchase.purchase_id;
        if is_new {
            created.push(id.0);
        } else {
            stale.push(key(id));
        }
    }
    filter.add_now(&created).await;
    if !stale.is_empty() {
        cache.invalidate_many(&stale).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::{CustomerId, ProductId, PurchaseId};
    use crate::domain::purchase::{Currency, Purchase, PurchaseItem, Step};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A repository answering every command with `outcome`.
    #[derive(Clone)]
    struct Answers(StepOutcome);

    impl StepRepository for Answers {
        async fn run_steps(&self, commands: &[StepCommand]) -> BatchResults {
            Ok(commands.iter().map(|_| Ok(self.0.clone())).collect())
        }
    }

    fn command(call: Call, product: u64) -> StepCommand {
        StepCommand {
            purchase: Arc::new(Purchase {
                purchase_id: PurchaseId(9),
                customer_id: CustomerId(1),
                items: vec![PurchaseItem {
                    product_id: ProductId(product),
                    amount: 1,
                }],
                currency: Currency::Nt,
                amount: 1,
            }),
            call,
            epoch: 1,
            deadline_ms: i64::MAX,
            trace: Default::default(),
        }
    }

    /// Reads `key` through `cache` and tells whether the database was read.
    async fn loads(cache: &Cache, key: &str) -> bool {
        let count = AtomicUsize::new(0);
        let load = || async {
            count.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(Some(1u64))
        };
        cache.get_or_load(key, load).await.unwrap();
        count.load(Ordering::SeqCst) == 1
    }

    #[tokio::test]
    async fn a_committed_reservation_or_release_drops_the_product_pages_a_refusal_keeps_them() {
        let cache = Cache::local(Duration::from_secs(60));
        let page = keys::product(ProductId(5));
        assert!(loads(&cache, &page).await);
        assert!(!loads(&cache, &page).await, "cached");

        let refused = Observed::new(
            Answers(StepOutcome::Rejected("insufficient inventory".into())),
            ReadSide::Products(cache.clone()),
        );
        let reserve = command(Call::Execute(Step::UpdateProductInventory), 5);
        refused
            .run_steps(std::slice::from_ref(&reserve))
            .await
            .unwrap();
        assert!(!loads(&cache, &page).await, "a refusal changed no stock");

        let applied = Observed::new(
            Answers(StepOutcome::Applied),
            ReadSide::Products(cache.clone()),
        );
        applied.run_steps(&[reserve]).await.unwrap();
        assert!(
            loads(&cache, &page).await,
            "reserved: the page is read again"
        );

        let release = command(Call::Compensate(Step::UpdateProductInventory), 5);
        refused.run_steps(&[release]).await.unwrap();
        assert!(
            loads(&cache, &page).await,
            "released: the page is read again"
        );
    }

    #[tokio::test]
    async fn a_rolled_back_order_is_dropped_from_the_cache() {
        let cache = Cache::local(Duration::from_secs(60));
        let order = keys::order(PurchaseId(9));
        assert!(loads(&cache, &order).await);
        let orders = Observed::new(
            Answers(StepOutcome::Applied),
            ReadSide::Orders(cache.clone(), FilterSlot::default()),
        );
        orders
            .run_steps(&[command(Call::Execute(Step::CreateOrder), 5)])
            .await
            .unwrap();
        assert!(
            !loads(&cache, &order).await,
            "creating it changed no cached value"
        );
        orders
            .run_steps(&[command(Call::Compensate(Step::CreateOrder), 5)])
            .await
            .unwrap();
        assert!(loads(&cache, &order).await, "removed: read again");
    }
}
