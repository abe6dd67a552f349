//! Cross-origin requests from the pages of the cluster's other nodes.
//!
//! A page signed in on one node keeps working when that node is lost by reconnecting to
//! another; from then on it calls that node's API (saving call logs, listing live calls) from
//! its first node's origin. Such requests are allowed for the live nodes' origins only
//! (`http.public_url`, as each announces it in the shared store); every other origin gets no
//! CORS headers and the browser keeps its answer from the page. Credentials are bearer
//! tokens in a header, never cookies, so nothing is sent on a page's behalf without it.

use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppHandle;

pub async fn allow_cluster_origins(
    State(handle): State<AppHandle>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = request
        .headers()
        .get(ORIGIN)
        .filter(|origin| {
            let nodes = handle.nodes.as_ref();
            origin
                .to_str()
                .is_ok_and(|o| nodes.is_some_and(|n| n.is_origin(o)))
        })
        .cloned();
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.append(VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allowed {
        allow(headers, origin, preflight);
    }
    response
}

fn allow(headers: &mut HeaderMap, origin: HeaderValue, preflight: bool) {
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if preflight {
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE"),
        );
        headers.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type"),
        );
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
}
