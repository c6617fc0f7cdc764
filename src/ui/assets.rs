//! The UI's static files, embedded in the binary. URLs carry a version so browsers may
//! cache them for long.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// htmx 2.0.11 from the `htmx.org` npm package (BSD-0), unmodified.
const HTMX: &str = include_str!("assets/htmx-2.0.11.min.js");
const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");

/// Changes with every release, so a new binary's pages never use an old cached file.
const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn url(file: &str) -> String {
    format!("/ui/assets/{file}?v={VERSION}")
}

/// The files and their media types (for the page-weight benchmark too).
pub fn all() -> [(&'static str, &'static str, &'static str); 3] {
    [
        ("htmx.min.js", "text/javascript; charset=utf-8", HTMX),
        ("ui.css", "text/css; charset=utf-8", CSS),
        ("ui.js", "text/javascript; charset=utf-8", JS),
    ]
}

pub async fn serve(Path(file): Path<String>) -> Response {
    match all().into_iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, body)) => (
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            body,
        )
            .into_response(),
        None => super::layout::not_found("no such file"),
    }
}
