//! The calls page API (`spec/http-api.md`): `GET /v1/calls` (newest first, filters, cursor
//! paging) and `GET /v1/calls/{call_id}` with its status segments, read from the call log.
//! An agent token sees its own calls, a supervisor's or the admin token every call.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::wire::rfc3339;
use super::ApiError;
use crate::app::AppHandle;
use crate::config::sha256_hex;
use crate::store::{self, CallQuery, CallRecord};

/// Who is asking.
enum Viewer {
    Everything,
    Agent(String),
}

fn viewer(handle: &AppHandle, headers: &HeaderMap) -> Result<Viewer, ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing bearer token",
            )
        })?;
    let hash = sha256_hex(token);
    if hash == handle.config.admin_token_sha256 {
        return Ok(Viewer::Everything);
    }
    match handle.config.agents.iter().find(|a| a.token_sha256 == hash) {
        Some(a) if a.role == "supervisor" => Ok(Viewer::Everything),
        Some(a) => Ok(Viewer::Agent(a.id.clone())),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "bad token",
        )),
    }
}

fn time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| {
        Value::String(rfc3339(store::from_millis(ms)))
    })
}

/// The agent protocol's call object, plus `agent_id` and `log`.
fn call_json(c: &CallRecord) -> Value {
    json!({
        "call_id": c.id,
        "direction": c.direction,
        "from": c.from_number,
        "to": c.to_number,
        "prospect": {"number": c.prospect, "name": c.from_name},
        "status": c.status,
        "queued_at": time(c.queued_at),
        "created_at": time(Some(c.created_at)),
        "answered_at": time(c.answered_at),
        "ended_at": time(c.ended_at),
        "end_reason": c.end_reason,
        "recording": c.recording,
        "agent_id": c.agent_id,
        "log": Value::Null,
    })
}

fn database_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "call log read failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "call log unavailable",
    )
}

#[derive(Debug, serde::Deserialize)]
pub struct ListParams {
    status: Option<String>,
    agent: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

const STATUSES: &[&str] = &[
    "ringing", "waiting", "dialing", "active", "on_hold", "ended",
];

fn bad(field: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_request",
        &format!("{field}: {why}"),
    )
}

fn parse_query(params: ListParams, viewer: &Viewer) -> Result<CallQuery, ApiError> {
    let statuses: Vec<String> = match params.status.as_deref().filter(|s| !s.is_empty()) {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|s| {
                let s = s.trim();
                if STATUSES.contains(&s) {
                    Ok(s.to_string())
                } else {
                    Err(bad(
                        "status",
                        &format!("{s:?} is not one of {}", STATUSES.join(", ")),
                    ))
                }
            })
            .collect::<Result<_, _>>()?,
    };
    let limit = match params.limit.as_deref() {
        None => 50,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=500).contains(&n) => n,
            _ => return Err(bad("limit", "a number from 1 to 500")),
        },
    };
    let before = match params.before.as_deref() {
        None | Some("") => None,
        Some(cursor) => {
            let (at, id) = cursor
                .split_once(':')
                .ok_or_else(|| bad("before", "a cursor from a previous page's \"next\""))?;
            let at: i64 = at
                .parse()
                .map_err(|_| bad("before", "a cursor from a previous page's \"next\""))?;
            Some((at, id.to_string()))
        }
    };
    let agent = match viewer {
        Viewer::Agent(me) => {
            if params.agent.as_deref().is_some_and(|a| a != me) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "agents see their own calls",
                ));
            }
            Some(me.clone())
        }
        Viewer::Everything => params.agent.filter(|a| !a.is_empty()),
    };
    Ok(CallQuery {
        statuses,
        agent,
        limit,
        before,
    })
}

pub async fn list(
    State(handle): State<AppHandle>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Response {
    let viewer = match viewer(&handle, &headers) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let query = match parse_query(params, &viewer) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let path = handle.config.store.database.clone();
    let limit = query.limit;
    let result = tokio::task::spawn_blocking(move || {
        let conn = store::open(&path)?;
        store::calls(&conn, &query)
    })
    .await;
    match result {
        Ok(Ok(calls)) => {
            let next = (calls.len() == limit)
                .then(|| calls.last().map(|c| format!("{}:{}", c.created_at, c.id)))
                .flatten();
            Json(json!({
                "calls": calls.iter().map(call_json).collect::<Vec<_>>(),
                "next": next,
            }))
            .into_response()
        }
        Ok(Err(e)) => database_error(e).into_response(),
        Err(e) => database_error(e).into_response(),
    }
}

pub async fn one(
    State(handle): State<AppHandle>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
) -> Response {
    let viewer = match viewer(&handle, &headers) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let path = handle.config.store.database.clone();
    let id = call_id.clone();
    let result = tokio::task::spawn_blocking(move || {
        let conn = store::open(&path)?;
        let call = store::call(&conn, &id)?;
        let segments = store::segments(&conn, &id)?;
        Ok::<_, store::StoreError>((call, segments))
    })
    .await;
    let (call, segments) = match result {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return database_error(e).into_response(),
        Err(e) => return database_error(e).into_response(),
    };
    let Some(call) = call else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no call {call_id}"),
        )
        .into_response();
    };
    if let Viewer::Agent(me) = &viewer {
        if call.agent_id.as_deref() != Some(me.as_str()) {
            return ApiError::new(StatusCode::FORBIDDEN, "forbidden", "another agent's call")
                .into_response();
        }
    }
    let mut body = call_json(&call);
    body["segments"] = segments
        .iter()
        .map(|s| json!({"status": s.status, "from": time(Some(s.started_at)), "to": time(s.ended_at)}))
        .collect::<Vec<_>>()
        .into();
    body["recording_info"] = Value::Null;
    Json(body).into_response()
}
