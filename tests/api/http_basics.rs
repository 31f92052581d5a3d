//! HTTP conventions shared by every route (ORIGINAL.md §2, §16 item 25, API.md): CORS, unknown
//! routes and methods, body size limit, JSON whatever the Content-Type, unknown fields, path ids,
//! health endpoints.

use crate::support::*;
use serde_json::{Value, json};

const CORS: [(&str, &str); 5] = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-credentials", "true"),
    (
        "access-control-allow-headers",
        "Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token, Authorization, Accept, Origin, Cache-Control, X-Requested-With",
    ),
    (
        "access-control-allow-methods",
        "POST, DELETE, GET, PUT, PATCH, OPTIONS",
    ),
    ("access-control-max-age", "86400"),
];

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[track_caller]
fn assert_cors(r: &Reply, case: &str) {
    for (name, value) in CORS {
        assert_eq!(r.header(name).as_deref(), Some(value), "{case}: {name}");
    }
}

fn signup_body(n: u64) -> Value {
    json!({"password":"abcd5432","firstname":"ming","lastname":"hsu","email":format!("basic{n}@ex.com"),"address":"taipei","phone_number":format!("{n}")})
}

async fn login_status(app: &TestApp, email: &str) -> u16 {
    app.post(
        "/api/account/auth/login",
        None,
        &json!({"email": email, "password": "abcd5432"}),
    )
    .await
    .status
}

