//! `GET /api/openapi.json`: the OpenAPI 3 description of the API listener, generated from the
//! handlers' `#[utoipa::path]` annotations and the wire types' `ToSchema` derives, so that it
//! follows the code. A test checks that every row of the route table is in it, and CI fuzzes
//! the running server against it (`scripts/fuzz.sh`).
//!
//! What every operation shares is added here once, by [`Contract`], rather than on each
//! handler: JSON bodies under any Content-Type, 400/408/413 for a body, 400 for a path id, the
//! empty 401 of a missing or invalid token, 500 and 503; and the links stateful fuzzing follows.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, RefOr, Response, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::{account, health, product, purchase, records, sse};
use crate::domain::ids::{CustomerId, ProductId, PurchaseId};
use crate::domain::purchase::PurchaseItem;

/// The contract's envelope for errors (and for the `{"msg":"ok"}` of a PUT).
#[derive(Debug, Serialize, ToSchema)]
pub struct MsgBody {
    /// The original's text: `invalid parameter`, `product not found`, ...
    pub msg: String,
}

/// The security scheme's name in the document.
pub const BEARER: &str = "bearer";

/// The document's source: every operation of the API listener.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sagashop",
        description = "Purchases run as sagas. The contract is the original Go demo's \
            (shared/API.md). Request bodies are JSON whatever their Content-Type; unknown fields \
            are ignored, keys match case-insensitively and missing fields count as empty or \
            zero. Ids are unsigned 64-bit integers (above 2^53). Error bodies are \
            `{\"msg\": ...}`, except the empty 401 of a missing or invalid token."
    ),
    paths(
        account::sign_up,
        account::log_in,
        account::refresh,
        account::get_person,
        account::put_person,
        account::get_shipping,
        account::put_shipping,
        product::create,
        product::get,
        product::list,
        purchase::create,
        sse::results,
        purchase::get,
        records::order,
        records::payment,
        document,
        health::healthz,
        health::readyz,
    ),
    modifiers(&Contract)
)]
pub struct ApiDoc;

/// The document as served, built once per process: [`ApiDoc`] with its links (written as
/// JSON: utoipa 5's `Link` serializes its keys in snake case, `operation_id`, which OpenAPI
/// tools do not read).
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
        add_links(&mut doc);
        doc
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses((status = 200, description = "this OpenAPI 3 document", body = Object))
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(spec())
}

/// Typed ids are plain unsigned 64-bit numbers on the wire.
macro_rules! id_schema {
    ($($id:ty),*) => {$(
        impl PartialSchema for $id {
            fn schema() -> RefOr<Schema> {
                u64::schema()
            }
        }
        impl ToSchema for $id {}
    )*};
}
id_schema!(CustomerId, ProductId, PurchaseId);

/// `domain` stays free of the documentation crate: a cart line's schema is written here.
impl PartialSchema for PurchaseItem {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .property("product_id", ProductId::schema())
            .property(
                "amount",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int64,
                    )))
                    .minimum(Some(1)),
            )
            .required("product_id")
            .required("amount")
            .into()
    }
}
impl ToSchema for PurchaseItem {}

/// What every operation shares, added to the generated document (see the module comment).
pub struct Contract;

/// Operations that answer 429 besides their own statuses, with why.
const THROTTLED: &[(&str, &str)] = &[
    (
        "logIn",
        "too many failed logins for this email (or email and client address); see Retry-After",
    ),
    (
        "purchaseResults",
        "the customer has as many result streams open as allowed",
    ),
];

fn error(description: &str) -> Response {
    Response::builder()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(MsgBody::schema_ref())),
        )
        .build()
}

impl MsgBody {
    fn schema_ref() -> RefOr<Schema> {
        RefOr::Ref(utoipa::openapi::Ref::from_schema_name(MsgBody::name()))
    }
}

fn add_response(op: &mut Operation, status: u16, response: Response) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert(RefOr::T(response));
}

impl Contract {
    fn operation(op: &mut Operation) {
        if let Some(body) = &mut op.request_body {
            // Bodies are read as JSON whatever the Content-Type says (the README's curl sends
            // none): the same schema under any media type.
            if let Some(json) = body.content.get("application/json").cloned() {
                body.content.insert("*/*".to_owned(), json);
            }
            add_response(
                op,
                400,
                error("`invalid parameter`: the body is not the JSON asked for"),
            );
            add_response(
                op,
                408,
                error("`request timeout`: the body did not arrive in time"),
            );
            add_response(
                op,
                413,
                error("`payload too large`: the body is over 64 KiB"),
            );
        }
        let in_path = |p: &utoipa::openapi::path::Parameter| {
            p.parameter_in == utoipa::openapi::path::ParameterIn::Path
        };
        if op.parameters.iter().flatten().any(in_path) {
            add_response(op, 400, error("`invalid parameter`: the id is not a u64"));
        }
        if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
            add_response(
                op,
                401,
                Response::new(
                    "No usable access token (missing, malformed, invalid, a refresh token): \
                     an empty body. An expired one: `{\"msg\":\"token expired\"}` (JSON).",
                ),
            );
        }
        let throttled = THROTTLED
            .iter()
            .find(|(id, _)| op.operation_id.as_deref() == Some(*id));
        if let Some((_, why)) = throttled {
            add_response(op, 429, error(why));
        }
        add_response(op, 500, error("`server error`"));
        add_response(
            op,
            503,
            error("`server busy` or `service unavailable`: try again later"),
        );
    }
}

/// The links a stateful fuzzer follows, as (from operation, status, name, link): from a
/// created resource to the operations that read it, and from a token pair to the refresh.
fn links() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    let by_id = |op, expr| json!({"operationId": op, "parameters": {"id": expr}});
    let refresh = json!({
        "operationId": "refresh",
        "requestBody": {"refresh_token": "$response.body#/refresh_token"}
    });
    let purchase = "$response.body#/purchase_id";
    vec![
        ("signUp", "201", "Refresh", refresh.clone()),
        ("logIn", "200", "Refresh", refresh.clone()),
        ("refresh", "200", "Refresh", refresh),
        (
            "createProduct",
            "201",
            "GetProduct",
            by_id("getProduct", "$response.body#/id"),
        ),
        (
            "createProduct",
            "201",
            "BuyIt",
            json!({
                "operationId": "createPurchase",
                "requestBody": {
                    "purchase_items": [{"product_id": "$response.body#/id", "amount": 1}],
                    "payment": {"currency_code": "NT"}
                }
            }),
        ),
        (
            "createPurchase",
            "201",
            "GetPurchase",
            by_id("getPurchase", purchase),
        ),
        (
            "createPurchase",
            "201",
            "GetOrder",
            by_id("getOrder", purchase),
        ),
        (
            "createPurchase",
            "201",
            "GetPayment",
            by_id("getPayment", purchase),
        ),
    ]
}

fn add_links(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    let operations = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for op in operations {
        for (from, status, name, link) in links() {
            if op["operationId"] == from {
                op["responses"][status]["links"][name] = link;
            }
        }
    }
}

impl Modify for Contract {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            BEARER.to_owned(),
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "`Authorization: <any word> <access token>`: exactly two words",
                    ))
                    .build(),
            ),
        );
        components
            .schemas
            .insert(MsgBody::name().into_owned(), MsgBody::schema());
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.put, &mut item.post]
                .into_iter()
                .flatten()
            {
                Contract::operation(op);
            }
        }
    }
}
