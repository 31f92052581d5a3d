//! The page's files, embedded in the binary (`assets/dashboard/`): served with their content
//! type and an ETag, revalidated by the browser on every load (`no-cache`), so a node
//! upgraded in place never serves a stale script from a browser's cache.

use std::hash::{Hash, Hasher};
use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../../../assets/dashboard/", $path)),
        }
    };
}

/// Every file of the page.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("dashboard.js", "text/javascript; charset=utf-8"),
    asset!("dashboard.css", "text/css; charset=utf-8"),
    asset!("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    asset!("vendor/uPlot.min.css", "text/css; charset=utf-8"),
];

/// Each file's ETag: a hash of this build's bytes.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let mut hasher = std::hash::DefaultHasher::new();
            a.body.hash(&mut hasher);
            format!("\"{:016x}\"", hasher.finish())
        })
        .collect()
});

fn serve(req: &HttpRequest, path: &str) -> HttpResponse {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return HttpResponse::NotFound().json(serde_json::json!({ "msg": "not found" }));
    };
    let (asset, etag) = (&ASSETS[i], &ETAGS[i]);
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if unchanged {
        return response.finish();
    }
    response
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .body(asset.body)
}

/// `GET /dashboard`: the page.
pub async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, "index.html")
}

/// `GET /dashboard/assets/{file}`: a script, style sheet or the chart library.
pub async fn file(req: HttpRequest, file: web::Path<String>) -> HttpResponse {
    serve(&req, &file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_is_embedded() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        for asset in &ASSETS[1..] {
            let src = format!("/dashboard/assets/{}", asset.path);
            assert!(page.contains(&src), "index.html does not load {src}");
        }
    }
}
