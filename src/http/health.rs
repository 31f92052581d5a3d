//! `GET /healthz` (the process answers) and `GET /readyz` (its databases answer).

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

/// Liveness: 200 while the process serves HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: 200 when every database answers, else 503 naming the ones that do not.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut failed = Vec::new();
    for (name, pool) in &state.databases {
        if let Err(e) = pool.ping().await {
            tracing::warn!(database = name, error = %e, "not ready");
            failed.push(format!("{name} database"));
        }
    }
    if failed.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ok"}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({"msg": "not ready", "failed": failed}))
    }
}
