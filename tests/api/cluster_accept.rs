//! Accepting anywhere, on nodes of the test's own: an api node stores each purchase's saga
//! itself and answers 201 while no orchestrator runs; the orchestrator, back, starts every
//! one of them exactly once, and the customer's stream gets every event once and in order.
//! A saga stored without a start notice (as when the notice is lost) is found by the owner's
//! sweep of its partitions.

use std::time::Duration;

use sagashop::clock::Clock;
use sagashop::config::{Config, ServiceDb};
use sagashop::db::sagas::Sagas;
use sagashop::domain::ids::{CustomerId, IdGenerator, ProductId, PurchaseId};
use sagashop::domain::partition::of_customer;
use sagashop::domain::purchase::{Currency, Purchase, PurchaseItem};
use sagashop::domain::trace::TraceContext;

use crate::support::nodes::Bench;
use crate::support::{
    Api, DEADLINE, HAPPY_PATH, SseFrame, customer_of, expected, steps_of, view_steps,
};

/// The orchestrator runs alone on node 1; node 2 serves the API and every service.
const ORCHESTRATOR: &str = "orchestrator";
const API: &str = "api,account,product,order,payment";

impl Bench {
    /// Starts the api node and the orchestrator node, both ready.
    async fn start(&self) -> (crate::support::nodes::Node, crate::support::nodes::Node) {
        // The orchestrator is ready only once the services it calls are reachable.
        let api = self.node(2, API, &[]).spawn();
        let orchestrator = self.node(1, ORCHESTRATOR, &[]).start().await;
        api.wait_ready().await;
        (api, orchestrator)
    }
}

/// Result frames of a customer's stream until `n` have arrived; a stream that ends or goes
/// quiet is resumed from the last id it delivered, as a browser would.
async fn results(api: &Api, token: &str, n: usize) -> Vec<SseFrame> {
    let mut stream = api.subscribe(token, Some(0)).await;
    let mut frames: Vec<SseFrame> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while frames.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "got {} of {n} results: {frames:?}",
            frames.len()
        );
        match stream.next_frame(Duration::from_secs(5)).await {
            Some(frame) if frame.id.is_some() => frames.push(frame),
            Some(_) => {}
            None => {
                let last = frames.last().and_then(|f| f.id.as_deref());
                let last = last.map_or(0, |id| id.parse().unwrap());
                stream = api.subscribe(token, Some(last)).await;
            }
        }
    }
    frames
}

#[actix_rt::test]
async fn purchases_accepted_while_the_only_orchestrator_is_down_finish_once_it_is_back() {
    let Some(bench) = Bench::new("accept_down").await else {
        return;
    };
    let (api_node, mut orchestrator) = bench.start().await;
    let api = Api::over(vec![api_node.url.clone()]);
    let c = api.sign_up().await;
    let p = api.create_product("lamp", 10, 100).await;
    // With the orchestrator up: accepted here, announced, run there.
    let first = api.purchase_ok(&c.access, &[(p, 1)]).await;
    api.wait_status(&c.access, first, "SUCCEEDED", DEADLINE)
        .await;

    orchestrator.kill();
    let mut down = Vec::new();
    for _ in 0..12 {
        down.push(api.purchase_ok(&c.access, &[(p, 1)]).await);
    }
    // Stored, not started: its status reads as pending, with no steps yet.
    let view = api.purchase_view(&c.access, down[0]).await;
    assert_eq!(view["status"], "PENDING", "{view}");
    assert!(view_steps(&view).is_empty(), "{view}");
    assert_eq!(view["amount"], 10, "{view}");

    let _back = bench.node(1, ORCHESTRATOR, &[]).start().await;
    for id in &down {
        let done = api
            .wait_status(&c.access, *id, "SUCCEEDED", Duration::from_secs(60))
            .await;
        assert_eq!(view_steps(&done), expected(&HAPPY_PATH), "{done}");
    }
    // Each saga ran once: one unit of stock, one order and one payment each.
    let all: Vec<u64> = std::iter::once(first).chain(down).collect();
    assert_eq!(api.inventory(p).await, 100 - all.len() as i64);
    let orders = bench.databases.count(ServiceDb::Order, "orders").await;
    let payments = bench.databases.count(ServiceDb::Payment, "payments").await;
    assert_eq!((orders, payments), (all.len() as i64, all.len() as i64));
    // The customer's stream: every event of every purchase, once, in order.
    let frames = results(&api, &c.access, all.len() * HAPPY_PATH.len()).await;
    for id in &all {
        assert_eq!(steps_of(&frames, *id), expected(&HAPPY_PATH), "{id}");
    }
    let ids: Vec<u64> = frames
        .iter()
        .map(|f| f.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[actix_rt::test]
async fn a_saga_stored_without_a_start_notice_is_started_by_the_owners_sweep() {
    let Some(bench) = Bench::new("accept_sweep").await else {
        return;
    };
    let (api_node, _orchestrator) = bench.start().await;
    let api = Api::over(vec![api_node.url.clone()]);
    let c = api.sign_up().await;
    let p = api.create_product("kettle", 15, 10).await;

    // Stored straight into the saga store, as an api node does, but never announced.
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::embedded(dir.path());
    bench.databases.configure(&mut config.databases);
    let pools = sagashop::app::open_databases(&config.databases, &[ServiceDb::Saga])
        .await
        .unwrap();
    let sagas = Sagas::new(pools[0].1.clone(), Clock::system());
    let customer_id = CustomerId(customer_of(&c.access));
    let purchase = Purchase {
        purchase_id: PurchaseId(IdGenerator::new(77).next()),
        customer_id,
        items: vec![PurchaseItem {
            product_id: ProductId(p),
            amount: 2,
        }],
        currency: Currency::Nt,
        amount: 30,
    };
    let partition = of_customer(customer_id, config.partitions);
    sagas
        .insert_pending(&purchase, partition, &TraceContext::NONE)
        .await
        .unwrap();

    let id = purchase.purchase_id.0;
    let done = api
        .wait_status(&c.access, id, "SUCCEEDED", Duration::from_secs(30))
        .await;
    assert_eq!(view_steps(&done), expected(&HAPPY_PATH), "{done}");
    assert_eq!(api.inventory(p).await, 8);
    assert_eq!(
        bench.databases.count(ServiceDb::Payment, "payments").await,
        1
    );
}
