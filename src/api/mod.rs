//! The HTTP shell: axum routes for health, metrics and the operator's admin calls (`POST
//! /v1/dial`, hangup, live calls). Wire types live here at the edge; no call state is kept
//! here: every request is a message to the signalling task.

pub mod agent;
mod calls;
pub mod contacts;
mod cors;
pub mod ice;
pub mod protocol;
mod recording;
pub mod tls;
mod web;
pub mod wire;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::conn::{LimitedTcp, ReadLimit};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::app::{AdminRequest, AppHandle};
use crate::controller::MediaPlan;

/// How long an admin dial waits for the far end before answering the HTTP request.
const DIAL_WAIT: Duration = Duration::from_secs(40);

/// Serve HTTP, or HTTPS when `tls` is given (built at startup so a bad certificate stops the
/// gateway with a message naming the key rather than leaving it without its API).
pub async fn serve(
    listener: LimitedTcp,
    handle: AppHandle,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let app = web::modules(Router::new())
        .route("/", get(web::index))
        .route("/style.css", get(web::style))
        .route("/calls", get(web::calls_page))
        .route("/calls.js", get(web::calls_script))
        .route("/v1/agent/ws", get(agent::upgrade))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/dial", post(dial))
        .route("/v1/live-calls", get(live_calls))
        .route("/v1/calls", get(calls::list))
        .route("/v1/agents", get(calls::agents))
        .route("/v1/calls/{call_id}", get(calls::one))
        .route(
            "/v1/calls/{call_id}/log",
            axum::routing::put(calls::put_log),
        )
        .route("/v1/calls/{call_id}/log/comments", post(calls::add_comment))
        .route("/v1/calls/{call_id}/recording", get(recording::serve))
        .route("/v1/calls/{call_id}/hangup", post(hangup))
        .route("/v1/calls/{call_id}/dtmf", post(dtmf))
        .route(
            "/v1/contacts/{number}",
            get(contacts::get)
                .put(contacts::put)
                .delete(contacts::delete),
        )
        .route(
            "/v1/contacts:import",
            post(contacts::import).layer(axum::extract::DefaultBodyLimit::max(16 << 20)),
        )
        .route("/v1/webhooks/deliveries", get(contacts::deliveries))
        .layer(axum::middleware::from_fn_with_state(
            handle.clone(),
            cors::allow_cluster_origins,
        ))
        .with_state(handle);
    if let Some(config) = tls {
        return axum::serve(
            tls::TlsListener::new(listener, config)?,
            app.into_make_service_with_connect_info::<Peer>(),
        )
        .await;
    }
    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>()).await
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    ApiError {
        status,
        code: code.to_string(),
        message: message.into(),
    }
    .into_response()
}

/// An API failure before it becomes a response: small to pass around, rendered as
/// `{"code","message"}` with its status.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: &str) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            message: message.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({"code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

/// The request's `Authorization: Bearer` token.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Admin routes need the admin bearer token.
fn require_admin(handle: &AppHandle, headers: &HeaderMap) -> Result<(), ApiError> {
    match bearer(headers) {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token",
        )),
        Some(t) if handle.config.is_admin_token(t) => Ok(()),
        Some(t) if handle.config.agent_by_token(t).is_some() => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "admin token required",
        )),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "bad token",
        )),
    }
}

/// Hands a request to the signalling task; fails only while the gateway stops.
async fn submit(handle: &AppHandle, request: AdminRequest) -> Result<(), ApiError> {
    handle.admin.send(request).await.map_err(|_| stopping())
}

fn stopping() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "gateway stopping",
    )
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// The client's connection: its address, for routes that treat loopback clients differently,
/// and its read budget, for the agent WebSocket's authentication.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    pub read_limit: ReadLimit,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, LimitedTcp>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, LimitedTcp>) -> Peer {
        Peer {
            addr: *stream.remote_addr(),
            read_limit: stream.io().read_limit(),
        }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tls::TlsListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tls::TlsListener>) -> Peer {
        Peer {
            addr: *stream.remote_addr(),
            read_limit: stream.io().get_ref().0.read_limit(),
        }
    }
}

