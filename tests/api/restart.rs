//! A second start on the same data directory keeps customers, products and the JWT secret
//! (API.md "Secrets": embedded mode creates its secret once, in the data directory).

use crate::support::*;
use serde_json::json;

#[actix_rt::test]
async fn a_restart_on_the_same_data_dir_keeps_accounts_products_and_tokens() {
    let data = tempfile::tempdir().unwrap();

    // first instance: a customer and a product
    let first = TestApp::spawn_in(data.path(), |_| {}).await;
    let c = first.sign_up().await;
    let product = first.create_product("durable", 123, 45).await;
    let detail = first
        .get(&format!("/api/product/{product}"), None)
        .await
        .json();
    let secret = std::fs::read_to_string(data.path().join("jwt_secret")).unwrap();
    assert!(!secret.trim().is_empty());
    // Stopping the first instance frees its port and closes its files before the second
    // opens them.
    let first_url = first.url.clone();
    drop(first);
    let gone = awc::Client::default()
        .get(format!("{first_url}/healthz"))
        .send()
        .await;
    assert!(gone.is_err(), "the first instance still answers: {gone:?}");
    let port: u16 = first_url.rsplit(':').next().unwrap().parse().unwrap();
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the first instance's port is free");

    // second instance on the same files
    let second = TestApp::spawn_in(data.path(), |_| {}).await;
    let r = second
        .post(
            "/api/account/auth/login",
            None,
            &json!({"email": c.email, "password": "abcd5432"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        customer_of(r.json()["access_token"].as_str().unwrap()),
        c.id
    );

    let r = second.get(&format!("/api/product/{product}"), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), detail);
    assert_eq!(
        r.json(),
        json!({"id":product,"name":"durable","description":"durable description","brand_name":"mingbrand","price":123,"inventory":45})
    );
    let r = second.get("/api/products?size=10", None).await;
    assert_eq!(
        r.json(),
        json!({"catalogs":[{"id":product,"name":"durable","inventory":45,"price":123}]})
    );

    // tokens issued by the first instance are accepted by the second
    let r = second
        .get("/api/account/info/person", Some(&c.access))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json(),
        json!({"firstname":"ming","lastname":"hsu","email":c.email})
    );
    let r = second
        .post(
            "/api/account/auth/refresh",
            None,
            &json!({"refresh_token": c.refresh}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        std::fs::read_to_string(data.path().join("jwt_secret")).unwrap(),
        secret,
        "the secret file was rewritten"
    );

    // the new instance keeps issuing distinct, increasing ids
    let next = second.create_product("after restart", 1, 1).await;
    assert!(next > product, "{next} after {product}");
    // and its sign-ups do not collide with the first instance's customers
    let d = second.sign_up().await;
    assert_ne!(d.id, c.id);

    // an instance on another data directory has its own secret: the token means nothing there
    let elsewhere = TestApp::spawn().await;
    let r = elsewhere
        .get("/api/account/info/person", Some(&c.access))
        .await;
    assert_eq!(r.status, 401);
    assert!(r.body.is_empty());
}
