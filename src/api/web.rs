//! The dialer page, served from the binary: plain HTML, CSS and JavaScript under `api/web/`,
//! no build step. It speaks only the agent protocol, like any other client.

use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

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

/// The dialer's ES modules by the path the page loads them from: `/app.js` is the entry
/// (`index.html` loads it), the others are what it imports (`./protocol.js` and so on).
const MODULES: &[(&str, &str)] = &[
    ("/app.js", include_str!("web/app.js")),
    ("/protocol.js", include_str!("web/protocol.js")),
    ("/state.js", include_str!("web/state.js")),
    ("/media.js", include_str!("web/media.js")),
    ("/monitor.js", include_str!("web/monitor.js")),
    ("/views.js", include_str!("web/views.js")),
    ("/dom.js", include_str!("web/dom.js")),
];

/// `router` with a route for each of the dialer's modules.
pub fn modules<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    MODULES
        .iter()
        .fold(router, |router, &(path, _)| router.route(path, get(module)))
}

/// One of the dialer's modules, found by its path.
async fn module(uri: Uri) -> Response {
    match MODULES.iter().find(|&&(path, _)| path == uri.path()) {
        Some(&(_, body)) => asset(JS, body).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub async fn index() -> impl IntoResponse {
    asset(HTML, include_str!("web/index.html"))
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
