//! The whole API on MySQL/MariaDB: the same purchase flows as on the embedded default, with
//! every service database on the local MariaDB (fresh databases per run, dropped after).
//! In CI (`CI` set) an unreachable MariaDB fails; elsewhere the test says it did not run.

use std::time::Duration;

use crate::support::mariadb::Databases;
use crate::support::*;
use sagashop::domain::purchase::Step;

#[actix_rt::test]
async fn purchases_succeed_and_compensate_on_mariadb() {
    // Declared before the app, so the app stops before its databases are dropped.
    let Some(databases) = Databases::create("api").await else {
        return;
    };
    let app = TestApp::spawn_with(|c| {
        databases.configure(&mut c.databases);
        c.jwt_secret = Some("mariadb-test-secret".into());
    })
    .await;

    let c = app.sign_up().await;
    let p = app.create_product("naïve ☕", 100, 10).await;
    let mut sse = app.subscribe(&c.access, None).await;

    let ok = app.purchase_ok(&c.access, &[(p, 2)]).await;
    let frames = sse.take(6, Duration::from_secs(10)).await;
    assert_eq!(steps_of(&frames, ok), expected(&HAPPY_PATH));
    let order = app
        .get(&format!("/api/order/{ok}"), Some(&c.access))
        .await
        .json();
    assert_eq!(order["purchased_items"][0]["name"], "naïve ☕");
    assert_eq!(
        app.get(&format!("/api/payment/{ok}"), Some(&c.access))
            .await
            .json()["amount"],
        200
    );

    let short = app.purchase_ok(&c.access, &[(p, 9)]).await;
    let frames = sse.take(3, Duration::from_secs(10)).await;
    assert_eq!(steps_of(&frames, short), expected(&INVENTORY_FAILURE));

    app.faults.fail_step(Step::CreatePayment, true);
    let failed = app.purchase_ok(&c.access, &[(p, 3)]).await;
    assert_eq!(
        app.wait_status(&c.access, failed, "ROLLED_BACK", Duration::from_secs(20))
            .await["status"],
        "ROLLED_BACK"
    );
    assert_eq!(
        app.get(&format!("/api/order/{failed}"), Some(&c.access))
            .await
            .status,
        404
    );
    assert_eq!(app.inventory(p).await, 8);
    assert_eq!(app.faults.fired(Fault::StepFails(Step::CreatePayment)), 1);
}
