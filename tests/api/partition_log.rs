//! The reads the result hub fills gaps with, on both backends: a partition's newest id and
//! its log entries in an id range (SQLite files, and the local MariaDB as the repository
//! tests do).

use std::sync::Arc;

use crate::support::mariadb::Databases;
use sagashop::clock::Clock;
use sagashop::config::{Config, ServiceDb};
use sagashop::db::sagas::{SagaWrite, Sagas};
use sagashop::domain::ids::{CustomerId, ProductId, PurchaseId};
use sagashop::domain::partition::{PartitionId, of_customer};
use sagashop::domain::purchase::{Currency, Purchase, PurchaseItem, Step, StepEvent, StepStatus};
use sagashop::domain::saga::{Saga, SagaState};

const PARTITIONS: u32 = 4;

async fn open(config: &Config) -> Sagas {
    let pools = sagashop::app::open_databases(&config.databases, &[ServiceDb::Saga])
        .await
        .expect("databases open");
    Sagas::new(pools[0].1.clone(), Clock::system())
}

fn new_saga(purchase_id: u64, customer_id: CustomerId) -> SagaWrite {
    let purchase = Arc::new(Purchase {
        purchase_id: PurchaseId(purchase_id),
        customer_id,
        items: vec![PurchaseItem {
            product_id: ProductId(1),
            amount: 1,
        }],
        currency: Currency::Nt,
        amount: 10,
    });
    let step = Step::UpdateProductInventory;
    SagaWrite {
        partition: of_customer(customer_id, PARTITIONS),
        purchase,
        from_version: 0,
        stored: false,
        log_len: 0,
        saga: Saga::at(SagaState::Executing(step)),
        events: vec![StepEvent {
            step,
            status: StepStatus::Execute,
        }],
        trace: Default::default(),
    }
}

async fn partition_reads(sagas: Sagas) {
    let mut owned = sagas.own_all(PARTITIONS, 1).await.unwrap();
    let c1 = CustomerId(7);
    let p = of_customer(c1, PARTITIONS);
    let (c2, q) = (8..)
        .map(CustomerId)
        .map(|c| (c, of_customer(c, PARTITIONS)))
        .find(|(_, q)| *q != p)
        .unwrap();
    let all: Vec<PartitionId> = (0..PARTITIONS).map(PartitionId).collect();
    let tops = sagas.partition_tops(&all).await.unwrap();
    assert!(tops.iter().all(|(_, top)| *top == 0), "{tops:?}");

    let writes: Vec<SagaWrite> = (0..3)
        .map(|n| new_saga(100 + n, c1))
        .chain([new_saga(200, c2)])
        .collect();
    sagas.commit(1, &mut owned, &writes).await.unwrap();
    // Both customers' partitions, in partition order; untouched ones at 0.
    let tops = sagas.partition_tops(&[q, p]).await.unwrap();
    let mut want = vec![(p, 3), (q, 1)];
    want.sort();
    assert_eq!(tops, want);

    let ids = |read: Vec<sagashop::domain::purchase::PurchaseResult>| -> Vec<u64> {
        read.iter().map(|r| r.event_id).collect()
    };
    let read = sagas.partition_events(p, 0, 3, 10).await.unwrap();
    assert_eq!(ids(read.clone()), [1, 2, 3]);
    assert!(read.iter().all(|r| r.customer_id == c1));
    assert_eq!(ids(sagas.partition_events(p, 1, 2, 10).await.unwrap()), [2]);
    assert_eq!(
        ids(sagas.partition_events(p, 0, 3, 2).await.unwrap()),
        [1, 2]
    );
    // Nothing of another partition, nothing above `upto`.
    assert_eq!(ids(sagas.partition_events(q, 0, 9, 10).await.unwrap()), [1]);
    assert!(
        sagas
            .partition_events(p, 3, 9, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[actix_rt::test]
async fn partition_reads_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    partition_reads(open(&Config::embedded(dir.path())).await).await;
}

#[actix_rt::test]
async fn partition_reads_on_mariadb() {
    let Some(databases) = Databases::create("partition_log").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::embedded(dir.path());
    databases.configure(&mut config.databases);
    partition_reads(open(&config).await).await;
}
