//! Purchase API, saga outcomes and the SSE result stream, black-box over HTTP
//! (ORIGINAL.md §16 items 26-49, as adjusted by API.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;
use futures_util::future::join;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn body_text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn assert_msg(r: &Reply, status: u16, msg: &str) {
    assert_eq!(r.status, status, "body: {}", body_text(r));
    assert_eq!(r.json(), json!({ "msg": msg }));
}

fn nt(items: Value) -> Value {
    json!({"purchase_items": items, "payment": {"currency_code": "NT"}})
}

// ---------------------------------------------------------------- synchronous API

pub(crate) async fn unauthenticated_purchase_and_result_are_401_with_empty_body(app: &Api) {
    let p = app.create_product("p", 100, 10).await;
    let r = app
        .post(
            "/api/purchase",
            None,
            &nt(json!([{"product_id": p, "amount": 1}])),
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.body.is_empty(), "body: {}", body_text(&r));
    let r = app.get("/api/purchase/result", None).await;
    assert_eq!(r.status, 401);
    assert!(r.body.is_empty());
    let r = app
        .call_with_headers(
            "GET",
            "/api/purchase/result",
            &[("Accept", "text/event-stream")],
            None,
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.body.is_empty());
    let r = app
        .post(
            "/api/purchase",
            Some("not-a-token"),
            &nt(json!([{"product_id": p, "amount": 1}])),
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.body.is_empty());
    assert_eq!(app.inventory(p).await, 10);
}

pub(crate) async fn create_purchase_answers_201_with_purchase_id_only(app: &Api) {
    let c = app.sign_up().await;
    let p = app.create_product("p", 100, 10).await;
    let r = app
        .post(
            "/api/purchase",
            Some(&c.access),
            &nt(json!([{"product_id": p, "amount": 1}])),
        )
        .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    let j = r.json();
    let obj = j.as_object().unwrap();
    assert_eq!(obj.len(), 1, "{j}");
    let id = j["purchase_id"]
        .as_u64()
        .expect("purchase_id is a u64 number");
    assert!(id > 0);
    // The id names a purchase of this customer.
    let view = app.wait_finished(&c.access, id).await;
    assert_eq!(view["status"], "SUCCEEDED");
}

pub(crate) async fn non_positive_amount_is_400_even_for_unknown_products(app: &Api) {
    let c = app.sign_up().await;
    let p = app.create_product("p", 100, 10).await;
    for amount in [0, -1] {
        for product in [p, 1] {
            let r = app
                .post(
                    "/api/purchase",
                    Some(&c.access),
                    &nt(json!([{"product_id": product, "amount": amount}])),
                )
                .await;
            assert_msg(&r, 400, "invalid parameter");
        }
        // one bad line among good ones
        let r = app
            .post(
                "/api/purchase",
                Some(&c.access),
                &nt(json!([{"product_id": p, "amount": 1}, {"product_id": 1, "amount": amount}])),
            )
            .await;
        assert_msg(&r, 400, "invalid parameter");
    }
    assert_eq!(app.inventory(p).await, 10);
}

pub(crate) async fn empty_missing_or_null_items_are_400(app: &Api) {
    let c = app.sign_up().await;
    let bodies = [
        r#"{"purchase_items":[],"payment":{"currency_code":"NT"}}"#,
        r#"{"payment":{"currency_code":"NT"}}"#,
        r#"{"purchase_items":null,"payment":{"currency_code":"NT"}}"#,
        "null",
        "{}",
        "",
        "not json",
    ];
    for body in bodies {
        let r = app
            .call("POST", "/api/purchase", Some(&c.access), Some(body))
            .await;
        assert_eq!(r.status, 400, "body {body:?} -> {}", body_text(&r));
        assert_eq!(
            r.json(),
            json!({"msg": "invalid parameter"}),
            "body {body:?}"
        );
    }
}

