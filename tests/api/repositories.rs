//! The repository layer on both backends: every check runs against SQLite files and against
//! the local MariaDB (a fresh set of databases per run, dropped even when the test fails). In
//! CI (`CI` set) an unreachable MariaDB fails the test; elsewhere it is reported as SKIPPED.

use std::sync::Arc;

use crate::support::mariadb::Databases;
use sagashop::config::{Config, ServiceDb};
use sagashop::db::DbPool;
use sagashop::db::accounts::{Accounts, Customer, PersonChange};
use sagashop::db::ledger::StepOp;
use sagashop::db::orders::Orders;
use sagashop::db::payments::Payments;
use sagashop::db::products::{INSUFFICIENT_INVENTORY, Product, Products};
use sagashop::db::sagas::{EventRow, SagaRow, SagaWrite, Sagas};
use sagashop::domain::purchase::{Currency, Purchase, PurchaseItem, StepOutcome};

struct Repos {
    accounts: Accounts,
    products: Products,
    orders: Orders,
    payments: Payments,
    sagas: Sagas,
}

async fn open(config: &Config) -> Repos {
    let pools = sagashop::app::open_databases(config)
        .await
        .expect("databases open");
    let pool =
        |db: ServiceDb| -> DbPool { pools.iter().find(|(d, _)| *d == db).unwrap().1.clone() };
    Repos {
        accounts: Accounts::new(pool(ServiceDb::Account)),
        products: Products::new(pool(ServiceDb::Product)),
        orders: Orders::new(pool(ServiceDb::Order)),
        payments: Payments::new(pool(ServiceDb::Payment)),
        sagas: Sagas::new(pool(ServiceDb::Saga)),
    }
}

fn customer(id: i64, email: &str, phone: &str) -> Customer {
    Customer {
        id,
        active: true,
        first_name: "ming".into(),
        last_name: "hsu".into(),
        email: email.into(),
        email_key: sagashop::domain::email::unique_key(email),
        address: "taipei".into(),
        phone_number: phone.into(),
        password_hash: "$argon2id$x".into(),
        created_at: 1,
    }
}

fn product(id: i64, inventory: i64) -> Product {
    Product {
        id,
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
        purchase_id: id,
        customer_id: 7,
        items: items
            .iter()
            .map(|&(product_id, amount)| PurchaseItem { product_id, amount })
            .collect(),
        currency: Currency::Nt,
        amount: 100,
    }
}

