//! Redis in the read path, end to end, on nodes that share one Redis of the test's own: a
//! write through one node is read through the other at once (pub/sub drops the other's local
//! copy), lost Bloom filters cost no existing record a 404 and are rebuilt, a Redis that
//! stops costs no request an error or a wrong answer, and 200 concurrent cold reads make one
//! database read. `cache_cluster` runs the same flows on a Redis Cluster.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sagashop::domain::ids::first_id_at;
use serde_json::{Value, json};

use crate::support::nodes::{Bench, Node};
use crate::support::redis::{self, Redis};
use crate::support::scrape::{Scrape, scrape};
use crate::support::*;

const PERSON: &str = "/api/account/info/person";
const SHIPPING: &str = "/api/account/info/shipping";

/// How soon a write through one node shows on another: the pub/sub message that drops the
/// other's local copy (a stale local copy would show for the local TTL, 60 s).
const PROPAGATION: Duration = Duration::from_millis(500);

/// The stampede tests' nodes: a Redis call may take up to 1 s before it counts as failed.
pub(crate) const STAMPEDE_FLAGS: [&str; 2] = ["--redis-timeout-ms", "1000"];

/// Nodes with every role on one bench, caching in one Redis, each with a metrics listener.
pub(crate) struct Nodes {
    pub(crate) api: Api,
    metrics: Vec<String>,
    _nodes: Vec<Node>,
}

impl Nodes {
    /// Starts `n` nodes on `bench` with `redis` (its flags) and `extra` flags; node 1 first
    /// (it migrates the databases), then the others.
    pub(crate) async fn start(bench: &Bench, redis: &[String], n: u16, extra: &[&str]) -> Nodes {
        let mut nodes = Vec::new();
        let mut metrics = Vec::new();
        for id in 1..=n {
            let listen = format!("127.0.0.1:{}", free_port());
            let mut flags: Vec<&str> = redis.iter().map(String::as_str).collect();
            flags.extend(["--metrics-listen", &listen]);
            flags.extend(extra);
            nodes.push(bench.node(id, "all", &flags).start().await);
            metrics.push(format!("http://{listen}/metrics"));
        }
        let api = Api::over(nodes.iter().map(|n| n.url.clone()).collect());
        Nodes {
            api,
            metrics,
            _nodes: nodes,
        }
    }

    /// The sum over the nodes of the samples of `name` carrying `labels`.
    pub(crate) async fn total(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let scrapes: Vec<Scrape> = join_all(self.metrics.iter().map(|m| scrape(m))).await;
        scrapes.iter().map(|s| s.sum(name, labels)).sum()
    }

    /// Waits until the sum of `name{labels}` over the nodes passes `above`; its value.
    pub(crate) async fn wait_above(&self, name: &str, labels: &[(&str, &str)], above: f64) -> f64 {
        let value = eventually(DEADLINE, || async move {
            let v = self.total(name, labels).await;
            (v > above).then_some(v)
        })
        .await;
        value.unwrap_or_else(|| panic!("{name}{labels:?} stayed at {above} or below"))
    }
}

/// The bench (NATS, databases) of test `name`, or `None` when it is skipped.
async fn bench(name: &str) -> Option<Bench> {
    Bench::new(name).await
}

/// An id minted an hour ago that names nothing (no row was made then): the Bloom filter
/// answers it without a database read once it is built.
fn unknown_past_id(i: u64) -> u64 {
    let hour_ago = sagashop::clock::Clock::system().now_ms() - 3_600_000;
    first_id_at(hour_ago) + 1000 + i
}

