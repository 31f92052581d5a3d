//! The fault-free black-box suite on a local three-node cluster (`scripts/cluster.sh`; one
//! per test process, shared by these tests): the flows of `purchases`, `accounts` and
//! `products` unchanged, their requests taking the nodes in turn (sign up on one, log in on
//! the next, stream on one and buy on another), and flows that say which node does what.
//! Outside CI, with MariaDB or NATS unreachable, every test here says SKIPPED and passes.

use serde_json::json;

use crate::support::cluster::Cluster;
use crate::support::*;
use crate::{accounts, products, purchases};

flow_tests!(
    Cluster::shared_api(); purchases =>
    unauthenticated_purchase_and_result_are_401_with_empty_body,
    create_purchase_answers_201_with_purchase_id_only,
    non_positive_amount_is_400_even_for_unknown_products,
    empty_missing_or_null_items_are_400,
    unknown_product_is_404_and_no_event_follows,
    currency_must_be_exactly_nt_or_us,
    missing_payment_object_is_400_invalid_parameter,
    wrong_methods_are_404,
    result_without_stream_accept_is_json_null,
    stream_headers_and_happy_path_six_events,
    success_effects_order_payment_and_stock,
    insufficient_inventory_three_events_and_nothing_else,
    exact_inventory_succeeds_then_one_more_fails,
    duplicate_product_lines_fail_at_inventory,
    customers_only_see_their_own_results,
    two_concurrent_purchases_stream_twelve_events_in_causal_order,
    no_replay_without_last_event_id,
    resume_with_last_event_id_gets_exactly_the_missed_events,
    resume_does_not_replay_other_customers_events,
    two_streams_of_one_customer_both_get_everything,
    another_customers_records_are_404,
    order_and_payment_lookup_errors,
    purchase_status_matches_the_stream,
    payment_amount_is_quantity_times_price,
    resume_during_concurrent_sagas_loses_and_repeats_nothing,
    idle_stream_gets_keep_alive_comments_and_stays_live,
    overflowing_total_is_400,
);
// Not `multi_item_amount_and_sorted_order_items`: it needs the second product's id to be the
// larger, and ids made on two nodes within one tick need not be.