async fn stock(r: &Repos, id: u64) -> i64 {
    r.products.by_id(id).await.unwrap().unwrap().inventory
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
            4,
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
        r.accounts.by_id(4).await.unwrap().unwrap().email,
        "c@ex.com"
    );

    // Products: unicode, paging in id order.
    for id in [30, 10, 20] {
        r.products.insert(&product(id, 5)).await.unwrap();
    }
    let page: Vec<i64> = r
        .products
        .page(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(page, vec![10, 20, 30]);
    assert_eq!(r.products.page(1, 1).await.unwrap()[0].id, 20);
    assert_eq!(
        r.products.by_id(10).await.unwrap().unwrap().description,
        "déjà vu ✓"
    );

    // Reservation: all or nothing, once per purchase, released exactly once.
    assert_eq!(
        r.products
            .reserve(&purchase(100, &[(10, 2), (20, 5)]))
            .await
            .unwrap(),
        StepOutcome::Applied
    );
    assert_eq!((stock(&r, 10).await, stock(&r, 20).await), (3, 0));
    assert_eq!(
        r.products
            .reserve(&purchase(100, &[(10, 2), (20, 5)]))
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
        .reserve(&purchase(101, &[(10, 1), (20, 1)]))
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
        .reserve(&purchase(102, &[(30, 1), (30, 1)]))
        .await
        .unwrap();
    assert!(matches!(dup, StepOutcome::Rejected(_)));
    assert_eq!(stock(&r, 30).await, 5);
    r.products.release(100).await.unwrap();
    r.products.release(100).await.unwrap();
    assert_eq!(
        (stock(&r, 10).await, stock(&r, 20).await),
        (5, 5),
        "release must restore once"
    );
    r.products.release(101).await.unwrap();
    assert_eq!(
        stock(&r, 10).await,
        5,
        "releasing a refused reservation gives nothing back"
    );
    // A reservation that arrives after its compensation is refused (fenced).
    r.products.release(103).await.unwrap();
    assert!(matches!(
        r.products
            .reserve(&purchase(103, &[(10, 1)]))
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
            StepOp::Execute(ok.clone()),
            StepOp::Execute(refused.clone()),
            StepOp::Execute(ok.clone()),
            StepOp::Compensate(111),
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
        .run_steps(&[StepOp::Compensate(110), StepOp::Compensate(110)])
        .await
        .unwrap();
    assert_eq!(stock(&r, 10).await, 5);

    // Orders: one per purchase, removal idempotent and fencing.
    let p = purchase(200, &[(20, 1), (10, 2)]);
    assert_eq!(r.orders.create(&p).await.unwrap(), StepOutcome::Applied);
    assert_eq!(r.orders.create(&p).await.unwrap(), StepOutcome::Applied);
    let lines = r.orders.lines(200).await.unwrap();
    assert_eq!(
        lines
            .iter()
            .map(|l| (l.product_id, l.amount))
            .collect::<Vec<_>>(),
        vec![(10, 2), (20, 1)]
    );
    r.orders.remove(200).await.unwrap();
    r.orders.remove(200).await.unwrap();
    assert!(r.orders.lines(200).await.unwrap().is_empty());
    assert!(matches!(
        r.orders.create(&p).await.unwrap(),
        StepOutcome::Rejected(_)
    ));
    assert!(r.orders.lines(200).await.unwrap().is_empty());

    // Payments: same contract.
    let p = purchase(300, &[(10, 1)]);
    assert_eq!(r.payments.create(&p).await.unwrap(), StepOutcome::Applied);
    assert_eq!(r.payments.create(&p).await.unwrap(), StepOutcome::Applied);
    assert_eq!(r.payments.by_id(300).await.unwrap().unwrap().amount, 100);
    r.payments.remove(300).await.unwrap();
    assert!(r.payments.by_id(300).await.unwrap().is_none());

    // Saga store: group commit of several sagas, log order, paging, resume queries.
    for id in [1000, 1001] {
        let row = SagaRow {
            purchase_id: id,
            customer_id: 7,
            items: "[]".into(),
            currency_code: "NT".into(),
            amount: 1,
            state: "PENDING".into(),
            finished: false,
            attempts: 0,
            owner_node: 1,
            lease_expires_at: 0,
            created_at: 0,
            updated_at: 0,
        };
        let write = SagaWrite {
            purchase_id: id,
            state: "PENDING".into(),
            finished: false,
            attempts: 0,
            events: vec![],
            insert: Some(row),
        };
        r.sagas.commit(&[write]).await.unwrap();
    }
    let event = |event_id, purchase_id| EventRow {
        event_id,
        purchase_id,
        customer_id: 7,
        step: "UPDATE_PRODUCT_INVENTORY".into(),
        status: "STATUS_EXUCUTE".into(),
        created_at: 0,
    };
    r.sagas
        .commit(&[
            SagaWrite {
                purchase_id: 1000,
                state: "SUCCEEDED".into(),
                finished: true,
                attempts: 0,
                insert: None,
                events: vec![event(1, 1000), event(2, 1000)],
            },
            SagaWrite {
                purchase_id: 1001,
                state: "EXECUTING:CREATE_ORDER".into(),
                finished: false,
                attempts: 0,
                insert: None,
                events: vec![event(3, 1001)],
            },
        ])
        .await
        .unwrap();
    assert_eq!(r.sagas.max_event_id().await.unwrap(), 3);
    let unfinished: Vec<i64> = r
        .sagas
        .unfinished(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|s| s.purchase_id)
        .collect();
    assert_eq!(unfinished, vec![1001]);
    assert_eq!(r.sagas.log_of(1000).await.unwrap().len(), 2);
    let logs: Vec<(i64, i64)> = r
        .sagas
        .logs_of(&[1001, 1000])
        .await
        .unwrap()
        .iter()
        .map(|e| (e.purchase_id, e.event_id))
        .collect();
    assert_eq!(logs, vec![(1000, 1), (1000, 2), (1001, 3)]);
    let after: Vec<i64> = r
        .sagas
        .customer_events_after(7, 1, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(after, vec![2, 3]);
    // A batch with a bad row commits nothing (all or none).
    let bad = r
        .sagas
        .commit(&[SagaWrite {
            purchase_id: 1001,
            state: "SUCCEEDED".into(),
            finished: true,
            attempts: 0,
            events: vec![event(4, 1001), event(3, 1001)],
            insert: None,
        }])
        .await;
    assert!(bad.is_err());
    assert_eq!(r.sagas.max_event_id().await.unwrap(), 3);
    assert_eq!(r.sagas.unfinished(0, 10).await.unwrap().len(), 1);
    assert_eq!(r.sagas.renew_leases(1, 99).await.unwrap(), 1);
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
    databases.configure(&mut config);
    exercise(open(&config).await).await;
}