async fn get_json(api: &Api, path: &str, token: Option<&str>) -> Value {
    let r = api.get(path, token).await;
    assert_eq!(
        r.status,
        200,
        "GET {path}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

async fn put_ok(api: &Api, path: &str, token: &str, body: &Value) {
    let r = api
        .call("PUT", path, Some(token), Some(&body.to_string()))
        .await;
    assert_eq!(
        r.status,
        200,
        "PUT {path}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
}

/// Waits (at most [`PROPAGATION`]) until `api` shows `want` at `path`.
async fn shows_soon(api: &Api, path: &str, token: &str, want: &Value, what: &str) {
    let started = Instant::now();
    let seen = eventually(PROPAGATION, || async {
        let got = get_json(api, path, Some(token)).await;
        (&got == want).then_some(())
    })
    .await;
    let last = get_json(api, path, Some(token)).await;
    assert!(
        seen.is_some(),
        "{what}: {} still shows {last} after {:?}, not {want}",
        api.url,
        started.elapsed()
    );
}

/// Invalidation across nodes: both nodes read a customer's person and shipping info, an
/// update through node 1 is read through node 2 at once; then readers on both nodes run while
/// updates go through either, and at the end every node answers the last value (no stale
/// fill survived a write) and keeps answering it.
pub(crate) async fn an_update_on_one_node_is_read_on_the_other_at_once(nodes: &Nodes) {
    let (n1, n2) = (nodes.api.node(1), nodes.api.node(2));
    let c = n1.sign_up().await;
    for api in [&n1, &n2, &n1, &n2] {
        get_json(api, PERSON, Some(&c.access)).await;
        get_json(api, SHIPPING, Some(&c.access)).await;
    }

    let person = json!({"firstname":"changed","lastname":"once","email":c.email});
    put_ok(&n1, PERSON, &c.access, &person).await;
    shows_soon(
        &n2,
        PERSON,
        &c.access,
        &person,
        "person after an update on node 1",
    )
    .await;
    let shipping = json!({"address":"kaohsiung","phone_number":format!("7{}", unique())});
    put_ok(&n1, SHIPPING, &c.access, &shipping).await;
    shows_soon(
        &n2,
        SHIPPING,
        &c.access,
        &shipping,
        "shipping after an update on node 1",
    )
    .await;

    // 20 readers (10 per node) while 30 updates go through either node.
    let writing = Cell::new(true);
    let reads = Cell::new(0u64);
    let person_of =
        |i: usize| json!({"firstname":format!("v{i}"),"lastname":"many","email":c.email});
    let writer = async {
        for i in 0..30 {
            let api = if i % 2 == 0 { &n1 } else { &n2 };
            put_ok(api, PERSON, &c.access, &person_of(i)).await;
        }
        writing.set(false);
    };
    let readers = join_all((0..20).map(|r| {
        let api = if r % 2 == 0 { &n1 } else { &n2 };
        let (writing, reads, token) = (&writing, &reads, &c.access);
        async move {
            while writing.get() {
                get_json(api, PERSON, Some(token)).await;
                reads.set(reads.get() + 1);
            }
        }
    }));
    futures_util::join!(writer, readers);
    assert!(reads.get() > 20, "the readers read while the updates ran");

    let last = person_of(29);
    for api in [&n1, &n2] {
        shows_soon(
            api,
            PERSON,
            &c.access,
            &last,
            "person after the last update",
        )
        .await;
    }
    for _ in 0..5 {
        for api in [&n1, &n2] {
            let got = get_json(api, PERSON, Some(&c.access)).await;
            assert_eq!(got, last, "{} went back to an older value", api.url);
        }
    }
}

/// What a read load saw: answers that were not the expected ones.
#[derive(Default)]
struct Seen {
    reads: Cell<u64>,
    wrong: RefCell<Vec<String>>,
}

impl Seen {
    fn check(&self, what: &str, status: u16, body: &[u8], want_status: u16, want: Option<&Value>) {
        self.reads.set(self.reads.get() + 1);
        let body_ok = match want {
            Some(want) => serde_json::from_slice::<Value>(body).is_ok_and(|v| &v == want),
            None => true,
        };
        if status != want_status || !body_ok {
            let mut wrong = self.wrong.borrow_mut();
            if wrong.len() < 20 {
                wrong.push(format!(
                    "{what}: {status} {}",
                    String::from_utf8_lossy(body)
                ));
            }
        }
    }

    fn assert_all_right(&self, what: &str) {
        let wrong = self.wrong.borrow();
        assert!(
            wrong.is_empty(),
            "{what}: wrong answers among {} reads: {wrong:#?}",
            self.reads.get()
        );
    }
}

/// Products of a read load: their ids and what `GET /api/product/{id}` answers for each.
async fn products(api: &Api, n: usize) -> Vec<(u64, Value)> {
    let mut made = Vec::new();
    for i in 0..n {
        let name = format!("cached-{}-{i}", unique());
        let id = api
            .create_product(&name, 100 + i as i64, 1000 + i as i64)
            .await;
        made.push((id, get_json(api, &format!("/api/product/{id}"), None).await));
    }
    made
}

/// Filter loss: every `bloom:*` key is deleted while the nodes serve reads of existing
/// products, orders and payments: none answers 404 (the filter is bypassed until it is
/// rebuilt); unknown ids still answer 404; once rebuilt, unknown ids are answered by the
/// filter (rejections go up) without a database read (the product cache's loads stay).
pub(crate) async fn lost_bloom_filters_cost_no_existing_record_a_404(nodes: &Nodes, redis: &Redis) {
    let api = &nodes.api;
    let items = products(api, 5).await;
    let c = api.sign_up().await;
    let mut purchases = Vec::new();
    for (id, _) in items.iter().take(2) {
        let p = api.purchase_ok(&c.access, &[(*id, 1)]).await;
        let view = api.wait_finished(&c.access, p).await;
        assert_eq!(view["status"], json!("SUCCEEDED"), "{view}");
        purchases.push(p);
    }
    for filter in ["product", "order", "payment"] {
        let marker = format!("bloom:{{{filter}}}:gen");
        let built = eventually(DEADLINE, || async {
            redis.keys_matching(&marker).first().cloned()
        })
        .await;
        assert!(
            built.is_some(),
            "the {filter} filter was never built ({marker})"
        );
    }
    let filters = [("filter", "product")];
    let rebuilds = |filter: &'static str| async move {
        nodes
            .total("sagashop_bloom_rebuilds_total", &[("filter", filter)])
            .await
    };
    let before = [
        rebuilds("product").await,
        rebuilds("order").await,
        rebuilds("payment").await,
    ];

    // Readers of every existing record (and of unknown ids) on both nodes, while the
    // filters are deleted and rebuilt.
    let seen = Seen::default();
    let reading = Cell::new(true);
    let readers = join_all((0..4).map(|r| {
        let node = api.node(r % 2 + 1);
        let (seen, reading, items, purchases, token) =
            (&seen, &reading, &items, &purchases, &c.access);
        async move {
            let mut round = 0;
            while reading.get() || round == 0 {
                for (id, want) in items {
                    let path = format!("/api/product/{id}");
                    let reply = node.get(&path, None).await;
                    // Stock moves with the purchases: compare the rest.
                    let mut body: Value =
                        serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
                    let mut want = want.clone();
                    for v in [&mut body, &mut want] {
                        if let Some(o) = v.as_object_mut() {
                            o.remove("inventory");
                        }
                    }
                    seen.check(
                        &path,
                        reply.status,
                        body.to_string().as_bytes(),
                        200,
                        Some(&want),
                    );
                }
                for p in purchases {
                    for kind in ["order", "payment"] {
                        let path = format!("/api/{kind}/{p}");
                        let reply = node.get(&path, Some(token)).await;
                        seen.check(&path, reply.status, &reply.body, 200, None);
                    }
                }
                let unknown = unknown_past_id(round);
                for kind in ["product", "order", "payment"] {
                    let path = format!("/api/{kind}/{unknown}");
                    let reply = node.get(&path, Some(token)).await;
                    let want = json!({"msg": format!("{kind} not found")});
                    seen.check(&path, reply.status, &reply.body, 404, Some(&want));
                }
                round += 1;
            }
        }
    }));
    let loss = async {
        let deleted = redis.delete_matching("bloom:*");
        assert!(deleted >= 3, "deleted {deleted} bloom keys");
        for (filter, before) in ["product", "order", "payment"].into_iter().zip(before) {
            nodes
                .wait_above(
                    "sagashop_bloom_rebuilds_total",
                    &[("filter", filter)],
                    before,
                )
                .await;
        }
        reading.set(false);
    };
    futures_util::join!(readers, loss);
    seen.assert_all_right("reads while the filters were lost and rebuilt");

    // Rebuilt: unknown product ids are rejected by the filter, without a database read.
    let loads = nodes
        .total("sagashop_cache_loads_total", &[("cache", "product")])
        .await;
    let rejections = nodes
        .total("sagashop_bloom_rejections_total", &filters)
        .await;
    for i in 0..20 {
        let r = api
            .get(
                &format!("/api/product/{}", unknown_past_id(10_000 + i)),
                None,
            )
            .await;
        assert_eq!(r.status, 404);
        assert_eq!(r.json(), json!({"msg":"product not found"}));
    }
    let loads_after = nodes
        .total("sagashop_cache_loads_total", &[("cache", "product")])
        .await;
    let rejections_after = nodes
        .total("sagashop_bloom_rejections_total", &filters)
        .await;
    assert_eq!(
        loads_after, loads,
        "unknown product ids were read from the database"
    );
    assert!(
        rejections_after >= rejections + 19.0,
        "the filter rejected {} of 20 unknown ids",
        rejections_after - rejections
    );
}

/// 200 concurrent GETs of a product no cache holds yet, spread over the nodes: one database
/// read in all (`sagashop_cache_loads_total{cache="product"}` goes up by exactly 1), and
/// every answer is the product.
pub(crate) async fn two_hundred_cold_reads_make_one_database_read(nodes: &Nodes) {
    let api = &nodes.api;
    let name = format!("cold-{}", unique());
    let id = api.create_product(&name, 42, 4242).await;
    let want = json!({"id": id, "name": name, "description": format!("{name} description"),
        "brand_name": "mingbrand", "price": 42, "inventory": 4242});
    let loads = nodes
        .total("sagashop_cache_loads_total", &[("cache", "product")])
        .await;
    let errors = nodes.total("sagashop_cache_redis_errors_total", &[]).await;
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(256))
        .timeout(Duration::from_secs(30))
        .finish();
    let replies = join_all((0..200).map(|i| {
        let url = format!("{}/api/product/{id}", api.node(i % 2 + 1).url);
        let client = &client;
        async move {
            let mut res = client.get(&url).send().await.expect("an answer");
            let body = res.body().await.expect("a body");
            (res.status().as_u16(), body)
        }
    }))
    .await;
    let seen = Seen::default();
    for (status, body) in &replies {
        let got: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        // The detail's fields as created (whatever else it carries).
        let same = want
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| got.get(k) == Some(v));
        seen.check("cold read", *status, body, 200, None);
        assert!(same, "cold read answered {got}, not {want}");
    }
    seen.assert_all_right("cold reads");
    let after = nodes
        .total("sagashop_cache_loads_total", &[("cache", "product")])
        .await;
    let errors = nodes.total("sagashop_cache_redis_errors_total", &[]).await - errors;
    assert_eq!(
        after - loads,
        1.0,
        "200 cold reads made {} database reads ({errors} Redis calls failed meanwhile)",
        after - loads
    );
}

