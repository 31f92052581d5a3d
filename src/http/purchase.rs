//! `POST /api/purchase` (accept a purchase, run its saga after answering) and
//! `GET /api/purchase/{id}` (its status and step history).

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, parse_id};
use crate::actors::ServiceError;
use crate::actors::messages::{AcceptPurchase, GetProducts, GetPurchase};
use crate::db::sagas::StoredSaga;
use crate::domain::ids::{CustomerId, ProductId, PurchaseId};
use crate::domain::purchase::{Currency, PricingError, PurchaseItem, price};

/// The status shown for a saga set aside because its stored log does not replay.
const QUARANTINED: &str = "QUARANTINED";

/// A purchase as `GET /api/purchase/{id}` shows it.
#[derive(Debug, Serialize)]
struct PurchaseView {
    purchase_id: PurchaseId,
    status: &'static str,
    amount: i64,
    currency_code: &'static str,
    purchase_items: Vec<PurchaseItem>,
    steps: Vec<StepView>,
}

/// One step-log entry of a purchase.
#[derive(Debug, Serialize)]
struct StepView {
    step: &'static str,
    status: &'static str,
    timestamp: i64,
}

impl From<StoredSaga> for PurchaseView {
    fn from(stored: StoredSaga) -> Self {
        let purchase = stored.purchase;
        PurchaseView {
            purchase_id: purchase.purchase_id,
            status: match &stored.status {
                Ok(saga) => saga.state.public_status(),
                Err(_) => QUARANTINED,
            },
            amount: purchase.amount,
            currency_code: purchase.currency.code(),
            purchase_items: purchase.items,
            steps: stored
                .steps
                .iter()
                .map(|s| StepView {
                    step: s.event.step.as_str(),
                    status: s.event.status.as_str(),
                    timestamp: s.timestamp,
                })
                .collect(),
        }
    }
}

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
    customer_id: CustomerId,
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
    let lines: Vec<PurchaseItem> = body
        .purchase_items
        .iter()
        .map(|i| PurchaseItem {
            product_id: ProductId(i.product_id),
            amount: i.amount,
        })
        .collect();
    let ids = lines.iter().map(|i| i.product_id).collect();
    let products = state.product.send(GetProducts { ids }).await??;
    let price_of = |id| products.iter().find(|p| p.id == id).map(|p| p.price);
    // The original panicked on a missing payment object (500); it is bad input. It is
    // checked after the products, as the original looks them up first.
    let priced = price(lines, price_of).map_err(|e| match e {
        PricingError::UnknownProduct => ApiError::from(ServiceError::ProductNotFound),
        PricingError::TooLarge => ApiError::invalid(),
    })?;
    let currency = currency.ok_or_else(ApiError::invalid)?;
    let purchase = priced.into_purchase(PurchaseId(state.ids.next()), customer_id, currency);
    let purchase_id = purchase.purchase_id;
    state.supervisor.send(AcceptPurchase { purchase }).await??;
    Ok(HttpResponse::Created().json(json!({ "purchase_id": purchase_id })))
}

/// The caller's purchase: status and step history.
pub async fn get(
    state: web::Data<AppState>,
    customer_id: CustomerId,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let purchase_id = parse_id(&id)?;
    let stored = state
        .supervisor
        .send(GetPurchase {
            purchase_id,
            customer_id,
        })
        .await??;
    Ok(HttpResponse::Ok().json(PurchaseView::from(stored)))
}