pub(crate) async fn unknown_product_is_404_and_no_event_follows(app: &Api) {
    let c = app.sign_up().await;
    let p = app.create_product("p", 100, 10).await;
    let mut sse = app.subscribe(&c.access, None).await;
    let cases = [
        json!([{"product_id": 1, "amount": 1}]),
        json!([{"amount": 1}]),
        json!([{"product_id": 0, "amount": 1}]),
        json!([{"product_id": p, "amount": 1}, {"product_id": 1, "amount": 1}]),
        // a u64 id above what the store holds names nothing
        json!([{"product_id": u64::MAX, "amount": 1}]),
    ];
    for items in cases {
        let r = app
            .post("/api/purchase", Some(&c.access), &nt(items.clone()))
            .await;
        assert_msg(&r, 404, "product not found");
    }
    app.assert_quiet(&mut sse).await;
    assert_eq!(app.inventory(p).await, 10);
}

pub(crate) async fn currency_must_be_exactly_nt_or_us(app: &Api) {
    let c = app.sign_up().await;
    let p = app.create_product("p", 100, 10).await;
    let items = json!([{"product_id": p, "amount": 1}]);
    for payment in [
        json!({"currency_code": "EUR"}),
        json!({"currency_code": "nt"}),
        json!({"currency_code": "us"}),
        json!({"currency_code": ""}),
        json!({}),
    ] {
        let r = app
            .post(
                "/api/purchase",
                Some(&c.access),
                &json!({"purchase_items": items, "payment": payment}),
            )
            .await;
        assert_msg(&r, 400, "invalid parameter");
    }
    let r = app
        .post(
            "/api/purchase",
            Some(&c.access),
            &json!({"purchase_items": items, "payment": {"currency_code": "US"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    let id = r.json()["purchase_id"].as_u64().unwrap();
    app.wait_finished(&c.access, id).await;
    let pay = app
        .get(&format!("/api/payment/{id}"), Some(&c.access))
        .await;
    assert_eq!(pay.status, 200);
    assert_eq!(
        pay.json(),
        json!({"id": id, "currency_code": "US", "amount": 100})
    );
    // only the accepted purchase took stock
    assert_eq!(app.inventory(p).await, 9);
}

/// API.md "Deliberately better" 6: the original panics (500, empty body).
pub(crate) async fn missing_payment_object_is_400_invalid_parameter(app: &Api) {
    let c = app.sign_up().await;
    let p = app.create_product("p", 100, 10).await;
    let mut sse = app.subscribe(&c.access, None).await;
    for body in [
        json!({"purchase_items": [{"product_id": p, "amount": 1}]}),
        json!({"purchase_items": [{"product_id": p, "amount": 1}], "payment": null}),
    ] {
        let r = app.post("/api/purchase", Some(&c.access), &body).await;
        assert_msg(&r, 400, "invalid parameter");
    }
    app.assert_quiet(&mut sse).await;
    assert_eq!(app.inventory(p).await, 10);
}

pub(crate) async fn wrong_methods_are_404(app: &Api) {
    let c = app.sign_up().await;
    let r = app.get("/api/purchase", Some(&c.access)).await;
    assert_eq!(r.status, 404);
    let r = app
        .call("POST", "/api/purchase/result", Some(&c.access), Some("{}"))
        .await;
    assert_eq!(r.status, 404);
}

pub(crate) async fn result_without_stream_accept_is_json_null(app: &Api) {
    let c = app.sign_up().await;
    let auth = format!("Bearer {}", c.access);
    let cases: [&[(&str, &str)]; 4] = [
        &[("Authorization", &auth)],
        &[("Authorization", &auth), ("Accept", "application/json")],
        &[("Authorization", &auth), ("Accept", "*/*")],
        &[
            ("Authorization", &auth),
            ("Accept", "application/json, text/event-stream"),
        ],
    ];
    for headers in cases {
        let r = app
            .call_with_headers("GET", "/api/purchase/result", headers, None)
            .await;
        assert_eq!(r.status, 200, "{headers:?}");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json; charset=utf-8"),
            "{headers:?}"
        );
        assert_eq!(body_text(&r).trim(), "null", "{headers:?}");
    }
}

// ---------------------------------------------------------------- saga and SSE

/// Checks a result frame's wire shape and returns its parsed data.
fn check_frame(f: &SseFrame, purchase_id: u64) -> Value {
    assert_eq!(f.event.as_deref(), Some("data"), "{f:?}");
    assert!(f.event_id().is_some(), "result frame without id: {}", f.raw);
    let v: Value = serde_json::from_str(&f.data).unwrap();
    let ts = v["timestamp"].as_i64().expect("integer timestamp");
    assert!((ts - now_secs()).abs() <= 5, "timestamp {ts} not near now");
    // exact key order: purchase_id, step, status, timestamp
    assert_eq!(
        f.data,
        format!(
            "{{\"purchase_id\":{},\"step\":\"{}\",\"status\":\"{}\",\"timestamp\":{}}}",
            purchase_id,
            v["step"].as_str().unwrap(),
            v["status"].as_str().unwrap(),
            ts
        )
    );
    v
}

fn assert_ids_increase(frames: &[SseFrame]) {
    let ids: Vec<u64> = frames.iter().map(|f| f.event_id().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {ids:?}"
    );
}

pub(crate) async fn stream_headers_and_happy_path_six_events(app: &Api) {
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 1000).await;
    let mut sse = app.subscribe(&c.access, None).await;
    let header = |n: &str| sse.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        header("content-type").as_deref(),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
    assert_eq!(header("access-control-allow-origin").as_deref(), Some("*"));

    let purchase = app.purchase_ok(&c.access, &[(p1, 2)]).await;
    let frames = sse.take(6, WAIT).await;
    for f in &frames {
        check_frame(f, purchase);
    }
    assert_eq!(steps_of(&frames, purchase), expected(&HAPPY_PATH));
    assert_ids_increase(&frames);
    app.assert_quiet(&mut sse).await;
}

pub(crate) async fn success_effects_order_payment_and_stock(app: &Api) {
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 1000).await;
    let purchase = app.purchase_ok(&c.access, &[(p1, 2)]).await;
    let view = app.wait_finished(&c.access, purchase).await;
    assert_eq!(view["status"], "SUCCEEDED");
    let order = app
        .get(&format!("/api/order/{purchase}"), Some(&c.access))
        .await;
    assert_eq!(order.status, 200);
    assert_eq!(
        order.json(),
        json!({"id": purchase, "purchased_items": [{"product_id": p1, "name": "product1", "description": "product1 description", "brand_name": "mingbrand", "price": 100, "amount": 2}]})
    );
    let payment = app
        .get(&format!("/api/payment/{purchase}"), Some(&c.access))
        .await;
    assert_eq!(payment.status, 200);
    assert_eq!(
        payment.json(),
        json!({"id": purchase, "currency_code": "NT", "amount": 200})
    );
    assert_eq!(app.inventory(p1).await, 998);
    assert_eq!(app.listed_inventory(p1).await, 998);
    // ids coincide (item 49)
    assert_eq!(order.json()["id"], payment.json()["id"]);
    assert_eq!(order.json()["id"].as_u64(), Some(purchase));
}

pub(crate) async fn multi_item_amount_and_sorted_order_items(app: &Api) {
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 50).await;
    let p2 = app.create_product("product2", 250, 60).await;
    assert!(p1 < p2);
    // sent in descending id order: the order must list them ascending
    let purchase = app.purchase_ok(&c.access, &[(p2, 2), (p1, 3)]).await;
    assert_eq!(
        app.wait_finished(&c.access, purchase).await["status"],
        "SUCCEEDED"
    );
    let payment = app
        .get(&format!("/api/payment/{purchase}"), Some(&c.access))
        .await;
    assert_eq!(
        payment.json(),
        json!({"id": purchase, "currency_code": "NT", "amount": 800})
    );
    let order = app
        .get(&format!("/api/order/{purchase}"), Some(&c.access))
        .await
        .json();
    let items = order["purchased_items"].as_array().unwrap();
    let lines: Vec<(u64, i64, i64)> = items
        .iter()
        .map(|i| {
            (
                i["product_id"].as_u64().unwrap(),
                i["price"].as_i64().unwrap(),
                i["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines, vec![(p1, 100, 3), (p2, 250, 2)]);
    assert_eq!(app.inventory(p1).await, 47);
    assert_eq!(app.inventory(p2).await, 58);
    assert_eq!(app.listed_inventory(p1).await, 47);
    assert_eq!(app.listed_inventory(p2).await, 58);
}

pub(crate) async fn insufficient_inventory_three_events_and_nothing_else(app: &Api) {
    let c = app.sign_up().await;
    let p3 = app.create_product("product3", 100, 5).await;
    let mut sse = app.subscribe(&c.access, None).await;
    let purchase = app.purchase_ok(&c.access, &[(p3, 6)]).await;
    let frames = sse.take(3, WAIT).await;
    for f in &frames {
        check_frame(f, purchase);
    }
    assert_eq!(steps_of(&frames, purchase), expected(&INVENTORY_FAILURE));
    assert_ids_increase(&frames);
    let view = app.wait_finished(&c.access, purchase).await;
    assert_eq!(view["status"], "ROLLED_BACK");
    app.assert_quiet(&mut sse).await;
    assert_no_order_nor_payment(app, &c.access, purchase).await;
    assert_eq!(app.inventory(p3).await, 5);
    assert_eq!(app.listed_inventory(p3).await, 5);
}

pub(crate) async fn exact_inventory_succeeds_then_one_more_fails(app: &Api) {
    let c = app.sign_up().await;
    let p4 = app.create_product("product4", 10, 2).await;
    let mut sse = app.subscribe(&c.access, None).await;
    let first = app.purchase_ok(&c.access, &[(p4, 2)]).await;
    let frames = sse.take(6, WAIT).await;
    assert_eq!(steps_of(&frames, first), expected(&HAPPY_PATH));
    assert_eq!(
        app.wait_finished(&c.access, first).await["status"],
        "SUCCEEDED"
    );
    assert_eq!(app.inventory(p4).await, 0);
    let second = app.purchase_ok(&c.access, &[(p4, 1)]).await;
    app.expect_refused_at_inventory(&mut sse, &c.access, second)
        .await;
    assert_eq!(app.inventory(p4).await, 0);
    assert_eq!(app.listed_inventory(p4).await, 0);
    assert_no_order_nor_payment(app, &c.access, second).await;
}

pub(crate) async fn duplicate_product_lines_fail_at_inventory(app: &Api) {
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 1000).await;
    let mut sse = app.subscribe(&c.access, None).await;
    let purchase = app.purchase_ok(&c.access, &[(p1, 1), (p1, 1)]).await;
    app.expect_refused_at_inventory(&mut sse, &c.access, purchase)
        .await;
    assert_eq!(app.inventory(p1).await, 1000);
    assert_eq!(app.listed_inventory(p1).await, 1000);
    assert_no_order_nor_payment(app, &c.access, purchase).await;
}

pub(crate) async fn customers_only_see_their_own_results(app: &Api) {
    let c1 = app.sign_up().await;
    let c2 = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 1000).await;
    let mut s1 = app.subscribe(&c1.access, None).await;
    let mut s2 = app.subscribe(&c2.access, None).await;
    let purchase = app.purchase_ok(&c1.access, &[(p1, 1)]).await;
    let frames = s1.take(6, WAIT).await;
    assert_eq!(steps_of(&frames, purchase), expected(&HAPPY_PATH));
    app.assert_quiet(&mut s2).await;
    // and C2's purchase reaches only C2
    let other = app.purchase_ok(&c2.access, &[(p1, 1)]).await;
    let frames = s2.take(6, WAIT).await;
    assert_eq!(steps_of(&frames, other), expected(&HAPPY_PATH));
    app.assert_quiet(&mut s1).await;
}

pub(crate) async fn two_concurrent_purchases_stream_twelve_events_in_causal_order(app: &Api) {
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 1000).await;
    let mut sse = app.subscribe(&c.access, None).await;
    let (a, b) = join(
        app.purchase_ok(&c.access, &[(p1, 1)]),
        app.purchase_ok(&c.access, &[(p1, 2)]),
    )
    .await;
    assert_ne!(a, b);
    let frames = sse.take(12, WAIT).await;
    assert_eq!(steps_of(&frames, a), expected(&HAPPY_PATH));
    assert_eq!(steps_of(&frames, b), expected(&HAPPY_PATH));
    let mut ids: Vec<u64> = frames.iter().map(|f| f.event_id().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 12, "event ids must be distinct");
    app.assert_quiet(&mut sse).await;
    assert_eq!(app.inventory(p1).await, 997);
}

pub(crate) async fn no_replay_without_last_event_id(app: &Api) {
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 1000).await;
    let purchase = app.purchase_ok(&c.access, &[(p1, 1)]).await;
    assert_eq!(
        app.wait_finished(&c.access, purchase).await["status"],
        "SUCCEEDED"
    );
    let mut sse = app.subscribe(&c.access, None).await;
    app.assert_quiet(&mut sse).await;
}