#[actix_rt::test]
async fn cache_an_update_on_one_node_is_read_on_the_other_at_once() {
    let Some(bench) = bench("cache_invalidate").await else {
        return;
    };
    let Some(redis) = redis::server("cache_invalidate") else {
        return;
    };
    let nodes = Nodes::start(&bench, &redis.flags(), 2, &[]).await;
    an_update_on_one_node_is_read_on_the_other_at_once(&nodes).await;
}

#[actix_rt::test]
async fn cache_lost_bloom_filters_cost_no_existing_record_a_404() {
    let Some(bench) = bench("cache_bloom_loss").await else {
        return;
    };
    let Some(redis) = redis::server("cache_bloom_loss") else {
        return;
    };
    let redis = Redis::Single(redis);
    let nodes = Nodes::start(&bench, &redis.flags(), 2, &[]).await;
    lost_bloom_filters_cost_no_existing_record_a_404(&nodes, &redis).await;
}

#[actix_rt::test]
async fn cache_two_hundred_cold_reads_make_one_database_read() {
    let Some(bench) = bench("cache_stampede").await else {
        return;
    };
    let Some(redis) = redis::server("cache_stampede") else {
        return;
    };
    // A slow Redis call is a miss that goes to the database (counted): with the default
    // 100 ms, a burst of 200 on a debug build under parallel tests exceeds it now and then.
    // The timeout's own behaviour is `cache_reads_stay_right_while_redis_is_down...`.
    let nodes = Nodes::start(&bench, &redis.flags(), 2, &STAMPEDE_FLAGS).await;
    two_hundred_cold_reads_make_one_database_read(&nodes).await;
}

