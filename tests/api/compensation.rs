//! Compensation as the customer sees it (API.md "Deliberately better" 1): a failing step is
//! reported once, then every completed step is rolled back in reverse order, each ROLLBACKED
//! sent only after it committed; a compensation past its retry budget is reported as
//! STATUS_ROLLBACK_FAIL once and retried until it succeeds.

use std::time::Duration;

use crate::support::*;
use sagashop::domain::purchase::Step;

const WAIT: Duration = Duration::from_secs(10);

/// Runs one purchase with `failing` refused and checks stream, status and effects.
async fn failing_step_is_compensated(failing: Step, name: &str) {
    let app = TestApp::spawn().await;
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 10).await;
    let p2 = app.create_product("product2", 40, 5).await;
    app.faults.fail_step(failing, true);
    let mut sse = app.subscribe(&c.access, None).await;
    let purchase = app.purchase_ok(&c.access, &[(p1, 3), (p2, 1)]).await;
    let want = compensation_path(name);
    let frames = sse.take(want.len(), WAIT).await;
    assert_eq!(steps_of(&frames, purchase), want);
    let ids: Vec<u64> = frames.iter().map(|f| f.event_id().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let view = app.wait_finished(&c.access, purchase).await;
    assert_eq!(view["status"], "ROLLED_BACK");
    assert_eq!(view_steps(&view), want);
    app.assert_quiet(&mut sse).await;
    assert_eq!(app.faults.fired(Fault::StepFails(failing)), 1);
    assert_eq!(app.inventory(p1).await, 10);
    assert_eq!(app.inventory(p2).await, 5);
    assert_eq!(app.listed_inventory(p1).await, 10);
    assert_eq!(app.listed_inventory(p2).await, 5);
    assert_no_order_nor_payment(&app, &c.access, purchase).await;

    // The shop keeps working once the fault is gone.
    app.faults.fail_step(failing, false);
    let ok = app.purchase_ok(&c.access, &[(p1, 1)]).await;
    let frames = sse.take(6, WAIT).await;
    assert_eq!(steps_of(&frames, ok), expected(&HAPPY_PATH));
    assert_eq!(app.inventory(p1).await, 9);
}

#[actix_rt::test]
async fn payment_failure_rolls_back_order_and_inventory() {
    failing_step_is_compensated(Step::CreatePayment, "CREATE_PAYMENT").await;
}

#[actix_rt::test]
async fn order_failure_rolls_back_inventory() {
    failing_step_is_compensated(Step::CreateOrder, "CREATE_ORDER").await;
}

#[actix_rt::test]
async fn refused_inventory_step_gives_the_inventory_failure_sequence() {
    let app = TestApp::spawn().await;
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 10).await;
    app.faults.fail_step(Step::UpdateProductInventory, true);
    let mut sse = app.subscribe(&c.access, None).await;
    let purchase = app.purchase_ok(&c.access, &[(p1, 3)]).await;
    app.expect_refused_at_inventory(&mut sse, &c.access, purchase)
        .await;
    // The purchase, then the quiet check's marker purchase.
    assert_eq!(
        app.faults
            .fired(Fault::StepFails(Step::UpdateProductInventory)),
        2
    );
    assert_eq!(app.inventory(p1).await, 10);
    assert_no_order_nor_payment(&app, &c.access, purchase).await;
}

/// With the payment step refused and the order's compensation failing `failures` times:
/// the stream and the step log tell `want`, the purchase ends ROLLED_BACK, nothing follows,
/// and both faults fired as often as injected.
async fn payment_refused_and_rolled_back(
    app: &TestApp,
    sse: &mut SseStream,
    token: &str,
    purchase: u64,
    want: &[(String, String)],
    failures: u64,
) {
    let frames = sse.take(want.len(), DEADLINE).await;
    assert_eq!(steps_of(&frames, purchase), want);
    let view = app.wait_finished(token, purchase).await;
    assert_eq!(view["status"], "ROLLED_BACK");
    assert_eq!(view_steps(&view), want);
    app.assert_quiet(sse).await;
    assert_eq!(app.faults.fired(Fault::StepFails(Step::CreatePayment)), 1);
    let compensation = Fault::CompensationFails(Step::CreateOrder);
    assert_eq!(app.faults.fired(compensation), failures);
}

