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
use crate::cluster::Nodes;
use crate::store::{self, CallQuery, CallRecord};

/// Who is asking: a token that sees every call (admin, supervisors) or one agent's calls.
/// Each carries the name a log edit is signed with.
pub(super) enum Viewer {
    Everything(String),
    Agent(String),
}

impl Viewer {
    fn name(&self) -> &str {
        match self {
            Viewer::Everything(who) | Viewer::Agent(who) => who,
        }
    }
}

pub(super) fn viewer(handle: &AppHandle, headers: &HeaderMap) -> Result<Viewer, ApiError> {
    let token = super::bearer(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token",
        )
    })?;
    if handle.config.is_admin_token(token) {
        return Ok(Viewer::Everything("admin".into()));
    }
    match handle.config.agent_by_token(token) {
        Some(a) if a.role == crate::config::Role::Supervisor => {
            Ok(Viewer::Everything(a.id.to_string()))
        }
        Some(a) => Ok(Viewer::Agent(a.id.to_string())),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "bad token",
        )),
    }
}

pub(super) fn time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| {
        Value::String(rfc3339(store::from_millis(ms)))
    })
}

/// The agent protocol's call object, plus `agent_id`, `log`, and in a cluster the `node` the
/// call lives on with its `node_url` while that node is live (a supervisor monitors the call
/// there).
fn call_json(c: &CallRecord, nodes: Option<&Nodes>) -> Value {
    let node_url = nodes
        .zip(c.node.as_deref())
        .and_then(|(n, node)| n.url_of(node));
    json!({
        "call_id": c.id,
        "direction": c.direction,
        "from": c.from_number,
        "to": c.to_number,
        "prospect": {"number": c.prospect, "name": c.prospect_name.as_ref().or(c.from_name.as_ref()), "prospect_id": c.prospect_id},
        "status": c.status,
        "queued_at": time(c.queued_at),
        "created_at": time(Some(c.created_at)),
        "answered_at": time(c.answered_at),
        "ended_at": time(c.ended_at),
        "end_reason": c.end_reason,
        "recording": c.recording,
        "recording_url": c.recording_path.as_ref().map(|_| format!("/v1/calls/{}/recording", c.id)),
        "agent_id": c.agent_id,
        "node": c.node,
        "node_url": node_url,
        "log": Value::Null,
    })
}

pub(super) fn database_error(e: impl std::fmt::Display) -> ApiError {
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
        Viewer::Everything(_) => params.agent.filter(|a| !a.is_empty()),
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
    let call_log = std::sync::Arc::clone(&handle.call_log);
    let limit = query.limit;
    let result = tokio::task::spawn_blocking(move || {
        call_log.read(|db| {
            let calls = store::calls(db, &query)?;
            calls
                .into_iter()
                .map(|c| {
                    let log = store::log(db, &c.id)?;
                    Ok((c, log))
                })
                .collect::<Result<Vec<_>, store::StoreError>>()
        })
    })
    .await;
    match result {
        Ok(Ok(calls)) => {
            let next = (calls.len() == limit)
                .then(|| {
                    calls
                        .last()
                        .map(|(c, _)| format!("{}:{}", c.created_at, c.id))
                })
                .flatten();
            let calls: Vec<Value> = calls
                .iter()
                .map(|(c, log)| {
                    let mut v = call_json(c, handle.nodes.as_ref());
                    v["log"] = log.as_ref().map_or(Value::Null, log_json);
                    v
                })
                .collect();
            Json(json!({"calls": calls, "next": next})).into_response()
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
    let call_log = std::sync::Arc::clone(&handle.call_log);
    let id = call_id.clone();
    let result = tokio::task::spawn_blocking(move || {
        call_log.read(|db| {
            let call = store::call(db, &id)?;
            let segments = store::segments(db, &id)?;
            let recorded = store::recording_segments(db, &id)?;
            let log = store::log(db, &id)?;
            Ok((call, segments, recorded, log))
        })
    })
    .await;
    let (call, segments, recorded, log) = match result {
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
    let mut body = call_json(&call, handle.nodes.as_ref());
    body["segments"] = segments
        .iter()
        .map(|s| json!({"status": s.status, "from": time(Some(s.started_at)), "to": time(s.ended_at)}))
        .collect::<Vec<_>>()
        .into();
    body["recording_info"] = super::recording::info(&call, &recorded).await;
    body["log"] = log.as_ref().map_or(Value::Null, log_json);
    Json(body).into_response()
}

fn log_json(log: &store::CallLog) -> Value {
    json!({
        "assignee": log.assignee,
        "tags": log.tags,
        "disposition": log.disposition,
        "comments": log.comments.iter().map(|c| json!({
            "author": c.author,
            "text": c.text,
            "at": time(Some(c.at)),
        })).collect::<Vec<_>>(),
        "updated_at": time(log.updated_at),
        "updated_by": log.updated_by,
    })
}

fn optional_text(body: &Value, field: &str, max: usize) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.trim().to_string())),
        Some(Value::String(_)) => Err(bad(field, &format!("at most {max} characters"))),
        Some(_) => Err(bad(field, "must be a string")),
    }
}

