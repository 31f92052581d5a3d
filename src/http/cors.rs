//! The original's CORS behaviour: the same headers on every response, and `OPTIONS` to any
//! path answered 204 without auth.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse};

const HEADERS: [(&str, &str); 5] = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-credentials", "true"),
    (
        "access-control-allow-headers",
        "Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token, Authorization, Accept, Origin, Cache-Control, X-Requested-With",
    ),
    (
        "access-control-allow-methods",
        "POST, DELETE, GET, PUT, PATCH, OPTIONS",
    ),
    ("access-control-max-age", "86400"),
];

fn add_headers(headers: &mut HeaderMap) {
    for (name, value) in HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
}

/// Middleware (use with `actix_web::middleware::from_fn`).
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if req.method() == Method::OPTIONS {
        let mut res = HttpResponse::NoContent().finish();
        add_headers(res.headers_mut());
        return Ok(req.into_response(res));
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    add_headers(res.headers_mut());
    Ok(res)
}
