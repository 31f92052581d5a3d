//! `GET /healthz` (the process answers) and `GET /readyz` (its databases answer).

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::AppState;

/// `{"status":"ok"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Ready {
    status: &'static str,
}

/// `{"msg":"not ready","failed":["<name> database",..]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotReady {
    msg: &'static str,
    failed: Vec<String>,
}

const OK: Ready = Ready { status: "ok" };

/// Liveness: 200 while the process serves HTTP.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, description = "the process serves HTTP", body = Ready)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(OK)
}

/// Readiness: 200 when every database answers, else 503 naming the ones that do not.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses(
        (status = 200, description = "every database answers", body = Ready),
        (status = 503, description = "the databases that do not answer", body = NotReady),
    ))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut failed = Vec::new();
    for (name, pool) in &state.databases {
        if let Err(e) = pool.ping().await {
            tracing::warn!(database = name, error = %e, "not ready");
            failed.push(format!("{name} database"));
        }
    }
    if failed.is_empty() {
        HttpResponse::Ok().json(OK)
    } else {
        HttpResponse::ServiceUnavailable().json(NotReady {
            msg: "not ready",
            failed,
        })
    }
}
