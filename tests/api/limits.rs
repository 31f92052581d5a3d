//! Bounds on what one client can hold: a trickled body times out with 408 instead of holding a
//! worker, a silent connection is closed, and a second process cannot open a data directory
//! that a running sagashop uses.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

fn address(app: &TestApp) -> String {
    app.url.trim_start_matches("http://").to_owned()
}

/// Sends a product's JSON one byte every 300 ms; answers the raw response and how long the
/// server took to give it.
fn trickle_product(addr: &str) -> (String, Duration) {
    let body = json!({"name":"slow","description":"d","brand_name":"b","price":1,"inventory":1})
        .to_string();
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        conn,
        "POST /api/product HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let started = Instant::now();
    for byte in body.bytes() {
        if conn.write_all(&[byte]).is_err() {
            break; // the server gave up on us
        }
        std::thread::sleep(Duration::from_millis(300));
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[actix_rt::test]
async fn a_trickled_body_gets_408_and_creates_nothing() {
    let app = TestApp::spawn_with(|c| c.client_request_timeout_ms = 1_000).await;
    let addr = address(&app);
    let (answer, took) = actix_rt::task::spawn_blocking(move || trickle_product(&addr))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#"{"msg":"request timeout"}"#), "{answer}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Nothing was created, and the server still answers.
    let r = app.get("/api/products?size=10", None).await;
    assert_eq!(
        r.json(),
        json!({"catalogs": null}),
        "no product was created"
    );
}

#[actix_rt::test]
async fn a_silent_connection_is_closed() {
    let app = TestApp::spawn_with(|c| c.client_request_timeout_ms = 1_000).await;
    let addr = address(&app);
    let closed = actix_rt::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        let mut buf = Vec::new();
        let read = conn.read_to_end(&mut buf);
        (
            read.is_ok(),
            started.elapsed(),
            String::from_utf8_lossy(&buf).into_owned(),
        )
    })
    .await
    .unwrap();
    let (eof, took, answer) = closed;
    assert!(eof, "the server closed the connection ({answer})");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    assert!(app.get("/healthz", None).await.status == 200);
}

#[actix_rt::test]
async fn a_second_process_cannot_open_a_data_directory_in_use() {
    let app = TestApp::spawn().await;
    let dir = app.dir.path().to_owned();
    let output = actix_rt::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sagashop"))
            .env("SAGASHOP_METRICS_LISTEN", "off")
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another sagashop process is using the data directory"),
        "{stderr}"
    );
    // The first one is unaffected.
    assert_eq!(app.get("/healthz", None).await.status, 200);
}

/// `GET /api/purchase/result` as a stream, without waiting for its first frame: the status.
async fn open_stream(
    app: &TestApp,
    token: &str,
) -> (
    u16,
    Value,
    Option<awc::ClientResponse<impl futures_util::Stream>>,
) {
    let mut res = app
        .client
        .get(format!("{}/api/purchase/result", app.url))
        .timeout(Duration::from_secs(3600))
        .insert_header(("Accept", "text/event-stream"))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send()
        .await
        .expect("answered");
    let status = res.status().as_u16();
    if status == 200 {
        return (status, Value::Null, Some(res));
    }
    let body = res.body().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap(), None)
}

#[actix_rt::test]
async fn result_streams_are_limited_per_customer_and_in_all() {
    let app = TestApp::spawn_with(|c| {
        c.sse_max_per_customer = 2;
        c.sse_max_streams = 3;
    })
    .await;
    let (a, b, c) = (
        app.sign_up().await,
        app.sign_up().await,
        app.sign_up().await,
    );
    let first = app.subscribe(&a.access, None).await;
    let _second = app.subscribe(&a.access, None).await;
    let (status, body, _) = open_stream(&app, &a.access).await;
    assert_eq!(
        (status, body),
        (429, json!({"msg": "too many result streams"}))
    );
    let _third = app.subscribe(&b.access, None).await;
    let (status, body, _) = open_stream(&app, &c.access).await;
    assert_eq!((status, body), (503, json!({"msg": "server busy"})));

    // Purchases go on while every stream is taken.
    let product = app.create_product("limited", 10, 10).await;
    let id = app.purchase_ok(&a.access, &[(product, 1)]).await;
    assert_eq!(
        app.wait_finished(&a.access, id).await["status"],
        "SUCCEEDED"
    );

    // A client that leaves frees its place: the hub does not keep closed streams.
    drop(first);
    let reopened = eventually(DEADLINE, || async {
        let (status, _, res) = open_stream(&app, &c.access).await;
        (status == 200).then_some(res)
    })
    .await;
    assert!(
        reopened.is_some(),
        "a closed stream's place was never freed"
    );
}

