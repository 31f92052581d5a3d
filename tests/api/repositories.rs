//! The repository layer on both backends: every check runs against SQLite files and against
//! the local MariaDB (a fresh set of databases per run, dropped even when the test fails). In
//! CI (`CI` set) an unreachable MariaDB fails the test; elsewhere it is reported as SKIPPED.

use std::sync::Arc;

use crate::support::mariadb::Databases;
use sagashop::clock::Clock;
use sagashop::config::{Config, ServiceDb};
use sagashop::db::accounts::{Accounts, Customer, PersonChange};
use sagashop::db::ledger::StepRepository;
use sagashop::db::orders::Orders;
use sagashop::db::payments::Payments;
use sagashop::db::products::{INSUFFICIENT_INVENTORY, Product, Products};
use sagashop::db::sagas::{Ownership, SagaWrite, Sagas, WriteOutcome};
use sagashop::db::{DbError, DbPool};
use sagashop::domain::ids::{CustomerId, ProductId, PurchaseId};
use sagashop::domain::purchase::{
    Currency, Purchase, PurchaseItem, Step, StepEvent, StepOutcome, StepStatus,
};
use sagashop::domain::saga::{Call, Retry, Saga, SagaState, StepCommand};

struct Repos {
    accounts: Accounts,
    products: Products,
    orders: Orders,
    payments: Payments,
    sagas: Sagas,
}

async fn open(config: &Config) -> Repos {
    let pools = sagashop::app::open_databases(&config.databases, &sagashop::config::ServiceDb::ALL)
        .await
        .expect("databases open");
    let pool =
        |db: ServiceDb| -> DbPool { pools.iter().find(|(d, _)| *d == db).unwrap().1.clone() };
    Repos {
        accounts: Accounts::new(pool(ServiceDb::Account)),
        products: Products::new(pool(ServiceDb::Product), Clock::system()),
        orders: Orders::new(pool(ServiceDb::Order), Clock::system()),
        payments: Payments::new(pool(ServiceDb::Payment), Clock::system()),
        sagas: Sagas::new(pool(ServiceDb::Saga), Clock::system()),
    }
}

fn customer(id: u64, email: &str, phone: &str) -> Customer {
    Customer {
        id: CustomerId(id),
        active: true,
        first_name: "ming".into(),
        last_name: "hsu".into(),
        email: email.into(),
        email_key: sagashop::domain::email::unique_key(email),
        address: "taipei".into(),
        phone_number: phone.into(),
        password_hash: "$argon2id$x".into(),
        created_at: 1,
        token_version: 0,
    }
}

fn product(id: u64, inventory: i64) -> Product {
    Product {
        id: ProductId(id),
        name: format!("p{id}"),
        description: "déjà vu ✓".into(),
        brand_name: "brand".into(),
        price: 100,
        inventory,
        created_at: 1,
    }
}

fn purchase(id: u64, items: &[(u64, i64)]) -> Purchase {
    Purchase {
        purchase_id: PurchaseId(id),
        customer_id: CustomerId(7),
        items: items
            .iter()
            .map(|&(product_id, amount)| PurchaseItem {
                product_id: ProductId(product_id),
                amount,
            })
            .collect(),
        currency: Currency::Nt,
        amount: 100,
    }
}

fn step(purchase: &Arc<Purchase>, call: Call) -> StepCommand {
    StepCommand {
        purchase: purchase.clone(),
        call,
        epoch: 1,
        deadline_ms: i64::MAX,
        trace: Default::default(),
    }
}

async fn stock(r: &Repos, id: u64) -> i64 {
    r.products
        .by_id(ProductId(id))
        .await
        .unwrap()
        .unwrap()
        .inventory
}

