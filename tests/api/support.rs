//! Test harness: a real sagashop (embedded SQLite, actix-broker, in-process cache) started
//! in-process on a random port ([`TestApp`]), or a local cluster of real nodes
//! ([`cluster::Cluster`]), and the helpers that drive the public API over HTTP ([`Api`]).
//!
//! Tests wait for outcomes, never for time: every wait polls for a state (a purchase's
//! status, a stream's frame, a fault counter) and fails at a deadline. "Nothing more arrives"
//! is proven with a marker purchase ([`TestApp::assert_quiet`]), not with a pause.

pub mod cluster;
pub mod mariadb;
pub mod nodes;
pub mod otlp;
pub mod redis;
pub mod scrape;

use std::cell::{Cell, RefCell};
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_rt::Arbiter;
use awc::Client;
use futures_util::StreamExt;
pub use sagashop::actors::faults::{Fault, Faults};
use sagashop::config::Config;
use serde_json::{Value, json};

/// How long any single wait of the harness may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How long stopping an app's threads may take before the drop reports it.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// A sagashop reached over HTTP only, and the helpers that drive its public API: one
/// in-process app, or the nodes of a cluster. Requests go to the nodes in turn, so a flow
/// written against it crosses nodes on a cluster (sign up on one, log in on the next, ...)
/// and runs unchanged on one app; [`Api::node`] pins a node where a test says which.
pub struct Api {
    /// The first node's URL (the only one of an in-process app; the pinned one of a view).
    pub url: String,
    pub client: Client,
    nodes: Rc<[String]>,
    /// The node every request goes to (an index into `nodes`), or `None`: each in turn.
    pinned: Option<usize>,
    /// The node the next unpinned request goes to.
    turn: Cell<usize>,
    markers: Rc<Markers>,
}

/// The marker purchases of an [`Api`] and its node views (see [`Api::assert_quiet`]).
#[derive(Default)]
struct Markers {
    product: Cell<Option<u64>>,
    purchases: RefCell<Vec<u64>>,
}

/// A running in-process sagashop, its [`Api`] (through `Deref`) and the switches only an
/// in-process app has: fault injection and the clock. Dropping it stops the app: its HTTP
/// server (the port is free again) and the threads that own its databases.
pub struct TestApp {
    api: Api,
    pub faults: Arc<Faults>,
    /// The app's clock: a test moves it forward instead of sleeping.
    pub clock: sagashop::clock::Clock,
    pub dir: tempfile::TempDir,
    /// The app's lock on its data directory, released when the app stops.
    data_dir_lock: Option<std::fs::File>,
    server: actix_web::dev::ServerHandle,
    /// The HTTP server's thread, then the app's database threads.
    threads: Vec<Arbiter>,
}

impl Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// A response reduced to what tests look at.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// A token pair and the customer id it names.
#[derive(Debug, Clone)]
pub struct Customer {
    pub id: u64,
    pub access: String,
    pub refresh: String,
    pub email: String,
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A value unique within the test process (emails, phones).
pub fn unique() -> u64 {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    (std::process::id() as u64) * 100_000 + n
}

/// A port nothing listens on right now (for a real binary started with `--listen`), taken
/// from 10000-19999: below the ephemeral range (32768 and up), where outgoing connections
/// (to MariaDB, NATS, the nodes themselves) take their ports and could take this one before
/// the binary binds it, and apart from the clusters' 20000-31999. Successive calls in one
/// process walk the band from a per-process start, so two tests never get the same port.
pub fn free_port() -> u16 {
    const FIRST: u16 = 10_000;
    const BAND: u16 = 10_000;
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let start = (u64::from(std::process::id()) * 7919 % u64::from(BAND)) as u16;
    (0..BAND)
        .map(|_| {
            let step = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            FIRST + (start.wrapping_add(step)) % BAND
        })
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port between 10000 and 19999")
}

/// The customer id inside a JWT's payload.
pub fn customer_of(token: &str) -> u64 {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let json: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    json["CustomerID"].as_u64().unwrap()
}

impl TestApp {
    /// Starts sagashop with default settings in a fresh data directory.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts sagashop after `adjust` has changed its configuration.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::embedded(dir.path());
        Self::launch(config, dir, adjust).await
    }

