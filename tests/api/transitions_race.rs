//! Old and new saga owners racing on MariaDB. Two transitions of one saga: a commit retried
//! by its old owner (its ownership still at the epoch it held) and a commit by a new owner,
//! which claims the partition (the epoch moves on) just before. Whatever the interleaving,
//! exactly one lands: the saga moves one version on, with one set of log entries, and the
//! other write is told it lost the partition or conflicts. And at a participant: a stale
//! owner's step against a newer owner's compensation of it leaves no effect behind. In CI
//! (`CI` set) an unreachable MariaDB fails the tests.

use std::sync::Arc;

use crate::support::mariadb::Databases;
use sagashop::clock::Clock;
use sagashop::config::{Config, ServiceDb};
use sagashop::db::DbError;
use sagashop::db::products::{Product, Products};
use sagashop::db::sagas::{Ownership, SagaWrite, Sagas, WriteOutcome};
use sagashop::domain::ids::{CustomerId, ProductId, PurchaseId};
use sagashop::domain::partition::{self, PartitionId};
use sagashop::domain::purchase::{
    Currency, Purchase, PurchaseItem, Step, StepEvent, StepOutcome, StepStatus,
};
use sagashop::domain::saga::{Saga, replay};

/// Partitions of the test store (a few: every saga lands in one of them).
const PARTITIONS: u32 = 4;
/// Races run; the owners swap roles each time.
const ROUNDS: u64 = 24;

/// A node of the race: its id, its saga store (a pool of its own) and what it holds.
struct Node {
    id: u16,
    sagas: Sagas,
    owned: Ownership,
}

async fn node(config: &Config, id: u16) -> Node {
    let pools = sagashop::app::open_databases(&config.databases, &[ServiceDb::Saga])
        .await
        .expect("saga store opens");
    Node {
        id,
        sagas: Sagas::new(pools[0].1.clone(), Clock::system()),
        owned: Ownership::new(),
    }
}

fn events(list: &[(Step, StepStatus)]) -> Vec<StepEvent> {
    list.iter()
        .map(|&(step, status)| StepEvent { step, status })
        .collect()
}

/// The transition from `log` (the saga's entries so far) that appends `new`.
fn transition(purchase: &Arc<Purchase>, log: &[StepEvent], new: &[StepEvent]) -> SagaWrite {
    let all: Vec<StepEvent> = log.iter().chain(new).copied().collect();
    SagaWrite {
        purchase: purchase.clone(),
        partition: partition::of_customer(purchase.customer_id, PARTITIONS),
        from_version: if log.is_empty() { 0 } else { 1 },
        stored: !log.is_empty(),
        log_len: log.len() as u32,
        saga: Saga::at(replay(&all).expect("a valid log")),
        events: new.to_vec(),
        trace: Default::default(),
    }
}

/// Commits one write as the store writer does: a transaction that fails as a whole (a
/// deadlock victim, say) is tried again; answers the write's outcome.
async fn commit(node: &mut Node, write: &SagaWrite) -> WriteOutcome {
    let mut tries = 0;
    loop {
        match node
            .sagas
            .commit(node.id, &mut node.owned, std::slice::from_ref(write))
            .await
        {
            Ok(mut outcomes) => return outcomes.remove(0),
            Err(e) if tries < 5 => {
                tries += 1;
                eprintln!("node {}: commit failed, again: {e}", node.id);
            }
            Err(e) => panic!("node {}: commit failed: {e}", node.id),
        }
    }
}

/// Takes every partition for `node`, moving each one's epoch on (a claim).
async fn claim(node: &mut Node) {
    node.owned = node
        .sagas
        .own_all(PARTITIONS, node.id)
        .await
        .expect("claim");
}