pub(crate) async fn resume_with_last_event_id_gets_exactly_the_missed_events(app: &Api) {
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 1000).await;
    let mut sse = app.subscribe(&c.access, None).await;
    let purchase = app.purchase_ok(&c.access, &[(p1, 1)]).await;
    let head = sse.take(3, WAIT).await;
    drop(sse);
    let last = head.last().unwrap().event_id().unwrap();
    let mut sse = app.subscribe(&c.access, Some(last)).await;
    let tail = sse.take(3, WAIT).await;
    for f in &tail {
        check_frame(f, purchase);
    }
    let all: Vec<SseFrame> = head.iter().chain(&tail).cloned().collect();
    assert_eq!(steps_of(&all, purchase), expected(&HAPPY_PATH));
    assert_ids_increase(&all);
    app.assert_quiet(&mut sse).await;

    // Reconnecting after the saga finished replays from the log too.
    assert_eq!(
        app.wait_finished(&c.access, purchase).await["status"],
        "SUCCEEDED"
    );
    let mut late = app
        .subscribe(&c.access, Some(head[0].event_id().unwrap()))
        .await;
    // The replay also holds the marker purchase of the quiet check above, after the rest.
    let replayed = late.take(5 + 3, WAIT).await;
    let marker = result_of(&replayed[5]).0;
    assert_eq!(app.markers(), vec![marker]);
    assert_eq!(steps_of(&replayed, marker), expected(&INVENTORY_FAILURE));
    let rest = &replayed[..5];
    assert_eq!(
        steps_of(rest, purchase),
        expected(&HAPPY_PATH[1..]),
        "replay after the first event"
    );
    assert_eq!(
        rest.iter().map(|f| f.event_id()).collect::<Vec<_>>(),
        all[1..].iter().map(|f| f.event_id()).collect::<Vec<_>>()
    );
    app.assert_quiet(&mut late).await;

    // ...followed by live events of a new purchase, with no duplicates.
    let next = app.purchase_ok(&c.access, &[(p1, 1)]).await;
    let live = late.take(6, WAIT).await;
    assert_eq!(steps_of(&live, next), expected(&HAPPY_PATH));
    app.assert_quiet(&mut late).await;
}

