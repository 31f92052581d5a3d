//! What a purchase is made of, and the step/status vocabulary the SSE contract fixes.

use serde::{Deserialize, Serialize};

use super::ids::{CustomerId, ProductId, PurchaseId};

/// One cart line: a product and how many units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseItem {
    pub product_id: ProductId,
    pub amount: i64,
}

/// Currencies the original accepts, spelt exactly as clients send them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Currency {
    #[serde(rename = "NT")]
    Nt,
    #[serde(rename = "US")]
    Us,
}

impl Currency {
    /// The wire code (`NT` or `US`).
    pub fn code(self) -> &'static str {
        match self {
            Currency::Nt => "NT",
            Currency::Us => "US",
        }
    }

    /// Parses a wire code; case-sensitive, as the original.
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "NT" => Some(Currency::Nt),
            "US" => Some(Currency::Us),
            _ => None,
        }
    }
}

/// Everything a saga needs to run a purchase: who, what, and what it costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    pub purchase_id: PurchaseId,
    pub customer_id: CustomerId,
    pub items: Vec<PurchaseItem>,
    pub currency: Currency,
    pub amount: i64,
}

/// Why a cart cannot be priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("a product in the cart does not exist")]
    UnknownProduct,
    #[error("the cart's total does not fit")]
    TooLarge,
}

/// A cart with its total at today's prices, before it becomes a purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedCart {
    pub items: Vec<PurchaseItem>,
    pub amount: i64,
}

impl PricedCart {
    /// The purchase this cart becomes once it has an id, a buyer and a currency.
    pub fn into_purchase(
        self,
        purchase_id: PurchaseId,
        customer_id: CustomerId,
        currency: Currency,
    ) -> Purchase {
        Purchase {
            purchase_id,
            customer_id,
            items: self.items,
            currency,
            amount: self.amount,
        }
    }
}

/// Prices a cart with the products' current prices (`price_of` answers `None` for a product
/// that does not exist). The total is the sum of amount x price, checked for overflow.
pub fn price(
    items: Vec<PurchaseItem>,
    price_of: impl Fn(ProductId) -> Option<i64>,
) -> Result<PricedCart, PricingError> {
    let mut amount: i64 = 0;
    for item in &items {
        let unit = price_of(item.product_id).ok_or(PricingError::UnknownProduct)?;
        let line = item
            .amount
            .checked_mul(unit)
            .ok_or(PricingError::TooLarge)?;
        amount = amount.checked_add(line).ok_or(PricingError::TooLarge)?;
    }
    Ok(PricedCart { items, amount })
}

/// The three forward steps of a purchase, in execution order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Step {
    UpdateProductInventory,
    CreateOrder,
    CreatePayment,
}

impl Step {
    /// Steps in the order they run.
    pub const ALL: [Step; 3] = [
        Step::UpdateProductInventory,
        Step::CreateOrder,
        Step::CreatePayment,
    ];

    /// Name on the SSE wire and in the step log.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::UpdateProductInventory => "UPDATE_PRODUCT_INVENTORY",
            Step::CreateOrder => "CREATE_ORDER",
            Step::CreatePayment => "CREATE_PAYMENT",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Step::ALL.into_iter().find(|step| step.as_str() == s)
    }

    /// The step that runs after this one.
    pub fn next(self) -> Option<Step> {
        match self {
            Step::UpdateProductInventory => Some(Step::CreateOrder),
            Step::CreateOrder => Some(Step::CreatePayment),
            Step::CreatePayment => None,
        }
    }

    /// The step that ran before this one (compensation walks backwards).
    pub fn previous(self) -> Option<Step> {
        match self {
            Step::UpdateProductInventory => None,
            Step::CreateOrder => Some(Step::UpdateProductInventory),
            Step::CreatePayment => Some(Step::CreateOrder),
        }
    }
}

/// Step outcomes as the SSE contract spells them (`STATUS_EXUCUTE` is the original's typo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StepStatus {
    Execute,
    Success,
    Failed,
    Rollbacked,
    RollbackFail,
}

impl StepStatus {
    const ALL: [StepStatus; 5] = [
        StepStatus::Execute,
        StepStatus::Success,
        StepStatus::Failed,
        StepStatus::Rollbacked,
        StepStatus::RollbackFail,
    ];

    /// Name on the SSE wire and in the step log.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Execute => "STATUS_EXUCUTE",
            StepStatus::Success => "STATUS_SUCCESS",
            StepStatus::Failed => "STATUS_FAILED",
            StepStatus::Rollbacked => "STATUS_ROLLBACKED",
            StepStatus::RollbackFail => "STATUS_ROLLBACK_FAIL",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        StepStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// One entry of a saga's step log, as streamed to its customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepEvent {
    pub step: Step,
    pub status: StepStatus,
}

/// A step log entry that has been committed: it has an id (the SSE `id:`) and a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseResult {
    pub event_id: u64,
    pub purchase_id: PurchaseId,
    pub customer_id: CustomerId,
    pub event: StepEvent,
    /// Unix seconds when the entry was committed.
    pub timestamp: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for step in Step::ALL {
            assert_eq!(Step::parse(step.as_str()), Some(step));
        }
        for status in StepStatus::ALL {
            assert_eq!(StepStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(StepStatus::Execute.as_str(), "STATUS_EXUCUTE");
        assert_eq!(Currency::parse("nt"), None);
    }

    #[test]
    fn a_cart_is_priced_at_the_given_prices_and_checked_for_overflow() {
        let item = |id, amount| PurchaseItem {
            product_id: ProductId(id),
            amount,
        };
        let prices = |ProductId(id)| match id {
            1 => Some(100),
            2 => Some(i64::MAX / 2),
            _ => None,
        };
        let cart = price(vec![item(1, 3), item(1, 2)], prices).unwrap();
        assert_eq!(cart.amount, 500);
        assert_eq!(
            price(vec![item(1, 1), item(9, 1)], prices),
            Err(PricingError::UnknownProduct)
        );
        assert_eq!(price(vec![item(2, 3)], prices), Err(PricingError::TooLarge));
        assert_eq!(
            price(vec![item(2, 1), item(2, 1), item(2, 1)], prices),
            Err(PricingError::TooLarge)
        );
        let purchase = cart.into_purchase(PurchaseId(7), CustomerId(8), Currency::Us);
        assert_eq!(
            (purchase.purchase_id, purchase.customer_id, purchase.amount),
            (PurchaseId(7), CustomerId(8), 500)
        );
    }
}

/// A service's answer to a step command, as recorded the first time it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepOutcome {
    /// The effect is in place (now or from an earlier delivery).
    Applied,
    /// The step cannot be done (e.g. not enough stock); final, never retried.
    Rejected(String),
}
