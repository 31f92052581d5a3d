//! Account scenarios (ORIGINAL.md §16 items 1-18, with API.md's "Deliberately better" changes):
//! sign-up, login, refresh, the JWT layout, bearer extraction, person and shipping info.

use std::time::Duration;

use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

const SIGNUP: &str = "/api/account/auth/signup";
const LOGIN: &str = "/api/account/auth/login";
const REFRESH: &str = "/api/account/auth/refresh";
const PERSON: &str = "/api/account/info/person";
const SHIPPING: &str = "/api/account/info/shipping";
/// `{"alg":"HS256","typ":"JWT"}`, base64url, as the original emits it.
const JWT_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fresh email and phone number.
fn identity() -> (String, String) {
    let n = unique();
    (format!("acct{n}@ex.com"), format!("{n}"))
}

fn signup_body(email: &str, phone: &str) -> Value {
    json!({"password":"abcd5432","firstname":"ming","lastname":"hsu","email":email,"address":"taipei","phone_number":phone})
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Asserts `status` and exactly the body `{"msg": msg}`.
#[track_caller]
fn assert_msg(r: &Reply, status: u16, msg: &str) {
    assert_eq!(r.status, status, "body: {}", text(r));
    assert_eq!(r.json(), json!({ "msg": msg }), "status {status}");
}

/// Asserts 401 with an empty body (missing or invalid token).
#[track_caller]
fn assert_unauthorized(r: &Reply, case: &str) {
    assert_eq!(r.status, 401, "{case}: body {}", text(r));
    assert!(r.body.is_empty(), "{case}: body {:?}", text(r));
}

/// `(header segment, payload JSON, payload text)` of a JWT.
fn jwt_parts(token: &str) -> (String, Value, String) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a 3-part JWT: {token}");
    assert!(!parts[2].is_empty(), "unsigned JWT: {token}");
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    (
        parts[0].to_owned(),
        serde_json::from_str(&raw).unwrap(),
        raw,
    )
}

