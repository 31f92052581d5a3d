//! `/api/product` and `/api/products`: the catalog (no auth, as the original).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, parse_id};
use super::validate::{self, limits};
use crate::actors::messages::{
    CatalogLine, CreateProduct, GetProduct, ListProducts, ProductDetail,
};
use crate::domain::ids::ProductId;

/// `POST /api/product` body (`id` is accepted and ignored).
#[derive(Debug, Deserialize)]
pub struct CreateProductBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    brand_name: String,
    #[serde(default)]
    price: i64,
    #[serde(default)]
    inventory: i64,
}

/// `GET /api/products` query, parsed by hand so every bad value is the contract's 400.
#[derive(Debug, Deserialize)]
struct PageQuery {
    offset: Option<String>,
    size: Option<String>,
}

/// Adds a product: 201 `{"id":..}`.
pub async fn create(
    state: web::Data<AppState>,
    JsonBody(b): JsonBody<CreateProductBody>,
) -> Result<HttpResponse, ApiError> {
    validate::text(&b.name, limits::PRODUCT_NAME)?;
    validate::text(&b.description, limits::DESCRIPTION)?;
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
    Ok(HttpResponse::Created().json(json!({ "id": id })))
}

/// A product as `GET /api/product/{id}` shows it.
#[derive(Debug, Serialize)]
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
#[derive(Debug, Serialize)]
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
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let detail = state.product.send(GetProduct { id }).await??;
    Ok(HttpResponse::Ok().json(ProductView::from(detail)))
}

/// One page of the catalog; `{"catalogs":null}` when the page is empty, as the original.
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
    Ok(HttpResponse::Ok().json(json!({ "catalogs": catalogs })))
}
