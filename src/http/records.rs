//! `GET /api/order/{id}` and `GET /api/payment/{id}`: a customer's own records only
//! (another customer's answers 404, as if it did not exist).

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::extract::parse_id;
use super::openapi::MsgBody;
use crate::actors::messages::{GetOrder, GetPayment, Order, PaymentRecord};
use crate::domain::ids::{CustomerId, ProductId, PurchaseId};

/// An order as `GET /api/order/{id}` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct OrderView {
    id: PurchaseId,
    purchased_items: Vec<OrderItemView>,
}

/// One line of an order, with the product's current details.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct OrderItemView {
    product_id: ProductId,
    name: String,
    description: String,
    brand_name: String,
    price: i64,
    amount: i64,
}

impl From<Order> for OrderView {
    fn from(order: Order) -> Self {
        OrderView {
            id: order.id,
            purchased_items: order
                .items
                .into_iter()
                .map(|i| OrderItemView {
                    product_id: i.product_id,
                    name: i.name,
                    description: i.description,
                    brand_name: i.brand_name,
                    price: i.price,
                    amount: i.amount,
                })
                .collect(),
        }
    }
}

/// A payment as `GET /api/payment/{id}` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PaymentView {
    id: PurchaseId,
    currency_code: &'static str,
    amount: i64,
}

impl From<PaymentRecord> for PaymentView {
    fn from(p: PaymentRecord) -> Self {
        PaymentView {
            id: p.id,
            currency_code: p.currency.code(),
            amount: p.amount,
        }
    }
}

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
    let order = state.order.send(GetOrder { id, customer_id }).await??;
    Ok(HttpResponse::Ok().json(OrderView::from(order)))
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
    let payment = state.payment.send(GetPayment { id, customer_id }).await??;
    Ok(HttpResponse::Ok().json(PaymentView::from(payment)))
}