/// The body of `PUT .../log`, validated whole before anything is written.
fn parse_log(body: &[u8]) -> Result<store::LogPatch, ApiError> {
    let body: Value =
        serde_json::from_slice(body).map_err(|e| bad("body", &format!("not JSON: {e}")))?;
    let Value::Object(map) = &body else {
        return Err(bad("body", "must be a JSON object"));
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !["assignee", "tags", "disposition", "comment"].contains(&k.as_str()))
    {
        return Err(bad(unknown, "unknown field"));
    }
    let tags = match body.get("tags") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if items.len() <= 20 => Some(
            items
                .iter()
                .map(|t| match t {
                    Value::String(s) if !s.trim().is_empty() && s.chars().count() <= 64 => {
                        Ok(s.trim().to_string())
                    }
                    _ => Err(bad(
                        "tags",
                        "each a non-empty string of at most 64 characters",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(bad("tags", "an array of at most 20 strings")),
    };
    Ok(store::LogPatch {
        assignee: optional_text(&body, "assignee", 200)?,
        tags,
        disposition: optional_text(&body, "disposition", 64)?,
        comment: optional_text(&body, "comment", 4000)?.filter(|c| !c.is_empty()),
    })
}

async fn write(
    handle: &AppHandle,
    headers: &HeaderMap,
    call_id: String,
    patch: Result<store::LogPatch, ApiError>,
) -> Response {
    let viewer = match viewer(handle, headers) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let patch = match patch {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    // The call must exist and be the agent's own before anything is written.
    let call_log = std::sync::Arc::clone(&handle.call_log);
    let id = call_id.clone();
    let call =
        match tokio::task::spawn_blocking(move || call_log.read(|db| store::call(db, &id))).await {
            Ok(Ok(Some(call))) => call,
            Ok(Ok(None)) => {
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!("no call {call_id}"),
                )
                .into_response();
            }
            Ok(Err(e)) => return database_error(e).into_response(),
            Err(e) => return database_error(e).into_response(),
        };
    if let Viewer::Agent(me) = &viewer {
        if call.agent_id.as_deref() != Some(me.as_str()) {
            return ApiError::new(StatusCode::FORBIDDEN, "forbidden", "another agent's call")
                .into_response();
        }
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    let op = store::StoreOp::Log {
        call_id: call_id.clone(),
        patch,
        author: viewer.name().to_string(),
        at: store::millis(std::time::SystemTime::now()),
        reply,
    };
    let Some(store) = handle.store.upgrade() else {
        return database_error("gateway stopping").into_response();
    };
    if store.send(op).await.is_err() {
        return database_error("writer gone").into_response();
    }
    drop(store);
    match answer.await {
        Ok(Ok(Some(log))) => {
            if let Some(agent) = call.agent_id.clone() {
                let _ = handle
                    .agents
                    .send(crate::app::AgentInput::LogSaved {
                        agent: agent.into(),
                        prospect: call.prospect.clone(),
                    })
                    .await;
            }
            Json(log_json(&log)).into_response()
        }
        Ok(Ok(None)) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no call {call_id}"),
        )
        .into_response(),
        Ok(Err(e)) => database_error(e).into_response(),
        Err(e) => database_error(e).into_response(),
    }
}

pub async fn put_log(
    State(handle): State<AppHandle>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    write(&handle, &headers, call_id, parse_log(&body)).await
}

pub async fn add_comment(
    State(handle): State<AppHandle>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let patch = serde_json::from_slice::<Value>(&body)
        .map_err(|e| bad("body", &format!("not JSON: {e}")))
        .and_then(|v| match v.get("text") {
            Some(Value::String(t)) if !t.trim().is_empty() && t.chars().count() <= 4000 => {
                Ok(store::LogPatch {
                    comment: Some(t.trim().to_string()),
                    ..store::LogPatch::default()
                })
            }
            _ => Err(bad("text", "a non-empty string of at most 4000 characters")),
        });
    write(&handle, &headers, call_id, patch).await
}

/// `GET /v1/agents`: every agent (an agent token: itself) with its connection and calls.
pub async fn agents(State(handle): State<AppHandle>, headers: HeaderMap) -> Response {
    let viewer = match viewer(&handle, &headers) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if handle
        .admin
        .send(crate::app::AdminRequest::Agents { reply })
        .await
        .is_err()
    {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "gateway stopping",
        )
        .into_response();
    }
    let Ok(agents) = answer.await else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "gateway stopping",
        )
        .into_response();
    };
    let agents: Vec<_> = agents
        .into_iter()
        .filter(|a| match &viewer {
            Viewer::Agent(me) => &a.agent_id == me,
            Viewer::Everything(_) => true,
        })
        .collect();
    Json(json!({"agents": agents})).into_response()
}