/// A compensation that fails fewer times than its budget is simply retried: the customer
/// sees the ordinary compensation sequence, no STATUS_ROLLBACK_FAIL.
#[actix_rt::test]
async fn compensation_errors_within_budget_are_invisible() {
    let app = TestApp::spawn_with(|c| c.rollback_attempts = 4).await;
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 10).await;
    app.faults.fail_step(Step::CreatePayment, true);
    app.faults.fail_compensation(Step::CreateOrder, 3);
    let mut sse = app.subscribe(&c.access, None).await;
    let purchase = app.purchase_ok(&c.access, &[(p1, 2)]).await;
    let want = compensation_path("CREATE_PAYMENT");
    payment_refused_and_rolled_back(&app, &mut sse, &c.access, purchase, &want, 3).await;
    assert_eq!(app.inventory(p1).await, 10);
    assert_no_order_nor_payment(&app, &c.access, purchase).await;
}

fn rollback_fail_path() -> Vec<(String, String)> {
    let mut want = expected(&HAPPY_PATH[..5]);
    want.extend(expected(&[
        ("CREATE_PAYMENT", "STATUS_FAILED"),
        ("CREATE_PAYMENT", "STATUS_ROLLBACKED"),
        ("CREATE_ORDER", "STATUS_ROLLBACK_FAIL"),
        ("CREATE_ORDER", "STATUS_ROLLBACKED"),
        ("UPDATE_PRODUCT_INVENTORY", "STATUS_ROLLBACKED"),
    ]));
    want
}

/// The budget runs out, the customer is told once, the retries continue and finally succeed.
#[actix_rt::test]
async fn exhausted_compensation_reports_rollback_fail_once_then_recovers() {
    let app = TestApp::spawn_with(|c| c.rollback_attempts = 2).await;
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 10).await;
    app.faults.fail_step(Step::CreatePayment, true);
    app.faults.fail_compensation(Step::CreateOrder, 7);
    let mut sse = app.subscribe(&c.access, None).await;
    let purchase = app.purchase_ok(&c.access, &[(p1, 2)]).await;
    let want = rollback_fail_path();
    payment_refused_and_rolled_back(&app, &mut sse, &c.access, purchase, &want, 7).await;
    assert_eq!(app.inventory(p1).await, 10);
    assert_eq!(app.listed_inventory(p1).await, 10);
    assert_no_order_nor_payment(&app, &c.access, purchase).await;
}

/// While the compensation keeps failing the purchase shows ROLLBACK_FAILED, the stream has
/// said STATUS_ROLLBACK_FAIL exactly once, and the order is still there (nothing is claimed
/// rolled back before it is). Once the fault clears, the rollback completes.
#[actix_rt::test]
async fn purchase_shows_rollback_failed_while_compensation_keeps_failing() {
    let app = TestApp::spawn_with(|c| c.rollback_attempts = 2).await;
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 10).await;
    app.faults.fail_step(Step::CreatePayment, true);
    app.faults.fail_compensation(Step::CreateOrder, 1_000_000);
    let mut sse = app.subscribe(&c.access, None).await;
    let purchase = app.purchase_ok(&c.access, &[(p1, 2)]).await;
    let want = rollback_fail_path();
    let frames = sse.take(8, WAIT).await;
    assert_eq!(steps_of(&frames, purchase), want[..8].to_vec());
    let view = app
        .wait_status(&c.access, purchase, "ROLLBACK_FAILED", WAIT)
        .await;
    assert_eq!(view_steps(&view), want[..8].to_vec());
    // Retries go on (three more failed attempts) without another event.
    let failures = app
        .faults
        .fired(Fault::CompensationFails(Step::CreateOrder));
    assert!(failures >= 2, "{failures} failures before ROLLBACK_FAILED");
    app.wait_fired(Fault::CompensationFails(Step::CreateOrder), failures + 3)
        .await;
    app.assert_quiet(&mut sse).await;
    let view = app.purchase_view(&c.access, purchase).await;
    assert_eq!(view["status"], "ROLLBACK_FAILED");
    assert_eq!(view_steps(&view).len(), 8);
    // Not rolled back yet: the order and the reserved stock are still in place.
    let order = app
        .get(&format!("/api/order/{purchase}"), Some(&c.access))
        .await;
    assert_eq!(order.status, 200);
    assert_eq!(app.inventory(p1).await, 8);

    app.faults.fail_compensation(Step::CreateOrder, 0);
    let rest = sse.take(2, WAIT).await;
    assert_eq!(steps_of(&rest, purchase), want[8..].to_vec());
    let view = app.wait_finished(&c.access, purchase).await;
    assert_eq!(view["status"], "ROLLED_BACK");
    assert_eq!(view_steps(&view), want);
    app.assert_quiet(&mut sse).await;
    assert_eq!(app.inventory(p1).await, 10);
    assert_no_order_nor_payment(&app, &c.access, purchase).await;
}
