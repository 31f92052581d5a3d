//! `POST /api/purchase` (accept a purchase, run its saga after answering) and
//! `GET /api/purchase/{id}` (its status and step history).

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{CustomerId, JsonBody, parse_id};
use crate::actors::ServiceError;
use crate::actors::messages::{AcceptPurchase, GetProducts, GetPurchase};
use crate::domain::purchase::{Currency, Purchase, PurchaseItem};

/// A cart line as sent; missing fields are zero, as Go decoding leaves them.
#[derive(Debug, Deserialize)]
pub struct ItemBody {
    #[serde(default)]
    product_id: u64,
    #[serde(default)]
    amount: i64,
}

/// The payment object as sent.
#[derive(Debug, Deserialize)]
pub struct PaymentBody {
    #[serde(default)]
    currency_code: String,
}

/// `POST /api/purchase` body.
#[derive(Debug, Deserialize)]
pub struct PurchaseBody {
    #[serde(default)]
    purchase_items: Vec<ItemBody>,
    #[serde(default)]
    payment: Option<PaymentBody>,
}

/// Validates in the original's order, prices the cart, stores the saga: 201 `{"purchase_id"}`.
pub async fn create(
    state: web::Data<AppState>,
    CustomerId(customer_id): CustomerId,
    JsonBody(body): JsonBody<Option<PurchaseBody>>,
) -> Result<HttpResponse, ApiError> {
    let body = body.ok_or_else(ApiError::invalid)?;
    if body.purchase_items.is_empty() {
        return Err(ApiError::invalid());
    }
    let currency = match &body.payment {
        Some(p) => Some(Currency::parse(&p.currency_code).ok_or_else(ApiError::invalid)?),
        None => None,
    };
    if body.purchase_items.iter().any(|i| i.amount <= 0) {
        return Err(ApiError::invalid());
    }
    let ids = body.purchase_items.iter().map(|i| i.product_id).collect();
    let products = state.product.send(GetProducts { ids }).await??;
    let mut amount: i64 = 0;
    let mut items = Vec::with_capacity(body.purchase_items.len());
    for item in &body.purchase_items {
        let product = products
            .iter()
            .find(|p| p.id == item.product_id)
            .ok_or(ServiceError::ProductNotFound)?;
        let line = item
            .amount
            .checked_mul(product.price)
            .ok_or_else(ApiError::invalid)?;
        amount = amount.checked_add(line).ok_or_else(ApiError::invalid)?;
        items.push(PurchaseItem {
            product_id: item.product_id,
            amount: item.amount,
        });
    }
    // The original panicked here (500); a missing payment object is bad input.
    let currency = currency.ok_or_else(ApiError::invalid)?;
    let purchase = Purchase {
        purchase_id: state.ids.next(),
        customer_id,
        items,
        currency,
        amount,
    };
    let purchase_id = purchase.purchase_id;
    state.supervisor.send(AcceptPurchase { purchase }).await??;
    Ok(HttpResponse::Created().json(json!({ "purchase_id": purchase_id })))
}

/// The caller's purchase: status and step history.
pub async fn get(
    state: web::Data<AppState>,
    CustomerId(customer_id): CustomerId,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let purchase_id = parse_id(&id)?;
    let view = state
        .supervisor
        .send(GetPurchase {
            purchase_id,
            customer_id,
        })
        .await??;
    Ok(HttpResponse::Ok().json(view))
}