#[actix_rt::test]
async fn options_to_any_path_is_204_with_cors_headers_and_no_auth() {
    let app = TestApp::spawn().await;
    for path in [
        "/api/product",
        "/api/purchase",
        "/api/account/info/person",
        "/api/order/1",
        "/no/such/route",
    ] {
        let r = app.call("OPTIONS", path, None, None).await;
        assert_eq!(r.status, 204, "OPTIONS {path}: {}", text(&r));
        assert!(r.body.is_empty(), "OPTIONS {path}: {}", text(&r));
        assert_cors(&r, &format!("OPTIONS {path}"));
    }
    // a browser preflight, with its request headers
    let r = app
        .call_with_headers(
            "OPTIONS",
            "/api/purchase",
            &[
                ("Origin", "http://shop.example"),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                ),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_cors(&r, "preflight");
}

#[actix_rt::test]
async fn cors_headers_are_on_every_response() {
    let app = TestApp::spawn().await;
    let ok = app.get("/api/products?size=1", None).await;
    assert_eq!(ok.status, 200);
    assert_cors(&ok, "GET 200");
    let created = app
        .post(
            "/api/product",
            None,
            &json!({"name":"n","description":"d","brand_name":"b","price":1,"inventory":1}),
        )
        .await;
    assert_eq!(created.status, 201);
    assert_cors(&created, "POST 201");
    let bad = app.get("/api/product/abc", None).await;
    assert_eq!(bad.status, 400);
    assert_cors(&bad, "400");
    let unauthorized = app.get("/api/account/info/person", None).await;
    assert_eq!(unauthorized.status, 401);
    assert_cors(&unauthorized, "401");
    let missing = app.get("/no/such/route", None).await;
    assert_eq!(missing.status, 404);
    assert_cors(&missing, "404");
}

#[actix_rt::test]
async fn unknown_routes_and_wrong_methods_are_404_json_never_405() {
    let app = TestApp::spawn().await;
    let c = app.sign_up().await;
    let cases = [
        ("GET", "/no/such/route", None),
        ("GET", "/api", None),
        ("GET", "/api/account", None),
        ("GET", "/api/purchase", None),
        ("GET", "/api/purchase", Some(c.access.as_str())),
        ("POST", "/api/purchase/result", None),
        ("POST", "/api/purchase/result", Some(c.access.as_str())),
        ("DELETE", "/api/product/1", None),
        ("PUT", "/api/account/auth/signup", None),
        ("GET", "/api/account/auth/login", None),
        ("POST", "/api/products", None),
        ("PATCH", "/api/account/info/person", Some(c.access.as_str())),
        ("DELETE", "/api/order/1", Some(c.access.as_str())),
    ];
    for (method, path, token) in cases {
        let r = app.call(method, path, token, Some("{}")).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", text(&r));
        assert!(
            r.json()["msg"].is_string(),
            "{method} {path}: body {}",
            text(&r)
        );
        assert!(
            r.header("content-type")
                .unwrap_or_default()
                .starts_with("application/json"),
            "{method} {path}"
        );
    }
}

#[actix_rt::test]
async fn bodies_over_64_kib_are_413_and_change_nothing() {
    let app = TestApp::spawn().await;
    // just under the limit (padding in an unknown field): accepted
    let n = unique();
    let mut body = signup_body(n);
    body["padding"] = json!("x".repeat(60 * 1024));
    let raw = body.to_string();
    assert!(raw.len() < 64 * 1024);
    let r = app
        .call("POST", "/api/account/auth/signup", None, Some(&raw))
        .await;
    assert_eq!(r.status, 201, "{}", text(&r));

    // just over the limit: 413, and the customer does not exist
    let n = unique();
    let mut body = signup_body(n);
    body["padding"] = json!("x".repeat(64 * 1024));
    let raw = body.to_string();
    assert!(raw.len() > 64 * 1024);
    let r = app
        .call("POST", "/api/account/auth/signup", None, Some(&raw))
        .await;
    assert_eq!(r.status, 413, "{}", text(&r));
    assert_eq!(
        login_status(&app, &format!("basic{n}@ex.com")).await,
        404,
        "an oversized sign-up created the customer"
    );
    // the same sign-up at a normal size goes through (nothing was reserved)
    let r = app
        .post("/api/account/auth/signup", None, &signup_body(n))
        .await;
    assert_eq!(r.status, 201, "{}", text(&r));

    // far over the limit, on another route
    let mut product =
        json!({"name":"big","description":"d","brand_name":"b","price":1,"inventory":1});
    product["padding"] = json!("y".repeat(1 << 20));
    let r = app.post("/api/product", None, &product).await;
    assert_eq!(r.status, 413, "{}", text(&r));
    let r = app.get("/api/products?size=10", None).await;
    assert_eq!(r.json(), json!({"catalogs": null}));
}

#[actix_rt::test]
async fn json_is_read_whatever_the_content_type() {
    let app = TestApp::spawn().await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/json"),
        Some("application/x-www-form-urlencoded"),
        Some("application/octet-stream"),
    ] {
        let body = signup_body(unique()).to_string();
        let headers: Vec<(&str, &str)> = content_type
            .map(|ct| vec![("Content-Type", ct)])
            .unwrap_or_default();
        let r = app
            .call_with_headers("POST", "/api/account/auth/signup", &headers, Some(&body))
            .await;
        assert_eq!(r.status, 201, "Content-Type {content_type:?}: {}", text(&r));
        assert!(r.json()["access_token"].is_string());
    }
}

