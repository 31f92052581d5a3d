//! `POST /api/purchase` (accept a purchase, run its saga after answering) and
//! `GET /api/purchase/{id}` (its status and step history).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, parse_id};
use super::openapi::MsgBody;
use crate::actors::ServiceError;
use crate::actors::messages::{AcceptPurchase, GetProducts};
use crate::actors::service::Serve;
use crate::actors::starts::StartNotices;
use crate::db::sagas::{LoggedStep, StoredSaga};
use crate::domain::ids::{CustomerId, ProductId, PurchaseId};
use crate::domain::purchase::{Currency, PricingError, Purchase, PurchaseItem, price};
use crate::telemetry::traces::{self, TARGET};

/// The status shown for a saga set aside because its stored log does not replay.
const QUARANTINED: &str = "QUARANTINED";

/// Most lines a cart may have: a purchase is one saga and one transaction per step, so a
/// cart of thousands of lines would hold the product database for long. Beyond it: 400.
pub const MAX_PURCHASE_LINES: usize = 100;

/// A purchase as `GET /api/purchase/{id}` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PurchaseView {
    purchase_id: PurchaseId,
    /// `PENDING`, `SUCCEEDED`, `ROLLED_BACK`, `ROLLBACK_FAILED` or `QUARANTINED`.
    status: &'static str,
    amount: i64,
    currency_code: &'static str,
    purchase_items: Vec<PurchaseItem>,
    steps: Vec<StepView>,
}

/// One step-log entry of a purchase (also the dashboard's step history).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StepView {
    step: &'static str,
    status: &'static str,
    timestamp: i64,
}

impl From<&LoggedStep> for StepView {
    fn from(s: &LoggedStep) -> Self {
        StepView {
            step: s.event.step.as_str(),
            status: s.event.status.as_str(),
            timestamp: s.timestamp,
        }
    }
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
            steps: stored.steps.iter().map(StepView::from).collect(),
        }
    }
}

/// A cart line as sent; missing fields are zero, as Go decoding leaves them.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ItemBody {
    #[serde(default)]
    #[schema(required = true)]
    product_id: u64,
    #[serde(default)]
    #[schema(required = true, minimum = 1)]
    amount: i64,
}

/// The payment object as sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PaymentBody {
    #[serde(default)]
    #[schema(required = true, pattern = "^(NT|US)$")]
    currency_code: String,
}

/// `POST /api/purchase` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PurchaseBody {
    /// At most [`MAX_PURCHASE_LINES`] lines; the same product on two lines fails the saga
    /// at the inventory step, as the original.
    #[serde(default)]
    #[schema(required = true, min_items = 1, max_items = 100)]
    purchase_items: Vec<ItemBody>,
    #[serde(default)]
    #[schema(required = true)]
    payment: Option<PaymentBody>,
}

/// `POST /api/purchase`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    purchase_id: PurchaseId,
}

/// Validates in the original's order, prices the cart, stores the saga: 201 `{"purchase_id"}`.
#[utoipa::path(post, path = "/api/purchase", operation_id = "createPurchase", tag = "purchases",
    security(("bearer" = [])),
    request_body = PurchaseBody,
    responses(
        (status = 201, description = "accepted: the saga runs after this answer", body = Accepted),
        (status = 400, description = "`invalid parameter`: no lines, more than 100 lines, an amount \
            not above 0, a currency other than `NT` or `US`, no payment, a total that overflows", body = MsgBody),
        (status = 404, description = "`product not found`", body = MsgBody),
    ))]
pub async fn create(
    state: web::Data<AppState>,
    customer_id: CustomerId,
    JsonBody(body): JsonBody<Option<PurchaseBody>>,
) -> Result<HttpResponse, ApiError> {
    let body = body.ok_or_else(ApiError::invalid)?;
    if body.purchase_items.is_empty() || body.purchase_items.len() > MAX_PURCHASE_LINES {
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
    // Priced on this worker from the shared product core when this node runs it (no hop to
    // the product thread), else by the product service wherever it runs.
    let products = match &state.product_reads {
        Some(core) => core.clone().serve(GetProducts { ids }).await?,
        None => state.product.send(GetProducts { ids }).await??,
    };
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
    if let Some(starts) = &state.starts {
        accept_stored(&state, starts, purchase).await?;
        return Ok(HttpResponse::Created().json(Accepted { purchase_id }));
    }
    let deadline_ms = state.clock.now_ms() + state.accept_within.as_millis() as i64;
    let accepted = state.supervisor.send(AcceptPurchase {
        purchase,
        deadline_ms,
        trace: crate::telemetry::traces::current(),
    });
    match accepted.await? {
        Ok(()) => {}
        // The orchestrator may have stored it with only its answer lost. Past the deadline
        // it stores nothing more, so the store then tells.
        Err(ServiceError::Unanswered(cause)) => {
            let wait = deadline_ms + ACCEPT_GRACE_MS - state.clock.now_ms();
            actix_rt::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
            let stored = state.store.repo().by_id(purchase_id).await;
            if stored.map_err(ServiceError::from)?.is_none() {
                return Err(ServiceError::Unanswered(cause).into());
            }
            tracing::warn!(%purchase_id, "the orchestrator's answer was lost; the purchase is stored");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(HttpResponse::Created().json(Accepted { purchase_id }))
}

/// A cluster's accept: the saga is stored pending by this node (the partition may have no
/// owner now), then its owner is told; it is durable once this returns.
async fn accept_stored(
    state: &AppState,
    starts: &StartNotices,
    purchase: Purchase,
) -> Result<(), ApiError> {
    let partition = state.store.partition_of(purchase.customer_id);
    // The saga's trace: a child of the request; its spans on the owner continue it.
    let span = tracing::trace_span!(target: TARGET, "saga.accept",
        purchase_id = %purchase.purchase_id);
    traces::follow(&span, &traces::current());
    let trace = traces::context_of(&span);
    let purchase_id = purchase.purchase_id;
    if let Err(e) = starts
        .accept(purchase, partition, trace)
        .instrument(span)
        .await
    {
        // The row may have been committed with only the answer lost: the store tells.
        let stored = state.store.repo().by_id(purchase_id).await;
        if stored.ok().flatten().is_none() {
            return Err(ServiceError::from(e).into());
        }
        tracing::warn!(%purchase_id, error = %e, "the store's answer was lost; the purchase is stored");
    }
    Ok(())
}

/// How long after an accept deadline a stored purchase is looked for: the orchestrator
/// checks the deadline before its commit, which takes this much at most in practice.
const ACCEPT_GRACE_MS: i64 = 1_000;

/// The caller's purchase: status and step history.
#[utoipa::path(get, path = "/api/purchase/{id}", operation_id = "getPurchase", tag = "purchases",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "an unsigned 64-bit id; anything else is 400")),
    responses(
        (status = 200, description = "the purchase, its status and step log", body = PurchaseView),
        (status = 404, description = "`purchase not found` (also another customer's)", body = MsgBody),
    ))]
pub async fn get(
    state: web::Data<AppState>,
    customer_id: CustomerId,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let purchase_id = parse_id(&id)?;
    let stored = state.store.purchase_of(customer_id, purchase_id).await?;
    Ok(HttpResponse::Ok().json(PurchaseView::from(stored)))
}
