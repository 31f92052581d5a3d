//! Issue 8 §3: the authorization matrix. Every route of the route table that takes a bearer
//! token, with no token, another customer's, an expired one, a refresh token and the right
//! one, answers as the contract says (API.md "Auth"; another customer's records are 404, as
//! if they did not exist), and a refused write changes nothing.

use std::time::Duration;

use crate::support::*;
use serde_json::{Value, json};

/// Every `(method, path)` of the route table (`routes::table`, the list the server
/// registers): a route added there without a row here fails the test.
fn route_table() -> Vec<(String, String)> {
    sagashop::http::routes::table()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect()
}

/// The tokens of the matrix's columns.
#[derive(Debug, Clone, Copy)]
enum Token {
    Missing,
    OtherCustomer,
    Expired,
    Refresh,
    Right,
}

/// What the contract answers.
#[derive(Debug, Clone)]
enum Want {
    /// 401 with an empty body.
    Unauthorized,
    /// This status and exactly this JSON body.
    Body(u16, Value),
    /// This status and a JSON object with this field.
    Field(u16, &'static str, Value),
    /// 201 with a new id (any u64) in this field.
    Created(&'static str),
}

/// One route's row: the request, and what the right and the other customer's tokens get
/// (no token and a refresh token are 401 with an empty body, an expired token 401 `token
/// expired`, on every route).
struct Row {
    method: &'static str,
    /// The path as the route table writes it (`{id}`: the owner's purchase).
    pattern: &'static str,
    body: Option<String>,
    right: Want,
    other: Want,
}

#[track_caller]
fn check(r: &Reply, want: &Want, case: &str) {
    let text = String::from_utf8_lossy(&r.body);
    match want {
        Want::Unauthorized => {
            assert_eq!(r.status, 401, "{case}: {text}");
            assert!(r.body.is_empty(), "{case}: body {text}");
        }
        Want::Body(status, body) => {
            assert_eq!(r.status, *status, "{case}: {text}");
            assert_eq!(&r.json(), body, "{case}");
        }
        Want::Field(status, field, value) => {
            assert_eq!(r.status, *status, "{case}: {text}");
            assert_eq!(&r.json()[field], value, "{case}: {text}");
        }
        Want::Created(field) => {
            assert_eq!(r.status, 201, "{case}: {text}");
            assert!(r.json()[field].as_u64().is_some(), "{case}: {text}");
        }
    }
}

#[actix_rt::test]
async fn every_authenticated_route_answers_each_kind_of_token_as_the_contract_says() {
    let app = TestApp::spawn_with(|c| c.jwt_access_token_expire_second = 60).await;
    let owner = app.sign_up().await;
    let other = app.sign_up().await;
    let product = app.create_product("matrix", 10, 100).await;
    let purchase = app.purchase_ok(&owner.access, &[(product, 1)]).await;
    app.wait_finished(&owner.access, purchase).await;
    let owner_phone = app
        .get("/api/account/info/shipping", Some(&owner.access))
        .await;
    let owner_phone = owner_phone.json()["phone_number"].clone();

    // The tokens from sign-up expire; fresh ones come from a login after that.
    let expired = owner.access.clone();
    app.clock.advance(Duration::from_secs(61));
    let login = async |email: &str| {
        let body = json!({"email": email, "password": "abcd5432"});
        let r = app.post("/api/account/auth/login", None, &body).await;
        assert_eq!(r.status, 200);
        let j = r.json();
        let token = |k: &str| j[k].as_str().unwrap().to_owned();
        (token("access_token"), token("refresh_token"))
    };
    let (right, refresh) = login(&owner.email).await;
    let (other_access, _) = login(&other.email).await;

    let not_found = |what: &str| Want::Body(404, json!({ "msg": format!("{what} not found") }));
    let ok = Want::Body(200, json!({"msg": "ok"}));
    let rows = vec![
        Row {
            method: "GET",
            pattern: "/api/account/info/person",
            body: None,
            right: Want::Field(200, "email", json!(owner.email)),
            other: Want::Field(200, "email", json!(other.email)),
        },
        Row {
            // the owner's email in the body: for the other customer it is someone else's
            method: "PUT",
            pattern: "/api/account/info/person",
            body: Some(json!({"firstname":"matrix","lastname":"hsu","email":owner.email}).to_string()),
            right: ok.clone(),
            other: Want::Body(400, json!({"msg": "duplicate entry"})),
        },
        Row {
            method: "GET",
            pattern: "/api/account/info/shipping",
            body: None,
            right: Want::Field(200, "phone_number", owner_phone.clone()),
            other: Want::Field(200, "address", json!("taipei")),
        },
        Row {
            // the owner's phone in the body: for the other customer it is someone else's
            method: "PUT",
            pattern: "/api/account/info/shipping",
            body: Some(json!({"address":"matrix street","phone_number":owner_phone}).to_string()),
            right: ok.clone(),
            other: Want::Body(400, json!({"msg": "duplicate entry"})),
        },
        Row {
            // the other customer's token buys for the other customer
            method: "POST",
            pattern: "/api/purchase",
            body: Some(
                json!({"purchase_items":[{"product_id":product,"amount":1}],"payment":{"currency_code":"NT"}})
                    .to_string(),
            ),
            right: Want::Created("purchase_id"),
            other: Want::Created("purchase_id"),
        },
        Row {
            // without `Accept: text/event-stream` the stream route answers JSON null
            method: "GET",
            pattern: "/api/purchase/result",
            body: None,
            right: Want::Body(200, Value::Null),
            other: Want::Body(200, Value::Null),
        },
        Row {
            method: "GET",
            pattern: "/api/purchase/{id}",
            body: None,
            right: Want::Field(200, "purchase_id", json!(purchase)),
            other: not_found("purchase"),
        },
        Row {
            method: "GET",
            pattern: "/api/order/{id}",
            body: None,
            right: Want::Field(200, "id", json!(purchase)),
            other: not_found("order"),
        },
        Row {
            method: "GET",
            pattern: "/api/payment/{id}",
            body: None,
            right: Want::Field(200, "id", json!(purchase)),
            other: not_found("payment"),
        },
    ];

    // The rows are exactly the routes of the table that refuse a request without a token.
    let mut authenticated = Vec::new();
    for (method, pattern) in route_table() {
        let path = pattern.replace("{id}", &purchase.to_string());
        let r = app.call(&method, &path, None, Some("{}")).await;
        if r.status == 401 {
            authenticated.push((method, pattern));
        }
    }
    let mut covered: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.method.to_owned(), r.pattern.to_owned()))
        .collect();
    authenticated.sort();
    covered.sort();
    assert_eq!(
        covered, authenticated,
        "matrix rows vs authenticated routes"
    );

