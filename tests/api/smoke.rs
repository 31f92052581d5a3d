//! The README's walkthrough, end to end, on the embedded default.

use std::time::Duration;

use crate::support::*;
use serde_json::json;

#[actix_rt::test]
async fn readme_walkthrough_purchase_succeeds_and_streams_six_events() {
    let app = TestApp::spawn().await;
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 1000).await;
    let mut sse = app.subscribe(&c.access, None).await;
    let purchase = app.purchase_ok(&c.access, &[(p1, 2)]).await;
    let frames = sse.take(6, Duration::from_secs(10)).await;
    assert_eq!(steps_of(&frames, purchase), expected(&HAPPY_PATH));
    let order = app
        .get(&format!("/api/order/{purchase}"), Some(&c.access))
        .await;
    assert_eq!(
        order.json(),
        json!({"id": purchase, "purchased_items": [{"product_id": p1, "name": "product1", "description": "product1 description", "brand_name": "mingbrand", "price": 100, "amount": 2}]})
    );
    let payment = app
        .get(&format!("/api/payment/{purchase}"), Some(&c.access))
        .await;
    assert_eq!(
        payment.json(),
        json!({"id": purchase, "currency_code": "NT", "amount": 200})
    );
    assert_eq!(app.inventory(p1).await, 998);
}