/// Redis stops under a read load and starts again: no request fails or answers wrong while
/// it is down (reads go to the database; `/readyz` says degraded with 200), and once it is
/// back the nodes read from it again (`level="redis",result="hit"` goes up).
#[actix_rt::test]
async fn cache_reads_stay_right_while_redis_is_down_and_use_it_again_after() {
    let Some(bench) = bench("cache_redis_down").await else {
        return;
    };
    let Some(mut redis) = redis::server("cache_redis_down") else {
        return;
    };
    let nodes = Nodes::start(&bench, &redis.flags(), 2, &[]).await;
    let api = &nodes.api;
    let items = products(api, 20).await;
    let hits = [("level", "redis"), ("result", "hit")];
    let errors = "sagashop_cache_redis_errors_total";

    let seen = Seen::default();
    let reading = Cell::new(true);
    let readers = join_all((0..8).map(|r| {
        let node = api.node(r % 2 + 1);
        let (seen, reading, items) = (&seen, &reading, &items);
        async move {
            let mut i = r;
            while reading.get() {
                let (id, want) = &items[i % items.len()];
                let path = format!("/api/product/{id}");
                let reply = node.get(&path, None).await;
                seen.check(&path, reply.status, &reply.body, 200, Some(want));
                i += 1;
            }
        }
    }));
    let outage = async {
        let errors_before = nodes.total(errors, &[]).await;
        actix_rt::time::sleep(Duration::from_millis(500)).await;
        redis.stop();
        let failed = nodes.wait_above(errors, &[], errors_before).await;
        assert!(failed > errors_before);
        let ready = api.node(1).get("/readyz", None).await;
        assert_eq!(
            ready.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&ready.body)
        );
        assert_eq!(
            ready.json()["status"],
            json!("degraded"),
            "{}",
            ready.json()
        );
        actix_rt::time::sleep(Duration::from_secs(2)).await;
        redis.resume().await;
        let hits_back = nodes.total("sagashop_cache_requests_total", &hits).await;
        nodes
            .wait_above("sagashop_cache_requests_total", &hits, hits_back)
            .await;
        reading.set(false);
    };
    futures_util::join!(readers, outage);
    seen.assert_all_right("reads while Redis stopped and started");
    assert!(seen.reads.get() > 100, "only {} reads", seen.reads.get());
    let ready = api.node(2).get("/readyz", None).await;
    assert_eq!(ready.status, 200);
}
