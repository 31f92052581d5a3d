//! What the services answer about their records: plain domain values, serialisable so they
//! can cross a mailbox or a subject. How the HTTP API shows them is `src/http`'s business.

use serde::{Deserialize, Serialize};

use crate::domain::ids::{ProductId, PurchaseId};
use crate::domain::purchase::Currency;

/// A customer's name and email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
}

/// A customer's address and phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipping {
    pub address: String,
    pub phone_number: String,
}

/// A product with its current stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDetail {
    pub id: ProductId,
    pub name: String,
    pub description: String,
    pub brand_name: String,
    pub price: i64,
    pub inventory: i64,
}

/// What never changes about a product (no API changes it): safe to cache for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductInfo {
    pub id: ProductId,
    pub name: String,
    pub description: String,
    pub brand_name: String,
    pub price: i64,
}

/// One product in a page of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogLine {
    pub id: ProductId,
    pub name: String,
    pub inventory: i64,
    pub price: i64,
}

/// An order line with the product's current details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderedItem {
    pub product_id: ProductId,
    pub name: String,
    pub description: String,
    pub brand_name: String,
    pub price: i64,
    pub amount: i64,
}

/// A purchase's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: PurchaseId,
    pub items: Vec<OrderedItem>,
}

/// A purchase's payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub id: PurchaseId,
    pub currency: Currency,
    pub amount: i64,
}
