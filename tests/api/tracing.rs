//! Traces and logs, as an operator sees them: nodes export their spans over OTLP to a
//! receiver inside this test process, which checks that one purchase is one trace (request,
//! saga transitions, step commands and their handling, commits linked to it, SSE delivery),
//! across the nodes of a cluster and across a crash and restart; and `--log-format json`
//! prints one JSON line per saga outcome.

use std::collections::HashSet;

use serde_json::Value;

use crate::support::cluster::Cluster;
use crate::support::nodes::Node;
use crate::support::otlp::{ReceivedSpan, Receiver, trace_of};
use crate::support::{Api, DEADLINE, SseStream, eventually};

/// The steps every successful purchase runs, by the name spans give them.
const STEPS: [&str; 3] = ["UPDATE_PRODUCT_INVENTORY", "CREATE_ORDER", "CREATE_PAYMENT"];

/// What the nodes of these tests export with: short batches, so spans arrive quickly.
fn export_env(receiver: &Receiver) -> [(&'static str, String); 2] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
}

fn named<'a>(spans: &[&'a ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().copied().filter(|s| s.name == name).collect()
}

fn of_purchase(span: &ReceivedSpan, purchase_id: u64) -> bool {
    span.attr("purchase_id") == Some(purchase_id.to_string().as_str())
}

/// The trace of a purchase: the one its `saga.accept` span is in.
fn trace_id_of(spans: &[ReceivedSpan], purchase_id: u64) -> Option<String> {
    spans
        .iter()
        .find(|s| s.name == "saga.accept" && of_purchase(s, purchase_id))
        .map(|s| s.trace_id.clone())
}

/// What is missing from a successful purchase's trace (empty: nothing): one root, the
/// `POST /api/purchase` request span; every other span's parent in the trace; the saga's
/// transitions up to SUCCEEDED; a command and its handling per step; a commit of the saga
/// store and of each participant linked to the trace; `deliveries` SSE deliveries.
fn missing(spans: &[ReceivedSpan], purchase_id: u64, deliveries: usize) -> Vec<String> {
    let Some(trace_id) = trace_id_of(spans, purchase_id) else {
        return vec!["the saga.accept span".into()];
    };
    let trace = trace_of(spans, &trace_id);
    let ids: HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    let mut missing = Vec::new();
    let roots: Vec<&str> = trace
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    if roots != ["POST /api/purchase"] {
        missing.push(format!(
            "one root, the POST request span (roots: {roots:?})"
        ));
    }
    for s in &trace {
        if !s.parent_span_id.is_empty() && !ids.contains(s.parent_span_id.as_str()) {
            missing.push(format!("the parent of {} ({})", s.name, s.parent_span_id));
        }
    }
    let transitions = named(&trace, "saga.transition");
    if !transitions
        .iter()
        .any(|s| s.attr("to") == Some("SUCCEEDED"))
    {
        missing.push("the transition to SUCCEEDED".into());
    }
    for step in STEPS {
        for name in ["step.command", "step.handle"] {
            let found = named(&trace, name)
                .iter()
                .any(|s| s.attr("step") == Some(step) && s.attr("kind") == Some("action"));
            if !found {
                missing.push(format!("{name} of {step}"));
            }
        }
    }
    for database in ["saga"].into_iter().chain(STEPS) {
        let linked = spans.iter().any(|s| {
            s.name == "db.commit"
                && s.attr("database") == Some(database)
                && s.links
                    .iter()
                    .any(|(t, span)| *t == trace_id && ids.contains(span.as_str()))
        });
        if !linked {
            missing.push(format!("a db.commit of {database} linked to the trace"));
        }
    }
    let delivered = named(&trace, "sse.deliver").len();
    if delivered < deliveries {
        missing.push(format!(
            "{deliveries} sse.deliver spans (found {delivered})"
        ));
    }
    missing
}