    /// Starts sagashop on `config` with the tests' short timeouts, then `adjust`.
    async fn launch(
        mut config: Config,
        dir: tempfile::TempDir,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        config.step_timeout_ms = 2_000;
        config.max_backoff_ms = 200;
        config.sse_keepalive_seconds = 1;
        adjust(&mut config);
        let app = sagashop::app::start(&config).await.expect("app starts");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // The server runs on a thread of its own, so that a drop can wait for its stop.
        let http = Arbiter::new();
        let (started, server) = tokio::sync::oneshot::channel();
        let state = app.state;
        let settings = sagashop::http::HttpSettings {
            workers: 1,
            signals: false,
            ..app.http
        };
        http.spawn_fn(move || {
            let server = sagashop::app::http_server(state, listener, &settings).unwrap();
            let _ = started.send(server.handle());
            actix_rt::spawn(server);
        });
        let server = server.await.expect("HTTP server starts");
        let mut threads = vec![http];
        threads.extend(app.arbiters);
        TestApp {
            api: Api::over(vec![format!("http://127.0.0.1:{port}")]),
            faults: app.faults,
            clock: app.clock,
            data_dir_lock: app.data_dir_lock,
            dir,
            server,
            threads,
        }
    }
}

impl Api {
    /// The API of the sagashop nodes at these base URLs, taken in turn.
    pub fn over(nodes: Vec<String>) -> Self {
        assert!(!nodes.is_empty(), "an API needs a node");
        Api {
            url: nodes[0].clone(),
            client: Client::builder().timeout(Duration::from_secs(30)).finish(),
            nodes: nodes.into(),
            pinned: None,
            turn: Cell::new(0),
            markers: Default::default(),
        }
    }

    /// The same API with every request sent to node `n` (numbered from 1, as the cluster
    /// numbers its nodes); it shares the client and the marker purchases.
    pub fn node(&self, n: usize) -> Api {
        assert!(
            (1..=self.nodes.len()).contains(&n),
            "no node {n} among {}",
            self.nodes.len()
        );
        Api {
            url: self.nodes[n - 1].clone(),
            client: self.client.clone(),
            nodes: self.nodes.clone(),
            pinned: Some(n - 1),
            turn: Cell::new(0),
            markers: self.markers.clone(),
        }
    }

    /// The base URL the next request goes to: the pinned node, else the next in turn.
    fn base(&self) -> &str {
        let i = self.pinned.unwrap_or_else(|| {
            let i = self.turn.get();
            self.turn.set((i + 1) % self.nodes.len());
            i
        });
        &self.nodes[i]
    }

    async fn finish(&self, req: awc::ClientRequest, body: Option<&[u8]>) -> Reply {
        let mut res = match body {
            Some(b) => req.send_body(b.to_vec()).await,
            None => req.send().await,
        }
        .expect("request sent");
        let body = res
            .body()
            .limit(10 << 20)
            .await
            .expect("body read")
            .to_vec();
        Reply {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body,
        }
    }

