//! The dialer page, served from the binary: plain HTML, CSS and JavaScript under `api/web/`,
//! no build step. It speaks only the agent protocol, like any other client.

use axum::http::header;
use axum::response::IntoResponse;

/// A static asset from `api/web/`, never cached so an upgrade shows at once.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

pub async fn index() -> impl IntoResponse {
    asset(HTML, include_str!("web/index.html"))
}

pub async fn script() -> impl IntoResponse {
    asset(JS, include_str!("web/app.js"))
}

pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", include_str!("web/style.css"))
}

pub async fn calls_page() -> impl IntoResponse {
    asset(HTML, include_str!("web/calls.html"))
}

pub async fn calls_script() -> impl IntoResponse {
    asset(JS, include_str!("web/calls.js"))
}