/// A token pair body: exactly `refresh_token` and `access_token`, both strings.
#[track_caller]
fn token_pair(r: &Reply, status: u16) -> (String, String) {
    assert_eq!(r.status, status, "body: {}", text(r));
    let j = r.json();
    let obj = j.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["access_token", "refresh_token"]);
    (
        j["access_token"].as_str().unwrap().to_owned(),
        j["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// An HS256 token with these claims, signed with `secret`.
fn forge(secret: &str, claims: &Value) -> String {
    forge_with(jsonwebtoken::Algorithm::HS256, secret, claims)
}

/// A token with these claims, signed with `secret` by `algorithm`.
fn forge_with(algorithm: jsonwebtoken::Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// The secret the embedded app generated in its data directory.
fn app_secret(app: &TestApp) -> String {
    std::fs::read_to_string(app.dir.path().join("jwt_secret"))
        .unwrap()
        .trim()
        .to_owned()
}

async fn login(app: &Api, email: &str, password: &str) -> Reply {
    app.post(LOGIN, None, &json!({"email": email, "password": password}))
        .await
}

async fn person(app: &Api, token: &str) -> Value {
    let r = app.get(PERSON, Some(token)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    r.json()
}

async fn shipping(app: &Api, token: &str) -> Value {
    let r = app.get(SHIPPING, Some(token)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    r.json()
}

/// Polls `GET path` until it shows `want` (the contract allows up to 1 s of propagation).
async fn eventually_shows(app: &Api, path: &str, token: &str, want: &Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let r = app.get(path, Some(token)).await;
        assert_eq!(r.status, 200);
        if &r.json() == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} still shows {} instead of {want}",
            r.json()
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Items 1-4: sign-up

pub(crate) async fn signup_returns_201_and_a_token_pair_in_the_original_jwt_layout(app: &Api) {
    let (email, phone) = identity();
    let before = now();
    let r = app.post(SIGNUP, None, &signup_body(&email, &phone)).await;
    let after = now();
    let (access, refresh) = token_pair(&r, 201);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );

    let (ah, ap, araw) = jwt_parts(&access);
    let (rh, rp, rraw) = jwt_parts(&refresh);
    assert_eq!(ah, JWT_HEADER);
    assert_eq!(rh, JWT_HEADER);
    let id = ap["CustomerID"].as_u64().expect("CustomerID is a u64");
    assert!(id > 1 << 53, "sonyflake id expected, got {id}");
    assert_eq!(rp["CustomerID"].as_u64(), Some(id));
    assert_eq!(ap["Refresh"], json!(false));
    assert_eq!(rp["Refresh"], json!(true));
    let aexp = ap["exp"].as_u64().unwrap();
    let rexp = rp["exp"].as_u64().unwrap();
    assert!(
        (before + 10800..=after + 10800).contains(&aexp),
        "access exp {aexp}"
    );
    assert!(
        (before + 86400..=after + 86400).contains(&rexp),
        "refresh exp {rexp}"
    );
    // exactly the original's claims, in its key order
    assert_eq!(
        araw,
        format!(r#"{{"CustomerID":{id},"Refresh":false,"exp":{aexp}}}"#)
    );
    // the refresh token adds the account's token version after them (see security.rs)
    assert_eq!(
        rraw,
        format!(r#"{{"CustomerID":{id},"Refresh":true,"exp":{rexp},"TokenVersion":0}}"#)
    );

    // the new customer can read its own info with the access token
    assert_eq!(
        person(app, &access).await,
        json!({"firstname":"ming","lastname":"hsu","email":email})
    );
    assert_eq!(
        shipping(app, &access).await,
        json!({"address":"taipei","phone_number":phone})
    );
}

pub(crate) async fn duplicate_email_in_any_case_and_duplicate_phone_are_400_and_create_nothing(
    app: &Api,
) {
    let (email, phone) = identity();
    let r = app.post(SIGNUP, None, &signup_body(&email, &phone)).await;
    assert_eq!(r.status, 201);

    let (_, other_phone) = identity();
    let r = app
        .post(SIGNUP, None, &signup_body(&email, &other_phone))
        .await;
    assert_msg(&r, 400, "duplicate entry");
    let r = app
        .post(
            SIGNUP,
            None,
            &signup_body(&email.to_uppercase(), &other_phone),
        )
        .await;
    assert_msg(&r, 400, "duplicate entry");

    let (other_email, _) = identity();
    let r = app
        .post(SIGNUP, None, &signup_body(&other_email, &phone))
        .await;
    assert_msg(&r, 400, "duplicate entry");

    // the rejected attempts left the other email and the other phone free
    let r = app
        .post(SIGNUP, None, &signup_body(&other_email, &other_phone))
        .await;
    assert_eq!(r.status, 201, "{}", text(&r));
    // and the original customer still logs in with its password
    token_pair(&login(app, &email, "abcd5432").await, 200);
}

pub(crate) async fn signup_validation_failures_are_400_invalid_parameter_and_create_nothing(
    app: &Api,
) {
    let (email, phone) = identity();
    let good = signup_body(&email, &phone);
    let with = |key: &str, value: Value| {
        let mut b = good.clone();
        b[key] = value;
        b.to_string()
    };
    let without = |key: &str| {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(key);
        b.to_string()
    };
    let cases: Vec<(&str, String)> = vec![
        ("email not-an-email", with("email", json!("not-an-email"))),
        ("email a@b", with("email", json!("a@b"))),
        ("email ab.com", with("email", json!("ab.com"))),
        ("email a@.com", with("email", json!("a@.com"))),
        ("email a@b.1", with("email", json!("a@b.1"))),
        ("password 7 chars", with("password", json!("abcd543"))),
        (
            "password 129 chars",
            with("password", json!("a".repeat(129))),
        ),
        ("password missing", without("password")),
        ("address missing", without("address")),
        ("phone missing", without("phone_number")),
        ("lastname missing", without("lastname")),
        ("email missing", without("email")),
        ("firstname empty", with("firstname", json!(""))),
        ("firstname a number", with("firstname", json!(5))),
        ("not json", "not json".to_owned()),
        ("empty body", String::new()),
        ("json array", "[]".to_owned()),
    ];
    for (case, body) in cases {
        let r = app.call("POST", SIGNUP, None, Some(&body)).await;
        assert_eq!(r.status, 400, "{case}: {}", text(&r));
        assert_eq!(r.json(), json!({"msg":"invalid parameter"}), "{case}");
    }
    // none of the rejected requests created the customer: the same email and phone are free
    let r = app.post(SIGNUP, None, &good).await;
    assert_eq!(r.status, 201, "{}", text(&r));

    // password length bounds are inclusive: exactly 8 and exactly 128 characters are fine
    for password in ["abcd5432".to_owned(), "b".repeat(128)] {
        let (email, phone) = identity();
        let mut b = signup_body(&email, &phone);
        b["password"] = json!(password);
        let r = app.post(SIGNUP, None, &b).await;
        assert_eq!(r.status, 201, "password of {} chars", password.len());
        token_pair(&login(app, &email, &password).await, 200);
    }
}

// ---------------------------------------------------------------------------------------------
// Items 5-8: login

pub(crate) async fn login_ok_wrong_password_unknown_email_and_validation(app: &Api) {
    let c = app.sign_up().await;

    let (access, refresh) = token_pair(&login(app, &c.email, "abcd5432").await, 200);
    assert_eq!(customer_of(&access), c.id);
    assert_eq!(customer_of(&refresh), c.id);
    assert_eq!(jwt_parts(&refresh).1["Refresh"], json!(true));
    assert_eq!(person(app, &access).await["email"], json!(c.email));

    assert_msg(
        &login(app, &c.email, "abcd5433").await,
        401,
        "authentication failed",
    );
    let (never_used, _) = identity();
    assert_msg(
        &login(app, &never_used, "abcd5432").await,
        404,
        "customer not found",
    );

    let cases: Vec<(&str, String)> = vec![
        ("password missing", json!({"email": c.email}).to_string()),
        (
            "password empty",
            json!({"email": c.email, "password": ""}).to_string(),
        ),
        (
            "email x",
            json!({"email": "x", "password": "abcd5432"}).to_string(),
        ),
        ("email missing", json!({"password": "abcd5432"}).to_string()),
        ("not json", "not json".to_owned()),
        ("empty body", String::new()),
    ];
    for (case, body) in cases {
        let r = app.call("POST", LOGIN, None, Some(&body)).await;
        assert_eq!(r.status, 400, "{case}: {}", text(&r));
        assert_eq!(r.json(), json!({"msg":"invalid parameter"}), "{case}");
    }
    // the failed attempts locked nothing out
    token_pair(&login(app, &c.email, "abcd5432").await, 200);
}

pub(crate) async fn unknown_email_becomes_loggable_as_soon_as_it_signs_up(app: &Api) {
    let (email, phone) = identity();
    assert_msg(
        &login(app, &email, "abcd5432").await,
        404,
        "customer not found",
    );
    let r = app.post(SIGNUP, None, &signup_body(&email, &phone)).await;
    let (access, _) = token_pair(&r, 201);
    let (login_access, _) = token_pair(&login(app, &email, "abcd5432").await, 200);
    assert_eq!(customer_of(&login_access), customer_of(&access));
}

// ---------------------------------------------------------------------------------------------
// Items 9-11: refresh

pub(crate) async fn refresh_issues_a_new_pair_without_rotation(app: &Api) {
    let c = app.sign_up().await;
    let body = json!({"refresh_token": c.refresh});

    let (access1, refresh1) = token_pair(&app.post(REFRESH, None, &body).await, 200);
    let (access2, _) = token_pair(&app.post(REFRESH, None, &body).await, 200);
    for t in [&access1, &refresh1, &access2] {
        assert_eq!(customer_of(t), c.id);
    }
    assert_eq!(jwt_parts(&access1).1["Refresh"], json!(false));
    assert_eq!(jwt_parts(&refresh1).1["Refresh"], json!(true));
    assert_eq!(person(app, &access1).await["email"], json!(c.email));
    assert_eq!(person(app, &access2).await["email"], json!(c.email));
    // the refresh token obtained from refresh works too, and the old access token still does
    token_pair(
        &app.post(REFRESH, None, &json!({"refresh_token": refresh1}))
            .await,
        200,
    );
    assert_eq!(person(app, &c.access).await["email"], json!(c.email));
}

#[actix_rt::test]
async fn refresh_rejects_access_tokens_garbage_and_missing_fields() {
    let app = TestApp::spawn().await;
    let c = app.sign_up().await;
    let refresh = |t: &str| json!({ "refresh_token": t });

    assert_msg(
        &app.post(REFRESH, None, &refresh(&c.access)).await,
        401,
        "invalid token",
    );
    assert_msg(
        &app.post(REFRESH, None, &refresh("garbage")).await,
        401,
        "invalid token",
    );
    let other = forge(
        "another-secret",
        &json!({"CustomerID": c.id, "Refresh": true, "exp": now() + 600}),
    );
    assert_msg(
        &app.post(REFRESH, None, &refresh(&other)).await,
        401,
        "invalid token",
    );
    assert_msg(
        &app.post(REFRESH, None, &json!({})).await,
        400,
        "invalid parameter",
    );
    assert_msg(
        &app.post(REFRESH, None, &refresh("")).await,
        400,
        "invalid parameter",
    );
    let r = app.call("POST", REFRESH, None, Some("not json")).await;
    assert_msg(&r, 400, "invalid parameter");

    // a correctly signed refresh token for a customer that does not exist
    let ghost = forge(
        &app_secret(&app),
        &json!({"CustomerID": 12345u64, "Refresh": true, "exp": now() + 600}),
    );
    assert_msg(
        &app.post(REFRESH, None, &refresh(&ghost)).await,
        404,
        "customer not found",
    );
}

#[actix_rt::test]
async fn expired_refresh_token_is_token_expired_only_when_the_signature_is_good() {
    let app = TestApp::spawn_with(|c| c.jwt_refresh_token_expire_second = 60).await;
    let c = app.sign_up().await;
    let body = json!({"refresh_token": c.refresh});
    token_pair(&app.post(REFRESH, None, &body).await, 200);

    app.clock.advance(Duration::from_secs(61));
    assert_msg(&app.post(REFRESH, None, &body).await, 401, "token expired");

    let past = now() - 10;
    let wrong_secret = forge(
        "another-secret",
        &json!({"CustomerID": c.id, "Refresh": true, "exp": past}),
    );
    assert_msg(
        &app.post(REFRESH, None, &json!({"refresh_token": wrong_secret}))
            .await,
        401,
        "invalid token",
    );
    let right_secret = forge(
        &app_secret(&app),
        &json!({"CustomerID": c.id, "Refresh": true, "exp": past}),
    );
    assert_msg(
        &app.post(REFRESH, None, &json!({"refresh_token": right_secret}))
            .await,
        401,
        "token expired",
    );
    // the customer can still log in and get a working pair
    let (access, _) = token_pair(&login(&app, &c.email, "abcd5432").await, 200);
    assert_eq!(person(&app, &access).await["email"], json!(c.email));
}

// ---------------------------------------------------------------------------------------------
// Items 12-14: bearer extraction and access-token checks

pub(crate) async fn any_scheme_word_is_accepted_before_the_token(app: &Api) {
    let c = app.sign_up().await;
    let want = json!({"firstname":"ming","lastname":"hsu","email":c.email});
    for scheme in ["Bearer", "bearer", "Token"] {
        let auth = format!("{scheme} {}", c.access);
        let r = app
            .call_with_headers("GET", PERSON, &[("Authorization", &auth)], None)
            .await;
        assert_eq!(r.status, 200, "scheme {scheme}: {}", text(&r));
        assert_eq!(r.json(), want, "scheme {scheme}");
    }
}

#[actix_rt::test]
async fn every_unusable_authorization_is_401_with_an_empty_body() {
    let app = TestApp::spawn().await;
    let c = app.sign_up().await;
    let secret = app_secret(&app);
    let other_secret = forge(
        "another-secret",
        &json!({"CustomerID": c.id, "Refresh": false, "exp": now() + 600}),
    );
    let other_secret_expired = forge(
        "another-secret",
        &json!({"CustomerID": c.id, "Refresh": false, "exp": now() - 10}),
    );
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(format!(
            r#"{{"CustomerID":{},"Refresh":false,"exp":{}}}"#,
            c.id,
            now() + 600
        ))
    );
    // The contract's tokens are HS256: another HMAC with the right secret is not one.
    let [hs384, hs512] = [
        jsonwebtoken::Algorithm::HS384,
        jsonwebtoken::Algorithm::HS512,
    ]
    .map(|alg| {
        forge_with(
            alg,
            &secret,
            &json!({"CustomerID": c.id, "Refresh": false, "exp": now() + 600}),
        )
    });
    let tampered = {
        // a valid token whose signature belongs to another customer id
        let good = forge(
            &secret,
            &json!({"CustomerID": c.id, "Refresh": false, "exp": now() + 600}),
        );
        let sig = good.rsplit('.').next().unwrap().to_owned();
        let mut other = forge(
            &secret,
            &json!({"CustomerID": c.id + 1, "Refresh": false, "exp": now() + 600}),
        );
        other.truncate(other.rfind('.').unwrap() + 1);
        other + &sig
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("Bearer alone", Some("Bearer".to_owned())),
        ("two spaces", Some(format!("Bearer  {}", c.access))),
        ("three words", Some(format!("Bearer {} x", c.access))),
        ("token alone", Some(c.access.clone())),
        ("refresh token", Some(format!("Bearer {}", c.refresh))),
        ("garbage", Some("Bearer abc".to_owned())),
        ("another secret", Some(format!("Bearer {other_secret}"))),
        (
            "another secret, expired",
            Some(format!("Bearer {other_secret_expired}")),
        ),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        ("HS384, right secret", Some(format!("Bearer {hs384}"))),
        ("HS512, right secret", Some(format!("Bearer {hs512}"))),
        ("tampered payload", Some(format!("Bearer {tampered}"))),
    ];
    for (case, header) in &cases {
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|h| vec![("Authorization", h)])
            .unwrap_or_default();
        for (method, path, body) in [
            ("GET", PERSON, None),
            ("GET", SHIPPING, None),
            (
                "PUT",
                SHIPPING,
                Some(r#"{"address":"x","phone_number":"1"}"#),
            ),
            ("GET", "/api/order/1", None),
            ("GET", "/api/payment/1", None),
            ("POST", "/api/purchase", Some("{}")),
        ] {
            let r = app.call_with_headers(method, path, &headers, body).await;
            assert_unauthorized(&r, &format!("{case} on {method} {path}"));
        }
    }
    // nothing above changed the shipping info
    assert_eq!(shipping(&app, &c.access).await["address"], json!("taipei"));
}

#[actix_rt::test]
async fn expired_access_token_is_401_token_expired_everywhere() {
    let app = TestApp::spawn_with(|c| c.jwt_access_token_expire_second = 60).await;
    let p = app.create_product("expiring", 10, 10).await;
    let c = app.sign_up().await;
    assert_eq!(person(&app, &c.access).await["email"], json!(c.email));

    app.clock.advance(Duration::from_secs(61));
    assert_msg(
        &app.get(PERSON, Some(&c.access)).await,
        401,
        "token expired",
    );
    assert_msg(
        &app.get("/api/order/1", Some(&c.access)).await,
        401,
        "token expired",
    );
    assert_msg(
        &app.purchase(&c.access, &[(p, 1)]).await,
        401,
        "token expired",
    );
    assert_eq!(app.inventory(p).await, 10, "expired token bought something");

    // the (longer-lived) refresh token still yields a working access token
    let (access, _) = token_pair(
        &app.post(REFRESH, None, &json!({"refresh_token": c.refresh}))
            .await,
        200,
    );
    assert_eq!(person(&app, &access).await["email"], json!(c.email));
}

// ---------------------------------------------------------------------------------------------
// Items 15-18: person and shipping info

pub(crate) async fn update_person_validates_after_auth_rejects_duplicates_and_applies(app: &Api) {
    let c = app.sign_up().await;
    let other = app.sign_up().await;
    let original = json!({"firstname":"ming","lastname":"hsu","email":c.email});

    // no token: 401 even when the body is bad (auth is checked first)
    for body in [
        "not json",
        r#"{"firstname":"new","lastname":"name","email":"new@ex.com"}"#,
    ] {
        let r = app.call("PUT", PERSON, None, Some(body)).await;
        assert_unauthorized(&r, &format!("no token, body {body}"));
    }

    let cases: Vec<(&str, String)> = vec![
        (
            "email missing",
            json!({"firstname":"new","lastname":"name"}).to_string(),
        ),
        (
            "email invalid",
            json!({"firstname":"new","lastname":"name","email":"not-an-email"}).to_string(),
        ),
        (
            "firstname missing",
            json!({"lastname":"name","email":"x1@ex.com"}).to_string(),
        ),
        (
            "lastname empty",
            json!({"firstname":"new","lastname":"","email":"x1@ex.com"}).to_string(),
        ),
        ("not json", "not json".to_owned()),
        ("empty body", String::new()),
    ];
    for (case, body) in cases {
        let r = app.call("PUT", PERSON, Some(&c.access), Some(&body)).await;
        assert_eq!(r.status, 400, "{case}: {}", text(&r));
        assert_eq!(r.json(), json!({"msg":"invalid parameter"}), "{case}");
    }
    assert_eq!(person(app, &c.access).await, original);

    // another customer's email, in any case: 400 duplicate entry (the original answered 500)
    for email in [other.email.clone(), other.email.to_uppercase()] {
        let r = app
            .call(
                "PUT",
                PERSON,
                Some(&c.access),
                Some(&json!({"firstname":"new","lastname":"name","email":email}).to_string()),
            )
            .await;
        assert_msg(&r, 400, "duplicate entry");
    }
    assert_eq!(person(app, &c.access).await, original);
    assert_eq!(
        person(app, &other.access).await["email"],
        json!(other.email)
    );

    // keeping one's own email is not a duplicate
    let same = json!({"firstname":"mingx","lastname":"hsux","email":c.email});
    let r = app
        .call("PUT", PERSON, Some(&c.access), Some(&same.to_string()))
        .await;
    assert_msg(&r, 200, "ok");
    eventually_shows(app, PERSON, &c.access, &same).await;

    let new_email = format!("new{}@ex.com", unique());
    let new = json!({"firstname":"new","lastname":"name","email":new_email});
    let r = app
        .call("PUT", PERSON, Some(&c.access), Some(&new.to_string()))
        .await;
    assert_msg(&r, 200, "ok");
    eventually_shows(app, PERSON, &c.access, &new).await;
    // shipping info is untouched by a person update
    assert_eq!(shipping(app, &c.access).await["address"], json!("taipei"));
}

pub(crate) async fn email_change_takes_effect_for_login_at_once(app: &Api) {
    let c = app.sign_up().await;
    // warm whatever cache login uses for the old email
    token_pair(&login(app, &c.email, "abcd5432").await, 200);

    let new_email = format!("moved{}@ex.com", unique());
    let r = app
        .call(
            "PUT",
            PERSON,
            Some(&c.access),
            Some(&json!({"firstname":"ming","lastname":"hsu","email":new_email}).to_string()),
        )
        .await;
    assert_msg(&r, 200, "ok");

    assert_msg(
        &login(app, &c.email, "abcd5432").await,
        404,
        "customer not found",
    );
    let (access, _) = token_pair(&login(app, &new_email, "abcd5432").await, 200);
    assert_eq!(customer_of(&access), c.id);

    // the old email is free again for a new customer
    let n = unique();
    let r = app
        .post(SIGNUP, None, &signup_body(&c.email, &format!("{n}")))
        .await;
    let (fresh, _) = token_pair(&r, 201);
    assert_ne!(customer_of(&fresh), c.id);
}

pub(crate) async fn shipping_get_put_validation_and_duplicate_phone(app: &Api) {
    let (email, phone) = identity();
    let (access, _) = token_pair(
        &app.post(SIGNUP, None, &signup_body(&email, &phone)).await,
        201,
    );
    let other = app.sign_up().await;
    let other_phone = shipping(app, &other.access).await["phone_number"].clone();
    let original = json!({"address":"taipei","phone_number":phone});
    assert_eq!(shipping(app, &access).await, original);

    let r = app
        .call(
            "PUT",
            SHIPPING,
            None,
            Some(r#"{"address":"japan","phone_number":"54321"}"#),
        )
        .await;
    assert_unauthorized(&r, "no token");

    let cases: Vec<(&str, String)> = vec![
        ("phone missing", json!({"address":"japan"}).to_string()),
        (
            "address missing",
            json!({"phone_number":"54321"}).to_string(),
        ),
        (
            "phone empty",
            json!({"address":"japan","phone_number":""}).to_string(),
        ),
        (
            "phone a number",
            json!({"address":"japan","phone_number":54321}).to_string(),
        ),
        ("not json", "not json".to_owned()),
    ];
    for (case, body) in cases {
        let r = app.call("PUT", SHIPPING, Some(&access), Some(&body)).await;
        assert_eq!(r.status, 400, "{case}: {}", text(&r));
        assert_eq!(r.json(), json!({"msg":"invalid parameter"}), "{case}");
    }
    assert_eq!(shipping(app, &access).await, original);

    // another customer's phone: 400 duplicate entry (the original answered 500)
    let r = app
        .call(
            "PUT",
            SHIPPING,
            Some(&access),
            Some(&json!({"address":"japan","phone_number":other_phone}).to_string()),
        )
        .await;
    assert_msg(&r, 400, "duplicate entry");
    assert_eq!(shipping(app, &access).await, original);

    let new_phone = format!("5{}", unique());
    let new = json!({"address":"japan","phone_number":new_phone});
    let r = app
        .call("PUT", SHIPPING, Some(&access), Some(&new.to_string()))
        .await;
    assert_msg(&r, 200, "ok");
    eventually_shows(app, SHIPPING, &access, &new).await;
    // person info is untouched by a shipping update
    assert_eq!(
        person(app, &access).await,
        json!({"firstname":"ming","lastname":"hsu","email":email})
    );
    // the old phone number is free again
    let (fresh_email, _) = identity();
    let r = app
        .post(SIGNUP, None, &signup_body(&fresh_email, &phone))
        .await;
    assert_eq!(r.status, 201, "{}", text(&r));
}

/// The flows of this file, each on an in-process app of its own (`cluster_blackbox` runs
/// them on the cluster too).
mod embedded {
    use crate::support::*;

    flow_tests!(
        Some(TestApp::spawn().await); super =>
        signup_returns_201_and_a_token_pair_in_the_original_jwt_layout,
        duplicate_email_in_any_case_and_duplicate_phone_are_400_and_create_nothing,
        signup_validation_failures_are_400_invalid_parameter_and_create_nothing,
        login_ok_wrong_password_unknown_email_and_validation,
        unknown_email_becomes_loggable_as_soon_as_it_signs_up,
        refresh_issues_a_new_pair_without_rotation,
        any_scheme_word_is_accepted_before_the_token,
        update_person_validates_after_auth_rejects_duplicates_and_applies,
        email_change_takes_effect_for_login_at_once,
        shipping_get_put_validation_and_duplicate_phone,
    );
}