pub(crate) async fn resume_does_not_replay_other_customers_events(app: &Api) {
    let c1 = app.sign_up().await;
    let c2 = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 1000).await;
    let purchase = app.purchase_ok(&c1.access, &[(p1, 1)]).await;
    app.wait_finished(&c1.access, purchase).await;
    let mut sse = app.subscribe(&c2.access, Some(0)).await;
    app.assert_quiet(&mut sse).await;
}

pub(crate) async fn two_streams_of_one_customer_both_get_everything(app: &Api) {
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 1000).await;
    let mut s1 = app.subscribe(&c.access, None).await;
    let mut s2 = app.subscribe(&c.access, None).await;
    let purchase = app.purchase_ok(&c.access, &[(p1, 1)]).await;
    let f1 = s1.take(6, WAIT).await;
    let f2 = s2.take(6, WAIT).await;
    assert_eq!(steps_of(&f1, purchase), expected(&HAPPY_PATH));
    assert_eq!(f1, f2, "both streams carry the same frames");
    app.assert_all_quiet(&mut [&mut s1, &mut s2]).await;
}

pub(crate) async fn another_customers_records_are_404(app: &Api) {
    let c1 = app.sign_up().await;
    let c2 = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 1000).await;
    let purchase = app.purchase_ok(&c1.access, &[(p1, 1)]).await;
    assert_eq!(
        app.wait_finished(&c1.access, purchase).await["status"],
        "SUCCEEDED"
    );
    assert_no_order_nor_payment(app, &c2.access, purchase).await;
    let r = app
        .get(&format!("/api/purchase/{purchase}"), Some(&c2.access))
        .await;
    assert_msg(&r, 404, "purchase not found");
    // the owner still sees them
    for path in ["order", "payment", "purchase"] {
        let r = app
            .get(&format!("/api/{path}/{purchase}"), Some(&c1.access))
            .await;
        assert_eq!(r.status, 200, "{path}");
    }
}

