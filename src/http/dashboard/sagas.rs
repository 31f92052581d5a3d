//! The admin view's JSON: the recent sagas (`GET /dashboard/api/sagas?limit=&outcome=`) and
//! one saga's state and step history (`GET /dashboard/api/sagas/{id}`). Ids travel as
//! strings: they exceed 2^53, which a JavaScript number cannot hold exactly.

use actix_web::{HttpResponse, http::header, web};
use serde::{Deserialize, Serialize};

use super::Dashboard;
use super::admin::Admin;
use crate::actors::ServiceError;
use crate::db::saga_list::{SagaFilter, SagaSummary, WINDOW};
use crate::domain::saga::SagaState;
use crate::http::error::ApiError;
use crate::http::extract::parse_id;
use crate::http::purchase::StepView;

/// Rows a list answers when no `limit` is given, and at most.
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 500;

/// `?limit=&outcome=` of the list.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<u64>,
    /// `all` (default), `in_flight`, `succeeded`, `rolled_back`, `rollback_failed`,
    /// `quarantined`.
    outcome: Option<String>,
}

fn filter_of(outcome: Option<&str>) -> Result<SagaFilter, ApiError> {
    Ok(match outcome.unwrap_or("all") {
        "all" | "" => SagaFilter::All,
        "in_flight" => SagaFilter::InFlight,
        "succeeded" => SagaFilter::Succeeded,
        "rolled_back" => SagaFilter::RolledBack,
        "rollback_failed" => SagaFilter::RollbackFailed,
        "quarantined" => SagaFilter::Quarantined,
        _ => return Err(ApiError::invalid()),
    })
}

/// Where a saga stands, in the list's words (the values `outcome=` filters on).
fn outcome_of(state: Option<SagaState>, quarantined: bool) -> &'static str {
    match state {
        _ if quarantined => "quarantined",
        Some(SagaState::Succeeded) => "succeeded",
        Some(SagaState::RolledBack) => "rolled_back",
        Some(SagaState::RollbackFailed(_)) => "rollback_failed",
        Some(_) => "in_flight",
        None => "quarantined",
    }
}

/// One row of the recent sagas.
#[derive(Debug, Serialize)]
struct SagaRow {
    purchase_id: String,
    customer_id: String,
    /// `in_flight`, `succeeded`, `rolled_back`, `rollback_failed` or `quarantined`.
    outcome: &'static str,
    /// The stored state (`EXECUTING:CREATE_ORDER`, `SUCCEEDED`, ...).
    state: String,
    partition: i32,
    /// Failed attempts of the outstanding call.
    attempts: i32,
    amount: i64,
    currency_code: String,
    created_at_ms: i64,
    updated_at_ms: i64,
    /// Start to terminal, once terminal.
    duration_ms: Option<i64>,
}

impl From<SagaSummary> for SagaRow {
    fn from(s: SagaSummary) -> Self {
        let state = SagaState::parse(&s.state);
        SagaRow {
            purchase_id: s.purchase_id.to_string(),
            customer_id: s.customer_id.to_string(),
            outcome: outcome_of(state, s.quarantine.is_some()),
            partition: s.partition_id,
            attempts: s.attempts,
            amount: s.amount,
            currency_code: s.currency_code,
            created_at_ms: s.created_at,
            updated_at_ms: s.updated_at,
            duration_ms: s.finished.then_some(s.updated_at - s.created_at),
            state: s.state,
        }
    }
}

/// The list's answer.
#[derive(Debug, Serialize)]
struct SagaList {
    /// A filtered list looks through this many of the newest sagas only.
    window: u64,
    sagas: Vec<SagaRow>,
}

/// The newest sagas, newest first, optionally of one outcome (admin token).
pub async fn recent(
    _: Admin,
    dashboard: web::Data<Dashboard>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = filter_of(query.outcome.as_deref())?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let rows = dashboard
        .sagas
        .newest(filter, limit)
        .await
        .map_err(ServiceError::from)?;
    let list = SagaList {
        window: WINDOW,
        sagas: rows.into_iter().map(SagaRow::from).collect(),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(list))
}

/// One cart line.
#[derive(Debug, Serialize)]
struct ItemView {
    product_id: String,
    amount: i64,
}

/// One saga, as the admin view shows it.
#[derive(Debug, Serialize)]
struct SagaDetail {
    purchase_id: String,
    customer_id: String,
    outcome: &'static str,
    /// The status `GET /api/purchase/{id}` shows its customer.
    status: &'static str,
    /// The state the log replays to (`null` when quarantined).
    state: Option<String>,
    /// Why it is quarantined.
    quarantine: Option<String>,
    /// Failed attempts of the outstanding call, and since when (unix ms, 0: none).
    attempts: u32,
    retry_since_ms: i64,
    version: u64,
    partition: u32,
    /// The node writing for the saga's partition, and its epoch.
    owner_node: Option<i32>,
    owner_epoch: Option<i64>,
    amount: i64,
    currency_code: &'static str,
    items: Vec<ItemView>,
    steps: Vec<StepView>,
}

/// One saga's state, owner and step history (admin token).
pub async fn one(
    _: Admin,
    dashboard: web::Data<Dashboard>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let purchase_id = parse_id(&id)?;
    let stored = dashboard
        .store
        .repo()
        .by_id(purchase_id)
        .await
        .map_err(ServiceError::from)?
        .ok_or(ServiceError::PurchaseNotFound)?;
    let owner = dashboard
        .sagas
        .owner(stored.partition.0)
        .await
        .map_err(ServiceError::from)?;
    let purchase = stored.purchase;
    let (state, quarantine) = match &stored.status {
        Ok(saga) => (Some(saga.state), None),
        Err(reason) => (None, Some(reason.clone())),
    };
    let retry = stored.status.as_ref().map(|s| s.retry).unwrap_or_default();
    let detail = SagaDetail {
        purchase_id: purchase.purchase_id.to_string(),
        customer_id: purchase.customer_id.to_string(),
        outcome: outcome_of(state, quarantine.is_some()),
        status: state.map_or("QUARANTINED", SagaState::public_status),
        state: state.map(|s| s.to_string()),
        quarantine,
        attempts: retry.attempts,
        retry_since_ms: retry.since_ms,
        version: stored.version,
        partition: stored.partition.0,
        owner_node: owner.map(|o| o.node),
        owner_epoch: owner.map(|o| o.epoch),
        amount: purchase.amount,
        currency_code: purchase.currency.code(),
        items: purchase
            .items
            .iter()
            .map(|i| ItemView {
                product_id: i.product_id.to_string(),
                amount: i.amount,
            })
            .collect(),
        steps: stored.steps.iter().map(StepView::from).collect(),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_the_list_shows_can_be_filtered_on() {
        use crate::domain::purchase::Step;
        let states = [
            Some(SagaState::Pending),
            Some(SagaState::Executing(Step::CreateOrder)),
            Some(SagaState::Compensating(Step::CreateOrder)),
            Some(SagaState::Succeeded),
            Some(SagaState::RolledBack),
            Some(SagaState::RollbackFailed(Step::CreateOrder)),
            None,
        ];
        for state in states {
            let outcome = outcome_of(state, false);
            assert!(filter_of(Some(outcome)).is_ok(), "{outcome}");
        }
        assert!(filter_of(Some("nonsense")).is_err());
    }
}
