//! `GET /api/openapi.json` (API.md "Added surfaces"): the served document describes every row
//! of the route table and nothing else, with the statuses the contract allows besides each
//! operation's own. The fuzzing against it is `scripts/fuzz.sh`.

use std::collections::BTreeSet;

use crate::support::*;
use sagashop::http::routes;
use serde_json::Value;

async fn document(app: &TestApp) -> Value {
    let r = app.get("/api/openapi.json", None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        r.header("content-type")
    );
    r.json()
}

/// Every (method, path) of the document's operations.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

fn operations(doc: &Value) -> impl Iterator<Item = (&String, &String, &Value)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .iter()
                .map(move |(method, op)| (method, path, op))
        })
}

#[actix_rt::test]
async fn every_route_of_the_table_is_documented_and_nothing_else() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let table: BTreeSet<(String, String)> = routes::table()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    let documented = documented(&doc);
    let missing: Vec<_> = table.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes without documentation: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&table).collect();
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
}

#[actix_rt::test]
async fn every_operation_documents_the_contracts_leniencies_and_limits() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let at = format!("{method} {path}");
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no id"));
        assert!(ids.insert(id.to_owned()), "{at}: operation id {id} twice");
        let responses = op["responses"].as_object().unwrap();
        let status = |code: &str| responses.get(code);
        assert!(
            responses.keys().any(|c| c.starts_with('2')),
            "{at}: no success"
        );
        for code in ["500", "503"] {
            assert!(status(code).is_some(), "{at}: no {code}");
        }
        if let Some(body) = op.get("requestBody") {
            let content = body["content"].as_object().unwrap();
            assert!(content.contains_key("application/json"), "{at}");
            assert_eq!(
                content.get("*/*"),
                content.get("application/json"),
                "{at}: JSON whatever the Content-Type"
            );
            for code in ["400", "408", "413"] {
                assert!(status(code).is_some(), "{at}: no {code}");
            }
        }
        if op.get("security").is_some() {
            let unauthorized = status("401").unwrap_or_else(|| panic!("{at}: no 401"));
            assert!(
                unauthorized.get("content").is_none(),
                "{at}: 401 has an empty body"
            );
        }
        if path.contains("{id}") {
            assert!(status("400").is_some() && status("404").is_some(), "{at}");
        }
    }
    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    for (path, method) in [
        ("/api/account/auth/login", "post"),
        ("/api/purchase/result", "get"),
    ] {
        assert!(
            op(path, method)["responses"].get("429").is_some(),
            "{method} {path}: no 429"
        );
    }
    let items = &doc["components"]["schemas"]["PurchaseBody"]["properties"]["purchase_items"];
    assert_eq!(
        items["maxItems"], 100,
        "the cart cap is documented: {items}"
    );
}

#[actix_rt::test]
async fn links_name_operations_that_exist() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let ids: BTreeSet<&str> = operations(&doc)
        .filter_map(|(_, _, op)| op["operationId"].as_str())
        .collect();
    let mut links = 0;
    for (_, _, op) in operations(&doc) {
        for response in op["responses"].as_object().unwrap().values() {
            for link in response["links"]
                .as_object()
                .into_iter()
                .flat_map(|l| l.values())
            {
                links += 1;
                let target = link["operationId"]
                    .as_str()
                    .expect("operationId, camel case");
                assert!(ids.contains(target), "link to {target}");
            }
        }
    }
    assert!(links >= 5, "{links} links");
}