async fn exercise(r: Repos) {
    // Accounts: unicode round trip, case-insensitive email and phone uniqueness.
    r.accounts
        .insert(&customer(1, "A@Ex.com", "111"))
        .await
        .unwrap();
    let found = r.accounts.by_email_key("a@ex.com").await.unwrap().unwrap();
    assert_eq!(found.email, "A@Ex.com");
    let dup_email = r.accounts.insert(&customer(2, "a@EX.com", "222")).await;
    assert!(
        matches!(dup_email, Err(sagashop::db::DbError::Duplicate)),
        "{dup_email:?}"
    );
    let dup_phone = r.accounts.insert(&customer(3, "b@ex.com", "111")).await;
    assert!(matches!(dup_phone, Err(sagashop::db::DbError::Duplicate)));
    r.accounts
        .insert(&customer(4, "c@ex.com", "444"))
        .await
        .unwrap();
    let taken = r
        .accounts
        .update_person(
            CustomerId(4),
            &PersonChange {
                first_name: "n",
                last_name: "n",
                email: "A@EX.COM",
                email_key: "a@ex.com",
            },
        )
        .await;
    assert!(matches!(taken, Err(sagashop::db::DbError::Duplicate)));
    assert_eq!(
        r.accounts
            .by_id(CustomerId(4))
            .await
            .unwrap()
            .unwrap()
            .email,
        "c@ex.com"
    );
    // The token version moves with the email (its unique key), not with the name or case.
    let version = async |email: &str| {
        let key = sagashop::domain::email::unique_key(email);
        let change = PersonChange {
            first_name: "n",
            last_name: "n",
            email,
            email_key: &key,
        };
        r.accounts
            .update_person(CustomerId(4), &change)
            .await
            .unwrap();
        r.accounts
            .by_id(CustomerId(4))
            .await
            .unwrap()
            .unwrap()
            .token_version
    };
    assert_eq!(version("c@ex.com").await, 0, "same email");
    assert_eq!(version("d@ex.com").await, 1, "new email");
    assert_eq!(version("D@EX.com").await, 1, "same email, other case");
    assert_eq!(version("e@ex.com").await, 2, "new email again");

    // Products: unicode, paging in id order.
    for id in [30, 10, 20] {
        r.products.insert(&product(id, 5)).await.unwrap();
    }
    let page: Vec<ProductId> = r
        .products
        .page(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(page, [10, 20, 30].map(ProductId));
    assert_eq!(r.products.page(1, 1).await.unwrap()[0].id, ProductId(20));
    assert_eq!(
        r.products
            .by_id(ProductId(10))
            .await
            .unwrap()
            .unwrap()
            .description,
        "déjà vu ✓"
    );

    // Reservation: all or nothing, once per purchase, released exactly once.
    assert_eq!(
        r.products
            .reserve(&purchase(100, &[(10, 2), (20, 5)]), 1)
            .await
            .unwrap(),
        StepOutcome::Applied
    );
    assert_eq!((stock(&r, 10).await, stock(&r, 20).await), (3, 0));
    assert_eq!(
        r.products
            .reserve(&purchase(100, &[(10, 2), (20, 5)]), 1)
            .await
            .unwrap(),
        StepOutcome::Applied
    );
    assert_eq!(
        (stock(&r, 10).await, stock(&r, 20).await),
        (3, 0),
        "redelivery applied twice"
    );
    let short = r
        .products
        .reserve(&purchase(101, &[(10, 1), (20, 1)]), 1)
        .await
        .unwrap();
    assert_eq!(short, StepOutcome::Rejected(INSUFFICIENT_INVENTORY.into()));
    assert_eq!(
        stock(&r, 10).await,
        3,
        "a refused reservation must change nothing"
    );
    let dup = r
        .products
        .reserve(&purchase(102, &[(30, 1), (30, 1)]), 1)
        .await
        .unwrap();
    assert!(matches!(dup, StepOutcome::Rejected(_)));
    assert_eq!(stock(&r, 30).await, 5);
    r.products.release(PurchaseId(100), 1).await.unwrap();
    r.products.release(PurchaseId(100), 1).await.unwrap();
    assert_eq!(
        (stock(&r, 10).await, stock(&r, 20).await),
        (5, 5),
        "release must restore once"
    );
    r.products.release(PurchaseId(101), 1).await.unwrap();
    assert_eq!(
        stock(&r, 10).await,
        5,
        "releasing a refused reservation gives nothing back"
    );
    // A reservation that arrives after its compensation is refused (fenced).
    r.products.release(PurchaseId(103), 1).await.unwrap();
    assert!(matches!(
        r.products
            .reserve(&purchase(103, &[(10, 1)]), 1)
            .await
            .unwrap(),
        StepOutcome::Rejected(_)
    ));
    assert_eq!(stock(&r, 10).await, 5);

    // A batch: each op in its own savepoint, one commit; a refused op spares the others.
    let ok = Arc::new(purchase(110, &[(10, 1)]));
    let refused = Arc::new(purchase(111, &[(20, 6)]));
    let results = r
        .products
        .run_steps(&[
            step(&ok, Call::Execute(Step::UpdateProductInventory)),
            step(&refused, Call::Execute(Step::UpdateProductInventory)),
            step(&ok, Call::Execute(Step::UpdateProductInventory)),
            step(&refused, Call::Compensate(Step::UpdateProductInventory)),
        ])
        .await
        .unwrap();
    let results: Vec<StepOutcome> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        results,
        vec![
            StepOutcome::Applied,
            StepOutcome::Rejected(INSUFFICIENT_INVENTORY.into()),
            StepOutcome::Applied,
            StepOutcome::Applied,
        ]
    );
    assert_eq!(
        (stock(&r, 10).await, stock(&r, 20).await),
        (4, 5),
        "batch applied once, refused op changed nothing"
    );
    r.products
        .run_steps(&[
            step(&ok, Call::Compensate(Step::UpdateProductInventory)),
            step(&ok, Call::Compensate(Step::UpdateProductInventory)),
        ])
        .await
        .unwrap();
    assert_eq!(stock(&r, 10).await, 5);

    // Orders: one per purchase, removal idempotent and fencing.
    let p = purchase(200, &[(20, 1), (10, 2)]);
    assert_eq!(r.orders.create(&p, 1).await.unwrap(), StepOutcome::Applied);
    assert_eq!(r.orders.create(&p, 1).await.unwrap(), StepOutcome::Applied);
    let lines = r.orders.lines(PurchaseId(200)).await.unwrap();
    assert_eq!(
        lines
            .iter()
            .map(|l| (l.product_id.0, l.amount))
            .collect::<Vec<_>>(),
        vec![(10, 2), (20, 1)]
    );
    r.orders.remove(PurchaseId(200), 1).await.unwrap();
    r.orders.remove(PurchaseId(200), 1).await.unwrap();
    assert!(r.orders.lines(PurchaseId(200)).await.unwrap().is_empty());
    assert!(matches!(
        r.orders.create(&p, 1).await.unwrap(),
        StepOutcome::Rejected(_)
    ));
    assert!(r.orders.lines(PurchaseId(200)).await.unwrap().is_empty());

    // A batch whose commands run without savepoints first: when one fails (here a cart
    // with one product on two lines breaks the order's key), the batch runs again with a
    // savepoint each, and only that command fails.
    let (a, broken, b) = (
        Arc::new(purchase(210, &[(10, 1)])),
        Arc::new(purchase(211, &[(10, 1), (10, 2)])),
        Arc::new(purchase(212, &[(20, 1)])),
    );
    let results = r
        .orders
        .run_steps(&[
            step(&a, Call::Execute(Step::CreateOrder)),
            step(&broken, Call::Execute(Step::CreateOrder)),
            step(&b, Call::Execute(Step::CreateOrder)),
        ])
        .await
        .unwrap();
    assert!(
        matches!(results[0], Ok(StepOutcome::Applied)),
        "{results:?}"
    );
    assert!(results[1].is_err(), "{results:?}");
    assert!(
        matches!(results[2], Ok(StepOutcome::Applied)),
        "{results:?}"
    );
    assert_eq!(r.orders.lines(PurchaseId(210)).await.unwrap().len(), 1);
    assert!(r.orders.lines(PurchaseId(211)).await.unwrap().is_empty());
    assert_eq!(r.orders.lines(PurchaseId(212)).await.unwrap().len(), 1);

    // Payments: same contract.
    let p = purchase(300, &[(10, 1)]);
    assert_eq!(
        r.payments.create(&p, 1).await.unwrap(),
        StepOutcome::Applied
    );
    assert_eq!(
        r.payments.create(&p, 1).await.unwrap(),
        StepOutcome::Applied
    );
    assert_eq!(
        r.payments
            .by_id(PurchaseId(300))
            .await
            .unwrap()
            .unwrap()
            .amount,
        100
    );
    r.payments.remove(PurchaseId(300), 1).await.unwrap();
    assert!(r.payments.by_id(PurchaseId(300)).await.unwrap().is_none());

    fencing(&r).await;
    saga_store(&r.sagas).await;
    pending_sagas(&r.sagas).await;
}