/// Prometheus text. Open to clients on loopback (the usual scraper on the same host);
/// from anywhere else the admin token is required.
async fn metrics(
    State(handle): State<AppHandle>,
    axum::extract::ConnectInfo(Peer { addr: peer, .. }): axum::extract::ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Response {
    if !peer.ip().is_loopback() {
        if let Err(e) = require_admin(&handle, &headers) {
            return e.into_response();
        }
    }
    let c = &handle.counters;
    let mut body = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, String)>| {
        body.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in lines {
            body.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    // Live calls by status from the controller; ended ones from the call log.
    let (reply, answer) = oneshot::channel();
    let mut live: std::collections::BTreeMap<&str, u64> =
        ["ringing", "waiting", "dialing", "active", "on_hold"]
            .into_iter()
            .map(|s| (s, 0))
            .collect();
    if submit(&handle, AdminRequest::Calls { reply }).await.is_ok() {
        if let Ok(calls) = answer.await {
            for call in calls {
                *live.entry(call.status).or_default() += 1;
            }
        }
    }
    metric(
        "callgate_calls",
        "gauge",
        "Live calls by status.",
        live.iter()
            .map(|(s, n)| (format!("{{status=\"{s}\"}}"), n.to_string()))
            .collect(),
    );
    let call_log = std::sync::Arc::clone(&handle.call_log);
    let ended = tokio::task::spawn_blocking(move || {
        call_log
            .read(crate::store::status_counts)
            .ok()
            .and_then(|m| m.get("ended").copied())
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(0);
    metric(
        "callgate_calls_ended_total",
        "counter",
        "Calls in the call log that ended.",
        one(ended.to_string()),
    );
    metric(
        "callgate_sip_messages_total",
        "counter",
        "SIP messages by direction and method or status code.",
        handle
            .gateway_counters
            .sip()
            .into_iter()
            .map(|(d, l, n)| {
                (
                    format!("{{direction=\"{d}\",message=\"{l}\"}}"),
                    n.to_string(),
                )
            })
            .collect(),
    );
    for (name, help, value) in [
        (
            "callgate_rtp_packets_in_total",
            "RTP packets from trunks.",
            c.packets_in.load(Relaxed),
        ),
        (
            "callgate_rtp_bytes_in_total",
            "RTP bytes from trunks.",
            c.bytes_in.load(Relaxed),
        ),
        (
            "callgate_rtp_packets_out_total",
            "RTP packets to trunks.",
            c.packets_out.load(Relaxed),
        ),
        (
            "callgate_rtp_bytes_out_total",
            "RTP bytes to trunks.",
            c.bytes_out.load(Relaxed),
        ),
        (
            "callgate_rtp_bad_packets_total",
            "Undecodable RTP/RTCP packets.",
            c.bad_packets.load(Relaxed),
        ),
        (
            "callgate_rtp_foreign_packets_total",
            "RTP/RTCP packets from an address that is not the call's peer, dropped.",
            c.foreign_packets.load(Relaxed),
        ),
        (
            "callgate_srtp_rejected_packets_total",
            "SRTP/SRTCP packets from trunks that failed authentication or replayed, dropped.",
            c.srtp_rejected.load(Relaxed),
        ),
        (
            "callgate_transcoded_frames_total",
            "20 ms frames decoded and encoded for bridges.",
            c.transcoded_frames.load(Relaxed),
        ),
        (
            "callgate_webrtc_frames_out_total",
            "Audio frames written to agents' peer connections.",
            handle.webrtc_counters.frames_out.load(Relaxed),
        ),
        (
            "callgate_webrtc_frames_in_total",
            "Audio frames from agents' peer connections.",
            handle.webrtc_counters.frames_in.load(Relaxed),
        ),
    ] {
        metric(name, "counter", help, one(value.to_string()));
    }
    metric(
        "callgate_transcode_seconds_total",
        "counter",
        "CPU time spent decoding and encoding for transcoded bridges.",
        one(format!(
            "{:.6}",
            c.transcode_nanos.load(Relaxed) as f64 / 1e9
        )),
    );
    metric(
        "callgate_rtp_peer_lost",
        "gauge",
        "Cumulative loss the last RTCP report from a trunk gave.",
        one(c.peer_lost.load(Relaxed).to_string()),
    );
    metric(
        "callgate_rtp_peer_jitter",
        "gauge",
        "Interarrival jitter (RTP units) the last RTCP report gave.",
        one(c.peer_jitter.load(Relaxed).to_string()),
    );
    metric(
        "callgate_sip_dropped_total",
        "counter",
        "SIP packets dropped unanswered, by reason.",
        handle
            .gateway_counters
            .sip_dropped()
            .into_iter()
            .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), n.to_string()))
            .collect(),
    );
    metric(
        "callgate_sip_transactions",
        "gauge",
        "Live SIP transactions.",
        [
            ("server", &handle.gateway_counters.server_transactions),
            ("client", &handle.gateway_counters.client_transactions),
        ]
        .into_iter()
        .map(|(kind, n)| (format!("{{kind=\"{kind}\"}}"), n.load(Relaxed).to_string()))
        .collect(),
    );
    for (name, help, value) in [
        (
            "callgate_sip_tcp_connections",
            "Open SIP TCP connections accepted.",
            handle.gateway_counters.sip_tcp_connections.load(Relaxed),
        ),
        (
            "callgate_http_connections",
            "Open HTTP connections (page, API, agent WebSockets).",
            handle.gateway_counters.http_connections.load(Relaxed),
        ),
        (
            "callgate_ice_tcp_connections",
            "Open ICE-over-TCP connections from browsers.",
            handle.gateway_counters.ice_tcp_connections.load(Relaxed),
        ),
    ] {
        metric(name, "gauge", help, one(value.to_string()));
    }
    metric(
        "callgate_sip_calls_shed_total",
        "counter",
        "New calls answered 503 while SIP was queueing (overload control).",
        one(handle.gateway_counters.calls_shed.load(Relaxed).to_string()),
    );
    metric(
        "callgate_connections_refused_total",
        "counter",
        "SIP TCP and HTTP connections closed at once for being over a cap.",
        one(handle
            .gateway_counters
            .connections_refused
            .load(Relaxed)
            .to_string()),
    );
    metric(
        "callgate_websocket_connections",
        "gauge",
        "Open agent WebSockets.",
        one(handle.gateway_counters.websockets.load(Relaxed).to_string()),
    );
    metric(
        "callgate_webrtc_peers_connected",
        "gauge",
        "Agents' peer connections with ICE and DTLS up.",
        one(handle
            .webrtc_counters
            .peers_connected
            .load(Relaxed)
            .to_string()),
    );
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DialBody {
    to: Option<String>,
    /// `echo` (default) or `announce:<path>`.
    media: Option<String>,
}

async fn dial(
    State(handle): State<AppHandle>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = require_admin(&handle, &headers) {
        return e.into_response();
    }
    let body: DialBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("body: {e}")),
    };
    let Some(to) = body.to.filter(|t| !t.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "to: required");
    };
    let plan = match body.media.as_deref() {
        None | Some("echo") => MediaPlan::Echo,
        Some(m) => match m.strip_prefix("announce:") {
            Some(path) if !path.is_empty() => MediaPlan::Announce(path.into()),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "media: must be echo or announce:<path>",
                )
            }
        },
    };
    let (reply, answer) = oneshot::channel();
    if let Err(e) = submit(
        &handle,
        AdminRequest::Dial {
            to: to.trim().to_string(),
            plan,
            reply,
        },
    )
    .await
    {
        return e.into_response();
    }
    match tokio::time::timeout(DIAL_WAIT, answer).await {
        Ok(Ok(Ok(call_id))) => {
            Json(serde_json::json!({"call_id": call_id, "status": "active"})).into_response()
        }
        Ok(Ok(Err(reason))) if reason.contains("dial plan") => {
            error(StatusCode::FORBIDDEN, "dial_plan_denied", reason)
        }
        Ok(Ok(Err(reason))) => error(StatusCode::BAD_GATEWAY, "trunk_failed", reason),
        _ => error(
            StatusCode::GATEWAY_TIMEOUT,
            "trunk_failed",
            "no answer in time",
        ),
    }
}