    let expired_want = Want::Body(401, json!({"msg": "token expired"}));
    for row in &rows {
        let path = row.pattern.replace("{id}", &purchase.to_string());
        for token in [
            Token::Missing,
            Token::OtherCustomer,
            Token::Expired,
            Token::Refresh,
            Token::Right,
        ] {
            let (bearer, want) = match token {
                Token::Missing => (None, &Want::Unauthorized),
                Token::OtherCustomer => (Some(&other_access), &row.other),
                Token::Expired => (Some(&expired), &expired_want),
                Token::Refresh => (Some(&refresh), &Want::Unauthorized),
                Token::Right => (Some(&right), &row.right),
            };
            let r = app
                .call(
                    row.method,
                    &path,
                    bearer.map(String::as_str),
                    row.body.as_deref(),
                )
                .await;
            let case = format!("{} {path} with {token:?} token", row.method);
            check(&r, want, &case);
        }
    }

    // Only the right token changed the owner's data; the other customer's is untouched.
    let person = async |token: &str| app.get("/api/account/info/person", Some(token)).await;
    let shipping = async |token: &str| app.get("/api/account/info/shipping", Some(token)).await;
    assert_eq!(person(&right).await.json()["firstname"], json!("matrix"));
    assert_eq!(
        shipping(&right).await.json()["address"],
        json!("matrix street")
    );
    let others = person(&other_access).await.json();
    assert_eq!(
        others,
        json!({"firstname":"ming","lastname":"hsu","email":other.email})
    );
    assert_eq!(
        shipping(&other_access).await.json()["address"],
        json!("taipei")
    );
}
