//! Participants batch step commands: with the payment step held, many sagas pile up in
//! flight; once released, the whole backlog runs in batches (one transaction each) and every
//! saga ends exactly as it would alone.

use crate::support::*;
use sagashop::domain::purchase::Step;

#[actix_rt::test]
async fn a_held_backlog_completes_exactly_once_when_released() {
    let app = TestApp::spawn_with(|c| c.step_timeout_ms = 60_000).await;
    let c = app.sign_up().await;
    let p = app.create_product("batched", 10, 1_000).await;
    let mut sse = app.subscribe(&c.access, None).await;
    app.faults.hold_step(Step::CreatePayment, true);

    let cart: &[(u64, i64)] = &[(p, 2)];
    let ids =
        futures_util::future::join_all((0..40).map(|_| app.purchase_ok(&c.access, cart))).await;
    // Every saga reaches the payment step and waits there: 5 events each, then nothing.
    let before = sse.take(40 * 5, DEADLINE).await;
    app.wait_fired(Fault::StepHeld(Step::CreatePayment), 40)
        .await;
    app.assert_quiet(&mut sse).await;
    for id in &ids {
        assert_eq!(
            steps_of(&before, *id),
            expected(&HAPPY_PATH[..5]),
            "purchase {id}"
        );
        let view = app.purchase_view(&c.access, *id).await;
        assert_eq!(view["status"], "PENDING");
        assert_eq!(
            app.get(&format!("/api/payment/{id}"), Some(&c.access))
                .await
                .status,
            404
        );
    }
    assert_eq!(
        app.inventory(p).await,
        1_000 - 80,
        "stock is taken before the payment step"
    );

    app.faults.hold_step(Step::CreatePayment, false);
    let after = sse.take(40, DEADLINE).await;
    app.assert_quiet(&mut sse).await;
    assert_eq!(app.faults.fired(Fault::StepHeld(Step::CreatePayment)), 40);
    for id in &ids {
        assert_eq!(
            steps_of(&after, *id),
            expected(&HAPPY_PATH[5..]),
            "purchase {id}"
        );
        assert_eq!(
            app.wait_finished(&c.access, *id).await["status"],
            "SUCCEEDED"
        );
        let payment = app
            .get(&format!("/api/payment/{id}"), Some(&c.access))
            .await;
        assert_eq!(payment.json()["amount"], 20);
    }
    assert_eq!(app.inventory(p).await, 1_000 - 80);
}

#[actix_rt::test]
async fn a_participant_that_panics_keeps_serving_and_the_saga_completes() {
    let app = TestApp::spawn().await;
    let c = app.sign_up().await;
    let p = app.create_product("sturdy", 10, 100).await;
    app.faults.panic_participant(Step::CreateOrder, 2);
    let id = app.purchase_ok(&c.access, &[(p, 1)]).await;
    assert_eq!(
        app.wait_finished(&c.access, id).await["status"],
        "SUCCEEDED"
    );
    let order = app.get(&format!("/api/order/{id}"), Some(&c.access)).await;
    assert_eq!(order.json()["purchased_items"][0]["amount"], 1);
    // The participant is still alive for the next purchase.
    let next = app.purchase_ok(&c.access, &[(p, 1)]).await;
    assert_eq!(
        app.wait_finished(&c.access, next).await["status"],
        "SUCCEEDED"
    );
    assert_eq!(app.inventory(p).await, 98);
    assert_eq!(
        app.faults.fired(Fault::ParticipantPanic(Step::CreateOrder)),
        2
    );
}
