//! Concurrent purchases: no oversell, stock conserved, every outcome consistent with its
//! effects (ORIGINAL.md §8.10, §16 item 47), and backpressure when too many sagas run.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;
use futures_util::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sagashop::domain::purchase::Step;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

#[actix_rt::test]
async fn ten_parallel_purchases_against_stock_three() {
    let app = TestApp::spawn().await;
    let c = app.sign_up().await;
    let p5 = app.create_product("product5", 100, 3).await;
    let mut sse = app.subscribe(&c.access, None).await;
    let one: &[(u64, i64)] = &[(p5, 1)];
    let ids = join_all((0..10).map(|_| app.purchase_ok(&c.access, one))).await;
    let views = join_all(ids.iter().map(|id| app.wait_finished(&c.access, *id))).await;
    let succeeded: Vec<u64> = ids
        .iter()
        .zip(&views)
        .filter(|(_, v)| v["status"] == "SUCCEEDED")
        .map(|(id, _)| *id)
        .collect();
    let rolled_back = views
        .iter()
        .filter(|v| v["status"] == "ROLLED_BACK")
        .count();
    assert_eq!(succeeded.len(), 3, "{views:?}");
    assert_eq!(rolled_back, 7, "{views:?}");
    assert_eq!(app.inventory(p5).await, 0);
    assert_eq!(app.listed_inventory(p5).await, 0);

    // The stream tells each purchase's story exactly once.
    let frames = sse.take(3 * 6 + 7 * 3, WAIT).await;
    for id in &ids {
        let want = if succeeded.contains(id) {
            expected(&HAPPY_PATH)
        } else {
            expected(&INVENTORY_FAILURE)
        };
        assert_eq!(steps_of(&frames, *id), want, "purchase {id}");
    }
    app.assert_quiet(&mut sse).await;

    let mut orders = 0;
    let mut payments = 0;
    for id in &ids {
        let o = app.get(&format!("/api/order/{id}"), Some(&c.access)).await;
        let p = app
            .get(&format!("/api/payment/{id}"), Some(&c.access))
            .await;
        if o.status == 200 {
            orders += 1;
            assert!(succeeded.contains(id));
        } else {
            assert_eq!(o.status, 404);
        }
        if p.status == 200 {
            payments += 1;
            assert!(succeeded.contains(id));
            assert_eq!(
                p.json(),
                json!({"id": id, "currency_code": "NT", "amount": 100})
            );
        } else {
            assert_eq!(p.status, 404);
        }
    }
    assert_eq!((orders, payments), (3, 3));
}

struct Placed {
    customer: usize,
    id: u64,
    items: Vec<(u64, i64)>,
}

#[actix_rt::test]
async fn hundred_purchases_from_five_customers_conserve_stock() {
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let app = TestApp::spawn().await;
    let customers = join_all((0..5).map(|_| app.sign_up())).await;
    let mut products = Vec::new();
    for (name, price, stock) in [("a", 100, 40), ("b", 250, 30), ("c", 75, 25)] {
        products.push((app.create_product(name, price, stock).await, price, stock));
    }
    let price: HashMap<u64, i64> = products.iter().map(|(id, p, _)| (*id, *p)).collect();
    let initial: HashMap<u64, i64> = products.iter().map(|(id, _, s)| (*id, *s)).collect();

    let carts: Vec<(usize, Vec<(u64, i64)>)> = (0..100)
        .map(|_| {
            let customer = rng.random_range(0..5);
            let lines = rng.random_range(1..=2);
            let mut chosen: Vec<u64> = Vec::new();
            while chosen.len() < lines {
                let p = products[rng.random_range(0..products.len())].0;
                if !chosen.contains(&p) {
                    chosen.push(p);
                }
            }
            let items = chosen
                .into_iter()
                .map(|p| (p, rng.random_range(1..=3)))
                .collect();
            (customer, items)
        })
        .collect();
    let ids = join_all(
        carts
            .iter()
            .map(|(c, items)| app.purchase_ok(&customers[*c].access, items)),
    )
    .await;
    let placed: Vec<Placed> = carts
        .into_iter()
        .zip(ids)
        .map(|((customer, items), id)| Placed {
            customer,
            id,
            items,
        })
        .collect();
    let views = join_all(
        placed
            .iter()
            .map(|p| app.wait_finished(&customers[p.customer].access, p.id)),
    )
    .await;

    let mut taken: HashMap<u64, i64> = HashMap::new();
    let mut final_stock: HashMap<u64, i64> = HashMap::new();
    for (id, _, _) in &products {
        final_stock.insert(*id, app.inventory(*id).await);
    }
    let (mut ok, mut failed) = (0, 0);
    for (p, view) in placed.iter().zip(&views) {
        let token = &customers[p.customer].access;
        let order = app.get(&format!("/api/order/{}", p.id), Some(token)).await;
        let payment = app
            .get(&format!("/api/payment/{}", p.id), Some(token))
            .await;
        match view["status"].as_str().unwrap() {
            "SUCCEEDED" => {
                ok += 1;
                assert_eq!(view_steps(view), expected(&HAPPY_PATH));
                for (prod, n) in &p.items {
                    *taken.entry(*prod).or_default() += n;
                }
                assert_eq!(order.status, 200, "purchase {}", p.id);
                let mut want: Vec<(u64, i64)> = p.items.clone();
                want.sort_unstable();
                let got: Vec<(u64, i64)> = order.json()["purchased_items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| {
                        (
                            i["product_id"].as_u64().unwrap(),
                            i["amount"].as_i64().unwrap(),
                        )
                    })
                    .collect();
                assert_eq!(got, want, "order lines of {}", p.id);
                let amount: i64 = p.items.iter().map(|(prod, n)| price[prod] * n).sum();
                assert_eq!(payment.status, 200, "purchase {}", p.id);
                assert_eq!(
                    payment.json(),
                    json!({"id": p.id, "currency_code": "NT", "amount": amount})
                );
            }
            "ROLLED_BACK" => {
                failed += 1;
                assert_eq!(view_steps(view), expected(&INVENTORY_FAILURE));
                assert_eq!(order.status, 404, "purchase {}", p.id);
                assert_eq!(payment.status, 404, "purchase {}", p.id);
                // Stock only ever goes down here, so a refused cart must still not fit.
                assert!(
                    p.items.iter().any(|(prod, n)| *n > final_stock[prod]),
                    "purchase {} refused although {:?} fits into {final_stock:?}",
                    p.id,
                    p.items
                );
            }
            other => panic!("purchase {} ended {other}", p.id),
        }
    }
    assert_eq!(ok + failed, 100);
    for (id, _, _) in &products {
        let fin = final_stock[id];
        assert!(fin >= 0, "negative stock {fin}");
        assert_eq!(
            initial[id] - taken.get(id).copied().unwrap_or(0),
            fin,
            "product {id}"
        );
        assert_eq!(app.listed_inventory(*id).await, fin);
    }
    assert!(ok > 0, "nothing succeeded");
}

