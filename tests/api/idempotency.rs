//! Idempotent steps and durable sagas (API.md "Deliberately better" 2 and 3): every command
//! delivered twice, or the saga actor crashing, must change nothing the customer can see.

use std::time::Duration;

use crate::support::*;
use sagashop::domain::purchase::Step;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

/// A successful two-item purchase: exactly six events, one order, one payment, stock once.
async fn succeeds_exactly_once(app: &TestApp) {
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 20).await;
    let p2 = app.create_product("product2", 30, 9).await;
    let mut sse = app.subscribe(&c.access, None).await;
    let purchase = app.purchase_ok(&c.access, &[(p1, 2), (p2, 3)]).await;
    let frames = sse.take(6, WAIT).await;
    assert_eq!(steps_of(&frames, purchase), expected(&HAPPY_PATH));
    let view = app.wait_finished(&c.access, purchase).await;
    assert_eq!(view["status"], "SUCCEEDED");
    assert_eq!(view_steps(&view), expected(&HAPPY_PATH));
    app.assert_quiet(&mut sse).await;
    assert_eq!(app.inventory(p1).await, 18);
    assert_eq!(app.inventory(p2).await, 6);
    assert_eq!(app.listed_inventory(p1).await, 18);
    assert_eq!(app.listed_inventory(p2).await, 6);
    let order = app
        .get(&format!("/api/order/{purchase}"), Some(&c.access))
        .await;
    assert_eq!(order.status, 200);
    let order = order.json();
    let lines: Vec<(u64, i64)> = order["purchased_items"]
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
    assert_eq!(lines, vec![(p1, 2), (p2, 3)], "order lines not doubled");
    let payment = app
        .get(&format!("/api/payment/{purchase}"), Some(&c.access))
        .await;
    assert_eq!(
        payment.json(),
        json!({"id": purchase, "currency_code": "NT", "amount": 290})
    );
}

#[actix_rt::test]
async fn duplicate_delivery_success_applies_every_step_once() {
    let app = TestApp::spawn().await;
    app.faults.duplicate_deliveries(true);
    succeeds_exactly_once(&app).await;
    // Each of the three steps at least (the quiet check's marker adds its own).
    assert!(app.faults.fired(Fault::DuplicateDelivery) >= 3);
}

async fn duplicate_delivery_compensation(failing: Step, name: &str) {
    let app = TestApp::spawn().await;
    app.faults.duplicate_deliveries(true);
    app.faults.fail_step(failing, true);
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 20).await;
    let mut sse = app.subscribe(&c.access, None).await;
    let purchase = app.purchase_ok(&c.access, &[(p1, 4)]).await;
    let want = compensation_path(name);
    let frames = sse.take(want.len(), WAIT).await;
    assert_eq!(steps_of(&frames, purchase), want);
    let view = app.wait_finished(&c.access, purchase).await;
    assert_eq!(view["status"], "ROLLED_BACK");
    app.assert_quiet(&mut sse).await;
    // restored exactly once: the original stock, not more
    assert_eq!(app.inventory(p1).await, 20);
    assert_eq!(app.listed_inventory(p1).await, 20);
    assert_no_order_nor_payment(&app, &c.access, purchase).await;
    assert_eq!(
        app.faults.fired(Fault::StepFails(failing)),
        2,
        "delivered twice"
    );
    assert!(app.faults.fired(Fault::DuplicateDelivery) >= 2);
}

#[actix_rt::test]
async fn duplicate_delivery_payment_failure_restores_stock_once() {
    duplicate_delivery_compensation(Step::CreatePayment, "CREATE_PAYMENT").await;
}

#[actix_rt::test]
async fn duplicate_delivery_order_failure_restores_stock_once() {
    duplicate_delivery_compensation(Step::CreateOrder, "CREATE_ORDER").await;
}

#[actix_rt::test]
async fn duplicate_delivery_insufficient_stock_changes_nothing() {
    let app = TestApp::spawn().await;
    app.faults.duplicate_deliveries(true);
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 3).await;
    let mut sse = app.subscribe(&c.access, None).await;
    let purchase = app.purchase_ok(&c.access, &[(p1, 4)]).await;
    app.expect_refused_at_inventory(&mut sse, &c.access, purchase)
        .await;
    assert!(app.faults.fired(Fault::DuplicateDelivery) >= 1);
    assert_eq!(app.inventory(p1).await, 3);
    // and a purchase that fits still succeeds exactly once
    let ok = app.purchase_ok(&c.access, &[(p1, 3)]).await;
    let frames = sse.take(6, WAIT).await;
    assert_eq!(steps_of(&frames, ok), expected(&HAPPY_PATH));
    assert_eq!(
        app.wait_finished(&c.access, ok).await["status"],
        "SUCCEEDED"
    );
    assert_eq!(app.inventory(p1).await, 0);
}

#[actix_rt::test]
async fn saga_actor_crash_is_restarted_without_duplicates() {
    let app = TestApp::spawn().await;
    app.faults.panic_sagas(1);
    succeeds_exactly_once(&app).await;
    assert_eq!(app.faults.fired(Fault::SagaPanic), 1);
}

#[actix_rt::test]
async fn repeated_saga_actor_crashes_still_finish_once() {
    let app = TestApp::spawn().await;
    app.faults.panic_sagas(3);
    succeeds_exactly_once(&app).await;
    assert_eq!(app.faults.fired(Fault::SagaPanic), 3);
}

#[actix_rt::test]
async fn crash_and_duplicate_delivery_during_compensation() {
    let app = TestApp::spawn().await;
    app.faults.duplicate_deliveries(true);
    app.faults.fail_step(Step::CreatePayment, true);
    app.faults.panic_sagas(2);
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 20).await;
    let mut sse = app.subscribe(&c.access, None).await;
    let purchase = app.purchase_ok(&c.access, &[(p1, 5)]).await;
    let want = compensation_path("CREATE_PAYMENT");
    let frames = sse.take(want.len(), WAIT).await;
    assert_eq!(steps_of(&frames, purchase), want);
    assert_eq!(
        app.wait_finished(&c.access, purchase).await["status"],
        "ROLLED_BACK"
    );
    app.assert_quiet(&mut sse).await;
    assert_eq!(app.inventory(p1).await, 20);
    assert_no_order_nor_payment(&app, &c.access, purchase).await;
    assert_eq!(app.faults.fired(Fault::SagaPanic), 2);
    assert!(app.faults.fired(Fault::StepFails(Step::CreatePayment)) >= 1);
    assert!(app.faults.fired(Fault::DuplicateDelivery) >= 1);
}
