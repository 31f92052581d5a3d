//! Crash recovery on the embedded default: the real binary is killed with SIGKILL while
//! sagas are in flight, started again on the same data directory, and every purchase must
//! reach a terminal state with stock conserved and no order or payment doubled or left over.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use awc::Client;
use futures_util::StreamExt;
use sagashop::sse_client::Parser;
use serde_json::{Value, json};

use crate::support::{DEADLINE, eventually, free_port, result_of};

struct Node {
    child: Child,
    url: String,
}

impl Node {
    /// SIGKILL, as a crash would.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn start(dir: &std::path::Path, port: u16) -> Node {
    let node = Node {
        child: Command::new(env!("CARGO_BIN_EXE_sagashop"))
            .env("SAGASHOP_METRICS_LISTEN", "off")
            .args([
                "--data-dir",
                dir.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("node.log"))
                    .unwrap(),
            ))
            .spawn()
            .expect("sagashop starts"),
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = Client::default();
    let healthy = eventually(DEADLINE, || async {
        let r = client.get(format!("{}/healthz", node.url)).send().await;
        r.is_ok_and(|r| r.status().is_success()).then_some(())
    })
    .await;
    healthy.expect("sagashop did not become healthy");
    node
}

async fn call(
    client: &Client,
    method: &str,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client.request(
        awc::http::Method::from_bytes(method.as_bytes()).unwrap(),
        url,
    );
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    let res = match body {
        Some(b) => req.send_body(b.to_string()).await,
        None => req.send().await,
    };
    match res {
        Ok(mut res) => {
            let body = res.body().await.unwrap_or_default();
            (
                res.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )
        }
        Err(_) => (0, Value::Null),
    }
}

/// Every purchase id the customer's step log mentions (replayed with `Last-Event-ID: 0`), read
/// until the frames of a marker purchase (refused at the inventory step: more than the
/// product's stock, so it changes nothing), which are published after everything logged so far.
/// Returns the ids (the marker's not among them) and the marker's id.
async fn purchases_in_log(
    client: &Client,
    url: &str,
    token: &str,
    product: u64,
) -> (BTreeSet<u64>, u64) {
    let mut res = client
        .get(format!("{url}/api/purchase/result"))
        .timeout(Duration::from_secs(3600))
        .insert_header(("Accept", "text/event-stream"))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .insert_header(("Last-Event-ID", "0"))
        .send()
        .await
        .unwrap();
    let mut parser = Parser::default();
    let mut frames = Vec::new();
    let mut marker = None;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        while let Some(frame) = parser.next_frame() {
            if frame.is_comment_only() {
                continue;
            }
            if frame.data == "null" {
                // Subscribed (and the replay is on its way): now the marker.
                let (status, body) = call(
                    client,
                    "POST",
                    format!("{url}/api/purchase"),
                    Some(token),
                    Some(json!({"purchase_items": [{"product_id": product, "amount": 1_000_000}], "payment": {"currency_code": "NT"}})),
                )
                .await;
                assert_eq!(status, 201, "marker purchase: {body}");
                marker = body["purchase_id"].as_u64();
                continue;
            }
            let id = result_of(&frame).0;
            if Some(id) == marker {
                return (frames.into_iter().collect(), id);
            }
            frames.push(id);
        }
        let chunk = tokio::time::timeout_at(deadline, res.next())
            .await
            .expect("the marker purchase reaches the stream in time")
            .expect("the stream stays open")
            .unwrap();
        parser.push(&chunk);
    }
}

