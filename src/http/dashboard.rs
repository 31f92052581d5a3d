//! `GET /dashboard`: a live page of the actor system on the API listener, with its JSON.
//!
//! - `/dashboard` and `/dashboard/assets/*`: the page (HTML, JS, CSS and the vendored chart
//!   library, embedded in the binary: no CDN, works offline).
//! - `/dashboard/api/stats`: every node's numbers (gathered over NATS in a cluster), their
//!   totals and latency percentiles. Aggregates only, no token needed.
//! - `/dashboard/api/sagas` and `/dashboard/api/sagas/{id}`: the recent sagas and one saga's
//!   history: every customer's purchases, so only with the admin token (`--admin-token`).
//!
//! Routes live here, not in the API's route table: they are operations pages, outside the
//! original's contract and its OpenAPI document.

mod admin;
mod assets;
mod sagas;
mod stats;

use actix_web::web;

use crate::actors::store::SagaStore;
use crate::cluster::bus::Bus;
use crate::cluster::stats::Reporter;
use crate::db::saga_list::SagaList;
use crate::secrets::Secret;

/// What the dashboard's handlers reach.
pub struct Dashboard {
    /// This node's numbers.
    pub reporter: Reporter,
    /// The cluster's bus, to ask the other nodes (`None`: embedded, this node only).
    pub bus: Option<Bus>,
    /// The cluster's name, shown in the page's title (`None`: embedded).
    pub cluster_name: Option<String>,
    /// The admin view's token (`None`: the admin view is off).
    pub admin_token: Option<Secret>,
    /// The saga store: one saga with its log.
    pub store: SagaStore,
    /// The newest sagas, bounded.
    pub sagas: SagaList,
    /// The clock the answers are stamped with.
    pub clock: crate::clock::Clock,
}

/// Registers the dashboard's routes (api nodes only).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/dashboard", web::get().to(assets::index))
        .route("/dashboard/", web::get().to(assets::index))
        .route("/dashboard/assets/{file:.+}", web::get().to(assets::file))
        .route("/dashboard/api/stats", web::get().to(stats::stats))
        .route("/dashboard/api/sagas", web::get().to(sagas::recent))
        .route("/dashboard/api/sagas/{id}", web::get().to(sagas::one));
}