#[actix_rt::test]
async fn a_resumed_stream_catches_up_page_by_page_and_goes_live_without_gap_or_repeat() {
    let app = TestApp::spawn_with(|c| c.sse_replay_page = 2).await;
    let customer = app.sign_up().await;
    let product = app.create_product("paged", 10, 100).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = app.purchase_ok(&customer.access, &[(product, 1)]).await;
        app.wait_finished(&customer.access, id).await;
        ids.push(id);
    }
    // 24 events so far; resume after the third one, in pages of two, while more purchases
    // commit during the catch-up.
    let mut sse = app.subscribe(&customer.access, Some(3)).await;
    let more = app.purchase_ok(&customer.access, &[(product, 1)]).await;
    let frames = sse.take(21 + 6, Duration::from_secs(20)).await;
    let got: Vec<u64> = frames
        .iter()
        .map(|f| f.id.as_deref().unwrap().parse().unwrap())
        .collect();
    let want: Vec<u64> = (4..=30).collect();
    assert_eq!(got, want, "every missed and new event once, in order");
    let purchases: Vec<u64> = frames.iter().map(|f| result_of(f).0).collect();
    assert_eq!(purchases.last(), Some(&more));
    app.assert_quiet(&mut sse).await;
}

#[actix_rt::test]
async fn a_clock_behind_the_newest_stored_id_is_refused_at_start() {
    use sagashop::clock::Clock;
    let data = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_in(data.path(), |_| {}).await;
    let product = app.create_product("stamped", 1, 1).await;
    drop(app);

    let config = sagashop::config::Config::embedded(data.path());
    let an_hour_ago = Clock::fixed(Clock::system().now_ms() - 3_600_000);
    let refused = sagashop::app::start_with(&config, an_hour_ago).await;
    let message = refused.err().expect("refused").to_string();
    assert!(message.contains("behind the newest stored id"), "{message}");

    // With the right time it starts, its data intact.
    let app = TestApp::spawn_in(data.path(), |_| {}).await;
    assert_eq!(app.inventory(product).await, 1);
}

#[actix_rt::test]
async fn finished_step_logs_are_pruned_after_retention_and_a_resume_says_so() {
    let app = TestApp::spawn_with(|c| {
        c.retain_days = 1;
        c.prune_every_seconds = 1;
    })
    .await;
    let customer = app.sign_up().await;
    let product = app.create_product("retained", 10, 10).await;
    let old = app.purchase_ok(&customer.access, &[(product, 1)]).await;
    app.wait_finished(&customer.access, old).await;

    app.clock.advance(Duration::from_secs(2 * 86_400));
    // The old tokens expired meanwhile: log in again.
    let login = app
        .post(
            "/api/account/auth/login",
            None,
            &json!({"email": customer.email, "password": "abcd5432"}),
        )
        .await;
    let token = login.json()["access_token"].as_str().unwrap().to_owned();
    let view = eventually(DEADLINE, || async {
        let v = app.purchase_view(&token, old).await;
        v["steps"].as_array().unwrap().is_empty().then_some(v)
    })
    .await
    .expect("the finished saga's log was pruned");
    assert_eq!(view["status"], "SUCCEEDED", "its outcome is kept");

    // A stream resumed from before the pruned events is told, then gets what is new.
    let mut sse = app.subscribe(&token, Some(0)).await;
    let notice = sse.next_block(Duration::from_secs(5)).await.unwrap();
    assert!(
        notice.comments.iter().any(|c| c.contains("pruned")),
        "{}",
        notice.raw
    );
    let new = app.purchase_ok(&token, &[(product, 1)]).await;
    let frames = sse.take(6, Duration::from_secs(10)).await;
    assert!(frames.iter().all(|f| result_of(f).0 == new));
    let first: u64 = frames[0].id.as_deref().unwrap().parse().unwrap();
    assert!(first > 6, "new ids follow the pruned ones: {first}");
}

#[actix_rt::test]
async fn the_open_file_limit_is_raised_to_the_hard_limit_at_start() {
    use rlimit::Resource;
    // Lower the soft limit first, as a distribution's default would be.
    let (_, hard) = Resource::NOFILE.get().unwrap();
    Resource::NOFILE.set(hard.min(1024), hard).unwrap();
    let app = TestApp::spawn().await;
    let (soft, hard_after) = Resource::NOFILE.get().unwrap();
    assert_eq!(hard_after, hard);
    assert_eq!(soft, hard, "every connection and stream needs a descriptor");
    assert_eq!(app.get("/healthz", None).await.status, 200);
}
