//! `GET /api/order/{id}` and `GET /api/payment/{id}`: a customer's own records only
//! (another customer's answers 404, as if it did not exist).

use actix_web::{HttpResponse, web};

use super::AppState;
use super::error::ApiError;
use super::extract::parse_id;
use crate::actors::messages::{GetOrder, GetPayment};
use crate::domain::ids::CustomerId;

/// The caller's order with current product details, items sorted by product id.
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
pub async fn payment(
    state: web::Data<AppState>,
    customer_id: CustomerId,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let view = state.payment.send(GetPayment { id, customer_id }).await??;
    Ok(HttpResponse::Ok().json(view))
}