#[actix_rt::test]
async fn two_transitions_racing_exactly_one_lands() {
    let Some(databases) = Databases::create("transitions_race").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::embedded(dir.path());
    databases.configure(&mut config.databases);
    let (mut a, mut b) = (node(&config, 1).await, node(&config, 2).await);
    claim(&mut a).await;

    let started = events(&[(Step::UpdateProductInventory, StepStatus::Execute)]);
    // The old owner's retried transition goes on; the new owner's, decided from a timeout,
    // fails the step: two different positions, so neither passes for the other.
    let forward = events(&[
        (Step::UpdateProductInventory, StepStatus::Success),
        (Step::CreateOrder, StepStatus::Execute),
    ]);
    let failed = events(&[(Step::UpdateProductInventory, StepStatus::Failed)]);
    let mut wins = [0; 2];
    for round in 0..ROUNDS {
        let (old, new) = if round % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let purchase = Arc::new(Purchase {
            purchase_id: PurchaseId(9_000 + round),
            customer_id: CustomerId(100 + round),
            items: vec![PurchaseItem {
                product_id: ProductId(1),
                amount: 1,
            }],
            currency: Currency::Nt,
            amount: 100,
        });
        let created = commit(old, &transition(&purchase, &[], &started)).await;
        assert!(
            matches!(created, WriteOutcome::Committed(_)),
            "round {round}: {created:?}"
        );
        let retried = transition(&purchase, &started, &forward);
        let taken_over = transition(&purchase, &started, &failed);
        // Vary the interleaving: the old owner's commit starts a little later each round.
        let pause = std::time::Duration::from_micros(round % 4 * 700);
        let (old_outcome, new_outcome) = futures_util::join!(
            async {
                tokio::time::sleep(pause).await;
                commit(old, &retried).await
            },
            async {
                claim(new).await;
                commit(new, &taken_over).await
            }
        );
        let landed = |o: &WriteOutcome| matches!(o, WriteOutcome::Committed(_));
        let refused =
            |o: &WriteOutcome| matches!(o, WriteOutcome::LostPartition | WriteOutcome::Conflict);
        let (winner, expected) = match (landed(&old_outcome), landed(&new_outcome)) {
            (true, false) if refused(&new_outcome) => (0, &retried),
            (false, true) if refused(&old_outcome) => (1, &taken_over),
            _ => panic!(
                "round {round}: exactly one must land, the other be refused: old \
                 {old_outcome:?}, new {new_outcome:?}"
            ),
        };
        wins[winner] += 1;
        let stored = old
            .sagas
            .by_id(purchase.purchase_id)
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(stored.version, 2, "round {round}: one version on");
        let log: Vec<StepEvent> = stored.steps.iter().map(|s| s.event).collect();
        let want: Vec<StepEvent> = started.iter().chain(&expected.events).copied().collect();
        assert_eq!(
            (stored.log_len, log),
            (want.len() as u32, want),
            "round {round}: one set of log entries, the winner's"
        );
        assert_eq!(
            stored.status.as_ref().map(|s| s.state),
            Ok(expected.saga.state),
            "round {round}"
        );
        assert_eq!(
            stored.partition,
            PartitionId(partition::of_customer(purchase.customer_id, PARTITIONS).0)
        );
    }
    eprintln!(
        "old owner's retry landed {} times, new owner's {}",
        wins[0], wins[1]
    );
}

/// Runs a step or compensation as a saga does: again while its transaction fails as a whole
/// (a deadlock victim, say); a fence or an outcome is its answer.
async fn settled<T>(mut run: impl AsyncFnMut() -> Result<T, DbError>) -> Result<T, DbError> {
    for _ in 0..5 {
        match run().await {
            Err(DbError::Query(e)) => eprintln!("failed, again: {e}"),
            answer => return answer,
        }
    }
    run().await
}

#[actix_rt::test]
async fn a_stale_step_racing_its_newer_compensation_leaves_no_effect() {
    let Some(databases) = Databases::create("ledger_race").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::embedded(dir.path());
    databases.configure(&mut config.databases);
    let open = async || {
        let pools = sagashop::app::open_databases(&config.databases, &[ServiceDb::Product])
            .await
            .expect("product database opens");
        Products::new(pools[0].1.clone(), Clock::system())
    };
    let (old, new) = (open().await, open().await);
    const STOCK: i64 = 1_000;
    old.insert(&Product {
        id: ProductId(1),
        name: "raced".into(),
        description: String::new(),
        brand_name: "b".into(),
        price: 1,
        inventory: STOCK,
        created_at: 1,
    })
    .await
    .unwrap();
    let mut fenced = 0;
    for round in 0..ROUNDS {
        let purchase = Purchase {
            purchase_id: PurchaseId(7_000 + round),
            customer_id: CustomerId(1),
            items: vec![PurchaseItem {
                product_id: ProductId(1),
                amount: 3,
            }],
            currency: Currency::Nt,
            amount: 3,
        };
        let pause = std::time::Duration::from_micros(round % 4 * 500);
        // The old owner (epoch 1) reserves; the new one (epoch 2) compensates the step.
        let (step, undo) = futures_util::join!(
            async {
                tokio::time::sleep(pause).await;
                settled(async || old.reserve(&purchase, 1).await).await
            },
            settled(async || new.release(purchase.purchase_id, 2).await)
        );
        undo.unwrap_or_else(|e| panic!("round {round}: the newer compensation failed: {e}"));
        match step {
            Ok(StepOutcome::Applied) | Ok(StepOutcome::Rejected(_)) => {}
            Err(DbError::Fenced(1)) => fenced += 1,
            other => panic!("round {round}: the stale step answered {other:?}"),
        }
        assert_eq!(
            new.inventory(ProductId(1)).await.unwrap(),
            Some(STOCK),
            "round {round}: the stale step's effect outlived the compensation ({step:?})"
        );
        assert!(
            matches!(old.reserve(&purchase, 1).await, Err(DbError::Fenced(1))),
            "round {round}: the stale owner is fenced from now on"
        );
    }
    eprintln!("the stale step was fenced {fenced} times of {ROUNDS}");
}