flow_tests!(
    Cluster::shared_api(); accounts =>
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

flow_tests!(Cluster::shared_api(); products => get_product_errors);

/// One customer's purchases with every step on a node of its own: signed up on node 1, logged
/// in on node 2, streaming on node 3 while buying on node 2; every node then shows the same
/// order, payment and purchase, and a stream resumed on node 1 from the middle of node 3's
/// gets exactly the rest.
#[actix_rt::test]
async fn a_purchase_crosses_every_node() {
    let Some(api) = Cluster::shared_api() else {
        return;
    };
    let nodes = [api.node(1), api.node(2), api.node(3)];
    let [n1, n2, n3] = &nodes;
    let c = n1.sign_up().await;
    let login = n2
        .post(
            "/api/account/auth/login",
            None,
            &json!({"email": c.email, "password": "abcd5432"}),
        )
        .await;
    assert_eq!(login.status, 200, "{:?}", login.json());
    let token = login.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(customer_of(&token), c.id);
    // Node 1 and node 3 both run the product service.
    let plenty = n1.create_product("plenty", 100, 10).await;
    let scarce = n3.create_product("scarce", 7, 1).await;

    let mut sse = n3.subscribe(&token, None).await;
    let ok = n2.purchase_ok(&token, &[(plenty, 2)]).await;
    let frames = sse.take(6, DEADLINE).await;
    assert_eq!(steps_of(&frames, ok), expected(&HAPPY_PATH));
    let refused = n2.purchase_ok(&token, &[(scarce, 2)]).await;
    n1.expect_refused_at_inventory(&mut sse, &token, refused)
        .await;

    for node in &nodes {
        let order = node.get(&format!("/api/order/{ok}"), Some(&token)).await;
        assert_eq!(
            order.json(),
            json!({"id": ok, "purchased_items": [{"product_id": plenty, "name": "plenty", "description": "plenty description", "brand_name": "mingbrand", "price": 100, "amount": 2}]}),
            "{}",
            node.url
        );
        let payment = node.get(&format!("/api/payment/{ok}"), Some(&token)).await;
        assert_eq!(
            payment.json(),
            json!({"id": ok, "currency_code": "NT", "amount": 200}),
            "{}",
            node.url
        );
        let view = node.purchase_view(&token, ok).await;
        assert_eq!(view["status"], "SUCCEEDED", "{}", node.url);
        assert_eq!(view_steps(&view), expected(&HAPPY_PATH), "{}", node.url);
        let view = node.purchase_view(&token, refused).await;
        assert_eq!(view["status"], "ROLLED_BACK", "{}", node.url);
        assert_eq!(
            view_steps(&view),
            expected(&INVENTORY_FAILURE),
            "{}",
            node.url
        );
        assert_no_order_nor_payment(node, &token, refused).await;
        assert_eq!(node.inventory(plenty).await, 8, "{}", node.url);
        assert_eq!(node.inventory(scarce).await, 1, "{}", node.url);
    }

    // Resumed on node 1 after node 3's third frame: the rest of the purchase, then the refused
    // purchase and the quiet check's marker, with the ids node 3 gave them.
    let [marker] = api.markers()[..] else {
        panic!("one marker purchase expected: {:?}", api.markers());
    };
    let mut resumed = n1.subscribe(&token, frames[2].event_id()).await;
    let replay = resumed.take(3 + 3 + 3, DEADLINE).await;
    assert_eq!(steps_of(&replay, ok), expected(&HAPPY_PATH[3..]));
    assert_eq!(steps_of(&replay, refused), expected(&INVENTORY_FAILURE));
    assert_eq!(steps_of(&replay, marker), expected(&INVENTORY_FAILURE));
    assert_eq!(
        replay[..3].iter().map(|f| f.event_id()).collect::<Vec<_>>(),
        frames[3..].iter().map(|f| f.event_id()).collect::<Vec<_>>()
    );
    let ids: Vec<u64> = replay.iter().map(|f| f.event_id().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    n2.assert_quiet(&mut resumed).await;
}

/// Every node answers the contract's errors itself (401, 400, 404), whichever roles it runs.
#[actix_rt::test]
async fn every_node_answers_the_errors_of_the_contract() {
    let Some(api) = Cluster::shared_api() else {
        return;
    };
    for n in 1..=3 {
        let node = api.node(n);
        purchases::unauthenticated_purchase_and_result_are_401_with_empty_body(&node).await;
        purchases::order_and_payment_lookup_errors(&node).await;
        purchases::unknown_product_is_404_and_no_event_follows(&node).await;
        purchases::missing_payment_object_is_400_invalid_parameter(&node).await;
        products::get_product_errors(&node).await;
    }
}

/// The harness's controls of a cluster of its own: a killed node is down, started again it
/// is ready and serves customers and products made while it was down.
#[actix_rt::test]
async fn a_killed_node_started_again_serves() {
    let Some(cluster) = Cluster::start("sagashop_t_restart") else {
        return;
    };
    let api = cluster.api();
    cluster.kill(2);
    let status = cluster.status();
    assert!(status.contains("node 2  pid -"), "{status}");
    let healthz = format!("{}/healthz", api.node(2).url);
    assert!(
        api.client.get(&healthz).send().await.is_err(),
        "node 2 answers"
    );

    let c = api.node(1).sign_up().await;
    let p = api.node(3).create_product("p", 5, 5).await;
    cluster.start_node(2);
    let status = cluster.status();
    assert_eq!(status.matches(" alive  ready ").count(), 3, "{status}");
    let id = api.node(2).purchase_ok(&c.access, &[(p, 1)]).await;
    let view = api.node(2).wait_finished(&c.access, id).await;
    assert_eq!(view["status"], "SUCCEEDED");
    assert_eq!(api.node(2).inventory(p).await, 4);
}

/// The harness's pause controls: a paused node (SIGSTOP, a stall) answers nothing while the
/// others serve; resumed, it is ready again and serves what was made meanwhile.
#[actix_rt::test]
async fn a_paused_node_answers_again_once_resumed() {
    let Some(cluster) = Cluster::start("sagashop_t_pause") else {
        return;
    };
    let api = cluster.api();
    cluster.pause(2);
    let status = cluster.status();
    assert!(status.contains(" paused "), "{status}");
    let healthz = format!("{}/healthz", api.node(2).url);
    let stalled = api
        .client
        .get(&healthz)
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await;
    assert!(stalled.is_err(), "a paused node answered: {stalled:?}");

    let p = api.node(3).create_product("p", 5, 5).await;
    cluster.resume(2);
    let status = cluster.status();
    assert_eq!(status.matches(" alive  ready ").count(), 3, "{status}");
    assert_eq!(api.node(2).inventory(p).await, 5);
}

/// Run with `REDIS=single` or `REDIS=cluster`, the shared cluster's nodes cache in a Redis of
/// the test's own: a product read through any node is stored there under its hash-tagged key
/// (`{product:<id>}`), and every node answers it. Without `REDIS` there is nothing to check.
#[actix_rt::test]
async fn product_reads_are_cached_in_the_clusters_redis() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let Some(redis) = cluster.redis() else {
        return;
    };
    let api = cluster.api();
    let id = api.create_product("redis-cached", 7, 70).await;
    for n in 1..=3 {
        assert_eq!(api.node(n).inventory(id).await, 70);
    }
    let key = format!("{{product:{id}}}");
    let stored = eventually(DEADLINE, || async {
        (!redis.keys_matching(&key).is_empty()).then_some(())
    })
    .await;
    assert!(stored.is_some(), "{key} is not in the cluster's Redis");
}