/// Waits until the purchase's trace is complete (see [`missing`]); answers its spans.
async fn complete_trace(
    receiver: &Receiver,
    purchase_id: u64,
    deliveries: usize,
) -> Vec<ReceivedSpan> {
    let done = eventually(DEADLINE, || {
        let spans = receiver.spans();
        let complete = missing(&spans, purchase_id, deliveries).is_empty();
        async move { complete.then_some(spans) }
    })
    .await;
    done.unwrap_or_else(|| {
        let spans = receiver.spans();
        let trace: Vec<String> = trace_id_of(&spans, purchase_id)
            .map(|t| {
                trace_of(&spans, &t)
                    .iter()
                    .map(|s| format!("{s:?}"))
                    .collect()
            })
            .unwrap_or_default();
        panic!(
            "the trace of purchase {purchase_id} lacks {:?}; its spans:\n{}",
            missing(&spans, purchase_id, deliveries),
            trace.join("\n")
        )
    })
}

/// A new customer buys one item on `node` with their result stream open (its six results
/// are each written to it); answers the purchase's id once it has succeeded, and the stream.
async fn buy_one_watched(node: &Node) -> (u64, SseStream) {
    let api = Api::over(vec![node.url.clone()]);
    let c = api.sign_up().await;
    let product = api.create_product("traced", 10, 5).await;
    let stream = api.subscribe(&c.access, None).await;
    let id = api.purchase_ok(&c.access, &[(product, 1)]).await;
    assert_eq!(
        api.wait_finished(&c.access, id).await["status"],
        "SUCCEEDED"
    );
    (id, stream)
}

#[actix_rt::test]
async fn one_purchase_on_an_embedded_node_is_one_trace() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::embedded(dir.path(), &[], &export_env(&receiver)).await;
    let (id, _stream) = buy_one_watched(&node).await;
    // Six results (each step's EXECUTE and SUCCESS), each written to the open stream.
    let spans = complete_trace(&receiver, id, 6).await;
    let trace = trace_of(&spans, &trace_id_of(&spans, id).unwrap());
    assert!(trace.iter().all(|s| s.node_id == Some(1)), "{trace:?}");
}

#[actix_rt::test]
async fn spans_still_buffered_are_sent_on_sigterm() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    // A batch would wait a minute: only the flush on shutdown sends these spans in time.
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY", "60000".to_owned()),
    ];
    let mut node = Node::embedded(dir.path(), &[], &env).await;
    let (id, _stream) = buy_one_watched(&node).await;
    assert!(
        trace_id_of(&receiver.spans(), id).is_none(),
        "exported before the flush"
    );
    node.signal("TERM");
    assert!(node.exited().await.success(), "{}", node.log());
    let spans = receiver.spans();
    assert_eq!(missing(&spans, id, 6), Vec::<String>::new());
}

#[actix_rt::test]
async fn a_saga_resumed_after_a_crash_continues_its_trace() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let env = export_env(&receiver);
    let mut first = Node::embedded(dir.path(), &["--hold-payments"], &env).await;
    let api = Api::over(vec![first.url.clone()]);
    let c = api.sign_up().await;
    let product = api.create_product("resumed", 10, 5).await;
    let id = api.purchase_ok(&c.access, &[(product, 1)]).await;
    // The saga waits on its held payment: its trace so far has arrived.
    let before = receiver
        .wait_for("the transition to the payment step", |spans| {
            spans
                .iter()
                .find(|s| {
                    s.name == "saga.transition"
                        && of_purchase(s, id)
                        && s.attr("to") == Some("EXECUTING:CREATE_PAYMENT")
                })
                .map(|s| s.trace_id.clone())
        })
        .await;
    first.kill();

    let second = Node::embedded(dir.path(), &[], &env).await;
    let view = Api::over(vec![second.url.clone()])
        .wait_finished(&c.access, id)
        .await;
    assert_eq!(view["status"], "SUCCEEDED");
    let after = receiver
        .wait_for("the resumed saga's payment and success", |spans| {
            let handled = spans.iter().find(|s| {
                s.name == "step.handle"
                    && of_purchase(s, id)
                    && s.attr("step") == Some("CREATE_PAYMENT")
            })?;
            let succeeded = spans.iter().find(|s| {
                s.name == "saga.transition"
                    && of_purchase(s, id)
                    && s.attr("to") == Some("SUCCEEDED")
            })?;
            Some((handled.trace_id.clone(), succeeded.trace_id.clone()))
        })
        .await;
    assert_eq!(
        after,
        (before.clone(), before),
        "the resumed saga left its trace"
    );
}

