//! `GET /api/order/{id}` and `GET /api/payment/{id}`: a customer's own records only
//! (another customer's answers 404, as if it did not exist).

use actix_web::{HttpResponse, web};

use super::AppState;
use super::error::ApiError;
use super::extract::parse_id;
use super::openapi::MsgBody;
use crate::actors::messages::{GetOrder, GetPayment, OrderView, PaymentView};
use crate::domain::ids::CustomerId;

/// The caller's order with current product details, items sorted by product id.
#[utoipa::path(get, path = "/api/order/{id}", operation_id = "getOrder", tag = "purchases",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "an unsigned 64-bit id; anything else is 400")),
    responses(
        (status = 200, description = "the order (id = the purchase id)", body = OrderView),
        (status = 404, description = "`order not found` (also another customer's)", body = MsgBody),
    ))]
pub async fn order(
    state: web::Data<AppState>,
    customer_id: CustomerId,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let view = state.order.send(GetOrder { id, customer_id }).await??;
    Ok(HttpResponse::Ok().json(view))
}

/// The caller's payment.
#[utoipa::path(get, path = "/api/payment/{id}", operation_id = "getPayment", tag = "purchases",
    security(("bearer" = [])),
    params(("id" = u64, Path, description = "an unsigned 64-bit id; anything else is 400")),
    responses(
        (status = 200, description = "the payment (id = the purchase id)", body = PaymentView),
        (status = 404, description = "`payment not found` (also another customer's)", body = MsgBody),
    ))]
pub async fn payment(
    state: web::Data<AppState>,
    customer_id: CustomerId,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let view = state.payment.send(GetPayment { id, customer_id }).await??;
    Ok(HttpResponse::Ok().json(view))
}
