//! The one route table. A known path with another method answers 404, as the original.

use actix_web::{HttpResponse, web};

use super::error::ApiError;
use super::{account, health, product, purchase, records, sse};

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
}

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(not_found))
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg
        // accounts
        .service(resource("/api/account/auth/signup").route(web::post().to(account::sign_up)))
        .service(resource("/api/account/auth/login").route(web::post().to(account::log_in)))
        .service(resource("/api/account/auth/refresh").route(web::post().to(account::refresh)))
        .service(
            resource("/api/account/info/person")
                .route(web::get().to(account::get_person))
                .route(web::put().to(account::put_person)),
        )
        .service(
            resource("/api/account/info/shipping")
                .route(web::get().to(account::get_shipping))
                .route(web::put().to(account::put_shipping)),
        )
        // catalog
        .service(resource("/api/product").route(web::post().to(product::create)))
        .service(resource("/api/product/{id}").route(web::get().to(product::get)))
        .service(resource("/api/products").route(web::get().to(product::list)))
        // purchases (the result stream before `{id}`, which would match it)
        .service(resource("/api/purchase").route(web::post().to(purchase::create)))
        .service(resource("/api/purchase/result").route(web::get().to(sse::results)))
        .service(resource("/api/purchase/{id}").route(web::get().to(purchase::get)))
        .service(resource("/api/order/{id}").route(web::get().to(records::order)))
        .service(resource("/api/payment/{id}").route(web::get().to(records::payment)))
        // operations
        .service(resource("/healthz").route(web::get().to(health::healthz)))
        .service(resource("/readyz").route(web::get().to(health::readyz)))
        .default_service(web::to(not_found));
}