async fn hangup(
    State(handle): State<AppHandle>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
) -> Response {
    if let Err(e) = require_admin(&handle, &headers) {
        return e.into_response();
    }
    let (reply, answer) = oneshot::channel();
    if let Err(e) = submit(
        &handle,
        AdminRequest::Hangup {
            call: call_id.clone().into(),
            reply,
        },
    )
    .await
    {
        return e.into_response();
    }
    match answer.await {
        Ok(true) => {
            Json(serde_json::json!({"call_id": call_id, "status": "ending"})).into_response()
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no live call {call_id}"),
        ),
    }
}

async fn live_calls(State(handle): State<AppHandle>, headers: HeaderMap) -> Response {
    if let Err(e) = require_admin(&handle, &headers) {
        return e.into_response();
    }
    let (reply, answer) = oneshot::channel();
    if let Err(e) = submit(&handle, AdminRequest::Calls { reply }).await {
        return e.into_response();
    }
    match answer.await {
        Ok(calls) => Json(serde_json::json!({"calls": calls})).into_response(),
        Err(_) => stopping().into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DtmfBody {
    digits: Option<String>,
}

async fn dtmf(
    State(handle): State<AppHandle>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = require_admin(&handle, &headers) {
        return e.into_response();
    }
    let body: DtmfBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("body: {e}")),
    };
    let digits = body.digits.unwrap_or_default();
    if digits.is_empty()
        || !digits
            .chars()
            .all(|c| matches!(c, '0'..='9' | '*' | '#' | 'A'..='D'))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "digits: 0-9, *, #, A-D required",
        );
    }
    let (reply, answer) = oneshot::channel();
    if let Err(e) = submit(
        &handle,
        AdminRequest::Dtmf {
            call: call_id.clone().into(),
            digits,
            reply,
        },
    )
    .await
    {
        return e.into_response();
    }
    match answer.await {
        Ok(true) => {
            Json(serde_json::json!({"call_id": call_id, "status": "sending"})).into_response()
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no live call with media {call_id}"),
        ),
    }
}
