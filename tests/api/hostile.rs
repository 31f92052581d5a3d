//! Hostile input a schema fuzzer does not generate (issue 8 §2; `scripts/fuzz.sh` covers the
//! rest): deep and wide JSON, bytes that are not UTF-8, NUL and CR/LF in text, numbers beyond
//! 64 bits, floats for integers, amounts not above zero, oversized carts, the same product on
//! two lines, huge `Authorization` headers. Each answer is the contract's 4xx (`{"msg":..}`,
//! or the empty 401 of a bad token) and nothing changes, read back through the API: the
//! catalog with its stock, the customer's person and shipping info, and (for purchases) the
//! customer's result stream, which stays quiet. A trickled body is in `limits.rs`.

use serde_json::{Value, json};

use crate::support::*;

/// What a rejected request could have changed, as the API shows it.
struct Unchanged {
    token: String,
    before: Value,
}

impl Unchanged {
    async fn read(app: &TestApp, token: &str) -> Value {
        let mut catalog = Vec::new();
        loop {
            let path = format!("/api/products?offset={}&size=500", catalog.len());
            let page = app.get(&path, None).await.json();
            let lines = page["catalogs"].as_array().cloned().unwrap_or_default();
            let last = lines.len() < 500;
            catalog.extend(lines);
            if last {
                break;
            }
        }
        let person = app.get("/api/account/info/person", Some(token)).await;
        let shipping = app.get("/api/account/info/shipping", Some(token)).await;
        json!({"catalog": catalog, "person": person.json(), "shipping": shipping.json()})
    }

    async fn take(app: &TestApp, token: &str) -> Self {
        Unchanged {
            token: token.to_owned(),
            before: Self::read(app, token).await,
        }
    }

    async fn check(&self, app: &TestApp, case: &str) {
        let after = Self::read(app, &self.token).await;
        assert_eq!(
            self.before, after,
            "{case}: a rejected request changed state"
        );
    }
}

/// Asserts the contract's rejection: `status` with `{"msg": msg}`, or an empty 401.
#[track_caller]
fn assert_rejected(r: &Reply, status: u16, case: &str) {
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, status, "{case}: {body}");
    let msg = match status {
        401 => {
            assert!(r.body.is_empty(), "{case}: 401 with a body: {body}");
            return;
        }
        413 => "payload too large",
        _ => "invalid parameter",
    };
    assert_eq!(r.json(), json!({ "msg": msg }), "{case}");
}

/// A customer, two products and a snapshot of what they look like.
struct Scene {
    app: TestApp,
    customer: Customer,
    product: u64,
    unchanged: Unchanged,
}

async fn scene() -> Scene {
    let app = TestApp::spawn().await;
    let customer = app.sign_up().await;
    let product = app.create_product("target", 100, 1000).await;
    app.create_product("other", 7, 3).await;
    let unchanged = Unchanged::take(&app, &customer.access).await;
    Scene {
        app,
        customer,
        product,
        unchanged,
    }
}

impl Scene {
    /// Sends `body` (raw bytes) to every JSON route, each with the customer's token; every
    /// answer must be `status`, and nothing may change.
    async fn to_every_body_route(&self, body: &[u8], status: u16, case: &str) {
        let bearer = format!("Bearer {}", self.customer.access);
        for (method, path) in [
            ("POST", "/api/account/auth/signup"),
            ("POST", "/api/account/auth/login"),
            ("POST", "/api/account/auth/refresh"),
            ("PUT", "/api/account/info/person"),
            ("PUT", "/api/account/info/shipping"),
            ("POST", "/api/product"),
            ("POST", "/api/purchase"),
        ] {
            let headers = [("Authorization", bearer.as_str())];
            let r = self.app.send_raw(method, path, &headers, body).await;
            assert_rejected(&r, status, &format!("{case}: {method} {path}"));
        }
        self.unchanged.check(&self.app, case).await;
    }

    /// Posts a purchase body, as text, with the customer's token.
    async fn purchase_raw(&self, body: &str) -> Reply {
        let token = Some(self.customer.access.as_str());
        self.app
            .call("POST", "/api/purchase", token, Some(body))
            .await
    }

    /// Posts a purchase body; it must be rejected with `status` and change nothing.
    async fn purchase_rejected(&self, body: &Value, status: u16, case: &str) {
        let r = self.purchase_raw(&body.to_string()).await;
        assert_rejected(&r, status, case);
        self.unchanged.check(&self.app, case).await;
    }

    /// A valid product body with `field` replaced by `value`.
    fn product_with(field: &str, value: Value) -> Value {
        let mut body =
            json!({"name":"n","description":"d","brand_name":"b","price":1,"inventory":1});
        body[field] = value;
        body
    }