/// With one saga allowed in flight and that one stuck retrying a compensation, a new
/// purchase is refused with 503 and leaves no trace; once the saga ends, purchases flow again.
#[actix_rt::test]
async fn backpressure_refuses_purchases_with_503_when_sagas_are_full() {
    let app = TestApp::spawn_with(|c| {
        c.max_sagas_in_flight = 1;
        c.rollback_attempts = 2;
    })
    .await;
    let c1 = app.sign_up().await;
    let c2 = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 10).await;
    let p2 = app.create_product("product2", 100, 10).await;
    app.faults.fail_step(Step::CreatePayment, true);
    app.faults.fail_compensation(Step::CreateOrder, 1_000_000);
    let stuck = app.purchase_ok(&c1.access, &[(p1, 1)]).await;
    app.wait_status(&c1.access, stuck, "ROLLBACK_FAILED", WAIT)
        .await;

    let failures = app
        .faults
        .fired(Fault::CompensationFails(Step::CreateOrder));
    assert!(failures >= 2, "{failures} failures before ROLLBACK_FAILED");

    let mut sse2 = app.subscribe(&c2.access, None).await;
    for _ in 0..3 {
        let r = app.purchase(&c2.access, &[(p2, 2)]).await;
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json(), json!({"msg": "server busy"}));
    }
    assert_eq!(app.inventory(p2).await, 10);

    // The stuck saga completes; new purchases are accepted again.
    app.faults.fail_compensation(Step::CreateOrder, 0);
    app.faults.fail_step(Step::CreatePayment, false);
    app.wait_status(&c1.access, stuck, "ROLLED_BACK", WAIT)
        .await;
    assert_eq!(app.inventory(p1).await, 10);
    let accepted = eventually(WAIT, || async {
        let r = app.purchase(&c2.access, &[(p2, 2)]).await;
        if r.status != 201 {
            assert_eq!(r.status, 503);
        }
        r.json()["purchase_id"].as_u64()
    })
    .await;
    let id = accepted.expect("purchases accepted again once the saga finished");
    // The refused purchases left no trace: c2's stream, live and replayed from the start of
    // its step log, holds exactly the accepted purchase.
    let frames = sse2.take(6, WAIT).await;
    assert!(frames.iter().all(|f| result_of(f).0 == id), "{frames:?}");
    assert_eq!(steps_of(&frames, id), expected(&HAPPY_PATH));
    app.assert_quiet(&mut sse2).await;
    let mut replay = app.subscribe(&c2.access, Some(0)).await;
    let logged = replay.take(6 + 3, WAIT).await;
    assert_eq!(steps_of(&logged[..6], id), expected(&HAPPY_PATH));
    let marker = app.markers()[0];
    assert_eq!(steps_of(&logged[6..], marker), expected(&INVENTORY_FAILURE));
    app.assert_quiet(&mut replay).await;
    assert_eq!(app.inventory(p2).await, 8);
}

/// Product pages read while sagas change the stock must not keep a stale inventory once the
/// sagas are done (a cached read racing a stock change must not outlive it).
#[actix_rt::test]
async fn product_page_is_not_stale_after_concurrent_purchases() {
    const ROUNDS: usize = 5;
    const READERS: usize = 4;
    let app = TestApp::spawn().await;
    let c = app.sign_up().await;
    let p = app.create_product("hot", 10, 1_000).await;
    let done = std::cell::Cell::new(false);
    let reader = || async {
        let mut reads = 0u32;
        while !done.get() {
            let r = app.get(&format!("/api/product/{p}"), None).await;
            assert_eq!(r.status, 200);
            reads += 1;
        }
        reads
    };
    let buyer = async {
        let one: &[(u64, i64)] = &[(p, 1)];
        for _ in 0..ROUNDS {
            let ids = join_all((0..10).map(|_| app.purchase_ok(&c.access, one))).await;
            for id in ids {
                assert_eq!(
                    app.wait_finished(&c.access, id).await["status"],
                    "SUCCEEDED"
                );
            }
        }
        done.set(true);
    };
    let readers = join_all((0..READERS).map(|_| reader()));
    let (reads, ()) = futures_util::future::join(readers, buyer).await;
    assert!(reads.iter().all(|n| *n > 0));
    assert_eq!(app.listed_inventory(p).await, 1_000 - 10 * ROUNDS as i64);
    assert_eq!(
        app.inventory(p).await,
        1_000 - 10 * ROUNDS as i64,
        "product page shows a stale inventory"
    );
}