#[actix_rt::test]
async fn one_purchase_in_the_cluster_is_one_trace_across_its_nodes() {
    let receiver = Receiver::start();
    let env = export_env(&receiver);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let Some(cluster) = Cluster::start_with_env("sagashop_t_tracing", &env) else {
        return;
    };
    // Node 2 takes the request, stores the saga (its accept span) and streams the results;
    // node 1 orchestrates and reserves the stock; the order and the payment go to node 2 or 3.
    let api = cluster.api();
    let c = api.sign_up().await;
    let product = api.create_product("traced", 10, 5).await;
    let node2 = api.node(2);
    let _stream = node2.subscribe(&c.access, None).await;
    let id = node2.purchase_ok(&c.access, &[(product, 1)]).await;
    node2.wait_finished(&c.access, id).await;
    let spans = complete_trace(&receiver, id, 6).await;
    let trace = trace_of(&spans, &trace_id_of(&spans, id).unwrap());
    let node_of = |name: &str| -> HashSet<i64> {
        named(&trace, name)
            .iter()
            .filter_map(|s| s.node_id)
            .collect()
    };
    assert_eq!(node_of("POST /api/purchase"), HashSet::from([2]));
    assert_eq!(node_of("saga.accept"), HashSet::from([2]));
    assert_eq!(node_of("sse.deliver"), HashSet::from([2]));
    let handled: HashSet<i64> = node_of("step.handle");
    assert!(
        handled.contains(&1),
        "the inventory step runs on node 1: {handled:?}"
    );
    assert!(
        handled.iter().any(|n| *n == 2 || *n == 3),
        "order and payment run on node 2 or 3: {handled:?}"
    );
    // Across NATS: each command handled elsewhere is a child of the request that crossed.
    for handle in named(&trace, "step.handle")
        .iter()
        .filter(|s| s.node_id != Some(1))
    {
        let parent = trace
            .iter()
            .find(|s| s.span_id == handle.parent_span_id)
            .unwrap();
        assert_eq!(parent.name, "bus.serve", "{handle:?}");
        let request = trace
            .iter()
            .find(|s| s.span_id == parent.parent_span_id)
            .unwrap();
        assert_eq!(
            (request.name.as_str(), request.node_id),
            ("bus.request", Some(1))
        );
    }
}

#[actix_rt::test]
async fn json_logs_have_one_line_per_saga_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::embedded(dir.path(), &["--log-format", "json"], &[]).await;
    let api = Api::over(vec![node.url.clone()]);
    let c = api.sign_up().await;
    let product = api.create_product("logged", 10, 5).await;
    let ok = api.purchase_ok(&c.access, &[(product, 1)]).await;
    let refused = api.purchase_ok(&c.access, &[(product, 50)]).await;
    api.wait_finished(&c.access, ok).await;
    api.wait_finished(&c.access, refused).await;
    let outcome_of = |id: u64| {
        let lines: Vec<Value> = node
            .log()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .filter(|v| {
                v["message"] == "saga outcome" && v["purchase_id"].as_str() == Some(&id.to_string())
            })
            .collect();
        lines
    };
    let lines = eventually(DEADLINE, || {
        let (a, b) = (outcome_of(ok), outcome_of(refused));
        async move { (a.len() == 1 && b.len() == 1).then_some((a, b)) }
    })
    .await
    .unwrap_or_else(|| panic!("no outcome lines; the log:\n{}", node.log()));
    let (ok_line, refused_line) = (&lines.0[0], &lines.1[0]);
    assert_eq!(ok_line["outcome"], "succeeded", "{ok_line}");
    assert_eq!(refused_line["outcome"], "rolled_back", "{refused_line}");
    for line in [ok_line, refused_line] {
        assert_eq!(line["level"], "INFO", "{line}");
        assert!(
            line["duration_ms"].as_i64().is_some_and(|ms| ms >= 0),
            "{line}"
        );
    }
}
