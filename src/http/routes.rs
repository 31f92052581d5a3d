//! The one route table. A known path with another method answers 404, as the original.
//!
//! The table is data ([`table`]): `configure` registers it, and the OpenAPI test reads the
//! same list, so a route added here without documentation fails that test.

use actix_web::http::Method;
use actix_web::{FromRequest, Handler, HttpResponse, Resource, Responder, web};

use super::error::ApiError;
use super::{account, health, openapi, product, purchase, records, sse};

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
}

/// One row of the route table: a method on a path and the handler that answers it.
pub struct Row {
    /// The HTTP method.
    pub method: Method,
    /// The path pattern, as actix-web matches it (`{id}` is a segment).
    pub path: &'static str,
    route: actix_web::Route,
}

fn row<F, Args>(method: Method, path: &'static str, handler: F) -> Row
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let route = web::route().method(method.clone()).to(handler);
    Row {
        method,
        path,
        route,
    }
}

/// Every route of the API listener, in matching order (the result stream before
/// `/api/purchase/{id}`, which would match it).
pub fn table() -> Vec<Row> {
    use Method as M;
    vec![
        // accounts
        row(M::POST, "/api/account/auth/signup", account::sign_up),
        row(M::POST, "/api/account/auth/login", account::log_in),
        row(M::POST, "/api/account/auth/refresh", account::refresh),
        row(M::GET, "/api/account/info/person", account::get_person),
        row(M::PUT, "/api/account/info/person", account::put_person),
        row(M::GET, "/api/account/info/shipping", account::get_shipping),
        row(M::PUT, "/api/account/info/shipping", account::put_shipping),
        // catalog
        row(M::POST, "/api/product", product::create),
        row(M::GET, "/api/product/{id}", product::get),
        row(M::GET, "/api/products", product::list),
        // purchases
        row(M::POST, "/api/purchase", purchase::create),
        row(M::GET, "/api/purchase/result", sse::results),
        row(M::GET, "/api/purchase/{id}", purchase::get),
        row(M::GET, "/api/order/{id}", records::order),
        row(M::GET, "/api/payment/{id}", records::payment),
        // operations
        row(M::GET, "/api/openapi.json", openapi::document),
        row(M::GET, "/healthz", health::healthz),
        row(M::GET, "/readyz", health::readyz),
    ]
}

/// Whether a route belongs to the API contract (served by api nodes) rather than to
/// operations (served by every node).
fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

/// Registers every route of [`table`]: one resource per path, its methods together, any
/// other method 404.
pub fn configure(cfg: &mut web::ServiceConfig) {
    configure_for(cfg, true);
}

/// Registers the routes a node serves: all of them with `api`, the operations routes only
/// without (a node without the api role answers 404 on the API's paths).
pub fn configure_for(cfg: &mut web::ServiceConfig, api: bool) {
    let mut paths: Vec<(&'static str, Vec<actix_web::Route>)> = Vec::new();
    for Row { path, route, .. } in table().into_iter().filter(|r| api || !is_api(r.path)) {
        match paths.iter_mut().find(|(p, _)| *p == path) {
            Some((_, routes)) => routes.push(route),
            None => paths.push((path, vec![route])),
        }
    }
    for (path, routes) in paths {
        let resource = web::resource(path).default_service(web::to(not_found));
        cfg.service(routes.into_iter().fold(resource, Resource::route));
    }
    cfg.default_service(web::to(not_found));
}