pub(crate) async fn order_and_payment_lookup_errors(app: &Api) {
    let c = app.sign_up().await;
    let r = app.get("/api/order/abc", Some(&c.access)).await;
    assert_msg(&r, 400, "invalid parameter");
    let r = app.get("/api/payment/abc", Some(&c.access)).await;
    assert_msg(&r, 400, "invalid parameter");
    let r = app.get("/api/order/-1", Some(&c.access)).await;
    assert_msg(&r, 400, "invalid parameter");
    let r = app.get("/api/order/1", Some(&c.access)).await;
    assert_msg(&r, 404, "order not found");
    let r = app.get("/api/payment/1", Some(&c.access)).await;
    assert_msg(&r, 404, "payment not found");
    let r = app.get("/api/purchase/1", Some(&c.access)).await;
    assert_msg(&r, 404, "purchase not found");
    let r = app.get("/api/purchase/abc", Some(&c.access)).await;
    assert_msg(&r, 400, "invalid parameter");
    for path in ["/api/order/1", "/api/payment/1", "/api/purchase/1"] {
        let r = app.get(path, None).await;
        assert_eq!(r.status, 401, "{path}");
        assert!(r.body.is_empty(), "{path}");
    }
}

pub(crate) async fn purchase_status_matches_the_stream(app: &Api) {
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 120, 1000).await;
    let p2 = app.create_product("product2", 7, 1).await;
    let mut sse = app.subscribe(&c.access, None).await;

    let ok = app.purchase_ok(&c.access, &[(p1, 2)]).await;
    let frames = sse.take(6, WAIT).await;
    let view = app.wait_finished(&c.access, ok).await;
    assert_eq!(view["status"], "SUCCEEDED");
    assert_eq!(view["purchase_id"].as_u64(), Some(ok));
    assert_eq!(view["amount"], 240);
    assert_eq!(view["currency_code"], "NT");
    assert_eq!(
        view["purchase_items"],
        json!([{"product_id": p1, "amount": 2}])
    );
    assert_eq!(view_steps(&view), steps_of(&frames, ok));
    for (s, f) in view["steps"].as_array().unwrap().iter().zip(&frames) {
        let ts = s["timestamp"].as_i64().expect("integer timestamp");
        assert!((ts - now_secs()).abs() <= 5);
        let sent: Value = serde_json::from_str(&f.data).unwrap();
        assert!((ts - sent["timestamp"].as_i64().unwrap()).abs() <= 1);
    }

    let failed = app.purchase_ok(&c.access, &[(p2, 2)]).await;
    let frames = sse.take(3, WAIT).await;
    let view = app.wait_finished(&c.access, failed).await;
    assert_eq!(view["status"], "ROLLED_BACK");
    assert_eq!(view["amount"], 14);
    assert_eq!(view_steps(&view), steps_of(&frames, failed));
    assert_eq!(view_steps(&view), expected(&INVENTORY_FAILURE));
}