/// A step command of `purchase` from the saga owner at `epoch`.
fn step_at(purchase: &Arc<Purchase>, call: Call, epoch: u64) -> StepCommand {
    StepCommand {
        epoch,
        ..step(purchase, call)
    }
}

fn fenced<T>(result: &Result<T, DbError>) -> bool {
    matches!(result, Err(DbError::Fenced(_)))
}

/// The step ledger fences stale owners: a command whose epoch is below the newest one
/// recorded for its purchase is neither applied nor replayed; a newer one replays the
/// recorded outcome and becomes the recorded owner.
async fn fencing(r: &Repos) {
    r.products.insert(&product(40, 10)).await.unwrap();
    let p = purchase(400, &[(40, 2)]);
    assert_eq!(
        r.products.reserve(&p, 2).await.unwrap(),
        StepOutcome::Applied
    );
    assert_eq!(stock(r, 40).await, 8);
    assert_eq!(
        r.products.reserve(&p, 2).await.unwrap(),
        StepOutcome::Applied
    );
    let stale = r.products.reserve(&p, 1).await;
    assert!(fenced(&stale), "{stale:?}");
    let stale = r.products.release(PurchaseId(400), 1).await;
    assert!(fenced(&stale), "{stale:?}");
    assert_eq!(
        stock(r, 40).await,
        8,
        "a stale owner's compensation undid the step"
    );
    // A newer owner replays the outcome and raises the recorded epoch past the old one.
    assert_eq!(
        r.products.reserve(&p, 3).await.unwrap(),
        StepOutcome::Applied
    );
    assert_eq!(stock(r, 40).await, 8, "a replay applied the step again");
    assert!(fenced(&r.products.reserve(&p, 2).await));
    assert!(fenced(&r.products.release(PurchaseId(400), 2).await));
    assert_eq!(stock(r, 40).await, 8);
    r.products.release(PurchaseId(400), 3).await.unwrap();
    assert_eq!(stock(r, 40).await, 10);
    assert!(fenced(&r.products.release(PurchaseId(400), 2).await));
    r.products.release(PurchaseId(400), 4).await.unwrap();
    assert_eq!(
        stock(r, 40).await,
        10,
        "a compensation replay gave back twice"
    );
    assert!(fenced(&r.products.reserve(&p, 3).await));
    assert_eq!(
        r.products.reserve(&p, 4).await.unwrap(),
        StepOutcome::Rejected("already compensated".into())
    );

    // A refusal is recorded with its owner's epoch; a tombstone too.
    let short = purchase(401, &[(40, 11)]);
    let refused = StepOutcome::Rejected(INSUFFICIENT_INVENTORY.into());
    assert_eq!(r.products.reserve(&short, 5).await.unwrap(), refused);
    assert!(fenced(&r.products.reserve(&short, 4).await));
    assert_eq!(r.products.reserve(&short, 5).await.unwrap(), refused);
    r.products.release(PurchaseId(402), 3).await.unwrap();
    assert!(fenced(
        &r.products.reserve(&purchase(402, &[(40, 1)]), 2).await
    ));
    assert!(fenced(&r.products.release(PurchaseId(402), 2).await));
    assert_eq!(stock(r, 40).await, 10);

    // Batches: a stale command fails alone, the others commit; both backends' batch paths
    // (without savepoints first, and with them) refuse it.
    let (a, old, b) = (
        Arc::new(purchase(410, &[(40, 1)])),
        Arc::new(purchase(411, &[(40, 1)])),
        Arc::new(purchase(412, &[(40, 1)])),
    );
    assert_eq!(
        r.orders.create(&old, 5).await.unwrap(),
        StepOutcome::Applied
    );
    let results = r
        .orders
        .run_steps(&[
            step_at(&a, Call::Execute(Step::CreateOrder), 1),
            step_at(&old, Call::Execute(Step::CreateOrder), 4),
            step_at(&old, Call::Compensate(Step::CreateOrder), 4),
            step_at(&b, Call::Execute(Step::CreateOrder), 1),
        ])
        .await
        .unwrap();
    assert!(
        matches!(results[0], Ok(StepOutcome::Applied)),
        "{results:?}"
    );
    assert!(matches!(results[1], Err(DbError::Fenced(4))), "{results:?}");
    assert!(matches!(results[2], Err(DbError::Fenced(4))), "{results:?}");
    assert!(
        matches!(results[3], Ok(StepOutcome::Applied)),
        "{results:?}"
    );
    for id in [410, 411, 412] {
        assert_eq!(
            r.orders.lines(PurchaseId(id)).await.unwrap().len(),
            1,
            "{id}"
        );
    }
    let results = r
        .products
        .run_steps(&[step_at(
            &old,
            Call::Compensate(Step::UpdateProductInventory),
            1,
        )])
        .await
        .unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(
        results[0].as_ref().unwrap(),
        &StepOutcome::Applied,
        "nothing to fence: first command"
    );
    let results = r
        .orders
        .run_steps(&[step_at(&old, Call::Compensate(Step::CreateOrder), 6)])
        .await
        .unwrap();
    assert!(
        matches!(results[0], Ok(StepOutcome::Applied)),
        "{results:?}"
    );
    assert!(r.orders.lines(PurchaseId(411)).await.unwrap().is_empty());

    // Payments: same contract.
    let p = purchase(420, &[(40, 1)]);
    assert_eq!(
        r.payments.create(&p, 7).await.unwrap(),
        StepOutcome::Applied
    );
    assert!(fenced(&r.payments.remove(PurchaseId(420), 6).await));
    assert!(r.payments.by_id(PurchaseId(420)).await.unwrap().is_some());
    assert!(
        fenced(&r.payments.create(&p, 0).await),
        "a command without an epoch"
    );
    r.payments.remove(PurchaseId(420), 7).await.unwrap();
    assert!(r.payments.by_id(PurchaseId(420)).await.unwrap().is_none());
}

