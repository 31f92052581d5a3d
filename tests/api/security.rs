//! Issue 8 §3: login throttling (429 with `Retry-After`, per email and per email and client
//! address, `X-Forwarded-For` only from `--trusted-proxies`) and refresh tokens ended by an
//! email change.

use std::time::Duration;

use crate::support::*;
use serde_json::{Value, json};

const LOGIN: &str = "/api/account/auth/login";
const REFRESH: &str = "/api/account/auth/refresh";
const PERSON: &str = "/api/account/info/person";
const PASSWORD: &str = "abcd5432";

/// A login from `forwarded_for` (as `X-Forwarded-For`, when given).
async fn login_from(
    app: &TestApp,
    email: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> Reply {
    let body = json!({"email": email, "password": password}).to_string();
    let headers: Vec<(&str, &str)> = forwarded_for
        .map(|a| vec![("X-Forwarded-For", a)])
        .unwrap_or_default();
    app.call_with_headers("POST", LOGIN, &headers, Some(&body))
        .await
}

async fn login(app: &TestApp, email: &str, password: &str) -> Reply {
    login_from(app, email, password, None).await
}

/// Asserts `status` and exactly the body `{"msg": msg}`.
#[track_caller]
fn assert_msg(r: &Reply, status: u16, msg: &str) {
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, status, "body: {body}");
    assert_eq!(r.json(), json!({ "msg": msg }), "status {status}");
}

/// Asserts a 429 in the error envelope; returns its `Retry-After` seconds.
#[track_caller]
fn assert_throttled(r: &Reply) -> u64 {
    assert_msg(r, 429, "too many requests");
    let retry = r.header("retry-after").expect("Retry-After");
    retry
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {retry}"))
}

/// Asserts 200 with a token pair; returns (access, refresh).
#[track_caller]
fn assert_pair(r: &Reply) -> (String, String) {
    assert_eq!(r.status, 200, "body: {}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    let token = |k: &str| j[k].as_str().unwrap().to_owned();
    (token("access_token"), token("refresh_token"))
}

#[actix_rt::test]
async fn a_login_flood_gets_429_without_an_oracle_and_locks_no_other_customer_out() {
    let app = TestApp::spawn().await;
    let victim = app.sign_up().await;
    let neighbour = app.sign_up().await;
    // the default: 5 failures of one email from one address
    for _ in 0..5 {
        let r = login(&app, &victim.email, "wrong-password").await;
        assert_msg(&r, 401, "authentication failed");
    }
    let retry = assert_throttled(&login(&app, &victim.email, "wrong-password").await);
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // the right password during the lockout is refused the same way: no oracle
    assert_throttled(&login(&app, &victim.email, PASSWORD).await);
    // another customer from the same address (all tests come from 127.0.0.1) logs in
    assert_pair(&login(&app, &neighbour.email, PASSWORD).await);
    // the victim's tokens and other routes are not affected
    assert_eq!(app.get(PERSON, Some(&victim.access)).await.status, 200);
    // unknown emails are counted alike (429 says nothing about existence)
    let nobody = format!("nobody{}@ex.com", unique());
    for _ in 0..5 {
        assert_msg(
            &login(&app, &nobody, PASSWORD).await,
            404,
            "customer not found",
        );
    }
    assert_throttled(&login(&app, &nobody, PASSWORD).await);

    // once Retry-After has passed, the right password works again
    app.clock.advance(Duration::from_secs(retry));
    assert_pair(&login(&app, &victim.email, PASSWORD).await);
}

#[actix_rt::test]
async fn x_forwarded_for_is_believed_only_from_a_trusted_proxy() {
    // (trusted proxies, what the second client's right password gets)
    for (trusted, second_client) in [("127.0.0.1", 200), ("", 429)] {
        let app = TestApp::spawn_with(|c| c.trusted_proxies = trusted.parse().unwrap()).await;
        let c = app.sign_up().await;
        let first = Some("203.0.113.7");
        for _ in 0..5 {
            let r = login_from(&app, &c.email, "wrong-password", first).await;
            assert_msg(&r, 401, "authentication failed");
        }
        assert_throttled(&login_from(&app, &c.email, PASSWORD, first).await);
        // another client of the proxy: its own budget only when the proxy is trusted;
        // otherwise the header is ignored and both are the peer 127.0.0.1
        let r = login_from(&app, &c.email, PASSWORD, Some("198.51.100.8")).await;
        assert_eq!(r.status, second_client, "trusted proxies {trusted:?}");
    }
}

#[actix_rt::test]
async fn an_email_change_ends_the_refresh_tokens_issued_before_it() {
    let app = TestApp::spawn().await;
    let c = app.sign_up().await;
    let refresh = async |token: &str| {
        app.post(REFRESH, None, &json!({ "refresh_token": token }))
            .await
    };
    let put_person = async |body: Value| {
        let r = app
            .call("PUT", PERSON, Some(&c.access), Some(&body.to_string()))
            .await;
        assert_msg(&r, 200, "ok");
    };
    let (_, refreshed) = assert_pair(&refresh(&c.refresh).await);

    // a new name with the same email (in another case) keeps the sessions
    put_person(json!({"firstname":"new","lastname":"name","email":c.email.to_uppercase()})).await;
    assert_pair(&refresh(&c.refresh).await);

    let new_email = format!("moved{}@ex.com", unique());
    put_person(json!({"firstname":"new","lastname":"name","email":new_email})).await;
    for old in [&c.refresh, &refreshed] {
        assert_msg(&refresh(old).await, 401, "invalid token");
    }
    // access tokens are not looked up: the one issued before lives until it expires
    let r = app.get(PERSON, Some(&c.access)).await;
    assert_eq!(r.json()["email"], json!(new_email));
    // a login with the new email gets a refresh token that works
    let (_, fresh) = assert_pair(&login(&app, &new_email, PASSWORD).await);
    assert_pair(&refresh(&fresh).await);
}