/// Item 48: the payment is priced at purchase time with the then-current price.
pub(crate) async fn payment_amount_is_quantity_times_price(app: &Api) {
    let c = app.sign_up().await;
    let p = app.create_product("pricey", 333, 100).await;
    let price = app.get(&format!("/api/product/{p}"), None).await.json()["price"]
        .as_i64()
        .unwrap();
    let purchase = app.purchase_ok(&c.access, &[(p, 7)]).await;
    app.wait_finished(&c.access, purchase).await;
    let pay = app
        .get(&format!("/api/payment/{purchase}"), Some(&c.access))
        .await
        .json();
    assert_eq!(pay["amount"].as_i64(), Some(7 * price));
}

/// Resume must work while several sagas of the customer run: whatever was read before the
/// disconnect plus what the reconnect delivers is every event exactly once.
pub(crate) async fn resume_during_concurrent_sagas_loses_and_repeats_nothing(app: &Api) {
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 1, 100_000).await;
    for round in 0..5 {
        let mut sse = app.subscribe(&c.access, None).await;
        let one: &[(u64, i64)] = &[(p1, 1)];
        let ids =
            futures_util::future::join_all((0..8).map(|_| app.purchase_ok(&c.access, one))).await;
        let head = sse.take(20 + round * 5, WAIT).await;
        drop(sse);
        let last = head.last().unwrap().event_id().unwrap();
        for id in &ids {
            app.wait_finished(&c.access, *id).await;
        }
        let mut sse = app.subscribe(&c.access, Some(last)).await;
        let tail = sse.take(48 - head.len(), WAIT).await;
        app.assert_quiet(&mut sse).await;
        let all: Vec<SseFrame> = head.iter().chain(&tail).cloned().collect();
        for id in &ids {
            assert_eq!(
                steps_of(&all, *id),
                expected(&HAPPY_PATH),
                "round {round}, purchase {id}"
            );
        }
        let mut event_ids: Vec<u64> = all.iter().map(|f| f.event_id().unwrap()).collect();
        assert!(
            event_ids.windows(2).all(|w| w[0] < w[1]),
            "round {round}: frames not in id order: {event_ids:?}"
        );
        event_ids.dedup();
        assert_eq!(event_ids.len(), 48);
    }
}

