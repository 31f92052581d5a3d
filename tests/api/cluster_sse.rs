//! Result streams across owners: what an orchestrator committed but never published reaches
//! the customer's stream on another node anyway, read from the step log (the result hub's
//! gap fill), once and in order.

use std::time::Duration;

use crate::support::nodes::{Bench, NodeSpec};
use crate::support::scrape::scrape;
use crate::support::{Api, DEADLINE, HAPPY_PATH, expected, free_port, steps_of, view_steps};

/// Every role but the api: the node that owns the sagas and dies.
const BACKEND: &str = "orchestrator,account,product,order,payment";

impl Bench {
    /// The node that owns the sagas and serves their participants.
    fn backend(&self, extra: &[&str]) -> NodeSpec<'_> {
        NodeSpec {
            extra: extra.iter().map(|s| s.to_string()).collect(),
            ..self.node(1, BACKEND, &[])
        }
    }
}

/// A purchase's saga commits its transitions in four batches (one saga alone): the start,
/// then each step's success with the next step's start.
const BATCHES: u64 = 4;

/// The owner exits right after its `exit_after`-th committed batch, before publishing it:
/// the purchase is under way (its first batch answered the client), the batch is in the log
/// only. The customer's stream, open on an api node, still gets every event once and in
/// order after the owner is back, through a gap fill.
async fn lost_tail(name: &str, exit_after: u64) {
    let Some(bench) = Bench::new(name).await else {
        return;
    };
    let exit_after = [("SAGASHOP_FAULT_EXIT_AFTER_COMMITS", exit_after.to_string())];
    let mut owner = bench.node(1, BACKEND, &[]).spawn_with_env(&exit_after);
    let metrics = free_port();
    let listen = [("SAGASHOP_METRICS_LISTEN", format!("127.0.0.1:{metrics}"))];
    let front = bench.node(2, "api", &[]).spawn_with_env(&listen);
    owner.wait_ready().await;
    front.wait_ready().await;
    let api = Api::over(vec![front.url.clone()]);
    let c = api.sign_up().await;
    let product = api.create_product("lamp", 30, 5).await;
    let mut stream = api.subscribe(&c.access, None).await;

    let id = api.purchase_ok(&c.access, &[(product, 1)]).await;
    let status = owner.exited().await;
    assert_eq!(status.code(), Some(137), "{}", owner.log());
    // It comes back (claiming its partitions again) and finishes the saga.
    let _owner = bench.node(1, BACKEND, &[]).start().await;

    let frames = stream.take(HAPPY_PATH.len(), DEADLINE).await;
    assert_eq!(steps_of(&frames, id), expected(&HAPPY_PATH));
    let ids: Vec<u64> = frames.iter().map(|f| f.event_id().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order: {ids:?}");
    let view = api
        .wait_status(&c.access, id, "SUCCEEDED", Duration::from_secs(30))
        .await;
    assert_eq!(view_steps(&view), expected(&HAPPY_PATH));
    // Nothing twice: the stream has no result frame beyond the saga's log.
    let extra = stream.next_frame(Duration::from_secs(2)).await;
    assert!(extra.is_none(), "a result came twice: {extra:?}");

    let scraped = scrape(&format!("http://127.0.0.1:{metrics}/metrics")).await;
    assert!(
        scraped.sum("sagashop_sse_gap_fills_total", &[]) > 0.0,
        "the tail reached the stream without a gap fill"
    );
    assert!(scraped.sum("sagashop_sse_gap_filled_events_total", &[]) > 0.0);
}

#[actix_rt::test]
async fn a_tail_committed_but_never_published_mid_saga_reaches_the_stream_once_and_in_order() {
    // The saga's next results reveal the gap (and so does the takeover marker).
    lost_tail("sse_lost_mid", BATCHES - 1).await;
}

#[actix_rt::test]
async fn a_saga_s_last_events_never_published_reach_the_stream_through_the_takeover_marker() {
    // Nothing follows the lost batch: only the returning owner's takeover marker reveals it.
    lost_tail("sse_lost_last", BATCHES).await;
}

#[actix_rt::test]
async fn a_stream_stays_open_across_its_node_s_nats_outage_and_misses_nothing() {
    let Some(mut bench) = Bench::new("sse_nats_outage").await else {
        return;
    };
    // Payments wait for a signal: the saga's last batch is committed while NATS is down.
    let backend = bench.backend(&["--hold-payments"]).spawn();
    let front = bench.node(2, "api", &[]).start().await;
    backend.wait_ready().await;
    let api = Api::over(vec![front.url.clone()]);
    let c = api.sign_up().await;
    let product = api.create_product("kettle", 10, 5).await;
    let mut stream = api.subscribe(&c.access, None).await;
    let id = api.purchase_ok(&c.access, &[(product, 1)]).await;
    let before = stream.take(HAPPY_PATH.len() - 1, DEADLINE).await;

    bench.nats.stop();
    backend.signal("USR1");
    api.wait_status(&c.access, id, "SUCCEEDED", Duration::from_secs(30))
        .await;
    bench.nats.resume().await;

    // The same stream (not a reconnection) gets the last event, once.
    let last = stream.take(1, DEADLINE).await;
    let frames: Vec<_> = before.into_iter().chain(last).collect();
    assert_eq!(steps_of(&frames, id), expected(&HAPPY_PATH));
    let extra = stream.next_frame(Duration::from_secs(2)).await;
    assert!(extra.is_none(), "a result came twice: {extra:?}");
}