    /// Sends a request; `token` goes in `Authorization: Bearer`, `body` is sent raw.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base(), path));
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        self.finish(req, body.map(str::as_bytes)).await
    }

    /// Sends a request with exactly these headers.
    pub async fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base(), path));
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        self.finish(req, body.map(str::as_bytes)).await
    }

    /// Sends raw bytes as the body (they need not be UTF-8) with exactly these headers.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base(), path));
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        self.finish(req, Some(body)).await
    }

    /// GET with an optional token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call("GET", path, token, None).await
    }

    /// POST a JSON value with an optional token (no Content-Type, as the README's curl).
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.call("POST", path, token, Some(&body.to_string()))
            .await
    }

    /// Signs up a fresh customer and returns its tokens.
    pub async fn sign_up(&self) -> Customer {
        let n = unique();
        let email = format!("user{n}@ex.com");
        let r = self
            .post(
                "/api/account/auth/signup",
                None,
                &json!({"password":"abcd5432","firstname":"ming","lastname":"hsu","email":email,"address":"taipei","phone_number":format!("{n}")}),
            )
            .await;
        assert_eq!(
            r.status,
            201,
            "signup: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        let j = r.json();
        let access = j["access_token"].as_str().unwrap().to_owned();
        Customer {
            id: customer_of(&access),
            refresh: j["refresh_token"].as_str().unwrap().to_owned(),
            access,
            email,
        }
    }

    /// Creates a product and returns its id.
    pub async fn create_product(&self, name: &str, price: i64, inventory: i64) -> u64 {
        let r = self
            .post(
                "/api/product",
                None,
                &json!({"name":name,"description":format!("{name} description"),"brand_name":"mingbrand","price":price,"inventory":inventory}),
            )
            .await;
        assert_eq!(
            r.status,
            201,
            "create product: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()["id"].as_u64().unwrap()
    }

    /// The product's inventory as `GET /api/product/{id}` shows it.
    pub async fn inventory(&self, product_id: u64) -> i64 {
        let r = self.get(&format!("/api/product/{product_id}"), None).await;
        assert_eq!(r.status, 200);
        r.json()["inventory"].as_i64().unwrap()
    }

    /// Posts a purchase of `items` (product id, amount) in NT; returns the reply.
    pub async fn purchase(&self, token: &str, items: &[(u64, i64)]) -> Reply {
        let items: Vec<Value> = items
            .iter()
            .map(|(p, a)| json!({"product_id": p, "amount": a}))
            .collect();
        self.post(
            "/api/purchase",
            Some(token),
            &json!({"purchase_items": items, "payment": {"currency_code": "NT"}}),
        )
        .await
    }

    /// Posts a purchase that must be accepted; returns its id.
    pub async fn purchase_ok(&self, token: &str, items: &[(u64, i64)]) -> u64 {
        let r = self.purchase(token, items).await;
        assert_eq!(
            r.status,
            201,
            "purchase: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()["purchase_id"].as_u64().unwrap()
    }

    /// Polls `GET /api/purchase/{id}` until the saga is in a terminal state (SUCCEEDED,
    /// ROLLED_BACK or ROLLBACK_FAILED); returns its view (panics at the [`DEADLINE`]).
    pub async fn wait_finished(&self, token: &str, purchase_id: u64) -> Value {
        let view = eventually(DEADLINE, || async move {
            let v = self.purchase_view(token, purchase_id).await;
            let terminal = ["SUCCEEDED", "ROLLED_BACK", "ROLLBACK_FAILED"];
            terminal
                .contains(&v["status"].as_str().unwrap_or_default())
                .then_some(v)
        })
        .await;
        view.unwrap_or_else(|| panic!("purchase {purchase_id} did not finish"))
    }

    /// Opens the SSE stream and waits for its first frame (`data: null`: subscribed).
    pub async fn subscribe(&self, token: &str, last_event_id: Option<u64>) -> SseStream {
        let mut req = self
            .client
            .get(format!("{}/api/purchase/result", self.base()))
            .timeout(Duration::from_secs(3600))
            .insert_header(("Accept", "text/event-stream"))
            .insert_header(("Authorization", format!("Bearer {token}")));
        if let Some(id) = last_event_id {
            req = req.insert_header(("Last-Event-ID", id.to_string()));
        }
        let res = req.send().await.expect("stream opened");
        assert_eq!(res.status().as_u16(), 200);
        let headers = res.headers().clone();
        let mut stream = SseStream {
            body: Box::pin(res.map(|c| c.map(|b| b.to_vec()).map_err(|e| e.to_string()))),
            parser: Default::default(),
            headers,
            token: token.to_owned(),
        };
        let first = stream
            .next_frame(Duration::from_secs(10))
            .await
            .expect("first frame");
        assert_eq!(first.event.as_deref(), Some("data"));
        assert_eq!(first.data, "null");
        stream
    }
}

/// One parsed SSE frame: the library's client parser is the only one the tests use.
pub use sagashop::sse_client::Frame as SseFrame;

/// `(purchase_id, step, status)` of a result frame.
pub fn result_of(frame: &SseFrame) -> (u64, String, String) {
    let v: Value = serde_json::from_str(&frame.data)
        .unwrap_or_else(|e| panic!("result frame is not JSON ({e}): {}", frame.raw));
    (
        v["purchase_id"].as_u64().unwrap(),
        v["step"].as_str().unwrap().to_owned(),
        v["status"].as_str().unwrap().to_owned(),
    )
}

type Body = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Vec<u8>, String>>>>;

/// A live SSE response body.
pub struct SseStream {
    body: Body,
    parser: sagashop::sse_client::Parser,
    pub headers: awc::http::header::HeaderMap,
    /// The customer whose results the stream carries.
    token: String,
}

impl SseStream {
    /// The next frame, keep-alive comments included, or `None` when none arrives within
    /// `wait` or the stream ends.
    pub async fn next_block(&mut self, wait: Duration) -> Option<SseFrame> {
        let deadline = actix_rt::time::Instant::now() + wait;
        loop {
            if let Some(frame) = self.parser.next_frame() {
                return Some(frame);
            }
            let left = deadline.checked_duration_since(actix_rt::time::Instant::now())?;
            match actix_rt::time::timeout(left, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.parser.push(&chunk),
                _ => return None,
            }
        }
    }

    /// The next frame that is not a comment, or `None` when none arrives within `wait`.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<SseFrame> {
        let deadline = actix_rt::time::Instant::now() + wait;
        loop {
            let left = deadline.checked_duration_since(actix_rt::time::Instant::now())?;
            let frame = self.next_block(left).await?;
            if !frame.is_comment_only() {
                return Some(frame);
            }
        }
    }

    /// Collects result frames until `n` have arrived (panics after `wait`).
    pub async fn take(&mut self, n: usize, wait: Duration) -> Vec<SseFrame> {
        let mut frames = Vec::new();
        while frames.len() < n {
            match self.next_frame(wait).await {
                Some(f) => frames.push(f),
                None => panic!("got {} of {n} frames: {frames:?}", frames.len()),
            }
        }
        frames
    }
}

/// The six events of a successful purchase, in order.
pub const HAPPY_PATH: [(&str, &str); 6] = [
    ("UPDATE_PRODUCT_INVENTORY", "STATUS_EXUCUTE"),
    ("UPDATE_PRODUCT_INVENTORY", "STATUS_SUCCESS"),
    ("CREATE_ORDER", "STATUS_EXUCUTE"),
    ("CREATE_ORDER", "STATUS_SUCCESS"),
    ("CREATE_PAYMENT", "STATUS_EXUCUTE"),
    ("CREATE_PAYMENT", "STATUS_SUCCESS"),
];

/// The three events of a purchase refused by the inventory step.
pub const INVENTORY_FAILURE: [(&str, &str); 3] = [
    ("UPDATE_PRODUCT_INVENTORY", "STATUS_EXUCUTE"),
    ("UPDATE_PRODUCT_INVENTORY", "STATUS_FAILED"),
    ("UPDATE_PRODUCT_INVENTORY", "STATUS_ROLLBACKED"),
];

/// `(step, status)` pairs of the frames that belong to `purchase_id`, in arrival order.
pub fn steps_of(frames: &[SseFrame], purchase_id: u64) -> Vec<(String, String)> {
    frames
        .iter()
        .map(result_of)
        .filter(|(p, _, _)| *p == purchase_id)
        .map(|(_, s, st)| (s, st))
        .collect()
}

/// Owned form of an expected sequence, for comparisons.
pub fn expected(seq: &[(&str, &str)]) -> Vec<(String, String)> {
    seq.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

impl Api {
    /// The product's inventory as `GET /api/products` lists it (walks every page).
    pub async fn listed_inventory(&self, product_id: u64) -> i64 {
        let mut offset = 0;
        loop {
            let r = self
                .get(&format!("/api/products?offset={offset}&size=100"), None)
                .await;
            assert_eq!(r.status, 200);
            let page = r.json();
            let Some(lines) = page["catalogs"].as_array() else {
                panic!("product {product_id} not listed");
            };
            if let Some(line) = lines.iter().find(|l| l["id"].as_u64() == Some(product_id)) {
                return line["inventory"].as_i64().unwrap();
            }
            offset += 100;
        }
    }

    /// `GET /api/purchase/{id}` as JSON (asserts 200).
    pub async fn purchase_view(&self, token: &str, purchase_id: u64) -> Value {
        let r = self
            .get(&format!("/api/purchase/{purchase_id}"), Some(token))
            .await;
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    /// Polls `GET /api/purchase/{id}` until its status is `status` (panics after `wait`).
    pub async fn wait_status(
        &self,
        token: &str,
        purchase_id: u64,
        status: &str,
        wait: Duration,
    ) -> Value {
        let last = &Cell::new(Value::Null);
        let view = eventually(wait, || async move {
            let v = self.purchase_view(token, purchase_id).await;
            last.set(v.clone());
            (v["status"] == status).then_some(v)
        })
        .await;
        view.unwrap_or_else(|| {
            panic!(
                "purchase {purchase_id} never reached {status}: {}",
                last.take()
            )
        })
    }
}

/// Asserts that `purchase` left neither an order nor a payment (both 404 with their message).
pub async fn assert_no_order_nor_payment(app: &Api, token: &str, purchase: u64) {
    for (record, msg) in [
        ("order", "order not found"),
        ("payment", "payment not found"),
    ] {
        let r = app
            .get(&format!("/api/{record}/{purchase}"), Some(token))
            .await;
        assert_eq!(r.status, 404, "{record} of {purchase}");
        assert_eq!(r.json(), json!({ "msg": msg }), "{record} of {purchase}");
    }
}

/// `(step, status)` pairs of a purchase view's `steps`, in order.
pub fn view_steps(view: &Value) -> Vec<(String, String)> {
    view["steps"]
        .as_array()
        .expect("steps array")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The compensation sequence when `failed` (CREATE_ORDER or CREATE_PAYMENT) is refused.
pub fn compensation_path(failed: &str) -> Vec<(String, String)> {
    let mut seq = expected(&HAPPY_PATH);
    let upto = seq
        .iter()
        .position(|(s, st)| s == failed && st == "STATUS_EXUCUTE")
        .unwrap();
    seq.truncate(upto + 1);
    let mut rollback: Vec<(&str, &str)> =
        vec![(failed, "STATUS_FAILED"), (failed, "STATUS_ROLLBACKED")];
    if failed == "CREATE_PAYMENT" {
        rollback.push(("CREATE_ORDER", "STATUS_ROLLBACKED"));
    }
    rollback.push(("UPDATE_PRODUCT_INVENTORY", "STATUS_ROLLBACKED"));
    seq.extend(expected(&rollback));
    seq
}

impl TestApp {
    /// Starts sagashop on an existing data directory (e.g. a second start on the same files);
    /// `dir` is then an unused placeholder and `data_dir` is left in place.
    pub async fn spawn_in(data_dir: &std::path::Path, adjust: impl FnOnce(&mut Config)) -> Self {
        let config = Config::embedded(data_dir);
        Self::launch(config, tempfile::tempdir().unwrap(), adjust).await
    }
}

impl Api {
    /// Waits for a purchase refused by the inventory step: exactly its three events on
    /// `sse`, status ROLLED_BACK with the same step log, and nothing more on the stream.
    pub async fn expect_refused_at_inventory(
        &self,
        sse: &mut SseStream,
        token: &str,
        purchase_id: u64,
    ) {
        let frames = sse.take(3, DEADLINE).await;
        assert_eq!(steps_of(&frames, purchase_id), expected(&INVENTORY_FAILURE));
        let view = self.wait_finished(token, purchase_id).await;
        assert_eq!(view["status"], "ROLLED_BACK");
        assert_eq!(view_steps(&view), expected(&INVENTORY_FAILURE));
        self.assert_quiet(sse).await;
    }

    /// A product with one unit in stock that purchases of two units (markers) are refused.
    async fn marker_product(&self) -> u64 {
        if let Some(id) = self.markers.product.get() {
            return id;
        }
        let id = self.create_product("marker", 1, 1).await;
        self.markers.product.set(Some(id));
        id
    }

    /// Runs a marker purchase for the streams' customer (all `streams` must carry the same
    /// customer): it is refused at the inventory step, so it changes nothing but the log.
    /// Events are published in commit order, so every frame a stream was going to get for
    /// what happened before the marker arrives before the marker's first frame. Returns, per
    /// stream, the result frames read before the marker; the marker's own frames are
    /// consumed and checked.
    pub async fn frames_before_marker(&self, streams: &mut [&mut SseStream]) -> Vec<Vec<SseFrame>> {
        let token = streams[0].token.clone();
        assert!(
            streams.iter().all(|s| s.token == token),
            "one customer only"
        );
        let product = self.marker_product().await;
        let marker = self.purchase_ok(&token, &[(product, 2)]).await;
        self.markers.purchases.borrow_mut().push(marker);
        let mut before = Vec::new();
        for sse in streams.iter_mut() {
            let mut frames = Vec::new();
            let first = loop {
                let f = sse.next_frame(DEADLINE).await.unwrap_or_else(|| {
                    panic!("marker purchase {marker} never reached the stream after {frames:?}")
                });
                if result_of(&f).0 == marker {
                    break f;
                }
                frames.push(f);
            };
            let mut own = vec![first];
            own.extend(sse.take(2, DEADLINE).await);
            assert_eq!(steps_of(&own, marker), expected(&INVENTORY_FAILURE));
            before.push(frames);
        }
        let view = self.wait_finished(&token, marker).await;
        assert_eq!(view_steps(&view), expected(&INVENTORY_FAILURE));
        before
    }

    /// The marker purchases run so far (they are in the step log, and so in replays).
    pub fn markers(&self) -> Vec<u64> {
        self.markers.purchases.borrow().clone()
    }

    /// Asserts that nothing more arrives on `sse` for anything that happened so far (see
    /// [`TestApp::frames_before_marker`]); no waiting for time.
    pub async fn assert_quiet(&self, sse: &mut SseStream) {
        self.assert_all_quiet(&mut [sse]).await;
    }

    /// [`TestApp::assert_quiet`] for several streams of one customer.
    pub async fn assert_all_quiet(&self, streams: &mut [&mut SseStream]) {
        for extra in self.frames_before_marker(streams).await {
            assert!(extra.is_empty(), "unexpected frames: {extra:?}");
        }
    }
}

impl TestApp {
    /// Polls the fault counter until `fault` fired at least `times` times (panics at the
    /// [`DEADLINE`]); returns the count.
    pub async fn wait_fired(&self, fault: Fault, times: u64) -> u64 {
        let fired = eventually(DEADLINE, || async move {
            let n = self.faults.fired(fault);
            (n >= times).then_some(n)
        })
        .await;
        fired.unwrap_or_else(|| {
            panic!(
                "{fault:?} fired {} times, not {times}",
                self.faults.fired(fault)
            )
        })
    }
}

/// Declares one `#[actix_rt::test]` per flow (an `async fn(&Api)` of the module named before
/// `=>`, which is in scope): each runs its flow on the app `$app` makes, or returns when it
/// makes `None` (a cluster that cannot run here; it said so). How one flow runs both on an
/// in-process app and on the cluster.
macro_rules! flow_tests {
    ($app:expr; $module:ident => $($flow:ident),+ $(,)?) => {$(
        #[actix_rt::test]
        async fn $flow() {
            if let Some(app) = $app {
                $module::$flow(&app).await;
            }
        }
    )+};
}
pub(crate) use flow_tests;

/// Polls `check` (every few milliseconds) until it gives a value; `None` once `wait` is over.
pub async fn eventually<T, F, Fut>(wait: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + wait;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Drop for TestApp {
    /// Stops the HTTP server (waiting until its port is closed), then the app's threads.
    fn drop(&mut self) {
        let (stopped, server_stopped) = std::sync::mpsc::channel();
        let stop = self.server.stop(false);
        self.threads[0].spawn(async move {
            stop.await;
            let _ = stopped.send(());
        });
        let server_ok = server_stopped.recv_timeout(STOP_WAIT).is_ok();
        let threads = std::mem::take(&mut self.threads);
        let (joined, all_joined) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for thread in threads {
                thread.stop();
                let _ = thread.join();
            }
            let _ = joined.send(());
        });
        let threads_ok = all_joined.recv_timeout(STOP_WAIT).is_ok();
        // The data directory is free for another instance once the app's threads are gone.
        drop(self.data_dir_lock.take());
        let stopped = server_ok && threads_ok;
        if !stopped && !std::thread::panicking() {
            panic!(
                "app at {} did not stop (server {server_ok}, threads {threads_ok})",
                self.url
            );
        }
    }
}