    async fn product_rejected(&self, field: &str, value: Value, case: &str) {
        let r = self
            .app
            .post("/api/product", None, &Self::product_with(field, value))
            .await;
        assert_rejected(&r, 400, case);
        self.unchanged.check(&self.app, case).await;
    }

    /// One line of `product_id` (as JSON) and `amount`, in NT.
    fn cart(product_id: Value, amount: Value) -> Value {
        json!({"purchase_items":[{"product_id": product_id, "amount": amount}],"payment":{"currency_code":"NT"}})
    }
}

#[actix_rt::test]
async fn json_nested_ten_thousand_deep_or_60_kib_wide_is_400() {
    let s = scene().await;
    let depth = 10_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let arrays_in_a_field = format!(r#"{{"purchase_items":{arrays}}}"#);
    let objects_in_a_field = format!(r#"{{"name":{objects}}}"#);
    for (case, body) in [
        ("arrays 10k deep", &arrays),
        ("objects 10k deep", &objects),
        ("arrays 10k deep in a field", &arrays_in_a_field),
        ("objects 10k deep in a field", &objects_in_a_field),
    ] {
        s.to_every_body_route(body.as_bytes(), 400, case).await;
    }
    // 60 KiB of numbers, as the whole body and where a cart or a text is expected
    let mut numbers = String::from("[0");
    let mut n = 1u64;
    while numbers.len() < 60 * 1024 {
        numbers.push_str(&format!(",{n}"));
        n += 1;
    }
    numbers.push(']');
    let in_a_cart = format!(r#"{{"purchase_items":{numbers},"payment":{{"currency_code":"NT"}}}}"#);
    let as_a_name = format!(r#"{{"name":{numbers}}}"#);
    assert!(in_a_cart.len() < 64 * 1024 && as_a_name.len() < 64 * 1024);
    for (case, body) in [
        ("a 60 KiB array", &numbers),
        ("a 60 KiB array as the cart", &in_a_cart),
        ("a 60 KiB array as text", &as_a_name),
    ] {
        s.to_every_body_route(body.as_bytes(), 400, case).await;
    }
}

#[actix_rt::test]
async fn bytes_that_are_not_utf8_and_nul_in_text_are_400() {
    let s = scene().await;
    let mut invalid = br#"{"name":""#.to_vec();
    invalid.extend_from_slice(b"\xff\xfe\xc3\x28");
    invalid.extend_from_slice(br#"","description":"d","brand_name":"b","price":1,"inventory":1,"email":"a@b.co","password":"abcd5432"}"#);
    s.to_every_body_route(&invalid, 400, "invalid UTF-8 in a string")
        .await;
    let mut key = b"{\"".to_vec();
    key.extend_from_slice(b"\xc0\xaf\":1}");
    s.to_every_body_route(&key, 400, "invalid UTF-8 in a key")
        .await;
    // a raw NUL byte is not JSON at all
    s.to_every_body_route(b"{\"name\":\"a\0b\"}", 400, "a raw NUL")
        .await;
    // an escaped NUL is a JSON string holding NUL: text fields refuse it
    for field in ["name", "description", "brand_name"] {
        s.product_rejected(field, json!("a\u{0}b"), &format!("NUL in {field}"))
            .await;
    }
    let token = s.customer.access.as_str();
    for (path, body) in [
        (
            "/api/account/info/person",
            json!({"firstname":"a\u{0}","lastname":"b","email":"x@y.co"}),
        ),
        (
            "/api/account/info/person",
            json!({"firstname":"a","lastname":"b","email":"x\u{0}@y.co"}),
        ),
        (
            "/api/account/info/shipping",
            json!({"address":"a\u{0}b","phone_number":"1"}),
        ),
        (
            "/api/account/info/shipping",
            json!({"address":"a","phone_number":"1\u{0}"}),
        ),
    ] {
        let r = s
            .app
            .call("PUT", path, Some(token), Some(&body.to_string()))
            .await;
        assert_rejected(&r, 400, &format!("PUT {path} {body}"));
    }
    let signup = json!({"password":"abcd5432\u{0}","firstname":"f","lastname":"l","email":"nul@ex.com","address":"a","phone_number":"55501"});
    let r = s.app.post("/api/account/auth/signup", None, &signup).await;
    assert_rejected(&r, 400, "NUL in a password");
    let login = json!({"email":"nul@ex.com","password":"abcd5432"});
    let r = s.app.post("/api/account/auth/login", None, &login).await;
    assert_eq!(r.status, 404, "the refused sign-up created no account");
    s.unchanged.check(&s.app, "NUL in text").await;
}

#[actix_rt::test]
async fn numbers_beyond_64_bits_and_floats_for_integers_are_400() {
    let s = scene().await;
    for (field, raw) in [
        ("price", "9223372036854775808"),
        ("price", "-9223372036854775809"),
        ("price", "18446744073709551616"),
        ("price", "1e30"),
        ("price", "100.0"),
        ("price", "1.5"),
        ("inventory", "1e3"),
        ("inventory", "99999999999999999999999999999999999999"),
    ] {
        let body = Scene::product_with(field, json!("X"))
            .to_string()
            .replace(r#""X""#, raw);
        let r = s.app.call("POST", "/api/product", None, Some(&body)).await;
        assert_rejected(&r, 400, &format!("{field} {raw}"));
    }
    let p = s.product.to_string();
    for (product_id, amount) in [
        ("18446744073709551616", "1"),
        ("-1", "1"),
        (&*format!("{p}.0"), "1"),
        (&*format!("{p}e0"), "1"),
        (&*p, "1.5"),
        (&*p, "1.0"),
        (&*p, "9223372036854775808"),
        (&*p, "1e2"),
    ] {
        let body = format!(
            r#"{{"purchase_items":[{{"product_id":{product_id},"amount":{amount}}}],"payment":{{"currency_code":"NT"}}}}"#
        );
        let r = s.purchase_raw(&body).await;
        assert_rejected(&r, 400, &body);
    }
    let token = Some(s.customer.access.as_str());
    for path in [
        "/api/product/18446744073709551616",
        "/api/product/1.5",
        "/api/product/1e3",
        "/api/product/-1",
        "/api/purchase/18446744073709551616",
        "/api/order/1.0",
        "/api/payment/99999999999999999999999",
        "/api/products?offset=18446744073709551616&size=10",
        "/api/products?offset=0&size=1.5",
        "/api/products?offset=0.0&size=10",
    ] {
        assert_rejected(&s.app.get(path, token).await, 400, path);
    }
    s.unchanged.check(&s.app, "numbers").await;
}

#[actix_rt::test]
async fn amounts_not_above_zero_are_400_and_buy_nothing() {
    let s = scene().await;
    let mut sse = s.app.subscribe(&s.customer.access, None).await;
    for amount in [json!(0), json!(-1), json!(i64::MIN)] {
        let body = Scene::cart(json!(s.product), amount.clone());
        s.purchase_rejected(&body, 400, &format!("amount {amount}"))
            .await;
    }
    // one bad line spoils the cart
    let body = json!({"purchase_items":[{"product_id":s.product,"amount":1},{"product_id":s.product,"amount":0}],"payment":{"currency_code":"NT"}});
    s.purchase_rejected(&body, 400, "a good and a bad line")
        .await;
    s.app.assert_quiet(&mut sse).await;
}

#[actix_rt::test]
async fn carts_above_the_line_cap_are_refused() {
    let s = scene().await;
    let mut sse = s.app.subscribe(&s.customer.access, None).await;
    let line = json!({"product_id": s.product, "amount": 1});
    let cart =
        |lines: Vec<Value>| json!({"purchase_items": lines, "payment": {"currency_code": "NT"}});
    // 10,000 real lines do not fit the body limit...
    let body = cart(vec![line.clone(); 10_000]);
    s.purchase_rejected(&body, 413, "10,000 lines").await;
    // ...10,000 empty ones do, and are over the cap
    let body = cart(vec![json!({}); 10_000]);
    assert!(body.to_string().len() < 64 * 1024);
    s.purchase_rejected(&body, 400, "10,000 empty lines").await;
    // the cap is 100 lines: 101 distinct products are refused at once, 100 are bought
    let mut products = vec![s.product];
    for n in 1..=100 {
        products.push(s.app.create_product(&format!("p{n}"), 1, 10).await);
    }
    let unchanged = Unchanged::take(&s.app, &s.customer.access).await;
    let lines = |n: usize| {
        products[..n]
            .iter()
            .map(|p| json!({"product_id": p, "amount": 1}))
            .collect()
    };
    let r = s
        .app
        .post("/api/purchase", Some(&s.customer.access), &cart(lines(101)))
        .await;
    assert_rejected(&r, 400, "101 lines");
    unchanged.check(&s.app, "101 lines").await;
    s.app.assert_quiet(&mut sse).await;
    let r = s
        .app
        .post("/api/purchase", Some(&s.customer.access), &cart(lines(100)))
        .await;
    assert_eq!(
        r.status,
        201,
        "100 lines: {}",
        String::from_utf8_lossy(&r.body)
    );
    let purchase = r.json()["purchase_id"].as_u64().unwrap();
    let view = s.app.wait_finished(&s.customer.access, purchase).await;
    assert_eq!(view["status"], "SUCCEEDED", "{view}");
    assert_eq!(view["purchase_items"].as_array().unwrap().len(), 100);
}

#[actix_rt::test]
async fn the_same_product_on_two_lines_fails_at_inventory_and_changes_nothing() {
    // The contract (API.md "Inventory failure") accepts the cart and fails its saga at the
    // inventory step; here the second line also spells its keys in upper case.
    let s = scene().await;
    let mut sse = s.app.subscribe(&s.customer.access, None).await;
    let body = format!(
        r#"{{"purchase_items":[{{"product_id":{p},"amount":1}},{{"PRODUCT_ID":{p},"Amount":2}}],"payment":{{"currency_code":"NT"}}}}"#,
        p = s.product
    );
    let r = s.purchase_raw(&body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let purchase = r.json()["purchase_id"].as_u64().unwrap();
    s.app.wait_finished(&s.customer.access, purchase).await;
    s.unchanged.check(&s.app, "the same product twice").await;
    s.app
        .expect_refused_at_inventory(&mut sse, &s.customer.access, purchase)
        .await;
    assert_no_order_nor_payment(&s.app, &s.customer.access, purchase).await;
}

#[actix_rt::test]
async fn cr_lf_is_refused_where_it_could_reach_a_header_or_a_frame() {
    let s = scene().await;
    let token = s.customer.access.as_str();
    let crlf = "x\r\nSet-Cookie: a=b\r\n\r\ndata: injected";
    for field in ["name", "brand_name"] {
        s.product_rejected(field, json!(crlf), &format!("CR/LF in {field}"))
            .await;
    }
    let cases = [
        (
            "/api/account/info/person",
            json!({"firstname":crlf,"lastname":"b","email":"x@y.co"}),
        ),
        (
            "/api/account/info/person",
            json!({"firstname":"a","lastname":crlf,"email":"x@y.co"}),
        ),
        (
            "/api/account/info/person",
            json!({"firstname":"a","lastname":"b","email":"x@y.co\r\nBcc: z@y.co"}),
        ),
        (
            "/api/account/info/shipping",
            json!({"address":"a","phone_number":"1\r\n2"}),
        ),
    ];
    for (path, body) in cases {
        let r = s
            .app
            .call("PUT", path, Some(token), Some(&body.to_string()))
            .await;
        assert_rejected(&r, 400, &format!("PUT {path} {body}"));
    }
    let mut sse = s.app.subscribe(token, None).await;
    let body = json!({"purchase_items":[{"product_id":s.product,"amount":1}],"payment":{"currency_code":"NT\r\n"}});
    s.purchase_rejected(&body, 400, "CR/LF in the currency")
        .await;
    // an encoded CR/LF in a path id is a bad id, and no header comes of it
    for path in [
        "/api/product/1%0D%0ASet-Cookie:%20a=b",
        "/api/purchase/1%0d%0a",
    ] {
        let r = s.app.get(path, Some(token)).await;
        assert_rejected(&r, 400, path);
        assert!(r.header("set-cookie").is_none(), "{path}");
    }
    s.unchanged.check(&s.app, "CR/LF").await;
    s.app.assert_quiet(&mut sse).await;
}

#[actix_rt::test]
async fn authorization_headers_of_8_kib_are_an_empty_401() {
    let s = scene().await;
    let big = "a".repeat(8 * 1024);
    let jwt_like = format!("{}.{}.{}", &big[..4000], &big[..2000], &big[..2000]);
    let values = [
        format!("Bearer {big}"),
        format!("Bearer {jwt_like}"),
        big.clone(),
        format!("Bearer {} {}", &big[..4096], &big[..4096]),
        // the real token with 8 KiB of padding after it
        format!("Bearer {}{big}", s.customer.access),
    ];
    let purchase = Scene::cart(json!(s.product), json!(1)).to_string();
    for value in &values {
        let headers = [("Authorization", value.as_str())];
        for (method, path, body) in [
            ("GET", "/api/account/info/person", None),
            (
                "PUT",
                "/api/account/info/shipping",
                Some(r#"{"address":"a","phone_number":"9"}"#),
            ),
            ("POST", "/api/purchase", Some(purchase.as_str())),
            ("GET", "/api/order/1", None),
            ("GET", "/api/purchase/result", None),
        ] {
            let r = s.app.call_with_headers(method, path, &headers, body).await;
            assert_rejected(&r, 401, &format!("{method} {path} ({} bytes)", value.len()));
        }
    }
    // an 8 KiB refresh token in the body is not a token either
    let r = s
        .app
        .post(
            "/api/account/auth/refresh",
            None,
            &json!({"refresh_token": big}),
        )
        .await;
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    s.unchanged.check(&s.app, "8 KiB Authorization").await;
}