/// API.md "Deliberately better" 5: idle streams get `: keep-alive` comments (every second in
/// the test configuration) and stay usable.
pub(crate) async fn idle_stream_gets_keep_alive_comments_and_stays_live(app: &Api) {
    let c = app.sign_up().await;
    let p1 = app.create_product("product1", 100, 10).await;
    let mut sse = app.subscribe(&c.access, None).await;
    let idle = sse.next_block(Duration::from_secs(5)).await;
    let idle = idle.expect("no keep-alive comment on an idle stream");
    assert_eq!(idle.raw, ": keep-alive\n\n", "{idle:?}");
    assert_eq!(idle.comments, vec!["keep-alive".to_owned()]);
    let purchase = app.purchase_ok(&c.access, &[(p1, 1)]).await;
    let frames = sse.take(6, WAIT).await;
    assert_eq!(steps_of(&frames, purchase), expected(&HAPPY_PATH));
}

/// A cart whose total does not fit in 64 bits is bad input, not a server error or a wrap.
pub(crate) async fn overflowing_total_is_400(app: &Api) {
    let c = app.sign_up().await;
    let p = app.create_product("p", 100, 10).await;
    let r = app
        .post(
            "/api/purchase",
            Some(&c.access),
            &nt(json!([{"product_id": p, "amount": i64::MAX}])),
        )
        .await;
    assert_msg(&r, 400, "invalid parameter");
    assert_eq!(app.inventory(p).await, 10);
}

/// The flows of this file, each on an in-process app of its own (`cluster_blackbox` runs
/// them on the cluster too).
mod embedded {
    use crate::support::*;

    flow_tests!(
        Some(TestApp::spawn().await); super =>
        unauthenticated_purchase_and_result_are_401_with_empty_body,
        create_purchase_answers_201_with_purchase_id_only,
        non_positive_amount_is_400_even_for_unknown_products,
        empty_missing_or_null_items_are_400,
        unknown_product_is_404_and_no_event_follows,
        currency_must_be_exactly_nt_or_us,
        missing_payment_object_is_400_invalid_parameter,
        wrong_methods_are_404,
        result_without_stream_accept_is_json_null,
        stream_headers_and_happy_path_six_events,
        success_effects_order_payment_and_stock,
        multi_item_amount_and_sorted_order_items,
        insufficient_inventory_three_events_and_nothing_else,
        exact_inventory_succeeds_then_one_more_fails,
        duplicate_product_lines_fail_at_inventory,
        customers_only_see_their_own_results,
        two_concurrent_purchases_stream_twelve_events_in_causal_order,
        no_replay_without_last_event_id,
        resume_with_last_event_id_gets_exactly_the_missed_events,
        resume_does_not_replay_other_customers_events,
        two_streams_of_one_customer_both_get_everything,
        another_customers_records_are_404,
        order_and_payment_lookup_errors,
        purchase_status_matches_the_stream,
        payment_amount_is_quantity_times_price,
        resume_during_concurrent_sagas_loses_and_repeats_nothing,
        idle_stream_gets_keep_alive_comments_and_stays_live,
        overflowing_total_is_400,
    );
}
