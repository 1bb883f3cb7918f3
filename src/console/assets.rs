//! The embedded static files: htmx (vendored, pinned; see `static/README.md`), our stylesheet
//! and `console.js`. Nothing is fetched from elsewhere at run time.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const HTMX: &str = include_str!("static/htmx.min.js");
const SCRIPT: &str = include_str!("static/console.js");
const STYLE: &str = include_str!("static/console.css");

/// The stylesheet's and script's URLs carry a digest of the build's files, so a new binary's
/// assets are never mixed with a cached old page.
pub(crate) fn url(file: &str) -> String {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let v = VERSION.get_or_init(|| {
        let mut h = blake3::Hasher::new();
        for f in [HTMX, SCRIPT, STYLE] {
            h.update(f.as_bytes());
        }
        h.finalize().to_hex()[..12].to_owned()
    });
    format!("/console/static/{file}?v={v}")
}

pub async fn serve(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400, immutable"),
        ],
        body,
    )
        .into_response()
}