#[actix_rt::test]
async fn sigkill_mid_flight_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut node = start(dir.path(), port).await;
    let client = Client::builder().timeout(Duration::from_secs(30)).finish();

    let mut tokens = Vec::new();
    for i in 0..3 {
        let (status, body) = call(
            &client,
            "POST",
            format!("{}/api/account/auth/signup", node.url),
            None,
            Some(json!({"password":"abcd5432","firstname":"f","lastname":"l","email":format!("crash{i}@ex.com"),"address":"a","phone_number":format!("90{i}")})),
        )
        .await;
        assert_eq!(status, 201);
        tokens.push(body["access_token"].as_str().unwrap().to_owned());
    }
    let initial = 60i64;
    let mut products = Vec::new();
    for name in ["crash-a", "crash-b"] {
        let (status, body) = call(
            &client,
            "POST",
            format!("{}/api/product", node.url),
            None,
            Some(json!({"name":name,"description":"d","brand_name":"b","price":10,"inventory":initial})),
        )
        .await;
        assert_eq!(status, 201);
        products.push(body["id"].as_u64().unwrap());
    }

    // Fire purchases from several tasks and kill the node while they run.
    let placed = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let mut tasks = Vec::new();
    for t in 0..6usize {
        let client = client.clone();
        let url = node.url.clone();
        let token = tokens[t % 3].clone();
        let products = products.clone();
        let placed = placed.clone();
        tasks.push(actix_rt::spawn(async move {
            let mut accepted = Vec::new();
            for i in 0..40usize {
                let items = if i % 4 == 0 {
                    json!([{"product_id": products[0], "amount": 1}, {"product_id": products[1], "amount": 2}])
                } else {
                    json!([{"product_id": products[(t + i) % 2], "amount": (i % 3) as i64 + 1}])
                };
                let (status, body) = call(
                    &client,
                    "POST",
                    format!("{url}/api/purchase"),
                    Some(&token),
                    Some(json!({"purchase_items": items, "payment": {"currency_code": "NT"}})),
                )
                .await;
                match status {
                    201 => {
                        accepted.push(body["purchase_id"].as_u64().unwrap());
                        placed.set(placed.get() + 1);
                    }
                    0 => break, // the node is gone
                    other => panic!("unexpected status {other}"),
                }
            }
            accepted
        }));
    }
    let busy = eventually(DEADLINE, || async { (placed.get() >= 30).then_some(()) }).await;
    busy.expect("30 purchases accepted before the kill");
    node.kill();
    let mut accepted = BTreeSet::new();
    for task in tasks {
        accepted.extend(task.await.unwrap());
    }
    assert!(
        !accepted.is_empty(),
        "no purchase was accepted before the kill"
    );

    let mut node = start(dir.path(), port).await;
    // Every purchase any customer's log knows of, plus every one we were told was accepted.
    let mut owner: BTreeMap<u64, String> = BTreeMap::new();
    for token in &tokens {
        let (ids, _marker) = purchases_in_log(&client, &node.url, token, products[0]).await;
        for id in ids {
            owner.insert(id, token.clone());
        }
    }
    for id in &accepted {
        assert!(
            owner.contains_key(id) || {
                // Accepted but not started before the kill: it must still be found and finish.
                let mut found = false;
                for token in &tokens {
                    let (s, _) = call(
                        &client,
                        "GET",
                        format!("{}/api/purchase/{id}", node.url),
                        Some(token),
                        None,
                    )
                    .await;
                    if s == 200 {
                        owner.insert(*id, token.clone());
                        found = true;
                    }
                }
                found
            },
            "accepted purchase {id} was lost"
        );
    }

    let mut sold: BTreeMap<u64, i64> = BTreeMap::new();
    let (mut succeeded, mut rolled_back) = (0, 0);
    for (id, token) in &owner {
        let finished = eventually(DEADLINE, || async {
            let (s, v) = call(
                &client,
                "GET",
                format!("{}/api/purchase/{id}", node.url),
                Some(token),
                None,
            )
            .await;
            assert_eq!(s, 200);
            (v["status"] != "PENDING").then_some(v)
        })
        .await;
        let view = finished.unwrap_or_else(|| panic!("purchase {id} did not finish"));
        let (order_status, order) = call(
            &client,
            "GET",
            format!("{}/api/order/{id}", node.url),
            Some(token),
            None,
        )
        .await;
        let (payment_status, payment) = call(
            &client,
            "GET",
            format!("{}/api/payment/{id}", node.url),
            Some(token),
            None,
        )
        .await;
        // The step log has each (step, status) at most once: nothing ran twice.
        let steps: Vec<(String, String)> = view["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["step"].as_str().unwrap().into(),
                    s["status"].as_str().unwrap().into(),
                )
            })
            .collect();
        let distinct: BTreeSet<_> = steps.iter().collect();
        assert_eq!(
            distinct.len(),
            steps.len(),
            "purchase {id} logged a step twice: {steps:?}"
        );
        match view["status"].as_str().unwrap() {
            "SUCCEEDED" => {
                succeeded += 1;
                assert_eq!(order_status, 200);
                assert_eq!(payment_status, 200);
                assert_eq!(payment["amount"], view["amount"]);
                for item in view["purchase_items"].as_array().unwrap() {
                    let pid = item["product_id"].as_u64().unwrap();
                    let amount = item["amount"].as_i64().unwrap();
                    *sold.entry(pid).or_default() += amount;
                    let line = order["purchased_items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|l| l["product_id"] == pid)
                        .unwrap();
                    assert_eq!(
                        line["amount"].as_i64().unwrap(),
                        amount,
                        "order line doubled or wrong"
                    );
                }
            }
            "ROLLED_BACK" => {
                rolled_back += 1;
                assert_eq!(
                    order_status, 404,
                    "rolled back purchase {id} kept its order"
                );
                assert_eq!(
                    payment_status, 404,
                    "rolled back purchase {id} kept its payment"
                );
            }
            other => panic!("purchase {id} ended as {other}"),
        }
    }
    assert!(succeeded > 0);
    for pid in &products {
        let (_, p) = call(
            &client,
            "GET",
            format!("{}/api/product/{pid}", node.url),
            None,
            None,
        )
        .await;
        let left = p["inventory"].as_i64().unwrap();
        assert!(left >= 0);
        assert_eq!(
            left,
            initial - sold.get(pid).copied().unwrap_or(0),
            "stock not conserved for {pid}"
        );
    }
    let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap();
    let resumed = log
        .lines()
        .find(|l| l.contains("resuming unfinished sagas"))
        .unwrap_or("none resumed");
    eprintln!("recovery: {resumed}");
    eprintln!(
        "recovery: {} purchases ({succeeded} succeeded, {rolled_back} rolled back)",
        owner.len()
    );
    node.kill();
}

#[actix_rt::test]
async fn sigterm_shuts_down_gracefully_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut node = start(dir.path(), port).await;
    let client = Client::default();
    let (status, _) = call(
        &client,
        "POST",
        format!("{}/api/product", node.url),
        None,
        Some(json!({"name":"kept","description":"d","brand_name":"b","price":1,"inventory":1})),
    )
    .await;
    assert_eq!(status, 201);
    #[allow(unsafe_code)] // libc has no safe kill(2)
    // SAFETY: kill(2) on the child we spawned.
    let signalled = unsafe { libc::kill(node.child.id() as i32, libc::SIGTERM) };
    assert_eq!(signalled, 0);
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = node.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let status = exited.expect("sagashop did not stop within 10 s of SIGTERM");
    assert!(status.success(), "exit status {status}");
    let node = start(dir.path(), port).await;
    let (_, page) = call(
        &client,
        "GET",
        format!("{}/api/products?size=10", node.url),
        None,
        None,
    )
    .await;
    assert_eq!(page["catalogs"][0]["name"], "kept");
}