fn saga_write(
    purchase: &Arc<Purchase>,
    from_version: u64,
    log_len: u32,
    state: SagaState,
    events: &[(Step, StepStatus)],
) -> SagaWrite {
    SagaWrite {
        purchase: purchase.clone(),
        partition: sagashop::domain::partition::of_customer(purchase.customer_id, 4),
        from_version,
        stored: from_version > 0,
        log_len,
        saga: Saga::at(state),
        events: events
            .iter()
            .map(|&(step, status)| StepEvent { step, status })
            .collect(),
        trace: Default::default(),
    }
}

fn committed_ids(outcome: &WriteOutcome) -> Vec<u64> {
    match outcome {
        WriteOutcome::Committed(results) => results.iter().map(|r| r.event_id).collect(),
        other => panic!("not committed: {other:?}"),
    }
}

/// The saga store: partitions, versioned writes, fencing, numbering, quarantine.
async fn saga_store(sagas: &Sagas) {
    use StepStatus::*;
    use sagashop::domain::saga::SagaState::*;
    const UPI: Step = Step::UpdateProductInventory;
    let mut owned = sagas.own_all(4, 1).await.unwrap();
    assert_eq!(owned.len(), 4);
    assert!(owned.values().all(|held| held.epoch == 1));
    assert!(
        sagas.own_all(8, 1).await.is_err(),
        "the partition count is fixed"
    );

    // Two customers in two different partitions.
    let (c1, c2) = (
        CustomerId(7),
        (8..)
            .map(CustomerId)
            .find(|&c| {
                sagashop::domain::partition::of_customer(c, 4)
                    != sagashop::domain::partition::of_customer(CustomerId(7), 4)
            })
            .unwrap(),
    );
    let a = Arc::new(Purchase {
        customer_id: c1,
        ..purchase(1000, &[(10, 1)])
    });
    let b = Arc::new(Purchase {
        customer_id: c1,
        ..purchase(1001, &[(10, 1)])
    });
    let c = Arc::new(Purchase {
        customer_id: c2,
        ..purchase(1002, &[(10, 1)])
    });
    let start = [(UPI, Execute)];
    let traced = sagashop::domain::trace::TraceContext::from_headers(
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        Some("vendor=1"),
    );
    let out = sagas
        .commit(
            1,
            &mut owned,
            &[
                saga_write(&a, 0, 0, Executing(UPI), &start),
                SagaWrite {
                    trace: traced.clone(),
                    ..saga_write(&b, 0, 0, Executing(UPI), &start)
                },
                saga_write(&c, 0, 0, Executing(UPI), &start),
            ],
        )
        .await
        .unwrap();
    let ids: Vec<Vec<u64>> = out.iter().map(committed_ids).collect();
    assert_eq!(
        ids,
        vec![vec![1], vec![2], vec![1]],
        "numbered per partition, in commit order"
    );
    // The trace a saga was accepted in is stored with it (a restart continues it).
    let stored = |id| async move { sagas.by_id(PurchaseId(id)).await.unwrap().unwrap().trace };
    assert_eq!(stored(1001).await, traced);
    assert!(!stored(1000).await.is_some());

    // A transition, then the same write again (its acknowledgement was lost): applied once.
    let done = saga_write(
        &a,
        1,
        1,
        Executing(Step::CreateOrder),
        &[(UPI, Success), (Step::CreateOrder, Execute)],
    );
    let out = sagas
        .commit(1, &mut owned, std::slice::from_ref(&done))
        .await
        .unwrap();
    assert_eq!(committed_ids(&out[0]), vec![3, 4]);
    let out = sagas
        .commit(1, &mut owned, std::slice::from_ref(&done))
        .await
        .unwrap();
    assert_eq!(out, vec![WriteOutcome::AlreadyApplied]);
    // A writer with a stale view (version 1 again, other content) conflicts.
    let stale = saga_write(&a, 1, 1, Compensating(UPI), &[(UPI, Failed)]);
    let out = sagas.commit(1, &mut owned, &[stale]).await.unwrap();
    assert_eq!(out, vec![WriteOutcome::Conflict]);
    let stored = sagas.by_id(PurchaseId(1000)).await.unwrap().unwrap();
    assert_eq!((stored.version, stored.log_len), (2, 3));
    assert_eq!(stored.status.unwrap().state, Executing(Step::CreateOrder));

    // A node with an old epoch writes nothing, and burns no ids.
    let mut old = owned.clone();
    for held in old.values_mut() {
        held.epoch -= 1;
    }
    let next_b = saga_write(&b, 1, 1, Compensating(UPI), &[(UPI, Failed)]);
    let out = sagas
        .commit(1, &mut old, std::slice::from_ref(&next_b))
        .await
        .unwrap();
    assert_eq!(out, vec![WriteOutcome::LostPartition]);
    let out = sagas.commit(1, &mut owned, &[next_b]).await.unwrap();
    assert_eq!(committed_ids(&out[0]), vec![5]);

    // One bad write (its log position is taken) fails alone; the rest of the batch commits.
    let bad = saga_write(&c, 1, 0, Compensating(UPI), &[(UPI, Failed)]);
    let good = saga_write(&b, 2, 2, RolledBack, &[(UPI, Rollbacked)]);
    let out = sagashop::actors::store::commit_isolating(sagas, 1, &mut owned, &[bad, good])
        .await
        .unwrap();
    assert!(matches!(out[0], WriteOutcome::Failed(_)), "{out:?}");
    assert_eq!(committed_ids(&out[1]), vec![6]);
    assert_eq!(
        sagas
            .by_id(PurchaseId(1002))
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );

    // The retry budget a saga has spent is stored with it, so a restart keeps it.
    let spent = Saga {
        state: Executing(UPI),
        retry: Retry {
            attempts: 2,
            since_ms: 12_345,
        },
    };
    let w = SagaWrite {
        saga: spent,
        ..saga_write(&c, 1, 1, Executing(UPI), &[])
    };
    let out = sagas.commit(1, &mut owned, &[w]).await.unwrap();
    assert!(matches!(out[0], WriteOutcome::Committed(_)), "{out:?}");
    assert_eq!(
        sagas.by_id(PurchaseId(1002)).await.unwrap().unwrap().status,
        Ok(spent)
    );

    // Reads: unfinished sagas, a customer's events after an id.
    let unfinished: Vec<u64> = sagas
        .unfinished(PurchaseId(0), 10)
        .await
        .unwrap()
        .iter()
        .map(|s| s.purchase.purchase_id.0)
        .collect();
    assert_eq!(unfinished, vec![1000, 1002]);
    let after: Vec<u64> = sagas
        .customer_events_after(sagashop::domain::partition::of_customer(c1, 4), c1, 2, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(after, vec![3, 4, 5, 6]);

    // Quarantine: set aside, listed, released once, picked up.
    sagas.quarantine(PurchaseId(1002), "test").await.unwrap();
    assert_eq!(
        sagas.by_id(PurchaseId(1002)).await.unwrap().unwrap().status,
        Err("test".into())
    );
    assert_eq!(sagas.unfinished(PurchaseId(0), 10).await.unwrap().len(), 1);
    let listed: Vec<u64> = sagas
        .quarantined()
        .await
        .unwrap()
        .iter()
        .map(|q| q.purchase_id.0)
        .collect();
    assert_eq!(listed, vec![1002]);
    assert!(
        !sagas.request_retry(PurchaseId(1000)).await.unwrap(),
        "not quarantined"
    );
    assert!(sagas.request_retry(PurchaseId(1002)).await.unwrap());
    assert_eq!(sagas.released().await.unwrap(), vec![PurchaseId(1002)]);
    sagas.picked_up(PurchaseId(1002)).await.unwrap();
    assert!(sagas.released().await.unwrap().is_empty());
    assert!(sagas.quarantined().await.unwrap().is_empty());
    assert_eq!(sagas.unfinished(PurchaseId(0), 10).await.unwrap().len(), 2);

    // A batch over a partition still held and one lost: the first commits, numbered right
    // after what this node committed before, and the second writes nothing.
    let held_next = committed_ids(&out_of_c1(sagas, &mut owned, &c1).await)[0] + 1;
    let d = Arc::new(Purchase {
        customer_id: c1,
        ..purchase(1003, &[(10, 1)])
    });
    let e = Arc::new(Purchase {
        customer_id: c2,
        ..purchase(1004, &[(10, 1)])
    });
    let lost = sagashop::domain::partition::of_customer(c2, 4);
    owned.get_mut(&lost).unwrap().epoch -= 1;
    let both = [
        saga_write(&d, 0, 0, Executing(UPI), &start),
        saga_write(&e, 0, 0, Executing(UPI), &start),
    ];
    let out = sagas.commit(1, &mut owned, &both).await.unwrap();
    assert_eq!(committed_ids(&out[0]), vec![held_next]);
    assert_eq!(out[1], WriteOutcome::LostPartition);
    assert!(sagas.by_id(PurchaseId(1004)).await.unwrap().is_none());
    owned.get_mut(&lost).unwrap().epoch += 1;

    // Many sagas moving on in one batch are written by one statement; when one of them is
    // not at its version, each is written alone and only that one conflicts.
    let many: Vec<Arc<Purchase>> = (1100..1110)
        .map(|id| {
            Arc::new(Purchase {
                customer_id: if id % 2 == 0 { c1 } else { c2 },
                ..purchase(id, &[(10, 1)])
            })
        })
        .collect();
    let writes = |from: u64, log: u32, state| -> Vec<SagaWrite> {
        many.iter()
            .map(|p| saga_write(p, from, log, state, &[(UPI, Execute)]))
            .collect()
    };
    let out = sagas
        .commit(1, &mut owned, &writes(0, 0, Executing(UPI)))
        .await
        .unwrap();
    assert!(out.iter().all(|o| matches!(o, WriteOutcome::Committed(_))));
    let out = sagas
        .commit(1, &mut owned, &writes(1, 1, Executing(Step::CreateOrder)))
        .await
        .unwrap();
    assert!(
        out.iter().all(|o| matches!(o, WriteOutcome::Committed(_))),
        "{out:?}"
    );
    let mut third = writes(2, 2, Executing(Step::CreatePayment));
    third[3].from_version = 1;
    let out = sagas.commit(1, &mut owned, &third).await.unwrap();
    for (i, o) in out.iter().enumerate() {
        if i == 3 {
            assert_eq!(*o, WriteOutcome::Conflict);
        } else {
            assert!(matches!(o, WriteOutcome::Committed(_)), "{out:?}");
        }
    }
    for (i, p) in many.iter().enumerate() {
        let stored = sagas.by_id(p.purchase_id).await.unwrap().unwrap();
        let version = if i == 3 { 2 } else { 3 };
        assert_eq!((stored.version, stored.log_len), (version, version as u32));
    }
}

/// Sagas accepted by an api node: stored Pending at version 0 with no log, found by the
/// owner's sweep of its partitions, and moved on by a versioned UPDATE from version 0 (a
/// retry recognised, a stale view refused, many at once in one statement).
async fn pending_sagas(sagas: &Sagas) {
    use StepStatus::*;
    use sagashop::domain::partition::{PartitionId, of_customer};
    use sagashop::domain::saga::SagaState::*;
    const UPI: Step = Step::UpdateProductInventory;
    let mut owned = sagas.own_all(4, 1).await.unwrap();
    let (c1, c2) = (
        CustomerId(7),
        (8..)
            .map(CustomerId)
            .find(|&c| of_customer(c, 4) != of_customer(CustomerId(7), 4))
            .unwrap(),
    );
    let (p1, p2) = (of_customer(c1, 4), of_customer(c2, 4));
    // A stored saga's first transition.
    let from_zero = |p: &Arc<Purchase>, state, events: &[(Step, StepStatus)]| SagaWrite {
        stored: true,
        ..saga_write(p, 0, 0, state, events)
    };
    let accepted = |id, customer_id| {
        Arc::new(Purchase {
            customer_id,
            ..purchase(id, &[(10, 1)])
        })
    };
    let (a, b, c) = (accepted(2000, c1), accepted(2001, c2), accepted(2002, c1));
    let traced = sagashop::domain::trace::TraceContext::from_headers(
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        None,
    );
    for p in [&a, &b, &c] {
        let trace = if p.purchase_id == a.purchase_id {
            traced.clone()
        } else {
            Default::default()
        };
        sagas
            .insert_pending(p, of_customer(p.customer_id, 4), &trace)
            .await
            .unwrap();
    }
    let stored = sagas.by_id(a.purchase_id).await.unwrap().unwrap();
    assert_eq!((stored.version, stored.log_len), (0, 0));
    assert_eq!(stored.status, Ok(Saga::NEW));
    assert_eq!(stored.purchase, *a);
    assert_eq!(stored.partition, p1);
    assert_eq!(stored.trace, traced);
    assert!(stored.steps.is_empty());

    // The sweep: by partition, in id order, bounded; nothing for no partition.
    let ids = |v: Vec<PurchaseId>| v.into_iter().map(|id| id.0).collect::<Vec<u64>>();
    assert_eq!(
        ids(sagas.pending_in(&[p1], 10).await.unwrap()),
        [2000, 2002]
    );
    assert_eq!(ids(sagas.pending_in(&[p2], 10).await.unwrap()), [2001]);
    assert_eq!(
        ids(sagas.pending_in(&[p1, p2], 10).await.unwrap()),
        [2000, 2001, 2002]
    );
    assert_eq!(ids(sagas.pending_in(&[p1, p2], 1).await.unwrap()), [2000]);
    assert!(sagas.pending_in(&[], 10).await.unwrap().is_empty());
    let other: Vec<PartitionId> = (0..4)
        .map(PartitionId)
        .filter(|p| ![p1, p2].contains(p))
        .collect();
    assert!(sagas.pending_in(&other, 10).await.unwrap().is_empty());

    // The first transition moves the stored row from version 0, appends its entry, and the
    // saga is pending no more. Sent again (its acknowledgement lost), it is recognised.
    let first = from_zero(&a, Executing(UPI), &[(UPI, Execute)]);
    let out = sagas
        .commit(1, &mut owned, std::slice::from_ref(&first))
        .await
        .unwrap();
    assert!(matches!(out[0], WriteOutcome::Committed(_)), "{out:?}");
    let stored = sagas.by_id(a.purchase_id).await.unwrap().unwrap();
    assert_eq!((stored.version, stored.log_len), (1, 1));
    assert_eq!(stored.status.unwrap().state, Executing(UPI));
    assert_eq!(stored.trace, traced, "the accepted trace stays");
    assert_eq!(ids(sagas.pending_in(&[p1], 10).await.unwrap()), [2002]);
    let again = sagas.commit(1, &mut owned, &[first]).await.unwrap();
    assert_eq!(again, vec![WriteOutcome::AlreadyApplied]);
    // Another view of the same start (a second writer from version 0) conflicts.
    let stale = from_zero(&a, RolledBack, &[(UPI, Failed)]);
    let out = sagas.commit(1, &mut owned, &[stale]).await.unwrap();
    assert_eq!(out, vec![WriteOutcome::Conflict]);
    // A stored-row write for a saga that has no row inserts nothing.
    let ghost = from_zero(&accepted(2003, c1), Executing(UPI), &[(UPI, Execute)]);
    let out = sagas.commit(1, &mut owned, &[ghost]).await.unwrap();
    assert_eq!(out, vec![WriteOutcome::Conflict]);
    assert!(sagas.by_id(PurchaseId(2003)).await.unwrap().is_none());
    // Not an owner's: a stored row of a partition held at an older epoch is not moved.
    let mut old = owned.clone();
    old.get_mut(&p2).unwrap().epoch -= 1;
    let late = from_zero(&b, Executing(UPI), &[(UPI, Execute)]);
    let out = sagas.commit(1, &mut old, &[late]).await.unwrap();
    assert_eq!(out, vec![WriteOutcome::LostPartition]);
    assert_eq!(
        sagas.by_id(b.purchase_id).await.unwrap().unwrap().version,
        0
    );

    // A quarantined pending saga is not swept.
    sagas.quarantine(c.purchase_id, "test").await.unwrap();
    assert!(sagas.pending_in(&[p1], 10).await.unwrap().is_empty());

    // Many accepted sagas started in one batch (one UPDATE for all); with one of them
    // started already, each is written alone and only that one is told so.
    let many: Vec<Arc<Purchase>> = (2100..2110)
        .map(|id| accepted(id, if id % 2 == 0 { c1 } else { c2 }))
        .collect();
    // Stored together, as an api node under load does.
    let none = Default::default();
    let together: Vec<_> = many
        .iter()
        .map(|p| (&**p, of_customer(p.customer_id, 4), &none))
        .collect();
    sagas.insert_pending_many(&together).await.unwrap();
    let starts: Vec<SagaWrite> = many
        .iter()
        .map(|p| from_zero(p, Executing(UPI), &[(UPI, Execute)]))
        .collect();
    let out = sagas.commit(1, &mut owned, &starts[..9]).await.unwrap();
    assert!(
        out.iter().all(|o| matches!(o, WriteOutcome::Committed(_))),
        "{out:?}"
    );
    let out = sagas.commit(1, &mut owned, &starts[..]).await.unwrap();
    for (i, o) in out.iter().enumerate() {
        if i < 9 {
            assert_eq!(*o, WriteOutcome::AlreadyApplied, "{out:?}");
        } else {
            assert!(matches!(o, WriteOutcome::Committed(_)), "{out:?}");
        }
    }
    for p in &many {
        let stored = sagas.by_id(p.purchase_id).await.unwrap().unwrap();
        assert_eq!((stored.version, stored.log_len), (1, 1));
    }
    let left = ids(sagas.pending_in(&[p1, p2], 100).await.unwrap());
    assert_eq!(
        left,
        [2001],
        "only the saga fenced off above is still pending"
    );
}

/// Commits a new saga for customer `c1` (a probe of the partition's numbering).
async fn out_of_c1(sagas: &Sagas, owned: &mut Ownership, c1: &CustomerId) -> WriteOutcome {
    let probe = Arc::new(Purchase {
        customer_id: *c1,
        ..purchase(1005, &[(10, 1)])
    });
    let write = saga_write(
        &probe,
        0,
        0,
        sagashop::domain::saga::SagaState::Executing(Step::UpdateProductInventory),
        &[(Step::UpdateProductInventory, StepStatus::Execute)],
    );
    let mut out = sagas.commit(1, owned, &[write]).await.unwrap();
    out.remove(0)
}

#[actix_rt::test]
async fn repositories_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    exercise(open(&Config::embedded(dir.path())).await).await;
}

