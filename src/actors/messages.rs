//! Commands, queries and events exchanged between actors: plain serde types, so the same
//! message can cross an actix mailbox or, later, a NATS subject.

use actix::Message;
use serde::{Deserialize, Serialize};

use super::ServiceResult;
use crate::auth::tokens::TokenPair;
use crate::domain::ids::{CustomerId, ProductId, PurchaseId};
use crate::domain::purchase::{Purchase, PurchaseResult, StepOutcome};
pub use crate::domain::records::{
    CatalogLine, Order, OrderedItem, PaymentRecord, Person, ProductDetail, ProductInfo, Shipping,
};

// ---- accounts -------------------------------------------------------------------------

/// Create a customer and log them in.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[rtype(result = "ServiceResult<TokenPair>")]
pub struct SignUp {
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub address: String,
    pub phone_number: String,
}

/// Exchange email and password for a token pair.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[rtype(result = "ServiceResult<TokenPair>")]
pub struct LogIn {
    pub email: String,
    pub password: String,
}

/// Exchange a refresh token for a new pair (the old one stays valid: no rotation).
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[rtype(result = "ServiceResult<TokenPair>")]
pub struct RefreshTokens {
    pub refresh_token: String,
}

/// Read a customer's personal info.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Message)]
#[rtype(result = "ServiceResult<Person>")]
pub struct GetPerson {
    pub customer_id: CustomerId,
}

/// Replace a customer's personal info.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[rtype(result = "ServiceResult<()>")]
pub struct UpdatePerson {
    pub customer_id: CustomerId,
    pub info: Person,
}

/// Read a customer's shipping info.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Message)]
#[rtype(result = "ServiceResult<Shipping>")]
pub struct GetShipping {
    pub customer_id: CustomerId,
}

/// Replace a customer's shipping info.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[rtype(result = "ServiceResult<()>")]
pub struct UpdateShipping {
    pub customer_id: CustomerId,
    pub info: Shipping,
}

// ---- products -------------------------------------------------------------------------

/// Add a product to the catalog; answers its id.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[rtype(result = "ServiceResult<ProductId>")]
pub struct CreateProduct {
    pub name: String,
    pub description: String,
    pub brand_name: String,
    pub price: i64,
    pub inventory: i64,
}

/// Read one product.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Message)]
#[rtype(result = "ServiceResult<ProductDetail>")]
pub struct GetProduct {
    pub id: ProductId,
}

/// Read several products' info; answers those that exist, in the order asked.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[rtype(result = "ServiceResult<Vec<ProductInfo>>")]
pub struct GetProducts {
    pub ids: Vec<ProductId>,
}

/// Read one page of the catalog.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Message)]
#[rtype(result = "ServiceResult<Vec<CatalogLine>>")]
pub struct ListProducts {
    pub offset: u64,
    pub size: u64,
}

// ---- orders and payments ----------------------------------------------------------------

/// Read a customer's own order.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Message)]
#[rtype(result = "ServiceResult<Order>")]
pub struct GetOrder {
    pub id: PurchaseId,
    pub customer_id: CustomerId,
}

/// Read a customer's own payment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Message)]
#[rtype(result = "ServiceResult<PaymentRecord>")]
pub struct GetPayment {
    pub id: PurchaseId,
    pub customer_id: CustomerId,
}

// ---- saga commands -----------------------------------------------------------------------

pub use crate::domain::saga::StepCommand;

/// A saga call travels to its participant as an actix message.
impl Message for StepCommand {
    type Result = Result<StepOutcome, StepError>;
}

/// A participant could not run a command now (infrastructure); the saga retries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{0}")]
pub struct StepError(pub String);

impl StepError {
    /// Whether the participant refused the command as coming from a stale saga owner (one
    /// whose partition a newer owner has taken): retrying it cannot succeed.
    pub fn is_fenced(&self) -> bool {
        self.0.starts_with(FENCED)
    }
}

/// How a fenced command's error starts (`DbError::Fenced`'s message, kept across NATS).
const FENCED: &str = "fenced:";

impl From<crate::db::DbError> for StepError {
    fn from(e: crate::db::DbError) -> Self {
        StepError(e.to_string())
    }
}

// ---- purchases -------------------------------------------------------------------------

/// Accept a purchase: store its saga and start it. Fails with `Busy` at the in-flight cap.
/// Refused unstored once `deadline_ms` has passed: a caller that gave up waiting by then
/// can tell from the store alone whether the purchase exists.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[rtype(result = "ServiceResult<()>")]
pub struct AcceptPurchase {
    pub purchase: Purchase,
    pub deadline_ms: i64,
    /// The request that made the purchase: its saga's trace continues it. Across nodes it
    /// travels in the message headers, not the body.
    #[serde(skip)]
    pub trace: crate::domain::trace::TraceContext,
}

/// A committed step result, broadcast to SSE streams through actix-broker, with the trace of
/// the saga transition that wrote it (its delivery to a stream is a span of that trace).
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct ResultPublished(pub PurchaseResult, pub crate::domain::trace::TraceContext);

/// This node took a partition over, broadcast through actix-broker: the result relay
/// publishes a takeover marker, so api nodes read the partition's log up to `top` (the tail
/// a dead owner committed but never published) before the new owner's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct PartitionClaimed {
    pub partition: crate::domain::partition::PartitionId,
    /// The epoch this node now holds it at.
    pub epoch: u64,
    /// The partition's newest committed event id when it was claimed (0: none).
    pub top: u64,
}
