//! `/api/product` and `/api/products`: the catalog (no auth, as the original).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, parse_id};
use super::openapi::MsgBody;
use super::validate::{self, limits};
use crate::actors::messages::{
    CatalogLine, CreateProduct, GetProduct, ListProducts, ProductDetail,
};
use crate::actors::service::Serve;
use crate::domain::ids::ProductId;

/// `POST /api/product` body (`id` is accepted and ignored).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"name":"product1","description":"first product",
    "brand_name":"mingbrand","price":100,"inventory":1000}))]
pub struct CreateProductBody {
    #[serde(default)]
    #[schema(required = true, min_length = 1, max_length = 256)]
    name: String,
    #[serde(default)]
    #[schema(required = true, min_length = 1, max_length = 16000)]
    description: String,
    #[serde(default)]
    #[schema(required = true, min_length = 1, max_length = 256)]
    brand_name: String,
    #[serde(default)]
    #[schema(required = true, minimum = 1)]
    price: i64,
    #[serde(default)]
    #[schema(required = true, minimum = 1)]
    inventory: i64,
}

/// `POST /api/product`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Created {
    id: ProductId,
}

/// `GET /api/products`' answer: `null` rather than `[]` for an empty page, as the original.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogPage {
    catalogs: Option<Vec<CatalogLineView>>,
}

/// `GET /api/products` query, parsed by hand so every bad value is the contract's 400.
#[derive(Debug, Deserialize)]
struct PageQuery {
    offset: Option<String>,
    size: Option<String>,
}

/// Adds a product: 201 `{"id":..}`.
#[utoipa::path(post, path = "/api/product", operation_id = "createProduct", tag = "catalog",
    request_body = CreateProductBody,
    responses(
        (status = 201, description = "the new product's id", body = Created),
        (status = 400, description = "`invalid parameter` (empty or too long text, price or inventory not above 0)", body = MsgBody),
    ))]
pub async fn create(
    state: web::Data<AppState>,
    JsonBody(b): JsonBody<CreateProductBody>,
) -> Result<HttpResponse, ApiError> {
    validate::text(&b.name, limits::PRODUCT_NAME)?;
    validate::multiline_text(&b.description, limits::DESCRIPTION)?;
    validate::text(&b.brand_name, limits::PRODUCT_NAME)?;
    validate::positive(b.price)?;
    validate::positive(b.inventory)?;
    let msg = CreateProduct {
        name: b.name,
        description: b.description,
        brand_name: b.brand_name,
        price: b.price,
        inventory: b.inventory,
    };
    let id = state.product.send(msg).await??;
    Ok(HttpResponse::Created().json(Created { id }))
}

/// A product as `GET /api/product/{id}` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct ProductView {
    id: ProductId,
    name: String,
    description: String,
    brand_name: String,
    price: i64,
    inventory: i64,
}

impl From<ProductDetail> for ProductView {
    fn from(p: ProductDetail) -> Self {
        ProductView {
            id: p.id,
            name: p.name,
            description: p.description,
            brand_name: p.brand_name,
            price: p.price,
            inventory: p.inventory,
        }
    }
}

/// A line of `GET /api/products`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CatalogLineView {
    id: ProductId,
    name: String,
    inventory: i64,
    price: i64,
}

impl From<CatalogLine> for CatalogLineView {
    fn from(l: CatalogLine) -> Self {
        CatalogLineView {
            id: l.id,
            name: l.name,
            inventory: l.inventory,
            price: l.price,
        }
    }
}

/// One product's detail.
#[utoipa::path(get, path = "/api/product/{id}", operation_id = "getProduct", tag = "catalog",
    params(("id" = u64, Path, description = "an unsigned 64-bit id; anything else is 400")),
    responses(
        (status = 200, description = "the product", body = ProductView),
        (status = 404, description = "`product not found`", body = MsgBody),
    ))]
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let detail = match &state.product_reads {
        Some(core) => core.clone().serve(GetProduct { id }).await?,
        None => state.product.send(GetProduct { id }).await??,
    };
    Ok(HttpResponse::Ok().json(ProductView::from(detail)))
}

/// One page of the catalog; `{"catalogs":null}` when the page is empty, as the original.
#[utoipa::path(get, path = "/api/products", operation_id = "listProducts", tag = "catalog",
    params(
        ("offset" = Option<u64>, Query, description = "products to skip (default 0)"),
        ("size" = u64, Query, minimum = 1, maximum = 500, description = "page size, 1 to 500"),
    ),
    responses(
        (status = 200, description = "a page of the catalog by id; `{\"catalogs\":null}` when empty", body = CatalogPage),
        (status = 400, description = "`invalid parameter`", body = MsgBody),
    ))]
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let q = web::Query::<PageQuery>::from_query(req.query_string())
        .map_err(|_| ApiError::invalid())?
        .into_inner();
    let offset: u64 = match q.offset.as_deref() {
        None => 0,
        Some(raw) => raw.parse().map_err(|_| ApiError::invalid())?,
    };
    let size: u64 = q
        .size
        .as_deref()
        .and_then(|raw| raw.parse().ok())
        .filter(|s| (1..=500).contains(s))
        .ok_or_else(ApiError::invalid)?;
    let page = state.product.send(ListProducts { offset, size }).await??;
    let lines: Vec<CatalogLineView> = page.into_iter().map(CatalogLineView::from).collect();
    let catalogs = (!lines.is_empty()).then_some(lines);
    Ok(HttpResponse::Ok().json(CatalogPage { catalogs }))
}
