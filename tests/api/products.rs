//! Product scenarios (ORIGINAL.md §16 items 19-24, with API.md's "Deliberately better" changes):
//! create, get, list and their validation.

use crate::support::*;
use serde_json::{Value, json};

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[track_caller]
fn assert_invalid(r: &Reply, case: &str) {
    assert_eq!(r.status, 400, "{case}: {}", text(r));
    assert_eq!(r.json(), json!({"msg":"invalid parameter"}), "{case}");
}

fn product1() -> Value {
    json!({"name":"product1","description":"first product","brand_name":"mingbrand","price":100,"inventory":1000})
}

/// Every catalog line, walking the pages.
async fn catalog(app: &TestApp) -> Vec<Value> {
    let r = app.get("/api/products?offset=0&size=500", None).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    match r.json()["catalogs"].clone() {
        Value::Null => Vec::new(),
        Value::Array(lines) => lines,
        other => panic!("catalogs is {other}"),
    }
}

#[actix_rt::test]
async fn create_returns_201_with_an_increasing_sonyflake_id_and_get_shows_it() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = app.post("/api/product", None, &product1()).await;
        assert_eq!(r.status, 201, "{}", text(&r));
        let j = r.json();
        assert_eq!(j.as_object().unwrap().len(), 1, "body {j}");
        let id = j["id"].as_u64().expect("id is a JSON u64 number");
        let digits = id.to_string().len();
        assert!((17..=19).contains(&digits), "id {id} has {digits} digits");
        // the id is sent as a number with all its digits, not rounded through a double
        assert!(text(&r).contains(&id.to_string()), "raw body {}", text(&r));
        ids.push(id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids {ids:?}");

    for id in ids {
        let r = app.get(&format!("/api/product/{id}"), None).await;
        assert_eq!(r.status, 200, "{}", text(&r));
        assert_eq!(
            r.json(),
            json!({"id":id,"name":"product1","description":"first product","brand_name":"mingbrand","price":100,"inventory":1000})
        );
    }
}

#[actix_rt::test]
async fn create_validation_failures_are_400_and_create_nothing() {
    let app = TestApp::spawn().await;
    let with = |key: &str, value: Value| {
        let mut b = product1();
        b[key] = value;
        b.to_string()
    };
    let without = |key: &str| {
        let mut b = product1();
        b.as_object_mut().unwrap().remove(key);
        b.to_string()
    };
    let cases: Vec<(&str, String)> = vec![
        ("price 0", with("price", json!(0))),
        ("inventory 0", with("inventory", json!(0))),
        ("name missing", without("name")),
        ("name empty", with("name", json!(""))),
        ("description missing", without("description")),
        ("brand_name missing", without("brand_name")),
        ("price missing", without("price")),
        ("inventory missing", without("inventory")),
        ("price \"100\"", with("price", json!("100"))),
        ("price 1.5", with("price", json!(1.5))),
        ("inventory 2.5", with("inventory", json!(2.5))),
        ("price -5", with("price", json!(-5))),
        ("inventory -5", with("inventory", json!(-5))),
        ("name a number", with("name", json!(7))),
        ("not json", "not json".to_owned()),
        ("empty body", String::new()),
    ];
    for (case, body) in cases {
        let r = app.call("POST", "/api/product", None, Some(&body)).await;
        assert_invalid(&r, case);
    }
    assert_eq!(
        catalog(&app).await,
        Vec::<Value>::new(),
        "a rejected create added a product"
    );

    // an `id` in the body is accepted and ignored
    let mut b = product1();
    b["id"] = json!(42);
    let r = app.post("/api/product", None, &b).await;
    assert_eq!(r.status, 201, "{}", text(&r));
    let id = r.json()["id"].as_u64().unwrap();
    assert_ne!(id, 42);
    assert_eq!(app.get("/api/product/42", None).await.status, 404);
    assert_eq!(catalog(&app).await.len(), 1);
}

pub(crate) async fn get_product_errors(app: &Api) {
    app.create_product("exists", 1, 1).await;
    for path in [
        "/api/product/abc",
        "/api/product/-1",
        "/api/product/1.5",
        "/api/product/18446744073709551616",
        "/api/product/%20",
    ] {
        assert_invalid(&app.get(path, None).await, path);
    }
    let r = app.get("/api/product/1", None).await;
    assert_eq!(r.status, 404, "{}", text(&r));
    assert_eq!(r.json(), json!({"msg":"product not found"}));
    let r = app.get("/api/product/18446744073709551615", None).await;
    assert_eq!(r.status, 404, "{}", text(&r));
    assert_eq!(r.json(), json!({"msg":"product not found"}));
}

#[actix_rt::test]
async fn list_shows_products_in_creation_order_and_pages() {
    let app = TestApp::spawn().await;
    let mut created = Vec::new();
    for i in 0..4 {
        let name = format!("p{i}");
        let id = app.create_product(&name, 100 + i, 1000 + i).await;
        created.push(json!({"id":id,"name":name,"inventory":1000 + i,"price":100 + i}));
    }
    let r = app.get("/api/products?offset=0&size=100", None).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json(), json!({ "catalogs": created }));

    let r = app.get("/api/products?size=1&offset=1", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"catalogs":[created[1]]}));
    let r = app.get("/api/products?size=2&offset=2", None).await;
    assert_eq!(r.json(), json!({"catalogs":[created[2], created[3]]}));
    // offset defaults to 0
    let r = app.get("/api/products?size=2", None).await;
    assert_eq!(r.json(), json!({"catalogs":[created[0], created[1]]}));
    // a page past the end is `null`, not `[]`
    let r = app.get("/api/products?size=10&offset=4", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(text(&r), r#"{"catalogs":null}"#);
}

#[actix_rt::test]
async fn list_validation() {
    let app = TestApp::spawn().await;
    app.create_product("one", 1, 1).await;
    for query in [
        "",
        "?offset=0",
        "?size=0",
        "?size=501",
        "?size=-1",
        "?size=10&offset=-1",
        "?offset=-1&size=10",
        "?size=abc",
        "?size=10&offset=abc",
        "?size=1.5",
        "?size=",
    ] {
        let path = format!("/api/products{query}");
        assert_invalid(&app.get(&path, None).await, &path);
    }
    for query in ["?size=500", "?size=1", "?offset=0&size=500"] {
        let r = app.get(&format!("/api/products{query}"), None).await;
        assert_eq!(r.status, 200, "{query}: {}", text(&r));
        assert_eq!(r.json()["catalogs"].as_array().unwrap().len(), 1, "{query}");
    }
    let r = app.get("/api/products?offset=1000000&size=10", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(text(&r), r#"{"catalogs":null}"#);
}

#[actix_rt::test]
async fn empty_catalog_lists_as_null() {
    let app = TestApp::spawn().await;
    let r = app.get("/api/products?offset=0&size=10", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(text(&r), r#"{"catalogs":null}"#);
}

/// The flows of this file, each on an in-process app of its own (`cluster_blackbox` runs
/// them on the cluster too).
mod embedded {
    use crate::support::*;

    flow_tests!(
        Some(TestApp::spawn().await); super =>
        get_product_errors,
    );
}
