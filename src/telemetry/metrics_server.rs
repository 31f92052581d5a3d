//! The metrics listener: an HTTP server of its own, apart from the API, so that scrapes
//! neither count as API requests nor wait behind them, and the port can stay private.

use actix_web::{App, HttpResponse, HttpServer, web};

use super::metrics::Metrics;

/// `GET /metrics`: every metric in the Prometheus text format.
async fn scrape(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(metrics.render())
}

/// The metrics server over `listener` (one worker: a scrape is a short read of atomics).
pub fn metrics_server(
    metrics: Metrics,
    listener: std::net::TcpListener,
    signals: bool,
) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(metrics);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(scrape))
    })
    .workers(1)
    .shutdown_timeout(1);
    if !signals {
        server = server.disable_signals();
    }
    Ok(server.listen(listener)?.run())
}