#[actix_rt::test]
async fn unknown_json_fields_are_ignored() {
    let app = TestApp::spawn().await;
    let n = unique();
    let mut body = signup_body(n);
    body["nickname"] = json!("mingo");
    body["age"] = json!(42);
    body["nested"] = json!({"a": [1, 2, {"b": null}]});
    let r = app.post("/api/account/auth/signup", None, &body).await;
    assert_eq!(r.status, 201, "{}", text(&r));
    let access = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = app.get("/api/account/info/person", Some(&access)).await;
    assert_eq!(
        r.json(),
        json!({"firstname":"ming","lastname":"hsu","email":format!("basic{n}@ex.com")})
    );

    let r = app
        .post(
            "/api/product",
            None,
            &json!({"name":"n","description":"d","brand_name":"b","price":3,"inventory":4,"color":"red"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", text(&r));
    let id = r.json()["id"].as_u64().unwrap();
    let r = app.get(&format!("/api/product/{id}"), None).await;
    assert_eq!(
        r.json(),
        json!({"id":id,"name":"n","description":"d","brand_name":"b","price":3,"inventory":4})
    );
}

#[actix_rt::test]
async fn health_endpoints_answer_200() {
    let app = TestApp::spawn().await;
    for path in ["/healthz", "/readyz"] {
        let r = app.get(path, None).await;
        assert_eq!(r.status, 200, "{path}: {}", text(&r));
        assert_cors(&r, path);
    }
}

#[actix_rt::test]
async fn path_ids_that_are_not_u64_are_400() {
    let app = TestApp::spawn().await;
    let c = app.sign_up().await;
    for raw in ["abc", "-1", "1.0", "18446744073709551616", "0x10", "%201"] {
        for (route, token) in [
            ("/api/product", None),
            ("/api/order", Some(c.access.as_str())),
            ("/api/payment", Some(c.access.as_str())),
            ("/api/purchase", Some(c.access.as_str())),
        ] {
            let path = format!("{route}/{raw}");
            let r = app.get(&path, token).await;
            assert_eq!(r.status, 400, "{path}: {}", text(&r));
            assert_eq!(r.json(), json!({"msg":"invalid parameter"}), "{path}");
        }
    }
    // a well-formed id that names nothing is 404, not 400
    for (path, msg) in [
        ("/api/order/18446744073709551615", "order not found"),
        ("/api/payment/18446744073709551615", "payment not found"),
        ("/api/purchase/18446744073709551615", "purchase not found"),
        ("/api/purchase/9223372036854775808", "purchase not found"),
    ] {
        let r = app.get(path, Some(&c.access)).await;
        assert_eq!(r.status, 404, "{path}: {}", text(&r));
        assert_eq!(r.json(), json!({ "msg": msg }), "{path}");
    }
}

#[actix_rt::test]
async fn json_keys_match_case_insensitively_and_a_repeated_key_keeps_its_last_value() {
    let app = TestApp::spawn().await;
    let n = unique();
    let email = format!("basic{n}@ex.com");
    // Go's encoding/json matches `FirstName`, `EMAIL`, ... to the lower-case fields
    let body = format!(
        r#"{{"Password":"abcd5432","FirstName":"first","firstname":"ming","LastName":"hsu","EMAIL":"{email}","Address":"taipei","Phone_Number":"{n}"}}"#
    );
    let r = app
        .call("POST", "/api/account/auth/signup", None, Some(&body))
        .await;
    assert_eq!(r.status, 201, "{}", text(&r));
    let access = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = app.get("/api/account/info/person", Some(&access)).await;
    assert_eq!(
        r.json(),
        json!({"firstname":"ming","lastname":"hsu","email":email})
    );
    let r = app
        .call(
            "POST",
            "/api/account/auth/login",
            None,
            Some(&format!(
                r#"{{"Email":"{email}","password":"wrong","PASSWORD":"abcd5432"}}"#
            )),
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));

    // a repeated key: the last value wins
    let r = app
        .call(
            "POST",
            "/api/product",
            None,
            Some(r#"{"name":"first","Name":"last","description":"d","brand_name":"b","price":0,"price":7,"Inventory":3}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", text(&r));
    let id = r.json()["id"].as_u64().unwrap();
    let r = app.get(&format!("/api/product/{id}"), None).await;
    assert_eq!(
        r.json(),
        json!({"id":id,"name":"last","description":"d","brand_name":"b","price":7,"inventory":3})
    );
    // the last value wins even when it is the bad one
    let r = app
        .call(
            "POST",
            "/api/product",
            None,
            Some(r#"{"name":"n","description":"d","brand_name":"b","price":7,"PRICE":0,"inventory":3}"#),
        )
        .await;
    assert_eq!(r.status, 400, "{}", text(&r));

    // nested objects too: a purchase with capitalised keys
    let r = app
        .call(
            "POST",
            "/api/purchase",
            Some(&access),
            Some(&format!(
                r#"{{"Purchase_Items":[{{"Product_ID":{id},"Amount":2}}],"Payment":{{"Currency_Code":"NT"}}}}"#
            )),
        )
        .await;
    assert_eq!(r.status, 201, "{}", text(&r));
    let purchase = r.json()["purchase_id"].as_u64().unwrap();
    let view = app.wait_finished(&access, purchase).await;
    assert_eq!(view["status"], "SUCCEEDED", "{view}");
    assert_eq!(view["amount"], 14, "{view}");
    assert_eq!(app.inventory(id).await, 1);
}
