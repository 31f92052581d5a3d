//! Bounds on what one client can hold: a trickled body times out with 408 instead of holding a
//! worker, a silent connection is closed, and a second process cannot open a data directory
//! that a running sagashop uses.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

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