#[actix_rt::test]
async fn repositories_on_mariadb() {
    let Some(databases) = Databases::create("repositories").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::embedded(dir.path());
    databases.configure(&mut config.databases);
    exercise(open(&config).await).await;
}

/// A data directory written before partitions (one global event sequence) opens with every
/// saga and log entry in place, and new ids continue above the old ones, so a client's old
/// `Last-Event-ID` still resumes correctly.
#[actix_rt::test]
async fn a_store_of_the_single_sequence_schema_is_migrated_on_start() {
    use diesel::{Connection, RunQueryDsl};
    use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
    const SAGA: EmbeddedMigrations = embed_migrations!("migrations/saga");
    let dir = tempfile::tempdir().unwrap();
    {
        let path = dir.path().join("saga.db");
        let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        conn.run_next_migration(SAGA).unwrap(); // the first migration only: the old schema
        diesel::sql_query(
            "INSERT INTO sagas VALUES \
             (1, 7, '[{\"product_id\":1,\"amount\":1}]', 'NT', 100, 'SUCCEEDED', 1, 0, 1, 0, 0, 0), \
             (2, 7, '[{\"product_id\":1,\"amount\":2}]', 'US', 200, 'EXECUTING:CREATE_ORDER', 0, 0, 1, 0, 0, 0)",
        )
        .execute(&mut conn)
        .unwrap();
        let entries = [
            (1, 1, "UPDATE_PRODUCT_INVENTORY", "STATUS_EXUCUTE"),
            (2, 1, "UPDATE_PRODUCT_INVENTORY", "STATUS_SUCCESS"),
            (3, 1, "CREATE_ORDER", "STATUS_EXUCUTE"),
            (4, 2, "UPDATE_PRODUCT_INVENTORY", "STATUS_EXUCUTE"),
            (5, 1, "CREATE_ORDER", "STATUS_SUCCESS"),
            (6, 1, "CREATE_PAYMENT", "STATUS_EXUCUTE"),
            (7, 2, "UPDATE_PRODUCT_INVENTORY", "STATUS_SUCCESS"),
            (8, 1, "CREATE_PAYMENT", "STATUS_SUCCESS"),
            (9, 2, "CREATE_ORDER", "STATUS_EXUCUTE"),
        ];
        for (id, purchase, step, status) in entries {
            diesel::sql_query(format!(
                "INSERT INTO saga_events VALUES ({id}, {purchase}, 7, '{step}', '{status}', 0)"
            ))
            .execute(&mut conn)
            .unwrap();
        }
    }
    let sagas = open(&Config::embedded(dir.path())).await.sagas;
    let mut owned = sagas.own_all(32, 1).await.unwrap();

    let done = sagas.by_id(PurchaseId(1)).await.unwrap().unwrap();
    assert_eq!(done.status.unwrap().state, SagaState::Succeeded);
    assert_eq!(done.log_len, 6);
    let running = sagas.by_id(PurchaseId(2)).await.unwrap().unwrap();
    assert_eq!(
        running.status.clone().unwrap().state,
        SagaState::Executing(Step::CreateOrder)
    );
    assert_eq!(running.purchase.amount, 200);
    assert_eq!(
        running.partition,
        sagashop::domain::partition::of_customer(CustomerId(7), 32)
    );
    let unfinished: Vec<u64> = sagas
        .unfinished(PurchaseId(0), 10)
        .await
        .unwrap()
        .iter()
        .map(|s| s.purchase.purchase_id.0)
        .collect();
    assert_eq!(unfinished, vec![2]);
    let resumed: Vec<u64> = sagas
        .customer_events_after(
            sagashop::domain::partition::of_customer(CustomerId(7), 32),
            CustomerId(7),
            4,
            100,
        )
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(resumed, vec![5, 6, 7, 8, 9]);

    // The next entries of customer 7, and of a customer in any other partition, follow 9.
    let next = SagaWrite {
        purchase: Arc::new(running.purchase.clone()),
        partition: running.partition,
        from_version: running.version,
        stored: true,
        log_len: running.log_len,
        saga: Saga::at(SagaState::Executing(Step::CreatePayment)),
        events: vec![
            StepEvent {
                step: Step::CreateOrder,
                status: StepStatus::Success,
            },
            StepEvent {
                step: Step::CreatePayment,
                status: StepStatus::Execute,
            },
        ],
        trace: Default::default(),
    };
    let other = Arc::new(Purchase {
        customer_id: (8..)
            .map(CustomerId)
            .find(|&c| sagashop::domain::partition::of_customer(c, 32) != running.partition)
            .unwrap(),
        ..purchase(3, &[(1, 1)])
    });
    let fresh = SagaWrite {
        partition: sagashop::domain::partition::of_customer(other.customer_id, 32),
        purchase: other,
        from_version: 0,
        stored: false,
        log_len: 0,
        saga: Saga::at(SagaState::Executing(Step::UpdateProductInventory)),
        events: vec![StepEvent {
            step: Step::UpdateProductInventory,
            status: StepStatus::Execute,
        }],
        trace: Default::default(),
    };
    let out = sagas.commit(1, &mut owned, &[next, fresh]).await.unwrap();
    assert_eq!(committed_ids(&out[0]), vec![10, 11]);
    assert_eq!(committed_ids(&out[1]), vec![10]);
    let log = sagas.by_id(PurchaseId(2)).await.unwrap().unwrap();
    assert_eq!(log.log_len, 5);
    assert!(log.status.is_ok());
}
